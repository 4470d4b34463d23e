#pragma once
// The job store: every SQL statement about jobs and attempts lives here (and in migrations/).
//
// Writes go through the single writer thread (group commit) and complete through callbacks that
// run on that thread after the commit; callers post onward from there. Reads use a separate
// read-only connection (WAL lets it run beside the writer), serialized by a mutex.
// All times are passed in by the caller (from its clock); the store never reads the clock.
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <vector>

#include "util/time.h"

namespace SQLite {
class Database;
}

namespace resendd::store {

class writer;

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
  enum class status { queued, existing, full, failed } what = status::failed;
  std::string id;     // the new job's id, or the existing one for a repeated Idempotency-Key
  std::string state;  // for existing
  std::string error;  // for failed
};

struct claimed_job {
  std::string id, route, location, method, request;
  std::optional<std::string> client_token, resource_key;
  int attempts = 0, free_attempts = 0, auth_refreshes = 0;
  sys_time created_at;
};

// Per-route limits the claim respects: in flight per route and per resource key.
struct route_limits {
  std::string route;
  int concurrency;
  int key_concurrency;
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
  attempt_record attempt;
  std::string next_state;  // queued | succeeded | dead
  sys_time next_attempt_at;
  bool counted = true;
  bool auth_refresh = false;
  std::string last_error;
  std::optional<std::string> resource_key;
  millis key_min_gap{0};
};

class job_store {
 public:
  // Opens (creating parent folders and a private file), applies migrations, opens the read
  // connection and starts the writer. Throws std::runtime_error with context on failure.
  job_store(const std::string& path, std::int64_t max_queue_depth, sys_time now);
  ~job_store();
  job_store(const job_store&) = delete;
  job_store& operator=(const job_store&) = delete;

  // --- writes, asynchronous: callbacks run on the writer thread after the commit ---
  void enqueue(new_job job, sys_time now, std::function<void(enqueue_result)> done);
  // Claims up to `limit` due jobs within the limits, moving them to delivering.
  void claim(sys_time now, millis lease, int limit, std::vector<route_limits> limits,
             std::function<void(std::vector<claimed_job>)> done);
  // `done` gets the attempt's number in the attempt log (1, 2, ...), or 0 if nothing was recorded.
  void finish(job_finish f, sys_time now, std::function<void(int attempt_no)> done);

  // --- writes, synchronous (start-up, shutdown, admin) ---
  int requeue_delivering(sys_time now);  // returns how many
  // Dead or cancelled → queued, due now, attempts reset. Returns false when not allowed/found.
  bool retry(const std::string& id, sys_time now);
  int retry_dead(sys_time now);
  bool cancel(const std::string& id, sys_time now);
  int purge_finished_before(sys_time cutoff);

  // --- reads ---
  std::optional<nlohmann::json> job(const std::string& id, bool with_attempts = true);
  nlohmann::json list(const std::string& state, int limit);
  // The earliest time something may become claimable after `now` (next due job or key gap).
  std::optional<sys_time> next_wakeup(sys_time now);
  nlohmann::json counts();                                // {"queued": n, ...}
  bool writable();                                        // the writer commits a no-op transaction
  std::int64_t active() const { return active_.load(); }  // queued + delivering
  std::size_t batches() const;

 private:
  std::unique_ptr<SQLite::Database> open_read_connection();

  std::string path_;
  std::int64_t max_queue_depth_;
  std::atomic<std::int64_t> active_{0};  // changed only on the writer thread
  std::mutex read_mutex_;
  std::unique_ptr<SQLite::Database> reader_;
  std::unique_ptr<writer> writer_;
};

}  // namespace resendd::store
