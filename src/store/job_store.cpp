#include "store/job_store.h"

#include <SQLiteCpp/SQLiteCpp.h>
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <future>
#include <nlohmann/json.hpp>

#include "store/migrations.h"
#include "store/writer.h"

namespace resendd::store {
namespace {

using nlohmann::json;

// NULL when absent: optional values, and text where "" means "none".
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

std::unique_ptr<SQLite::Database> open_writer(const std::string& path) {
  auto db = std::make_unique<SQLite::Database>(path, SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE);
  db->exec("PRAGMA journal_mode = WAL");
  // FULL: in WAL mode each commit is fsync'd, so a completed write survives power loss.
  db->exec("PRAGMA synchronous = FULL");
  db->exec("PRAGMA foreign_keys = ON");
  db->exec("PRAGMA busy_timeout = 5000");
  return db;
}

// The claim, built so that its cost does not grow with the backlog:
// - `keys` lists the resource keys that have queued jobs with a loose index scan (one index
//   probe per key), and `keyed` takes the earliest due job of each key out of its gap;
// - `unkeyed` takes the earliest due jobs without a key, a bounded window (?5);
// - `cand` drops keys and routes at their limits and ranks per route, so one claim never
//   exceeds a route's concurrency. A key yields one job per claim; the dispatcher claims again
//   while claims return jobs, so key_concurrency > 1 fills up over a few rounds.
constexpr const char* claim_sql = R"sql(
WITH RECURSIVE
lim(route, conc, key_conc) AS (
  SELECT key, json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?3)
),
busy_route(route, n) AS (
  SELECT route, count(*) FROM jobs WHERE state = 'delivering' GROUP BY route
),
busy_key(resource_key, n) AS (
  SELECT resource_key, count(*) FROM jobs
  WHERE state = 'delivering' AND resource_key IS NOT NULL GROUP BY resource_key
),
keys(k) AS (
  SELECT (SELECT min(resource_key) FROM jobs INDEXED BY jobs_key_due
          WHERE state = 'queued' AND resource_key IS NOT NULL)
  UNION ALL
  SELECT (SELECT min(resource_key) FROM jobs INDEXED BY jobs_key_due
          WHERE state = 'queued' AND resource_key IS NOT NULL AND resource_key > keys.k)
  FROM keys WHERE keys.k IS NOT NULL
),
keyed(id) AS (
  SELECT (SELECT j.id FROM jobs j INDEXED BY jobs_key_due
          WHERE j.state = 'queued' AND j.resource_key IS NOT NULL AND j.resource_key = keys.k
            AND j.next_attempt_at <= ?1
          ORDER BY j.next_attempt_at, j.id LIMIT 1)
  FROM keys
  WHERE keys.k IS NOT NULL
    AND NOT EXISTS (SELECT 1 FROM key_gaps g WHERE g.resource_key = keys.k AND g.not_before > ?1)
),
unkeyed(id) AS (
  SELECT id FROM jobs INDEXED BY jobs_due_unkeyed
  WHERE state = 'queued' AND resource_key IS NULL AND next_attempt_at <= ?1
  ORDER BY next_attempt_at, id LIMIT ?5
),
cand AS (
  SELECT j.id, j.next_attempt_at,
         coalesce(l.conc, 1) - coalesce(br.n, 0) AS route_room,
         row_number() OVER (PARTITION BY j.route ORDER BY j.next_attempt_at, j.id) AS route_rn
  FROM jobs j
  LEFT JOIN lim l ON l.route = j.route
  LEFT JOIN busy_route br ON br.route = j.route
  LEFT JOIN busy_key bk ON bk.resource_key = j.resource_key
  WHERE j.id IN (SELECT id FROM keyed WHERE id IS NOT NULL UNION ALL SELECT id FROM unkeyed)
    AND (j.resource_key IS NULL OR coalesce(bk.n, 0) < coalesce(l.key_conc, 1))
)
UPDATE jobs SET state = 'delivering', lease_until = ?2, updated_at = ?1
WHERE id IN (SELECT id FROM cand WHERE route_rn <= route_room
             ORDER BY next_attempt_at, id LIMIT ?4)
RETURNING id, route, location, method, request, client_token, resource_key,
          attempts, free_attempts, auth_refreshes, created_at
)sql";

