#pragma once
// The queue's store, as one interface a backend implements (store/sqlite_store: one daemon, the
// default; store/pg_store: several daemons sharing one PostgreSQL queue).
//
// Contract for every backend:
// - Writes are asynchronous: `done` runs on a store thread after the transaction that holds the
//   change committed (or with the error that rolled it back). Callers post onward from there and
//   must not block in `done`.
// - A request may carry a `gate` (see below): the caller may abandon it while it still waits in
//   the store's queue; then it is never run and `done` gets `abandoned`. Once started it always
//   completes, so a caller that gives up waiting knows the change is either committed or not.
// - State changes of a claimed job are fenced: a claim gives the job a new claim number, and
//   finish changes the row only while that number still matches and the job is still in the
//   state the claim left it in. A lease that expires makes the job claimable again.
// - Counts by state and route are kept in memory, moved only by committed changes.
// - Times are passed in by the caller (from its clock); the store never reads the clock.
#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "util/log.h"
#include "util/time.h"

namespace resendd::store {

// 0 = waiting, 1 = started (will complete), 2 = abandoned by the caller (never runs).
using gate = std::shared_ptr<std::atomic<int>>;
inline gate make_gate() { return std::make_shared<std::atomic<int>>(0); }
// The caller gives up: true when the request had not started (it never will).
inline bool abandon(const gate& g) {
  int expected = 0;
  return g && g->compare_exchange_strong(expected, 2);
}

inline constexpr const char* abandoned_error = "abandoned: the caller stopped waiting";

struct new_job {
  std::string id;
  std::string route;
  std::string method;
  std::string location;
  std::string request;  // JSON text of the /resend body as received
  std::optional<std::string> idempotency_key;
  std::optional<std::string> client_token;
  std::optional<std::string> resource_key;
};

struct enqueue_result {
  // existing: a repeated Idempotency-Key with the same request (same_request); conflict: with
  // another request.
  enum class status { queued, existing, conflict, full, busy, failed } what = status::failed;
  std::string id;     // the new job's id, or the existing one for a repeated Idempotency-Key
  std::string state;  // for existing
  std::string error;  // for failed
};

// Per-route limits the claim respects: in flight per route and per resource key.
struct route_limits {
  std::string route;
  int concurrency = 1;
  int key_concurrency = 1;
};

struct claim_request {
  sys_time now;
  millis lease{60'000};
  int limit = 0;  // free delivery slots
  std::vector<route_limits> routes;
  std::size_t rotation = 0;  // which route is served first this time (fairness between routes)
};

struct claimed_job {
  std::string id, route, location, method, request;
  std::optional<std::string> client_token, resource_key;
  std::int64_t claim_no = 0;
  int attempts = 0;  // counted attempts including this one (counted when claimed)
  int free_attempts = 0, auth_refreshes = 0;
  sys_time age_start;  // created_at, or the last manual retry
};

struct claim_result {
  std::vector<claimed_job> jobs;
  std::optional<sys_time> next_due;  // earliest time something may become claimable
  int reclaimed = 0;                 // expired leases taken back
  std::string error;                 // empty = ok
};

struct attempt_record {
  sys_time started_at;
  millis duration{0};
  std::optional<int> http_status;
  std::optional<std::int64_t> feishu_code;
  std::string outcome;  // classify.h outcome_kind as text
  std::string error;
  std::string response;  // already truncated and masked
};

struct job_finish {
  std::string id;
  std::string route;
  std::int64_t claim_no = 0;
  attempt_record attempt;
  std::string next_state;  // queued | succeeded | dead
  sys_time next_attempt_at;
  bool counted = true;  // false: give back the attempt taken at claim (rate limit, refresh)
  bool auth_refresh = false;
  std::string last_error;
  std::optional<std::string> resource_key;
  millis key_min_gap{0};
  // Replaces the stored request (a succeeded job's, with its credentials masked); nullopt: kept.
  std::optional<std::string> scrubbed_request;
};

struct finish_result {
  int attempt_no = 0;     // the attempt's number in the attempt log
  bool applied = false;   // false: fenced off (cancelled, or claimed again after its lease)
  std::string state;      // the job's state after the finish
  std::string error;      // not committed; the caller retries
};

struct action_result {
  enum class status { done, not_found, conflict, failed } what = status::failed;
  std::string state;    // the job's state after the action (done) or now (conflict)
  std::string message;  // why not (conflict, failed)
  std::int64_t count = 0;  // bulk actions: rows changed
};

inline constexpr std::array<const char*, 5> job_states = {"queued", "delivering", "succeeded",
                                                          "dead", "cancelled"};

// Jobs by (state, route), committed.
using job_counts = std::map<std::pair<std::string, std::string>, std::int64_t>;

// Whether a repeated Idempotency-Key comes with the request its job was stored with: the same
// bytes, or the same bytes as they are kept once the job succeeded (credentials scrubbed).
inline bool same_request(const std::string& stored, const std::string& repeated) {
  if (stored == repeated) return true;
  if (const auto scrubbed = scrub_request_secrets(repeated); scrubbed && *scrubbed == stored)
    return true;
  // A job that succeeded under an older version keeps its request re-serialized.
  const auto legacy = scrub_request_secrets_reserialized(repeated);
  return legacy && *legacy == stored;
}

// The admin actions' rules, the same on every backend: nullopt = allowed, else the conflict.
inline std::optional<action_result> cancel_refused(const std::string& state) {
  if (state == "queued" || state == "delivering") return std::nullopt;
  return action_result{action_result::status::conflict, state,
                       "only queued or delivering jobs can be cancelled; this one is " + state, 0};
}
// `inflight_until`: the lease of a delivery of the job still in flight; empty when none is.
inline std::optional<action_result> retry_refused(const std::string& state,
                                                  const std::string& inflight_until,
                                                  const std::string& last_error, bool force) {
  const auto conflict = [&](std::string why) {
    return action_result{action_result::status::conflict, state, std::move(why), 0};
  };
  if (state != "dead" && state != "cancelled")
    return conflict("only dead or cancelled jobs can be retried; this one is " + state);
  if (!inflight_until.empty())
    return conflict("a delivery of this job is still in flight (lease until " + inflight_until +
                    "); retry when it has ended");
  if (!force && last_error.find("needs reconciliation") != std::string::npos)
    return conflict(
        "this job needs reconciliation: its first write may have landed; check the "
        "destination, then retry with force");
  return std::nullopt;
}

// Routes with queued jobs that the config no longer names still get claimed (one at a time), so
// that delivery can tell them apart and end them: adds them to `req`.
inline void add_unnamed_routes(claim_request& req, const job_counts& counts) {
  for (const auto& [k, n] : counts) {
    if (k.first != "queued") continue;
    bool named = false;
    for (const auto& r : req.routes) named = named || r.route == k.second;
    if (!named) req.routes.push_back({k.second, 1, 1});
  }
}

struct read_result {
  std::optional<nlohmann::json> value;  // nullopt with empty error: not found
  std::string error;
};

class queue_store {
 public:
  virtual ~queue_store() = default;

