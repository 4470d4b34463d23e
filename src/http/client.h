#pragma once
// The outbound HTTP/1.1 client: TCP or TLS, keep-alive connections reused per origin, one
// deadline per request, and the address policy applied after DNS resolution.
//
// TLS verifies the chain (system store plus an optional extra CA file) and the host name, and
// sends SNI. Redirects are never followed. Runs on one io_context thread (Beast streams are not
// thread-safe); the idle pool is still guarded by a mutex.
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <memory>
#include <string>

#include "http/types.h"

namespace resendd {

struct client_options {
  std::string ca_file;  // extra trusted CAs (PEM), "" = system store only
  std::size_t max_response_bytes = 1 << 20;
  std::size_t max_idle_per_origin = 16;
  // A pooled connection idle longer than this is not reused: below common servers' keep-alive
  // timeouts (nginx 75 s, many proxies 5 s), so we rarely write to one the peer is closing.
  millis idle_timeout{4'000};
  std::string user_agent = "resendd/0.1";
};

class http_client {
 public:
  http_client(boost::asio::any_io_executor ex, const client_options& opts);
  ~http_client();
  http_client(const http_client&) = delete;
  http_client& operator=(const http_client&) = delete;

  // Never throws for network trouble: failures come back in attempt_result.
  boost::asio::awaitable<attempt_result> send(outbound_request req);

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace resendd
