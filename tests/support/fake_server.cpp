#include "support/fake_server.h"

#include <poll.h>
#include <sys/socket.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

namespace resendd::test {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

struct fake_server::impl {
  asio::io_context io;
  tcp::acceptor acceptor{io};
  asio::ssl::context tls{asio::ssl::context::tls_server};
};

fake_server::fake_server(handler h, const test_cert* tls)
    : handler_(std::move(h)), tls_(tls != nullptr), impl_(std::make_unique<impl>()) {
  if (!handler_) handler_ = [](const received&) { return fake_reply{}; };
  if (tls) {
    impl_->tls.use_certificate_chain_file(tls->cert_file);
    impl_->tls.use_private_key_file(tls->key_file, asio::ssl::context::pem);
  }
  tcp::endpoint ep(asio::ip::make_address("127.0.0.1"), 0);
  impl_->acceptor.open(ep.protocol());
  impl_->acceptor.bind(ep);
  impl_->acceptor.listen();
  port_ = impl_->acceptor.local_endpoint().port();
  acceptor_thread_ = std::thread([this] { accept_loop(); });
}

fake_server::~fake_server() { stop(); }

std::string fake_server::url(const std::string& path, const std::string& tls_host) const {
  return (tls_ ? "https://" + tls_host : std::string("http://127.0.0.1")) + ":" +
         std::to_string(port_) + path;
}

void fake_server::stop() {
  {
    std::lock_guard lock(mutex_);
    if (stopping_) return;
    stopping_ = true;
    for (int fd : open_fds_) ::shutdown(fd, SHUT_RDWR);
  }
  // Wakes the blocking accept() (Linux returns EINVAL on a shut-down listening socket).
  ::shutdown(impl_->acceptor.native_handle(), SHUT_RDWR);
  if (acceptor_thread_.joinable()) acceptor_thread_.join();
  std::vector<std::thread> threads;
  {
    std::lock_guard lock(mutex_);
    threads.swap(threads_);
  }
  for (auto& t : threads) t.join();
}

std::vector<received> fake_server::requests() const {
  std::lock_guard lock(mutex_);
  return requests_;
}

std::size_t fake_server::count() const {
  std::lock_guard lock(mutex_);
  return requests_.size();
}

bool fake_server::wait_for(std::size_t n, std::chrono::milliseconds timeout) const {
  std::unique_lock lock(mutex_);
  return changed_.wait_for(lock, timeout, [&] { return requests_.size() >= n; });
}

void fake_server::accept_loop() {
  for (;;) {
    beast::error_code ec;
    tcp::socket sock(impl_->io);
    impl_->acceptor.accept(sock, ec);
    std::lock_guard lock(mutex_);
    if (ec || stopping_) return;
    const int fd = sock.release(ec);
    open_fds_.push_back(fd);
    threads_.emplace_back([this, fd, n = ++accepted_] { serve(fd, n); });
  }
}

namespace {

template <class Stream>
void serve_stream(Stream& stream, std::size_t connection, const fake_server::handler& h,
                  const std::function<void(received)>& record) {
  beast::flat_buffer buffer;
  for (;;) {
    http::request_parser<http::string_body> parser;
    parser.body_limit(64 << 20);  // as large as resendd's largest max_body_bytes
    beast::error_code ec;
    http::read(stream, buffer, parser, ec);
    if (ec) return;
    auto& req = parser.get();
    received r;
    r.connection = connection;
    r.method = std::string(req.method_string());
    r.target = std::string(req.target());
    for (const auto& f : req) {
      std::string n(f.name_string());
      for (auto& c : n) c = char(std::tolower(static_cast<unsigned char>(c)));
      r.headers[n] = std::string(f.value());
    }
    r.body = req.body();
    record(r);  // on arrival, so a test can see a request the handler is still holding
    fake_reply reply = h(r);
    if (reply.drop) return;
    if (!reply.raw.empty()) {
      asio::write(stream, asio::buffer(reply.raw), ec);
      if (ec) return;
      continue;
    }
    http::response<http::string_body> res{static_cast<http::status>(reply.status), 11};
    res.set(http::field::content_type, "application/json");
    for (const auto& [k, v] : reply.headers) res.set(k, v);
    res.body() = reply.body;
    res.keep_alive(req.keep_alive());
    res.prepare_payload();
    http::write(stream, res, ec);
    if (ec || !req.keep_alive()) return;
    if (reply.idle_close.count() > 0 && buffer.size() == 0) {
      pollfd p{beast::get_lowest_layer(stream).native_handle(), POLLIN, 0};
      if (::poll(&p, 1, int(reply.idle_close.count())) == 0) return;  // idle: close
    }
  }
}

}  // namespace

void fake_server::serve(int fd, std::size_t connection) {
  asio::io_context io;
  tcp::socket sock(io, tcp::v4(), fd);
  // Declared after the socket, so it runs first: the fd leaves the list before it is closed
  // (and its number can be reused).
  struct forget {
    fake_server* self;
    int fd;
    ~forget() {
      std::lock_guard lock(self->mutex_);
      std::erase(self->open_fds_, fd);
    }
  } forget_fd{this, fd};
  auto record = [this](received r) {
    {
      std::lock_guard lock(mutex_);
      requests_.push_back(std::move(r));
    }
    changed_.notify_all();
  };
  if (tls_) {
    asio::ssl::stream<tcp::socket> stream(std::move(sock), impl_->tls);
    beast::error_code ec;
    stream.handshake(asio::ssl::stream_base::server, ec);
    if (!ec) serve_stream(stream, connection, handler_, record);
  } else {
    serve_stream(sock, connection, handler_, record);
  }
}

http_answer http_call(std::uint16_t port, const std::string& method, const std::string& target,
                      const std::string& body, const std::map<std::string, std::string>& headers) {
  asio::io_context io;
  beast::tcp_stream stream(io);
  stream.expires_after(std::chrono::seconds(30));
  stream.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
  http::request<http::string_body> req{http::string_to_verb(method), target, 11};
  req.set(http::field::host, "127.0.0.1");
  // Names differing only in case are separate field lines, so a test can send a field twice.
  for (const auto& [k, v] : headers)
    if (beast::iequals(k, "host"))
      req.set(k, v);
    else
      req.insert(k, v);
  if (!body.empty() && !headers.count("Content-Type"))
    req.set(http::field::content_type, "application/json");
  req.body() = body;
  req.prepare_payload();
  beast::error_code wec;
  http::write(stream, req, wec);  // a server may answer (413) before reading it all
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(64 << 20);
  beast::error_code ec;
  http::read(stream, buffer, parser, ec);
  http_answer out;
  if (ec) return out;
  auto& res = parser.get();
  out.status = int(res.result_int());
  for (const auto& f : res) {
    std::string n(f.name_string());
    for (auto& c : n) c = char(std::tolower(static_cast<unsigned char>(c)));
    out.headers[n] = std::string(f.value());
  }
  out.body = res.body();
  return out;
}

}  // namespace resendd::test
