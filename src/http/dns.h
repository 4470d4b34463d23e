#pragma once
// Name resolution off the network thread, with no waiting on a slow name.
//
// getaddrinfo blocks and cannot be cancelled, so lookups run on a small pool of detached threads;
// one lookup per name is in flight at a time (later askers join it), so a name whose DNS never
// answers holds one thread, not the pool, and never delays another name. The caller waits with
// its own deadline and drops an answer that comes late. Answers are cached for `ttl` (getaddrinfo
// does not say the record's TTL, so a short fixed one is used); failures are not cached.
//
// Thread-safety: resolve() may be called from any thread; callbacks run on a pool thread.
#include <boost/asio/ip/tcp.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace resendd {

struct dns_answer {
  std::vector<boost::asio::ip::tcp::endpoint> endpoints;
  std::string error;  // empty = resolved
};

class dns_resolver {
 public:
  explicit dns_resolver(int threads = 8, std::chrono::seconds ttl = std::chrono::seconds(30));
  ~dns_resolver();  // idle threads end; one stuck in getaddrinfo ends when it returns
  dns_resolver(const dns_resolver&) = delete;
  dns_resolver& operator=(const dns_resolver&) = delete;

  void resolve(const std::string& host, const std::string& port,
               std::function<void(dns_answer)> done);

 private:
  struct state;
  std::shared_ptr<state> s_;
};

}  // namespace resendd
