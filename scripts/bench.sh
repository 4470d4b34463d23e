#!/usr/bin/env bash
# The performance table (README, "Performance"): builds Release into build-release/, starts what
# it needs on loopback (nginx as the 202 ceiling, the delivery sink and a fake Coze; resendd
# daemons), measures, stops everything it started by PID, and prints one table of medians with
# min–max. Nothing leaves the machine.
#   scripts/bench.sh [--runs 3] [--seconds 10] [--connections 64] [--preload 200000]
#                    [--big 1000000] [--skip-big] [--skip-postgres] [--postgres-only]
#                    [--body FILE]
# --body FILE: the /resend body to measure instead of the built-in one; in it {port} becomes the
# destination's port (the location must be http://127.0.0.1:{port}/...) and {k} a table number
# (jobs spread over 1,000 keys). bench/two_bills.json is a write as a bot sends it.
# Takes ~15 minutes with the defaults (most of it filling the 1M queue). The PostgreSQL rows run
# 1, 2 and 3 daemons on one throwaway server (scripts/pg_cluster.sh) behind nginx round-robin.
set -euo pipefail
from=$PWD
cd "$(dirname "$0")/.."
root=$PWD
runs=3 secs=10 conns=64 preload=200000 big=1000000 skip_big=0 pg=1 only_pg=0 body_file=
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs=$2; shift 2 ;;
    --seconds) secs=$2; shift 2 ;;
    --connections) conns=$2; shift 2 ;;
    --preload) preload=$2; shift 2 ;;
    --big) big=$2; shift 2 ;;
    --skip-big) skip_big=1; shift ;;
    --skip-postgres) pg=0; shift ;;
    --postgres-only) only_pg=1; shift ;;
    --body) body_file=$(cd "$from" && realpath -e -- "$2") || exit 2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
if [ -n "$body_file" ] && ! grep -q '"location":"http://127.0.0.1:{port}/' "$body_file"; then
  echo "--body $body_file: the location must be http://127.0.0.1:{port}/..." >&2; exit 2
fi

scripts/deps.sh --test
need=()
for p in nginx-light wrk; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release -DRESENDD_TESTS=OFF >/dev/null
cmake --build build-release -j "$(nproc)" --target resendd resend_load resendd_bench >/dev/null
bin=$root/build-release/resendd
load=$root/build-release/bench/resend_load

work=$(mktemp -d /tmp/resendd-bench.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  [ -f "$work/pg/data_dir" ] && "$root/scripts/pg_cluster.sh" stop "$work/pg" || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null ||
    perl -MIO::Socket::INET -e 'print IO::Socket::INET->new(Listen=>1,LocalAddr=>"127.0.0.1:0")->sockport'
}
p_ceiling=$(free_port) p_sink=$(free_port) p_stall=$(free_port) p_coze=$(free_port)
p_daemon=$(free_port)

# nginx: the ceiling (202 with a job-like body) and a fake Coze token endpoint; later a second
# nginx as the delivery sink (Feishu's success envelope).
mkdir -p "$work/nginx" "$work/sink"
nginx_conf() { # $1 = dir, $2 = server blocks
  cat <<EOF
worker_processes 1;
daemon off;
pid $1/nginx.pid;
error_log $1/error.log;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path $1/body;
  keepalive_requests 10000000;
  default_type application/json;
  $2
}
EOF
}
nginx_conf "$work/nginx" "
  server { listen 127.0.0.1:$p_ceiling backlog=4096; client_max_body_size 2m;
    location / { return 202 '{\"id\":\"019ac0de-0000-7000-8000-000000000000\",\"state\":\"queued\"}'; } }
  server { listen 127.0.0.1:$p_coze; client_max_body_size 1m;
    location / { return 200 '{\"access_token\":\"czs_bench\",\"expires_in\":4102444800,\"token_type\":\"Bearer\"}'; } }" \
  >"$work/nginx/nginx.conf"