constexpr const char* job_columns =
    "id, state, route, method, location, request, idempotency_key, client_token, resource_key, "
    "attempts, free_attempts, auth_refreshes, next_attempt_at, lease_until, created_at, "
    "updated_at, finished_at, last_status, last_error, last_response";

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

}  // namespace

job_store::job_store(const std::string& path, std::int64_t max_queue_depth, sys_time now)
    : path_(path), max_queue_depth_(max_queue_depth) {
  try {
    prepare_file(path);
    auto db = open_writer(path);
    const int applied = migrate(*db, to_iso8601(now));
    if (applied) spdlog::info("store: applied {} migration(s) to {}", applied, path);
    active_ = db->execAndGet("SELECT count(*) FROM jobs WHERE state IN ('queued', 'delivering')")
                  .getInt64();
    reader_ = open_read_connection();
    writer_ = std::make_unique<writer>(std::move(db));
  } catch (const SQLite::Exception& e) {
    throw std::runtime_error("store " + path + ": " + e.what());
  }
}

job_store::~job_store() {
  if (writer_) writer_->stop();
}

std::unique_ptr<SQLite::Database> job_store::open_read_connection() {
  auto db = std::make_unique<SQLite::Database>(path_, SQLite::OPEN_READONLY);
  db->exec("PRAGMA busy_timeout = 5000");
  return db;
}

std::size_t job_store::batches() const { return writer_->batches(); }

