// The SQLite queue store through its interface: claims, fencing, leases, fairness, admin
// actions, purge, in-memory counts.
#include <SQLiteCpp/SQLiteCpp.h>
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <array>
#include <atomic>
#include <future>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>

#include "store/db_lock.h"
#include "store/sqlite_store.h"
#include "support/temp_dir.h"
#include "support/wait_for.h"
#include "util/time.h"

using namespace resendd;
using resendd::test::wait_for;
using namespace resendd::store;

namespace {
const sys_time t0{millis{1'800'000'000'000}};

struct fixture {
  test::temp_dir dir;
  std::unique_ptr<sqlite_store> s;
  explicit fixture(std::int64_t depth = 100) {
    sqlite_options o;
    o.path = dir.file("var/q.db");
    o.max_queue_depth = depth;
    s = std::make_unique<sqlite_store>(o, t0);
  }
  sqlite_store& operator*() { return *s; }
};

new_job make(const std::string& id, std::optional<std::string> key = {}, std::string route = "r") {
  new_job j;
  j.id = id;
  j.route = std::move(route);
  j.method = "POST";
  j.location = "http://127.0.0.1/x";
  j.request = R"({"location":"http://127.0.0.1/x"})";
  j.resource_key = std::move(key);
  return j;
}

enqueue_result enqueue_sync(sqlite_store& s, new_job j, sys_time now = t0) {
  return wait_for<enqueue_result>(
      [&](auto done) { s.enqueue(std::move(j), now, nullptr, std::move(done)); });
}

claim_result claim_full(sqlite_store& s, int limit, std::vector<route_limits> lim,
                        sys_time now = t0, millis lease = millis{60'000}, std::size_t rot = 0) {
  return wait_for<claim_result>(
      [&](auto done) { s.claim({now, lease, limit, std::move(lim), rot}, std::move(done)); });
}

std::vector<claimed_job> claim_sync(sqlite_store& s, int limit, std::vector<route_limits> lim,
                                    sys_time now = t0) {
  return claim_full(s, limit, std::move(lim), now).jobs;
}

job_finish finished(const claimed_job& j, std::string state = "succeeded") {
  job_finish f;
  f.id = j.id;
  f.route = j.route;
  f.claim_no = j.claim_no;
  f.attempt = {t0, millis{12}, 200, 0, state == "succeeded" ? "succeeded" : "retry", "",
               "{\"code\":0}"};
  f.next_state = std::move(state);
  f.next_attempt_at = t0;
  f.resource_key = j.resource_key;
  return f;
}

finish_result finish_sync(sqlite_store& s, job_finish f, sys_time now = t0) {
  return wait_for<finish_result>(
      [&](auto done) { s.finish(std::move(f), now, std::move(done)); });
}

nlohmann::json job_sync(sqlite_store& s, const std::string& id) {
  auto r = wait_for<read_result>([&](auto done) { s.job(id, std::move(done)); });
  return r.value ? *r.value : nlohmann::json();
}

action_result cancel_sync(sqlite_store& s, const std::string& id, sys_time now = t0) {
  return wait_for<action_result>([&](auto done) { s.cancel(id, now, nullptr, std::move(done)); });
}
action_result retry_sync(sqlite_store& s, const std::string& id, sys_time now = t0,
                         bool force = false) {
  return wait_for<action_result>(
      [&](auto done) { s.retry(id, now, force, nullptr, std::move(done)); });
}

std::int64_t count_of(const sqlite_store& s, const std::string& state) {
  std::int64_t n = 0;
  for (const auto& [k, v] : s.counts())
    if (k.first == state) n += v;
  return n;
}
}  // namespace

TEST(Store, EnqueueClaimFinish) {
  fixture f;
  EXPECT_EQ(enqueue_sync(*f, make("a")).what, enqueue_result::status::queued);
  EXPECT_EQ(f.s->active(), 1);
  auto claimed = claim_sync(*f, 10, {{"r", 10, 1}});
  ASSERT_EQ(claimed.size(), 1u);
  EXPECT_EQ(claimed[0].id, "a");
  EXPECT_EQ(claimed[0].attempts, 1);  // counted when claimed
  EXPECT_EQ(claimed[0].claim_no, 1);
  EXPECT_EQ(count_of(*f, "delivering"), 1);
  EXPECT_TRUE(claim_sync(*f, 10, {{"r", 10, 1}}).empty());
  auto r = finish_sync(*f, finished(claimed[0]));
  EXPECT_TRUE(r.applied);
  EXPECT_EQ(r.attempt_no, 1);
  auto j = job_sync(*f, "a");
  EXPECT_EQ(j["state"], "succeeded");
  EXPECT_EQ(j["attempts"], 1);
  EXPECT_EQ(j["attempt_log"].size(), 1u);
  EXPECT_EQ(f.s->active(), 0);
  EXPECT_EQ(count_of(*f, "succeeded"), 1);
  EXPECT_EQ(count_of(*f, "delivering"), 0);
}

TEST(Store, TheCountsReadAtStartAreTheCountsKeptWhileRunning) {
  // Jobs in several states on three routes, the routes interleaved in time: a fresh store on
  // the file must count each (state, route) as the running one did.
  fixture f(1000);
  for (int i = 0; i < 60; ++i)
    enqueue_sync(*f, make("j" + std::to_string(100 + i), {}, "r" + std::to_string(i % 3)));
  // Keyed jobs too, and a route ("r3") whose every job has finished.
  for (int i = 0; i < 6; ++i)
    enqueue_sync(*f, make("k" + std::to_string(i), "key" + std::to_string(i % 2), "r1"));
  enqueue_sync(*f, make("z", {}, "r3"));
  auto claimed = claim_sync(*f, 31, {{"r0", 10, 1}, {"r1", 10, 1}, {"r2", 10, 1}, {"r3", 10, 1}});
  ASSERT_EQ(claimed.size(), 31u);
  std::size_t done = 0;
  for (auto& c : claimed)
    if (c.route == "r3" || done < 20)
      finish_sync(*f, finished(c, c.route == "r3" || done++ % 4 == 0 ? "dead" : "succeeded"));
  for (const char* id : {"j157", "j158", "j159"}) cancel_sync(*f, id);
  const auto running = f.s->counts();
  ASSERT_EQ(count_of(*f, "queued"), 33);
  ASSERT_EQ(count_of(*f, "delivering"), 10);
  ASSERT_EQ(count_of(*f, "dead"), 6);
  ASSERT_EQ(count_of(*f, "cancelled"), 3);
  EXPECT_FALSE(running.contains({"queued", "r3"}));
  sqlite_options o;
  o.path = f.dir.file("var/q.db");
  f.s.reset();
  sqlite_store again(o, t0);
  EXPECT_EQ(again.counts(), running);
}

TEST(Store, ListsEachStateNewestFirstAndFindsTheOldestQueued) {
  // Jobs created a second apart, in an order their ids do not follow; the oldest ones finish,
  // so the oldest queued job is found past jobs in other states.
  fixture f(1000);
  const auto list_ids = [&](const std::string& state) {
    auto r = wait_for<read_result>([&](auto done) { f.s->list(state, 50, std::move(done)); });
    std::vector<std::string> ids;
    for (const auto& j : r.value.value_or(nlohmann::json::array())) ids.push_back(j["id"]);
    return ids;
  };
  const auto oldest = [&] {
    auto r = wait_for<read_result>([&](auto done) { f.s->oldest_queued(std::move(done)); });
    EXPECT_EQ(r.error, "");
    return r.value.value_or(nlohmann::json());
  };
  EXPECT_TRUE(oldest().is_null());
  const std::vector<std::string> ids = {"f", "e", "d", "c", "b", "a"};  // created in this order
  for (std::size_t i = 0; i < ids.size(); ++i)
    enqueue_sync(*f, make(ids[i]), t0 + std::chrono::seconds(i));
  EXPECT_EQ(oldest(), "2027-01-15T08:00:00.000Z");
  // f and e are claimed; f succeeds, e stays delivering; d dies; c is cancelled.
  auto c = claim_sync(*f, 2, {{"r", 2, 1}}, t0 + std::chrono::seconds(10));
  ASSERT_EQ(c.size(), 2u);
  for (auto& j : c)
    if (j.id == "f") finish_sync(*f, finished(j));
  auto d = claim_sync(*f, 1, {{"r", 2, 1}}, t0 + std::chrono::seconds(10));
  ASSERT_EQ(d.size(), 1u);
  finish_sync(*f, finished(d[0], "dead"));
  cancel_sync(*f, "c");
  EXPECT_EQ(list_ids("queued"), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(list_ids("delivering"), (std::vector<std::string>{"e"}));
  EXPECT_EQ(list_ids("succeeded"), (std::vector<std::string>{"f"}));
  EXPECT_EQ(list_ids("dead"), (std::vector<std::string>{"d"}));
  EXPECT_EQ(list_ids("cancelled"), (std::vector<std::string>{"c"}));
  EXPECT_EQ(list_ids(""), (std::vector<std::string>{"f", "e", "d", "c", "b", "a"}));  // by id
  EXPECT_EQ(oldest(), "2027-01-15T08:00:04.000Z");
  // A retried dead job is queued again, with its first creation time.
  EXPECT_EQ(retry_sync(*f, "d", t0 + std::chrono::seconds(20)).what, action_result::status::done);
  EXPECT_EQ(list_ids("queued"), (std::vector<std::string>{"a", "b", "d"}));
  EXPECT_TRUE(list_ids("dead").empty());
  EXPECT_EQ(oldest(), "2027-01-15T08:00:02.000Z");
}

TEST(Store, IdempotencyKeyReturnsTheFirstJob) {
  fixture f;
  auto a = make("a");
  a.idempotency_key = "k";
  auto b = make("b");
  b.idempotency_key = "k";
  EXPECT_EQ(enqueue_sync(*f, a).what, enqueue_result::status::queued);
  auto r = enqueue_sync(*f, b);
  EXPECT_EQ(r.what, enqueue_result::status::existing);
  EXPECT_EQ(r.id, "a");
  EXPECT_TRUE(job_sync(*f, "b").is_null());
}

TEST(Store, QueueDepthIsBounded) {
  fixture f(2);
  EXPECT_EQ(enqueue_sync(*f, make("a")).what, enqueue_result::status::queued);
  EXPECT_EQ(enqueue_sync(*f, make("b")).what, enqueue_result::status::queued);
  EXPECT_EQ(enqueue_sync(*f, make("c")).what, enqueue_result::status::full);
}

TEST(Store, AbandonedRequestNeverRuns) {
  fixture f;
  auto g = make_gate();
  ASSERT_TRUE(abandon(g));
  auto r = wait_for<enqueue_result>(
      [&](auto done) { f.s->enqueue(make("a"), t0, g, std::move(done)); });
  EXPECT_EQ(r.what, enqueue_result::status::failed);
  EXPECT_TRUE(job_sync(*f, "a").is_null());
  // A started request can no longer be abandoned.
  auto g2 = make_gate();
  EXPECT_EQ(wait_for<enqueue_result>(
                [&](auto done) { f.s->enqueue(make("b"), t0, g2, std::move(done)); })
                .what,
            enqueue_result::status::queued);
  EXPECT_FALSE(abandon(g2));
}

TEST(Store, ClaimRespectsKeyAndRouteLimits) {
  fixture f;
  for (int i = 0; i < 5; ++i) enqueue_sync(*f, make("k1-" + std::to_string(i), "K1"), t0 + millis{i});
  for (int i = 0; i < 5; ++i) enqueue_sync(*f, make("k2-" + std::to_string(i), "K2"), t0 + millis{i});
  const sys_time later = t0 + millis{100};
  auto c = claim_sync(*f, 10, {{"r", 10, 1}}, later);
  ASSERT_EQ(c.size(), 2u);  // one per key
  EXPECT_NE(c[0].resource_key, c[1].resource_key);
  EXPECT_TRUE(claim_sync(*f, 10, {{"r", 10, 1}}, later).empty());  // both keys busy
  // key_concurrency 3: the rest of each key, up to 3 in flight per key.
  EXPECT_EQ(claim_sync(*f, 10, {{"r", 10, 3}}, later).size(), 4u);
  fixture g;
  for (int i = 0; i < 6; ++i) enqueue_sync(*g, make("j" + std::to_string(i)));
  EXPECT_EQ(claim_sync(*g, 10, {{"r", 3, 1}}).size(), 3u);
  EXPECT_TRUE(claim_sync(*g, 10, {{"r", 3, 1}}).empty());
}

TEST(Store, BusyRouteDoesNotStarveAnother) {
  fixture f(100000);
  // Route A: one at a time, 300 due jobs queued first; route B queued later.
  for (int i = 0; i < 300; ++i) enqueue_sync(*f, make("a" + std::to_string(i), {}, "A"), t0);
  for (int i = 0; i < 5; ++i) enqueue_sync(*f, make("b" + std::to_string(i), {}, "B"), t0 + millis{1});
  const std::vector<route_limits> lim = {{"A", 1, 1}, {"B", 64, 1}};
  auto c = claim_sync(*f, 64, lim, t0 + millis{10});
  int a = 0, b = 0;
  for (const auto& j : c) (j.route == "A" ? a : b)++;
  EXPECT_EQ(a, 1);
  EXPECT_EQ(b, 5);
}

TEST(Store, IdleKeysAndWaitingJobsAreNotVisited) {
  fixture f(100000);
  // 2,000 keys with nothing due, one due key: the claim finds it and says when to look again.
  for (int i = 0; i < 2000; ++i)
    enqueue_sync(*f, make("w" + std::to_string(i), "key" + std::to_string(i)), t0 + millis{5000});
  enqueue_sync(*f, make("due", "hot"), t0);
  auto r = claim_full(*f, 64, {{"r", 64, 1}}, t0 + millis{1});
  ASSERT_EQ(r.jobs.size(), 1u);
  EXPECT_EQ(r.jobs[0].id, "due");
  ASSERT_TRUE(r.next_due);
  EXPECT_EQ(*r.next_due, t0 + millis{5000});
}

TEST(Store, AKeyIsDueWhenItsEarliestJobIsWhateverTheOrderOfEnqueues) {
  // key_heads keeps each key's earliest due time; an enqueue changes it only when earlier.
  fixture f;
  enqueue_sync(*f, make("late", "k"), t0 + millis{5000});
  enqueue_sync(*f, make("later", "k"), t0 + millis{9000});  // must not push the head back
  auto r = claim_full(*f, 64, {{"r", 64, 1}}, t0 + millis{6000});
  ASSERT_EQ(r.jobs.size(), 1u);
  EXPECT_EQ(r.jobs[0].id, "late");
  finish_sync(*f, finished(r.jobs[0]), t0 + millis{6000});

  enqueue_sync(*f, make("early", "j"), t0 + millis{5000});
  enqueue_sync(*f, make("earlier", "j"), t0 + millis{1000});  // must bring the head forward
  r = claim_full(*f, 64, {{"r", 64, 1}}, t0 + millis{2000});
  ASSERT_EQ(r.jobs.size(), 1u);
  EXPECT_EQ(r.jobs[0].id, "earlier");
  ASSERT_TRUE(r.next_due);
  EXPECT_EQ(*r.next_due, t0 + millis{5000});
}

// key_heads as SQLite has it: key -> head_at.
std::map<std::string, std::string> key_heads(fixture& f) {
  SQLite::Database db(f.dir.file("var/q.db"), SQLite::OPEN_READONLY);
  SQLite::Statement q(db, "SELECT resource_key, head_at FROM key_heads");
  std::map<std::string, std::string> out;
  while (q.executeStep()) out[q.getColumn(0).getString()] = q.getColumn(1).getString();
  return out;
}

TEST(Store, AClaimMovesTheHeadsOfItsKeysAndDropsAKeyItEmptied) {
  fixture f;
  enqueue_sync(*f, make("a", "k"), t0);
  enqueue_sync(*f, make("b", "k"), t0 + millis{1000});
  enqueue_sync(*f, make("c", "k"), t0 + millis{2000});
  enqueue_sync(*f, make("x", "other"), t0 + millis{3000});
  const auto later = t0 + millis{10'000};
  auto r = claim_full(*f, 64, {{"r", 64, 1}}, later);
  ASSERT_EQ(r.jobs.size(), 2u);  // a, and x of the other key
  EXPECT_EQ(r.jobs[0].id, "a");
  // k's head is b now; `other` has nothing queued left.
  EXPECT_EQ(key_heads(f),
            (std::map<std::string, std::string>{{"k", to_iso8601(t0 + millis{1000})}}));
  // A retry due earlier than the head brings the head forward (the trigger, as for an enqueue).
  auto retry = finished(r.jobs[0], "queued");
  retry.next_attempt_at = t0 + millis{500};
  ASSERT_TRUE(finish_sync(*f, retry, later).applied);
  finish_sync(*f, finished(r.jobs[1]), later);
  EXPECT_EQ(key_heads(f)["k"], to_iso8601(t0 + millis{500}));
  r = claim_full(*f, 64, {{"r", 64, 1}}, t0 + millis{600});  // only the retry is due
  ASSERT_EQ(r.jobs.size(), 1u);
  EXPECT_EQ(r.jobs[0].id, "a");
  EXPECT_EQ(key_heads(f)["k"], to_iso8601(t0 + millis{1000}));
  ASSERT_TRUE(r.next_due);
  EXPECT_EQ(*r.next_due, t0 + millis{1000});
  finish_sync(*f, finished(r.jobs[0]), later);
  // Two at a time on the key: b and c go together and the key has no head left.
  r = claim_full(*f, 64, {{"r", 64, 2}}, later);
  ASSERT_EQ(r.jobs.size(), 2u);
  EXPECT_EQ(r.jobs[0].id, "b");
  EXPECT_EQ(r.jobs[1].id, "c");
  EXPECT_TRUE(key_heads(f).empty());
}

TEST(Store, AClaimHandsOutItsJobsInDueOrder) {
  fixture f;
  // Ids sort the other way round from due times, keyed and unkeyed mixed.
  enqueue_sync(*f, make("z", "k1"), t0);
  enqueue_sync(*f, make("y"), t0 + millis{1});
  enqueue_sync(*f, make("x", "k2"), t0 + millis{2});
  enqueue_sync(*f, make("w"), t0 + millis{3});
  enqueue_sync(*f, make("v", "k1"), t0 + millis{4});
  const auto r = claim_full(*f, 64, {{"r", 64, 2}}, t0 + millis{10});
  std::vector<std::string> ids;
  for (const auto& j : r.jobs) ids.push_back(j.id);
  EXPECT_EQ(ids, (std::vector<std::string>{"z", "y", "x", "w", "v"}));
}

TEST(Store, EarlyHeadsLeftByCancelsArePutRightWithoutHidingADueKey) {
  fixture f(100000);
  // 300 keys whose only job is cancelled: their heads stay (early, nothing behind them) until a
  // claim visits them. A due job on another key sorts after all of them.
  for (int i = 0; i < 300; ++i) {
    const auto id = "c" + std::to_string(i);
    enqueue_sync(*f, make(id, "key" + std::to_string(i)), t0);
    ASSERT_EQ(cancel_sync(*f, id).what, action_result::status::done);
  }
  enqueue_sync(*f, make("due", "z"), t0 + millis{1});
  EXPECT_EQ(key_heads(f).size(), 301u);
  const auto now = t0 + millis{1000};
  std::vector<claimed_job> got;
  int claims = 0;
  while (got.empty() && claims < 10) {
    auto r = claim_full(*f, 64, {{"r", 64, 1}}, now);
    ++claims;
    got = std::move(r.jobs);
    // Each claim that found only early heads says to look again at once, not at the idle poll.
    if (got.empty()) {
      ASSERT_TRUE(r.next_due) << "claim " << claims;
      EXPECT_LE(*r.next_due, now) << "claim " << claims;
    }
  }
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].id, "due");
  EXPECT_GT(claims, 1);  // the first claim met only early heads
  EXPECT_TRUE(key_heads(f).empty());
}

TEST(Store, FinishIsFencedByTheClaimNumber) {
  fixture f;
  enqueue_sync(*f, make("a", "K"));
  // A short lease that expires: the job is claimable again, with a new claim number.
  auto first = claim_full(*f, 10, {{"r", 10, 1}}, t0, millis{100}).jobs;
  ASSERT_EQ(first.size(), 1u);
  EXPECT_TRUE(claim_sync(*f, 10, {{"r", 10, 1}}, t0 + millis{50}).empty());  // busy, leased
  auto again = claim_full(*f, 10, {{"r", 10, 1}}, t0 + millis{100});
  EXPECT_EQ(again.reclaimed, 1);
  ASSERT_EQ(again.jobs.size(), 1u);
  EXPECT_EQ(again.jobs[0].claim_no, first[0].claim_no + 1);
  EXPECT_EQ(again.jobs[0].attempts, 2);
  // The first delivery's late outcome is recorded in the log but changes nothing.
  auto stale = finish_sync(*f, finished(first[0], "dead"));
  EXPECT_FALSE(stale.applied);
  EXPECT_EQ(stale.attempt_no, 1) << stale.error;
  EXPECT_EQ(job_sync(*f, "a")["attempt_log"].size(), 1u);
  EXPECT_EQ(job_sync(*f, "a")["state"], "delivering");
  EXPECT_TRUE(finish_sync(*f, finished(again.jobs[0])).applied);
  auto j = job_sync(*f, "a");
  EXPECT_EQ(j["state"], "succeeded");
  EXPECT_EQ(j["attempt_log"].size(), 2u);
}

TEST(Store, RateLimitedFinishGivesTheAttemptBack) {
  fixture f;
  enqueue_sync(*f, make("a"));
  auto c = claim_sync(*f, 10, {{"r", 10, 1}});
  auto fin = finished(c[0], "queued");
  fin.counted = false;
  fin.next_attempt_at = t0 + millis{10};
  finish_sync(*f, fin);
  auto j = job_sync(*f, "a");
  EXPECT_EQ(j["attempts"], 0);
  EXPECT_EQ(j["free_attempts"], 1);
  EXPECT_EQ(j["state"], "queued");
}

TEST(Store, CancelDuringDeliveryThenRetryWaitsForIt) {
  fixture f;
  enqueue_sync(*f, make("a"));
  auto c = claim_sync(*f, 10, {{"r", 10, 1}});
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(cancel_sync(*f, "a").what, action_result::status::done);
  // The delivery is still in flight: a retry now could send the job twice at once.
  auto r = retry_sync(*f, "a", t0 + millis{1});
  EXPECT_EQ(r.what, action_result::status::conflict);
  EXPECT_NE(r.message.find("in flight"), std::string::npos);
  // It ends (failed): the job stays cancelled, and may now be retried.
  auto late = finish_sync(*f, finished(c[0], "queued"));
  EXPECT_FALSE(late.applied);
  EXPECT_EQ(job_sync(*f, "a")["state"], "cancelled");
  EXPECT_EQ(retry_sync(*f, "a", t0 + millis{2}).what, action_result::status::done);
  EXPECT_EQ(job_sync(*f, "a")["state"], "queued");
  // Cancelled during a delivery that succeeded: the write landed, the job says so.
  auto c2 = claim_sync(*f, 10, {{"r", 10, 1}}, t0 + millis{3});
  ASSERT_EQ(c2.size(), 1u);
  cancel_sync(*f, "a", t0 + millis{4});
  EXPECT_EQ(finish_sync(*f, finished(c2[0])).state, "succeeded");
  EXPECT_EQ(job_sync(*f, "a")["state"], "succeeded");
  EXPECT_EQ(count_of(*f, "succeeded"), 1);
  EXPECT_EQ(count_of(*f, "cancelled"), 0);
}

TEST(Store, ManualRetryIsAFreshStartAndReconciliationNeedsForce) {
  fixture f;
  enqueue_sync(*f, make("a"));
  enqueue_sync(*f, make("b"));
  auto c = claim_sync(*f, 10, {{"r", 10, 1}});
  ASSERT_EQ(c.size(), 2u);
  for (auto& j : c) {
    auto fin = finished(j, "dead");
    if (j.id == "b") fin.last_error = "client_token conflict: needs reconciliation";
    finish_sync(*f, fin);
  }
  const sys_time later = t0 + millis{7'200'000};
  EXPECT_EQ(retry_sync(*f, "a", later).what, action_result::status::done);
  auto again = claim_sync(*f, 10, {{"r", 10, 1}}, later);
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].attempts, 1);        // a new attempt budget
  EXPECT_EQ(again[0].age_start, later);  // a new age window
  EXPECT_EQ(retry_sync(*f, "b", later).what, action_result::status::conflict);
  EXPECT_EQ(retry_sync(*f, "b", later, true).what, action_result::status::done);
  EXPECT_EQ(retry_sync(*f, "nope", later).what, action_result::status::not_found);
}

