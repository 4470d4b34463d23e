#pragma once
// A thin layer over libpq for the PostgreSQL backend: one connection, statements prepared once
// per connection and run with text parameters, results read as text, errors thrown as pg_error
// with PostgreSQL's SQLSTATE. Not thread-safe: one connection belongs to one thread.
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

struct pg_conn;
struct pg_result;

namespace resendd::store {

struct pg_error : std::runtime_error {
  pg_error(const std::string& what, std::string state, bool connection_lost)
      : std::runtime_error(what), sqlstate(std::move(state)), lost(connection_lost) {}
  std::string sqlstate;  // "23505" unique violation, "40P01" deadlock, ... ("" = client side)
  bool lost;             // the connection is gone: reconnect before the next use
};

using pg_param = std::optional<std::string>;  // nullopt = SQL NULL

class pg_rows {
 public:
  pg_rows() = default;
  explicit pg_rows(pg_result* r);
  ~pg_rows();
  pg_rows(pg_rows&& o) noexcept : r_(o.r_) { o.r_ = nullptr; }
  pg_rows& operator=(pg_rows&& o) noexcept;
  pg_rows(const pg_rows&) = delete;
  pg_rows& operator=(const pg_rows&) = delete;

  int size() const;
  int columns() const;
  std::string name(int col) const;
  bool null(int row, int col) const;
  std::string text(int row, int col) const;  // "" for NULL
  std::optional<std::string> opt(int row, int col) const;
  std::int64_t integer(int row, int col) const;
  bool is_integer_column(int col) const;  // int2, int4, int8
  std::int64_t affected() const;          // rows an INSERT/UPDATE/DELETE changed

 private:
  pg_result* r_ = nullptr;
};

class pg_connection {
 public:
  // Connects (throws pg_error naming the masked URL on failure).
  explicit pg_connection(std::string url);
  ~pg_connection();
  pg_connection(const pg_connection&) = delete;
  pg_connection& operator=(const pg_connection&) = delete;

  // Runs `sql` (prepared on first use on this connection, by its text) with text parameters.
  pg_rows run(const std::string& sql, const std::vector<pg_param>& params = {});
  // Runs one or more statements without parameters (not prepared): BEGIN, COMMIT, DDL.
  void exec(const std::string& sql);
  // Runs a SET (or similar) now and again after every reconnect.
  void session(const std::string& sql);
  bool ok() const;
  // Connects again after a loss (prepared statements are forgotten). Throws on failure.
  void reset();
  int socket() const;
  // Reads what the server sent and returns the channels of notifications received.
  std::vector<std::string> notifications();
  const std::string& masked_url() const { return masked_; }

 private:
  [[noreturn]] void fail(pg_result* r, const std::string& context);
  std::string url_, masked_;
  std::vector<std::string> session_;
  pg_conn* c_ = nullptr;
  std::unordered_map<std::string, std::string> prepared_;  // sql -> statement name
};

}  // namespace resendd::store
