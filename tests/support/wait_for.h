#pragma once
// Runs an asynchronous store call and waits for its completion: `start` gets the callback.
#include <future>
#include <utility>

namespace resendd::test {

template <class T, class Start>
T wait_for(Start start) {
  std::promise<T> p;
  auto f = p.get_future();
  start([&p](T v) { p.set_value(std::move(v)); });
  return f.get();
}

}  // namespace resendd::test
