// The VFS that gathers a transaction's WAL frames (store/wal_buffer.h): what another connection
// reads after every commit, how many writes reach the file system, and a write that fails.

#include "store/wal_buffer.h"

#include <SQLiteCpp/SQLiteCpp.h>
#include <gtest/gtest.h>
#include <sqlite3.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <string>

namespace resendd::store {
namespace {

// A default VFS that counts the writes reaching each write-ahead log and can fail them.
struct probe {
  int wal_writes = 0;
  bool fail_wal_writes = false;
};
probe probe_state;
sqlite3_vfs* probe_real = nullptr;
sqlite3_vfs probe_vfs{};
// The default VFS opens every log with the same methods; the probe's copy differs in xWrite.
const sqlite3_io_methods* log_methods = nullptr;
sqlite3_io_methods probe_log_methods{};

int probe_write(sqlite3_file* f, const void* p, int n, sqlite3_int64 off) {
  ++probe_state.wal_writes;
  if (probe_state.fail_wal_writes) return SQLITE_IOERR_WRITE;
  return log_methods->xWrite(f, p, n, off);
}

// Opens the file with the default VFS, in place; a log gets the counting xWrite.
int probe_open(sqlite3_vfs*, sqlite3_filename name, sqlite3_file* f, int flags, int* out) {
  const int rc = probe_real->xOpen(probe_real, name, f, flags, out);
  if (rc != SQLITE_OK || !f->pMethods || (flags & SQLITE_OPEN_WAL) == 0) return rc;
  if (!log_methods) {
    log_methods = f->pMethods;
    probe_log_methods = *log_methods;
    probe_log_methods.xWrite = probe_write;
  }
  if (f->pMethods == log_methods) f->pMethods = &probe_log_methods;
  return rc;
}

// Installs the probe as the default VFS for one test; the WAL-buffer VFS opens through it.
class WalBuffer : public ::testing::Test {
 protected:
  void SetUp() override {
    wal_buffer_vfs();  // registered before the probe: it must still reach the probe
    probe_real = sqlite3_vfs_find("unix");
    ASSERT_NE(probe_real, nullptr);
    probe_vfs = *probe_real;
    probe_vfs.zName = "resendd-wal-probe";
    probe_vfs.pNext = nullptr;
    probe_vfs.xOpen = probe_open;
    ASSERT_EQ(sqlite3_vfs_register(&probe_vfs, 1), SQLITE_OK);
    probe_state = probe{};
    dir_ = std::filesystem::temp_directory_path() /
           ("resendd-walbuf-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    path_ = (dir_ / "t.db").string();
  }
  void TearDown() override {
    sqlite3_vfs_unregister(&probe_vfs);
    std::filesystem::remove_all(dir_);
  }

  SQLite::Database open_buffered(const char* sync) {
    SQLite::Database db(path_, SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE, 0, wal_buffer_vfs());
    db.exec("PRAGMA journal_mode = WAL");
    db.exec(std::string("PRAGMA synchronous = ") + sync);
    db.exec("PRAGMA wal_autocheckpoint = 0");
    return db;
  }

  std::filesystem::path dir_;
  std::string path_;
};

std::string row_text(int i) {
  return std::string(900, static_cast<char>('a' + i % 26)) + std::to_string(i);
}

TEST_F(WalBuffer, EveryCommitIsWholeForAnotherConnectionEvenWithoutASync) {
  // synchronous = NORMAL: a WAL commit is not synced, so only the commit frame's own flush puts
  // the transaction's frames in the file before the commit is published.
  auto db = open_buffered("NORMAL");
  db.exec("CREATE TABLE t (i INTEGER PRIMARY KEY, v TEXT NOT NULL)");
  SQLite::Database other(path_, SQLite::OPEN_READONLY);
  int n = 0;
  for (int tx = 0; tx < 40; ++tx) {
    SQLite::Transaction t(db);
    SQLite::Statement ins(db, "INSERT INTO t (i, v) VALUES (?, ?)");
    for (int k = 0; k < 1 + tx * 7; ++k, ++n) {  // 1 to 274 rows: within and past the buffer
      ins.bind(1, n);
      ins.bind(2, row_text(n));
      ins.exec();
      ins.reset();
    }
    t.commit();
    SQLite::Statement q(other, "SELECT count(*), sum(length(v)), max(v) FROM t");
    ASSERT_TRUE(q.executeStep());
    EXPECT_EQ(q.getColumn(0).getInt(), n) << "after transaction " << tx;
    std::int64_t len = 0;
    for (int i = 0; i < n; ++i) len += static_cast<std::int64_t>(row_text(i).size());
    EXPECT_EQ(q.getColumn(1).getInt64(), len) << "after transaction " << tx;
  }
  EXPECT_EQ(other.execAndGet("PRAGMA integrity_check").getString(), "ok");
}

TEST_F(WalBuffer, ACommitFrameWhosePageOverflowsTheBufferIsWholeForAnotherConnection) {
  // Rows of 3,000 bytes, one per page: updating rows 1..k writes exactly k frames of 4,120 bytes.
  // Thirty of them pass wal_buffer_bytes with the thirtieth frame's page: when that frame is the
  // commit, its header is gathered and its page comes after the buffer had to go out. The page
  // must reach the file before the commit is published (synchronous = NORMAL: no sync to flush
  // it either).
  auto db = open_buffered("NORMAL");
  db.exec("CREATE TABLE t (i INTEGER PRIMARY KEY, v TEXT NOT NULL)");
  auto value = [](int k) {
    const auto tag = std::to_string(k) + ":";
    return tag + std::string(3000 - tag.size(), 'v');
  };
  {
    SQLite::Transaction t(db);
    SQLite::Statement ins(db, "INSERT INTO t (i, v) VALUES (?, ?)");
    for (int i = 1; i <= 100; ++i) {
      ins.bind(1, i);
      ins.bind(2, value(0));
      ins.exec();
      ins.reset();
    }
    t.commit();
  }
  SQLite::Database other(path_, SQLite::OPEN_READONLY);
  SQLite::Statement update(db, "UPDATE t SET v = ?1 WHERE i <= ?2");
  for (int k = 1; k <= 100; ++k) {
    update.bind(1, value(k));
    update.bind(2, k);
    update.exec();
    update.reset();
    SQLite::Statement q(other, "SELECT count(*) FROM t WHERE v = ?");
    q.bind(1, value(k));
    int seen = -1;
    try {
      ASSERT_TRUE(q.executeStep());
      seen = q.getColumn(0).getInt();
    } catch (const SQLite::Exception& e) {
      ADD_FAILURE() << "after updating " << k << " pages: " << e.what();
    }
    EXPECT_EQ(seen, k) << "rows another connection reads as updated by the commit of " << k
                       << " pages";
  }
}

TEST_F(WalBuffer, ATransactionsFramesReachTheFileInAFewLargeWrites) {
  auto db = open_buffered("FULL");
  db.exec("CREATE TABLE t (i INTEGER PRIMARY KEY, v TEXT NOT NULL)");
  probe_state.wal_writes = 0;
  {
    SQLite::Transaction t(db);
    SQLite::Statement ins(db, "INSERT INTO t (i, v) VALUES (?, ?)");
    for (int i = 0; i < 400; ++i) {  // ~100 pages of 4 KiB: ~200 writes without the buffer
      ins.bind(1, i);
      ins.bind(2, row_text(i));
      ins.exec();
      ins.reset();
    }
    t.commit();
  }
  // ~100 frames of 4,120 bytes in writes of up to wal_buffer_bytes: 4 or 5 writes.
  EXPECT_GT(probe_state.wal_writes, 0);
  EXPECT_LE(probe_state.wal_writes, 8) << "writes to the log for ~100 frames";
  SQLite::Database other(path_, SQLite::OPEN_READONLY);
  EXPECT_EQ(other.execAndGet("SELECT count(*) FROM t").getInt(), 400);
}

TEST_F(WalBuffer, ATransactionLargerThanThePageCacheReadsBackWhatItWrote) {
  // A small cache makes SQLite spill pages to the log mid-transaction and read them back.
  auto db = open_buffered("FULL");
  db.exec("PRAGMA cache_size = 10");
  db.exec("CREATE TABLE t (i INTEGER PRIMARY KEY, v TEXT NOT NULL)");
  db.exec("CREATE INDEX t_v ON t (v)");
  {
    SQLite::Transaction t(db);
    SQLite::Statement ins(db, "INSERT INTO t (i, v) VALUES (?, ?)");
    for (int i = 0; i < 3000; ++i) {
      ins.bind(1, i);
      ins.bind(2, row_text(i * 7919 % 3000));
      ins.exec();
      ins.reset();
    }
    db.exec("UPDATE t SET v = v || 'x' WHERE i % 3 = 0");
    t.commit();
  }
  SQLite::Database other(path_, SQLite::OPEN_READONLY);
  EXPECT_EQ(other.execAndGet("SELECT count(*) FROM t WHERE v LIKE '%x'").getInt(), 1000);
  EXPECT_EQ(other.execAndGet("PRAGMA integrity_check").getString(), "ok");
  db.exec("PRAGMA wal_checkpoint(TRUNCATE)");
  EXPECT_EQ(other.execAndGet("SELECT count(*) FROM t").getInt(), 3000);
}

TEST_F(WalBuffer, AWriteTheFileSystemRefusesFailsTheCommitAndLeavesTheDatabaseAsItWas) {
  auto db = open_buffered("FULL");
  db.exec("CREATE TABLE t (i INTEGER PRIMARY KEY, v TEXT NOT NULL)");
  db.exec("INSERT INTO t VALUES (1, 'kept')");
  probe_state.fail_wal_writes = true;
  {
    // The inserts only reach the buffer; the refusal shows at the commit, which must fail.
    db.exec("BEGIN IMMEDIATE");
    for (int i = 2; i < 50; ++i)
      db.exec("INSERT INTO t VALUES (" + std::to_string(i) + ", '" + row_text(i) + "')");
    EXPECT_THROW(db.exec("COMMIT"), SQLite::Exception);
    if (sqlite3_get_autocommit(db.getHandle()) == 0) db.exec("ROLLBACK");
  }
  probe_state.fail_wal_writes = false;
  SQLite::Database other(path_, SQLite::OPEN_READONLY);
  EXPECT_EQ(other.execAndGet("SELECT count(*) FROM t").getInt(), 1);
  db.exec("INSERT INTO t VALUES (2, 'after')");
  EXPECT_EQ(other.execAndGet("SELECT group_concat(v, ',') FROM t").getString(), "kept,after");
  EXPECT_EQ(other.execAndGet("PRAGMA integrity_check").getString(), "ok");
}

}  // namespace
}  // namespace resendd::store
