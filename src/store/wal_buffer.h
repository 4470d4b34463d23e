#pragma once

// A SQLite VFS that gathers the frames one transaction appends to its write-ahead log and hands
// them to the file system in large writes, instead of two pwrite calls per 4 KiB frame (SQLite
// writes each frame's 24-byte header and its page separately).
//
// What it keeps is what SQLite already promises. Bytes are held only while they sit at the end of
// the log and nothing has looked at them: the buffer goes to the file before any read, sync,
// truncate, size query or file control of the log, before a write that does not continue it, and
// right after the page of a commit frame (a frame whose header carries the database size). So a
// transaction's frames are all in the file before SQLite publishes the commit in the shared WAL
// index, whether or not the commit syncs: another connection that reads the log never finds a
// frame missing. A process killed with frames still buffered had not committed them. Every
// other file, and every other operation, goes to the default VFS unchanged; the files on disk
// are the ones SQLite writes without it.

#include <cstddef>

namespace resendd::store {

// The name to open a connection with. Registered once (not as the default) on the first call.
const char* wal_buffer_vfs();

// Bytes gathered before they are written even if the transaction goes on (29 frames of 4 KiB
// pages). The default VFS writes at most 0x1ffff bytes per call (it masks larger sizes): a
// larger buffer would be cut, and one of exactly 128 KiB written as nothing (SQLITE_FULL).
inline constexpr std::size_t wal_buffer_bytes = 120 * 1024;
static_assert(wal_buffer_bytes <= 0x1ffff);

}  // namespace resendd::store
