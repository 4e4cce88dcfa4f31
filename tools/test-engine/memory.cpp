#include "tools/test-engine/memory.hpp"

#include <unistd.h>

#include <cstdio>

#include "backends/gpu_probe.hpp"

namespace gpumod::engine {

ChargeKeeper::ChargeKeeper(std::optional<std::filesystem::path> sim_dir, int gpu,
                           std::chrono::milliseconds lag)
    : sim_dir_(std::move(sim_dir)), gpu_(gpu), pid_(static_cast<int>(::getpid())), lag_(lag) {
  worker_ = std::thread([this] { run(); });
}

ChargeKeeper::~ChargeKeeper() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (worker_.joinable()) worker_.join();
}

void ChargeKeeper::write(std::int64_t bytes) {
  shown_ = bytes;
  if (!sim_dir_) return;
  if (auto r = backends::write_sim_charge(*sim_dir_, pid_, gpu_, bytes); !r) {
    std::fprintf(stderr, "gpumod-test-engine: %s\n", r.error().c_str());
  }
}

void ChargeKeeper::set(std::int64_t bytes) {
  std::lock_guard lock(mu_);
  if (finished_) return;
  if (bytes >= shown_ || lag_.count() == 0) {
    pending_.reset();
    write(bytes);
    return;
  }
  // Keep an earlier deadline if a drop is already pending: the lag runs from the first free.
  const auto due = pending_ ? pending_->second : std::chrono::steady_clock::now() + lag_;
  pending_ = std::make_pair(bytes, due);
  cv_.notify_all();
}

void ChargeKeeper::run() {
  std::unique_lock lock(mu_);
  while (!stop_) {
    if (!pending_) {
      cv_.wait(lock);
      continue;
    }
    const auto due = pending_->second;
    if (cv_.wait_until(lock, due, [&] { return stop_ || !pending_ || pending_->second != due; })) continue;
    write(pending_->first);
    pending_.reset();
  }
}

void ChargeKeeper::finish() {
  std::unique_lock lock(mu_);
  if (pending_) {
    const auto due = pending_->second;
    lock.unlock();
    std::this_thread::sleep_until(due);
    lock.lock();
  }
  pending_.reset();
  shown_ = 0;
  finished_ = true;
  if (sim_dir_) backends::remove_sim_charge(*sim_dir_, pid_);
}

Memory::Memory(ChargeKeeper& charge, bool real_device) : charge_(charge), real_(real_device) {}

void Memory::use_device(bool real_device) {
  std::lock_guard lock(mu_);
  real_ = real_device;
}

Memory::~Memory() {
  discard_all();
}

void Memory::publish() {
  std::int64_t total = 0;
  for (const auto& [name, b] : blocks_) {
    if (b.on_device) total += b.bytes;
  }
  charge_.set(total);
}

Result<void> Memory::allocate(const std::string& name, std::int64_t bytes) {
  std::lock_guard lock(mu_);
  auto& b = blocks_[name];
  if (b.on_device) return {};
  b.bytes = bytes;
  if (real_) {
    auto dev = device_alloc(static_cast<std::size_t>(bytes));
    if (!dev) return make_error("cannot allocate " + name + ": " + dev.error());
    b.device = *dev;
  }
  b.on_device = true;
  b.backed_up = false;
  b.host.reset();
  publish();
  return {};
}

Result<void> Memory::offload(const std::string& name) {
  std::lock_guard lock(mu_);
  auto it = blocks_.find(name);
  if (it == blocks_.end() || !it->second.on_device) return {};
  auto& b = it->second;
  if (real_) {
    b.host.reset(new (std::nothrow) char[static_cast<std::size_t>(b.bytes)]);
    if (!b.host) return make_error("cannot allocate host memory to offload " + name);
    if (auto r = device_to_host(b.device, b.host.get()); !r) return r;
    device_free(b.device);
  }
  b.on_device = false;
  b.backed_up = true;
  publish();
  return {};
}

Result<void> Memory::restore(const std::string& name, bool& restored) {
  std::lock_guard lock(mu_);
  restored = false;
  auto it = blocks_.find(name);
  if (it == blocks_.end()) return make_error("no block " + name);
  auto& b = it->second;
  if (b.on_device) {
    restored = true;
    return {};
  }
  if (real_) {
    auto dev = device_alloc(static_cast<std::size_t>(b.bytes));
    if (!dev) return make_error("cannot allocate " + name + ": " + dev.error());
    b.device = *dev;
    if (b.host) {
      if (auto r = host_to_device(b.host.get(), b.device); !r) return r;
    }
  }
  restored = b.backed_up;
  b.backed_up = false;
  b.host.reset();
  b.on_device = true;
  publish();
  return {};
}

void Memory::discard(const std::string& name) {
  std::lock_guard lock(mu_);
  auto it = blocks_.find(name);
  if (it == blocks_.end()) return;
  if (real_) device_free(it->second.device);
  it->second.on_device = false;
  it->second.backed_up = false;
  it->second.host.reset();
  publish();
}

void Memory::discard_all() {
  std::lock_guard lock(mu_);
  for (auto& [name, b] : blocks_) {
    if (real_) device_free(b.device);
    b.on_device = false;
    b.backed_up = false;
    b.host.reset();
  }
  publish();
}

bool Memory::resident(const std::string& name) const {
  std::lock_guard lock(mu_);
  const auto it = blocks_.find(name);
  return it != blocks_.end() && it->second.on_device;
}

std::int64_t Memory::resident_bytes() const {
  std::lock_guard lock(mu_);
  std::int64_t total = 0;
  for (const auto& [name, b] : blocks_) {
    if (b.on_device) total += b.bytes;
  }
  return total;
}

}  // namespace gpumod::engine
