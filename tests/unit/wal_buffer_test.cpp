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
sqlite3_io_methods probe_methods{};

struct probe_file {
  sqlite3_file base;
  bool wal;
  // the real VFS's file follows
  sqlite3_file* real() { return reinterpret_cast<sqlite3_file*>(this + 1); }
};

const sqlite3_io_methods& rm(sqlite3_file* f) {
  return *reinterpret_cast<probe_file*>(f)->real()->pMethods;
}

int probe_write(sqlite3_file* f, const void* p, int n, sqlite3_int64 off) {
  auto* pf = reinterpret_cast<probe_file*>(f);
  if (pf->wal) {
    ++probe_state.wal_writes;
    if (probe_state.fail_wal_writes) return SQLITE_IOERR_WRITE;
  }
  return rm(f).xWrite(pf->real(), p, n, off);
}

int probe_open(sqlite3_vfs*, sqlite3_filename name, sqlite3_file* f, int flags, int* out) {
  auto* pf = reinterpret_cast<probe_file*>(f);
  pf->wal = (flags & SQLITE_OPEN_WAL) != 0;
  const int rc = probe_real->xOpen(probe_real, name, pf->real(), flags, out);
  if (!pf->real()->pMethods) {
    f->pMethods = nullptr;
    return rc;
  }
  // Every other method is the file's own (the default VFS gives a log other methods than the
  // database), called with the real file.
  probe_methods.iVersion = 3;
  probe_methods.xClose = [](sqlite3_file* x) {
    return rm(x).xClose(reinterpret_cast<probe_file*>(x)->real());
  };
  probe_methods.xRead = [](sqlite3_file* x, void* p, int n, sqlite3_int64 o) {
    return rm(x).xRead(reinterpret_cast<probe_file*>(x)->real(), p, n, o);
  };
  probe_methods.xWrite = probe_write;
  probe_methods.xTruncate = [](sqlite3_file* x, sqlite3_int64 s) {
    return rm(x).xTruncate(reinterpret_cast<probe_file*>(x)->real(), s);
  };
  probe_methods.xSync = [](sqlite3_file* x, int fl) {
    return rm(x).xSync(reinterpret_cast<probe_file*>(x)->real(), fl);
  };
  probe_methods.xFileSize = [](sqlite3_file* x, sqlite3_int64* s) {
    return rm(x).xFileSize(reinterpret_cast<probe_file*>(x)->real(), s);
  };
  probe_methods.xLock = [](sqlite3_file* x, int l) {
    return rm(x).xLock(reinterpret_cast<probe_file*>(x)->real(), l);
  };
  probe_methods.xUnlock = [](sqlite3_file* x, int l) {
    return rm(x).xUnlock(reinterpret_cast<probe_file*>(x)->real(), l);
  };
  probe_methods.xCheckReservedLock = [](sqlite3_file* x, int* o) {
    return rm(x).xCheckReservedLock(reinterpret_cast<probe_file*>(x)->real(), o);
  };
  probe_methods.xFileControl = [](sqlite3_file* x, int op, void* a) {
    return rm(x).xFileControl(reinterpret_cast<probe_file*>(x)->real(), op, a);
  };
  probe_methods.xSectorSize = [](sqlite3_file* x) {
    return rm(x).xSectorSize(reinterpret_cast<probe_file*>(x)->real());
  };
  probe_methods.xDeviceCharacteristics = [](sqlite3_file* x) {
    return rm(x).xDeviceCharacteristics(reinterpret_cast<probe_file*>(x)->real());
  };
  probe_methods.xShmMap = [](sqlite3_file* x, int r, int s, int e, void volatile** p) {
    return rm(x).xShmMap(reinterpret_cast<probe_file*>(x)->real(), r, s, e, p);
  };
  probe_methods.xShmLock = [](sqlite3_file* x, int o, int n, int fl) {
    return rm(x).xShmLock(reinterpret_cast<probe_file*>(x)->real(), o, n, fl);
  };
  probe_methods.xShmBarrier = [](sqlite3_file* x) {
    rm(x).xShmBarrier(reinterpret_cast<probe_file*>(x)->real());
  };
  probe_methods.xShmUnmap = [](sqlite3_file* x, int d) {
    return rm(x).xShmUnmap(reinterpret_cast<probe_file*>(x)->real(), d);
  };
  probe_methods.xFetch = [](sqlite3_file* x, sqlite3_int64 o, int n, void** p) {
    return rm(x).xFetch(reinterpret_cast<probe_file*>(x)->real(), o, n, p);
  };
  probe_methods.xUnfetch = [](sqlite3_file* x, sqlite3_int64 o, void* p) {
    return rm(x).xUnfetch(reinterpret_cast<probe_file*>(x)->real(), o, p);
  };
  f->pMethods = &probe_methods;
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
    probe_vfs.szOsFile = static_cast<int>(sizeof(probe_file)) + probe_real->szOsFile;
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
