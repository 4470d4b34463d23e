#include "support/daemon.h"

#include <SQLiteCpp/SQLiteCpp.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <functional>
#include <mutex>
#include <regex>
#include <set>
#include <stdexcept>

#include "store/pg.h"

extern char** environ;

namespace resendd::test {

std::optional<std::string> pg_server() {
  const char* file = std::getenv("RESENDD_TEST_PG_FILE");
  if (!file || !*file) return std::nullopt;
  std::ifstream in(file);
  std::string url;
  if (!(in >> url)) throw std::runtime_error(std::string("no PostgreSQL URL in ") + file);
  return url;
}

bool on_postgres() { return pg_server().has_value(); }

std::string store_url(const temp_dir& dir) {
  static std::mutex m;
  static std::set<std::string> made;
  const auto server = pg_server();
  if (!server) return dir.file("var/resendd.db");
  char name[32];
  std::snprintf(name, sizeof name, "t_%016zx", std::hash<std::string>{}(dir.path().string()));
  std::lock_guard lock(m);
  if (!made.count(name)) {
    store::pg_connection c(*server + "/postgres");
    try {
      c.exec(std::string("CREATE DATABASE ") + name);
    } catch (const store::pg_error& e) {
      if (e.sqlstate != "42P04") throw;  // exists already
    }
    made.insert(name);
  }
  return *server + "/" + name;
}

std::string sql_ms_between(const std::string& later, const std::string& earlier) {
  if (on_postgres()) return "(extract(epoch from (" + later + " - " + earlier + ")) * 1000)";
  // julianday() is a double near 2.46 million days, good to ~0.05 ms: exactly 2 s reads
  // 1999.989. The columns hold whole milliseconds, so the nearest whole one is the exact answer.
  return "round((julianday(" + later + ") - julianday(" + earlier + ")) * 86400000)";
}

namespace {

// fork + exec of the resendd binary in `dir` with stdout+stderr to a pipe; returns the read end.
// `wrapper`, if any, comes first (the binary's path and arguments follow it).
pid_t spawn(const temp_dir& dir, const std::vector<std::string>& args,
            const std::map<std::string, std::string>& env, int& read_fd,
            const std::vector<std::string>& wrapper = {}) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe failed");
  std::vector<std::string> argv_s = wrapper;
  argv_s.push_back(RESENDD_BINARY);
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  // Everything the child needs is built before fork: after it, only async-signal-safe calls.
  std::map<std::string, std::string> merged;
  for (char** e = environ; *e; ++e) {
    std::string kv(*e);
    const auto eq = kv.find('=');
    if (eq != std::string::npos) merged[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  // The backend under test: PostgreSQL when the suite runs against a server (one database per
  // test directory), unless the test chose its own.
  if (on_postgres() && !env.count("RESENDD_STORE_BACKEND")) {
    merged["RESENDD_STORE_BACKEND"] = "postgres";
    merged["RESENDD_STORE_URL"] = store_url(dir);
  }
  for (const auto& [k, v] : env) merged[k] = v;
  std::vector<std::string> env_s;
  for (const auto& [k, v] : merged) env_s.push_back(k + "=" + v);
  std::vector<char*> argv, envp;
  for (auto& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  for (auto& e : env_s) envp.push_back(e.data());
  envp.push_back(nullptr);
  const std::string cwd = dir.path().string();
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    ::dup2(fds[1], 1);
    ::dup2(fds[1], 2);
    if (::chdir(cwd.c_str()) != 0) ::_exit(126);
    ::execve(argv[0], argv.data(), envp.data());
    ::_exit(127);
  }
  ::close(fds[1]);
  read_fd = fds[0];
  return pid;
}

}  // namespace

daemon_process::daemon_process(const temp_dir& dir, std::string config_toml,
                               std::map<std::string, std::string> env,
                               std::vector<std::string> wrapper)
    : dir_(dir), env_(std::move(env)), wrapper_(std::move(wrapper)) {
  dir.write("resendd.toml", config_toml);
  start();
}

daemon_process::~daemon_process() {
  if (pid_ > 0) kill9();
  if (reader_.joinable()) reader_.join();
}

std::string daemon_process::db_path() const { return store_url(dir_); }

void daemon_process::start() {
  if (reader_.joinable()) reader_.join();
  const std::size_t from = log_lines();
  int fd = -1;
  pid_ = spawn(dir_, {"serve", "--config", dir_.file("resendd.toml")}, env_, fd, wrapper_);
  reader_ = std::thread([this, fd] { read_loop(fd); });
  if (!wait_log("listening on", std::chrono::seconds(30), from))
    throw std::runtime_error("resendd did not start:\n" + log());
  std::lock_guard lock(mutex_);
  static const std::regex listening(R"(listening on [^ ]*:(\d+))");
  for (std::size_t i = from; i < lines_.size(); ++i) {
    std::smatch m;
    if (std::regex_search(lines_[i], m, listening)) port_ = std::uint16_t(std::stoi(m[1]));
  }
}

void daemon_process::read_loop(int fd) {
  std::string partial;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) break;
    partial.append(buf, std::size_t(n));
    std::size_t nl;
    while ((nl = partial.find('\n')) != std::string::npos) {
      {
        std::lock_guard lock(mutex_);
        lines_.push_back(partial.substr(0, nl));
      }
      partial.erase(0, nl + 1);
      changed_.notify_all();
    }
  }
  ::close(fd);
  {
    std::lock_guard lock(mutex_);
    if (!partial.empty()) lines_.push_back(partial);
    lines_.push_back("<exited>");
  }
  changed_.notify_all();
}

