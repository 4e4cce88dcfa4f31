// The NVML probe: libnvidia-ml.so.1 opened at run time with dlopen, so the binary has no
// NVIDIA build or link dependency. Only the few NVML types and functions used are declared
// here, after the NVML API reference. Functions that older drivers lack are optional.
#include <dlfcn.h>

#include <mutex>

#include "backends/gpu_probe.hpp"

namespace gpumod::backends {

namespace {

// --- minimal NVML declarations (layouts per the NVML API reference) ---
using nvmlReturn_t = int;
using nvmlDevice_t = struct nvmlDeviceOpaque*;
constexpr nvmlReturn_t kNvmlSuccess = 0;
constexpr nvmlReturn_t kNvmlErrorInsufficientSize = 7;
constexpr unsigned kNvmlTemperatureGpu = 0;
constexpr unsigned long long kNvmlValueNotAvailable = ~0ULL;
constexpr unsigned kNvmlStringBuffer = 96;  // >= NVML_DEVICE_UUID_V2_BUFFER_SIZE and NAME_V2_BUFFER_SIZE

struct nvmlMemory_t {
  unsigned long long total;
  unsigned long long free;
  unsigned long long used;
};
struct nvmlUtilization_t {
  unsigned int gpu;
  unsigned int memory;
};
// Layout used by nvmlDeviceGetComputeRunningProcesses_v2 and _v3.
struct nvmlProcessInfo_t {
  unsigned int pid;
  unsigned long long usedGpuMemory;
  unsigned int gpuInstanceId;
  unsigned int computeInstanceId;
};

using InitFn = nvmlReturn_t (*)();
using ShutdownFn = nvmlReturn_t (*)();
using ErrorStringFn = const char* (*)(nvmlReturn_t);
using CountFn = nvmlReturn_t (*)(unsigned int*);
using HandleFn = nvmlReturn_t (*)(unsigned int, nvmlDevice_t*);
using StringFn = nvmlReturn_t (*)(nvmlDevice_t, char*, unsigned int);
using MemoryFn = nvmlReturn_t (*)(nvmlDevice_t, nvmlMemory_t*);
using UtilFn = nvmlReturn_t (*)(nvmlDevice_t, nvmlUtilization_t*);
using TempFn = nvmlReturn_t (*)(nvmlDevice_t, unsigned int, unsigned int*);
using PowerFn = nvmlReturn_t (*)(nvmlDevice_t, unsigned int*);
using ProcsFn = nvmlReturn_t (*)(nvmlDevice_t, unsigned int*, nvmlProcessInfo_t*);

// Owns the dlopen handle.
class Library {
 public:
  explicit Library(void* handle) : handle_(handle) {}
  ~Library() {
    if (handle_ != nullptr) ::dlclose(handle_);
  }
  Library(const Library&) = delete;
  Library& operator=(const Library&) = delete;

  template <typename Fn>
  Fn symbol(const char* name) const {
    return reinterpret_cast<Fn>(::dlsym(handle_, name));  // NOLINT: dlsym returns void*
  }

 private:
  void* handle_;
};

struct Api {
  InitFn init = nullptr;
  ShutdownFn shutdown = nullptr;
  ErrorStringFn error_string = nullptr;
  CountFn count = nullptr;
  HandleFn handle = nullptr;
  MemoryFn memory = nullptr;
  StringFn uuid = nullptr;       // optional
  StringFn name = nullptr;       // optional
  UtilFn utilization = nullptr;  // optional
  TempFn temperature = nullptr;  // optional
  PowerFn power = nullptr;       // optional
  ProcsFn processes = nullptr;   // optional: _v3, else _v2
};

class NvmlProbe final : public GpuProbe {
 public:
  NvmlProbe(std::unique_ptr<Library> lib, Api api) : lib_(std::move(lib)), api_(api) {}
  ~NvmlProbe() override { api_.shutdown(); }
  NvmlProbe(const NvmlProbe&) = delete;
  NvmlProbe& operator=(const NvmlProbe&) = delete;

  const char* kind() const override { return "nvml"; }

  Result<ProbeSample> sample() override {
    std::lock_guard lock(mu_);
    ProbeSample out;
    unsigned int count = 0;
    if (auto rc = api_.count(&count); rc != kNvmlSuccess) return fail("nvmlDeviceGetCount_v2", rc);
    for (unsigned int i = 0; i < count; ++i) {
      nvmlDevice_t dev = nullptr;
      if (auto rc = api_.handle(i, &dev); rc != kNvmlSuccess)
        return fail("nvmlDeviceGetHandleByIndex_v2", rc);
      GpuSample g;
      g.index = static_cast<int>(i);
      nvmlMemory_t mem{};
      if (auto rc = api_.memory(dev, &mem); rc != kNvmlSuccess) return fail("nvmlDeviceGetMemoryInfo", rc);
      g.total_bytes = static_cast<std::int64_t>(mem.total);
      g.free_bytes = static_cast<std::int64_t>(mem.free);
      g.used_bytes = static_cast<std::int64_t>(mem.used);
      char text[kNvmlStringBuffer] = {};
      if (api_.uuid != nullptr && api_.uuid(dev, text, sizeof text) == kNvmlSuccess) g.uuid = text;
      text[0] = '\0';
      if (api_.name != nullptr && api_.name(dev, text, sizeof text) == kNvmlSuccess) g.name = text;
      nvmlUtilization_t util{};
      if (api_.utilization != nullptr && api_.utilization(dev, &util) == kNvmlSuccess) {
        g.utilization_ratio = util.gpu / 100.0;
      }
      unsigned int value = 0;
      if (api_.temperature != nullptr && api_.temperature(dev, kNvmlTemperatureGpu, &value) == kNvmlSuccess) {
        g.temperature_celsius = value;
      }
      if (api_.power != nullptr && api_.power(dev, &value) == kNvmlSuccess) g.power_watts = value / 1000.0;
      out.gpus.push_back(std::move(g));
      add_processes(dev, static_cast<int>(i), out.processes);
    }
    return out;
  }

