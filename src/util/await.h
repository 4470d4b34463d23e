#pragma once
// Bridges a callback API (the store completes on its own threads) into a coroutine:
//   auto r = co_await await_callback<T>([&](auto done) { store.enqueue(job, now, done); });
// The coroutine resumes on its own executor, never on the caller of `done`.
// await_callback_for adds a deadline: when it passes, `give_up()` decides — true: stop waiting
// (nullopt; the callback's value, if it ever comes, is dropped); false: the operation can no
// longer be stopped (it has started), so wait for its value however long it takes.
// GCC 12 destroys a temporary with a destructor passed by value to a coroutine twice: `give_up`
// is taken by reference, and callers pass named objects.
#include <boost/asio/async_result.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>

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

template <class T, class Start>
boost::asio::awaitable<std::optional<T>> await_callback_for(Start start,
                                                            std::chrono::milliseconds timeout,
                                                            const std::function<bool()>& give_up) {
  namespace asio = boost::asio;
  auto ex = co_await asio::this_coro::executor;
  struct state {
    explicit state(const asio::any_io_executor& e) : timer(e) {}
    std::optional<T> value;
    asio::steady_timer timer;
  };
  auto s = std::make_shared<state>(ex);
  // The value always arrives through a post onto this executor, so it cannot slip in between
  // checking for it and starting to wait. The callback holds the state weakly: it may be
  // destroyed on the store's thread after this coroutine (and even its io_context) is gone, and
  // the state's timer must be destroyed where it lives.
  start(std::function<void(T)>([ex, w = std::weak_ptr<state>(s)](T value) {
    // Moved into the handler: this thread keeps no reference once it has posted.
    if (auto alive = w.lock())
      asio::post(ex, [alive = std::move(alive), value = std::move(value)]() mutable {
        alive->value = std::move(value);
        alive->timer.cancel();
      });
  }));
  boost::system::error_code ec;
  s->timer.expires_after(timeout);
  co_await s->timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  if (s->value) co_return std::move(s->value);
  if (give_up && give_up()) co_return std::nullopt;
  while (!s->value) {
    s->timer.expires_after(std::chrono::hours(24));
    co_await s->timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
  co_return std::move(s->value);
}

}  // namespace resendd
