// The engine built with CUDA: real VRAM through the CUDA runtime (linked statically, so the
// engine needs only the NVIDIA driver at run time). CUDA_VISIBLE_DEVICES picks the GPU, so
// the process always uses device 0.
#include <cuda_runtime.h>

#include "tools/test-engine/engine_memory.hpp"

namespace gpumod::engine {

namespace {

std::string describe(const char* what, cudaError_t err) {
  return std::string(what) + ": " + cudaGetErrorName(err) + ": " + cudaGetErrorString(err);
}

}  // namespace

bool device_available(std::string& why) {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    why = "no CUDA device: " + describe("cudaGetDeviceCount", err);
    return false;
  }
  if (count == 0) {
    why = "no CUDA device visible";
    return false;
  }
  if (const cudaError_t set = cudaSetDevice(0); set != cudaSuccess) {
    why = describe("cudaSetDevice(0)", set);
    return false;
  }
  return true;
}

Result<DeviceBlock> device_alloc(std::size_t bytes) {
  DeviceBlock block;
  if (bytes == 0) return block;
  if (const cudaError_t err = cudaMalloc(&block.ptr, bytes); err != cudaSuccess) {
    return make_error(describe(("cudaMalloc(" + std::to_string(bytes) + ")").c_str(), err));
  }
  block.bytes = bytes;
  if (const cudaError_t err = cudaMemset(block.ptr, 0x5a, bytes); err != cudaSuccess) {
    cudaFree(block.ptr);
    return make_error(describe("cudaMemset", err));
  }
  cudaDeviceSynchronize();
  return block;
}

void device_free(DeviceBlock& block) {
  if (block.ptr != nullptr) {
    cudaFree(block.ptr);
    cudaDeviceSynchronize();
  }
  block = {};
}

Result<void> device_to_host(const DeviceBlock& block, void* host) {
  if (block.bytes == 0) return {};
  if (const cudaError_t err = cudaMemcpy(host, block.ptr, block.bytes, cudaMemcpyDeviceToHost);
      err != cudaSuccess) {
    return make_error(describe("cudaMemcpy device->host", err));
  }
  return {};
}

Result<void> host_to_device(const void* host, const DeviceBlock& block) {
  if (block.bytes == 0) return {};
  if (const cudaError_t err = cudaMemcpy(block.ptr, host, block.bytes, cudaMemcpyHostToDevice);
      err != cudaSuccess) {
    return make_error(describe("cudaMemcpy host->device", err));
  }
  return {};
}

Result<DeviceMemInfo> device_mem_info() {
  DeviceMemInfo info;
  if (const cudaError_t err = cudaMemGetInfo(&info.free_bytes, &info.total_bytes); err != cudaSuccess) {
    return make_error(describe("cudaMemGetInfo", err));
  }
  return info;
}

}  // namespace gpumod::engine
