#pragma once
// The composition root: builds every part from the config, in order, runs the daemon until
// SIGTERM/SIGINT and takes it down in the reverse order. Nothing else creates services.
#include "config/config.h"
#include "store/sqlite_store.h"
#include "util/time.h"

namespace resendd {

// Runs the daemon; returns the process exit code. Throws only for start-up failures.
int run_daemon(const config& cfg, const clock& clk);

// The SQLite store's options from [store]: one mapping for the daemon and the CLI. `read_only`
// for CLI reads beside a running daemon.
store::sqlite_options store_options(const config& cfg, bool read_only = false);

// Splits "HOST:PORT" / "[V6]:PORT"; "localhost" means 127.0.0.1.
bool split_listen(const std::string& listen, std::string& host, std::uint16_t& port);

}  // namespace resendd
