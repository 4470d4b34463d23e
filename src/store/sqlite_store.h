#pragma once
// The SQLite backend of queue_store: every SQL statement about jobs and attempts lives here (and
// in migrations/).
//
// Threads: writes run on the writer thread (group commit, store/writer.h); checkpoints on the
// checkpointer's thread beside it, or on the writer between its transactions, in turns
// (store/checkpointer.h); reads run on a reader thread with its own read-only connection (WAL
// lets it read beside the writer). None ever runs on a caller's thread, so a network thread never
// waits on SQLite. Prepared statements are cached per connection and used only on that
// connection's thread.
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "store/job_counter.h"
#include "store/queue_store.h"

namespace SQLite {
class Database;
}

namespace resendd::store {

class writer;
class read_thread;
class statement_cache;

struct sqlite_options {
  std::string path = "var/resendd.db";
  std::int64_t max_queue_depth = 1'000'000;  // queued + delivering; then enqueue says `full`
  std::size_t max_pending_writes = 20'000;   // writer queue; then enqueue says `busy`
  millis busy_timeout{5'000};                // how long a write waits for another process's lock
  std::int64_t max_size = 0;                 // bytes the file may grow to (0 = no limit)
  int retry_batch = 1'000;  // retry_dead queues dead jobs this many to a transaction
  // Read-only (CLI reads while a daemon runs): no migrations, no writer; the file must exist.
  bool read_only = false;
};

class sqlite_store final : public queue_store {
 public:
  // Opens (creating parent folders and a private file), applies migrations (refusing a schema
  // newer than this binary), counts jobs, starts the writer and the reader. Throws
  // std::runtime_error with context on failure.
  sqlite_store(const sqlite_options& opts, sys_time now);
  ~sqlite_store() override;
  sqlite_store(const sqlite_store&) = delete;
  sqlite_store& operator=(const sqlite_store&) = delete;

  void enqueue(new_job job, sys_time now, gate g, std::function<void(enqueue_result)> done) override;
  void claim(claim_request req, std::function<void(claim_result)> done) override;
  void finish(job_finish f, sys_time now, std::function<void(finish_result)> done) override;
  void cancel(std::string id, sys_time now, gate g,
              std::function<void(action_result)> done) override;
  void retry(std::string id, sys_time now, bool force, gate g,
             std::function<void(action_result)> done) override;
  void retry_dead(sys_time now, gate g, std::function<void(action_result)> done) override;
  void purge_batch(sys_time cutoff, sys_time key_cutoff, std::vector<std::string> states, int max_rows,
                   std::function<void(action_result)> done) override;
  void reclaim_space(int max_pages, std::function<void(action_result)> done) override;
  void probe(gate g, std::function<void(std::string)> done) override;

  int requeue_delivering(sys_time now, bool refund) override;
  void close() override;

  void job(std::string id, std::function<void(read_result)> done) override;
  void list(std::string state, int limit, std::function<void(read_result)> done) override;
  void oldest_queued(std::function<void(read_result)> done) override;
  void unalerted_dead(std::string alerts_route, sys_time since, int limit,
                      std::function<void(read_result)> done) override;

  job_counts counts() const override;
  std::int64_t active() const override { return counter_.active(); }
  bool healthy() const override;
  std::string health_detail() const override;
  std::uint64_t commits() const override;
  std::uint64_t checkpoints() const;  // finished, on any connection

 private:
  void count(const std::string& state, const std::string& route, std::int64_t delta) {
    counter_.add(state, route, delta);
  }
  void recount(SQLite::Database& db);
  void retry_dead_from(sys_time now, gate g, std::int64_t before,
                       std::function<void(action_result)> done);
  bool submit_action(std::function<void(SQLite::Database&, action_result&)> work, gate g,
                     std::function<void(action_result)> done,
                     bool essential = false);  // true: never refused for a full writer queue

  sqlite_options opts_;
  job_counter counter_;
  std::unique_ptr<statement_cache> wstmts_;  // writer thread only
  std::unique_ptr<writer> writer_;
  std::unique_ptr<read_thread> reader_;
};

}  // namespace resendd::store
