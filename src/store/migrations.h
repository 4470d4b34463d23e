#pragma once
// Schema migrations: the numbered files of migrations/, compiled into the binary, applied in
// order, each in its own transaction (or, when its first line is "-- resendd: outside-transaction",
// outside any, for statements such as VACUUM), recorded in table schema_migrations.
#include <string>
#include <vector>

namespace SQLite {
class Database;
}

namespace resendd::store {

struct migration {
  int version;
  const char* name;
  const char* sql;
};

const std::vector<migration>& embedded_migrations();     // migrations/*.sql (SQLite)
const std::vector<migration>& embedded_pg_migrations();  // migrations/postgres/*.sql

// Applies what is missing; returns how many were applied. Throws on failure (start-up only),
// and when the database has a migration newer than this binary knows (an older binary must not
// run on a newer schema).
int migrate(SQLite::Database& db, const std::string& now_iso);
// The highest applied version (0 for an empty database).
int schema_version(SQLite::Database& db);
// Throws unless the database is at exactly this binary's schema version (read-only users).
void check_schema(SQLite::Database& db);

}  // namespace resendd::store
