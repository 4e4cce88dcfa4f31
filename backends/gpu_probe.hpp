// GpuProbe: live readings of the GPUs. `nvml` reads a real driver (libnvidia-ml loaded with
// dlopen, so the build has no NVIDIA dependency); `sim` models a GPU whose usage is reported
// by the processes gpumod runs (the bundled test engine writes its charge to a file in the
// sim directory), with an optional release lag after a process exits, as a real driver has.
// A failed sample is an error value, never fatal.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/clock.hpp"
#include "base/result.hpp"
#include "config/config.hpp"

namespace gpumod::backends {

struct GpuSample {
  int index = 0;
  std::string uuid;
  std::string name;
  std::int64_t total_bytes = 0;
  std::int64_t used_bytes = 0;
  std::int64_t free_bytes = 0;
  std::optional<double> utilization_ratio;  // 0..1
  std::optional<double> temperature_celsius;
  std::optional<double> power_watts;
};

struct ProcessMemory {
  int gpu = 0;
  int pid = 0;
  std::int64_t used_bytes = 0;
};

struct ProbeSample {
  std::vector<GpuSample> gpus;
  std::vector<ProcessMemory> processes;
};

class GpuProbe {
 public:
  virtual ~GpuProbe() = default;
  virtual const char* kind() const = 0;  // "nvml" or "sim"
  virtual Result<ProbeSample> sample() = 0;
};

// Fails (as a value) when libnvidia-ml.so.1 cannot be opened or initialised.
Result<std::unique_ptr<GpuProbe>> make_nvml_probe();
// The same, from a named library (tests use a name that does not exist).
Result<std::unique_ptr<GpuProbe>> make_nvml_probe(const std::string& library);

// The environment variable through which processes find the sim directory, and the one
// that names their GPU (as for CUDA).
inline constexpr const char* kSimDirEnv = "GPUMOD_SIM_DIR";

std::unique_ptr<GpuProbe> make_sim_probe(std::vector<config::SimGpu> gpus, std::filesystem::path sim_dir,
                                         std::chrono::milliseconds release_lag, const Clock& clock);

// Charge file protocol shared by the sim probe and the test engine: the file
// <sim_dir>/<pid>.charge holds "<gpu> <bytes>\n", replaced atomically on every change and
// removed at clean exit. A charge file whose pid is gone keeps counting for `release_lag`.
Result<void> write_sim_charge(const std::filesystem::path& sim_dir, int pid, int gpu, std::int64_t bytes);
void remove_sim_charge(const std::filesystem::path& sim_dir, int pid);

}  // namespace gpumod::backends
