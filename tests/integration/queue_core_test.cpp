// The queue core under contention and faults, against the real binary: a store that refuses a
// write, a second daemon, cancel and retry mid-delivery, a busy route, a held write lock, a full
// disk, a deleted database, a large purge, a delivery that kills the daemon.
#include <SQLiteCpp/SQLiteCpp.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <iostream>
#include <mutex>
#include <thread>

#include "store/pg.h"
#include "support/harness.h"
#include "util/time.h"

using namespace resendd::test;
using nlohmann::json;
using namespace std::chrono_literals;

namespace {

// Holds requests at a fake destination until opened; counts how many are held at once.
class valve {
 public:
  void hold() {
    std::unique_lock lock(m_);
    ++waiting_;
    max_waiting_ = std::max(max_waiting_, waiting_);
    cv_.notify_all();
    cv_.wait_for(lock, 60s, [&] { return open_; });
    --waiting_;
  }
  void open() {
    std::lock_guard lock(m_);
    open_ = true;
    cv_.notify_all();
  }
  void close() {
    std::lock_guard lock(m_);
    open_ = false;
  }
  bool wait_held(int n, std::chrono::milliseconds t = 20s) {
    std::unique_lock lock(m_);
    return cv_.wait_for(lock, t, [&] { return waiting_ >= n; });
  }
  int max_held() {
    std::lock_guard lock(m_);
    return max_waiting_;
  }

 private:
  std::mutex m_;
  std::condition_variable cv_;
  bool open_ = false;
  int waiting_ = 0, max_waiting_ = 0;
};

// Another process's write transaction on the daemon's database (an operator's sqlite3 session).
// Holds the store's write lock (SQLite: BEGIN IMMEDIATE; PostgreSQL: an EXCLUSIVE lock on the
// job tables, which readers pass): the daemon's writes wait busy_timeout, then fail.
class write_lock {
 public:
  explicit write_lock(const std::string& db) {
    if (db.starts_with("postgresql://")) {
      pg_ = std::make_unique<resendd::store::pg_connection>(db);
      pg_->exec("BEGIN");
      pg_->exec("LOCK TABLE jobs, attempts IN EXCLUSIVE MODE");
      return;
    }
    lite_ = std::make_unique<SQLite::Database>(db, SQLite::OPEN_READWRITE);
    lite_->exec("PRAGMA busy_timeout = 10000");
    lite_->exec("BEGIN IMMEDIATE");
  }
  void release() {
    if (held_) pg_ ? pg_->exec("ROLLBACK") : void(lite_->exec("ROLLBACK"));
    held_ = false;
  }
  ~write_lock() { release(); }

 private:
  std::unique_ptr<resendd::store::pg_connection> pg_;
  std::unique_ptr<SQLite::Database> lite_;
  bool held_ = true;
};

std::string marker_of(const received& r) {
  auto j = json::parse(r.body, nullptr, false);
  return j.is_discarded() ? "" : j["records"][0]["fields"]["备注"].get<std::string>();
}

std::size_t count_marker(const fake_server& f, const std::string& m) {
  std::size_t n = 0;
  for (const auto& r : f.requests()) n += marker_of(r) == m;
  return n;
}

std::string state_of(const daemon_process& d, const std::string& id) {
  return sql_value(d.db_path(), "select state from jobs where id = '" + id + "'");
}

// Asks the daemon (each try is a round trip to it) until `pred` holds, at most `tries` times.
template <class Pred>
bool eventually(Pred pred, int tries = 200) {
  for (int i = 0; i < tries; ++i)
    if (pred()) return true;
  return false;
}

long ms_since(std::chrono::steady_clock::time_point t0) {
  return long(
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0)
          .count());
}

}  // namespace

