#include "http/server.h"

#include <spdlog/spdlog.h>

#include <array>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/url/parse.hpp>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>

#include "util/errors.h"

namespace resendd {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

outgoing_response json_error(int status, std::string_view code, std::string_view message) {
  outgoing_response r;
  r.status = status;
  r.body = nlohmann::json{{"error", message}, {"code", code}}.dump(
      -1, ' ', false, nlohmann::json::error_handler_t::replace);
  return r;
}

namespace {
// A connection's read buffer grows to hold one request of up to this many body bytes in one read
// (Beast reads at most 64 KiB at a time anyway); it keeps that capacity while the connection lives.
constexpr std::uint64_t max_read_reserve = 64 * 1024;

// RFC 9112 §6.1 and §6.3: a Transfer-Encoding other than exactly "chunked", more than one, or one
// beside a Content-Length leaves the body's length in doubt (request smuggling).
template <class Fields>
std::optional<std::string> framing_problem(const Fields& h) {
  const auto n = h.count(http::field::transfer_encoding);
  if (n == 0) return std::nullopt;
  if (n > 1) return "more than one Transfer-Encoding field";
  if (h.count(http::field::content_length)) return "Transfer-Encoding and Content-Length together";
  const auto te = trim_ows(h[http::field::transfer_encoding]);
  if (!beast::iequals(te, "chunked")) return "Transfer-Encoding other than chunked";
  return std::nullopt;
}

// RFC 9112 §3.2.2: a server accepts a target in absolute form ("POST http://host/resend"), as a
// client behind a proxy sends it, and reads the path and query from it (the Host field is
// ignored then; no handler reads it). Any other target is passed on as it came.
std::string origin_form(std::string_view target) {
  if (target.empty() || target.front() == '/') return std::string(target);
  auto u = boost::urls::parse_absolute_uri(target);
  if (!u || !u->has_authority() ||
      !(beast::iequals(u->scheme(), "http") || beast::iequals(u->scheme(), "https")))
    return std::string(target);
  return origin_form_target(u->encoded_target());
}
}  // namespace

struct http_server::impl : std::enable_shared_from_this<http_server::impl> {
  asio::io_context& io;
  server_options opts;
  request_handler handler;
  tcp::acceptor acceptor;
  std::shared_ptr<asio::ssl::context> tls;  // set when serving HTTPS (replaced on reload)
  std::atomic<int> connections{0};
  std::atomic<int> busy{0};
  std::atomic<bool> stopping{false};
  std::mutex mutex;
  std::set<beast::tcp_stream*> open_streams;
  // io thread only:
  bool starved = false;
  millis pause{0};
  std::map<asio::ip::address, int> per_client;
  std::set<asio::ip::address> client_capped;  // warned once until it drops below the cap
  // Connections waiting for a request with nothing of it read yet, since when: when the server
  // is full, the longest-waiting one is closed to make room for a new connection.
  std::map<beast::tcp_stream*, std::chrono::steady_clock::time_point> idle;
  bool evicting = false;  // said once per episode

  impl(asio::io_context& i, server_options o, request_handler h)
      : io(i), opts(std::move(o)), handler(std::move(h)), acceptor(i) {}