nginx_conf "$work/sink" "
  server { listen 127.0.0.1:$p_sink backlog=4096; client_max_body_size 2m;
    location / { return 200 '{\"code\":0,\"msg\":\"success\",\"data\":{\"records\":[]}}'; } }" \
  >"$work/sink/nginx.conf"
nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" &
pids+=($!)

# A destination that accepts connections and never answers: with one delivery allowed on the
# route, it holds the dispatcher still, so intake is measured alone. One on the stall port for
# the whole run; one on the sink's port while the delivery queue is preloaded.
stall() { # $1 = port
  perl -MIO::Socket::INET -e '
    my $s = IO::Socket::INET->new(LocalAddr => "127.0.0.1", LocalPort => $ARGV[0], Listen => 16,
                                  ReuseAddr => 1) or die "stall: $!";
    sleep 100000;' "$1" &
  pids+=($!)
  stall_pid=$!
}
stall "$p_stall"

# The request: a seed-like Bitable write of ~1 KB; {k} spreads jobs over 1,000 tables.
body() { # $1 = port
  if [ -n "$body_file" ]; then sed "s/{port}/$1/g" "$body_file"; return; fi
  local note; note=$(printf 'x%.0s' $(seq 1 600))
  printf '{"location":"http://127.0.0.1:%s/open-apis/bitable/v1/apps/bascnBENCH/tables/tbl{k}/records/batch_create","headers":{"Authorization":"Bearer t-bench-0123456789abcdef","Content-Type":"application/json; charset=utf-8"},"params":{"records":[{"fields":"{\\"金额\\": 128.5, \\"备注\\": \\"午饭 %s\\", \\"分类\\": \\"餐饮\\", \\"日期\\": 1764115200000, \\"账户\\": \\"招商银行信用卡\\"}"}]},"commands":{"json_parse":["$.params.records[*].fields"]}}' "$1" "$note"
}
body "$p_stall" >"$work/stall.json"
body "$p_sink" >"$work/sink.json"
req_bytes=$(sed 's/{k}/0/' "$work/stall.json" | wc -c)
cat >"$work/post.lua" <<'EOF'
local f = io.open(os.getenv("BENCH_BODY")); local template = f:read("*a"); f:close()
local n = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  n = n + 1
  return wrk.format(nil, nil, nil, (template:gsub("{k}", tostring(n % 1000))))
end
EOF
echo '{"public_key":"kid_bench","coze_api_key":"1150000000001","duration_seconds":900}' >"$work/token.json"
cat >"$work/token.lua" <<'EOF'
local f = io.open(os.getenv("BENCH_BODY")); wrk.body = f:read("*a"); f:close()
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
EOF
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$work/jwt.key" 2>/dev/null

config() { # $1 = db path, $2 = route concurrency
  cat <<EOF
[server]
listen = "127.0.0.1:$p_daemon"
max_connections = 4096
[store]
path = "$1"
max_queue_depth = 100000000
[delivery]
concurrency = 64
[[routes]]
name = "bench"
match = '^http://127\.0\.0\.1:($p_sink|$p_stall)/.*'
profile = "feishu"
allow_private_networks = true
concurrency = $2
[coze]
app_id = "1150000000001"
public_key_id = "kid_bench"
private_key_file = "$work/jwt.key"
token_url = "http://127.0.0.1:$p_coze/api/permission/oauth2/token"
[log]
level = "warn"
EOF
}

