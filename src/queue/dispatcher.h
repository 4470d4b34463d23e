#pragma once
// The dispatcher: claims due jobs and delivers them.
//
// Duties: keep up to `delivery.concurrency` deliveries in flight; claim due jobs in batches with
// one UPDATE ... RETURNING, within per-route and per-resource-key limits; for each job build the
// request (json_parse applied, client_token added, fresh credentials when the route has them),
// send it, classify the answer, ask the retry policy what comes next and record the attempt.
// Sleeps until the next job is due (the claim says when), and wakes early when one is enqueued or
// a delivery ends.
// Invariants it restores on every path, exceptions included: a delivery slot is always freed;
// an attempt whose outcome did not commit is recorded again with backoff while the process lives
// (the job stays fenced by its claim number meanwhile, and its lease expires if we die); a claim
// loop that throws is restarted after a second, and healthy() is false until it runs again.
//
// Thread-safety: wake() and stop() may be called from any thread; the claim loop and every
// delivery run on the io_context's single thread.
#include <atomic>
#include <boost/asio/io_context.hpp>
#include <functional>
#include <memory>

#include "config/config.h"
#include "util/time.h"

namespace boost::asio {
class thread_pool;
}

namespace resendd {

namespace store {
class queue_store;
}
class route_table;
class http_client;
class credential_source;

class first_answers;
class alerter;

class dispatcher {
 public:
  dispatcher(boost::asio::io_context& io, store::queue_store& store, const route_table& routes,
             http_client& client, const clock& clk, const config& cfg,
             credential_source* credentials);
  ~dispatcher();
  dispatcher(const dispatcher&) = delete;
  dispatcher& operator=(const dispatcher&) = delete;

  void start();
  void wake();
  // Where the first answer of a job a /resend waits for (Prefer: wait) is reported; set before
  // start().
  void report_first_answers(first_answers* answers);
  // Where a large stored request is parsed (build, scrub); set before start(). Null: here.
  void parse_large_on(boost::asio::thread_pool* pool);
  // Told of every job that dies (after its outcome commits); set before start().
  void report_deaths(alerter* alerts);
  // The route table was replaced (reload): per-route limits and the lease follow it.
  void routes_changed();
  // Stops claiming; `drained` runs (on the io_context) once no delivery is in flight.
  void stop(std::function<void()> drained);
  int in_flight() const;
  bool healthy() const;  // the claim loop is running

 private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

}  // namespace resendd
