#include <gtest/gtest.h>

#include <future>
#include <nlohmann/json.hpp>

#include "store/job_store.h"
#include "support/temp_dir.h"

using namespace resendd;
using namespace resendd::store;

namespace {
const sys_time t0{millis{1'800'000'000'000}};

new_job make(const std::string& id, std::optional<std::string> key = {}, std::string route = "r") {
  new_job j;
  j.id = id;
  j.route = route;
  j.method = "POST";
  j.location = "http://127.0.0.1/x";
  j.request = R"({"location":"http://127.0.0.1/x"})";
  j.resource_key = std::move(key);
  return j;
}

enqueue_result enqueue_sync(job_store& s, new_job j, sys_time now = t0) {
  std::promise<enqueue_result> p;
  s.enqueue(std::move(j), now, [&](enqueue_result r) { p.set_value(r); });
  return p.get_future().get();
}

std::vector<claimed_job> claim_sync(job_store& s, int limit, std::vector<route_limits> lim,
                                    sys_time now = t0) {
  std::promise<std::vector<claimed_job>> p;
  s.claim(now, millis{60'000}, limit, lim, [&](auto r) { p.set_value(std::move(r)); });
  return p.get_future().get();
}

int finish_sync(job_store& s, job_finish f, sys_time now = t0) {
  std::promise<int> p;
  s.finish(std::move(f), now, [&](int n) { p.set_value(n); });
  return p.get_future().get();
}
}  // namespace

TEST(Store, EnqueueClaimFinish) {
  test::temp_dir dir;
  job_store s(dir.file("var/q.db"), 100, t0);
  EXPECT_EQ(enqueue_sync(s, make("a")).what, enqueue_result::status::queued);
  EXPECT_EQ(s.active(), 1);
  auto claimed = claim_sync(s, 10, {{"r", 10, 1}});
  ASSERT_EQ(claimed.size(), 1u);
  EXPECT_EQ(claimed[0].id, "a");
  EXPECT_TRUE(claim_sync(s, 10, {{"r", 10, 1}}).empty());
  job_finish f;
  f.id = "a";
  f.attempt = {t0, millis{12}, 200, 0, "succeeded", "", "{\"code\":0}"};
  f.next_state = "succeeded";
  f.next_attempt_at = t0;
  EXPECT_EQ(finish_sync(s, f), 1);
  auto j = s.job("a");
  ASSERT_TRUE(j);
  EXPECT_EQ((*j)["state"], "succeeded");
  EXPECT_EQ((*j)["attempts"], 1);
  EXPECT_EQ((*j)["attempt_log"].size(), 1u);
  EXPECT_EQ((*j)["attempt_log"][0]["feishu_code"], 0);
  EXPECT_EQ(s.active(), 0);
}

TEST(Store, IdempotencyKeyReturnsTheFirstJob) {
  test::temp_dir dir;
  job_store s(dir.file("q.db"), 100, t0);
  auto a = make("a");
  a.idempotency_key = "k";
  auto b = make("b");
  b.idempotency_key = "k";
  EXPECT_EQ(enqueue_sync(s, a).what, enqueue_result::status::queued);
  auto r = enqueue_sync(s, b);
  EXPECT_EQ(r.what, enqueue_result::status::existing);
  EXPECT_EQ(r.id, "a");
  EXPECT_FALSE(s.job("b"));
}

TEST(Store, QueueDepthIsBounded) {
  test::temp_dir dir;
  job_store s(dir.file("q.db"), 2, t0);
  EXPECT_EQ(enqueue_sync(s, make("a")).what, enqueue_result::status::queued);
  EXPECT_EQ(enqueue_sync(s, make("b")).what, enqueue_result::status::queued);
  EXPECT_EQ(enqueue_sync(s, make("c")).what, enqueue_result::status::full);
}

TEST(Store, ClaimRespectsKeyAndRouteLimits) {
  test::temp_dir dir;
  job_store s(dir.file("q.db"), 100, t0);
  for (int i = 0; i < 5; ++i)
    enqueue_sync(s, make("k1-" + std::to_string(i), "K1"), t0 + millis{i});
  for (int i = 0; i < 5; ++i)
    enqueue_sync(s, make("k2-" + std::to_string(i), "K2"), t0 + millis{i});
  const sys_time later = t0 + millis{100};
  auto c = claim_sync(s, 10, {{"r", 10, 1}}, later);
  ASSERT_EQ(c.size(), 2u);  // one per key
  EXPECT_NE(c[0].resource_key, c[1].resource_key);
  EXPECT_TRUE(claim_sync(s, 10, {{"r", 10, 1}}, later).empty());  // both keys busy
  // Route limit: at most 3 in flight on the route, whatever the keys.
  test::temp_dir dir2;
  job_store s2(dir2.file("q.db"), 100, t0);
  for (int i = 0; i < 6; ++i) enqueue_sync(s2, make("j" + std::to_string(i)));
  EXPECT_EQ(claim_sync(s2, 10, {{"r", 3, 1}}).size(), 3u);
  EXPECT_TRUE(claim_sync(s2, 10, {{"r", 3, 1}}).empty());
}

TEST(Store, KeyGapDelaysTheNextWrite) {
  test::temp_dir dir;
  job_store s(dir.file("q.db"), 100, t0);
  enqueue_sync(s, make("a", "K"));
  enqueue_sync(s, make("b", "K"));
  auto c = claim_sync(s, 10, {{"r", 10, 1}});
  ASSERT_EQ(c.size(), 1u);
  job_finish f;
  f.id = c[0].id;
  f.attempt = {t0, millis{1}, 200, {}, "succeeded", "", ""};
  f.next_state = "succeeded";
  f.next_attempt_at = t0;
  f.resource_key = "K";
  f.key_min_gap = millis{500};
  finish_sync(s, f);
  EXPECT_TRUE(claim_sync(s, 10, {{"r", 10, 1}}, t0 + millis{499}).empty());
  EXPECT_EQ(s.next_wakeup(t0), t0 + millis{500});
  EXPECT_EQ(claim_sync(s, 10, {{"r", 10, 1}}, t0 + millis{500}).size(), 1u);
}

TEST(Store, RequeueRetryCancelPurge) {
  test::temp_dir dir;
  job_store s(dir.file("q.db"), 100, t0);
  enqueue_sync(s, make("a"));
  enqueue_sync(s, make("b"));
  ASSERT_EQ(claim_sync(s, 10, {{"r", 10, 1}}).size(), 2u);
  EXPECT_EQ(s.requeue_delivering(t0), 2);
  EXPECT_TRUE(s.cancel("a", t0));
  EXPECT_FALSE(s.cancel("a", t0));
  EXPECT_TRUE(s.retry("a", t0));
  EXPECT_FALSE(s.retry("b", t0));  // queued, not dead
  EXPECT_EQ(s.counts()["queued"], 2);
  EXPECT_TRUE(s.cancel("b", t0));
  EXPECT_EQ(s.purge_finished_before(t0 + millis{1}), 1);
  EXPECT_FALSE(s.job("b"));
}

TEST(Store, ConcurrentEnqueuesShareCommits) {
  test::temp_dir dir;
  job_store s(dir.file("q.db"), 100000, t0);
  constexpr int n = 400;
  std::vector<std::future<enqueue_result>> results;
  std::vector<std::promise<enqueue_result>> promises(n);
  for (int i = 0; i < n; ++i) {
    results.push_back(promises[i].get_future());
    s.enqueue(make("j" + std::to_string(i)), t0,
              [&promises, i](enqueue_result r) { promises[i].set_value(r); });
  }
  for (auto& r : results) EXPECT_EQ(r.get().what, enqueue_result::status::queued);
  EXPECT_EQ(s.counts()["queued"], n);
  EXPECT_LT(s.batches(), std::size_t(n));  // group commit: fewer transactions than jobs
}
