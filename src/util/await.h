#pragma once
// Bridges a callback API (the store writer completes on its own thread) into a coroutine:
//   auto r = co_await await_callback<T>([&](auto done) { store.enqueue(job, now, done); });
// The coroutine resumes on its own executor, never on the caller of `done`.
#include <boost/asio/async_result.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <functional>
#include <memory>

namespace resendd {

template <class T, class Start>
boost::asio::awaitable<T> await_callback(Start start) {
  namespace asio = boost::asio;
  auto ex = co_await asio::this_coro::executor;
  co_return co_await asio::async_initiate<const asio::use_awaitable_t<>&, void(T)>(
      [ex, start = std::move(start)](auto handler) mutable {
        auto h = std::make_shared<decltype(handler)>(std::move(handler));
        start(std::function<void(T)>([ex, h](T value) {
          asio::post(ex, [h, value = std::move(value)]() mutable { (*h)(std::move(value)); });
        }));
      },
      asio::use_awaitable);
}

}  // namespace resendd
