#include "store/wal_buffer.h"

#include <sqlite3.h>

#include <cstdint>
#include <cstring>
#include <mutex>

namespace resendd::store {
namespace {

// Each file this VFS opens: SQLite's handle to it, then the default VFS's own file (allocated
// apart, so that a default VFS installed later, as a test does to count files, still fits).
struct wal_file {
  sqlite3_file base;  // first: SQLite sees this
  sqlite3_file* real;
  bool gathers;        // a write-ahead log on a device that needs no padding of commits
  bool commit_header;  // the last write was the header of a commit frame
  char* data;          // wal_buffer_bytes, allocated on the first write
  std::size_t used;
  sqlite3_int64 start;  // file offset of data[0]
};

wal_file* of(sqlite3_file* f) { return reinterpret_cast<wal_file*>(f); }
const sqlite3_io_methods& real(wal_file* w) { return *w->real->pMethods; }

sqlite3_vfs wal_vfs{};
sqlite3_vfs* original = nullptr;  // the default VFS when this one was registered

// The default VFS now (a test may have installed its own since).
sqlite3_vfs* under() {
  sqlite3_vfs* v = sqlite3_vfs_find(nullptr);
  return v && v != &wal_vfs ? v : original;
}

int write_out(wal_file* w) {
  if (w->used == 0) return SQLITE_OK;
  const int rc = real(w).xWrite(w->real, w->data, static_cast<int>(w->used), w->start);
  w->used = 0;
  return rc;
}

// The WAL frame header's second word is the database size after the commit, or 0.
bool is_commit_header(const void* p, int amount) {
  if (amount != 24) return false;
  const auto* b = static_cast<const unsigned char*>(p);
  return (b[4] | b[5] | b[6] | b[7]) != 0;
}

int w_close(sqlite3_file* f) {
  auto* w = of(f);
  const int written = write_out(w);
  const int rc = real(w).xClose(w->real);
  sqlite3_free(w->data);
  sqlite3_free(w->real);
  w->data = nullptr;
  w->real = nullptr;
  return written != SQLITE_OK ? written : rc;
}

int w_read(sqlite3_file* f, void* p, int amount, sqlite3_int64 offset) {
  auto* w = of(f);
  if (const int rc = write_out(w); rc != SQLITE_OK) return rc;
  return real(w).xRead(w->real, p, amount, offset);
}

int w_write(sqlite3_file* f, const void* p, int amount, sqlite3_int64 offset) {
  auto* w = of(f);
  if (!w->gathers || amount <= 0) return real(w).xWrite(w->real, p, amount, offset);
  const auto n = static_cast<std::size_t>(amount);
  // The page after a commit frame's header ends the transaction's frames: they go out with it,
  // before SQLite publishes the commit to other connections — also when the header went out
  // alone before it (the buffer too full for the page, or a read in between).
  const bool commit_page = w->commit_header;
  w->commit_header = is_commit_header(p, amount);
  if (w->used > 0 && (offset != w->start + static_cast<sqlite3_int64>(w->used) ||
                      w->used + n > wal_buffer_bytes)) {
    if (const int rc = write_out(w); rc != SQLITE_OK) return rc;
  }
  if (!w->data) w->data = static_cast<char*>(sqlite3_malloc64(wal_buffer_bytes));
  if (!w->data || n > wal_buffer_bytes) return real(w).xWrite(w->real, p, amount, offset);
  if (w->used == 0) w->start = offset;
  std::memcpy(w->data + w->used, p, n);
  w->used += n;
  if (commit_page) return write_out(w);
  return SQLITE_OK;
}

int w_truncate(sqlite3_file* f, sqlite3_int64 size) {
  auto* w = of(f);
  if (const int rc = write_out(w); rc != SQLITE_OK) return rc;
  return real(w).xTruncate(w->real, size);
}

int w_sync(sqlite3_file* f, int flags) {
  auto* w = of(f);
  if (const int rc = write_out(w); rc != SQLITE_OK) return rc;
  return real(w).xSync(w->real, flags);
}

int w_file_size(sqlite3_file* f, sqlite3_int64* size) {
  auto* w = of(f);
  if (const int rc = write_out(w); rc != SQLITE_OK) return rc;
  return real(w).xFileSize(w->real, size);
}

int w_lock(sqlite3_file* f, int level) { return real(of(f)).xLock(of(f)->real, level); }
int w_unlock(sqlite3_file* f, int level) { return real(of(f)).xUnlock(of(f)->real, level); }
int w_check_reserved(sqlite3_file* f, int* out) {
  return real(of(f)).xCheckReservedLock(of(f)->real, out);
}

int w_file_control(sqlite3_file* f, int op, void* arg) {
  auto* w = of(f);
  if (const int rc = write_out(w); rc != SQLITE_OK) return rc;
  return real(w).xFileControl(w->real, op, arg);
}

int w_sector_size(sqlite3_file* f) { return real(of(f)).xSectorSize(of(f)->real); }
int w_device(sqlite3_file* f) { return real(of(f)).xDeviceCharacteristics(of(f)->real); }

int w_shm_map(sqlite3_file* f, int region, int size, int extend, void volatile** p) {
  auto* w = of(f);
  if (real(w).iVersion < 2 || !real(w).xShmMap) return SQLITE_IOERR_SHMMAP;
  return real(w).xShmMap(w->real, region, size, extend, p);
}
int w_shm_lock(sqlite3_file* f, int offset, int n, int flags) {
  auto* w = of(f);
  if (real(w).iVersion < 2 || !real(w).xShmLock) return SQLITE_IOERR_SHMLOCK;
  return real(w).xShmLock(w->real, offset, n, flags);
}
void w_shm_barrier(sqlite3_file* f) {
  auto* w = of(f);
  if (real(w).iVersion >= 2 && real(w).xShmBarrier) real(w).xShmBarrier(w->real);
}
int w_shm_unmap(sqlite3_file* f, int remove) {
  auto* w = of(f);
  if (real(w).iVersion < 2 || !real(w).xShmUnmap) return SQLITE_OK;
  return real(w).xShmUnmap(w->real, remove);
}
int w_fetch(sqlite3_file* f, sqlite3_int64 offset, int amount, void** p) {
  auto* w = of(f);
  *p = nullptr;
  if (const int rc = write_out(w); rc != SQLITE_OK) return rc;
  if (real(w).iVersion < 3 || !real(w).xFetch) return SQLITE_OK;
  return real(w).xFetch(w->real, offset, amount, p);
}
int w_unfetch(sqlite3_file* f, sqlite3_int64 offset, void* p) {
  auto* w = of(f);
  if (real(w).iVersion < 3 || !real(w).xUnfetch) return SQLITE_OK;
  return real(w).xUnfetch(w->real, offset, p);
}

const sqlite3_io_methods methods = {
    3,           w_close,   w_read,     w_write,          w_truncate,     w_sync,
    w_file_size, w_lock,    w_unlock,   w_check_reserved, w_file_control, w_sector_size,
    w_device,    w_shm_map, w_shm_lock, w_shm_barrier,    w_shm_unmap,    w_fetch,
    w_unfetch,
};

int v_open(sqlite3_vfs*, sqlite3_filename name, sqlite3_file* f, int flags, int* out_flags) {
  auto* w = of(f);
  w->base.pMethods = nullptr;  // until the default VFS has opened it: SQLite then never closes it
  sqlite3_vfs* v = under();
  auto* inner = static_cast<sqlite3_file*>(sqlite3_malloc64(v->szOsFile));
  if (!inner) return SQLITE_NOMEM;
  std::memset(inner, 0, v->szOsFile);
  const int rc = v->xOpen(v, name, inner, flags, out_flags);
  if (rc != SQLITE_OK) {
    if (inner->pMethods) inner->pMethods->xClose(inner);
    sqlite3_free(inner);
    return rc;
  }
  w->real = inner;
  w->data = nullptr;
  w->used = 0;
  w->start = 0;
  w->commit_header = false;
  // A device without power-safe overwrite makes SQLite pad a synced commit to a sector with
  // copies of its last frame and sync in the middle of one: those logs are written as they come.
  w->gathers = (flags & SQLITE_OPEN_WAL) != 0 && (inner->pMethods->xDeviceCharacteristics(inner) &
                                                  SQLITE_IOCAP_POWERSAFE_OVERWRITE) != 0;
  w->base.pMethods = &methods;
  return SQLITE_OK;
}

int v_delete(sqlite3_vfs*, const char* name, int sync_dir) {
  return under()->xDelete(under(), name, sync_dir);
}
int v_access(sqlite3_vfs*, const char* name, int flags, int* out) {
  return under()->xAccess(under(), name, flags, out);
}
int v_full_pathname(sqlite3_vfs*, const char* name, int n, char* out) {
  return under()->xFullPathname(under(), name, n, out);
}
void* v_dl_open(sqlite3_vfs*, const char* name) { return under()->xDlOpen(under(), name); }
void v_dl_error(sqlite3_vfs*, int n, char* out) { under()->xDlError(under(), n, out); }
void (*v_dl_sym(sqlite3_vfs*, void* h, const char* sym))(void) {
  return under()->xDlSym(under(), h, sym);
}
void v_dl_close(sqlite3_vfs*, void* h) { under()->xDlClose(under(), h); }
int v_randomness(sqlite3_vfs*, int n, char* out) { return under()->xRandomness(under(), n, out); }
int v_sleep(sqlite3_vfs*, int micros) { return under()->xSleep(under(), micros); }
int v_current_time(sqlite3_vfs*, double* out) { return under()->xCurrentTime(under(), out); }
int v_last_error(sqlite3_vfs*, int n, char* out) {
  return under()->xGetLastError ? under()->xGetLastError(under(), n, out) : 0;
}
int v_current_time64(sqlite3_vfs*, sqlite3_int64* out) {
  sqlite3_vfs* v = under();
  if (v->iVersion >= 2 && v->xCurrentTimeInt64) return v->xCurrentTimeInt64(v, out);
  double days = 0;
  const int rc = v->xCurrentTime(v, &days);
  *out = static_cast<sqlite3_int64>(days * 86400000.0);
  return rc;
}

}  // namespace

const char* wal_buffer_vfs() {
  static std::once_flag once;
  std::call_once(once, [] {
    original = sqlite3_vfs_find(nullptr);
    wal_vfs.iVersion = 2;
    wal_vfs.szOsFile = sizeof(wal_file);
    wal_vfs.mxPathname = original->mxPathname;
    wal_vfs.zName = "resendd-wal-buffer";
    wal_vfs.xOpen = v_open;
    wal_vfs.xDelete = v_delete;
    wal_vfs.xAccess = v_access;
    wal_vfs.xFullPathname = v_full_pathname;
    wal_vfs.xDlOpen = v_dl_open;
    wal_vfs.xDlError = v_dl_error;
    wal_vfs.xDlSym = v_dl_sym;
    wal_vfs.xDlClose = v_dl_close;
    wal_vfs.xRandomness = v_randomness;
    wal_vfs.xSleep = v_sleep;
    wal_vfs.xCurrentTime = v_current_time;
    wal_vfs.xGetLastError = v_last_error;
    wal_vfs.xCurrentTimeInt64 = v_current_time64;
    sqlite3_vfs_register(&wal_vfs, 0);
  });
  return wal_vfs.zName;
}

}  // namespace resendd::store
