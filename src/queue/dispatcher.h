#pragma once
// The dispatcher: claims due jobs and delivers them.
//
// Duties: keep up to `delivery.concurrency` deliveries in flight; claim due jobs in batches with
// one UPDATE ... RETURNING, within per-route and per-resource-key limits; for each job build the
// request (json_parse applied, client_token added, fresh credentials when the route has them),
// send it, classify the answer, ask the retry policy what comes next and record the attempt.
// Sleeps until the next job is due, and wakes early when one is enqueued or a delivery ends.
//
// Thread-safety: wake() and stop() may be called from any thread; the claim loop and every
// delivery run on the io_context's single thread.
#include <atomic>
#include <boost/asio/io_context.hpp>
#include <functional>
#include <memory>

#include "config/config.h"
#include "util/time.h"

namespace resendd {

namespace store {
class job_store;
}
class route_table;
class http_client;
class credential_source;

class dispatcher {
 public:
  dispatcher(boost::asio::io_context& io, store::job_store& store, const route_table& routes,
             http_client& client, const clock& clk, const config& cfg,
             credential_source* credentials);
  ~dispatcher();
  dispatcher(const dispatcher&) = delete;
  dispatcher& operator=(const dispatcher&) = delete;

  void start();
  void wake();
  // Stops claiming; `drained` runs (on the io_context) once no delivery is in flight.
  void stop(std::function<void()> drained);
  int in_flight() const;
  std::uint64_t delivered() const;  // attempts finished since start

 private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

}  // namespace resendd
