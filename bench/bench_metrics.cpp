// /metrics rendering cost at the scale of a big host: 8 GPUs and 100 services, every histogram
// populated, every labelled series present. Also the cost of one event on the scheduler's path.
#include <benchmark/benchmark.h>

#include <sstream>
#include <string>
#include <vector>

#include "exporter/metrics.hpp"

namespace {

using gpumod::exporter::Metrics;

constexpr int kGpus = 8;
constexpr int kServices = 100;

std::vector<std::string> service_ids() {
  std::vector<std::string> ids;
  ids.reserve(kServices);
  for (int i = 0; i < kServices; ++i) ids.push_back("service-" + std::to_string(i));
  return ids;
}

void populate(Metrics& m, const std::vector<std::string>& ids) {
  for (int g = 0; g < kGpus; ++g) {
    m.register_gpu(g, "GPU-0000000" + std::to_string(g), "NVIDIA H100 80GB HBM3");
    m.set_gpu_memory(g, 80LL << 30, 60LL << 30, 20LL << 30, 58LL << 30);
    m.set_gpu_telemetry(g, 0.7, 55.0, 400.0);
    for (int k = 0; k < 50; ++k) m.observe_vram_release_wait(g, 0.01 * (k + 1));
  }
  m.set_services(ids);
  m.set_modes({"blank", "code", "rag", "nemotron"});
  int n = 0;
  for (const auto& id : ids) {
    m.set_service_state(id, n % 3 == 0 ? "ready" : (n % 3 == 1 ? "sleeping" : "stopped"));
    m.set_service_vram(id, 5000LL << 20, 4900LL << 20);
    for (int k = 0; k < 20; ++k) {
      m.inc_service_start(id);
      m.observe_start_seconds(id, 1.0 + k * 7.0);
      m.observe_wake_seconds(id, 0.1 * (k + 1));
    }
    m.inc_eviction(id, "sleep");
    m.inc_proxied_request(id, "/v1/chat/completions", 200);
    m.inc_proxied_request(id, "/v1/chat/completions", 503);
    ++n;
  }
  for (int k = 0; k < 100; ++k) m.observe_admission_wait(0.05 * k);
}

void BM_Render8Gpus100Services(benchmark::State& state) {
  Metrics m({"0.1.0", "bench", "g++"});
  populate(m, service_ids());
  std::size_t bytes = 0;
  while (state.KeepRunning()) {
    std::string text = m.render();
    bytes = text.size();
    benchmark::DoNotOptimize(text);
  }
  state.counters["bytes"] = static_cast<double>(bytes);
  const std::string text = m.render();
  std::size_t samples = 0;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    if (!line.empty() && line[0] != '#') ++samples;
  }
  state.counters["samples"] = static_cast<double>(samples);
}
BENCHMARK(BM_Render8Gpus100Services)->Unit(benchmark::kMillisecond);

void BM_ObserveStartSeconds100Services(benchmark::State& state) {
  Metrics m({"0.1.0", "bench", "g++"});
  const auto ids = service_ids();
  populate(m, ids);
  std::size_t i = 0;
  while (state.KeepRunning()) {
    m.observe_start_seconds(ids[i++ % ids.size()], 12.5);
  }
}
BENCHMARK(BM_ObserveStartSeconds100Services);

}  // namespace

BENCHMARK_MAIN();
