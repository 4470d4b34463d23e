#include "store/sqlite_store.h"

#include <SQLiteCpp/SQLiteCpp.h>
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>
#include <unordered_map>

#include "store/migrations.h"
#include "store/wal_buffer.h"
#include "store/writer.h"
#include "util/errors.h"

namespace resendd::store {

using nlohmann::json;

// Prepared statements of one connection, parsed once and reset for every use.
// release() resets every statement handed out since the last call: a statement left stepped
// keeps a read snapshot open, and in WAL mode that stops every checkpoint (the log then grows
// without bound). The writer calls it after each request.
class statement_cache {
 public:
  explicit statement_cache(SQLite::Database& db) : db_(db) {}
  SQLite::Statement& operator()(const char* sql) {
    auto& s = cache_[sql];
    if (!s) s = std::make_unique<SQLite::Statement>(db_, sql);
    s->reset();
    s->clearBindings();
    used_.push_back(s.get());
    return *s;
  }
  void release() {
    for (auto* s : used_) s->tryReset();
    used_.clear();
  }

 private:
  SQLite::Database& db_;
  std::unordered_map<const char*, std::unique_ptr<SQLite::Statement>> cache_;
  std::vector<SQLite::Statement*> used_;
};

// The reader: one thread, one read-only connection, a bounded queue of reads.
class read_thread {
 public:
  explicit read_thread(std::unique_ptr<SQLite::Database> db)
      : db_(std::move(db)), thread_([this] { loop(); }) {}
  ~read_thread() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    thread_.join();
  }
  bool post(std::function<void(SQLite::Database&)> fn) {
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
      std::function<void(SQLite::Database&)> fn;
      {
        std::unique_lock lock(mutex_);
        wake_.wait(lock, [&] { return stopping_ || !pending_.empty(); });
        if (pending_.empty()) return;
        fn = std::move(pending_.front());
        pending_.pop_front();
      }
      fn(*db_);
    }
  }
  std::unique_ptr<SQLite::Database> db_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::function<void(SQLite::Database&)>> pending_;
  bool stopping_ = false;
  std::thread thread_;
};

namespace {

template <class T>
void bind_opt(SQLite::Statement& s, int i, const std::optional<T>& v) {
  if (v)
    s.bind(i, *v);
  else
    s.bind(i);
}

void bind_text_or_null(SQLite::Statement& s, int i, const std::string& v) {
  if (v.empty())
    s.bind(i);
  else
    s.bind(i, v);
}

// Steps a statement to its end (RETURNING statements must finish before the transaction ends).
void drain(SQLite::Statement& q) {
  while (!q.isDone() && q.executeStep()) {
  }
}

std::optional<std::string> opt_text(const SQLite::Column& c) {
  if (c.isNull()) return std::nullopt;
  return c.getString();
}

json column_value(const SQLite::Column& c) {
  if (c.isNull()) return nullptr;
  if (c.isInteger()) return c.getInt64();
  return c.getString();
}

// The file is private to the service user: create it 0600 before SQLite opens it (SQLite gives
// its -wal and -shm files the same mode).
void prepare_file(const std::string& path) {
  const std::filesystem::path p(path);
  if (p.has_parent_path()) std::filesystem::create_directories(p.parent_path());
  const int fd = ::open(path.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0) throw std::runtime_error("open " + path + ": " + std::strerror(errno));
  ::close(fd);
}

// Once per process, before its first connection: SQLite keeps no memory statistics (nothing
// here reads them), so its every allocation and free skips a global mutex. perf put SQLite's
// mutexes at a tenth of the writer thread's time during delivery.
void configure_sqlite() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0) != SQLITE_OK)
      spdlog::debug("store: SQLite was initialized already; memory statistics stay on");
  });
}

std::unique_ptr<SQLite::Database> open_writer(const std::string& path, millis busy,
                                              std::int64_t max_size) {
  // One thread at a time uses this connection (the store's constructor, then the writer thread
  // alone), so it takes no mutex of its own on every call.
  // Its write-ahead log is written a transaction's frames at a time (store/wal_buffer.h).
  auto db = std::make_unique<SQLite::Database>(
      path, SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE | SQLite::OPEN_NOMUTEX, 0,
      wal_buffer_vfs());
  // SQLite's small allocations (statements' cells, the in-memory statement journal's pieces)
  // come from a per-connection pool before malloc: 1,000 slots of 1,200 bytes (1.2 MB) instead
  // of the default 100. Delivery of 200,000 jobs, alternating 3 runs each: the writer's CPU -5 %,
  // 5,430 -> 5,672 jobs/s (medians).
  if (sqlite3_db_config(db->getHandle(), SQLITE_DBCONFIG_LOOKASIDE, nullptr, 1200, 1000) !=
      SQLITE_OK)
    spdlog::debug("store: SQLite's lookaside pool stays at its default");
  // Only takes effect on a new, empty file; migration 3 converts older files.
  db->exec("PRAGMA auto_vacuum = INCREMENTAL");
  db->exec("PRAGMA journal_mode = WAL");
  // FULL: in WAL mode each commit is fsync'd, so a completed write survives power loss.
  db->exec("PRAGMA synchronous = FULL");
  db->exec("PRAGMA foreign_keys = ON");
  db->exec("PRAGMA busy_timeout = " + std::to_string(busy.count()));
  // Checkpoints run beside the writer and between its transactions (store/checkpointer.h), never
  // inside a commit.
  db->exec("PRAGMA wal_autocheckpoint = 0");
  // When the WAL starts over after a burst, it is cut back to this size.
  db->exec("PRAGMA journal_size_limit = 67108864");
  // Every write here runs in a savepoint or a statement that may roll back, and SQLite copies
  // each page it is about to change into a statement journal first. Past 64 KiB that journal
  // went to a temporary file: a claim or a batch of finishes paid a pwrite per page and the file
  // system's page cache. In memory it is a memcpy. What bounds it is the pages one request
  // touches; the one request that could touch every page, retrying all dead jobs, runs in
  // batches (retry_dead). Temporary tables (an IN list, the rows of a RETURNING) follow the same
  // setting; no writer statement makes a large one.
  db->exec("PRAGMA temp_store = MEMORY");
  // A succeeded job's row is written again with its credentials masked (queue/dispatcher.cpp);
  // the bytes of the row it replaces must not stay in the page's free space. Debian's SQLite is
  // built with this on, upstream's default is off: said here, not left to the build. It costs
  // nothing measurable (delivery of the 200,000 preload, 3 alternating runs: 7.2-8.0k jobs/s
  // with it on and off).
  db->exec("PRAGMA secure_delete = ON");
  if (max_size > 0) {
    const auto page = db->execAndGet("PRAGMA page_size").getInt64();
    db->exec("PRAGMA max_page_count = " + std::to_string(std::max<std::int64_t>(1, max_size / page)));
  }
  return db;
}

