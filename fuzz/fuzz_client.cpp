// libFuzzer target: the client's response parsing. A loopback peer reads the request, answers
// with the input bytes and closes; http_client::send must come back with an attempt result
// (an answer or an error), never throw or hang past its deadline.
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <cstdint>
#include <cstring>
#include <string>
#include <thread>

#include "again.h"
#include "http/client.h"

namespace {

int listener(std::uint16_t& port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  ::listen(fd, 16);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  port = ntohs(addr.sin_port);
  return fd;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static std::uint16_t port = 0;
  static const int lfd = listener(port);
  const std::string answer(reinterpret_cast<const char*>(data), size);
  std::thread peer([&] {
    const int c = resendd::fuzz::again([] { return ::accept(lfd, nullptr, nullptr); });
    if (c < 0) return;
    char buf[8192];
    std::string req;
    while (req.find("\r\n\r\n") == std::string::npos) {
      const auto n = resendd::fuzz::again([&] { return ::recv(c, buf, sizeof buf, 0); });
      if (n <= 0) break;
      req.append(buf, std::size_t(n));
    }
    for (std::size_t sent = 0; sent < answer.size();) {
      const auto n = resendd::fuzz::again(
          [&] { return ::send(c, answer.data() + sent, answer.size() - sent, MSG_NOSIGNAL); });
      if (n <= 0) break;
      sent += std::size_t(n);
    }
    ::close(c);
  });
  // One client for the whole run (its TLS context and DNS threads are costly to make); a fresh
  // connection every time, since each peer closes after answering.
  static boost::asio::io_context io;
  static resendd::http_client client(io.get_executor(), resendd::client_options{});
  io.restart();
  {
    resendd::outbound_request req;
    req.method = size % 2 ? "POST" : "HEAD";
    req.url = "http://127.0.0.1:" + std::to_string(port) + "/x";
    req.body = "{}";
    req.timeout = resendd::millis{2000};
    req.allow_private = true;
    bool done = false;
    boost::asio::co_spawn(
        io,
        [&]() -> boost::asio::awaitable<void> {
          auto r = co_await client.send(req);
          (void)r;
          done = true;
        },
        boost::asio::detached);
    io.run();
    if (!done) __builtin_trap();
  }
  peer.join();
  return 0;
}
