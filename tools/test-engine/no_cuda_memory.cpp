// The engine built without CUDA: no real device memory; only the simulated charge is kept.
#include "tools/test-engine/engine_memory.hpp"

namespace gpumod::engine {

bool device_available(std::string& why) {
  why = "built without CUDA";
  return false;
}

Result<DeviceBlock> device_alloc(std::size_t) {
  return make_error("built without CUDA");
}
void device_free(DeviceBlock& block) {
  block = {};
}
Result<void> device_to_host(const DeviceBlock&, void*) {
  return make_error("built without CUDA");
}
Result<void> host_to_device(const void*, const DeviceBlock&) {
  return make_error("built without CUDA");
}
Result<DeviceMemInfo> device_mem_info() {
  return make_error("built without CUDA");
}

}  // namespace gpumod::engine