void job_store::enqueue(new_job job, sys_time now, std::function<void(enqueue_result)> done) {
  auto result = std::make_shared<enqueue_result>();
  writer_->submit(
      [this, job = std::move(job), now, result](SQLite::Database& db) {
        if (job.idempotency_key) {
          SQLite::Statement q(db, "SELECT id, state FROM jobs WHERE idempotency_key = ?");
          q.bind(1, *job.idempotency_key);
          if (q.executeStep()) {
            *result = {enqueue_result::status::existing,
                       q.getColumn(0).getString(),
                       q.getColumn(1).getString(),
                       {}};
            return;
          }
        }
        if (active_.load() >= max_queue_depth_) {
          result->what = enqueue_result::status::full;
          return;
        }
        SQLite::Statement ins(
            db,
            "INSERT INTO jobs (id, state, route, method, location, request, idempotency_key, "
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
        ++active_;
        *result = {enqueue_result::status::queued, job.id, "queued", {}};
      },
      [this, result, done = std::move(done)](std::exception_ptr e) {
        if (e) {
          // The insert was rolled back (alone or with its batch): undo its count.
          if (result->what == enqueue_result::status::queued) --active_;
          result->what = enqueue_result::status::failed;
          try {
            std::rethrow_exception(e);
          } catch (const std::exception& ex) {
            result->error = ex.what();
          } catch (...) {
            result->error = "unknown error";
          }
        }
        done(*result);
      });
}

void job_store::claim(sys_time now, millis lease, int limit, std::vector<route_limits> limits,
                      std::function<void(std::vector<claimed_job>)> done) {
  auto out = std::make_shared<std::vector<claimed_job>>();
  json lim = json::object();
  for (const auto& l : limits) lim[l.route] = {l.concurrency, l.key_concurrency};
  writer_->submit(
      [out, now, lease, limit, lim = lim.dump()](SQLite::Database& db) {
        SQLite::Statement q(db, claim_sql);
        q.bind(1, to_iso8601(now));
        q.bind(2, to_iso8601(now + lease));
        q.bind(3, lim);
        q.bind(4, limit);
        q.bind(5, limit * 8 + 64);  // candidate window
        while (q.executeStep()) {
          claimed_job j;
          j.id = q.getColumn(0).getString();
          j.route = q.getColumn(1).getString();
          j.location = q.getColumn(2).getString();
          j.method = q.getColumn(3).getString();
          j.request = q.getColumn(4).getString();
          j.client_token = opt_text(q.getColumn(5));
          j.resource_key = opt_text(q.getColumn(6));
          j.attempts = q.getColumn(7).getInt();
          j.free_attempts = q.getColumn(8).getInt();
          j.auth_refreshes = q.getColumn(9).getInt();
          j.created_at = from_iso8601(q.getColumn(10).getString()).value_or(now);
          out->push_back(std::move(j));
        }
      },
      [out, done = std::move(done)](std::exception_ptr e) {
        if (e) {
          spdlog::error("store: claim failed");
          out->clear();
        }
        done(std::move(*out));
      });
}

void job_store::finish(job_finish f, sys_time now, std::function<void(int)> done) {
  auto finished = std::make_shared<int>(0);
  writer_->submit(
      [this, f = std::move(f), now, finished](SQLite::Database& db) {
        const auto& a = f.attempt;
        SQLite::Statement ins(
            db,
            "INSERT INTO attempts (job_id, n, started_at, duration_ms, http_status, feishu_code, "
            "outcome, error, response) VALUES (?1, (SELECT coalesce(max(n), 0) + 1 FROM attempts "
            "WHERE job_id = ?1), ?2, ?3, ?4, ?5, ?6, ?7, ?8) RETURNING n");
        ins.bind(1, f.id);
        ins.bind(2, to_iso8601(a.started_at));
        ins.bind(3, std::int64_t(a.duration.count()));
        bind_opt(ins, 4, a.http_status);
        bind_opt(ins, 5, a.feishu_code);
        ins.bind(6, a.outcome);
        bind_text_or_null(ins, 7, a.error);
        bind_text_or_null(ins, 8, a.response);
        const int n = ins.executeStep() ? ins.getColumn(0).getInt() : 0;
        const bool final_state = f.next_state != "queued";
        SQLite::Statement up(
            db,
            "UPDATE jobs SET state = ?2, lease_until = NULL, next_attempt_at = ?3, "
            "attempts = attempts + ?4, free_attempts = free_attempts + ?5, "
            "auth_refreshes = auth_refreshes + ?6, updated_at = ?7, finished_at = ?8, "
            "last_status = ?9, last_error = ?10, last_response = ?11 "
            "WHERE id = ?1 AND state = 'delivering'");
        up.bind(1, f.id);
        up.bind(2, f.next_state);
        up.bind(3, to_iso8601(f.next_attempt_at));
        up.bind(4, f.counted ? 1 : 0);
        up.bind(5, f.counted ? 0 : 1);
        up.bind(6, f.auth_refresh ? 1 : 0);
        up.bind(7, to_iso8601(now));
        bind_text_or_null(up, 8, final_state ? to_iso8601(now) : std::string());
        bind_opt(up, 9, a.http_status);
        bind_text_or_null(up, 10, f.last_error);
        bind_text_or_null(up, 11, a.response);
        const bool changed = up.exec() == 1;
        if (changed && final_state) --active_;
        if (f.resource_key && f.key_min_gap.count() > 0) {
          SQLite::Statement gap(
              db,
              "INSERT INTO key_gaps (resource_key, not_before) VALUES (?1, ?2) "
              "ON CONFLICT (resource_key) DO UPDATE SET not_before = excluded.not_before");
          gap.bind(1, *f.resource_key);
          gap.bind(2, to_iso8601(now + f.key_min_gap));
          gap.exec();
        }
        *finished = n;
      },
      [finished, done = std::move(done)](std::exception_ptr e) {
        if (e) spdlog::error("store: recording an attempt failed");
        done(e ? 0 : *finished);
      });
}

int job_store::requeue_delivering(sys_time now) {
  int n = 0;
  writer_->run_sync([&](SQLite::Database& db) {
    SQLite::Statement q(db,
                        "UPDATE jobs SET state = 'queued', lease_until = NULL, updated_at = ?1 "
                        "WHERE state = 'delivering'");
    q.bind(1, to_iso8601(now));
    n = q.exec();
  });
  return n;
}

bool job_store::retry(const std::string& id, sys_time now) {
  bool ok = false;
  writer_->run_sync([&](SQLite::Database& db) {
    SQLite::Statement q(
        db,
        "UPDATE jobs SET state = 'queued', attempts = 0, free_attempts = 0, auth_refreshes = 0, "
        "next_attempt_at = ?2, created_at = created_at, updated_at = ?2, finished_at = NULL "
        "WHERE id = ?1 AND state IN ('dead', 'cancelled')");
    q.bind(1, id);
    q.bind(2, to_iso8601(now));
    ok = q.exec() == 1;
    if (ok) ++active_;
  });
  return ok;
}

int job_store::retry_dead(sys_time now) {
  int n = 0;
  writer_->run_sync([&](SQLite::Database& db) {
    SQLite::Statement q(
        db,
        "UPDATE jobs SET state = 'queued', attempts = 0, free_attempts = 0, auth_refreshes = 0, "
        "next_attempt_at = ?1, updated_at = ?1, finished_at = NULL WHERE state = 'dead'");
    q.bind(1, to_iso8601(now));
    n = q.exec();
    active_ += n;
  });
  return n;
}

bool job_store::cancel(const std::string& id, sys_time now) {
  bool ok = false;
  writer_->run_sync([&](SQLite::Database& db) {
    SQLite::Statement q(db,
                        "UPDATE jobs SET state = 'cancelled', lease_until = NULL, updated_at = ?2, "
                        "finished_at = ?2 WHERE id = ?1 AND state IN ('queued', 'delivering')");
    q.bind(1, id);
    q.bind(2, to_iso8601(now));
    ok = q.exec() == 1;
    if (ok) --active_;
  });
  return ok;
}

int job_store::purge_finished_before(sys_time cutoff) {
  int n = 0;
  writer_->run_sync([&](SQLite::Database& db) {
    SQLite::Statement q(db,
                        "DELETE FROM jobs WHERE state IN ('succeeded', 'dead', 'cancelled') AND "
                        "coalesce(finished_at, updated_at) < ?1");
    q.bind(1, to_iso8601(cutoff));
    n = q.exec();
  });
  return n;
}

std::optional<json> job_store::job(const std::string& id, bool with_attempts) {
  std::lock_guard lock(read_mutex_);
  SQLite::Statement q(*reader_, std::string("SELECT ") + job_columns + " FROM jobs WHERE id = ?");
  q.bind(1, id);
  if (!q.executeStep()) return std::nullopt;
  json j = job_row(q, true);
  if (with_attempts) {
    SQLite::Statement a(
        *reader_,
        "SELECT n, started_at, duration_ms, http_status, feishu_code, outcome, error, response "
        "FROM attempts WHERE job_id = ? ORDER BY n");
    a.bind(1, id);
    j["attempt_log"] = json::array();
    while (a.executeStep()) j["attempt_log"].push_back(job_row(a, false));
  }
  return j;
}

json job_store::list(const std::string& state, int limit) {
  std::lock_guard lock(read_mutex_);
  std::string sql = std::string("SELECT ") + job_columns + " FROM jobs";
  if (!state.empty()) sql += " WHERE state = ?1";
  sql += " ORDER BY created_at DESC, id DESC LIMIT ?2";
  SQLite::Statement q(*reader_, sql);
  if (!state.empty()) q.bind(1, state);
  q.bind(2, limit);
  json out = json::array();
  while (q.executeStep()) out.push_back(job_row(q, false));
  return out;
}

std::optional<sys_time> job_store::next_wakeup(sys_time now) {
  std::lock_guard lock(read_mutex_);
  SQLite::Statement q(
      *reader_,
      "SELECT min(t) FROM (SELECT min(next_attempt_at) AS t FROM jobs INDEXED BY jobs_due "
      "WHERE state = 'queued' AND next_attempt_at > ?1 UNION ALL SELECT min(not_before) FROM "
      "key_gaps "
      "WHERE not_before > ?1)");
  q.bind(1, to_iso8601(now));
  if (!q.executeStep() || q.getColumn(0).isNull()) return std::nullopt;
  return from_iso8601(q.getColumn(0).getString());
}

json job_store::counts() {
  std::lock_guard lock(read_mutex_);
  json out = {{"queued", 0}, {"delivering", 0}, {"succeeded", 0}, {"dead", 0}, {"cancelled", 0}};
  SQLite::Statement q(*reader_, "SELECT state, count(*) FROM jobs GROUP BY state");
  while (q.executeStep()) out[q.getColumn(0).getString()] = q.getColumn(1).getInt64();
  return out;
}

bool job_store::writable() {
  try {
    writer_->run_sync([](SQLite::Database& db) { db.exec("SELECT 1"); });
    return true;
  } catch (...) {
    return false;
  }
}

}  // namespace resendd::store
