#!/usr/bin/env bash
# Checks systemd/resendd.service as systemd reads it: `systemd-analyze verify` (with ExecStart
# pointed at the built binary, which verify requires to exist) and the hardening score, which
# must stay at or below 2.0 in `systemd-analyze security --offline=true`.
# Usage: scripts/check_unit.sh BUILT_BINARY
set -euo pipefail
cd "$(dirname "$0")/.."
binary=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sed "s|/usr/local/bin/resendd|$binary|" systemd/resendd.service > "$tmp/resendd.service"
systemd-analyze verify "$tmp/resendd.service"
# --threshold=20: exit non-zero when the exposure is above 2.0.
systemd-analyze security --offline=true --threshold=20 --no-pager "$tmp/resendd.service" | tail -1