TEST(QueueCore, FailedFinishIsRecordedLaterAndTheTableIsNotBlocked) {
  temp_dir dir;
  valve first;
  fake_server dest([&](const received& r) {
    if (marker_of(r) == "one") first.hold();
    return fake_reply{};
  });
  // All jobs share one key (one table): a stuck job would block the other one.
  daemon_process d(dir,
                   local_config("serialize_by = \"host\"", "[store]\nbusy_timeout = \"100ms\"\n"));
  const auto one = job_id(post_resend(d, resend_body(dest.url("/x"), "one")));
  ASSERT_TRUE(first.wait_held(1));
  const auto from = d.log_lines();
  {
    write_lock held(d.db_path());  // the finish of "one" cannot commit while this is held
    first.open();
    ASSERT_TRUE(d.wait_log("recording attempt outcome failed", 20s, from)) << d.log();
    EXPECT_EQ(state_of(d, one), "delivering");
  }
  ASSERT_TRUE(d.wait_log("job " + one + " attempt 1: succeeded", 20s, from)) << d.log();
  const auto two = job_id(post_resend(d, resend_body(dest.url("/x"), "two")));
  ASSERT_TRUE(d.wait_log("job " + two + " attempt 1: succeeded")) << d.log();
  EXPECT_EQ(state_of(d, one), "succeeded");
  EXPECT_EQ(count_marker(dest, "one"), 1u);  // delivered once: the outcome was kept in memory
  EXPECT_EQ(sql_value(d.db_path(), "select count(*) from attempts where job_id = '" + one + "'"),
            "1");
}

TEST(QueueCore, SecondServeIsRefusedAndTheFirstDeliversExactlyOnce) {
  SQLITE_ONLY("one daemon per file; on PostgreSQL several serve one queue (MultiDaemon tests)");
  temp_dir dir;
  valve v;
  fake_server dest([&](const received&) {
    v.hold();
    return fake_reply{};
  });
  daemon_process d(dir, local_config());
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i)
    ids.push_back(job_id(post_resend(d, resend_body(dest.url("/x"), "m" + std::to_string(i)))));
  ASSERT_TRUE(v.wait_held(3));
  const auto second = run_resendd(dir, {"serve", "--config", dir.file("resendd.toml")});
  EXPECT_EQ(second.status, 1) << second.output;
  EXPECT_NE(second.output.find("refusing to start"), std::string::npos) << second.output;
  EXPECT_NE(second.output.find("pid"), std::string::npos) << second.output;
  EXPECT_EQ(sql_value(d.db_path(), "select count(*) from jobs where state = 'delivering'"), "3");
  v.open();
  ASSERT_TRUE(d.wait_log_count(": succeeded", 3)) << d.log();
  EXPECT_EQ(dest.count(), 3u);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(count_marker(dest, "m" + std::to_string(i)), 1u);
}

TEST(QueueCore, ASecondServeReachingTheFileByAnotherPathIsRefusedToo) {
  SQLITE_ONLY("one daemon per file; on PostgreSQL several serve one queue (MultiDaemon tests)");
  temp_dir dir;
  daemon_process d(dir, local_config());
  // A symlink to the database (what /var/lib/resendd -> /data/resendd makes of a path), and a
  // spelling with "." and "..": each must find the running daemon's lock.
  std::filesystem::create_directories(dir.file("elsewhere"));
  std::filesystem::create_symlink(d.db_path(), dir.file("elsewhere/alias.db"));
  for (const auto& path :
       {dir.file("elsewhere/alias.db"), dir.file("elsewhere/../var/./resendd.db")}) {
    dir.write("second.toml", local_config("", "[store]\npath = \"" + path + "\"\n"));
    const auto second = run_resendd(dir, {"serve", "--config", dir.file("second.toml")}, {},
                                    std::chrono::seconds(10));
    EXPECT_EQ(second.status, 1) << path << "\n" << second.output;
    EXPECT_NE(second.output.find("refusing to start"), std::string::npos) << second.output;
  }
  EXPECT_EQ(http_call(d.port(), "GET", "/healthz").status, 200);
}