TEST(Store, PurgeInBatchesKeepsDeadUnlessAsked) {
  fixture f(100000);
  for (int i = 0; i < 25; ++i) enqueue_sync(*f, make("s" + std::to_string(i)));
  enqueue_sync(*f, make("dead1"));
  enqueue_sync(*f, make("queued1"), t0 + millis{999'999});
  auto c = claim_sync(*f, 100, {{"r", 100, 1}});
  ASSERT_EQ(c.size(), 26u);
  for (auto& j : c) finish_sync(*f, finished(j, j.id == "dead1" ? "dead" : "succeeded"));
  auto purge = [&](std::vector<std::string> states) {
    return wait_for<action_result>([&](auto done) {
      f.s->purge_batch(t0 + millis{1}, t0 + millis{1}, states, 10, std::move(done));
    });
  };
  EXPECT_EQ(purge({"succeeded", "cancelled"}).count, 10);  // at most a batch
  EXPECT_EQ(purge({"succeeded", "cancelled"}).count, 10);
  EXPECT_EQ(purge({"succeeded", "cancelled"}).count, 5);
  EXPECT_EQ(purge({"succeeded", "cancelled"}).count, 0);
  EXPECT_FALSE(job_sync(*f, "dead1").is_null());
  EXPECT_EQ(purge({"dead"}).count, 1);
  EXPECT_FALSE(job_sync(*f, "queued1").is_null());  // never a job still to deliver
  EXPECT_EQ(count_of(*f, "succeeded"), 0);
  EXPECT_EQ(count_of(*f, "queued"), 1);
}

TEST(Store, RetryingEveryDeadJobGoesInBatchesAndCountsThemAll) {
  test::temp_dir dir;
  sqlite_options o;
  o.path = dir.file("q.db");
  o.max_queue_depth = 1000;
  o.retry_batch = 10;
  sqlite_store s(o, t0);
  for (int i = 0; i < 26; ++i) enqueue_sync(s, make("d" + std::to_string(i)));
  auto c = claim_sync(s, 100, {{"r", 100, 1}});
  ASSERT_EQ(c.size(), 26u);
  for (auto& j : c) {
    auto fin = finished(j, "dead");
    if (j.id == "d7") fin.last_error = "client_token conflict: needs reconciliation";
    finish_sync(s, fin);
  }
  const sys_time later = t0 + millis{60'000};
  auto retry_all = [&] {
    return wait_for<action_result>(
        [&](auto done) { s.retry_dead(later, nullptr, std::move(done)); });
  };
  const auto commits = s.commits();
  const auto r = retry_all();
  EXPECT_EQ(r.what, action_result::status::done) << r.message;
  EXPECT_EQ(r.count, 25);
  EXPECT_EQ(s.commits() - commits, 3u);  // transactions of 10, 10 and 5
  EXPECT_EQ(count_of(s, "queued"), 25);
  EXPECT_EQ(count_of(s, "dead"), 1);
  EXPECT_EQ(job_sync(s, "d7")["state"], "dead");
  EXPECT_EQ(job_sync(s, "d25")["state"], "queued");
  EXPECT_EQ(retry_all().count, 0);
}

namespace {
// For one test, the default VFS is "unix" with another xOpen, which opens through `under`;
// unregistered however the test ends.
sqlite3_vfs* under = nullptr;
class default_vfs_for_test {
 public:
  default_vfs_for_test(const char* name,
                       int (*open)(sqlite3_vfs*, const char*, sqlite3_file*, int, int*)) {
    under = sqlite3_vfs_find("unix");
    if (!under) return;
    vfs_ = *under;
    vfs_.zName = name;
    vfs_.pNext = nullptr;
    vfs_.xOpen = open;
    registered_ = sqlite3_vfs_register(&vfs_, 1) == SQLITE_OK;
  }
  ~default_vfs_for_test() {
    if (registered_) sqlite3_vfs_unregister(&vfs_);
  }
  bool registered() const { return registered_; }

 private:
  sqlite3_vfs vfs_{};
  bool registered_ = false;
};

// Counts the statement journals SQLite writes to temporary files.
std::atomic<int> statement_journal_files{0};
int counting_open(sqlite3_vfs*, const char* name, sqlite3_file* f, int flags, int* out) {
  if (flags & SQLITE_OPEN_SUBJOURNAL) ++statement_journal_files;
  return under->xOpen(under, name, f, flags, out);
}
}  // namespace

TEST(Store, StatementJournalsStayInMemory) {
  // A claim of 300 jobs changes far more than 64 KiB of pages, each copied to the statement
  // journal first; SQLite's default would have written that copy to a temporary file.
  default_vfs_for_test counting("resendd-counting", counting_open);
  ASSERT_TRUE(counting.registered());
  {
    fixture f(100000);
    constexpr int n = 300;
    std::vector<std::promise<enqueue_result>> promises(n);
    for (int i = 0; i < n; ++i) {
      auto j = make("j" + std::to_string(i), "k" + std::to_string(i % 30));
      j.request = std::string(1000, 'x');
      f.s->enqueue(std::move(j), t0, nullptr,
                   [&promises, i](enqueue_result r) { promises[i].set_value(r); });
    }
    for (auto& p : promises) EXPECT_EQ(p.get_future().get().what, enqueue_result::status::queued);
    auto c = claim_sync(*f, n, {{"r", n, n}});
    EXPECT_EQ(c.size(), std::size_t(n));
    std::vector<std::promise<finish_result>> finishes(c.size());
    for (std::size_t i = 0; i < c.size(); ++i)
      f.s->finish(finished(c[i]), t0,
                  [&finishes, i](finish_result r) { finishes[i].set_value(r); });
    for (auto& p : finishes) EXPECT_TRUE(p.get_future().get().applied);
    EXPECT_EQ(count_of(*f, "succeeded"), n);
  }
  EXPECT_EQ(statement_journal_files.load(), 0);
}

namespace {
// Watches the WAL locks every connection takes on each database file (wal.c's shared-memory lock
// slots: 0 the write lock, 1 the checkpoint lock, 3 + i read mark i, of SQLITE_SHM_NLOCK - 3
// marks; read mark 0 means the reader's snapshot has every frame of the log copied).
struct wal_locks {
  std::mutex m;
  std::set<const sqlite3_file*> writers;  // took the write lock
  std::set<const sqlite3_file*> on_mark0;
  // From taking the checkpoint lock until the copy ends (read mark 0 let go after copying, or
  // the checkpoint lock let go): the part of a checkpoint a WAL restart must not overlap.
  const sqlite3_file* checkpointing = nullptr;
  int checkpoints_beside = 0;  // started by a connection that never writes
  int restarts = 0;            // a writer took read marks 1..4 at once: the log starts over
  std::vector<std::string> violations;
};
wal_locks locks;
const sqlite3_io_methods* db_methods = nullptr;
sqlite3_io_methods watching_db_methods{};
int watching_shm_lock(sqlite3_file* f, int offset, int n, int flags) {
  const int rc = db_methods->xShmLock(f, offset, n, flags);
  if (rc != SQLITE_OK) return rc;
  const bool take = flags & SQLITE_SHM_LOCK;
  const bool exclusive = flags & SQLITE_SHM_EXCLUSIVE;
  std::lock_guard lock(locks.m);
  auto other_checkpointing = [&] { return locks.checkpointing && locks.checkpointing != f; };
  if (offset == 0 && take) {
    locks.writers.insert(f);
    if (other_checkpointing() && locks.on_mark0.contains(f))
      locks.violations.push_back("a writer on read mark 0 took the write lock during a checkpoint");
  } else if (offset == 1 && n == 1) {
    if (take) {
      for (const auto* w : locks.writers)
        if (w != f && locks.on_mark0.contains(w))
          locks.violations.push_back("a checkpoint started while a writer was on read mark 0");
      locks.checkpointing = f;
      if (!locks.writers.contains(f)) ++locks.checkpoints_beside;
    } else if (locks.checkpointing == f) {
      locks.checkpointing = nullptr;
    }
  } else if (offset == 3 && n == 1 && !exclusive) {
    if (!take) {
      locks.on_mark0.erase(f);
    } else {
      locks.on_mark0.insert(f);
      if (other_checkpointing() && locks.writers.contains(f))
        locks.violations.push_back("a writer took read mark 0 during a checkpoint");
    }
  } else if (offset == 3 && n == 1 && !take && locks.checkpointing == f) {
    locks.checkpointing = nullptr;
  } else if (offset == 4 && n == SQLITE_SHM_NLOCK - 4 && take && exclusive) {
    ++locks.restarts;
  }
  return rc;
}
int watching_open(sqlite3_vfs*, const char* name, sqlite3_file* f, int flags, int* out) {
  const int rc = under->xOpen(under, name, f, flags, out);
  if (rc != SQLITE_OK || !f->pMethods || (flags & SQLITE_OPEN_MAIN_DB) == 0) return rc;
  if (!db_methods) {
    db_methods = f->pMethods;
    watching_db_methods = *db_methods;
    watching_db_methods.xShmLock = watching_shm_lock;
  }
  if (f->pMethods == db_methods) f->pMethods = &watching_db_methods;
  return rc;
}
}  // namespace

TEST(Store, NoCheckpointStartsWhileACommitMayRestartTheLog) {
  // SQLite before 3.51.3 corrupts the database when a checkpoint starts while another
  // connection's commit restarts the WAL (the WAL-reset bug). Only a transaction that began on
  // read mark 0 (every frame copied) restarts it. Commits one at a time, with claims and
  // finishes, enough to pass the checkpointer's trigger and the writer's limit many times.
  default_vfs_for_test watching("resendd-watching", watching_open);
  ASSERT_TRUE(watching.registered());
  fixture f(100000);
  {
    for (int i = 0; i < 1500; ++i) {
      auto j = make("j" + std::to_string(i), "k" + std::to_string(i % 50));
      j.request = std::string(3000, 'x');
      ASSERT_EQ(enqueue_sync(*f, std::move(j)).what, enqueue_result::status::queued);
      if (i % 10 == 9) {
        for (const auto& c : claim_sync(*f, 10, {{"r", 10, 1}}))
          ASSERT_TRUE(finish_sync(*f, finished(c)).applied);
      }
    }
  }
  EXPECT_GE(f.s->checkpoints(), 10u);
  f.s.reset();
  {
    std::lock_guard lock(locks.m);
    EXPECT_GE(locks.checkpoints_beside, 10) << "checkpoints on the checkpointer's connection";
    EXPECT_GE(locks.restarts, 2) << "times the log started over";
    EXPECT_TRUE(locks.violations.empty())
        << locks.violations.size() << " times, first: " << locks.violations.front();
  }
  SQLite::Database db(f.dir.file("var/q.db"), SQLite::OPEN_READONLY);
  EXPECT_EQ(db.execAndGet("PRAGMA integrity_check").getString(), "ok");
}

TEST(Store, RequeueAtStartKeepsTheAttemptAtShutdownGivesItBack) {
  fixture f;
  enqueue_sync(*f, make("a"));
  claim_sync(*f, 10, {{"r", 10, 1}});
  EXPECT_EQ(f.s->requeue_delivering(t0, false), 1);
  EXPECT_EQ(job_sync(*f, "a")["attempts"], 1);
  claim_sync(*f, 10, {{"r", 10, 1}});
  EXPECT_EQ(f.s->requeue_delivering(t0, true), 1);
  EXPECT_EQ(job_sync(*f, "a")["attempts"], 1);
  EXPECT_EQ(count_of(*f, "queued"), 1);
}

TEST(Store, AtStartDeliveriesCutOffEndAndTheCountsMove) {
  // Two routes; on each a job delivering, and on "r" one cancelled while its delivery was in
  // flight (so a retry must wait for that delivery) and one cancelled while queued.
  fixture f;
  for (const char* id : {"a", "b", "c"}) enqueue_sync(*f, make(id));
  enqueue_sync(*f, make("d", {}, "s"));
  enqueue_sync(*f, make("e"), t0 + millis{1});
  const auto c = claim_sync(*f, 10, {{"r", 2, 1}, {"s", 1, 1}});
  ASSERT_EQ(c.size(), 3u);  // a, b and d
  cancel_sync(*f, "b");
  cancel_sync(*f, "e");
  EXPECT_EQ(retry_sync(*f, "b", t0 + millis{2}).what, action_result::status::conflict);
  // The process ends with a and d delivering, and b's delivery in flight.
  EXPECT_EQ(f.s->requeue_delivering(t0 + millis{3}, false), 2);
  EXPECT_EQ(job_sync(*f, "a")["state"], "queued");
  EXPECT_EQ(job_sync(*f, "d")["state"], "queued");
  EXPECT_EQ(job_sync(*f, "b")["state"], "cancelled");
  EXPECT_EQ(job_sync(*f, "b")["inflight_until"], nullptr);
  // Moved in memory as they were on disk: a fresh count agrees.
  const auto running = f.s->counts();
  EXPECT_EQ(running.at({"queued", "r"}), 2);  // a, c
  EXPECT_EQ(running.at({"queued", "s"}), 1);
  EXPECT_EQ(running.at({"cancelled", "r"}), 2);
  EXPECT_FALSE(running.contains({"delivering", "r"}));
  // b's delivery has ended with the process: it may be retried now.
  EXPECT_EQ(retry_sync(*f, "b", t0 + millis{4}).what, action_result::status::done);
  const auto after = f.s->counts();
  sqlite_options o;
  o.path = f.dir.file("var/q.db");
  f.s.reset();
  sqlite_store again(o, t0);
  EXPECT_EQ(again.counts(), after);
}

TEST(Store, ConcurrentEnqueuesShareCommits) {
  fixture f(100000);
  constexpr int n = 400;
  std::vector<std::promise<enqueue_result>> promises(n);
  for (int i = 0; i < n; ++i)
    f.s->enqueue(make("j" + std::to_string(i)), t0, nullptr,
                 [&promises, i](enqueue_result r) { promises[i].set_value(r); });
  for (auto& p : promises) EXPECT_EQ(p.get_future().get().what, enqueue_result::status::queued);
  EXPECT_EQ(count_of(*f, "queued"), n);
  EXPECT_LT(f.s->commits(), std::uint64_t(n));  // group commit: fewer transactions than jobs
}

TEST(Store, NewerSchemaIsRefused) {
  test::temp_dir dir;
  const auto path = dir.file("q.db");
  {
    sqlite_options o;
    o.path = path;
    sqlite_store s(o, t0);
    s.close();
  }
  {
    SQLite::Database db(path, SQLite::OPEN_READWRITE);
    db.exec("INSERT INTO schema_migrations VALUES (999, '0999_future.sql', 'x')");
  }
  sqlite_options o;
  o.path = path;
  try {
    sqlite_store s(o, t0);
    FAIL() << "a newer schema was accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("newer than this resendd"), std::string::npos);
  }
}

TEST(Store, DatabaseLockIsExclusive) {
  test::temp_dir dir;
  const auto path = dir.file("q.db");
  lock_holder h;
  auto first = database_lock::try_acquire(path, &h);
  ASSERT_TRUE(first);
  first->publish("http://127.0.0.1:1234");
  EXPECT_FALSE(database_lock::try_acquire(path, &h));
  EXPECT_EQ(h.pid, long(::getpid()));
  EXPECT_EQ(h.url, "http://127.0.0.1:1234");
  first.reset();
  EXPECT_TRUE(database_lock::try_acquire(path, &h));
}

TEST(Store, WriterQueueIsBoundedAndSaysBusyAtOnce) {
  test::temp_dir dir;
  sqlite_options o;
  o.path = dir.file("q.db");
  o.max_pending_writes = 2;
  o.busy_timeout = millis{10'000};
  sqlite_store s(o, t0);
  SQLite::Database other(o.path, SQLite::OPEN_READWRITE);
  other.exec("BEGIN IMMEDIATE");  // the writer blocks on this lock
  constexpr int n = 10;
  std::vector<std::promise<enqueue_result>> results(n);
  std::array<std::atomic<bool>, n> called{};
  int answered_at_once = 0;
  for (int i = 0; i < n; ++i) {
    s.enqueue(make("j" + std::to_string(i)), t0, nullptr,
              [&results, &called, i](enqueue_result r) {
                called[std::size_t(i)] = true;
                results[std::size_t(i)].set_value(r);
              });
    answered_at_once += called[std::size_t(i)].load();
  }
  // At most one batch taken by the writer plus two waiting: the rest were refused at once.
  EXPECT_GE(answered_at_once, n - 4);
  other.exec("ROLLBACK");
  int queued = 0, busy = 0;
  for (auto& r : results) {
    const auto what = r.get_future().get().what;
    queued += what == enqueue_result::status::queued;
    busy += what == enqueue_result::status::busy;
  }
  EXPECT_EQ(queued + busy, n);
  EXPECT_GE(busy, n - 4);
  EXPECT_GE(queued, 1);
}
