#include "util/metrics.h"

#include <charconv>
#include <cmath>
#include <iterator>

namespace resendd {
namespace {

std::string escape_label(std::string_view v) {
  std::string out;
  for (const char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

std::string label_text(const metric_labels& labels) {
  std::string out;
  for (const auto& [k, v] : labels) {
    if (!out.empty()) out += ',';
    out += k + "=\"" + escape_label(v) + "\"";
  }
  return out;
}

std::string number(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);  // shortest exact: 0.0025, not 0.00250…01
  return std::string(buf, r.ptr);
}

// `{a="x",le="0.5"}` from the series' label text and one more label.
std::string with(const std::string& labels, const std::string& extra) {
  if (labels.empty()) return extra.empty() ? "" : "{" + extra + "}";
  return "{" + labels + (extra.empty() ? "" : "," + extra) + "}";
}

}  // namespace

metrics_registry& metrics() {
  static metrics_registry r;
  return r;
}

metrics_registry::family& metrics_registry::get(std::string_view name, std::string_view help,
                                                const char* type) {
  auto it = families_.find(name);
  if (it == families_.end())
    it = families_.emplace(std::string(name), family{std::string(help), type, {}}).first;
  return it->second;
}

void metrics_registry::count(std::string_view name, std::string_view help,
                             const metric_labels& labels, double v) {
  std::lock_guard lock(m_);
  get(name, help, "counter").by_labels[label_text(labels)].value += v;
}

void metrics_registry::set(std::string_view name, std::string_view help,
                           const metric_labels& labels, double v) {
  std::lock_guard lock(m_);
  get(name, help, "gauge").by_labels[label_text(labels)].value = v;
}

void metrics_registry::observe(std::string_view name, std::string_view help,
                               const metric_labels& labels, double seconds) {
  std::lock_guard lock(m_);
  auto& s = get(name, help, "histogram").by_labels[label_text(labels)];
  if (s.buckets.empty()) s.buckets.assign(std::size(latency_buckets), 0);
  for (std::size_t i = 0; i < std::size(latency_buckets); ++i)
    if (seconds <= latency_buckets[i]) s.buckets[i] += 1;
  s.sum += seconds;
  s.n += 1;
}

void metrics_registry::render(std::ostream& out) const {
  std::lock_guard lock(m_);
  for (const auto& [name, f] : families_) {
    out << "# HELP " << name << " " << f.help << "\n# TYPE " << name << " " << f.type << "\n";
    for (const auto& [labels, s] : f.by_labels) {
      if (f.type != "histogram") {
        out << name << with(labels, "") << " " << number(s.value) << "\n";
        continue;
      }
      for (std::size_t i = 0; i < s.buckets.size(); ++i)
        out << name << "_bucket" << with(labels, "le=\"" + number(latency_buckets[i]) + "\"")
            << " " << number(s.buckets[i]) << "\n";
      out << name << "_bucket" << with(labels, "le=\"+Inf\"") << " " << number(s.n) << "\n"
          << name << "_sum" << with(labels, "") << " " << number(s.sum) << "\n"
          << name << "_count" << with(labels, "") << " " << number(s.n) << "\n";
    }
  }
}

}  // namespace resendd