TEST(QueueCore, CancelAndRetryDuringADeliveryNeverRunTwoAtOnce) {
  temp_dir dir;
  valve v;
  std::atomic<int> calls{0};
  fake_server dest([&](const received&) {
    const int n = ++calls;
    v.hold();
    return n == 1 ? fake_reply{503, "busy"} : fake_reply{};
  });
  daemon_process d(dir, local_config());
  const auto id = job_id(post_resend(d, resend_body(dest.url("/x"))));
  ASSERT_TRUE(v.wait_held(1));
  EXPECT_EQ(http_call(d.port(), "POST", "/jobs/" + id + "/cancel").status, 200);
  const auto early = http_call(d.port(), "POST", "/jobs/" + id + "/retry");
  EXPECT_EQ(early.status, 409) << early.body;
  EXPECT_NE(early.body.find("in flight"), std::string::npos) << early.body;
  const auto from = d.log_lines();
  v.open();  // the first delivery fails (503): the job stays cancelled
  ASSERT_TRUE(d.wait_log("not applied", 20s, from)) << d.log();
  EXPECT_EQ(state_of(d, id), "cancelled");
  EXPECT_EQ(http_call(d.port(), "POST", "/jobs/" + id + "/retry").status, 200);
  ASSERT_TRUE(d.wait_log("job " + id + " attempt 2: succeeded", 20s, from)) << d.log();
  EXPECT_EQ(state_of(d, id), "succeeded");
  EXPECT_EQ(calls.load(), 2);
  EXPECT_EQ(v.max_held(), 1);  // never two deliveries of the job at once
}

TEST(QueueCore, ABusyRouteDoesNotStarveAnother) {
  temp_dir dir;
  valve slow;
  fake_server a([&](const received&) {
    slow.hold();
    return fake_reply{};
  });
  fake_server b;
  const auto cfg =
      "[server]\nlisten = \"127.0.0.1:0\"\n"
      "[[routes]]\nname = \"a\"\nmatch = '^http://127\\.0\\.0\\.1:" +
      std::to_string(a.port()) +
      "/.*$'\nallow_private_networks = true\nconcurrency = 1\n"
      "[[routes]]\nname = \"b\"\nmatch = '^http://127\\.0\\.0\\.1:" +
      std::to_string(b.port()) + "/.*$'\nallow_private_networks = true\n";
  daemon_process d(dir, cfg);
  constexpr int jobs = 3000;
  std::atomic<int> next{0}, accepted{0};
  std::vector<std::thread> bots;
  for (int t = 0; t < 8; ++t)
    bots.emplace_back([&] {
      for (int i; (i = next++) < jobs;)
        accepted += post_resend(d, resend_body(a.url("/a"), "a" + std::to_string(i))).status == 202;
    });
  for (auto& t : bots) t.join();
  ASSERT_EQ(accepted.load(), jobs);
  ASSERT_TRUE(slow.wait_held(1));
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_EQ(post_resend(d, resend_body(b.url("/b"), "b")).status, 202);
  ASSERT_TRUE(b.wait_for(1, 1s)) << "route b waited behind route a";
  EXPECT_LT(ms_since(t0), 1000);
  slow.open();
}

