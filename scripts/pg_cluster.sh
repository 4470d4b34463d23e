#!/usr/bin/env bash
# A throwaway PostgreSQL 15 server for the tests: `start STATE_DIR` runs initdb in a temporary
# folder (as user postgres when run as root: initdb refuses root), starts it on a free loopback
# port and writes its URL to STATE_DIR/url; `stop STATE_DIR` stops it and removes the folder.
# Trust authentication on 127.0.0.1 only; fsync off (a test never pulls the power; the daemons'
# own durability is tested on SQLite and by kill -9 here) unless PG_DURABLE=1 (the benchmarks:
# fsync and synchronous_commit on, as a production server runs).
set -euo pipefail
cmd=${1:?start|stop}
state=${2:?state directory}
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -x "$bin/pg_ctl" ] || { echo "pg_cluster: no PostgreSQL server (apt-get install postgresql-15)" >&2; exit 1; }

as_owner() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "$cmd" in
  start)
    mkdir -p "$state"
    if [ -f "$state/data_dir" ] && [ -d "$(cat "$state/data_dir")" ]; then
      "$0" stop "$state" || true
    fi
    data=$(mktemp -d /tmp/resendd-pg.XXXXXX)
    chmod 700 "$data"
    [ "$(id -u)" -eq 0 ] && chown postgres:postgres "$data"
    echo "$data" >"$state/data_dir"
    as_owner "$bin/initdb" -D "$data/db" -A trust -U postgres -E UTF8 --locale=C --no-sync >"$state/initdb.log" 2>&1 \
      || { cat "$state/initdb.log" >&2; exit 1; }
    sync_opts="-c fsync=off -c full_page_writes=off"
    [ "${PG_DURABLE:-0}" = 1 ] && sync_opts="-c fsync=on -c synchronous_commit=on"
    for _ in $(seq 1 20); do
      port=$((20000 + RANDOM % 40000))
      if as_owner "$bin/pg_ctl" -D "$data/db" -l "$data/server.log" -w -t 60 start \
          -o "-p $port -k $data -c listen_addresses=127.0.0.1 $sync_opts -c max_connections=400 -c shared_buffers=64MB" \
          >/dev/null 2>&1; then
        echo "postgresql://postgres@127.0.0.1:$port" >"$state/url"
        echo "pg_cluster: PostgreSQL on 127.0.0.1:$port ($data)"
        exit 0
      fi
    done
    cat "$data/server.log" >&2 || true
    echo "pg_cluster: could not start PostgreSQL" >&2
    exit 1
    ;;
  stop)
    [ -f "$state/data_dir" ] || exit 0
    data=$(cat "$state/data_dir")
    if [ -d "$data/db" ]; then
      as_owner "$bin/pg_ctl" -D "$data/db" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$data" "$state/url" "$state/data_dir"
    ;;
  *)
    echo "usage: $0 start|stop STATE_DIR" >&2
    exit 2
    ;;
esac
