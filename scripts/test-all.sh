#!/usr/bin/env bash
# Sets up, builds and runs the whole gpumod test suite: a normal build and an
# AddressSanitizer + UndefinedBehaviorSanitizer build, each with every test, then a short run of
# every libFuzzer target (clang, ASan + UBSan). Debian 12, as root.
# Safe to run twice: builds are incremental and installs are idempotent.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh || exit 1
# The real clients the end-to-end tests drive gpumod with (the MCP SDK, playwright-core), from
# npm at the versions package-lock.json pins.
(cd tests/e2e/clients && npm ci --no-audit --no-fund --loglevel=error) || exit 1
jobs=$(nproc)
set -e
# The normal build is optimised (so -O warnings count) but without debug info, and the
# sanitizer build keeps only line tables: on the 2-core CI machine compile time dominates.
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_FLAGS_RELEASE="-O1 -DNDEBUG" >/dev/null
cmake --build build -j"$jobs"
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG="-O0 -g1" -DGPUMOD_SANITIZE=ON \
  -DGPUMOD_BUILD_BENCH=OFF >/dev/null
cmake --build build-asan -j"$jobs"
# The libFuzzer targets (clang, with ASan and UBSan): only they and what they link are built.
# Each runs as a ctest test over its seed corpus and then for GPUMOD_FUZZ_SECONDS.
CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG="-O1 -g1" \
  -DGPUMOD_FUZZ=ON -DGPUMOD_BUILD_TESTS=OFF -DGPUMOD_BUILD_BENCH=OFF >/dev/null
cmake --build build-fuzz -j"$jobs" --target fuzz_request_parser fuzz_response_parser fuzz_api_json fuzz_config_yaml
set +e
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
echo "== tests: normal build =="
ctest --test-dir build --output-on-failure -j"$jobs"
normal=$?
echo "== tests: ASan + UBSan build =="
ctest --test-dir build-asan --output-on-failure -j"$jobs"
asan=$?
echo "== tests: fuzz targets (short runs) =="
ctest --test-dir build-fuzz --output-on-failure -j"$jobs"
fuzz=$?
[ "$normal" -eq 0 ] && [ "$asan" -eq 0 ] && [ "$fuzz" -eq 0 ]