daemon_pid=""
start_daemon() { # $1 = db, $2 = route concurrency; sets daemon_pid and start_ms (start to ready)
  config "$1" "$2" >"$work/resendd.toml"
  local t0; t0=$(date +%s%N)
  "$bin" serve --config "$work/resendd.toml" 2>>"$work/resendd.log" &
  daemon_pid=$!
  pids+=("$daemon_pid")
  for _ in $(seq 1 3000); do
    if curl -fs -o /dev/null "http://127.0.0.1:$p_daemon/readyz"; then
      start_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
      return 0
    fi
    sleep 0.01
  done
  echo "resendd did not become ready; log:" >&2
  tail -20 "$work/resendd.log" >&2
  exit 1
}
stop_daemon() {
  kill -TERM "$daemon_pid"
  wait "$daemon_pid" 2>/dev/null || true
}
metric() { # $1 = state: sum of resendd_jobs{state=...}
  curl -fs "http://127.0.0.1:$p_daemon/metrics" |
    awk -v s="state=\"$1\"" 'index($0, "resendd_jobs{") == 1 && index($0, s) { n += $2 } END { print n + 0 }'
}
wrk_run() { # $1 = url, $2 = lua, $3 = body -> "req/s p50_ms p99_ms non2xx"
  BENCH_BODY=$3 wrk -t2 -c"$conns" -d"${secs}s" --latency -s "$2" "$1" >"$work/wrk.out" 2>&1
  awk '
    function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
    /Requests\/sec/ { rps = $2 }
    $1 == "50%" { p50 = ms($2) } $1 == "99%" { p99 = ms($2) }
    /Non-2xx/ { bad = $5 }
    END { printf "%.0f %.2f %.2f %d\n", rps, p50, p99, bad + 0 }' "$work/wrk.out"
}
declare -A samples
add() { samples[$1]="${samples[$1]:-} $2"; }
summary() { # median (min–max) of the samples of $1
  [ -n "${samples[$1]:-}" ] || { echo "—"; return; }
  printf '%s\n' ${samples[$1]} | sort -g | awk '
    { v[NR] = $1 } END {
      if (NR == 0) { print "—"; exit }
      m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
      f = (m >= 100) ? "%.0f" : "%.2f"
      if (NR == 1) printf f "\n", m; else printf f " (" f "–" f ")\n", m, v[1], v[NR] }'
}
med() { summary "$1" | awk '{ print $1 }'; }

echo "bench: $runs runs of ${secs}s, wrk -t2 -c$conns, request $req_bytes bytes, work dir $work" >&2

if [ "$only_pg" -eq 0 ]; then
# 1. The ceiling and durable intake, alternating so that both see the same machine.
for r in $(seq 1 "$runs"); do
  read -r rps p50 p99 bad < <(wrk_run "http://127.0.0.1:$p_ceiling/resend" "$work/post.lua" "$work/stall.json")
  add nginx_rps "$rps"; add nginx_p50 "$p50"; add nginx_p99 "$p99"
  rm -rf "$work/intake"; mkdir -p "$work/intake"
  start_daemon "$work/intake/q.db" 1
  read -r rps p50 p99 bad < <(wrk_run "http://127.0.0.1:$p_daemon/resend" "$work/post.lua" "$work/stall.json")
  [ "$bad" -eq 0 ] || echo "intake run $r: $bad answers were not 202" >&2
  add intake_rps "$rps"; add intake_p50 "$p50"; add intake_p99 "$p99"
  add intake_ratio "$(awk -v a="$rps" -v b="$(echo "${samples[nginx_rps]}" | awk '{print $NF}')" 'BEGIN { printf "%.3f", a / b }')"
  stop_daemon
done

# 2. Delivery from a preloaded queue to the keep-alive sink.
mkdir -p "$work/preload"
stall "$p_sink"
start_daemon "$work/preload/q.db" 1
"$load" --url "http://127.0.0.1:$p_daemon/resend" --connections 32 --requests "$preload" \
  --seconds 600 --body "$work/sink.json" --spread 1000 >&2