// The checkpointer's connection: read-write, because a checkpoint writes the database file, but
// it never runs a statement that writes.
std::unique_ptr<SQLite::Database> open_checkpointer(const std::string& path) {
  auto db = std::make_unique<SQLite::Database>(path, SQLite::OPEN_READWRITE | SQLite::OPEN_NOMUTEX);
  db->exec("PRAGMA wal_autocheckpoint = 0");
  // A read opens the log on this connection; a checkpoint before that would do nothing.
  db->execAndGet("SELECT count(*) FROM sqlite_master");
  return db;
}

std::unique_ptr<SQLite::Database> open_reader(const std::string& path, millis busy) {
  auto db = std::make_unique<SQLite::Database>(path, SQLite::OPEN_READONLY);
  db->exec("PRAGMA busy_timeout = " + std::to_string(busy.count()));
  return db;
}

constexpr const char* job_columns =
    "id, state, route, method, location, request, idempotency_key, client_token, resource_key, "
    "attempts, free_attempts, auth_refreshes, claim_no, next_attempt_at, lease_until, "
    "created_at, updated_at, finished_at, retried_at, last_status, last_error, last_response";

json job_row(SQLite::Statement& q, bool with_request) {
  json j = json::object();
  for (int i = 0; i < q.getColumnCount(); ++i) {
    const std::string name = q.getColumnName(i);
    if (name == "request") {
      if (with_request) j[name] = json::parse(q.getColumn(i).getString(), nullptr, false);
      continue;
    }
    j[name] = column_value(q.getColumn(i));
  }
  return j;
}

// --- the claim, in steps (see claim() for the order) ---

// A key the claim looked into: its head as key_heads had it, and its first queued jobs.
struct key_visit {
  std::string key;
  std::string head_at;
  std::vector<std::pair<std::string, std::string>> queued;  // next_attempt_at, id
};

constexpr const char* reap_sql =
    "UPDATE jobs SET state = 'queued', lease_until = NULL, inflight_until = NULL, "
    "next_attempt_at = ?1, updated_at = ?1 WHERE state = 'delivering' AND lease_until <= ?1 "
    "RETURNING route";
constexpr const char* busy_sql =
    "SELECT route, resource_key FROM jobs INDEXED BY jobs_leases WHERE state = 'delivering'";
constexpr const char* due_unkeyed_sql =
    "SELECT id, next_attempt_at FROM jobs INDEXED BY jobs_route_due "
    "WHERE state = 'queued' AND resource_key IS NULL AND route = ?1 AND next_attempt_at <= ?2 "
    "ORDER BY next_attempt_at, id LIMIT ?3";
constexpr const char* due_keys_sql =
    "SELECT resource_key, head_at FROM key_heads INDEXED BY key_heads_due "
    "WHERE route = ?1 AND head_at <= ?2 ORDER BY head_at LIMIT ?3";
constexpr const char* key_gap_sql = "SELECT not_before FROM key_gaps WHERE resource_key = ?1";
// A key's queued jobs in due order, due or not: the claim takes the due ones it has room for,
// and the first one it leaves is the key's new head.
constexpr const char* queued_of_key_sql =
    "SELECT id, next_attempt_at FROM jobs INDEXED BY jobs_key_due "
    "WHERE state = 'queued' AND resource_key = ?1 AND route = ?2 "
    "ORDER BY next_attempt_at, id LIMIT ?3";
constexpr const char* move_head_sql =
    "UPDATE key_heads SET head_at = ?3 WHERE resource_key = ?1 AND route = ?2";
constexpr const char* drop_head_sql =
    "DELETE FROM key_heads WHERE resource_key = ?1 AND route = ?2";
constexpr const char* take_sql =
    "UPDATE jobs SET state = 'delivering', lease_until = ?2, inflight_until = ?2, "
    "claim_no = claim_no + 1, attempts = attempts + 1, updated_at = ?3 "
    "WHERE id IN (SELECT value FROM json_each(?1)) AND state = 'queued' "
    "RETURNING id, route, location, method, request, client_token, resource_key, claim_no, "
    "attempts, free_attempts, auth_refreshes, coalesce(retried_at, created_at)";
constexpr const char* next_unkeyed_sql =
    "SELECT next_attempt_at FROM jobs INDEXED BY jobs_route_due "
    "WHERE state = 'queued' AND resource_key IS NULL AND route = ?1 AND next_attempt_at > ?2 "
    "ORDER BY next_attempt_at LIMIT 1";
constexpr const char* next_key_sql =
    "SELECT head_at FROM key_heads INDEXED BY key_heads_due WHERE route = ?1 AND head_at > ?2 "
    "ORDER BY head_at LIMIT 1";
