#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (build-fuzz/) and runs each for SECONDS (default 10)
# on its corpus in fuzz/corpus/NAME; new inputs go to a scratch copy, crashes to build-fuzz/.
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
seconds=${1:-10}
shift || true
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(fuzz_json_parse fuzz_client fuzz_config fuzz_intake fuzz_server)
CC=clang CXX=clang++ cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRESENDD_FUZZ=ON >/dev/null
cmake --build build-fuzz -j "$(nproc)" --target "${targets[@]}"
rm -f build-fuzz/crash-* build-fuzz/timeout-*
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
for t in "${targets[@]}"; do
  work=$(mktemp -d)
  cp -r "fuzz/corpus/$t/." "$work/"
  echo "== $t: ${seconds}s"
  (cd build-fuzz && "fuzz/$t" -max_total_time="$seconds" -print_final_stats=1 -timeout=10 \
     -rss_limit_mb=4096 "$work" 2>&1 | grep -E "^(stat::|Done|#[0-9]+ +DONE)|ERROR|SUMMARY|crash-" || true)
  rm -rf "$work"
done
ls build-fuzz/crash-* build-fuzz/timeout-* 2>/dev/null && { echo "fuzzing found crashes"; exit 1; }
echo "fuzz: no crash"
