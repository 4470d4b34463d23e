#include "store/migrations.h"

#include <SQLiteCpp/SQLiteCpp.h>

#include <string_view>

namespace resendd::store {

namespace {
int newest_known() {
  int v = 0;
  for (const auto& m : embedded_migrations()) v = std::max(v, m.version);
  return v;
}

void refuse_newer(int have) {
  if (have > newest_known())
    throw std::runtime_error("the database has schema version " + std::to_string(have) +
                             ", newer than this resendd knows (" + std::to_string(newest_known()) +
                             "): run the newer resendd, or restore a backup from before the "
                             "upgrade");
}

void record(SQLite::Database& db, const migration& m, const std::string& now_iso) {
  SQLite::Statement rec(
      db, "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)");
  rec.bind(1, m.version);
  rec.bind(2, m.name);
  rec.bind(3, now_iso);
  rec.exec();
}
}  // namespace

int schema_version(SQLite::Database& db) {
  if (!db.tableExists("schema_migrations")) return 0;
  return db.execAndGet("SELECT coalesce(max(version), 0) FROM schema_migrations").getInt();
}

void check_schema(SQLite::Database& db) {
  const int have = schema_version(db);
  refuse_newer(have);
  if (have < newest_known())
    throw std::runtime_error("the database has schema version " + std::to_string(have) +
                             "; run `resendd migrate` (or start the daemon) first");
}

int migrate(SQLite::Database& db, const std::string& now_iso) {
  db.exec(
      "CREATE TABLE IF NOT EXISTS schema_migrations ("
      " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)");
  const int have = schema_version(db);
  refuse_newer(have);
  int applied = 0;
  for (const auto& m : embedded_migrations()) {
    if (m.version <= have) continue;
    if (std::string_view(m.sql).starts_with("-- resendd: outside-transaction")) {
      // Idempotent statements only (a crash before the record runs them again).
      db.exec(m.sql);
      record(db, m, now_iso);
    } else {
      SQLite::Transaction tx(db, SQLite::TransactionBehavior::IMMEDIATE);
      db.exec(m.sql);
      record(db, m, now_iso);
      tx.commit();
    }
    ++applied;
  }
  return applied;
}

}  // namespace resendd::store
