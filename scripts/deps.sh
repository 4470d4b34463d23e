#!/usr/bin/env bash
# Installs the Debian 12 packages resendd needs to build, run and test. Idempotent: it only asks
# apt when something is missing. With --test also a PostgreSQL server (postgresql-15), which the
# test run starts on a free port (scripts/pg_cluster.sh) for the PostgreSQL half of the suite and
# the benchmarks; running resendd itself needs only the client library. `systemd` brings
# systemd-analyze, with which the tests check the unit file, and python3-prometheus-client,
# whose parser reads /metrics in a test, and libjson-validator-perl, which validates
# /openapi.json against the OpenAPI schema. The one list of packages: the
# Dockerfile runs this script too.
set -euo pipefail
packages=(
  build-essential cmake pkg-config ca-certificates openssl sqlite3
  libboost1.81-dev libboost-url1.81-dev libssl-dev libsqlite3-dev libsqlitecpp-dev
  nlohmann-json3-dev libspdlog-dev libtoml11-dev libcli11-dev libsystemd-dev libre2-dev libpq-dev
  libtcmalloc-minimal4 libgtest-dev libgmock-dev libbenchmark-dev curl
  clang libclang-rt-14-dev util-linux mount
)
[ "${1:-}" = "--test" ] && packages+=(postgresql-15 systemd python3-prometheus-client libjson-validator-perl)
# --runtime: only what the built binary needs to run (the Dockerfile's runtime stage), plus the
# sqlite3 CLI for operators.
[ "${1:-}" = "--runtime" ] && packages=(
  ca-certificates sqlite3 libboost-url1.81.0 libssl3 libsqlite3-0 libpq5 libspdlog1.10 libfmt9
  libre2-9 libsystemd0 libtcmalloc-minimal4
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
echo "installing: ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