stop_daemon
kill "$stall_pid"
wait "$stall_pid" 2>/dev/null || true
nginx -c "$work/sink/nginx.conf" -p "$work/sink" &
pids+=($!)
sink_started=1
for r in $(seq 1 "$runs"); do
  rm -rf "$work/deliver"; mkdir -p "$work/deliver"
  cp "$work/preload/q.db" "$work/deliver/q.db"
  t0=$(date +%s%N)
  start_daemon "$work/deliver/q.db" 64
  while [ "$(metric succeeded)" -lt "$preload" ]; do sleep 0.1; done
  add deliver_jps "$(awk -v n="$preload" -v ns="$(( $(date +%s%N) - t0 ))" 'BEGIN { printf "%.0f", n / (ns / 1e9) }')"
  stop_daemon
done

# 3. Intake and delivery at once: jobs go to the sink as they come.
for r in $(seq 1 "$runs"); do
  rm -rf "$work/both"; mkdir -p "$work/both"
  start_daemon "$work/both/q.db" 64
  read -r rps p50 p99 bad < <(wrk_run "http://127.0.0.1:$p_daemon/resend" "$work/post.lua" "$work/sink.json")
  done_n=$(metric succeeded) left=$(( $(metric queued) + $(metric delivering) ))
  add both_in "$rps"; add both_p99 "$p99"
  add both_out "$(awk -v n="$done_n" -v s="$secs" 'BEGIN { printf "%.0f", n / s }')"
  add both_backlog "$left"
  add both_ratio "$(awk -v a="$rps" -v b="$(med nginx_rps)" 'BEGIN { printf "%.3f", a / b }')"
  stop_daemon
done

# 4. Cached /token beside the ceiling.
start_daemon "$work/intake/q.db" 1
curl -fs -o /dev/null -X POST --data-binary @"$work/token.json" "http://127.0.0.1:$p_daemon/token"
for r in $(seq 1 "$runs"); do
  read -r rps p50 p99 bad < <(wrk_run "http://127.0.0.1:$p_daemon/token" "$work/token.lua" "$work/token.json")
  [ "$bad" -eq 0 ] || echo "token run $r: $bad answers were not 2xx" >&2
  add token_rps "$rps"
  add token_ratio "$(awk -v a="$rps" -v b="$(med nginx_rps)" 'BEGIN { printf "%.3f", a / b }')"
done
stop_daemon

# 5. A queue of $big jobs: intake beside it, RSS, start to ready, bytes on disk per job.
if [ "$skip_big" -eq 0 ]; then
  mkdir -p "$work/big"
  start_daemon "$work/big/q.db" 1
  "$load" --url "http://127.0.0.1:$p_daemon/resend" --connections 64 --requests "$big" \
    --seconds 1800 --body "$work/stall.json" --spread 1000 >&2
  stop_daemon
  db_bytes=$(stat -c %s "$work/big/q.db")
  [ -f "$work/big/q.db-wal" ] && db_bytes=$((db_bytes + $(stat -c %s "$work/big/q.db-wal")))
  add big_disk "$(awk -v b="$db_bytes" -v n="$big" 'BEGIN { printf "%.0f", b / n }')"
  for r in $(seq 1 "$runs"); do
    start_daemon "$work/big/q.db" 1
    add big_ready "$start_ms"
    add big_rss "$(awk '/VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$daemon_pid/status")"
    read -r rps p50 p99 bad < <(wrk_run "http://127.0.0.1:$p_daemon/resend" "$work/post.lua" "$work/stall.json")
    add big_rps "$rps"; add big_p99 "$p99"
    add big_hwm "$(awk '/VmHWM/ { printf "%.1f", $2 / 1024 }' "/proc/$daemon_pid/status")"
    stop_daemon
  done
  big_ratio=$(awk -v a="$(med big_rps)" -v b="$(med intake_rps)" 'BEGIN { printf "%.2f", a / b }')
fi

