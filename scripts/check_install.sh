#!/usr/bin/env bash
# Checks `cmake --install` into a scratch DESTDIR: the binary, the unit and the service config
# land where the unit expects them; the config names the database in the state directory and
# passes check-config; a second install keeps a config the operator changed.
# Usage: scripts/check_install.sh BUILD_DIR
set -euo pipefail
build=$1
dest=$(mktemp -d)
trap 'rm -rf "$dest"' EXIT
DESTDIR=$dest cmake --install "$build" > /dev/null
for f in usr/local/bin/resendd usr/local/lib/systemd/system/resendd.service etc/resendd/resendd.toml; do
  [ -e "$dest/$f" ] || { echo "missing after install: /$f"; exit 1; }
done
conf=$dest/etc/resendd/resendd.toml
grep -qx 'path = "/var/lib/resendd/resendd.db"' "$conf" || { echo "database path not set"; exit 1; }
"$dest/usr/local/bin/resendd" check-config --config "$conf" | grep -q '^path = "/var/lib/resendd/resendd.db"'
"$dest/usr/local/bin/resendd" --version | grep -q '^resendd '
echo "# changed by the operator" >> "$conf"
DESTDIR=$dest cmake --install "$build" > /dev/null
grep -q "changed by the operator" "$conf" || { echo "install overwrote the operator's config"; exit 1; }
echo "install: ok"
