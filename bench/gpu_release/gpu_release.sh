#!/usr/bin/env bash
# The GPU release measurement (docs/gpu-release.md), in two halves:
#
#   bench/gpu_release/gpu_release.sh prepare [BUILD_DIR]
#       here, on the build machine: a Release build of gpumod, the CUDA test engine and the
#       harness in BUILD_DIR (default build-gpu), then BUILD_DIR/carry/{bin,lib} with the three
#       binaries and every shared library they need that is not part of glibc, for a GPU
#       machine that has the NVIDIA driver but none of the project's dependencies.
#
#   bench/gpu_release/gpu_release.sh device CARRY_DIR OUT_DIR [RUNS]
#       on the GPU machine: prints the driver and GPU, checks the carried binaries resolve,
#       runs gpumod-gpu-release, and leaves summary.md, runs.csv, daemon.log, config.yaml,
#       harness.log, env.txt and one engine log in OUT_DIR.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

prepare() {
  local build=${1:-$root/build-gpu}
  # The bench folder is not configured here (GPUMOD_BUILD_BENCH=OFF spares Google Benchmark and
  # the other benches), so a project-include hook adds the harness alone to this private build,
  # at the end of the top-level directory. (add_subdirectory may not be deferred; include() may.)
  local hook="$build/gpu_release_hook.cmake"
  mkdir -p "$build"
  cat >"$build/gpu_release_add.cmake" <<ADD
if(NOT TARGET gpumod-gpu-release)
  include("\${CMAKE_SOURCE_DIR}/bench/gpu_release/CMakeLists.txt")
endif()
ADD
  cat >"$hook" <<HOOK
cmake_language(DEFER DIRECTORY "\${CMAKE_SOURCE_DIR}" CALL include "$build/gpu_release_add.cmake")
HOOK
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGPUMOD_BUILD_TESTS=OFF \
    -DGPUMOD_BUILD_BENCH=OFF -DGPUMOD_ENGINE_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
    -DCMAKE_PROJECT_INCLUDE="$hook" >/dev/null
  ninja -C "$build" -j2 gpumod gpumod-test-engine gpumod-gpu-release
  grep -q GPUMOD_ENGINE_WITH_CUDA "$build/compile_commands.json" ||
    { echo "the test engine was built without CUDA (nvcc not found?)" >&2; exit 1; }

  local carry="$build/carry"
  rm -rf "$carry"
  mkdir -p "$carry/bin" "$carry/lib"
  local bins=("$build/app/gpumod" "$build/tools/test-engine/gpumod-test-engine"
              "$(find "$build" -name gpumod-gpu-release -type f -not -path "$build/carry*" \
                   -printf '%T@ %p\n' | sort -n | tail -n1 | cut -d' ' -f2-)")  # the newest build
  cp "${bins[@]}" "$carry/bin/"
  strip "$carry"/bin/*
  # Everything ldd resolves except glibc itself (the GPU machine has its own, newer one).
  ldd "${bins[@]}" | awk '/=> \//{print $3}' | sort -u |
    grep -Ev '/(libc|libm|libpthread|libdl|librt|ld-linux[^/]*|libresolv)\.so' |
    while read -r lib; do cp -L "$lib" "$carry/lib/"; done
  du -sh "$carry"
  ls "$carry/lib"
}

device() {
  local carry=$1 out=$2 runs=${3:-12}
  carry=$(cd "$carry" && pwd)
  mkdir -p "$out"
  local libpath="$carry/lib"
  # NVML and libcuda come with the driver; add their folder if the loader does not know it.
  if ! ldconfig -p | grep -q 'libnvidia-ml.so.1 '; then
    local nvml
    nvml=$(find / -xdev -name 'libnvidia-ml.so.1' 2>/dev/null | head -n1 || true)
    [[ -n "$nvml" ]] && libpath="$libpath:$(dirname "$nvml")"
  fi
  {
    echo "== uname"; uname -a
    echo "== os"; head -n2 /etc/os-release || true
    echo "== nvidia-smi"; nvidia-smi || true
    nvidia-smi --query-gpu=driver_version,name,uuid,memory.total,memory.used,memory.free --format=csv || true
    echo "== unresolved libraries"
    LD_LIBRARY_PATH="$libpath" ldd "$carry"/bin/* | grep 'not found' || echo none
  } 2>&1 | tee "$out/env.txt"
  local work
  work=$(mktemp -d /tmp/gpu-release.XXXXXX)
  local rc=0
  LD_LIBRARY_PATH="$libpath" "$carry/bin/gpumod-gpu-release" --gpumod "$carry/bin/gpumod" \
    --engine "$carry/bin/gpumod-test-engine" --out "$work" --runs "$runs" 2>&1 | tee "$out/harness.log" ||
    rc=$?
  for f in summary.md runs.csv daemon.log config.yaml; do
    [[ -f "$work/$f" ]] && cp "$work/$f" "$out/"
  done
  [[ -f "$work/state/logs/sleeper.log" ]] && cp "$work/state/logs/sleeper.log" "$out/engine-sleeper.log"
  echo "== after the run (nothing of ours should hold GPU memory)" | tee -a "$out/env.txt"
  nvidia-smi --query-compute-apps=pid,used_memory --format=csv 2>&1 | tee -a "$out/env.txt" || true
  return "$rc"
}

case "${1:-}" in
  prepare) shift; prepare "$@" ;;
  device) shift; device "$@" ;;
  *) sed -n '2,15p' "$0"; exit 2 ;;
esac