# 6. Claim latency on a queue of 1M jobs over 10 routes and 100k keys (Google Benchmark).
mkdir -p "$root/build-release/bench-cache"
claim=$(TMPDIR=$root/build-release/bench-cache "$root/build-release/bench/resendd_bench" --benchmark_filter=ClaimLargeQueue \
  --benchmark_repetitions="$runs" --benchmark_report_aggregates_only=true 2>"$work/claim.err" |
  awk '/ClaimLargeQueue.*_median/ { printf "%.2f ms wall, %.2f ms CPU", $2 / 1000, $4 / 1000 }')
[ -n "$claim" ] || tail -5 "$work/claim.err" >&2

# 6b. The store alone, no HTTP and nothing else running: 64 durable enqueues at once of the
#     built-in job keyed by 1,000 tables (what intake could reach if the network thread cost
#     nothing), and claims of 64 followed by their outcomes (the same for delivery).
per_second() { # $1 = benchmark filter, $2 = sample name
  while read -r v; do add "$2" "$v"; done < <("$root/build-release/bench/resendd_bench" \
    --benchmark_filter="$1" --benchmark_min_time=3 --benchmark_repetitions="$runs" 2>"$work/$2.err" |
    awk '/\/real_time / { for (i = 1; i <= NF; ++i) if ($i ~ /^items_per_second=/) {
      v = substr($i, 18); if (v ~ /k\/s$/) v = v * 1000; printf "%.0f\n", v } }')
  [ -n "${samples[$2]:-}" ] || tail -5 "$work/$2.err" >&2
}
per_second DurableEnqueueTableJob store_in
per_second ClaimAndFinish store_out

fi

