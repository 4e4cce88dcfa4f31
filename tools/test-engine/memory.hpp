// What the test engine holds on the GPU: named blocks (the vLLM-style residual, weights and
// KV cache, or one block per router model), each either resident on the device or not.
// The sum of resident blocks is the engine's charge on the simulated GPU; with a real GPU
// the blocks are also real cudaMalloc allocations. A drop in the charge is published only
// after the release lag, the way a driver frees memory late.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "base/result.hpp"
#include "tools/test-engine/engine_memory.hpp"

namespace gpumod::engine {

// Keeps <sim_dir>/<pid>.charge up to date (no-op without a sim dir).
class ChargeKeeper {
 public:
  ChargeKeeper(std::optional<std::filesystem::path> sim_dir, int gpu, std::chrono::milliseconds release_lag);
  ~ChargeKeeper();
  ChargeKeeper(const ChargeKeeper&) = delete;
  ChargeKeeper& operator=(const ChargeKeeper&) = delete;

  // A rise is written at once; a drop after the release lag.
  void set(std::int64_t bytes);
  // At clean exit: wait out any pending drop, then remove the charge file.
  void finish();

 private:
  void write(std::int64_t bytes);
  void run();

  std::optional<std::filesystem::path> sim_dir_;
  int gpu_;
  int pid_;
  std::chrono::milliseconds lag_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::int64_t shown_ = -1;
  std::optional<std::pair<std::int64_t, std::chrono::steady_clock::time_point>> pending_;
  bool stop_ = false;
  bool finished_ = false;  // after finish(): nothing is written any more
  std::thread worker_;
};

class Memory {
 public:
  Memory(ChargeKeeper& charge, bool real_device);
  ~Memory();
  Memory(const Memory&) = delete;
  Memory& operator=(const Memory&) = delete;

  // Decides whether blocks are real VRAM, for an engine that probes the GPU after it
  // started serving. Only before the first allocate().
  void use_device(bool real_device);

  // Make a block resident (allocating real VRAM when there is a device).
  Result<void> allocate(const std::string& name, std::int64_t bytes);
  // vLLM level 1: copy the block to host memory, then free the device memory.
  Result<void> offload(const std::string& name);
  // Bring an offloaded block back (allocate, copy back); false in `restored` when there
  // was no host copy (the block is allocated fresh, contents lost).
  Result<void> restore(const std::string& name, bool& restored);
  // Free the block's device memory and any host copy.
  void discard(const std::string& name);
  void discard_all();
  bool resident(const std::string& name) const;
  std::int64_t resident_bytes() const;

 private:
  struct Block {
    std::int64_t bytes = 0;
    bool on_device = false;
    bool backed_up = false;  // offloaded (level 1): contents survive a restore
    DeviceBlock device;
    std::unique_ptr<char[]> host;  // level-1 backup (real device only)
  };
  void publish();  // caller holds mu_

  ChargeKeeper& charge_;
  bool real_;
  mutable std::mutex mu_;
  std::map<std::string, Block> blocks_;
};

}  // namespace gpumod::engine
