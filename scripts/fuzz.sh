#!/usr/bin/env bash
# Builds gpumod's libFuzzer targets (clang, ASan + UBSan) and runs each for SECONDS (default 60)
# over its seed corpus in tests/fuzz/corpus, keeping what it finds in build-fuzz/corpus/<target>.
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]   Findings are written to build-fuzz/findings/.
# Debian 12, as root (installs its packages first); safe to run twice.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(fuzz_request_parser fuzz_response_parser fuzz_api_json fuzz_config_yaml)
bash scripts/install-deps.sh
CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG="-O1 -g1" \
  -DGPUMOD_FUZZ=ON -DGPUMOD_BUILD_TESTS=OFF -DGPUMOD_BUILD_BENCH=OFF >/dev/null
cmake --build build-fuzz -j"$(nproc)" --target "${targets[@]}"
mkdir -p build-fuzz/findings
status=0
for t in "${targets[@]}"; do
  mkdir -p "build-fuzz/corpus/$t"
  echo "== $t for ${seconds}s"
  if ! ASAN_OPTIONS=detect_leaks=1 "build-fuzz/tests/fuzz/$t" -max_total_time="$seconds" -timeout=10 \
      -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="build-fuzz/findings/$t-" \
      "build-fuzz/corpus/$t" "tests/fuzz/corpus/$t" 2>&1 | tee "build-fuzz/$t.log" |
      grep -E '^(stat::number_of_executed_units|stat::average_exec_per_sec|==[0-9]+==ERROR|SUMMARY)'; then
    :
  fi
  if grep -qE '==[0-9]+==ERROR|^SUMMARY|deadly signal|timeout after' "build-fuzz/$t.log"; then
    echo "$t: a finding, see build-fuzz/$t.log and build-fuzz/findings/"
    status=1
  fi
done
exit "$status"
