#include "http/client.h"

#include <openssl/ssl.h>
#include <sys/socket.h>

#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/url/parse.hpp>
#include <cerrno>
#include <charconv>
#include <mutex>
#include <unordered_map>
#include <variant>

#include "http/address_policy.h"
#include "http/dns.h"
#include "util/await.h"

namespace resendd {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using steady = std::chrono::steady_clock;

namespace {

using plain_stream = beast::tcp_stream;
using tls_stream = beast::ssl_stream<beast::tcp_stream>;

// An idle kept-alive connection is reusable only while nothing is waiting on it: readable means
// the peer closed it (EOF) or sent bytes no request asked for; either way it is dropped.
bool socket_idle(beast::tcp_stream& s) {
  if (!s.socket().is_open()) return false;
  char byte;
  const auto n = ::recv(s.socket().native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

struct connection {
  std::variant<std::unique_ptr<plain_stream>, std::unique_ptr<tls_stream>> stream;
  steady::time_point idle_since;
  beast::tcp_stream& lowest() {
    return std::visit([](auto& s) -> beast::tcp_stream& { return beast::get_lowest_layer(*s); },
                      stream);
  }
  // Nothing waits on it: neither on the socket nor, over TLS, decrypted inside OpenSSL.
  bool still_idle() {
    const auto* tls = std::get_if<std::unique_ptr<tls_stream>>(&stream);
    if (tls && SSL_pending((*tls)->native_handle()) > 0) return false;
    return socket_idle(lowest());
  }
};

struct target {
  bool tls = false;
  std::string host;  // without brackets
  std::string port;
  std::string host_header;
  std::string path_and_query;
  std::string pool_key;  // scheme://host:port + policy
};

std::optional<target> parse_target(const outbound_request& req) {
  auto u = boost::urls::parse_absolute_uri(req.url);
  if (!u || (u->scheme() != "http" && u->scheme() != "https") || u->host().empty())
    return std::nullopt;
  target t;
  t.tls = u->scheme() == "https";
  t.host = u->host_type() == boost::urls::host_type::ipv6 ? std::string(u->encoded_host_address())
                                                          : std::string(u->host());
  if (t.host.size() > 2 && t.host.front() == '[') t.host = t.host.substr(1, t.host.size() - 2);
  t.port = u->has_port() ? std::string(u->port()) : (t.tls ? "443" : "80");
  t.host_header = std::string(u->encoded_host_and_port());
  t.path_and_query = origin_form_target(u->encoded_target());
  t.pool_key = std::string(u->scheme()) + "://" + t.host + ":" + t.port +
               (req.allow_private ? "#private" : "#public");
  return t;
}

// Fields resendd writes itself, whatever a job's headers say: the framing and hop-by-hop ones;
// Accept-Encoding, since the answer must be read (a Feishu code in a gzip body is no code); and
// Content-Encoding, since the body sent is always the text resendd built, never encoded.
bool written_by_us(std::string_view name) {
  return beast::iequals(name, "host") || beast::iequals(name, "content-length") ||
         beast::iequals(name, "connection") || beast::iequals(name, "transfer-encoding") ||
         beast::iequals(name, "keep-alive") || beast::iequals(name, "upgrade") ||
         beast::iequals(name, "te") || beast::iequals(name, "expect") ||
         beast::iequals(name, "accept-encoding") || beast::iequals(name, "content-encoding");
}

// Retry-After (seconds or an HTTP-date) or Feishu's x-ogw-ratelimit-reset (seconds), parsed
// strictly (util/time.h parse_wait_hint); the longer wins, at most a week.
std::optional<millis> wait_hint(const http::fields& f) {
  std::optional<millis> best;
  const auto now = std::chrono::time_point_cast<millis>(std::chrono::system_clock::now());
  // Only Retry-After may be an HTTP-date.
  for (const auto& [name, dated] :
       {std::pair{"x-ogw-ratelimit-reset", false}, std::pair{"retry-after", true}}) {
    auto it = f.find(name);
    if (it == f.end()) continue;
    const auto v = it->value();
    auto m = parse_wait_hint(std::string_view(v.data(), v.size()), dated, now);
    if (!m) continue;
    m = std::min(*m, millis{86400LL * 7 * 1000});
    if (!best || *m > *best) best = m;
  }
  return best;
}

// The id a destination gives its answer, for an operator to quote to its support (Feishu asks
// for X-Tt-Logid). Kept only when short and visible ASCII: it goes into logs and the database.
std::string answer_id(const http::fields& f) {
  for (const char* name : {"X-Tt-Logid", "X-Request-Id"}) {
    const auto it = f.find(name);
    if (it == f.end()) continue;
    const auto v = it->value();
    const bool printable =
        std::all_of(v.begin(), v.end(), [](char c) { return c > 0x20 && c < 0x7f; });
    if (v.empty() || v.size() > 128 || !printable) continue;
    return std::string(name) + " " + std::string(v);
  }
  return {};
}

// What an answer's header says besides its status: a wait hint and the answer's id.
void read_answer_fields(const http::fields& f, attempt_result& out) {
  out.retry_after = wait_hint(f);
  out.answer_id = answer_id(f);
}

std::string describe(const beast::error_code& ec) {
  if (ec == beast::error::timeout) return "timed out";
  return ec.message();
}

}  // namespace

struct http_client::impl {
  asio::any_io_executor ex;
  client_options opts;
  asio::ssl::context tls{asio::ssl::context::tls_client};
  std::mutex mutex;
  std::unordered_map<std::string, std::vector<std::unique_ptr<connection>>> idle;
  steady::time_point last_prune{};  // guarded by mutex
  dns_resolver dns;

  impl(asio::any_io_executor e, const client_options& o) : ex(std::move(e)), opts(o) {
    tls.set_default_verify_paths();
    if (!opts.ca_file.empty()) tls.load_verify_file(opts.ca_file);
    tls.set_verify_mode(asio::ssl::verify_peer);
    SSL_CTX_set_min_proto_version(tls.native_handle(), TLS1_2_VERSION);
  }

  std::unique_ptr<connection> take_idle(const std::string& key) {
    std::lock_guard lock(mutex);
    auto it = idle.find(key);
    if (it == idle.end()) return nullptr;
    auto& list = it->second;
    while (!list.empty()) {
      auto c = std::move(list.back());
      list.pop_back();
      if (steady::now() - c->idle_since < opts.idle_timeout && c->still_idle()) return c;
    }
    return nullptr;
  }

  void give_back(const std::string& key, std::unique_ptr<connection> c) {
    std::lock_guard lock(mutex);
    // Connections idle too long (or closed by their peer) anywhere in the pool are closed, so
    // that origins never used again do not keep descriptors: once a second at most (a look at
    // every idle connection is a system call each; take() checks the one it hands out anyway).
    const auto now = steady::now();
    if (now - last_prune >= std::chrono::seconds(1)) {
      last_prune = now;
      prune(key, now);
    }
    auto& list = idle[key];
    if (list.size() >= opts.max_idle_per_origin) return;
    c->idle_since = now;
    list.push_back(std::move(c));
  }

  void prune(const std::string& keep_key, steady::time_point now) {
    for (auto it = idle.begin(); it != idle.end();) {
      std::erase_if(it->second, [&](const std::unique_ptr<connection>& old) {
        return now - old->idle_since >= opts.idle_timeout || !old->still_idle();
      });
      it = it->second.empty() && it->first != keep_key ? idle.erase(it) : std::next(it);
    }
  }

  asio::awaitable<std::unique_ptr<connection>> open(const target& t, const outbound_request& req,
                                                    steady::time_point deadline,
                                                    attempt_result& out);

  // Sends the request and reads the final answer. True when the connection may be reused (the
  // answer was read whole and the peer keeps it alive). `wrote`: the request was sent;
  // `got_bytes`: anything of an answer came back.
  template <class Stream>
  asio::awaitable<bool> exchange(Stream& s, const target& t, const outbound_request& req,
                                 steady::time_point deadline, attempt_result& out, bool& wrote,
                                 bool& got_bytes);
};

asio::awaitable<std::unique_ptr<connection>> http_client::impl::open(const target& t,
                                                                     const outbound_request& req,
                                                                     steady::time_point deadline,
                                                                     attempt_result& out) {
  // Resolved off this thread; past the deadline the answer is dropped, whenever it comes.
  const auto left = std::chrono::duration_cast<millis>(deadline - steady::now());
  static const std::function<bool()> stop_waiting = [] { return true; };
  auto answer = co_await await_callback_for<dns_answer>(
      [&](auto done) { dns.resolve(t.host, t.port, std::move(done)); }, std::max(left, millis{0}),
      stop_waiting);
  if (!answer) {
    out.error = "resolve " + t.host + ": timed out";
    out.timed_out = true;
    co_return nullptr;
  }
  if (!answer->error.empty()) {
    out.error = "resolve " + t.host + ": " + answer->error;
    co_return nullptr;
  }
  beast::error_code ec;
  std::vector<tcp::endpoint> allowed;
  for (const auto& e : answer->endpoints) {
    if (req.allow_private || is_public_address(e.address())) allowed.push_back(e);
  }
  if (allowed.empty()) {
    out.error = "destination " + t.host + " resolves only to non-public addresses";
    out.blocked = true;
    co_return nullptr;
  }
  auto c = std::make_unique<connection>();
  beast::tcp_stream tcp_s(ex);
  tcp_s.expires_at(deadline);
  co_await tcp_s.async_connect(allowed, asio::redirect_error(asio::use_awaitable, ec));
  if (ec) {
    out.error = "connect " + t.host + ":" + t.port + ": " + describe(ec);
    out.timed_out = ec == beast::error::timeout;
    co_return nullptr;
  }
  if (!t.tls) {
    c->stream = std::make_unique<plain_stream>(std::move(tcp_s));
    co_return c;
  }
  auto s = std::make_unique<tls_stream>(std::move(tcp_s), tls);
  beast::error_code addr_ec;
  asio::ip::make_address(t.host, addr_ec);
  // SNI only for names; an IP literal is verified against the certificate's IP entries.
  if (addr_ec && !SSL_set_tlsext_host_name(s->native_handle(), t.host.c_str())) {
    out.error = "TLS: cannot set SNI";
    co_return nullptr;
  }
  s->set_verify_callback(asio::ssl::host_name_verification(t.host));
  co_await s->async_handshake(asio::ssl::stream_base::client,
                              asio::redirect_error(asio::use_awaitable, ec));
  if (ec) {
    out.error = "TLS handshake with " + t.host + ": " + describe(ec);
    out.timed_out = ec == beast::error::timeout;
    out.tls_failed = !out.timed_out;
    co_return nullptr;
  }
  c->stream = std::move(s);
  co_return c;
}

template <class Stream>
asio::awaitable<bool> http_client::impl::exchange(Stream& s, const target& t,
                                                  const outbound_request& req,
                                                  steady::time_point deadline, attempt_result& out,
                                                  bool& wrote, bool& got_bytes) {
  http::request<http::string_body> msg;
  msg.method_string(req.method);
  msg.target(t.path_and_query);
  msg.version(11);
  msg.set(http::field::host, t.host_header);
  msg.set(http::field::user_agent, opts.user_agent);
  msg.set(http::field::accept_encoding, "identity");
  bool has_type = false;
  for (const auto& [name, value] : req.headers) {
    if (written_by_us(name)) continue;
    has_type = has_type || beast::iequals(name, "content-type");
    msg.set(name, value);
  }
  if (!req.body.empty() && !has_type)
    msg.set(http::field::content_type, "application/json; charset=utf-8");
  msg.body() = req.body;
  msg.keep_alive(true);
  msg.prepare_payload();

  beast::error_code ec;
  beast::get_lowest_layer(s).expires_at(deadline);
  co_await http::async_write(s, msg, asio::redirect_error(asio::use_awaitable, ec));
  if (ec) {
    out.error = "send: " + describe(ec);
    out.timed_out = ec == beast::error::timeout;
    co_return false;
  }
  wrote = true;
  // Bounded: a destination's trailer fields are not covered by the header limit, and Beast
  // throws on a field of 64 KiB or more; this buffer ends such an answer with an error first.
  beast::flat_buffer buffer{48 * 1024};
  // Interim answers (100 Continue, 103 Early Hints) are read and skipped until the final one
  // (RFC 9110 §15.2); a bounded number of them, so a peer cannot keep us here.
  for (int interim = 0;; ++interim) {
    http::response_parser<http::string_body> parser;
    parser.body_limit(opts.max_response_bytes);
    parser.header_limit(32 * 1024);
    if (beast::iequals(req.method, "HEAD")) parser.skip(true);  // no body, whatever it says
    try {
      co_await http::async_read(s, buffer, parser, asio::redirect_error(asio::use_awaitable, ec));
    } catch (const std::exception& e) {
      out.error = std::string("receive: malformed answer: ") + e.what();
      got_bytes = got_bytes || parser.got_some();
      co_return false;
    }
    got_bytes = got_bytes || parser.got_some() || buffer.size() > 0;
    if (ec == http::error::body_limit && parser.is_header_done()) {
      // Answered: the status stands, the body is kept as far as read.
      out.status = int(parser.get().result_int());
      out.body = std::move(parser.get().body());
      read_answer_fields(parser.get().base(), out);
      co_return false;
    }
    // A TLS peer that closes without close_notify after a body delimited by the close: the
    // answer is whole (the parser was waiting for exactly that end).
    const bool truncated_but_whole =
        ec == asio::ssl::error::stream_truncated && parser.is_header_done() && parser.need_eof();
    if (truncated_but_whole) {
      auto& res = parser.get();
      out.status = int(res.result_int());
      out.body = std::move(res.body());
      read_answer_fields(res.base(), out);
      co_return false;
    }
    if (ec) {
      out.error = "receive: " + describe(ec);
      out.timed_out = ec == beast::error::timeout;
      co_return false;
    }
    auto& res = parser.get();
    const int status = int(res.result_int());
    if (status >= 100 && status < 200 && status != 101) {
      if (interim >= 8) {
        out.error = "receive: more than 8 interim (1xx) answers";
        co_return false;
      }
      continue;
    }
    out.status = status;
    out.body = std::move(res.body());
    read_answer_fields(res.base(), out);
    // Bytes already read past the final answer answer no request: an answer longer than its
    // Content-Length, or a peer out of step. They are dropped with the connection, which is not
    // used again, so that nothing of them is ever read as the next request's answer
    // (RFC 9112 §6.3).
    co_return res.keep_alive() && status != 101 && buffer.size() == 0;
  }
}

http_client::http_client(asio::any_io_executor ex, const client_options& opts)
    : impl_(std::make_unique<impl>(std::move(ex), opts)) {}

http_client::~http_client() = default;

asio::awaitable<attempt_result> http_client::send(outbound_request req) {
  attempt_result out;
  auto t = parse_target(req);
  if (!t) {
    out.error = "bad URL";
    out.blocked = true;
    co_return out;
  }
  const auto deadline = steady::now() + req.timeout;
  // A kept-alive connection may have been closed by the peer at any moment: a write to it can
  // still succeed, and the EOF shows on the read. When a reused connection fails before any byte
  // of an answer came back, the request is sent once more on a fresh connection, within the same
  // attempt (what browsers and curl do; the job's client_token keeps Feishu writes idempotent).
  // A failure after an answer began is never retried here: the retry policy decides.
  for (int round = 0; round < 2; ++round) {
    auto c = round == 0 ? impl_->take_idle(t->pool_key) : nullptr;
    const bool reused = c != nullptr;
    if (!c) c = co_await impl_->open(*t, req, deadline, out);
    if (!c) co_return out;
    bool wrote = false, got_bytes = false;
    const bool keep = co_await std::visit(
        [&](auto& s) { return impl_->exchange(*s, *t, req, deadline, out, wrote, got_bytes); },
        c->stream);
    if (!out.answered() && reused && !got_bytes && !out.timed_out) {
      out = attempt_result{};
      continue;
    }
    if (keep && out.answered()) impl_->give_back(t->pool_key, std::move(c));
    co_return out;
  }
  co_return out;
}

}  // namespace resendd
