#include "queue/first_answers.h"

namespace resendd {

void first_answers::expect(const std::string& id) {
  std::lock_guard lock(m_);
  waiting_[id];
}

void first_answers::listen(const std::string& id, std::function<void(first_answer)> done) {
  std::unique_lock lock(m_);
  auto it = waiting_.find(id);
  if (it == waiting_.end()) return;
  if (it->second.answer) {
    auto a = *it->second.answer;
    lock.unlock();
    done(std::move(a));
    return;
  }
  it->second.done = std::move(done);
}

void first_answers::forget(const std::string& id) {
  std::lock_guard lock(m_);
  waiting_.erase(id);
}

bool first_answers::wanted(const std::string& id) const {
  std::lock_guard lock(m_);
  auto it = waiting_.find(id);
  return it != waiting_.end() && !it->second.answer;
}

void first_answers::report(const std::string& id, first_answer a) {
  std::function<void(first_answer)> done;
  {
    std::lock_guard lock(m_);
    auto it = waiting_.find(id);
    if (it == waiting_.end() || it->second.answer) return;
    it->second.answer = a;
    done = std::move(it->second.done);
  }
  if (done) done(std::move(a));
}

}  // namespace resendd
