// make_driver: picks the driver for a preset, and the names of health states.
#include "backends/driver.hpp"

namespace gpumod::backends {

const char* to_string(Health h) {
  switch (h) {
    case Health::ready:
      return "ready";
    case Health::loading:
      return "loading";
    case Health::down:
      return "down";
    case Health::error:
      return "error";
  }
  return "unknown";
}

std::unique_ptr<Driver> make_driver(const config::Preset& preset, std::chrono::milliseconds http_timeout) {
  switch (preset.driver) {
    case config::Driver::llamacpp:
      return make_llamacpp_driver(preset, http_timeout);
    case config::Driver::vllm:
      return make_vllm_driver(preset, http_timeout);
    case config::Driver::fastapi:
    case config::Driver::generic:
    case config::Driver::docker:
      return make_generic_driver(preset, http_timeout);
  }
  return make_generic_driver(preset, http_timeout);
}

}  // namespace gpumod::backends
