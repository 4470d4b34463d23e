#pragma once
// `Prefer: wait=N` on /resend: the handler that wants a job's first answer registers for it
// before the job is stored (the first attempt may finish before the 202 would have gone out),
// the dispatcher reports the first attempt's answer once its outcome has committed, and the
// handler takes it or gives up at its deadline. Thread-safe; an entry lives only while its
// handler waits, so jobs nobody waits for cost one map lookup.
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>

namespace resendd {

struct first_answer {
  int status = 0;     // the destination's HTTP status; 0 = no answer (a transport failure)
  std::string body;   // the destination's body, as read (up to delivery.max_response_bytes)
  std::string state;  // the job's state after the attempt: succeeded, queued (retry), dead
};

class first_answers {
 public:
  void expect(const std::string& id);
  // `done` runs at once when the answer is already in, else when it arrives (on the reporting
  // thread); never after forget(id).
  void listen(const std::string& id, std::function<void(first_answer)> done);
  void forget(const std::string& id);
  bool wanted(const std::string& id) const;
  // The first report for a job that is waited for is kept; later ones are ignored.
  void report(const std::string& id, first_answer a);

 private:
  struct entry {
    std::optional<first_answer> answer;
    std::function<void(first_answer)> done;
  };
  mutable std::mutex m_;
  std::map<std::string, entry> waiting_;
};

}  // namespace resendd
