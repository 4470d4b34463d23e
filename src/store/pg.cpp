#include "store/pg.h"

#include <libpq-fe.h>

#include <cstdlib>

#include "util/log.h"

namespace resendd::store {

pg_rows::pg_rows(pg_result* r) : r_(r) {}
pg_rows::~pg_rows() {
  if (r_) PQclear(r_);
}
pg_rows& pg_rows::operator=(pg_rows&& o) noexcept {
  if (this != &o) {
    if (r_) PQclear(r_);
    r_ = o.r_;
    o.r_ = nullptr;
  }
  return *this;
}
int pg_rows::size() const { return r_ ? PQntuples(r_) : 0; }
int pg_rows::columns() const { return r_ ? PQnfields(r_) : 0; }
std::string pg_rows::name(int col) const { return PQfname(r_, col); }
bool pg_rows::null(int row, int col) const { return PQgetisnull(r_, row, col) != 0; }
std::string pg_rows::text(int row, int col) const {
  return std::string(PQgetvalue(r_, row, col), std::size_t(PQgetlength(r_, row, col)));
}
std::optional<std::string> pg_rows::opt(int row, int col) const {
  if (null(row, col)) return std::nullopt;
  return text(row, col);
}
std::int64_t pg_rows::integer(int row, int col) const {
  return null(row, col) ? 0 : std::strtoll(PQgetvalue(r_, row, col), nullptr, 10);
}
bool pg_rows::is_integer_column(int col) const {
  const Oid t = PQftype(r_, col);
  return t == 20 || t == 21 || t == 23;  // int8, int2, int4
}
std::int64_t pg_rows::affected() const {
  const char* n = r_ ? PQcmdTuples(r_) : "";
  return *n ? std::strtoll(n, nullptr, 10) : 0;
}

pg_connection::pg_connection(std::string url) : url_(std::move(url)), masked_(mask_pg_url(url_)) {
  c_ = PQconnectdb(url_.c_str());
  if (!c_ || PQstatus(c_) != CONNECTION_OK) {
    std::string why = c_ ? PQerrorMessage(c_) : "out of memory";
    while (!why.empty() && (why.back() == '\n' || why.back() == ' ')) why.pop_back();
    if (c_) PQfinish(c_);
    c_ = nullptr;
    throw pg_error("postgres " + masked_ + ": " + mask_pg_url(why), "", true);
  }
  // NOTICEs ("already exists, skipping") are not errors: not printed on stderr.
  PQsetNoticeProcessor(c_, [](void*, const char*) {}, nullptr);
  // Times are passed and shown in UTC whatever the server's default.
  exec("SET TIME ZONE 'UTC'");
}

pg_connection::~pg_connection() {
  if (c_) PQfinish(c_);
}

bool pg_connection::ok() const { return c_ && PQstatus(c_) == CONNECTION_OK; }
int pg_connection::socket() const { return c_ ? PQsocket(c_) : -1; }

void pg_connection::reset() {
  prepared_.clear();
  if (c_) PQreset(c_);
  if (!ok()) {
    std::string why = c_ ? PQerrorMessage(c_) : "no connection";
    while (!why.empty() && (why.back() == '\n' || why.back() == ' ')) why.pop_back();
    throw pg_error("postgres " + masked_ + ": reconnect failed: " + mask_pg_url(why), "", true);
  }
  exec("SET TIME ZONE 'UTC'");
  for (const auto& s : session_) exec(s);
}

void pg_connection::session(const std::string& sql) {
  exec(sql);
  session_.push_back(sql);
}

void pg_connection::fail(pg_result* r, const std::string& context) {
  std::string msg = r ? PQresultErrorMessage(r) : "";
  if (msg.empty() && c_) msg = PQerrorMessage(c_);
  const char* st = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : nullptr;
  std::string state = st ? st : "";
  if (r) PQclear(r);
  while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.pop_back();
  const bool lost = !ok();
  if (lost) prepared_.clear();
  throw pg_error("postgres: " + context + msg, state, lost);
}

void pg_connection::exec(const std::string& sql) {
  if (!c_) throw pg_error("postgres: not connected", "", true);
  pg_result* r = PQexec(c_, sql.c_str());
  const auto st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
  if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) fail(r, "");
  PQclear(r);
}

pg_rows pg_connection::run(const std::string& sql, const std::vector<pg_param>& params) {
  if (!c_) throw pg_error("postgres: not connected", "", true);
  auto it = prepared_.find(sql);
  if (it == prepared_.end()) {
    const std::string name = "r" + std::to_string(prepared_.size() + 1);
    pg_result* p = PQprepare(c_, name.c_str(), sql.c_str(), int(params.size()), nullptr);
    if (!p || PQresultStatus(p) != PGRES_COMMAND_OK) fail(p, "");
    PQclear(p);
    it = prepared_.emplace(sql, name).first;
  }
  std::vector<const char*> values;
  values.reserve(params.size());
  for (const auto& p : params) values.push_back(p ? p->c_str() : nullptr);
  pg_result* r = PQexecPrepared(c_, it->second.c_str(), int(values.size()), values.data(), nullptr,
                                nullptr, 0);
  const auto st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
  if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) fail(r, "");
  return pg_rows(r);
}

std::vector<std::string> pg_connection::notifications() {
  std::vector<std::string> out;
  if (!c_) return out;
  if (!PQconsumeInput(c_)) fail(nullptr, "reading notifications: ");
  while (PGnotify* n = PQnotifies(c_)) {
    out.emplace_back(n->relname);
    PQfreemem(n);
  }
  return out;
}

}  // namespace resendd::store