  asio::awaitable<void> accept_loop() {
    auto self = shared_from_this();
    for (;;) {
      beast::error_code ec;
      tcp::socket sock =
          co_await acceptor.async_accept(asio::redirect_error(asio::use_awaitable, ec));
      if (ec) {
        if (stopping || ec == asio::error::operation_aborted) co_return;
        // Out of descriptors (or memory): accepting again at once would spin. Pause, growing
        // to a second, and say so once per episode.
        if (!starved)
          spdlog::warn("accept: {}; pausing new connections until it clears", ec.message());
        starved = true;
        pause = std::min(pause == millis{0} ? millis{10} : pause * 2, millis{1000});
        asio::steady_timer t(io, pause);
        co_await t.async_wait(asio::redirect_error(asio::use_awaitable, ec));
        continue;
      }
      if (starved) spdlog::info("accept: accepting connections again");
      starved = false;
      pause = millis{0};
      const auto peer = sock.remote_endpoint(ec).address();
      if (!ec && per_client[peer] >= opts.max_connections_per_client) {
        if (!client_capped.count(peer))
          spdlog::warn("connection limit per client ({}) reached for {}; closing its new ones",
                       opts.max_connections_per_client, peer.to_string());
        client_capped.insert(peer);
        sock.close(ec);
        continue;
      }
      if (connections.load() >= opts.max_connections) {
        // Full: an idle connection (a keep-alive one, or one that never sent a byte) makes room;
        // without one the new connection is closed.
        auto victim = std::min_element(idle.begin(), idle.end(), [](const auto& a, const auto& b) {
          return a.second < b.second;
        });
        if (victim == idle.end()) {
          spdlog::warn("connection limit ({}) reached and none is idle; closing a new connection",
                       opts.max_connections);
          sock.close(ec);
          continue;
        }
        if (!evicting)
          spdlog::warn(
              "connection limit ({}) reached; closing the longest-idle connections to "
              "make room",
              opts.max_connections);
        evicting = true;
        victim->first->socket().cancel(ec);  // its read ends; the session closes it
        idle.erase(victim);
      } else {
        evicting = false;
      }
      // An exception that escapes a session (a parser's, say) ends that connection only.
      asio::co_spawn(sock.get_executor(), session(std::move(sock)), [](std::exception_ptr e) {
        if (e) spdlog::warn("http: a connection ended on an error: {}", exception_message(e));
      });
    }
  }

  template <class Stream>
  asio::awaitable<void> write(Stream& stream, const outgoing_response& r, bool keep_alive,
                              unsigned version, bool head = false) {
    http::response<http::string_body> res;
    res.version(version);
    res.result(static_cast<http::status>(r.status));
    res.set(http::field::server, "resendd");
    if (!r.body.empty() || r.status >= 200) res.set(http::field::content_type, r.content_type);
    for (const auto& [k, v] : r.headers) res.set(k, v);
    res.body() = r.body;
    res.keep_alive(keep_alive);
    res.prepare_payload();
    if (head) res.body().clear();  // Content-Length stays that of the GET answer
    beast::error_code ec;
    beast::get_lowest_layer(stream).expires_after(opts.read_timeout);
    co_await http::async_write(stream, res, asio::redirect_error(asio::use_awaitable, ec));
  }

  // After an early error answer the client may still be sending: read and discard what comes
  // (bounded in bytes and time) so that closing does not reset the connection before the client
  // has read the answer.
  template <class Stream>
  asio::awaitable<void> drain(Stream& stream) {
    beast::error_code ec;
    auto& tcp_layer = beast::get_lowest_layer(stream);
    // Plain HTTP: half-close, so the client sees the answer's end. (TLS: the close_notify comes
    // at the end of the session.)
    if constexpr (std::is_same_v<Stream, beast::tcp_stream>)
      tcp_layer.socket().shutdown(tcp::socket::shutdown_send, ec);
    tcp_layer.expires_after(std::chrono::seconds(2));
    std::array<char, 16384> sink;
    for (std::size_t total = 0; total < 8 * opts.max_body_bytes + (1 << 20);) {
      const auto n = co_await stream.async_read_some(asio::buffer(sink),
                                                     asio::redirect_error(asio::use_awaitable, ec));
      if (ec) break;
      total += n;
    }
  }

  // Counts a connection and lists its stream for stop() while the session lives, however it
  // ends (an exception included).
  struct session_guard {
    impl& s;
    beast::tcp_stream* stream;
    asio::ip::address peer;
    session_guard(impl& owner, beast::tcp_stream* st) : s(owner), stream(st) {
      ++s.connections;
      beast::error_code ec;
      peer = stream->socket().remote_endpoint(ec).address();
      ++s.per_client[peer];
      std::lock_guard lock(s.mutex);
      s.open_streams.insert(stream);
    }
    ~session_guard() {
      s.idle.erase(stream);
      {
        std::lock_guard lock(s.mutex);
        s.open_streams.erase(stream);
      }
      if (--s.per_client[peer] <= 0) s.per_client.erase(peer), s.client_capped.erase(peer);
      --s.connections;
    }
  };

