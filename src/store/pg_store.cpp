#include "store/pg_store.h"

#include <poll.h>
#include <unistd.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "store/migrations.h"
#include "store/pg.h"
#include "util/errors.h"

namespace resendd::store {

using nlohmann::json;

namespace {

// Advisory lock keys (first int of the two-int form): one namespace for resendd's locks.
constexpr const char* lock_ns = "7262001";
constexpr const char* claim_lock_sql = "SELECT pg_advisory_xact_lock(7262001, 1)";
constexpr const char* purge_lock_sql = "SELECT pg_advisory_xact_lock(7262001, 2)";
constexpr const char* migrate_lock_sql = "SELECT pg_advisory_lock(7262001, 3)";
constexpr const char* migrate_unlock_sql = "SELECT pg_advisory_unlock(7262001, 3)";
constexpr const char* channel = "resendd_jobs";

std::string iso(sys_time t) { return to_iso8601(t); }

// A PostgreSQL array literal of text values.
std::string text_array(const std::vector<std::string>& v) {
  std::string out = "{";
  for (std::size_t i = 0; i < v.size(); ++i) {
    if (i) out += ',';
    out += '"';
    for (char c : v[i]) {
      if (c == '"' || c == '\\') out += '\\';
      out += c;
    }
    out += '"';
  }
  return out + "}";
}

pg_param opt_int(const std::optional<int>& v) {
  return v ? pg_param(std::to_string(*v)) : std::nullopt;
}
pg_param opt_int64(const std::optional<std::int64_t>& v) {
  return v ? pg_param(std::to_string(*v)) : std::nullopt;
}
pg_param text_or_null(const std::string& v) { return v.empty() ? std::nullopt : pg_param(v); }

constexpr const char* job_columns =
    "id, state, route, method, location, request, idempotency_key, client_token, resource_key, "
    "attempts, free_attempts, auth_refreshes, claim_no, claimed_by, "
    "resendd_ts(next_attempt_at) AS next_attempt_at, resendd_ts(lease_until) AS lease_until, "
    "resendd_ts(created_at) AS created_at, resendd_ts(updated_at) AS updated_at, "
    "resendd_ts(finished_at) AS finished_at, resendd_ts(retried_at) AS retried_at, "
    "last_status, last_error, last_response";

json row_json(const pg_rows& r, int row, bool with_request) {
  json j = json::object();
  for (int c = 0; c < r.columns(); ++c) {
    const std::string name = r.name(c);
    if (name == "request") {
      if (with_request) j[name] = json::parse(r.text(row, c), nullptr, false);
      continue;
    }
    if (r.null(row, c))
      j[name] = nullptr;
    else if (r.is_integer_column(c))
      j[name] = r.integer(row, c);
    else
      j[name] = r.text(row, c);
  }
  return j;
}

void apply_migrations(pg_connection& c, sys_time now) {
  c.exec(migrate_lock_sql);
  try {
    c.exec(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version integer PRIMARY KEY, name text NOT NULL, applied_at text NOT NULL)");
    const auto have_rows = c.run("SELECT coalesce(max(version), 0) FROM schema_migrations");
    const int have = int(have_rows.integer(0, 0));
    int newest = 0;
    for (const auto& m : embedded_pg_migrations()) newest = std::max(newest, m.version);
    if (have > newest)
      throw std::runtime_error("the database has schema version " + std::to_string(have) +
                               ", newer than this resendd knows (" + std::to_string(newest) +
                               "): run the newer resendd");
    int applied = 0;
    for (const auto& m : embedded_pg_migrations()) {
      if (m.version <= have) continue;
      c.exec("BEGIN");
      try {
        c.exec(m.sql);
        c.run("INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
              {std::to_string(m.version), std::string(m.name), iso(now)});
        c.exec("COMMIT");
      } catch (...) {
        if (c.ok()) c.exec("ROLLBACK");
        throw;
      }
      ++applied;
    }
    if (applied) spdlog::info("store: applied {} PostgreSQL migration(s)", applied);
  } catch (...) {
    if (c.ok()) c.exec(migrate_unlock_sql);
    throw;
  }
  c.exec(migrate_unlock_sql);
}

void check_pg_schema(pg_connection& c) {
  int newest = 0;
  for (const auto& m : embedded_pg_migrations()) newest = std::max(newest, m.version);
  const auto t = c.run("SELECT to_regclass('schema_migrations') IS NOT NULL");
  const int have = t.text(0, 0) == "t"
                       ? int(c.run("SELECT coalesce(max(version), 0) FROM schema_migrations")
                                 .integer(0, 0))
                       : 0;
  if (have != newest)
    throw std::runtime_error("the database has PostgreSQL schema version " + std::to_string(have) +
                             ", this resendd needs " + std::to_string(newest) +
                             (have < newest ? ": run `resendd migrate` (or start a daemon) first"
                                            : ": run the newer resendd"));
}

}  // namespace

// --- the writer: one thread, one connection, group commit ---

class pg_writer {
 public:
  using work_fn = std::function<void(pg_connection&)>;
  using done_fn = std::function<void(std::exception_ptr)>;
  struct how {
    bool bounded = true;   // refused when the queue is full
    bool group = false;    // may share a transaction with others (enqueue, finish)
    bool notify = false;   // wakes the other daemons when committed
    gate g = nullptr;
    bool proof = false;    // like the SQLite writer: a real write that makes the store healthy
  };

  pg_writer(std::unique_ptr<pg_connection> c, std::string slot, std::size_t max_pending)
      : c_(std::move(c)), slot_(std::move(slot)), max_pending_(max_pending),
        thread_([this] { loop(); }) {}
  ~pg_writer() { stop(); }

