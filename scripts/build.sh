#!/usr/bin/env bash
# Configures and builds resendd into build/ (or build-asan/ with --sanitize). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=build
args=(-DCMAKE_BUILD_TYPE=RelWithDebInfo)
if [ "${1:-}" = "--sanitize" ]; then
  dir=build-asan
  args=(-DCMAKE_BUILD_TYPE=Debug -DRESENDD_SANITIZE=ON -DRESENDD_BENCH=OFF)
fi
[ -n "${CI:-}" ] && args+=(-DRESENDD_WERROR=ON)
cmake -S . -B "$dir" "${args[@]}" >/dev/null
cmake --build "$dir" -j "$(nproc)"
