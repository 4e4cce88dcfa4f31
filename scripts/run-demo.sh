#!/usr/bin/env bash
# Sets up, builds and runs `gpumod serve` on its embedded default: NVML when an NVIDIA GPU is
# present, otherwise a simulated 24 GiB GPU, with the bundled test engine as the services.
# Debian 12, as root. Safe to run twice. Extra arguments go to `gpumod serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake -S . -B build-release -G Ninja -DCMAKE_BUILD_TYPE=Release -DGPUMOD_BUILD_TESTS=OFF -DGPUMOD_BUILD_BENCH=OFF >/dev/null
cmake --build build-release -j"$(nproc)" --target gpumod gpumod-test-engine
echo "gpumod: http://127.0.0.1:7979  (try: build-release/app/gpumod status)"
exec build-release/app/gpumod serve --state-dir "${GPUMOD_STATE_DIR:-$PWD/build-release/state}" --stop-services-on-exit "$@"