 private:
  Error fail(const char* what, nvmlReturn_t rc) const {
    const char* text = api_.error_string != nullptr ? api_.error_string(rc) : nullptr;
    return make_error(std::string("NVML ") + what + " failed: " + (text != nullptr ? text : "error") + " (" +
                      std::to_string(rc) + ")");
  }

  // Per-process memory is best effort: a failure here leaves the list short, not the sample failed.
  void add_processes(nvmlDevice_t dev, int gpu, std::vector<ProcessMemory>& out) const {
    if (api_.processes == nullptr) return;
    unsigned int n = 0;
    auto rc = api_.processes(dev, &n, nullptr);
    if (rc != kNvmlErrorInsufficientSize) return;  // success here means none; anything else: unsupported
    std::vector<nvmlProcessInfo_t> infos(n + 8);   // room for processes that start meanwhile
    n = static_cast<unsigned int>(infos.size());
    if (api_.processes(dev, &n, infos.data()) != kNvmlSuccess) return;
    for (unsigned int k = 0; k < n && k < infos.size(); ++k) {
      const auto& p = infos[k];
      const std::int64_t bytes =
          p.usedGpuMemory == kNvmlValueNotAvailable ? 0 : static_cast<std::int64_t>(p.usedGpuMemory);
      out.push_back(ProcessMemory{gpu, static_cast<int>(p.pid), bytes});
    }
  }

  std::mutex mu_;
  std::unique_ptr<Library> lib_;
  Api api_;
};

}  // namespace

Result<std::unique_ptr<GpuProbe>> make_nvml_probe() {
  return make_nvml_probe("libnvidia-ml.so.1");
}

Result<std::unique_ptr<GpuProbe>> make_nvml_probe(const std::string& library) {
  void* handle = ::dlopen(library.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    const char* why = ::dlerror();
    return make_error("cannot open " + library +
                      " (no NVIDIA driver here?): " + (why != nullptr ? why : "unknown"));
  }
  auto lib = std::make_unique<Library>(handle);
  Api api;
  api.init = lib->symbol<InitFn>("nvmlInit_v2");
  api.shutdown = lib->symbol<ShutdownFn>("nvmlShutdown");
  api.error_string = lib->symbol<ErrorStringFn>("nvmlErrorString");
  api.count = lib->symbol<CountFn>("nvmlDeviceGetCount_v2");
  api.handle = lib->symbol<HandleFn>("nvmlDeviceGetHandleByIndex_v2");
  api.memory = lib->symbol<MemoryFn>("nvmlDeviceGetMemoryInfo");
  api.uuid = lib->symbol<StringFn>("nvmlDeviceGetUUID");
  api.name = lib->symbol<StringFn>("nvmlDeviceGetName");
  api.utilization = lib->symbol<UtilFn>("nvmlDeviceGetUtilizationRates");
  api.temperature = lib->symbol<TempFn>("nvmlDeviceGetTemperature");
  api.power = lib->symbol<PowerFn>("nvmlDeviceGetPowerUsage");
  api.processes = lib->symbol<ProcsFn>("nvmlDeviceGetComputeRunningProcesses_v3");
  if (api.processes == nullptr)
    api.processes = lib->symbol<ProcsFn>("nvmlDeviceGetComputeRunningProcesses_v2");

  for (const auto& [fn, name] :
       {std::pair{reinterpret_cast<void*>(api.init), "nvmlInit_v2"},  // NOLINT
        std::pair{reinterpret_cast<void*>(api.shutdown), "nvmlShutdown"},
        std::pair{reinterpret_cast<void*>(api.count), "nvmlDeviceGetCount_v2"},
        std::pair{reinterpret_cast<void*>(api.handle), "nvmlDeviceGetHandleByIndex_v2"},
        std::pair{reinterpret_cast<void*>(api.memory), "nvmlDeviceGetMemoryInfo"}}) {
    if (fn == nullptr) return make_error(library + " lacks " + name + " (driver too old?)");
  }
  if (const auto rc = api.init(); rc != kNvmlSuccess) {
    const char* text = api.error_string != nullptr ? api.error_string(rc) : nullptr;
    return make_error("nvmlInit_v2 failed: " + std::string(text != nullptr ? text : "error") + " (" +
                      std::to_string(rc) + ")");
  }
  return std::unique_ptr<GpuProbe>(std::make_unique<NvmlProbe>(std::move(lib), api));
}

}  // namespace gpumod::backends
