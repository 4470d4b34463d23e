#pragma once
// The checkpointer: copies the write-ahead log into the database file from a connection and a
// thread of its own, so that commits do not wait for the copy, and never starts a checkpoint
// while a commit may be restarting the log.
//
// Why that rule: SQLite up to 3.51.2 (Debian 12 ships 3.40.1) has the "WAL-reset bug"
// (sqlite.org/wal.html#walresetbug). A checkpoint that starts while another connection's commit
// restarts the log can leave the WAL index saying pages were copied that were not, and the
// database file is corrupt. A commit restarts the log only if its transaction began when every
// frame of the log had been copied, and only a checkpoint brings that about. So after each
// checkpoint the next one waits until the writer has committed frames in a transaction that
// began after that checkpoint ended. From that commit on the log holds frames no checkpoint has
// copied: no transaction can begin with everything copied, so none restarts the log until the
// next checkpoint has copied them. The writer's own checkpoints (between its transactions) take
// turns with this thread's and count the same way; no other connection writes or checkpoints.
//
// Thread-safety: every member may be called from any thread.
#include <sqlite3.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>

namespace SQLite {
class Database;
}

namespace resendd::store {

class checkpointer {
 public:
  // `db`: a read-write connection that never writes. The thread checkpoints once the last commit
  // left `frames` frames in the log, or `every` after its last checkpoint when a commit left any;
  // always under the rule.
  checkpointer(std::unique_ptr<SQLite::Database> db, int frames, std::chrono::milliseconds every);
  ~checkpointer();
  checkpointer(const checkpointer&) = delete;
  checkpointer& operator=(const checkpointer&) = delete;
  // Waits for a checkpoint under way; no checkpoint starts on the thread after it.
  void stop();

  // For the writer. Read before a transaction begins; pass to committed() when it commits.
  std::uint64_t epoch() const;
  // From the writer's WAL hook: a transaction read at `began` committed, leaving `frames` in the
  // log.
  void committed(std::uint64_t began, int frames);
  // Checkpoints on the writer's connection, between its transactions: waits for the thread's
  // checkpoint under way, or (`wait` false) returns SQLITE_BUSY at once when there is one.
  int checkpoint_on(sqlite3* writer, int mode, bool wait);

  std::uint64_t checkpoints() const;  // finished, by the thread or the writer

 private:
  void loop();
  bool may_start() const;  // mutex_ held
  // Checkpoints `db` with `lock` (on mutex_) let go meanwhile; counts it. !running_ on entry.
  int run(sqlite3* db, int mode, std::unique_lock<std::mutex>& lock);

  std::unique_ptr<SQLite::Database> db_;
  const int frames_trigger_;
  const std::chrono::milliseconds every_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::uint64_t epoch_ = 1;  // checkpoints finished + 1
  std::uint64_t fresh_ = 0;  // the latest `began` of a commit with frames
  int frames_ = 0;           // frames in the log after the last commit
  bool running_ = false;     // a checkpoint is under way (either connection)
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace resendd::store
