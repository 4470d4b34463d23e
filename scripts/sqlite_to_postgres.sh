#!/usr/bin/env bash
# Moves a SQLite queue into PostgreSQL: scripts/sqlite_to_postgres.sh var/resendd.db postgresql://…
# Stop the SQLite daemon first (a clean stop queues again what was in flight). The PostgreSQL
# database gets resendd's schema (resendd migrate) and must not hold jobs yet. Jobs, attempts and
# key gaps are copied with sqlite3 -csv | psql \copy in one transaction; times stay the same
# instants (ISO-8601 UTC text becomes timestamptz). Needs sqlite3, psql and resendd on PATH (or
# RESENDD=path/to/resendd).
set -euo pipefail
db=${1:?usage: $0 SQLITE_FILE POSTGRES_URL}
url=${2:?usage: $0 SQLITE_FILE POSTGRES_URL}
resendd=${RESENDD:-resendd}
[ -f "$db" ] || { echo "no database at $db" >&2; exit 1; }
if [ "$(sqlite3 "$db" "select count(*) from jobs where state = 'delivering'")" != 0 ]; then
  echo "$db has jobs in delivery: stop its daemon first (a clean stop queues them again)" >&2
  exit 1
fi
RESENDD_STORE_BACKEND=postgres RESENDD_STORE_URL="$url" "$resendd" migrate >/dev/null
if [ "$(psql "$url" -Atc "select count(*) from jobs")" != 0 ]; then
  echo "the PostgreSQL queue already holds jobs: copy into an empty one" >&2
  exit 1
fi
jobs="id, state, route, method, location, request, idempotency_key, client_token, resource_key,
  attempts, free_attempts, auth_refreshes, claim_no, next_attempt_at, created_at, updated_at,
  finished_at, retried_at, last_status, last_error, last_response"
attempts="job_id, n, started_at, duration_ms, http_status, feishu_code, outcome, error, response"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sqlite3 -csv "$db" "select ${jobs//$'\n'/} from jobs" >"$tmp/jobs.csv"
sqlite3 -csv "$db" "select $attempts from attempts" >"$tmp/attempts.csv"
sqlite3 -csv "$db" "select resource_key, not_before from key_gaps" >"$tmp/key_gaps.csv"
psql "$url" -v ON_ERROR_STOP=1 -q <<SQL
BEGIN;
\copy jobs (${jobs//$'\n'/}) from '$tmp/jobs.csv' csv
\copy attempts ($attempts) from '$tmp/attempts.csv' csv
\copy key_gaps (resource_key, not_before) from '$tmp/key_gaps.csv' csv
COMMIT;
SQL
echo "copied $(psql "$url" -Atc "select count(*) from jobs") job(s) and $(psql "$url" -Atc "select count(*) from attempts") attempt(s) (sqlite: $(sqlite3 "$db" "select count(*) from jobs") and $(sqlite3 "$db" "select count(*) from attempts"))"
