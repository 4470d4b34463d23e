// Durability: kill -9 with jobs queued and in flight, then a restart, delivers every job that got
// a 202 (at least once).
#include <gtest/gtest.h>

#include <condition_variable>
#include <mutex>
#include <set>

#include "support/harness.h"

using namespace resendd::test;
using nlohmann::json;

TEST(Crash, Kill9ThenRestartDeliversEveryAcceptedJob) {
  temp_dir dir;
  std::mutex m;
  std::condition_variable cv;
  bool open_gate = false;
  std::set<std::string> delivered;  // markers the destination answered 200 for
  fake_server dest([&](const received& r) {
    const auto marker = json::parse(r.body)["records"][0]["fields"]["备注"].get<std::string>();
    std::unique_lock lock(m);
    // Until the gate opens, hold every request: these are the deliveries "in flight".
    if (!cv.wait_for(lock, std::chrono::seconds(60), [&] { return open_gate; }))
      return fake_reply{503, "held"};
    delivered.insert(marker);
    return fake_reply{};
  });
  constexpr int jobs = 30;
  std::set<std::string> accepted;
  {
    daemon_process d(dir, local_config("concurrency = 4"));
    for (int i = 0; i < jobs; ++i) {
      const auto marker = "bill-" + std::to_string(i);
      const auto a = post_resend(d, resend_body(dest.url("/x"), marker));
      ASSERT_EQ(a.status, 202);
      accepted.insert(marker);
    }
    ASSERT_TRUE(dest.wait_for(4)) << d.log();  // four deliveries held in flight
    EXPECT_EQ(sql_value(d.db_path(), "select count(*) from jobs where state = 'delivering'"), "4");
    d.kill9();
  }
  {
    std::lock_guard lock(m);
    open_gate = true;
  }
  cv.notify_all();
  daemon_process d(dir, local_config("concurrency = 4"));
  EXPECT_TRUE(d.wait_log("queued again")) << d.log();
  ASSERT_TRUE(d.wait_log_count(": succeeded", jobs, std::chrono::seconds(60))) << d.log();
  EXPECT_EQ(sql_value(d.db_path(), "select count(*) from jobs where state = 'succeeded'"),
            std::to_string(jobs));
  std::lock_guard lock(m);
  EXPECT_EQ(delivered, accepted);
}
