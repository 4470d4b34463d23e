#pragma once
// Prometheus metrics kept in memory: counters and histograms with labels, in one process-wide
// registry that any layer may add to, rendered as the text exposition format (version 0.0.4).
// Thread-safe: the network thread, the store's threads and the token service all count.
#include <initializer_list>
#include <map>
#include <memory>
#include <mutex>
#include <ostream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace resendd {

using metric_labels = std::vector<std::pair<std::string, std::string>>;

class metrics_registry {
 public:
  // Adds `v` to a counter (created on first use; its name should end in _total).
  void count(std::string_view name, std::string_view help, const metric_labels& labels,
             double v = 1);
  // Records one observation (seconds) in a histogram with the default latency buckets.
  void observe(std::string_view name, std::string_view help, const metric_labels& labels,
               double seconds);
  // Sets a gauge.
  void set(std::string_view name, std::string_view help, const metric_labels& labels, double v);
  // Every family, in name order.
  void render(std::ostream& out) const;

 private:
  struct series {
    double value = 0;              // counter, gauge
    std::vector<double> buckets;   // histogram: cumulative counts per upper bound
    double sum = 0;
    double n = 0;
  };
  struct family {
    std::string help, type;
    std::map<std::string, series> by_labels;  // rendered label text -> series
  };
  family& get(std::string_view name, std::string_view help, const char* type);
  mutable std::mutex m_;
  std::map<std::string, family, std::less<>> families_;
};

// The daemon's registry.
metrics_registry& metrics();

// Upper bounds of the latency histograms, in seconds.
inline constexpr double latency_buckets[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                             0.25,  0.5,    1,     2.5,  5,     10,   30};

}  // namespace resendd
