#pragma once
// The HTTP/1.1 server: a listener accepting connections and one coroutine per connection that
// reads a whole request (header limit, body limit, read deadline), hands it to the handler and
// writes the answer, keeping the connection alive while the client wants it.
// Malformed requests, bodies over the limit and slow clients are answered (400/413/431) or cut
// off here, so the handler only ever sees a complete request.
#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "http/types.h"

namespace boost::asio::ssl {
class context;
}

namespace resendd {

struct server_options {
  std::string host = "127.0.0.1";
  std::uint16_t port = 9000;  // 0 = any free port
  std::size_t max_body_bytes = 1 << 20;
  std::size_t max_header_bytes = 16 * 1024;
  millis read_timeout{30'000};
  int max_connections = 1024;
  int max_connections_per_client = 256;  // one address cannot take every connection
  // HTTPS when set: PEM certificate chain and private key (read at start()).
  std::string tls_cert_file;
  std::string tls_key_file;
};

// A TLS server context from PEM files (TLS 1.2 or newer). Throws std::exception (a file that
// cannot be read, a key that does not match the certificate).
std::shared_ptr<boost::asio::ssl::context> load_tls_context(const std::string& cert_file,
                                                            const std::string& key_file);

using request_handler = std::function<boost::asio::awaitable<outgoing_response>(incoming_request)>;

class http_server {
 public:
  http_server(boost::asio::io_context& io, server_options opts, request_handler handler);
  ~http_server();
  http_server(const http_server&) = delete;
  http_server& operator=(const http_server&) = delete;

  // Binds and starts accepting; returns the bound port. Throws std::system_error on failure.
  std::uint16_t start();
  // Stops accepting and closes idle connections; requests being handled still get answers.
  void stop();
  // Requests being handled right now (for an orderly shutdown).
  int busy() const;
  // Connections accepted from now on use `tls` (a reload); those open keep theirs. Call on the
  // io thread; a server started without TLS stays plain.
  void replace_tls(std::shared_ptr<boost::asio::ssl::context> tls);

 private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

// The JSON error body every endpoint uses: {"error": message, "code": code}.
outgoing_response json_error(int status, std::string_view code, std::string_view message);

}  // namespace resendd
