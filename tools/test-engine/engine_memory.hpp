// Device memory for the test engine: real VRAM through the CUDA runtime when the engine is
// built with CUDA and a GPU is visible, nothing otherwise (the simulated GPU's charge file
// is kept either way). One interface, two implementations: cuda_memory.cu and
// no_cuda_memory.cpp; CMake compiles exactly one of them.
#pragma once

#include <cstddef>
#include <string>

#include "base/result.hpp"

namespace gpumod::engine {

struct DeviceBlock {
  void* ptr = nullptr;
  std::size_t bytes = 0;
};

struct DeviceMemInfo {
  std::size_t free_bytes = 0;
  std::size_t total_bytes = 0;
};

// True when real device memory can be used; otherwise `why` says why not
// ("built without CUDA", "no CUDA device: ...").
bool device_available(std::string& why);
// Allocates and writes the block, so the memory is really resident.
Result<DeviceBlock> device_alloc(std::size_t bytes);
void device_free(DeviceBlock& block);
Result<void> device_to_host(const DeviceBlock& block, void* host);
Result<void> host_to_device(const void* host, const DeviceBlock& block);
Result<DeviceMemInfo> device_mem_info();

}  // namespace gpumod::engine