constexpr const char* next_gap_sql = "SELECT min(not_before) FROM key_gaps WHERE not_before > ?1";
constexpr const char* next_lease_sql =
    "SELECT lease_until FROM jobs INDEXED BY jobs_leases WHERE state = 'delivering' "
    "ORDER BY lease_until LIMIT 1";

std::optional<sys_time> earliest(std::optional<sys_time> a, SQLite::Statement& q) {
  if (!q.executeStep() || q.getColumn(0).isNull()) return a;
  auto t = from_iso8601(q.getColumn(0).getString());
  q.reset();
  if (!t) return a;
  return a ? std::min(*a, *t) : *t;
}

}  // namespace

sqlite_store::sqlite_store(const sqlite_options& opts, sys_time now) : opts_(opts) {
  try {
    configure_sqlite();
    if (opts_.read_only) {
      if (!std::filesystem::exists(opts_.path))
        throw std::runtime_error("no database at " + opts_.path +
                                 " (give --config, or run where the daemon keeps it)");
      auto db = open_reader(opts_.path, opts_.busy_timeout);
      check_schema(*db);
      recount(*db);
      reader_ = std::make_unique<read_thread>(std::move(db));
      return;
    }
    prepare_file(opts_.path);
    auto db = open_writer(opts_.path, opts_.busy_timeout, opts_.max_size);
    const int applied = migrate(*db, to_iso8601(now));
    if (applied) spdlog::info("store: applied {} migration(s) to {}", applied, opts_.path);
    recount(*db);
    wstmts_ = std::make_unique<statement_cache>(*db);
    reader_ = std::make_unique<read_thread>(open_reader(opts_.path, opts_.busy_timeout));
    writer_ = std::make_unique<writer>(std::move(db), open_checkpointer(opts_.path), opts_.path,
                                       opts_.max_pending_writes);
    writer_->after_each([this] { wstmts_->release(); });
  } catch (const SQLite::Exception& e) {
    throw std::runtime_error("store " + opts_.path + ": " + e.what());
  }
}

sqlite_store::~sqlite_store() {
  if (writer_) writer_->stop();
  wstmts_.reset();  // statements before the connection they belong to
  writer_.reset();
  reader_.reset();
}

void sqlite_store::recount(SQLite::Database& db) {
  const auto before = counter_.changes();
  // Three index-only reads in one snapshot: every job per route (jobs_created, written once per
  // job), those in flight (jobs_leases) and those finished, per state (jobs_finished_state);
  // the rest of a route is queued. No index that a claim moves is needed for this.
  const bool own = sqlite3_get_autocommit(db.getHandle()) != 0;
  if (own) db.exec("BEGIN");
  try {
    std::map<std::string, std::int64_t, std::less<>> all;  // per route
    job_counts fresh;
    const auto tally = [&](const char* sql, auto&& add) {
      SQLite::Statement q(db, sql);
      while (q.executeStep()) {
        const auto c = q.getColumn(0);
        add(std::string_view(c.getText(), std::size_t(c.getBytes())), q);
      }
    };
    tally("SELECT route FROM jobs INDEXED BY jobs_created", [&](std::string_view r, auto&) {
      if (auto it = all.find(r); it != all.end())
        ++it->second;
      else
        all.emplace(std::string(r), 1);
    });
    tally("SELECT route FROM jobs INDEXED BY jobs_leases WHERE state = 'delivering'",
          [&](std::string_view r, auto&) {
            ++fresh[{"delivering", std::string(r)}];
          });
    tally(
        "SELECT route, state FROM jobs INDEXED BY jobs_finished_state "
        "WHERE state NOT IN ('queued', 'delivering')",
        [&](std::string_view r, SQLite::Statement& q) {
          ++fresh[{q.getColumn(1).getString(), std::string(r)}];
        });
    for (auto& [route, n] : all) {
      for (const auto& [k, m] : fresh)
        if (k.second == route && k.first != "queued") n -= m;
      if (n > 0) fresh[{"queued", route}] = n;
    }
    if (own) db.exec("COMMIT");
    counter_.replace(std::move(fresh), before);
  } catch (...) {
    if (own && sqlite3_get_autocommit(db.getHandle()) == 0) db.exec("ROLLBACK");
    throw;
  }
}

job_counts sqlite_store::counts() const { return counter_.counts(); }

bool sqlite_store::healthy() const { return writer_ && writer_->healthy(); }
std::string sqlite_store::health_detail() const {
  return writer_ ? writer_->health_detail() : "read-only";
}
std::uint64_t sqlite_store::commits() const { return writer_ ? writer_->batches() : 0; }

std::uint64_t sqlite_store::checkpoints() const { return writer_ ? writer_->checkpoints() : 0; }