TEST(QueueCore, HealthAnswersFastWhileAnotherProcessHoldsTheWriteLock) {
  temp_dir dir;
  fake_server dest;
  daemon_process d(dir, local_config());
  ASSERT_EQ(http_call(d.port(), "GET", "/readyz").status, 200);
  {
    write_lock held(d.db_path());
    const auto t0 = std::chrono::steady_clock::now();
    bool readyz_refused = false;
    // Longer than the writer's busy_timeout (5 s): every answer stays fast all along.
    while (ms_since(t0) < 6000) {
      auto t = std::chrono::steady_clock::now();
      EXPECT_EQ(http_call(d.port(), "GET", "/healthz").status, 200);
      EXPECT_LT(ms_since(t), 500);
      t = std::chrono::steady_clock::now();
      const auto r = http_call(d.port(), "GET", "/readyz");
      EXPECT_LT(ms_since(t), 500);
      readyz_refused = readyz_refused || r.status == 503;
    }
    EXPECT_TRUE(readyz_refused);
    // A job offered now is refused (503), never half-stored.
    const auto refused = post_resend(d, resend_body(dest.url("/x"), "late"));
    EXPECT_EQ(refused.status, 503) << refused.body;
    EXPECT_TRUE(refused.headers.count("retry-after"));
  }
  ASSERT_TRUE(eventually([&] { return http_call(d.port(), "GET", "/readyz").status == 200; }));
  EXPECT_EQ(post_resend(d, resend_body(dest.url("/x"), "after")).status, 202);
  ASSERT_TRUE(d.wait_log_count(": succeeded", 1)) << d.log();
  EXPECT_EQ(count_marker(dest, "late"), 0u);
  EXPECT_EQ(sql_value(d.db_path(), "select count(*) from jobs"), "1");
}

TEST(QueueCore, FullDiskIsNotReadyThenRecoversWithoutARestart) {
  SQLITE_ONLY("the database file on a full file system");
  temp_dir dir;
  fake_server dest;
  daemon_process d(dir, local_config("", "[store]\nmax_size = 409600\n"));
  const std::string filler(3000, 'x');
  int accepted = 0;
  http_answer last;
  for (int i = 0; i < 400; ++i) {
    auto body = resend_body(dest.url("/x"), "m" + std::to_string(i));
    body["params"]["filler"] = filler;
    last = post_resend(d, body);
    if (last.status != 202) break;
    ++accepted;
  }
  ASSERT_EQ(last.status, 503) << "the database never filled up: " << last.body;
  ASSERT_GT(accepted, 5);
  EXPECT_EQ(http_call(d.port(), "GET", "/readyz").status, 503);
  // The operator makes room: delivered jobs are purged (through the running daemon).
  ASSERT_TRUE(eventually(
      [&] {
        run_resendd(dir, {"jobs", "purge", "--older-than", "0s"});
        return post_resend(d, resend_body(dest.url("/x"), "after")).status == 202;
      },
      10))
      << d.log();
  ASSERT_TRUE(eventually([&] { return http_call(d.port(), "GET", "/readyz").status == 200; }));
}

TEST(QueueCore, DeletedDatabaseIsNeverAnsweredWith202) {
  SQLITE_ONLY("the database file deleted under the daemon");
  temp_dir dir;
  fake_server dest;
  daemon_process d(dir, local_config());
  ASSERT_EQ(post_resend(d, resend_body(dest.url("/x"))).status, 202);
  for (const char* suffix : {"", "-wal", "-shm"}) std::filesystem::remove(d.db_path() + suffix);
  for (int i = 0; i < 3; ++i) {
    const auto r = post_resend(d, resend_body(dest.url("/x"), "lost" + std::to_string(i)));
    EXPECT_EQ(r.status, 503) << r.body;
  }
  const auto ready = http_call(d.port(), "GET", "/readyz");
  EXPECT_EQ(ready.status, 503);
  EXPECT_NE(ready.body.find("deleted or replaced"), std::string::npos) << ready.body;
}

