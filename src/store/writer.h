#pragma once
// The store writer: the one thread that owns the one write connection.
//
// Duties: take write requests from any thread; gather every request waiting into one
// transaction (group commit: one fsync for many jobs); run each request inside its own
// savepoint, so a failing request fails alone; COMMIT; only then call each request's
// completion. A completion therefore always means "durable" (or carries the error).
//
// Thread-safety: submit() may be called from any thread. Work and completions run on the writer
// thread; completions must be quick (post elsewhere to continue) and must not throw.
#include <condition_variable>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

namespace SQLite {
class Database;
}

namespace resendd::store {

class writer {
 public:
  using work_fn = std::function<void(SQLite::Database&)>;
  using done_fn = std::function<void(std::exception_ptr)>;  // null = committed

  // Takes ownership of an open read-write connection and starts the thread.
  explicit writer(std::unique_ptr<SQLite::Database> db, std::size_t max_batch = 512);
  ~writer();  // stops after finishing what was submitted
  writer(const writer&) = delete;
  writer& operator=(const writer&) = delete;

  void submit(work_fn work, done_fn done);
  // Runs `work` in a transaction and waits for the commit; rethrows its error. Not for the
  // writer thread itself. For start-up, shutdown and CLI paths.
  void run_sync(work_fn work);
  void stop();

  std::size_t batches() const;  // transactions committed so far (metrics, benchmarks)

 private:
  struct request {
    work_fn work;
    done_fn done;
  };
  void loop();
  void commit_batch(std::deque<request>& batch);

  std::unique_ptr<SQLite::Database> db_;
  const std::size_t max_batch_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<request> pending_;
  bool stopping_ = false;
  std::size_t batches_ = 0;
  std::thread thread_;
};

}  // namespace resendd::store
