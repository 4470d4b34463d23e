#pragma once
// The PostgreSQL backend of queue_store: several resendd daemons share one queue.
//
// How they coordinate (details beside each statement in pg_store.cpp):
// - Intake: group commit, as on SQLite: every enqueue waiting goes into one transaction.
//   Idempotency-Key is a UNIQUE column, so a repeated key is found whichever daemon took it.
// - Claims: one transaction-level advisory lock around each claim, so claims of all daemons run
//   one at a time and each sees every committed delivery when it counts what a route and a key
//   have in flight (per-route concurrency and per-key serialization hold across daemons); rows
//   are taken with FOR UPDATE SKIP LOCKED, so a claim never waits on a row another transaction
//   (a cancel, a purge) is changing.
// - Leases and fencing as on SQLite (claim_no). Each daemon holds a slot — a session advisory
//   lock named after its host and listen address — and writes it into claimed_by. At start and at
//   a clean stop a daemon re-queues only its own slot's deliveries, never another live daemon's;
//   a daemon that died has its jobs taken back by any claim once their lease expires (or at once,
//   when it starts again and takes its slot back).
// - Wake-ups: a commit that queues a job or frees a delivery slot sends NOTIFY; every daemon
//   LISTENs and wakes its dispatcher.
// - Purges take a transaction-level advisory lock: one daemon at a time.
// - Counts by state and route are re-read every 2 s (other daemons change them), and moved by
//   this daemon's own commits in between.
//
// Threads, each with its own connection: the writer (every change), the reader (job, list) and,
// in a daemon, the watcher (slot lock, LISTEN, recounts). No caller's thread ever waits on the
// network to PostgreSQL.
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "store/job_counter.h"
#include "store/queue_store.h"

namespace resendd::store {

class pg_connection;
class pg_writer;
class pg_reader;
class pg_watcher;

struct pg_options {
  std::string url;
  std::int64_t max_queue_depth = 1'000'000;
  std::size_t max_pending_writes = 20'000;
  millis busy_timeout{5'000};  // lock_timeout of every write: a locked row or table fails it
  bool read_only = false;  // CLI reads: no writer, no migrations
  // A daemon's name for its slot (host and listen address); empty = not a daemon (CLI): no slot,
  // no LISTEN, nothing re-queued.
  std::string daemon_name;
};

class pg_store final : public queue_store {
 public:
  // Connects, applies migrations (under an advisory lock, so daemons starting together apply
  // them once), counts jobs, takes a slot, starts the threads. Throws std::runtime_error with the
  // URL masked on failure.
  pg_store(const pg_options& opts, sys_time now);
  ~pg_store() override;
  pg_store(const pg_store&) = delete;
  pg_store& operator=(const pg_store&) = delete;

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
  void on_wake(std::function<void()> fn) override;

  const std::string& slot() const { return slot_; }

 private:
  void count(const std::string& state, const std::string& route, std::int64_t delta) {
    counter_.add(state, route, delta);
  }
  void recount(pg_connection& c);
  bool submit_action(std::function<void(pg_connection&, action_result&)> work, gate g,
                     std::function<void(action_result)> done);

  pg_options opts_;
  std::string slot_;  // claimed_by of this daemon's claims
  job_counter counter_;
  std::unique_ptr<pg_writer> writer_;
  std::unique_ptr<pg_reader> reader_;
  std::unique_ptr<pg_watcher> watcher_;
};

}  // namespace resendd::store
