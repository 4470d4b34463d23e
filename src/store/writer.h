#pragma once
// The store writer: the one thread that owns the one write connection.
//
// Duties: take write requests from any thread; gather every request waiting into one
// transaction (group commit: one fsync for many jobs); run each request inside its own
// savepoint, so a failing request fails alone (a request of one modifying statement needs none:
// SQLite undoes a failed statement by itself); COMMIT; only then call each request's
// completion. A completion therefore always means "durable" (or carries the error).
// Before each transaction it checks that the database file is still the one it opened (not
// deleted or replaced under the daemon): a write to an unlinked file would be lost.
// Its queue is bounded (submit says no when full) except for essential requests (finishes of
// deliveries, whose outcome exists only in memory). A request whose gate was abandoned before
// it started is never run.
//
// Thread-safety: submit() may be called from any thread. Work and completions run on the writer
// thread; completions must be quick (post elsewhere to continue) and must not throw.
#include <sys/types.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "store/queue_store.h"

namespace SQLite {
class Database;
}

namespace resendd::store {

class checkpointer;

class writer {
 public:
  using work_fn = std::function<void(SQLite::Database&)>;
  using done_fn = std::function<void(std::exception_ptr)>;  // null = committed

  enum class kind {
    bounded,    // refused when the queue is full
    essential,  // always taken
    alone,      // essential, run outside any transaction (checkpoint, vacuum)
  };

  // Takes ownership of an open read-write connection on `path` and of a second one that only
  // checkpoints (store/checkpointer.h), and starts the threads.
  writer(std::unique_ptr<SQLite::Database> db, std::unique_ptr<SQLite::Database> checkpoint_db,
         std::string path, std::size_t max_pending, std::size_t max_batch = 512);
  ~writer();  // stops after finishing what was submitted
  writer(const writer&) = delete;
  writer& operator=(const writer&) = delete;

  struct how {
    kind k = kind::bounded;
    gate g = nullptr;  // abandoned before it starts: the request never runs
    // This request writes like a job does (an enqueue, the readiness probe after a failure);
    // after a failure only such a request committing makes the writer healthy again.
    bool proof = false;
    // The work changes the database with at most one statement: it runs without a savepoint.
    bool one_statement = false;
    // The commit waits for fsync (synchronous = FULL). A transaction holding only requests
    // without it commits with synchronous = NORMAL: it survives a crash of the process, and the
    // next fsync'd commit or checkpoint makes it (and everything before it) survive power loss.
    bool fsync = true;
  };
  // False (and `done` is not called) when a bounded request finds the queue full or the writer
  // stopped.
  bool submit(work_fn work, done_fn done, how h);
  bool submit(work_fn work, done_fn done) { return submit(std::move(work), std::move(done), how{}); }
  // Runs `work` in a transaction and waits for the commit; rethrows its error. Not for the
  // writer thread itself; for start-up, shutdown and one-shot CLI paths only.
  void run_sync(work_fn work, kind k = kind::essential);
  void stop();
  // Checkpoints the WAL on the writer's connection (`mode`: SQLITE_CHECKPOINT_*), in turn with the
  // checkpointer. Only from work running on the writer thread outside a transaction (kind::alone).
  void checkpoint(int mode);
  std::uint64_t checkpoints() const;
  // Runs on the writer thread after every request's work, thrown or not (before the commit).
  // Set before the first submit.
  void after_each(std::function<void()> fn) { after_each_ = std::move(fn); }

  std::uint64_t batches() const { return batches_.load(); }
  bool healthy() const { return healthy_.load(); }
  std::string health_detail() const;

 private:
  struct request {
    work_fn work;
    done_fn done;
    how h;
  };
  void loop();
  void commit_batch(std::deque<request>& batch);
  void run_alone(request& r);
  void check_file() const;
  void bound_wal();
  void set_health(bool ok, const std::string& why);

  std::unique_ptr<SQLite::Database> db_;
  struct savepoint_statements;
  std::unique_ptr<savepoint_statements> savepoint_;
  bool full_sync_ = true;  // the connection's synchronous setting
  std::atomic<int> wal_frames_{0};  // frames in the WAL after the last commit (the WAL hook)
  std::unique_ptr<checkpointer> checkpointer_;
  std::uint64_t began_ = 0;  // checkpointer_->epoch() before the current request began
  const std::string path_;
  dev_t dev_ = 0;
  ino_t ino_ = 0;
  const std::size_t max_pending_;
  const std::size_t max_batch_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<request> pending_;
  bool stopping_ = false;
  std::atomic<std::uint64_t> batches_{0};
  std::atomic<bool> healthy_{true};
  std::string health_detail_;  // guarded by mutex_
  std::function<void()> after_each_;
  std::thread thread_;
};

// True for SQLite errors that say the storage itself failed (full, I/O, corrupt, read-only).
bool is_storage_error(const std::exception_ptr& e);

}  // namespace resendd::store
