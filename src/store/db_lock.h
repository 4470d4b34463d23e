#pragma once
// One daemon per database: an exclusive flock(2) on "<database>.lock", taken before anything
// touches the queue and held for the life of the process (the kernel drops it when the process
// dies, kill -9 included). The file says who holds it: "pid N" and, once listening, "url U", so
// that CLI commands can reach the running daemon's admin API instead of the file.
#include <memory>
#include <optional>
#include <string>

namespace resendd::store {

struct lock_holder {
  long pid = 0;
  std::string url;  // "" until the holder listens
};

class database_lock {
 public:
  // Takes the lock; nullopt when another process holds it (then *holder says who, if it can).
  // Throws std::runtime_error when the lock file cannot be created.
  static std::unique_ptr<database_lock> try_acquire(const std::string& db_path,
                                                    lock_holder* holder);
  ~database_lock();
  database_lock(const database_lock&) = delete;
  database_lock& operator=(const database_lock&) = delete;

  // Records where this process's admin API listens.
  void publish(const std::string& url);

 private:
  database_lock(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  void write_info(const std::string& url);
  int fd_;
  std::string path_;
};

}  // namespace resendd::store