  // --- writes (asynchronous) ---
  virtual void enqueue(new_job job, sys_time now, gate g,
                       std::function<void(enqueue_result)> done) = 0;
  virtual void claim(claim_request req, std::function<void(claim_result)> done) = 0;
  virtual void finish(job_finish f, sys_time now, std::function<void(finish_result)> done) = 0;
  virtual void cancel(std::string id, sys_time now, gate g,
                      std::function<void(action_result)> done) = 0;
  // Dead or cancelled → queued with a fresh attempt budget and age window. Jobs that died
  // "needs reconciliation" only with `force`; never while a delivery of the job is in flight.
  virtual void retry(std::string id, sys_time now, bool force, gate g,
                     std::function<void(action_result)> done) = 0;
  virtual void retry_dead(sys_time now, gate g, std::function<void(action_result)> done) = 0;
  // Deletes at most `max_rows` jobs in `states` (finished states only) finished before `cutoff`,
  // with their attempts, in one transaction; `count` says how many. A job with an
  // Idempotency-Key created after `key_cutoff` is kept (keys answer repeats for 24 h).
  virtual void purge_batch(sys_time cutoff, sys_time key_cutoff, std::vector<std::string> states,
                           int max_rows, std::function<void(action_result)> done) = 0;
  // Gives free space back to the file system in small steps; `count` = pages still free.
  virtual void reclaim_space(int max_pages, std::function<void(action_result)> done) = 0;
  // Proves the store can commit now: a no-op when the last commit succeeded, else a real write.
  virtual void probe(gate g, std::function<void(std::string error)> done) = 0;

  // --- start-up and shutdown (synchronous, before/after the network runs) ---
  // Every delivering job back to queued; `refund` gives back the attempt taken at claim (clean
  // shutdown). Returns how many.
  virtual int requeue_delivering(sys_time now, bool refund) = 0;
  // Writes everything to the main database file (SQLite: WAL checkpoint); then stops.
  virtual void close() = 0;

  // --- reads (asynchronous, never on the writer) ---
  virtual void job(std::string id, std::function<void(read_result)> done) = 0;
  virtual void list(std::string state, int limit, std::function<void(read_result)> done) = 0;
  // When the oldest queued job was created (ISO-8601 text), or null when none is queued.
  virtual void oldest_queued(std::function<void(read_result)> done) = 0;
  // Dead jobs an alert may not have reported: not of the alert route (`alerts_route`), finished
  // after `since` and after the newest alert job made for their route (an alert job's
  // resource_key is "alerts:" + the route it reports). A JSON array of {"id", "route",
  // "location", "last_error", "request", "attempts"}, oldest first, at most `limit`.
  virtual void unalerted_dead(std::string alerts_route, sys_time since, int limit,
                              std::function<void(read_result)> done) = 0;

  // --- in memory ---
  virtual job_counts counts() const = 0;
  virtual std::int64_t active() const = 0;  // queued + delivering
  virtual bool healthy() const = 0;         // the last commit succeeded and the file is ours
  virtual std::string health_detail() const = 0;
  virtual std::uint64_t commits() const = 0;
  // Called from a store thread when another process changed the queue in a way that may give
  // the dispatcher work (a job queued, a delivery slot freed). SQLite: never (one process).
  virtual void on_wake(std::function<void()> fn) { (void)fn; }
};

}  // namespace resendd::store