void sqlite_store::enqueue(new_job job, sys_time now, gate g,
                           std::function<void(enqueue_result)> done) {
  if (!writer_) return done({enqueue_result::status::failed, {}, {}, "read-only store"});
  auto result = std::make_shared<enqueue_result>();
  const std::string route = job.route;
  const bool taken = writer_->submit(
      [this, job = std::move(job), now, result](SQLite::Database&) {
        auto& st = *wstmts_;
        if (job.idempotency_key) {
          // The key is bound to the request: the same key with another body is a conflict.
          auto& q = st("SELECT id, state, request FROM jobs WHERE idempotency_key = ?1");
          q.bind(1, *job.idempotency_key);
          if (q.executeStep()) {
            *result = {same_request(q.getColumn(2).getString(), job.request)
                           ? enqueue_result::status::existing
                           : enqueue_result::status::conflict,
                       q.getColumn(0).getString(), q.getColumn(1).getString(), {}};
            drain(q);
            return;
          }
        }
        // Counts what is committed; a batch may overshoot by its own size (at most 512).
        if (counter_.active() >= opts_.max_queue_depth) {
          result->what = enqueue_result::status::full;
          return;
        }
        auto& ins =
            st("INSERT INTO jobs (id, state, route, method, location, request, idempotency_key, "
               "client_token, resource_key, next_attempt_at, created_at, updated_at) "
               "VALUES (?1, 'queued', ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9, ?9)");
        ins.bind(1, job.id);
        ins.bind(2, job.route);
        ins.bind(3, job.method);
        ins.bind(4, job.location);
        ins.bind(5, job.request);
        bind_opt(ins, 6, job.idempotency_key);
        bind_opt(ins, 7, job.client_token);
        bind_opt(ins, 8, job.resource_key);
        ins.bind(9, to_iso8601(now));
        ins.exec();
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
      writer::how{.k = writer::kind::bounded, .g = std::move(g), .proof = true,
                  .one_statement = true});
  if (!taken) done({enqueue_result::status::busy, {}, {}, "the store's write queue is full"});
}

void sqlite_store::claim(claim_request req, std::function<void(claim_result)> done) {
  if (!writer_) return done({{}, {}, 0, "read-only store"});
  auto out = std::make_shared<claim_result>();
  add_unnamed_routes(req, counts());
  auto moves = std::make_shared<std::vector<std::pair<std::string, std::string>>>();  // route, to
  const bool taken = writer_->submit(
      [this, req = std::move(req), out, moves](SQLite::Database&) {
        auto& st = *wstmts_;
        const std::string now = to_iso8601(req.now);
        const std::string lease = to_iso8601(req.now + req.lease);
        // 1. Leases that expired (a finish that never committed, a stuck delivery) are taken
        //    back: those jobs are queued again and no longer count as busy.
        {
          auto& q = st(reap_sql);
          q.bind(1, now);
          while (q.executeStep()) {
            moves->emplace_back(q.getColumn(0).getString(), "reaped");
            ++out->reclaimed;
          }
        }
        // 2. What is in flight, per route and per key (only rows in flight are read).
        std::map<std::string, int> route_busy, key_busy;
        {
          auto& q = st(busy_sql);
          while (q.executeStep()) {
            ++route_busy[q.getColumn(0).getString()];
            if (!q.getColumn(1).isNull()) ++key_busy[q.getColumn(1).getString()];
          }
        }
        const int keys_busy = int(key_busy.size());
        std::vector<std::string> taken;  // ids, this claim
        bool stale_heads = false;
        // 3. Each route, starting at a rotating one, gets candidates up to its own free room:
        //    its earliest due unkeyed jobs and the earliest due jobs of its due keys that are
        //    neither busy nor in their gap. Cost: a few index probes per candidate. The keys it
        //    took from get their new head (migration 7), one row update per key.
        int remaining = req.limit;
        const std::size_t n_routes = req.routes.size();
        for (std::size_t i = 0; i < n_routes && remaining > 0; ++i) {
          const auto& rl = req.routes[(req.rotation + i) % n_routes];
          const int room = std::min(rl.concurrency - route_busy[rl.route], remaining);
          if (room <= 0) continue;
          std::vector<std::pair<std::string, std::string>> cand;  // next_attempt_at, id
          {
            auto& q = st(due_unkeyed_sql);
            q.bind(1, rl.route);
            q.bind(2, now);
            q.bind(3, room);
            while (q.executeStep())
              cand.emplace_back(q.getColumn(1).getString(), q.getColumn(0).getString());
          }
          std::vector<std::pair<std::string, std::string>> keys;  // key, head_at
          const int keys_asked = room + keys_busy + 64;
          {
            auto& q = st(due_keys_sql);
            q.bind(1, rl.route);
            q.bind(2, now);
            q.bind(3, keys_asked);
            while (q.executeStep())
              keys.emplace_back(q.getColumn(0).getString(), q.getColumn(1).getString());
          }
          std::vector<key_visit> visits;
          int keyed = 0;
          for (auto& [k, head_at] : keys) {
            if (keyed >= room) break;
            const int free_k = rl.key_concurrency - key_busy[k];
            if (free_k <= 0) continue;
            auto& g = st(key_gap_sql);
            g.bind(1, k);
            const bool gapped = g.executeStep() && g.getColumn(0).getString() > now;
            g.reset();
            if (gapped) continue;
            const int want = std::min(free_k, room - keyed);
            auto& v = visits.emplace_back(key_visit{std::move(k), std::move(head_at), {}});
            auto& q = st(queued_of_key_sql);
            q.bind(1, v.key);
            q.bind(2, rl.route);
            q.bind(3, want + 1);  // one more than it may take: the next head
            int due = 0;
            while (q.executeStep()) {
              auto& row =
                  v.queued.emplace_back(q.getColumn(1).getString(), q.getColumn(0).getString());
              if (due < want && row.first <= now) {
                cand.push_back(row);
                ++due;
              }
            }
            keyed += due;
            // Its head was early (a job that left the queue without a claim): nothing was due.
            if (due == 0) stale_heads = true;
          }
          std::sort(cand.begin(), cand.end());
          if (int(cand.size()) > room) cand.resize(std::size_t(room));
          // One statement takes them all: SQLite journals each page it changes once per
          // statement, and a statement per job paid that for every job.
          std::vector<claimed_job> got;
          if (!cand.empty()) {
            json ids = json::array();
            for (const auto& c : cand) ids.push_back(c.second);
            auto& q = st(take_sql);
            q.bind(1, ids.dump());
            q.bind(2, lease);
            q.bind(3, now);
            while (q.executeStep()) {
              claimed_job& j = got.emplace_back();
              j.id = q.getColumn(0).getString();
              j.route = q.getColumn(1).getString();
              j.location = q.getColumn(2).getString();
              j.method = q.getColumn(3).getString();
              j.request = q.getColumn(4).getString();
              j.client_token = opt_text(q.getColumn(5));
              j.resource_key = opt_text(q.getColumn(6));
              j.claim_no = q.getColumn(7).getInt64();
              j.attempts = q.getColumn(8).getInt();
              j.free_attempts = q.getColumn(9).getInt();
              j.auth_refreshes = q.getColumn(10).getInt();
              j.age_start = from_iso8601(q.getColumn(11).getString()).value_or(req.now);
            }
          }
          // In due order, as the candidates were (RETURNING's order is SQLite's).
          std::unordered_map<std::string_view, claimed_job*> by_id;
          for (auto& j : got) by_id.emplace(j.id, &j);
          for (const auto& c : cand) {
            const auto it = by_id.find(c.second);
            if (it == by_id.end()) continue;
            claimed_job& j = *it->second;
            by_id.erase(it);  // its key views j.id, which moves below
            if (j.resource_key) ++key_busy[*j.resource_key];
            moves->emplace_back(j.route, "claimed");
            taken.push_back(j.id);
            out->jobs.push_back(std::move(j));
            --remaining;
          }
          // Each visited key's head becomes its first queued job that was not taken.
          std::sort(taken.begin(), taken.end());
          for (const auto& v : visits) {
            const auto left = std::find_if(v.queued.begin(), v.queued.end(), [&](const auto& r) {
              return !std::binary_search(taken.begin(), taken.end(), r.second);
            });
            if (left == v.queued.end()) {  // it read fewer than it asked for: none is left
              auto& d = st(drop_head_sql);
              d.bind(1, v.key);
              d.bind(2, rl.route);
              d.exec();
            } else if (left->first != v.head_at) {
              auto& m = st(move_head_sql);
              m.bind(1, v.key);
              m.bind(2, rl.route);
              m.bind(3, left->first);
              m.exec();
            }
          }
        }
        // 4. When to look again: the earliest future due time per route, key gap or lease.
        std::optional<sys_time> next;
        for (const auto& rl : req.routes) {
          auto& a = st(next_unkeyed_sql);
          a.bind(1, rl.route);
          a.bind(2, now);
          next = earliest(next, a);
          auto& b = st(next_key_sql);
          b.bind(1, rl.route);
          b.bind(2, now);
          next = earliest(next, b);
        }
        auto& g = st(next_gap_sql);
        g.bind(1, now);
        next = earliest(next, g);
        next = earliest(next, st(next_lease_sql));
        // Early heads that were put right may have hidden due keys behind them: look again now.
        if (stale_heads && remaining > 0) next = req.now;
        out->next_due = next;
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
      writer::how{.k = writer::kind::essential, .fsync = false});
  if (!taken) done({{}, {}, 0, "store is shutting down"});
}

void sqlite_store::finish(job_finish f, sys_time now, std::function<void(finish_result)> done) {
  if (!writer_) return done({0, false, {}, "read-only store"});
  auto out = std::make_shared<finish_result>();
  auto moved = std::make_shared<std::pair<std::string, std::string>>();  // from, to states
  const std::string route = f.route;
  const bool taken = writer_->submit(
      [this, f = std::move(f), now, out, moved](SQLite::Database&) {
        auto& st = *wstmts_;
        const auto& a = f.attempt;
        // The try happened whatever the job's state is now: it always goes in the attempt log.
        auto& ins =
            st("INSERT INTO attempts (job_id, n, started_at, duration_ms, http_status, "
               "feishu_code, outcome, error, response) VALUES (?1, (SELECT coalesce(max(n), 0) + "
               "1 FROM attempts WHERE job_id = ?1), ?2, ?3, ?4, ?5, ?6, ?7, ?8) RETURNING n");
        ins.bind(1, f.id);
        ins.bind(2, to_iso8601(a.started_at));
        ins.bind(3, std::int64_t(a.duration.count()));
        bind_opt(ins, 4, a.http_status);
        bind_opt(ins, 5, a.feishu_code);
        ins.bind(6, a.outcome);
        bind_text_or_null(ins, 7, a.error);
        bind_text_or_null(ins, 8, a.response);
        out->attempt_no = ins.executeStep() ? ins.getColumn(0).getInt() : 0;
        drain(ins);
        const bool final_state = f.next_state != "queued";
        // Fenced: only the delivery of the latest claim, while the job is still delivering.
        auto& up =
            st("UPDATE jobs SET state = ?2, lease_until = NULL, inflight_until = NULL, "
               "next_attempt_at = ?3, attempts = max(attempts - ?4, 0), "
               "free_attempts = free_attempts + ?4, auth_refreshes = auth_refreshes + ?5, "
               "updated_at = ?6, finished_at = ?7, last_status = ?8, last_error = ?9, "
               "last_response = ?10, request = coalesce(?12, request) "
               "WHERE id = ?1 AND claim_no = ?11 AND state = 'delivering'");
        up.bind(1, f.id);
        up.bind(2, f.next_state);
        up.bind(3, to_iso8601(f.next_attempt_at));
        up.bind(4, f.counted ? 0 : 1);
        up.bind(5, f.auth_refresh ? 1 : 0);
        up.bind(6, to_iso8601(now));
        bind_text_or_null(up, 7, final_state ? to_iso8601(now) : std::string());
        bind_opt(up, 8, a.http_status);
        bind_text_or_null(up, 9, f.last_error);
        bind_text_or_null(up, 10, a.response);
        up.bind(11, f.claim_no);
        bind_opt(up, 12, f.scrubbed_request);
        if (up.exec() == 1) {
          out->applied = true;
          out->state = f.next_state;
          *moved = {"delivering", f.next_state};
          if (f.resource_key && f.key_min_gap.count() > 0) {
            auto& gap = st(
                "INSERT INTO key_gaps (resource_key, not_before) VALUES (?1, ?2) "
                "ON CONFLICT (resource_key) DO UPDATE SET not_before = excluded.not_before");
            gap.bind(1, *f.resource_key);
            gap.bind(2, to_iso8601(now + f.key_min_gap));
            gap.exec();
          }
          return;
        }
        // Cancelled while this delivery was in flight: the delivery has ended now (so the job may
        // be retried), and if it succeeded the job is succeeded — the write landed.
        auto& late =
            st("UPDATE jobs SET inflight_until = NULL, updated_at = ?2, "
               "state = CASE WHEN ?3 THEN 'succeeded' ELSE state END, "
               "last_error = CASE WHEN ?3 THEN 'cancelled while a delivery was in flight; it "
               "succeeded' ELSE last_error END, last_status = ?4, last_response = ?5 "
               "WHERE id = ?1 AND claim_no = ?6 AND state = 'cancelled' RETURNING state");
        late.bind(1, f.id);
        late.bind(2, to_iso8601(now));
        late.bind(3, f.next_state == "succeeded" ? 1 : 0);
        bind_opt(late, 4, a.http_status);
        bind_text_or_null(late, 5, a.response);
        late.bind(6, f.claim_no);
        if (late.executeStep()) {
          out->state = late.getColumn(0).getString();
          if (out->state == "succeeded") *moved = {"cancelled", "succeeded"};
        }
        drain(late);
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
      writer::how{.k = writer::kind::essential, .fsync = false});
  if (!taken) done({0, false, {}, "store is shutting down"});
}

bool sqlite_store::submit_action(std::function<void(SQLite::Database&, action_result&)> work,
                                 gate g, std::function<void(action_result)> done, bool essential) {
  if (!writer_) {
    done({action_result::status::failed, {}, "read-only store", 0});
    return false;
  }
  auto out = std::make_shared<action_result>();
  const bool taken =
      writer_->submit([work = std::move(work), out](SQLite::Database& db) { work(db, *out); },
                      [out, done](std::exception_ptr e) {
                        if (e) *out = {action_result::status::failed, {}, exception_message(e), 0};
                        done(*out);
                      },
                      writer::how{.k = essential ? writer::kind::essential : writer::kind::bounded,
                                  .g = std::move(g)});
  if (!taken)
    done({action_result::status::failed,
          {},
          essential ? "store is shutting down" : "the store's write queue is full; try again",
          0});
  return taken;
}

void sqlite_store::cancel(std::string id, sys_time now, gate g,
                          std::function<void(action_result)> done) {
  auto moved = std::make_shared<std::pair<std::string, std::string>>();  // from state, route
  submit_action(
      [this, id, now, moved](SQLite::Database&, action_result& r) {
        auto& st = *wstmts_;
        auto& q = st("SELECT state, route FROM jobs WHERE id = ?1");
        q.bind(1, id);
        if (!q.executeStep()) return void(r.what = action_result::status::not_found);
        const std::string state = q.getColumn(0).getString(), route = q.getColumn(1).getString();
        if (auto no = cancel_refused(state)) return void(r = *no);
        // inflight_until stays: a delivery in flight keeps the job from being retried until it
        // has ended (see finish).
        auto& up = st(
            "UPDATE jobs SET state = 'cancelled', lease_until = NULL, updated_at = ?2, "
            "finished_at = ?2 WHERE id = ?1");
        up.bind(1, id);
        up.bind(2, to_iso8601(now));
        up.exec();
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

void sqlite_store::retry(std::string id, sys_time now, bool force, gate g,
                         std::function<void(action_result)> done) {
  auto moved = std::make_shared<std::pair<std::string, std::string>>();
  submit_action(
      [this, id, now, force, moved](SQLite::Database&, action_result& r) {
        auto& st = *wstmts_;
        auto& q = st(
            "SELECT state, route, inflight_until, coalesce(last_error, '') FROM jobs WHERE id = ?1");
        q.bind(1, id);
        if (!q.executeStep()) return void(r.what = action_result::status::not_found);
        const std::string state = q.getColumn(0).getString(), route = q.getColumn(1).getString();
        const std::string inflight = q.getColumn(2).isNull() ? "" : q.getColumn(2).getString();
        const std::string last_error = q.getColumn(3).getString();
        const bool in_flight = !inflight.empty() && inflight > to_iso8601(now);
        if (auto no = retry_refused(state, in_flight ? inflight : "", last_error, force))
          return void(r = *no);
        // A fresh start: a new attempt budget and a new max_age window from now.
        auto& up = st(
            "UPDATE jobs SET state = 'queued', attempts = 0, free_attempts = 0, "
            "auth_refreshes = 0, next_attempt_at = ?2, retried_at = ?2, updated_at = ?2, "
            "finished_at = NULL, inflight_until = NULL WHERE id = ?1");
        up.bind(1, id);
        up.bind(2, to_iso8601(now));
        up.exec();
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

// In transactions of opts_.retry_batch jobs, each taking the next batch: one statement over
// every dead job would hold the writer, and intake with it, for as long as it runs, and keep a
// copy of every page it changed in memory (the statement journal, see open_writer).
void sqlite_store::retry_dead(sys_time now, gate g, std::function<void(action_result)> done) {
  retry_dead_from(now, std::move(g), 0, std::move(done));
}

void sqlite_store::retry_dead_from(sys_time now, gate g, std::int64_t before,
                                   std::function<void(action_result)> done) {
  auto routes = std::make_shared<std::vector<std::string>>();
  submit_action(
      [this, now, routes](SQLite::Database&, action_result& r) {
        auto& up = (*wstmts_)(
            "UPDATE jobs SET state = 'queued', attempts = 0, free_attempts = 0, "
            "auth_refreshes = 0, next_attempt_at = ?1, retried_at = ?1, updated_at = ?1, "
            "finished_at = NULL WHERE id IN (SELECT id FROM jobs INDEXED BY jobs_finished_state "
            "WHERE state = 'dead' AND state NOT IN ('queued', 'delivering') AND "
            "coalesce(last_error, '') NOT LIKE '%needs reconciliation%' "
            "LIMIT ?2) RETURNING route");
        up.bind(1, to_iso8601(now));
        up.bind(2, opts_.retry_batch);
        while (up.executeStep()) routes->push_back(up.getColumn(0).getString());
        r = {action_result::status::done, "queued", {}, std::int64_t(routes->size())};
      },
      std::move(g),
      [this, now, before, routes, done](action_result r) {
        if (r.what != action_result::status::done) {
          if (before > 0) {
            r.message += " (" + std::to_string(before) + " job(s) were queued before it failed)";
            r.count = before;
          }
          return done(std::move(r));
        }
        for (const auto& route : *routes) count("dead", route, -1), count("queued", route, +1);
        if (r.count == opts_.retry_batch)
          return retry_dead_from(now, nullptr, before + r.count, done);
        r.count += before;
        done(std::move(r));
      },
      // Once started, the batches that follow are not refused for a full queue.
      before > 0);
}

void sqlite_store::purge_batch(sys_time cutoff, sys_time key_cutoff,
                               std::vector<std::string> states, int max_rows,
                               std::function<void(action_result)> done) {
  json allowed = json::array();
  for (const auto& s : states)
    if (s == "succeeded" || s == "dead" || s == "cancelled") allowed.push_back(s);
  auto gone = std::make_shared<std::vector<std::pair<std::string, std::string>>>();
  submit_action(
      [this, cutoff, key_cutoff, max_rows, gone, allowed = allowed.dump()](SQLite::Database&,
                                                                             action_result& r) {
        auto& del = (*wstmts_)(
            "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs INDEXED BY jobs_finished "
            "WHERE finished_at < ?1 AND state IN (SELECT value FROM json_each(?2)) "
            "AND (idempotency_key IS NULL OR created_at < ?4) LIMIT ?3) "
            "RETURNING state, route");
        del.bind(1, to_iso8601(cutoff));
        del.bind(2, allowed);
        del.bind(3, max_rows);
        del.bind(4, to_iso8601(key_cutoff));
        while (del.executeStep())
          gone->emplace_back(del.getColumn(0).getString(), del.getColumn(1).getString());
        r = {action_result::status::done, {}, {}, std::int64_t(gone->size())};
      },
      nullptr, [this, gone, done](action_result r) {
        if (r.what == action_result::status::done)
          for (const auto& [state, route] : *gone) count(state, route, -1);
        done(std::move(r));
      });
}

void sqlite_store::reclaim_space(int max_pages, std::function<void(action_result)> done) {
  if (!writer_) return done({action_result::status::failed, {}, "read-only store", 0});
  auto out = std::make_shared<action_result>();
  const bool taken = writer_->submit(
      [w = writer_.get(), max_pages, out](SQLite::Database& db) {
        // Outside a transaction: each step commits on its own, and the checkpoint that follows
        // the last one is what shrinks the file (WAL mode truncates at checkpoint).
        db.exec("PRAGMA incremental_vacuum(" + std::to_string(max_pages) + ")");
        const auto left = db.execAndGet("PRAGMA freelist_count").getInt64();
        if (left == 0) w->checkpoint(SQLITE_CHECKPOINT_TRUNCATE);
        *out = {action_result::status::done, {}, {}, left};
      },
      [out, done](std::exception_ptr e) {
        if (e) *out = {action_result::status::failed, {}, exception_message(e), 0};
        done(*out);
      },
      writer::how{.k = writer::kind::alone});
  if (!taken) done({action_result::status::failed, {}, "store is shutting down", 0});
}

void sqlite_store::probe(gate g, std::function<void(std::string)> done) {
  if (!writer_) return done("read-only store");
  const bool write = !writer_->healthy();
  const bool taken = writer_->submit(
      [write](SQLite::Database& db) {
        if (!write) return;  // the transaction itself proves the writer takes the lock
        // After a failure: a real write, allocating pages as a job does, undone in the same
        // transaction.
        db.exec("INSERT INTO store_probe (id, filler) VALUES (1, zeroblob(8192))");
        db.exec("DELETE FROM store_probe");
      },
      [done](std::exception_ptr e) { done(e ? exception_message(e) : std::string()); },
      writer::how{.k = writer::kind::bounded, .g = std::move(g), .proof = write});
  if (!taken) done("the store's write queue is full");
}

int sqlite_store::requeue_delivering(sys_time now, bool refund) {
  std::vector<std::string> routes;  // one per job queued again
  writer_->run_sync([&](SQLite::Database& db) {
    SQLite::Statement q(db,
                        "UPDATE jobs SET state = 'queued', lease_until = NULL, "
                        "inflight_until = NULL, attempts = max(attempts - ?2, 0), updated_at = ?1 "
                        "WHERE state = 'delivering' RETURNING route");
    q.bind(1, to_iso8601(now));
    q.bind(2, refund ? 1 : 0);
    while (q.executeStep()) routes.push_back(q.getColumn(0).getString());
    // No delivery is in flight now (this process holds the database alone): deliveries cut off
    // after a cancel have ended too. Only a cancelled job can still hold one: a claim sets
    // inflight_until, and every outcome, expired lease, retry and the statement above clear it;
    // a cancel keeps it. So this reads the cancelled jobs alone, not every row (0.4–0.6 s at 1M
    // jobs, at every start).
    db.exec(
        "UPDATE jobs SET inflight_until = NULL WHERE state = 'cancelled' "
        "AND state NOT IN ('queued', 'delivering') AND inflight_until IS NOT NULL");
  });
  for (const auto& r : routes) {
    count("delivering", r, -1);
    count("queued", r, +1);
  }
  return int(routes.size());
}

void sqlite_store::close() {
  if (!writer_) return;
  try {
    // Everything into the main file, so that copying resendd.db alone is a whole backup.
    writer_->run_sync(
        [w = writer_.get()](SQLite::Database&) { w->checkpoint(SQLITE_CHECKPOINT_TRUNCATE); },
        writer::kind::alone);
  } catch (const std::exception& e) {
    spdlog::warn("store: final checkpoint failed: {}", e.what());
  }
  writer_->stop();
}

void sqlite_store::job(std::string id, std::function<void(read_result)> done) {
  const bool taken = reader_->post([id, done](SQLite::Database& db) {
    read_result r;
    try {
      SQLite::Statement q(db, std::string("SELECT ") + job_columns + " FROM jobs WHERE id = ?");
      q.bind(1, id);
      if (q.executeStep()) {
        json j = job_row(q, true);
        SQLite::Statement a(
            db,
            "SELECT n, started_at, duration_ms, http_status, feishu_code, outcome, error, "
            "response FROM attempts WHERE job_id = ? ORDER BY n");
        a.bind(1, id);
        j["attempt_log"] = json::array();
        while (a.executeStep()) j["attempt_log"].push_back(job_row(a, false));
        r.value = std::move(j);
      }
    } catch (const std::exception& e) {
      r.error = e.what();
    }
    done(std::move(r));
  });
  if (!taken) done({std::nullopt, "too many reads waiting; try again"});
}

void sqlite_store::list(std::string state, int limit, std::function<void(read_result)> done) {
  const bool taken = reader_->post([state, limit, done](SQLite::Database& db) {
    read_result r;
    try {
      std::string sql = std::string("SELECT ") + job_columns + " FROM jobs";
      // Newest first: across all by id (time-ordered); finished jobs from the index of finished
      // jobs by (state, created_at), which the query may use because it repeats its condition;
      // queued and delivering ones by walking jobs by creation time.
      const bool finished = state != "queued" && state != "delivering";
      if (state.empty())
        sql += " ORDER BY id DESC LIMIT ?2";
      else if (finished)
        sql +=
            " INDEXED BY jobs_finished_state WHERE state = ?1 AND state NOT IN ('queued', "
            "'delivering') ORDER BY created_at DESC, id DESC LIMIT ?2";
      else
        sql +=
            " INDEXED BY jobs_created WHERE state = ?1 ORDER BY created_at DESC, id DESC LIMIT ?2";
      SQLite::Statement q(db, sql);
      if (!state.empty()) q.bind(1, state);
      q.bind(2, limit);
      json out = json::array();
      while (q.executeStep()) out.push_back(job_row(q, false));
      r.value = std::move(out);
    } catch (const std::exception& e) {
      r.error = e.what();
    }
    done(std::move(r));
  });
  if (!taken) done({std::nullopt, "too many reads waiting; try again"});
}

void sqlite_store::oldest_queued(std::function<void(read_result)> done) {
  // None queued (the common case): nothing to read.
  bool any = false;
  for (const auto& [k, n] : counts()) any = any || (k.first == "queued" && n > 0);
  if (!any) return done({json(nullptr), {}});
  const bool taken = reader_->post([done](SQLite::Database& db) {
    read_result r;
    try {
      // Jobs by creation time, oldest first, up to the first queued one: it skips the finished
      // and delivering jobs older than that (no index ordered by creation holds queued jobs
      // alone: a claim would move every job's entry in it).
      SQLite::Statement q(db,
                          "SELECT created_at FROM jobs INDEXED BY jobs_created "
                          "WHERE state = 'queued' ORDER BY created_at LIMIT 1");
      r.value = q.executeStep() ? json(q.getColumn(0).getString()) : json(nullptr);
    } catch (const std::exception& e) {
      r.error = e.what();
    }
    done(std::move(r));
  });
  if (!taken) done({std::nullopt, "too many reads waiting; try again"});
}

void sqlite_store::unalerted_dead(std::string alerts_route, sys_time since, int limit,
                                  std::function<void(read_result)> done) {
  const bool taken = reader_->post([done, alerts_route, since, limit](SQLite::Database& db) {
    read_result r;
    try {
      // Once at start: dead jobs are few (retention deletes them) and read off the network thread.
      SQLite::Statement q(
          db,
          "SELECT j.id, j.route, j.location, coalesce(j.last_error, ''), j.request, j.attempts "
          "FROM jobs j "
          "WHERE j.state = 'dead' AND j.route <> ?1 AND j.finished_at > ?2 AND j.finished_at > "
          "coalesce((SELECT max(a.created_at) FROM jobs a WHERE a.route = ?1 AND "
          "a.resource_key = 'alerts:' || j.route), '') ORDER BY j.finished_at LIMIT ?3");
      q.bind(1, alerts_route);
      q.bind(2, to_iso8601(since));
      q.bind(3, limit);
      auto rows = json::array();
      while (q.executeStep())
        rows.push_back({{"id", q.getColumn(0).getString()},
                        {"route", q.getColumn(1).getString()},
                        {"location", q.getColumn(2).getString()},
                        {"last_error", q.getColumn(3).getString()},
                        {"request", q.getColumn(4).getString()},
                        {"attempts", q.getColumn(5).getInt()}});
      r.value = std::move(rows);
    } catch (const std::exception& e) {
      r.error = e.what();
    }
    done(std::move(r));
  });
  if (!taken) done({std::nullopt, "too many reads waiting; try again"});
}

}  // namespace resendd::store
