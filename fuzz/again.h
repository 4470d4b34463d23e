// For the fuzz targets that talk over loopback sockets.
#pragma once

#include <cerrno>

namespace resendd::fuzz {

// libFuzzer's -timeout watchdog is a SIGALRM every few seconds: any blocking call in a target may
// end with EINTR, which says nothing about the code under test (fuzz_server took it for a stalled
// connection). Repeats the call until it ends otherwise.
template <class Call>
auto again(Call call) {
  for (;;) {
    const auto r = call();
    if (r >= 0 || errno != EINTR) return r;
  }
}

}  // namespace resendd::fuzz