  asio::awaitable<void> session(tcp::socket sock) {
    auto self = shared_from_this();
    if (!tls) {
      beast::tcp_stream stream(std::move(sock));
      co_await serve(stream);
      beast::error_code ignored;
      stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
      co_return;
    }
    const auto context = tls;  // a reload may replace it; this connection keeps its own
    beast::ssl_stream<beast::tcp_stream> stream(std::move(sock), *context);
    beast::error_code ec;
    // The handshake is bounded like a request: a client that stalls in it is cut off.
    beast::get_lowest_layer(stream).expires_after(opts.read_timeout);
    co_await stream.async_handshake(asio::ssl::stream_base::server,
                                    asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      spdlog::debug("https: handshake failed: {}", ec.message());
      co_return;
    }
    co_await serve(stream);
    beast::get_lowest_layer(stream).expires_after(std::chrono::seconds(2));
    co_await stream.async_shutdown(asio::redirect_error(asio::use_awaitable, ec));
  }

  template <class Stream>
  asio::awaitable<void> serve(Stream& stream) {
    session_guard guard(*this, &beast::get_lowest_layer(stream));
    // Bounded: trailer fields are not covered by the header limit, and Beast throws on a field
    // of 64 KiB or more; a buffer this size ends such a request with an error first.
    beast::flat_buffer buffer{opts.max_header_bytes + 16 * 1024};
    for (;;) {
      http::request_parser<http::string_body> parser;
      parser.body_limit(opts.max_body_bytes);
      parser.header_limit(static_cast<std::uint32_t>(opts.max_header_bytes));
      beast::error_code ec;
      beast::get_lowest_layer(stream).expires_after(opts.read_timeout);
      // Nothing of the next request here yet: idle (the first one to go when the server is full).
      if (buffer.size() == 0)
        idle[&beast::get_lowest_layer(stream)] = std::chrono::steady_clock::now();
      co_await http::async_read_header(stream, buffer, parser,
                                       asio::redirect_error(asio::use_awaitable, ec));
      idle.erase(&beast::get_lowest_layer(stream));
      // The header section's fields, taken now: Beast adds a chunked body's trailer fields to the
      // same list (beside fields of the same name). Trailers are never read as header fields (RFC
      // 9110 §6.5.1): an Authorization or Idempotency-Key sent after the body would count then.
      incoming_request in;
      if (!ec)
        for (const auto& f : parser.get()) {
          std::string name(f.name_string());
          for (auto& ch : name) ch = char(std::tolower(static_cast<unsigned char>(ch)));
          auto [it, fresh] = in.headers.try_emplace(name, f.value());
          if (!fresh) {
            it->second.append(", ").append(f.value());
            if (!in.given_twice(name)) in.repeated.push_back(name);
          }
        }
      if (!ec) {
        if (auto bad = framing_problem(parser.get())) {
          spdlog::info("http: rejected a request: {}", *bad);
          co_await write(stream, json_error(400, "bad_framing", *bad), false, 11);
          break;  // the body's length is unknown: nothing after it can be trusted
        }
      }
      // curl and others wait for "100 Continue" before sending a larger body.
      if (!ec && beast::iequals(parser.get()[http::field::expect], "100-continue")) {
        http::response<http::empty_body> cont{http::status::continue_, parser.get().version()};
        co_await http::async_write(stream, cont, asio::redirect_error(asio::use_awaitable, ec));
      }
      // Room for the whole body in one read. Beast reads at most the buffer's free capacity
      // (512 bytes when it has none), so a 1 KiB job took three reads; the buffer keeps this
      // capacity, so the next request on the connection arrives in one read too.
      if (!ec && !parser.is_done()) {
        if (const auto rest = parser.content_length_remaining())
          buffer.reserve(std::min<std::uint64_t>(
              buffer.max_size(), std::min<std::uint64_t>(*rest, max_read_reserve) + 1024));
        co_await http::async_read(stream, buffer, parser,
                                  asio::redirect_error(asio::use_awaitable, ec));
      }
      if (ec == http::error::end_of_stream || ec == beast::error::timeout ||
          ec == asio::error::operation_aborted || ec == asio::error::connection_reset ||
          ec == asio::error::eof || ec == asio::ssl::error::stream_truncated)
        break;
      if (ec) {
        if (ec == http::error::body_limit)
          co_await write(stream,
                         json_error(413, "too_large",
                                    "request body is larger than " +
                                        std::to_string(opts.max_body_bytes) + " bytes"),
                         false, 11);
        else if (ec == http::error::header_limit)
          co_await write(stream,
                         json_error(431, "headers_too_large", "request headers are too large"),
                         false, 11);
        else
          co_await write(stream,
                         json_error(400, "bad_http", "malformed HTTP request: " + ec.message()),
                         false, 11);
        spdlog::info("http: rejected a request: {}", ec.message());
        co_await drain(stream);
        break;
      }
      auto req = parser.release();
      // HEAD is GET without the body (RFC 9110 §9.3.2): the handler sees GET, write() drops it.
      const bool head = req.method() == http::verb::head;
      in.method = head ? std::string("GET") : std::string(req.method_string());
      in.target = origin_form(req.target());
      in.body = std::move(req.body());
      outgoing_response out;
      ++busy;
      try {
        out = co_await handler(std::move(in));
      } catch (const std::exception& e) {
        spdlog::error("http: handler failed on {} {}: {}", std::string(req.method_string()),
                      std::string(req.target()), e.what());
        out = json_error(500, "internal", "internal error");
      }
      --busy;
      const bool keep = req.keep_alive() && !stopping;
      co_await write(stream, out, keep, req.version(), head);
      if (!keep) break;
    }
  }
};

std::shared_ptr<asio::ssl::context> load_tls_context(const std::string& cert_file,
                                                     const std::string& key_file) {
  auto ctx = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_server);
  ctx->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                   asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                   asio::ssl::context::no_tlsv1_1 | asio::ssl::context::single_dh_use);
  ctx->use_certificate_chain_file(cert_file);
  ctx->use_private_key_file(key_file, asio::ssl::context::pem);
  if (SSL_CTX_check_private_key(ctx->native_handle()) != 1)
    throw std::runtime_error("the private key does not match the certificate");
  return ctx;
}