TEST(QueueCore, JobListFiltersByStateAndLimit) {
  temp_dir dir;
  fake_server dest([](const received& r) {
    return marker_of(r).starts_with("bad") ? fake_reply{400, "no"} : fake_reply{};
  });
  daemon_process d(dir, local_config());
  for (const char* m : {"bad1", "ok1", "bad2", "ok2", "bad3"})
    ASSERT_EQ(post_resend(d, resend_body(dest.url("/x"), m)).status, 202);
  ASSERT_TRUE(d.wait_log_count("attempt 1: ", 5)) << d.log();
  const auto a = http_call(d.port(), "GET", "/jobs?state=dead&limit=2");
  ASSERT_EQ(a.status, 200) << a.body;
  const auto jobs = json::parse(a.body)["jobs"];
  ASSERT_EQ(jobs.size(), 2u) << a.body;
  for (const auto& j : jobs) EXPECT_EQ(j["state"], "dead");
  EXPECT_EQ(json::parse(http_call(d.port(), "GET", "/jobs?state=succeeded").body)["jobs"].size(),
            2u);
  for (const char* bad : {"/jobs?state=sleeping", "/jobs?limit=0", "/jobs?limit=abc",
                          "/jobs?limit=5x", "/jobs?limit=100000", "/jobs?colour=red"}) {
    const auto r = http_call(d.port(), "GET", bad);
    EXPECT_EQ(r.status, 400) << bad;
    EXPECT_EQ(json::parse(r.body)["code"], "bad_query") << bad;
  }
}

TEST(QueueCore, JobThatKillsTheDaemonDiesAfterMaxAttemptsRestarts) {
  temp_dir dir;
  valve never;  // the daemon is killed while the request is held there
  fake_server dest([&](const received&) {
    never.hold();
    return fake_reply{};
  });
  daemon_process d(dir, local_config("max_attempts = 3"));
  const auto id = job_id(post_resend(d, resend_body(dest.url("/x"))));
  for (int round = 1; round <= 3; ++round) {
    ASSERT_TRUE(never.wait_held(round)) << d.log();
    d.kill9();
    d.start();
  }
  ASSERT_TRUE(d.wait_log("job " + id + " attempt 1: dead")) << d.log();
  EXPECT_EQ(dest.count(), 3u);  // not sent a fourth time
  EXPECT_EQ(state_of(d, id), "dead");
  const auto why = sql_value(d.db_path(), "select last_error from jobs where id = '" + id + "'");
  EXPECT_NE(why.find("max_attempts (3) used up"), std::string::npos) << why;
  never.open();
}

namespace {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr int purge_jobs = 100'000;  // the same path, at a size a sanitized build runs in time
constexpr bool timed = false;
#else
constexpr int purge_jobs = 500'000;
constexpr bool timed = true;
#endif
}  // namespace

