#pragma once
// The real resendd binary, run from a test: its own temp directory and config, its log captured
// line by line so tests can wait for what it says (events, with a deadline).
#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "support/temp_dir.h"

namespace resendd::test {

class daemon_process {
 public:
  // Writes `config_toml` to dir/resendd.toml and starts `resendd serve` in dir. Throws if it
  // does not say "listening on" within the deadline.
  // `wrapper`: a command the binary is run under (its path and arguments follow), e.g. unshare.
  daemon_process(const temp_dir& dir, std::string config_toml,
                 std::map<std::string, std::string> env = {},
                 std::vector<std::string> wrapper = {});
  ~daemon_process();
  daemon_process(const daemon_process&) = delete;
  daemon_process& operator=(const daemon_process&) = delete;

  void start();
  std::uint16_t port() const { return port_; }
  std::string db_path() const;
  // Waits until a log line (after line number `from`) contains `needle`.
  bool wait_log(const std::string& needle,
                std::chrono::milliseconds timeout = std::chrono::seconds(30), std::size_t from = 0);
  // Waits until `n` lines (after `from`) contain `needle`.
  bool wait_log_count(const std::string& needle, std::size_t n,
                      std::chrono::milliseconds timeout = std::chrono::seconds(30));
  std::size_t log_lines() const;
  std::string log() const;
  void kill9();
  int terminate();  // SIGTERM; returns the exit status
  void send_signal(int sig);
  int wait_exit();  // returns the exit status
  bool running() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }

 private:
  void read_loop(int fd);

  const temp_dir& dir_;
  std::map<std::string, std::string> env_;
  std::vector<std::string> wrapper_;
  pid_t pid_ = -1;
  std::uint16_t port_ = 0;
  mutable std::mutex mutex_;
  mutable std::condition_variable changed_;
  std::vector<std::string> lines_;
  std::thread reader_;
};

// Runs `resendd ARGS...` to completion (in dir); returns exit status and combined output.
struct command_result {
  int status;
  std::string output;
};
// `limit` > 0: a command still running after it is stopped with SIGTERM (its status then says so).
command_result run_resendd(const temp_dir& dir, const std::vector<std::string>& args,
                           const std::map<std::string, std::string>& env = {},
                           std::chrono::milliseconds limit = std::chrono::milliseconds(0));

// The backend the suite runs against: SQLite, or PostgreSQL when RESENDD_TEST_PG_FILE names a
// file holding a server's URL (ctest's "postgres." tests: scripts/pg_cluster.sh starts it).
bool on_postgres();
// The store of a test directory: the SQLite file, or a PostgreSQL database of its own (created
// on first use) whose URL the daemons and CLI runs of that directory get.
std::string store_url(const temp_dir& dir);

// A test of something only the SQLite backend has (the file, its lock, WAL, vacuum).
#define SQLITE_ONLY(why)                                                        \
  do {                                                                          \
    if (::resendd::test::on_postgres()) GTEST_SKIP() << "SQLite only: " << why; \
  } while (0)

// SQL for the milliseconds from time column `earlier` to `later`, in the backend's dialect;
// exact for the stored timestamps (whole milliseconds).
std::string sql_ms_between(const std::string& later, const std::string& earlier);

// Read-only queries on the daemon's database (a SQLite path or a postgresql:// URL).
std::vector<std::vector<std::string>> sql_rows(const std::string& db, const std::string& sql);
std::string sql_value(const std::string& db, const std::string& sql);

}  // namespace resendd::test