# 7. PostgreSQL: 1, 2 and 3 daemons on one queue, behind nginx round-robin (keep-alive). Intake
#    to the stalled route (one delivery in flight across all daemons), then delivery of what was
#    taken, pointed at the sink.
if [ "$pg" -eq 1 ]; then
  PG_DURABLE=1 "$root/scripts/pg_cluster.sh" start "$work/pg" >&2
  pg_url=$(cat "$work/pg/url")
  p_lb=$(free_port)
  mkdir -p "$work/lb"
  pg_pids=()
  start_pg_daemons() { # $1 = how many, $2 = database, $3 = route concurrency
    pg_pids=()
    local ports=() servers=""
    for i in $(seq 1 "$1"); do
      local port; port=$(free_port)
      ports+=("$port")
      servers="$servers server 127.0.0.1:$port;"
      config "unused" "$3" | sed "s/^listen = .*/listen = \"127.0.0.1:$port\"/" >"$work/pg$i.toml"
      RESENDD_STORE_BACKEND=postgres RESENDD_STORE_URL="$pg_url/$2" \
        "$bin" serve --config "$work/pg$i.toml" 2>>"$work/resendd-pg.log" &
      pg_pids+=($!)
      pids+=($!)
    done
    for port in "${ports[@]}"; do
      for _ in $(seq 1 3000); do
        curl -fs -o /dev/null "http://127.0.0.1:$port/readyz" && break
        sleep 0.01
      done
    done
    nginx_conf "$work/lb" "
      upstream daemons { $servers keepalive 256; }
      server { listen 127.0.0.1:$p_lb backlog=4096; client_max_body_size 2m;
        location / { proxy_pass http://daemons; proxy_http_version 1.1;
                     proxy_set_header Connection \"\"; } }" >"$work/lb/nginx.conf"
    nginx -c "$work/lb/nginx.conf" -p "$work/lb" &
    lb_pid=$!
    pids+=($!)
    for _ in $(seq 1 300); do curl -s -o /dev/null "http://127.0.0.1:$p_lb/healthz" && break; sleep 0.01; done
  }
  stop_pg_daemons() {
    kill "$lb_pid" 2>/dev/null || true
    wait "$lb_pid" 2>/dev/null || true
    for p in "${pg_pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${pg_pids[@]}"; do wait "$p" 2>/dev/null || true; done
  }
  if [ "${sink_started:-0}" -eq 0 ]; then
    nginx -c "$work/sink/nginx.conf" -p "$work/sink" &
    pids+=($!)
  fi
  for n in 1 2 3; do
    for r in $(seq 1 "$runs"); do
      db="bench_${n}_$r"
      psql "$pg_url/postgres" -qc "create database $db" >/dev/null
      start_pg_daemons "$n" "$db" 1
      read -r rps p50 p99 bad < <(wrk_run "http://127.0.0.1:$p_lb/resend" "$work/post.lua" "$work/stall.json")
      [ "$bad" -eq 0 ] || echo "postgres intake ($n daemons) run $r: $bad answers were not 202" >&2
      add "pg_in_$n" "$rps"; add "pg_p99_$n" "$p99"
      stop_pg_daemons
      # What was taken now goes to the sink: the same jobs, pointed at the sink's port.
      jobs_n=$(psql "$pg_url/$db" -Atc "update jobs set state = 'queued', lease_until = null,
        location = replace(location, ':$p_stall/', ':$p_sink/'),
        request = replace(request, ':$p_stall/', ':$p_sink/'), next_attempt_at = now();
        select count(*) from jobs" | tail -1)
      t0=$(date +%s%N)
      start_pg_daemons "$n" "$db" 64
      while [ "$(psql "$pg_url/$db" -Atc "select count(*) from jobs where state = 'succeeded'")" -lt "$jobs_n" ]; do
        sleep 0.1
      done
      add "pg_out_$n" "$(awk -v n="$jobs_n" -v ns="$(( $(date +%s%N) - t0 ))" 'BEGIN { printf "%.0f", n / (ns / 1e9) }')"
      stop_pg_daemons
      psql "$pg_url/postgres" -qc "drop database $db" >/dev/null
    done
  done
fi

cat <<EOF

| figure (median of $runs, min–max) | value |
|---|---|
| nginx answering 202, req/s (p50 / p99 ms) | $(summary nginx_rps) ($(med nginx_p50) / $(med nginx_p99)) |
| durable intake, req/s | $(summary intake_rps) |
| durable intake p50 / p99, ms | $(summary intake_p50) / $(summary intake_p99) |
| intake ÷ nginx (same run) | $(summary intake_ratio) |
| delivery from $preload preloaded to a keep-alive sink, jobs/s | $(summary deliver_jps) |
| intake and delivery at once: in req/s | $(summary both_in) (÷ nginx $(summary both_ratio)) |
| … out jobs/s during the run, p99 ms, backlog left | $(summary both_out), $(summary both_p99), $(summary both_backlog) |
| cached /token req/s (÷ nginx) | $(summary token_rps) ($(summary token_ratio)) |
| intake with $big queued, req/s (÷ empty) / p99 ms | $(summary big_rps) (${big_ratio:-—}) / $(summary big_p99) |
| at $big queued: RSS idle / after intake, MiB | $(summary big_rss) / $(summary big_hwm) |
| at $big queued: start to ready, ms | $(summary big_ready) |
| at $big queued: bytes on disk per job (request $req_bytes bytes) | $(summary big_disk) |
| claim at 1M queued, 10 routes, 100k keys (median) | ${claim:-—} |
| the store alone (no HTTP, built-in job): 64 enqueues at once, jobs/s / claims of 64 and their outcomes, jobs/s | $(summary store_in) / $(summary store_out) |
| PostgreSQL, 1 daemon: intake req/s (p99 ms) / delivery jobs/s | $(summary pg_in_1) ($(med pg_p99_1)) / $(summary pg_out_1) |
| PostgreSQL, 2 daemons behind nginx: intake / delivery | $(summary pg_in_2) ($(med pg_p99_2)) / $(summary pg_out_2) |
| PostgreSQL, 3 daemons behind nginx: intake / delivery | $(summary pg_in_3) ($(med pg_p99_3)) / $(summary pg_out_3) |
EOF
