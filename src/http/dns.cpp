#include "http/dns.h"

#include <netdb.h>
#include <sys/socket.h>

#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <thread>

namespace resendd {

using tcp = boost::asio::ip::tcp;
using steady = std::chrono::steady_clock;

struct dns_resolver::state {
  std::mutex mutex;
  std::condition_variable wake;
  bool stopping = false;
  std::chrono::seconds ttl{30};
  std::deque<std::string> queue;  // keys waiting for a thread
  std::map<std::string, std::vector<std::function<void(dns_answer)>>> waiting;  // in flight
  std::map<std::string, std::pair<steady::time_point, std::vector<tcp::endpoint>>> cache;

  static std::string key(const std::string& host, const std::string& port) {
    return host + '\n' + port;
  }

  static dns_answer lookup(const std::string& key) {
    const auto nl = key.find('\n');
    const std::string host = key.substr(0, nl), port = key.substr(nl + 1);
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_ADDRCONFIG;
    addrinfo* res = nullptr;
    dns_answer out;
    const int rc = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &res);
    if (rc != 0) {
      out.error = ::gai_strerror(rc);
      return out;
    }
    for (auto* p = res; p; p = p->ai_next) {
      tcp::endpoint ep;
      if (p->ai_addrlen <= ep.capacity()) {
        std::memcpy(ep.data(), p->ai_addr, p->ai_addrlen);
        ep.resize(p->ai_addrlen);
        out.endpoints.push_back(ep);
      }
    }
    ::freeaddrinfo(res);
    if (out.endpoints.empty()) out.error = "no addresses";
    return out;
  }

  // A pool thread: takes keys until stopped. Holds the state alive while it runs.
  static void run(std::shared_ptr<state> s) {
    std::unique_lock lock(s->mutex);
    for (;;) {
      s->wake.wait(lock, [&] { return s->stopping || !s->queue.empty(); });
      if (s->stopping) return;
      const std::string k = std::move(s->queue.front());
      s->queue.pop_front();
      lock.unlock();
      dns_answer a = lookup(k);
      lock.lock();
      if (a.error.empty()) s->cache[k] = {steady::now() + s->ttl, a.endpoints};
      auto waiters = std::move(s->waiting[k]);
      s->waiting.erase(k);
      lock.unlock();
      for (auto& w : waiters) w(a);
      lock.lock();
    }
  }
};

dns_resolver::dns_resolver(int threads, std::chrono::seconds ttl)
    : s_(std::make_shared<state>()) {
  s_->ttl = ttl;
  for (int i = 0; i < threads; ++i) std::thread(state::run, s_).detach();
}

dns_resolver::~dns_resolver() {
  {
    std::lock_guard lock(s_->mutex);
    s_->stopping = true;
  }
  s_->wake.notify_all();
}

void dns_resolver::resolve(const std::string& host, const std::string& port,
                           std::function<void(dns_answer)> done) {
  const auto k = state::key(host, port);
  std::unique_lock lock(s_->mutex);
  if (auto it = s_->cache.find(k); it != s_->cache.end()) {
    if (it->second.first > steady::now()) {
      auto eps = it->second.second;
      lock.unlock();
      return done({std::move(eps), {}});
    }
    s_->cache.erase(it);
  }
  auto& waiters = s_->waiting[k];
  waiters.push_back(std::move(done));
  if (waiters.size() == 1) {
    s_->queue.push_back(k);
    s_->wake.notify_one();
  }
}

}  // namespace resendd