  bool submit(work_fn work, done_fn done, how h) {
    {
      std::lock_guard lock(mutex_);
      if (stopping_) return false;
      if (h.bounded && pending_.size() >= max_pending_) return false;
      pending_.push_back({std::move(work), std::move(done), std::move(h)});
    }
    wake_.notify_one();
    return true;
  }

  // For start-up, shutdown and CLI paths: runs `work` in a transaction and waits.
  void run_sync(work_fn work) {
    std::mutex m;
    std::condition_variable cv;
    bool finished = false;
    std::exception_ptr err;
    const bool taken = submit(std::move(work),
                              [&](std::exception_ptr e) {
                                std::lock_guard lock(m);
                                err = e;
                                finished = true;
                                cv.notify_all();
                              },
                              how{.bounded = false});
    if (!taken) throw std::runtime_error("store is shutting down");
    std::unique_lock lock(m);
    cv.wait(lock, [&] { return finished; });
    if (err) std::rethrow_exception(err);
  }

  void stop() {
    {
      std::lock_guard lock(mutex_);
      if (stopping_ && !thread_.joinable()) return;
      stopping_ = true;
    }
    wake_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

  std::uint64_t batches() const { return batches_.load(); }
  bool healthy() const { return healthy_.load(); }
  std::string health_detail() const {
    std::lock_guard lock(mutex_);
    return detail_;
  }

 private:
  struct request {
    work_fn work;
    done_fn done;
    how h;
  };

  void set_health(bool ok, const std::string& why) {
    healthy_ = ok;
    std::lock_guard lock(mutex_);
    detail_ = ok ? "" : why;
  }

  void loop() {
    for (;;) {
      std::deque<request> batch;
      {
        std::unique_lock lock(mutex_);
        wake_.wait(lock, [&] { return stopping_ || !pending_.empty(); });
        if (pending_.empty()) return;
        // A group: every groupable request at the front (up to 512); else the first alone.
        if (pending_.front().h.group) {
          while (!pending_.empty() && pending_.front().h.group && batch.size() < 512) {
            batch.push_back(std::move(pending_.front()));
            pending_.pop_front();
          }
        } else {
          batch.push_back(std::move(pending_.front()));
          pending_.pop_front();
        }
      }
      run(batch);
    }
  }

  // Drops requests whose caller gave up before they started; marks the rest started.
  static void start(std::deque<request>& batch) {
    std::deque<request> keep;
    for (auto& r : batch) {
      if (r.h.g) {
        int expected = 0;
        if (!r.h.g->compare_exchange_strong(expected, 1) && expected == 2) {
          r.done(std::make_exception_ptr(std::runtime_error(abandoned_error)));
          continue;
        }
      }
      keep.push_back(std::move(r));
    }
    batch.swap(keep);
  }

  void reconnect() {
    if (c_->ok()) return;
    c_->reset();  // throws when the server is still away
    spdlog::info("store: reconnected to {}", c_->masked_url());
  }

  // One transaction for `batch`. On a request's error the whole transaction is rolled back and
  // each request runs again in its own, so a failing one fails alone.
  void run(std::deque<request>& batch) {
    start(batch);
    if (batch.empty()) return;
    std::exception_ptr failed;
    try {
      reconnect();
      transaction(batch);
      done_all(batch, nullptr);
      return;
    } catch (...) {
      failed = std::current_exception();
    }
    if (batch.size() == 1 || !c_->ok()) {
      note_failure(failed);
      return done_all(batch, failed);
    }
    for (auto& r : batch) {
      std::deque<request> one;
      one.push_back(std::move(r));
      try {
        transaction(one);
        done_all(one, nullptr);
      } catch (...) {
        note_failure(std::current_exception());
        done_all(one, std::current_exception());
      }
    }
  }

  void transaction(std::deque<request>& batch) {
    bool notify = false, proof = false;
    c_->exec("BEGIN");
    try {
      for (auto& r : batch) {
        r.work(*c_);
        notify = notify || r.h.notify;
        proof = proof || r.h.proof;
      }
      // The payload names the sender, so a daemon ignores its own wake-ups.
      if (notify) c_->run("SELECT pg_notify($1, $2)", {std::string(channel), slot_});
      c_->exec("COMMIT");
    } catch (...) {
      if (c_->ok()) {
        try {
          c_->exec("ROLLBACK");
        } catch (...) {
        }
      }
      throw;
    }
    ++batches_;
    if (proof || healthy_) set_health(true, "");
  }

  void note_failure(const std::exception_ptr& e) {
    try {
      std::rethrow_exception(e);
    } catch (const pg_error& p) {
      // The server or the connection failed (not one request's bad data): not ready until a
      // write commits again.
      if (p.lost || p.sqlstate.starts_with("53") || p.sqlstate.starts_with("57") ||
          p.sqlstate.starts_with("58") || p.sqlstate.starts_with("08") ||
          p.sqlstate.starts_with("25"))
        set_health(false, p.what());
    } catch (...) {
    }
  }

  static void done_all(std::deque<request>& batch, const std::exception_ptr& e) {
    for (auto& r : batch) {
      try {
        r.done(e);
      } catch (const std::exception& ex) {
        spdlog::error("store: a completion threw: {}", ex.what());
      }
    }
  }

  std::unique_ptr<pg_connection> c_;
  const std::string slot_;
  const std::size_t max_pending_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<request> pending_;
  bool stopping_ = false;
  std::atomic<std::uint64_t> batches_{0};
  std::atomic<bool> healthy_{true};
  std::string detail_;
  std::thread thread_;
};

// --- the reader: admin reads on their own connection ---

class pg_reader {
 public:
  explicit pg_reader(std::unique_ptr<pg_connection> c)
      : c_(std::move(c)), thread_([this] { loop(); }) {}
  ~pg_reader() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    thread_.join();
  }
  bool post(std::function<void(pg_connection&)> fn) {
    {
      std::lock_guard lock(mutex_);
      if (stopping_ || pending_.size() >= 1000) return false;
      pending_.push_back(std::move(fn));
    }
    wake_.notify_one();
    return true;
  }

