#include "store/migrations.h"

#include <SQLiteCpp/SQLiteCpp.h>

namespace resendd::store {

int schema_version(SQLite::Database& db) {
  if (!db.tableExists("schema_migrations")) return 0;
  return db.execAndGet("SELECT coalesce(max(version), 0) FROM schema_migrations").getInt();
}

int migrate(SQLite::Database& db, const std::string& now_iso) {
  db.exec(
      "CREATE TABLE IF NOT EXISTS schema_migrations ("
      " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)");
  const int have = schema_version(db);
  int applied = 0;
  for (const auto& m : embedded_migrations()) {
    if (m.version <= have) continue;
    SQLite::Transaction tx(db, SQLite::TransactionBehavior::IMMEDIATE);
    db.exec(m.sql);
    SQLite::Statement rec(
        db, "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)");
    rec.bind(1, m.version);
    rec.bind(2, m.name);
    rec.bind(3, now_iso);
    rec.exec();
    tx.commit();
    ++applied;
  }
  return applied;
}

}  // namespace resendd::store
