// libFuzzer target: the server's request parsing and routing, end to end over loopback. The
// input is sent as the bytes of one connection (then the write side is closed); the server must
// answer and/or close the connection, and stay up for the next input.
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/io_context.hpp>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <thread>

#include "again.h"
#include "http/server.h"

namespace {

struct server_fixture {
  boost::asio::io_context io;
  resendd::http_server server;
  std::uint16_t port = 0;
  std::thread thread;
  server_fixture()
      : server(
            io,
            resendd::server_options{"127.0.0.1", 0, 64 * 1024, 16 * 1024, resendd::millis{300}, 64,
                                    64},
            [](resendd::incoming_request r) -> boost::asio::awaitable<resendd::outgoing_response> {
              resendd::outgoing_response out;
              out.body = "{\"path\":" + std::to_string(r.target.size()) + "}";
              co_return out;
            }) {
    port = server.start();
    thread = std::thread([this] { io.run(); });
  }
};

server_fixture& fixture() {
  static auto* f = new server_fixture();  // lives for the whole run
  return *f;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  auto& f = fixture();
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  // Thousands of connections a second: the server closes first and keeps each in TIME-WAIT for a
  // minute, so the source port range wraps onto 4-tuples still in TIME-WAIT and a SYN can be
  // lost to them (the connect "succeeds", the server never sees it). Rotating the source address
  // over 127.0.x.y keeps every 4-tuple fresh.
  static std::uint32_t n = 0;
  ++n;
  sockaddr_in src{};
  src.sin_family = AF_INET;
  src.sin_addr.s_addr = htonl((127u << 24) | ((1 + (n / 250) % 200) << 8) | (1 + n % 250));
  const int one = 1;  // the port is chosen at connect, per 4-tuple, not per address at bind
  ::setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
  ::bind(fd, reinterpret_cast<sockaddr*>(&src), sizeof src);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(f.port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);  // the harness is out of local ports: not the server's doing
    return 0;
  }
  for (std::size_t sent = 0; sent < size;) {
    const auto n =
        resendd::fuzz::again([&] { return ::send(fd, data + sent, size - sent, MSG_NOSIGNAL); });
    if (n <= 0) break;
    sent += std::size_t(n);
  }
  ::shutdown(fd, SHUT_WR);
  // The server's read timeout is 300 ms: it must have closed well before 5 s.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  char buf[4096];
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    const int ready = ::poll(&p, 1, int(std::max<std::int64_t>(left.count(), 0)));
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) __builtin_trap();  // neither answered nor closed in time
    if (resendd::fuzz::again([&] { return ::recv(fd, buf, sizeof buf, 0); }) <= 0) break;
  }
  ::close(fd);
  return 0;
}