 private:
  void loop() {
    for (;;) {
      std::function<void(pg_connection&)> fn;
      {
        std::unique_lock lock(mutex_);
        wake_.wait(lock, [&] { return stopping_ || !pending_.empty(); });
        if (pending_.empty()) return;
        fn = std::move(pending_.front());
        pending_.pop_front();
      }
      if (!c_->ok()) {
        try {
          c_->reset();
        } catch (...) {
        }
      }
      fn(*c_);
    }
  }
  std::unique_ptr<pg_connection> c_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::function<void(pg_connection&)>> pending_;
  bool stopping_ = false;
  std::thread thread_;
};

// --- the watcher: holds the daemon's slot, LISTENs, recounts ---

class pg_watcher {
 public:
  pg_watcher(std::unique_ptr<pg_connection> c, std::string slot,
             std::function<void(pg_connection&)> recount)
      : c_(std::move(c)), slot_(std::move(slot)), recount_(std::move(recount)) {
    if (::pipe(stop_pipe_) != 0) throw std::runtime_error("pipe failed");
    thread_ = std::thread([this] { loop(); });
  }
  ~pg_watcher() {
    stopping_ = true;
    const char x = 1;
    (void)!::write(stop_pipe_[1], &x, 1);
    thread_.join();
    ::close(stop_pipe_[0]);
    ::close(stop_pipe_[1]);
  }
  void on_wake(std::function<void()> fn) {
    std::lock_guard lock(mutex_);
    wake_ = std::move(fn);
  }

  // Takes the first free slot named `base`, `base#2`, ... on `c` (a session lock: it lasts as
  // long as the connection, so a daemon that dies frees its slot). Returns its name.
  static std::string take_slot(pg_connection& c, const std::string& base) {
    for (int i = 1; i <= 1000; ++i) {
      const std::string name = i == 1 ? base : base + "#" + std::to_string(i);
      if (lock_slot(c, name)) return name;
    }
    throw std::runtime_error("no free daemon slot named " + base + "#N (1000 taken?)");
  }
  static bool lock_slot(pg_connection& c, const std::string& name) {
    return c.run(std::string("SELECT pg_try_advisory_lock(") + lock_ns + ", hashtext($1))", {name})
               .text(0, 0) == "t";
  }

 private:
  void loop() {
    auto last_count = std::chrono::steady_clock::now();
    while (!stopping_) {
      if (!c_->ok()) {
        try {
          c_->reset();
          if (!lock_slot(*c_, slot_))
            spdlog::error("store: slot {} was taken by another daemon while this one was "
                          "disconnected: two daemons now re-queue the same slot's jobs at start",
                          slot_);
          c_->exec(std::string("LISTEN ") + channel);
          wake();  // whatever was sent meanwhile is lost: look now
        } catch (const std::exception& e) {
          spdlog::warn("store: watcher: {}", e.what());
          wait_stop(1000);
          continue;
        }
      }
      pollfd fds[2] = {{c_->socket(), POLLIN, 0}, {stop_pipe_[0], POLLIN, 0}};
      ::poll(fds, 2, 500);
      if (stopping_) return;
      try {
        bool others = false;
        for (const auto& payload : c_->notifications()) others = others || payload != slot_;
        if (others) wake();
        if (std::chrono::steady_clock::now() - last_count >= std::chrono::seconds(2)) {
          recount_with(*c_);
          last_count = std::chrono::steady_clock::now();
        }
      } catch (const std::exception& e) {
        spdlog::warn("store: watcher: {}", e.what());
      }
    }
  }
  void recount_with(pg_connection& c) { recount_(c); }
  void wake() {
    std::lock_guard lock(mutex_);
    if (wake_) wake_();
  }
  void wait_stop(int ms) {
    pollfd fd{stop_pipe_[0], POLLIN, 0};
    ::poll(&fd, 1, ms);
  }

