#pragma once
// Schema migrations: the numbered files of migrations/, compiled into the binary, applied in
// order, each in its own transaction, recorded in table schema_migrations.
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

const std::vector<migration>& embedded_migrations();

// Applies what is missing; returns how many were applied. Throws on failure (start-up only).
int migrate(SQLite::Database& db, const std::string& now_iso);
// The highest applied version (0 for an empty database).
int schema_version(SQLite::Database& db);

}  // namespace resendd::store
