#pragma once
// The composition root: builds every part from the config, in order, runs the daemon until
// SIGTERM/SIGINT and takes it down in the reverse order. Nothing else creates services.
#include <functional>
#include <memory>

#include "config/config.h"
#include "store/sqlite_store.h"
#include "util/time.h"

namespace resendd {

// Reads what the configuration names beside its text, as serve will: the Coze signing key, the
// listener's certificate and key, the extra CA bundle. Throws config_error naming the keys, so
// that check-config refuses what serve would, and serve stops before it touches the store.
void check_key_material(const config& cfg);

// Runs the daemon; returns the process exit code. Throws only for start-up failures.
// `reread` reads the configuration again for SIGHUP (it runs off the network thread and throws
// config_error); without it SIGHUP is refused with a log line.
int run_daemon(const config& cfg, const clock& clk, std::function<config()> reread = {});

// The SQLite store's options from [store]: one mapping for the daemon and the CLI. `read_only`
// for CLI reads beside a running daemon.
store::sqlite_options store_options(const config& cfg, bool read_only = false);

// The store [store] names: SQLite (the caller holds the database lock when it writes) or
// PostgreSQL. `daemon_name`: a serving daemon's slot name (PostgreSQL; empty for the CLI).
std::unique_ptr<store::queue_store> open_store(const config& cfg, sys_time now, bool read_only,
                                               const std::string& daemon_name = "");

// Splits "HOST:PORT" / "[V6]:PORT"; "localhost" means 127.0.0.1.
bool split_listen(const std::string& listen, std::string& host, std::uint16_t& port);

}  // namespace resendd