bool daemon_process::wait_log(const std::string& needle, std::chrono::milliseconds timeout,
                              std::size_t from) {
  std::unique_lock lock(mutex_);
  return changed_.wait_for(lock, timeout, [&] {
    for (std::size_t i = from; i < lines_.size(); ++i)
      if (lines_[i].find(needle) != std::string::npos) return true;
    return false;
  });
}

bool daemon_process::wait_log_count(const std::string& needle, std::size_t n,
                                    std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  return changed_.wait_for(lock, timeout, [&] {
    std::size_t c = 0;
    for (const auto& l : lines_) c += l.find(needle) != std::string::npos;
    return c >= n;
  });
}

std::size_t daemon_process::log_lines() const {
  std::lock_guard lock(mutex_);
  return lines_.size();
}

std::string daemon_process::log() const {
  std::lock_guard lock(mutex_);
  std::string out;
  for (const auto& l : lines_) out += l + "\n";
  return out;
}

int daemon_process::wait_exit() {
  int status = 0;
  ::waitpid(pid_, &status, 0);
  pid_ = -1;
  if (reader_.joinable()) reader_.join();
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

void daemon_process::kill9() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  wait_exit();
}

void daemon_process::send_signal(int sig) {
  if (pid_ > 0) ::kill(pid_, sig);
}

int daemon_process::terminate() {
  if (pid_ <= 0) return -1;
  ::kill(pid_, SIGTERM);
  return wait_exit();
}

command_result run_resendd(const temp_dir& dir, const std::vector<std::string>& args,
                           const std::map<std::string, std::string>& env,
                           std::chrono::milliseconds limit) {
  int fd = -1;
  const pid_t pid = spawn(dir, args, env, fd);
  std::string out;
  char buf[4096];
  const auto deadline = std::chrono::steady_clock::now() + limit;
  bool limited = limit.count() > 0;
  for (;;) {
    if (limited) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, int(std::max<std::int64_t>(left.count(), 0))) == 0) {
        ::kill(pid, SIGTERM);  // then read on until it has gone
        limited = false;
        continue;
      }
    }
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) break;
    out.append(buf, std::size_t(n));
  }
  ::close(fd);
  int status = 0;
  ::waitpid(pid, &status, 0);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status), out};
}

std::vector<std::vector<std::string>> sql_rows(const std::string& db, const std::string& sql) {
  if (db.starts_with("postgresql://")) {
    store::pg_connection c(db);
    auto r = c.run(sql);
    std::vector<std::vector<std::string>> rows;
    for (int i = 0; i < r.size(); ++i) {
      std::vector<std::string> row;
      for (int k = 0; k < r.columns(); ++k) row.push_back(r.null(i, k) ? "NULL" : r.text(i, k));
      rows.push_back(std::move(row));
    }
    return rows;
  }
  SQLite::Database conn(db, SQLite::OPEN_READONLY);
  conn.exec("PRAGMA busy_timeout = 5000");
  SQLite::Statement q(conn, sql);
  std::vector<std::vector<std::string>> rows;
  while (q.executeStep()) {
    std::vector<std::string> row;
    for (int i = 0; i < q.getColumnCount(); ++i)
      row.push_back(q.getColumn(i).isNull() ? "NULL" : q.getColumn(i).getString());
    rows.push_back(std::move(row));
  }
  return rows;
}

std::string sql_value(const std::string& db, const std::string& sql) {
  auto rows = sql_rows(db, sql);
  return rows.empty() || rows[0].empty() ? "" : rows[0][0];
}

}  // namespace resendd::test
