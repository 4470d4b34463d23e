#pragma once
// Jobs by (state, route) as a store last counted them, moved by its own committed changes in
// between: what both backends keep in memory for counts(), active() and the queue-depth limit.
// Thread-safe.
#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>

#include "store/queue_store.h"

namespace resendd::store {

class job_counter {
 public:
  // A committed change moved `delta` jobs of `route` into (or out of) `state`.
  void add(const std::string& state, const std::string& route, std::int64_t delta) {
    std::lock_guard lock(mutex_);
    ++changes_;
    if (state == "queued" || state == "delivering") active_ += delta;
    auto& n = counts_[{state, route}];
    n += delta;
    if (n <= 0) counts_.erase({state, route});
  }
  // The number of add() calls so far: a count taken while it moved may miss a change.
  std::uint64_t changes() const { return changes_.load(); }
  // Replaces everything with a fresh count, unless add() ran since `changes_before` (then the
  // fresh count may or may not hold that change: it is dropped, and the next one is used).
  bool replace(job_counts fresh, std::uint64_t changes_before) {
    std::int64_t active = 0;
    for (const auto& [k, n] : fresh)
      if (k.first == "queued" || k.first == "delivering") active += n;
    std::lock_guard lock(mutex_);
    if (changes_.load() != changes_before) return false;
    counts_ = std::move(fresh);
    active_ = active;
    return true;
  }
  job_counts counts() const {
    std::lock_guard lock(mutex_);
    return counts_;
  }
  std::int64_t active() const { return active_.load(); }  // queued + delivering

 private:
  mutable std::mutex mutex_;
  job_counts counts_;
  std::atomic<std::int64_t> active_{0};
  std::atomic<std::uint64_t> changes_{0};
};

}  // namespace resendd::store
