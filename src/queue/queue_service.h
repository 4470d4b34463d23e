#pragma once
// The queue service: what the HTTP handlers (and nothing else above the store) call to reach the
// queue. It puts deadlines on every store call, so a handler never waits on the store longer
// than it may: an enqueue not started by its deadline is abandoned (never half-done: it is
// either committed and answered 202, or not stored and answered 503), reads and admin actions
// give up likewise, and readiness answers within `ready_timeout` whatever the store does.
//
// Thread-safety: the awaitables run on the caller's executor; the store completes on its own
// threads and the results are posted back.
#include <boost/asio/awaitable.hpp>
#include <string>
#include <vector>

#include "store/queue_store.h"
#include "util/time.h"

namespace resendd {

class dispatcher;

struct queue_timeouts {
  millis commit{5'000};  // /resend: how long to wait for the commit that holds the job
  millis admin{10'000};  // reads and admin actions
  millis ready{400};     // /readyz
};

struct readiness {
  bool ready = false;
  std::string reason;  // why not
};

class queue_service {
 public:
  // `dispatch` is null in one-shot CLI commands (nothing to wake; readiness not asked).
  queue_service(store::queue_store& store, dispatcher* dispatch, const clock& clk,
                queue_timeouts t);

  // `busy` when the store's queue is full or the commit did not start in time.
  boost::asio::awaitable<store::enqueue_result> enqueue(store::new_job job);
  boost::asio::awaitable<store::read_result> job(std::string id);
  boost::asio::awaitable<store::read_result> list(std::string state, int limit);
  boost::asio::awaitable<store::read_result> oldest_queued();
  boost::asio::awaitable<store::read_result> unalerted_dead(std::string alerts_route,
                                                            sys_time since, int limit);
  boost::asio::awaitable<store::action_result> cancel(std::string id);
  boost::asio::awaitable<store::action_result> retry(std::string id, bool force);
  boost::asio::awaitable<store::action_result> retry_dead();
  // Deletes finished jobs in `states` older than `older_than`, 1,000 a transaction, logging
  // progress, then gives the space back. One purge at a time (else `conflict`).
  boost::asio::awaitable<store::action_result> purge(millis older_than,
                                                     std::vector<std::string> states);
  // Retention: deletes succeeded jobs finished more than `succeeded` ago, dead and cancelled ones
  // more than `dead` ago (0 = keep them), as purge does; skipped while another purge runs.
  boost::asio::awaitable<std::int64_t> apply_retention(millis succeeded, millis dead);
  boost::asio::awaitable<readiness> ready();

  store::job_counts counts() const { return store_.counts(); }
  std::int64_t active() const { return store_.active(); }
  std::uint64_t commits() const { return store_.commits(); }

 private:
  using action_start =
      std::function<void(store::gate, std::function<void(store::action_result)>)>;
  boost::asio::awaitable<store::action_result> act(const action_start& start);

  store::queue_store& store_;
  dispatcher* dispatch_;
  const clock& clk_;
  queue_timeouts t_;
  bool purging_ = false;  // on the caller's (network) thread
};

}  // namespace resendd
