#!/usr/bin/env bash
# Installs everything gpumod needs to build, test and run, from Debian 12 packages only.
# Run as root; safe to run again (apt-get skips what is already installed).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
packages=(
  build-essential cmake ninja-build pkg-config git ca-certificates curl
  clang-format clang-tidy clang libclang-rt-14-dev
  libyaml-cpp-dev nlohmann-json3-dev libspdlog-dev libfmt-dev libsystemd-dev
  libcpp-httplib-dev libssl-dev zlib1g-dev libbrotli-dev
  prometheus-cpp-dev libgtest-dev libgmock-dev libbenchmark-dev
  prometheus systemd dbus dbus-user-session wrk procps python3 nodejs chromium
)
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
# Debian's nodejs comes without npm (NodeSource's has it built in): the test clients need it.
command -v npm >/dev/null || apt-get install -y -qq --no-install-recommends npm >/dev/null
echo "install-deps: ${#packages[@]} packages present"
