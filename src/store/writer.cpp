#include "store/writer.h"

#include <SQLiteCpp/SQLiteCpp.h>
#include <spdlog/spdlog.h>

#include <future>

namespace resendd::store {

writer::writer(std::unique_ptr<SQLite::Database> db, std::size_t max_batch)
    : db_(std::move(db)), max_batch_(max_batch), thread_([this] { loop(); }) {}

writer::~writer() { stop(); }

void writer::stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void writer::submit(work_fn work, done_fn done) {
  {
    std::lock_guard lock(mutex_);
    if (stopping_) {
      if (done) done(std::make_exception_ptr(std::runtime_error("store is shutting down")));
      return;
    }
    pending_.push_back({std::move(work), std::move(done)});
  }
  wake_.notify_one();
}

void writer::run_sync(work_fn work) {
  std::promise<void> p;
  auto f = p.get_future();
  submit(std::move(work), [&p](std::exception_ptr e) {
    if (e)
      p.set_exception(e);
    else
      p.set_value();
  });
  f.get();
}

std::size_t writer::batches() const {
  std::lock_guard lock(mutex_);
  return batches_;
}

void writer::loop() {
  for (;;) {
    std::deque<request> batch;
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [&] { return stopping_ || !pending_.empty(); });
      if (pending_.empty()) return;  // stopping, and everything submitted is done
      const auto n = std::min(max_batch_, pending_.size());
      batch.insert(batch.end(), std::make_move_iterator(pending_.begin()),
                   std::make_move_iterator(pending_.begin() + std::ptrdiff_t(n)));
      pending_.erase(pending_.begin(), pending_.begin() + std::ptrdiff_t(n));
    }
    commit_batch(batch);
  }
}

void writer::commit_batch(std::deque<request>& batch) {
  std::vector<std::exception_ptr> errors(batch.size());
  std::exception_ptr commit_error;
  try {
    db_->exec("BEGIN IMMEDIATE");
    for (std::size_t i = 0; i < batch.size(); ++i) {
      db_->exec("SAVEPOINT one");
      try {
        batch[i].work(*db_);
        db_->exec("RELEASE one");
      } catch (...) {
        errors[i] = std::current_exception();
        db_->exec("ROLLBACK TO one");
        db_->exec("RELEASE one");
      }
    }
    // The commit is the durability point (WAL, synchronous=FULL): completions run after it.
    db_->exec("COMMIT");
  } catch (...) {
    commit_error = std::current_exception();
    try {
      db_->exec("ROLLBACK");
    } catch (...) {
    }
    spdlog::error("store: transaction of {} requests failed", batch.size());
  }
  {
    std::lock_guard lock(mutex_);
    ++batches_;
  }
  for (std::size_t i = 0; i < batch.size(); ++i) {
    if (!batch[i].done) continue;
    try {
      batch[i].done(commit_error ? commit_error : errors[i]);
    } catch (...) {
      spdlog::error("store: a completion threw; ignored");
    }
  }
}

}  // namespace resendd::store
