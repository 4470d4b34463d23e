#include "store/db_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <sstream>
#include <stdexcept>

namespace resendd::store {

namespace {
lock_holder read_holder(int fd) {
  lock_holder h;
  char buf[512];
  const ssize_t n = ::pread(fd, buf, sizeof buf - 1, 0);
  if (n <= 0) return h;
  std::istringstream in(std::string(buf, std::size_t(n)));
  std::string key, value;
  while (in >> key >> value) {
    if (key == "pid") h.pid = std::strtol(value.c_str(), nullptr, 10);
    if (key == "url") h.url = value;
  }
  return h;
}
}  // namespace

std::unique_ptr<database_lock> database_lock::try_acquire(const std::string& db_path,
                                                          lock_holder* holder) {
  // Beside the database file itself: symlinks, "." and ".." resolved (as SQLite resolves them to
  // place its -wal file), so no spelling of the path reaches the file without this lock.
  std::error_code ec;
  const auto file = std::filesystem::weakly_canonical(db_path, ec);
  const std::string path = (ec ? db_path : file.string()) + ".lock";
  const std::filesystem::path p(path);
  if (p.has_parent_path()) std::filesystem::create_directories(p.parent_path());
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) throw std::runtime_error("open " + path + ": " + std::strerror(errno));
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    if (holder) *holder = read_holder(fd);
    ::close(fd);
    if (err == EWOULDBLOCK) return nullptr;
    throw std::runtime_error("lock " + path + ": " + std::strerror(err));
  }
  std::unique_ptr<database_lock> lock(new database_lock(fd, path));
  lock->write_info("");
  return lock;
}

database_lock::~database_lock() { ::close(fd_); }

void database_lock::publish(const std::string& url) { write_info(url); }

void database_lock::write_info(const std::string& url) {
  std::string text = "pid " + std::to_string(::getpid()) + "\n";
  if (!url.empty()) text += "url " + url + "\n";
  if (::ftruncate(fd_, 0) == 0) {
    [[maybe_unused]] const auto n = ::pwrite(fd_, text.data(), text.size(), 0);
  }
}

}  // namespace resendd::store
