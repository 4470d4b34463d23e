#!/usr/bin/env bash
# Command 1: install what is needed, build, and start the daemon on its embedded defaults
# (SQLite at var/resendd.db, listening on 127.0.0.1:9000). Extra arguments go to `resendd serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
scripts/build.sh
exec build/resendd serve "$@"