  std::unique_ptr<pg_connection> c_;
  const std::string slot_;
  std::function<void(pg_connection&)> recount_;
  std::mutex mutex_;
  std::function<void()> wake_;
  std::atomic<bool> stopping_{false};
  int stop_pipe_[2] = {-1, -1};
  std::thread thread_;
};

// --- the store ---

pg_store::pg_store(const pg_options& opts, sys_time now) : opts_(opts) {
  try {
    auto main = std::make_unique<pg_connection>(opts_.url);
    if (opts_.read_only) {
      check_pg_schema(*main);
      recount(*main);
      reader_ = std::make_unique<pg_reader>(std::move(main));
      return;
    }
    apply_migrations(*main, now);
    recount(*main);
    std::unique_ptr<pg_connection> watch;
    if (!opts_.daemon_name.empty()) {
      watch = std::make_unique<pg_connection>(opts_.url);
      slot_ = pg_watcher::take_slot(*watch, opts_.daemon_name);
      watch->exec(std::string("LISTEN ") + channel);
    }
    reader_ = std::make_unique<pg_reader>(std::make_unique<pg_connection>(opts_.url));
    // A write that waits longer than busy_timeout for a lock fails (and is retried by its
    // caller) instead of holding the writer, as on SQLite.
    // A 202 means the commit is on the server's disk, whatever the server's default says.
    main->session("SET synchronous_commit = on");
    main->session("SET lock_timeout = " + std::to_string(opts_.busy_timeout.count()));
    writer_ = std::make_unique<pg_writer>(std::move(main), slot_, opts_.max_pending_writes);
    if (watch) {
      // The recount runs on the watcher's own connection (its thread).
      watcher_ = std::make_unique<pg_watcher>(std::move(watch), slot_,
                                              [this](pg_connection& c) { recount(c); });
    }
  } catch (const pg_error& e) {
    throw std::runtime_error(std::string("store: ") + e.what());
  }
}

pg_store::~pg_store() {
  watcher_.reset();
  if (writer_) writer_->stop();
  writer_.reset();
  reader_.reset();
}

void pg_store::on_wake(std::function<void()> fn) {
  if (watcher_) watcher_->on_wake(std::move(fn));
}

void pg_store::recount(pg_connection& c) {
  // A commit of ours that lands while we count may or may not be in the result: then it is
  // dropped, and the next recount is used.
  const auto before = counter_.changes();
  job_counts fresh;
  const auto rows = c.run("SELECT state, route, count(*) FROM jobs GROUP BY state, route");
  for (int i = 0; i < rows.size(); ++i) fresh[{rows.text(i, 0), rows.text(i, 1)}] = rows.integer(i, 2);
  counter_.replace(std::move(fresh), before);
}

job_counts pg_store::counts() const { return counter_.counts(); }

bool pg_store::healthy() const { return writer_ && writer_->healthy(); }
std::string pg_store::health_detail() const {
  return writer_ ? writer_->health_detail() : "read-only";
}
std::uint64_t pg_store::commits() const { return writer_ ? writer_->batches() : 0; }

void pg_store::enqueue(new_job job, sys_time now, gate g,
                       std::function<void(enqueue_result)> done) {
  if (!writer_) return done({enqueue_result::status::failed, {}, {}, "read-only store"});
  auto result = std::make_shared<enqueue_result>();
  const std::string route = job.route;
  const bool taken = writer_->submit(
      [this, job = std::move(job), now, result](pg_connection& c) {
        const auto existing = [&]() {
          // The key is bound to the request: the same key with another body is a conflict.
          auto q = c.run("SELECT id, state, request FROM jobs WHERE idempotency_key = $1",
                         {*job.idempotency_key});
          if (q.size() == 0) return false;
          *result = {same_request(q.text(0, 2), job.request) ? enqueue_result::status::existing
                                                             : enqueue_result::status::conflict,
                     q.text(0, 0), q.text(0, 1), {}};
          return true;
        };
        if (job.idempotency_key && existing()) return;
        if (counter_.active() >= opts_.max_queue_depth) {
          *result = {enqueue_result::status::full, {}, {}, {}};
          return;
        }
        // Another daemon may take the same key at the same moment: the unique column decides,
        // and the loser answers with the winner's job.
        auto ins = c.run(
            "INSERT INTO jobs (id, state, route, method, location, request, idempotency_key, "
            "client_token, resource_key, next_attempt_at, created_at, updated_at) "
            "VALUES ($1, 'queued', $2, $3, $4, $5, $6, $7, $8, $9, $9, $9) "
            "ON CONFLICT (idempotency_key) DO NOTHING RETURNING id",
            {job.id, job.route, job.method, job.location, job.request, job.idempotency_key,
             job.client_token, job.resource_key, iso(now)});
        if (ins.size() == 0 && job.idempotency_key && existing()) return;
        *result = {enqueue_result::status::queued, job.id, "queued", {}};
      },
      [this, result, route, done](std::exception_ptr e) {
        if (e) {
          result->what = enqueue_result::status::failed;
          result->error = exception_message(e);
        } else if (result->what == enqueue_result::status::queued) {
          count("queued", route, +1);
        }
        done(*result);
      },
      pg_writer::how{.bounded = true, .group = true, .notify = true, .g = std::move(g),
                     .proof = true});
  if (!taken) done({enqueue_result::status::busy, {}, {}, "the store's write queue is full"});
}

void pg_store::claim(claim_request req, std::function<void(claim_result)> done) {
  if (!writer_) return done({{}, {}, 0, "read-only store"});
  auto out = std::make_shared<claim_result>();
  add_unnamed_routes(req, counts());
  auto moves = std::make_shared<std::vector<std::pair<std::string, std::string>>>();
  const bool taken = writer_->submit(
      [this, req = std::move(req), out, moves](pg_connection& c) {
        out->jobs.clear();
        out->reclaimed = 0;
        moves->clear();
        const std::string now = iso(req.now);
        const std::string lease = iso(req.now + req.lease);
        // Claims of every daemon run one at a time (this lock is released at commit): each
        // sees every committed delivery when it counts what is in flight below.
        c.run(claim_lock_sql);
        // 1. Expired leases (a daemon that died, a finish that never committed) are taken back.
        {
          auto q = c.run(
              "UPDATE jobs SET state = 'queued', lease_until = NULL, inflight_until = NULL, "
              "next_attempt_at = $1, updated_at = $1 WHERE state = 'delivering' AND "
              "lease_until <= $1 RETURNING route",
              {now});
          for (int i = 0; i < q.size(); ++i) {
            moves->emplace_back(q.text(i, 0), "reaped");
            ++out->reclaimed;
          }
        }
        // 2. In flight on every daemon, per route and per key.
        std::map<std::string, int> route_busy, key_busy;
        {
          auto q = c.run("SELECT route, resource_key FROM jobs WHERE state = 'delivering'");
          for (int i = 0; i < q.size(); ++i) {
            ++route_busy[q.text(i, 0)];
            if (!q.null(i, 1)) ++key_busy[q.text(i, 1)];
          }
        }
        const int keys_busy = int(key_busy.size());
        int remaining = req.limit;
        const std::size_t n_routes = req.routes.size();
        for (std::size_t i = 0; i < n_routes && remaining > 0; ++i) {
          const auto& rl = req.routes[(req.rotation + i) % n_routes];
          const int room = std::min(rl.concurrency - route_busy[rl.route], remaining);
          if (room <= 0) continue;
          std::vector<std::pair<std::string, std::string>> cand;  // next_attempt_at, id
          {
            auto q = c.run(
                "SELECT id, resendd_ts(next_attempt_at) FROM jobs WHERE state = 'queued' AND "
                "resource_key IS NULL AND route = $1 AND next_attempt_at <= $2 "
                "ORDER BY next_attempt_at, id LIMIT $3 FOR UPDATE SKIP LOCKED",
                {rl.route, now, std::to_string(room)});
            for (int k = 0; k < q.size(); ++k) cand.emplace_back(q.text(k, 1), q.text(k, 0));
          }
          // Keyed: the due keys of this route (key_heads, in due order) that are not in their
          // gap, each with its earliest due jobs; busy keys are skipped below.
          {
            auto q = c.run(
                "SELECT j.id, resendd_ts(j.next_attempt_at), j.resource_key FROM "
                "(SELECT resource_key FROM key_heads WHERE route = $1 AND head_at <= $2 "
                " ORDER BY head_at LIMIT $3) k CROSS JOIN LATERAL "
                "(SELECT id, next_attempt_at, resource_key FROM jobs WHERE state = 'queued' AND "
                " resource_key = k.resource_key AND route = $1 AND next_attempt_at <= $2 "
                " ORDER BY next_attempt_at, id LIMIT $4) j "
                "WHERE NOT EXISTS (SELECT 1 FROM key_gaps g WHERE g.resource_key = "
                "k.resource_key AND g.not_before > $2)",
                {rl.route, now, std::to_string(room + keys_busy + 64),
                 std::to_string(std::max(1, rl.key_concurrency))});
            std::map<std::string, int> taken_of_key;
            int keyed = 0;
            for (int k = 0; k < q.size() && keyed < room; ++k) {
              const auto key = q.text(k, 2);
              if (key_busy[key] + taken_of_key[key] >= rl.key_concurrency) continue;
              ++taken_of_key[key];
              cand.emplace_back(q.text(k, 1), q.text(k, 0));
              ++keyed;
            }
          }
          std::sort(cand.begin(), cand.end());
          if (int(cand.size()) > room) cand.resize(std::size_t(room));
          if (cand.empty()) continue;
          std::vector<std::string> ids;
          for (const auto& cnd : cand) ids.push_back(cnd.second);
          auto q = c.run(
              "WITH c AS (SELECT id FROM jobs WHERE id = ANY($1::text[]) AND state = 'queued' "
              " FOR UPDATE SKIP LOCKED) "
              "UPDATE jobs j SET state = 'delivering', lease_until = $2, inflight_until = $2, "
              "claim_no = j.claim_no + 1, attempts = j.attempts + 1, updated_at = $3, "
              "claimed_by = $4 FROM c WHERE j.id = c.id "
              "RETURNING j.id, j.route, j.location, j.method, j.request, j.client_token, "
              "j.resource_key, j.claim_no, j.attempts, j.free_attempts, j.auth_refreshes, "
              "resendd_ts(coalesce(j.retried_at, j.created_at)), resendd_ts(j.next_attempt_at)",
              {text_array(ids), lease, now, slot_.empty() ? std::string("cli") : slot_});
          std::vector<std::pair<std::string, claimed_job>> got;
          for (int k = 0; k < q.size(); ++k) {
            claimed_job j;
            j.id = q.text(k, 0);
            j.route = q.text(k, 1);
            j.location = q.text(k, 2);
            j.method = q.text(k, 3);
            j.request = q.text(k, 4);
            j.client_token = q.opt(k, 5);
            j.resource_key = q.opt(k, 6);
            j.claim_no = q.integer(k, 7);
            j.attempts = int(q.integer(k, 8));
            j.free_attempts = int(q.integer(k, 9));
            j.auth_refreshes = int(q.integer(k, 10));
            j.age_start = from_iso8601(q.text(k, 11)).value_or(req.now);
            got.emplace_back(q.text(k, 12) + j.id, std::move(j));
          }
          // In due order, as the SQLite backend hands them out.
          std::sort(got.begin(), got.end(),
                    [](const auto& a, const auto& b) { return a.first < b.first; });
          for (auto& [order, j] : got) {
            if (j.resource_key) ++key_busy[*j.resource_key];
            moves->emplace_back(j.route, "claimed");
            out->jobs.push_back(std::move(j));
            --remaining;
          }
        }
        // 3. When to look again.
        std::vector<std::string> routes;
        for (const auto& rl : req.routes) routes.push_back(rl.route);
        auto q = c.run(
            "SELECT resendd_ts(least("
            "(SELECT min(next_attempt_at) FROM jobs WHERE state = 'queued' AND resource_key IS "
            "NULL AND route = ANY($2::text[]) AND next_attempt_at > $1), "
            "(SELECT min(head_at) FROM key_heads WHERE route = ANY($2::text[]) AND head_at > $1), "
            "(SELECT min(not_before) FROM key_gaps WHERE not_before > $1), "
            "(SELECT min(lease_until) FROM jobs WHERE state = 'delivering')))",
            {now, text_array(routes)});
        if (q.size() && !q.null(0, 0)) out->next_due = from_iso8601(q.text(0, 0));
      },
      [this, out, moves, done](std::exception_ptr e) {
        if (e) {
          out->jobs.clear();
          out->reclaimed = 0;
          out->error = exception_message(e);
        } else {
          for (const auto& [route, what] : *moves) {
            const bool claimed = what == "claimed";
            count(claimed ? "queued" : "delivering", route, -1);
            count(claimed ? "delivering" : "queued", route, +1);
          }
        }
        done(std::move(*out));
      },
      pg_writer::how{.bounded = false, .notify = false});
  if (!taken) done({{}, {}, 0, "store is shutting down"});
}

void pg_store::finish(job_finish f, sys_time now, std::function<void(finish_result)> done) {
  if (!writer_) return done({0, false, {}, "read-only store"});
  auto out = std::make_shared<finish_result>();
  auto moved = std::make_shared<std::pair<std::string, std::string>>();
  const std::string route = f.route;
  const bool taken = writer_->submit(
      [f = std::move(f), now, out, moved](pg_connection& c) {
        *out = {};
        *moved = {};
        const auto& a = f.attempt;
        auto ins = c.run(
            "INSERT INTO attempts (job_id, n, started_at, duration_ms, http_status, feishu_code, "
            "outcome, error, response) VALUES ($1, (SELECT coalesce(max(n), 0) + 1 FROM attempts "
            "WHERE job_id = $1), $2, $3, $4, $5, $6, $7, $8) RETURNING n",
            {f.id, iso(a.started_at), std::to_string(a.duration.count()), opt_int(a.http_status),
             opt_int64(a.feishu_code), a.outcome, text_or_null(a.error),
             text_or_null(a.response)});
        out->attempt_no = ins.size() ? int(ins.integer(0, 0)) : 0;
        const bool final_state = f.next_state != "queued";
        auto up = c.run(
            "UPDATE jobs SET state = $2, lease_until = NULL, inflight_until = NULL, "
            "next_attempt_at = $3, attempts = greatest(attempts - $4::int, 0), "
            "free_attempts = free_attempts + $4::int, auth_refreshes = auth_refreshes + $5::int, "
            "updated_at = $6, finished_at = $7, last_status = $8, last_error = $9, "
            "last_response = $10, request = coalesce($12, request) "
            "WHERE id = $1 AND claim_no = $11 AND state = 'delivering'",
            {f.id, f.next_state, iso(f.next_attempt_at), f.counted ? "0" : "1",
             f.auth_refresh ? "1" : "0", iso(now),
             final_state ? pg_param(iso(now)) : std::nullopt, opt_int(a.http_status),
             text_or_null(f.last_error), text_or_null(a.response), std::to_string(f.claim_no),
             f.scrubbed_request});
        if (up.affected() == 1) {
          out->applied = true;
          out->state = f.next_state;
          *moved = {"delivering", f.next_state};
          if (f.resource_key && f.key_min_gap.count() > 0)
            c.run(
                "INSERT INTO key_gaps (resource_key, not_before) VALUES ($1, $2) "
                "ON CONFLICT (resource_key) DO UPDATE SET not_before = excluded.not_before",
                {*f.resource_key, iso(now + f.key_min_gap)});
          return;
        }
        auto late = c.run(
            "UPDATE jobs SET inflight_until = NULL, updated_at = $2, "
            "state = CASE WHEN $3::bool THEN 'succeeded' ELSE state END, "
            "last_error = CASE WHEN $3::bool THEN 'cancelled while a delivery was in flight; it "
            "succeeded' ELSE last_error END, last_status = $4, last_response = $5 "
            "WHERE id = $1 AND claim_no = $6 AND state = 'cancelled' RETURNING state",
            {f.id, iso(now), f.next_state == "succeeded" ? "true" : "false",
             opt_int(a.http_status), text_or_null(a.response), std::to_string(f.claim_no)});
        if (late.size()) {
          out->state = late.text(0, 0);
          if (out->state == "succeeded") *moved = {"cancelled", "succeeded"};
        }
      },
      [this, out, moved, route, done](std::exception_ptr e) {
        if (e) {
          *out = {};
          out->error = exception_message(e);
        } else if (!moved->first.empty()) {
          count(moved->first, route, -1);
          count(moved->second, route, +1);
        }
        done(*out);
      },
      // Frees a delivery slot of its route (and key): other daemons may claim now.
      pg_writer::how{.bounded = false, .group = true, .notify = true});
  if (!taken) done({0, false, {}, "store is shutting down"});
}

bool pg_store::submit_action(std::function<void(pg_connection&, action_result&)> work, gate g,
                             std::function<void(action_result)> done) {
  if (!writer_) {
    done({action_result::status::failed, {}, "read-only store", 0});
    return false;
  }
  auto out = std::make_shared<action_result>();
  const bool taken = writer_->submit(
      [work = std::move(work), out](pg_connection& c) {
        *out = {};
        work(c, *out);
      },
      [out, done](std::exception_ptr e) {
        if (e) *out = {action_result::status::failed, {}, exception_message(e), 0};
        done(*out);
      },
      pg_writer::how{.bounded = true, .notify = true, .g = std::move(g)});
  if (!taken)
    done({action_result::status::failed, {}, "the store's write queue is full; try again", 0});
  return taken;
}

void pg_store::cancel(std::string id, sys_time now, gate g,
                      std::function<void(action_result)> done) {
  auto moved = std::make_shared<std::pair<std::string, std::string>>();
  submit_action(
      [id, now, moved](pg_connection& c, action_result& r) {
        auto q = c.run("SELECT state, route FROM jobs WHERE id = $1 FOR UPDATE", {id});
        if (q.size() == 0) return void(r.what = action_result::status::not_found);
        const std::string state = q.text(0, 0), route = q.text(0, 1);
        if (auto no = cancel_refused(state)) return void(r = *no);
        c.run(
            "UPDATE jobs SET state = 'cancelled', lease_until = NULL, updated_at = $2, "
            "finished_at = $2 WHERE id = $1",
            {id, iso(now)});
        r = {action_result::status::done, "cancelled", {}, 1};
        *moved = {state, route};
      },
      std::move(g), [this, moved, done](action_result r) {
        if (r.what == action_result::status::done) {
          count(moved->first, moved->second, -1);
          count("cancelled", moved->second, +1);
        }
        done(std::move(r));
      });
}

void pg_store::retry(std::string id, sys_time now, bool force, gate g,
                     std::function<void(action_result)> done) {
  auto moved = std::make_shared<std::pair<std::string, std::string>>();
  submit_action(
      [id, now, force, moved](pg_connection& c, action_result& r) {
        auto q = c.run(
            "SELECT state, route, resendd_ts(inflight_until), coalesce(last_error, ''), "
            "inflight_until > $2 FROM jobs WHERE id = $1 FOR UPDATE",
            {id, iso(now)});
        if (q.size() == 0) return void(r.what = action_result::status::not_found);
        const std::string state = q.text(0, 0), route = q.text(0, 1);
        // Column 4: a delivery is still in flight (its lease, column 2, has not passed).
        if (auto no = retry_refused(state, q.text(0, 4) == "t" ? q.text(0, 2) : "", q.text(0, 3),
                                    force))
          return void(r = *no);
        c.run(
            "UPDATE jobs SET state = 'queued', attempts = 0, free_attempts = 0, "
            "auth_refreshes = 0, next_attempt_at = $2, retried_at = $2, updated_at = $2, "
            "finished_at = NULL, inflight_until = NULL WHERE id = $1",
            {id, iso(now)});
        r = {action_result::status::done, "queued", {}, 1};
        *moved = {state, route};
      },
      std::move(g), [this, moved, done](action_result r) {
        if (r.what == action_result::status::done) {
          count(moved->first, moved->second, -1);
          count("queued", moved->second, +1);
        }
        done(std::move(r));
      });
}

void pg_store::retry_dead(sys_time now, gate g, std::function<void(action_result)> done) {
  auto routes = std::make_shared<std::vector<std::string>>();
  submit_action(
      [now, routes](pg_connection& c, action_result& r) {
        routes->clear();
        auto q = c.run(
            "UPDATE jobs SET state = 'queued', attempts = 0, free_attempts = 0, "
            "auth_refreshes = 0, next_attempt_at = $1, retried_at = $1, updated_at = $1, "
            "finished_at = NULL WHERE state = 'dead' "
            "AND coalesce(last_error, '') NOT LIKE '%needs reconciliation%' RETURNING route",
            {iso(now)});
        for (int i = 0; i < q.size(); ++i) routes->push_back(q.text(i, 0));
        r = {action_result::status::done, "queued", {}, std::int64_t(routes->size())};
      },
      std::move(g), [this, routes, done](action_result r) {
        if (r.what == action_result::status::done)
          for (const auto& route : *routes) count("dead", route, -1), count("queued", route, +1);
        done(std::move(r));
      });
}

void pg_store::purge_batch(sys_time cutoff, sys_time key_cutoff, std::vector<std::string> states,
                           int max_rows, std::function<void(action_result)> done) {
  std::vector<std::string> allowed;
  for (const auto& s : states)
    if (s == "succeeded" || s == "dead" || s == "cancelled") allowed.push_back(s);
  auto gone = std::make_shared<std::vector<std::pair<std::string, std::string>>>();
  submit_action(
      [cutoff, key_cutoff, max_rows, gone, allowed = text_array(allowed)](pg_connection& c,
                                                                          action_result& r) {
        gone->clear();
        c.run(purge_lock_sql);  // one daemon purges at a time
        auto q = c.run(
            "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE finished_at < $1 AND "
            "state = ANY($2::text[]) AND (idempotency_key IS NULL OR created_at < $4) "
            "LIMIT $3 FOR UPDATE SKIP LOCKED) RETURNING state, route",
            {iso(cutoff), allowed, std::to_string(max_rows), iso(key_cutoff)});
        for (int i = 0; i < q.size(); ++i) gone->emplace_back(q.text(i, 0), q.text(i, 1));
        r = {action_result::status::done, {}, {}, std::int64_t(gone->size())};
      },
      nullptr, [this, gone, done](action_result r) {
        if (r.what == action_result::status::done)
          for (const auto& [state, route] : *gone) count(state, route, -1);
        done(std::move(r));
      });
}

void pg_store::reclaim_space(int, std::function<void(action_result)> done) {
  // PostgreSQL's autovacuum makes deleted rows' space reusable; nothing to step through here.
  done({action_result::status::done, {}, {}, 0});
}

void pg_store::probe(gate g, std::function<void(std::string)> done) {
  if (!writer_) return done("read-only store");
  const bool write = !writer_->healthy();
  const bool taken = writer_->submit(
      [write](pg_connection& c) {
        if (!write) return void(c.run("SELECT 1"));
        c.run("INSERT INTO store_probe (id, filler) VALUES (1, decode(repeat('00', 8192), 'hex'))");
        c.run("DELETE FROM store_probe");
      },
      [done](std::exception_ptr e) { done(e ? exception_message(e) : std::string()); },
      pg_writer::how{.bounded = true, .g = std::move(g), .proof = write});
  if (!taken) done("the store's write queue is full");
}

int pg_store::requeue_delivering(sys_time now, bool refund) {
  if (!writer_ || slot_.empty()) return 0;
  int n = 0;
  writer_->run_sync([&](pg_connection& c) {
    // Only this daemon's slot: we hold its lock, so no live daemon is delivering these.
    auto q = c.run(
        "UPDATE jobs SET state = 'queued', lease_until = NULL, inflight_until = NULL, "
        "attempts = greatest(attempts - $2::int, 0), updated_at = $1 "
        "WHERE state = 'delivering' AND claimed_by = $3",
        {iso(now), refund ? "1" : "0", slot_});
    n = int(q.affected());
    c.run(
        "UPDATE jobs SET inflight_until = NULL WHERE claimed_by = $1 AND state = 'cancelled' "
        "AND inflight_until IS NOT NULL",
        {slot_});
  });
  writer_->run_sync([&](pg_connection& c) { recount(c); });
  return n;
}

void pg_store::close() {
  watcher_.reset();  // frees the slot: its session lock ends with the connection
  if (writer_) writer_->stop();
}

void pg_store::job(std::string id, std::function<void(read_result)> done) {
  const bool taken = reader_->post([id, done](pg_connection& c) {
    read_result r;
    try {
      auto q = c.run(std::string("SELECT ") + job_columns + " FROM jobs WHERE id = $1", {id});
      if (q.size()) {
        json j = row_json(q, 0, true);
        auto a = c.run(
            "SELECT n, resendd_ts(started_at) AS started_at, duration_ms, http_status, "
            "feishu_code, outcome, error, response FROM attempts WHERE job_id = $1 ORDER BY n",
            {id});
        j["attempt_log"] = json::array();
        for (int i = 0; i < a.size(); ++i) j["attempt_log"].push_back(row_json(a, i, false));
        r.value = std::move(j);
      }
    } catch (const std::exception& e) {
      r.error = e.what();
    }
    done(std::move(r));
  });
  if (!taken) done({std::nullopt, "too many reads waiting; try again"});
}

void pg_store::list(std::string state, int limit, std::function<void(read_result)> done) {
  const bool taken = reader_->post([state, limit, done](pg_connection& c) {
    read_result r;
    try {
      std::string sql = std::string("SELECT ") + job_columns + " FROM jobs";
      pg_rows q;
      if (state.empty())
        q = c.run(sql + " ORDER BY id DESC LIMIT $1", {std::to_string(limit)});
      else
        q = c.run(sql + " WHERE state = $1 ORDER BY created_at DESC, id DESC LIMIT $2",
                  {state, std::to_string(limit)});
      json out = json::array();
      for (int i = 0; i < q.size(); ++i) out.push_back(row_json(q, i, false));
      r.value = std::move(out);
    } catch (const std::exception& e) {
      r.error = e.what();
    }
    done(std::move(r));
  });
  if (!taken) done({std::nullopt, "too many reads waiting; try again"});
}

void pg_store::oldest_queued(std::function<void(read_result)> done) {
  const bool taken = reader_->post([done](pg_connection& c) {
    read_result r;
    try {
      auto q = c.run("SELECT resendd_ts(min(created_at)) FROM jobs WHERE state = 'queued'");
      r.value = q.size() && !q.null(0, 0) ? json(q.text(0, 0)) : json(nullptr);
    } catch (const std::exception& e) {
      r.error = e.what();
    }
    done(std::move(r));
  });
  if (!taken) done({std::nullopt, "too many reads waiting; try again"});
}

void pg_store::unalerted_dead(std::string alerts_route, sys_time since, int limit,
                              std::function<void(read_result)> done) {
  const bool taken = reader_->post([done, alerts_route, since, limit](pg_connection& c) {
    read_result r;
    try {
      // Once at start: dead jobs are few (retention deletes them) and read off the network thread.
      auto q = c.run(
          "SELECT j.id, j.route, j.location, coalesce(j.last_error, ''), j.request, j.attempts "
          "FROM jobs j WHERE j.state = 'dead' AND j.route <> $1 AND j.finished_at > $2 AND "
          "j.finished_at > coalesce((SELECT max(a.created_at) FROM jobs a WHERE a.route = $1 "
          "AND a.resource_key = 'alerts:' || j.route), '-infinity') "
          "ORDER BY j.finished_at LIMIT $3",
          {alerts_route, to_iso8601(since), std::to_string(limit)});
      auto rows = json::array();
      for (int i = 0; i < q.size(); ++i)
        rows.push_back({{"id", q.text(i, 0)},
                        {"route", q.text(i, 1)},
                        {"location", q.text(i, 2)},
                        {"last_error", q.text(i, 3)},
                        {"request", q.text(i, 4)},
                        {"attempts", std::stoi(q.text(i, 5))}});
      r.value = std::move(rows);
    } catch (const std::exception& e) {
      r.error = e.what();
    }
    done(std::move(r));
  });
  if (!taken) done({std::nullopt, "too many reads waiting; try again"});
}

}  // namespace resendd::store
