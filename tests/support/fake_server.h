#pragma once
// A fake destination served from the test process on 127.0.0.1 (plain HTTP or TLS): every
// request is recorded and answered by the test's handler, one thread per connection, so a
// handler may block (to hold a delivery in flight). Tests wait on its events with a deadline.
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "support/certs.h"

namespace resendd::test {

struct received {
  std::string method, target;
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;
  std::size_t connection = 0;  // the connection it came on: 1 for the first one accepted, …
  std::string header(const std::string& n) const {
    auto it = headers.find(n);
    return it == headers.end() ? "" : it->second;
  }
};

struct fake_reply {
  int status = 200;
  std::string body = R"({"code":0,"msg":"success","data":{}})";
  std::vector<std::pair<std::string, std::string>> headers;
  bool drop = false;  // close the connection without answering (a lost reply)
  std::string raw;    // when set: these bytes are sent as they are, instead of an answer
  // > 0: after answering, the connection is closed when no request follows within this long
  // (a server's short keep-alive timeout).
  std::chrono::milliseconds idle_close{0};
};

class fake_server {
 public:
  using handler = std::function<fake_reply(const received&)>;
  explicit fake_server(handler h = nullptr, const test_cert* tls = nullptr);
  ~fake_server();
  fake_server(const fake_server&) = delete;
  fake_server& operator=(const fake_server&) = delete;

  std::uint16_t port() const { return port_; }
  // "http://127.0.0.1:PORT" + path, or "https://HOST:PORT" + path for TLS.
  std::string url(const std::string& path, const std::string& tls_host = "localhost") const;
  std::vector<received> requests() const;
  std::size_t count() const;
  // Waits until at least n requests arrived; false on timeout.
  bool wait_for(std::size_t n, std::chrono::milliseconds timeout = std::chrono::seconds(20)) const;
  void stop();

 private:
  void accept_loop();
  void serve(int fd, std::size_t connection);

  handler handler_;
  bool tls_ = false;
  struct impl;
  std::unique_ptr<impl> impl_;
  std::uint16_t port_ = 0;
  mutable std::mutex mutex_;
  mutable std::condition_variable changed_;
  std::vector<received> requests_;
  std::vector<int> open_fds_;
  std::size_t accepted_ = 0;
  std::vector<std::thread> threads_;
  std::thread acceptor_thread_;
  bool stopping_ = false;
};

// A blocking HTTP/1.1 call to the daemon under test (plain HTTP, 127.0.0.1).
struct http_answer {
  int status = 0;
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;
};
http_answer http_call(std::uint16_t port, const std::string& method, const std::string& target,
                      const std::string& body = "",
                      const std::map<std::string, std::string>& headers = {});

}  // namespace resendd::test
