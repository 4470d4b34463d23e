#include "store/checkpointer.h"

#include <SQLiteCpp/SQLiteCpp.h>
#include <spdlog/spdlog.h>

#include <algorithm>

namespace resendd::store {

checkpointer::checkpointer(std::unique_ptr<SQLite::Database> db, int frames,
                           std::chrono::milliseconds every)
    : db_(std::move(db)), frames_trigger_(frames), every_(every) {
  thread_ = std::thread([this] { loop(); });
}

checkpointer::~checkpointer() { stop(); }

void checkpointer::stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

std::uint64_t checkpointer::epoch() const {
  std::lock_guard lock(mutex_);
  return epoch_;
}

std::uint64_t checkpointer::checkpoints() const {
  std::lock_guard lock(mutex_);
  return epoch_ - 1;
}

bool checkpointer::may_start() const { return !running_ && fresh_ >= epoch_; }

void checkpointer::committed(std::uint64_t began, int frames) {
  bool kick = false;
  {
    std::lock_guard lock(mutex_);
    fresh_ = std::max(fresh_, began);
    frames_ = frames;
    kick = frames_ >= frames_trigger_ && may_start();
  }
  if (kick) wake_.notify_all();
}

int checkpointer::run(sqlite3* db, int mode, std::unique_lock<std::mutex>& lock) {
  running_ = true;
  lock.unlock();
  const int rc = sqlite3_wal_checkpoint_v2(db, nullptr, mode, nullptr, nullptr);
  lock.lock();
  running_ = false;
  ++epoch_;
  wake_.notify_all();  // the writer may wait in checkpoint_on, the thread for its turn
  return rc;
}

int checkpointer::checkpoint_on(sqlite3* writer, int mode, bool wait) {
  std::unique_lock lock(mutex_);
  if (running_ && !wait) return SQLITE_BUSY;
  wake_.wait(lock, [&] { return !running_; });
  return run(writer, mode, lock);
}

void checkpointer::loop() {
  std::unique_lock lock(mutex_);
  for (;;) {
    wake_.wait_for(lock, every_,
                   [&] { return stopping_ || (may_start() && frames_ >= frames_trigger_); });
    if (stopping_) return;
    if (!may_start() || frames_ == 0) continue;  // nothing committed since the last checkpoint
    // PASSIVE: copies what no reader still needs, takes no lock a commit waits for.
    const int rc = run(db_->getHandle(), SQLITE_CHECKPOINT_PASSIVE, lock);
    if (rc != SQLITE_OK && rc != SQLITE_BUSY)
      spdlog::warn("store: checkpoint failed: {}", sqlite3_errstr(rc));
  }
}

}  // namespace resendd::store
