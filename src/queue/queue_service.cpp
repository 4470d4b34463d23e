#include "queue/queue_service.h"

#include <spdlog/spdlog.h>

#include "queue/dispatcher.h"
#include "util/await.h"
#include "util/metrics.h"

namespace resendd {

namespace asio = boost::asio;
using namespace store;

namespace {
constexpr int purge_batch_rows = 500;
constexpr int vacuum_step_pages = 128;
// A job with an Idempotency-Key outlives every purge for this long, so that a repeat of the
// request within it still answers the first job.
constexpr millis idempotency_key_kept{24 * 3'600'000};
}  // namespace

queue_service::queue_service(queue_store& store, dispatcher* dispatch, const clock& clk,
                             queue_timeouts t)
    : store_(store), dispatch_(dispatch), clk_(clk), t_(t) {}

asio::awaitable<enqueue_result> queue_service::enqueue(new_job job) {
  auto g = make_gate();
  const auto now = clk_.now();
  const std::function<bool()> give_up = [g] { return abandon(g); };
  const auto t0 = std::chrono::steady_clock::now();
  auto r = co_await await_callback_for<enqueue_result>(
      [&](auto done) { store_.enqueue(std::move(job), now, g, std::move(done)); }, t_.commit,
      give_up);
  if (r && r->what == enqueue_result::status::queued)
    metrics().observe("resendd_commit_duration_seconds",
                      "From handing a job to the store to its commit (fsync'd).", {},
                      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  if (!r)
    co_return enqueue_result{enqueue_result::status::busy, {}, {},
                             "the store did not commit within " + format_duration(t_.commit)};
  if (r->what == enqueue_result::status::queued && dispatch_) dispatch_->wake();
  co_return *r;
}

namespace {
// Reads change nothing: a caller that stops waiting simply drops the answer.
const std::function<bool()> stop_waiting = [] { return true; };
}  // namespace

asio::awaitable<read_result> queue_service::job(std::string id) {
  auto r = co_await await_callback_for<read_result>(
      [&](auto done) { store_.job(std::move(id), std::move(done)); }, t_.admin, stop_waiting);
  co_return r ? *r : read_result{std::nullopt, "the store did not answer in time"};
}

asio::awaitable<read_result> queue_service::list(std::string state, int limit) {
  auto r = co_await await_callback_for<read_result>(
      [&](auto done) { store_.list(std::move(state), limit, std::move(done)); }, t_.admin,
      stop_waiting);
  co_return r ? *r : read_result{std::nullopt, "the store did not answer in time"};
}

asio::awaitable<read_result> queue_service::oldest_queued() {
  auto r = co_await await_callback_for<read_result>(
      [&](auto done) { store_.oldest_queued(std::move(done)); }, t_.admin, stop_waiting);
  co_return r ? *r : read_result{std::nullopt, "the store did not answer in time"};
}

asio::awaitable<read_result> queue_service::unalerted_dead(std::string alerts_route, sys_time since,
                                                           int limit) {
  auto r = co_await await_callback_for<read_result>(
      [&](auto done) { store_.unalerted_dead(alerts_route, since, limit, std::move(done)); },
      t_.admin, stop_waiting);
  co_return r ? *r : read_result{std::nullopt, "the store did not answer in time"};
}

asio::awaitable<action_result> queue_service::act(const action_start& start) {
  auto g = make_gate();
  const std::function<bool()> give_up = [g] { return abandon(g); };
  auto r = co_await await_callback_for<action_result>(
      [&](auto done) { start(g, std::move(done)); }, t_.admin, give_up);
  co_return r ? *r
              : action_result{action_result::status::failed, {},
                              "the store did not answer in time; nothing was changed", 0};
}

asio::awaitable<action_result> queue_service::cancel(std::string id) {
  const auto now = clk_.now();
  const action_start start = [&](gate g, auto done) { store_.cancel(id, now, g, std::move(done)); };
  co_return co_await act(start);
}

asio::awaitable<action_result> queue_service::retry(std::string id, bool force) {
  const auto now = clk_.now();
  const action_start start = [&](gate g, auto done) {
    store_.retry(id, now, force, g, std::move(done));
  };
  auto r = co_await act(start);
  if (r.what == action_result::status::done && dispatch_) dispatch_->wake();
  co_return r;
}

asio::awaitable<action_result> queue_service::retry_dead() {
  const auto now = clk_.now();
  const action_start start = [&](gate g, auto done) { store_.retry_dead(now, g, std::move(done)); };
  auto r = co_await act(start);
  if (r.what == action_result::status::done && dispatch_) dispatch_->wake();
  co_return r;
}

asio::awaitable<action_result> queue_service::purge(millis older_than,
                                                    std::vector<std::string> states) {
  if (purging_)
    co_return action_result{action_result::status::conflict, {}, "a purge is already running", 0};
  purging_ = true;
  const auto now = clk_.now();
  const auto cutoff = now - older_than;
  const auto key_cutoff = now - idempotency_key_kept;
  std::int64_t total = 0;
  action_result out{action_result::status::done, {}, {}, 0};
  for (int batch = 1;; ++batch) {
    auto r = co_await await_callback<action_result>([&](auto done) {
      store_.purge_batch(cutoff, key_cutoff, states, purge_batch_rows, std::move(done));
    });
    if (r.what != action_result::status::done) {
      out = r;
      break;
    }
    total += r.count;
    if (batch % 50 == 0) spdlog::info("purge: {} job(s) deleted so far", total);
    if (r.count < purge_batch_rows) break;
  }
  out.count = total;
  if (out.what == action_result::status::done && total > 0) {
    // Give the space back in small steps, each its own short transaction.
    for (int step = 0; step < 100'000; ++step) {
      auto r = co_await await_callback<action_result>(
          [&](auto done) { store_.reclaim_space(vacuum_step_pages, std::move(done)); });
      if (r.what != action_result::status::done) {
        spdlog::warn("purge: giving space back failed: {}", r.message);
        break;
      }
      if (r.count == 0) break;
    }
  }
  spdlog::info("purge: {} job(s) deleted{}", total,
               out.what == action_result::status::done ? "" : ", then failed: " + out.message);
  purging_ = false;
  co_return out;
}

asio::awaitable<std::int64_t> queue_service::apply_retention(millis succeeded, millis dead) {
  std::int64_t total = 0;
  const std::vector<std::pair<millis, std::vector<std::string>>> passes = {
      {succeeded, {"succeeded"}}, {dead, {"dead", "cancelled"}}};
  for (const auto& [age, states] : passes) {
    if (age <= millis{0}) continue;
    const auto r = co_await purge(age, states);
    if (r.what == action_result::status::done)
      total += r.count;
    else
      spdlog::warn("retention: skipped ({})", r.message);
  }
  co_return total;
}

asio::awaitable<readiness> queue_service::ready() {
  if (dispatch_ && !dispatch_->healthy()) co_return readiness{false, "the claim loop is restarting"};
  auto g = make_gate();
  // The probe changes nothing: past the deadline, stop it if it has not started, and answer.
  const std::function<bool()> give_up = [g] {
    abandon(g);
    return true;
  };
  auto err = co_await await_callback_for<std::string>(
      [&](auto done) { store_.probe(g, std::move(done)); }, t_.ready, give_up);
  if (!err)
    co_return readiness{false, "the store did not answer within " + format_duration(t_.ready)};
  if (!err->empty()) co_return readiness{false, "the store cannot commit: " + *err};
  if (!store_.healthy()) co_return readiness{false, store_.health_detail()};
  co_return readiness{true, {}};
}

}  // namespace resendd