void http_server::replace_tls(std::shared_ptr<asio::ssl::context> tls) {
  if (impl_->tls && tls) impl_->tls = std::move(tls);
}

http_server::http_server(asio::io_context& io, server_options opts, request_handler handler)
    : impl_(std::make_shared<impl>(io, std::move(opts), std::move(handler))) {}

http_server::~http_server() { stop(); }

std::uint16_t http_server::start() {
  if (!impl_->opts.tls_cert_file.empty())
    impl_->tls = load_tls_context(impl_->opts.tls_cert_file, impl_->opts.tls_key_file);
  auto& a = impl_->acceptor;
  const tcp::endpoint ep(asio::ip::make_address(impl_->opts.host), impl_->opts.port);
  a.open(ep.protocol());
  a.set_option(asio::socket_base::reuse_address(true));
  a.bind(ep);
  a.listen(asio::socket_base::max_listen_connections);
  asio::co_spawn(impl_->io, impl_->accept_loop(), [](std::exception_ptr e) {
    if (e) spdlog::critical("http: the accept loop failed; no new connections are accepted");
  });
  return a.local_endpoint().port();
}

void http_server::stop() {
  if (impl_->stopping.exchange(true)) return;
  auto self = impl_;
  asio::post(impl_->io, [self] {
    beast::error_code ec;
    self->acceptor.close(ec);
    std::lock_guard lock(self->mutex);
    // Idle keep-alive connections are waiting in a read: cancel it. A request being handled
    // finishes and is answered with "Connection: close".
    for (auto* s : self->open_streams) s->socket().cancel(ec);
  });
}

int http_server::busy() const { return impl_->busy.load(); }

}  // namespace resendd