TEST(QueueCore, LargePurgeRunsInSmallStepsBesideIntakeAndShrinksTheFile) {
  SQLITE_ONLY("the file shrinks (PostgreSQL: autovacuum)");
  temp_dir dir;
  fake_server dest;
  dir.write("resendd.toml", local_config());
  ASSERT_EQ(run_resendd(dir, {"migrate", "--config", dir.file("resendd.toml")}).status, 0);
  {
    // Old finished jobs with an attempt each, written as an older daemon would have left them.
    SQLite::Database db(dir.file("var/resendd.db"), SQLite::OPEN_READWRITE);
    db.exec("BEGIN");
    db.exec("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < " +
            std::to_string(purge_jobs) +
            ") INSERT INTO jobs (id, state, route, method, location, request, attempts, "
            "next_attempt_at, created_at, updated_at, finished_at, last_status) SELECT "
            "printf('old-%08d', i), 'succeeded', 'local', 'POST', 'http://127.0.0.1:1/x', "
            "'{\"location\":\"http://127.0.0.1:1/x\",\"params\":{\"records\":[{\"fields\":"
            "{\"note\":\"lunch at the noodle place\",\"amount\":32.5}}]}}', 1, "
            "'2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z', "
            "'2026-01-01T00:00:01.000Z', 200 FROM n");
    db.exec(
        "INSERT INTO attempts (job_id, n, started_at, duration_ms, http_status, outcome, response) "
        "SELECT id, 1, created_at, 40, 200, 'succeeded', '{\"code\":0,\"msg\":\"success\"}' "
        "FROM jobs");
    db.exec("COMMIT");
    db.exec("PRAGMA wal_checkpoint(TRUNCATE)");
  }
  daemon_process d(dir, local_config());
  const auto size_before = std::filesystem::file_size(d.db_path());
  std::atomic<bool> purging{true};
  std::mutex m;
  std::vector<long> latencies;
  std::atomic<int> refused{0};
  std::vector<std::thread> bots;
  for (int t = 0; t < 4; ++t)
    bots.emplace_back([&, t] {
      for (int i = 0; purging && i < 100'000; ++i) {
        const auto t0 = std::chrono::steady_clock::now();
        int status = 0;
        try {
          status = post_resend(
                       d, resend_body(dest.url("/x"), std::to_string(t) + "-" + std::to_string(i)))
                       .status;
        } catch (const std::exception&) {
          status = -1;  // the daemon is gone: counted as refused
        }
        const long ms = ms_since(t0);
        refused += status != 202;
        std::lock_guard lock(m);
        latencies.push_back(ms);
      }
    });
  const auto r = run_resendd(dir, {"jobs", "purge", "--older-than", "1d"});
  purging = false;
  for (auto& t : bots) t.join();
  ASSERT_EQ(r.status, 0) << r.output
                         << d.log().substr(d.log().size() > 3000 ? d.log().size() - 3000 : 0);
  EXPECT_NE(r.output.find(std::to_string(purge_jobs) + " job(s) purged"), std::string::npos)
      << r.output;
  EXPECT_TRUE(d.wait_log("purge: " + std::to_string(purge_jobs) + " job(s) deleted")) << d.log();
  EXPECT_EQ(refused.load(), 0) << d.log().substr(d.log().size() > 4000 ? d.log().size() - 4000 : 0);
  ASSERT_FALSE(latencies.empty());
  std::sort(latencies.begin(), latencies.end());
  const long p99 = latencies[latencies.size() * 99 / 100];
  std::cout << "purge of " << purge_jobs << " jobs beside " << latencies.size() << " /resend: p50 "
            << latencies[latencies.size() / 2] << " ms, p99 " << p99 << " ms, max "
            << latencies.back() << " ms\n";
  if (timed) {
    EXPECT_LT(p99, 100) << latencies.size() << " requests during the purge";
  }
  EXPECT_EQ(sql_value(d.db_path(), "select count(*) from jobs where id like 'old-%'"), "0");
  EXPECT_EQ(sql_value(d.db_path(), "select count(*) from attempts where job_id like 'old-%'"), "0");
  const auto size_after = std::filesystem::file_size(d.db_path());
  std::cout << "database file " << size_before << " -> " << size_after << " bytes\n";
  EXPECT_LT(size_after, size_before / 2) << size_before << " -> " << size_after;
}

TEST(QueueCore, CleanStopLeavesEverythingInTheDatabaseFile) {
  SQLITE_ONLY("WAL checkpoint into the file");
  temp_dir dir;
  valve v;  // jobs stay queued: their destination holds the first one
  fake_server dest([&](const received&) {
    v.hold();
    return fake_reply{};
  });
  daemon_process d(dir, local_config("concurrency = 1"));
  for (int i = 0; i < 5; ++i)
    ASSERT_EQ(post_resend(d, resend_body(dest.url("/x"), "m" + std::to_string(i))).status, 202);
  ASSERT_TRUE(v.wait_held(1));
  EXPECT_EQ(d.terminate(), 0) << d.log();
  v.open();
  // The WAL was checkpointed into resendd.db: a copy of that file alone holds every job.
  const auto wal = d.db_path() + "-wal";
  EXPECT_TRUE(!std::filesystem::exists(wal) || std::filesystem::file_size(wal) == 0);
  std::filesystem::copy_file(d.db_path(), dir.file("copy.db"));
  EXPECT_EQ(sql_value(dir.file("copy.db"), "select count(*) from jobs where state = 'queued'"),
            "5");
  // The CLI reads it without a daemon, and says so when there is no database at all.
  auto r = run_resendd(dir, {"--config", dir.file("resendd.toml"), "jobs", "list"});
  EXPECT_EQ(r.status, 0) << r.output;
  dir.write("elsewhere.toml", "[store]\npath = \"nowhere/resendd.db\"\n");
  r = run_resendd(dir, {"--config", dir.file("elsewhere.toml"), "jobs", "list"});
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("no database at"), std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists(dir.file("nowhere/resendd.db")));
}

TEST(QueueCore, RetentionDeletesWhatIsDueAndNothingElseAndTheFileShrinks) {
  SQLITE_ONLY("written with SQL into the file; the file shrinks (PostgreSQL: autovacuum)");
  temp_dir dir;
  const std::string retention =
      "[retention]\nsucceeded = \"30m\"\ndead = \"2h\"\ninterval = \"50ms\"\n";
  dir.write("resendd.toml", local_config("", retention));
  ASSERT_EQ(run_resendd(dir, {"migrate", "--config", dir.file("resendd.toml")}).status, 0);
  const auto now = resendd::sys_time{std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::system_clock::now().time_since_epoch())};
  const auto ago = [&](int minutes) {
    return "'" + resendd::to_iso8601(now - std::chrono::minutes(minutes)) + "'";
  };
  {
    SQLite::Database db(dir.file("var/resendd.db"), SQLite::OPEN_READWRITE);
    const auto job = [&](const std::string& id, const std::string& state, int created_min,
                         int finished_min, const std::string& key) {
      db.exec(
          "INSERT INTO jobs (id, state, route, method, location, request, idempotency_key, "
          "next_attempt_at, created_at, updated_at, finished_at) VALUES ('" +
          id + "', '" + state + "', 'local', 'POST', 'http://127.0.0.1:1/x', '{}', " +
          (key.empty() ? "NULL" : "'" + key + "'") + ", " + ago(created_min) + ", " +
          ago(created_min) + ", " + ago(created_min) + ", " +
          (finished_min < 0 ? "NULL" : ago(finished_min)) + ")");
    };
    db.exec("BEGIN");
    job("s-old", "succeeded", 120, 60, "");       // past 30m: deleted
    job("s-new", "succeeded", 20, 10, "");        // kept
    job("k-day", "succeeded", 120, 60, "key-1");  // past 30m, but its key is < 24 h old: kept
    job("k-old", "succeeded", 26 * 60, 25 * 60, "key-2");  // key older than 24 h: deleted
    job("d-old", "dead", 200, 180, "");                    // past 2h: deleted
    job("d-new", "dead", 70, 60, "");                      // kept
    job("c-old", "cancelled", 200, 180, "");               // deleted
    job("q-old", "queued", 300, -1, "");                   // never finished: kept
    // Bulk, so that the file has something to give back.
    db.exec(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000) "
        "INSERT INTO jobs (id, state, route, method, location, request, next_attempt_at, "
        "created_at, updated_at, finished_at) SELECT printf('bulk-%05d', i), 'succeeded', "
        "'local', 'POST', 'http://127.0.0.1:1/x', printf('{\"pad\":\"%0900d\"}', i), " +
        ago(120) + ", " + ago(120) + ", " + ago(120) + ", " + ago(60) + " FROM n");
    db.exec("COMMIT");
    db.exec("PRAGMA wal_checkpoint(TRUNCATE)");
  }
  const auto size_before = std::filesystem::file_size(dir.file("var/resendd.db"));
  daemon_process d(dir, local_config("", retention));
  ASSERT_TRUE(d.wait_log("retention: 3004 finished job(s) deleted")) << d.log();
  const auto left = sql_rows(d.db_path(), "select id from jobs order by id");
  std::vector<std::string> ids;
  for (const auto& r : left) ids.push_back(r[0]);
  EXPECT_EQ(ids, (std::vector<std::string>{"d-new", "k-day", "q-old", "s-new"}));
  const auto size_after = std::filesystem::file_size(d.db_path());
  EXPECT_LT(size_after * 2, size_before) << size_before << " -> " << size_after;
}
