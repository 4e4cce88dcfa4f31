// Planner micro-benchmark: one policy::plan() call on clusters of 1, 2 and 8 GPUs with 8, 64
// and 256 services. Every cluster is a realistic mix — ready (some sleep-capable), sleeping,
// pinned, leased and stopped services, one port sharer — filled so that the request needs
// evictions. Targets (issue 3): 8 GPUs x 64 services < 10 us, 8 x 256 < 50 us per plan.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <string>
#include <vector>

#include "policy/planner.hpp"

namespace {

using gpumod::policy::Bytes;
using gpumod::policy::GpuView;
using gpumod::policy::Outcome;
using gpumod::policy::PlanRequest;
using gpumod::policy::ServiceView;
using gpumod::policy::SvcState;

constexpr Bytes kGiB = Bytes{1} << 30;

struct Cluster {
  std::vector<GpuView> gpus;
  std::vector<ServiceView> services;
  PlanRequest request;
};

// Services are spread round-robin over the GPUs and sized so each GPU is nearly full. Roles
// cycle through: pinned, leased, three sleep-capable ready ones, a ready one that cannot sleep,
// two sleeping ones. The target is a stopped 40 GiB service that shares its port with service 2.
Cluster make_cluster(int gpu_count, int service_count) {
  Cluster c;
  for (int g = 0; g < gpu_count; ++g) {
    GpuView v;
    v.index = g;
    v.total = 80 * kGiB;
    v.headroom = 1 * kGiB;
    c.gpus.push_back(v);
  }
  const int per_gpu = std::max(1, service_count / gpu_count);
  const Bytes share = (c.gpus[0].total * 95 / 100) / per_gpu;
  for (int i = 0; i < service_count; ++i) {
    ServiceView s;
    s.id = "svc-" + std::to_string(i);
    s.gpu = i % gpu_count;
    s.vram = share * 8 / 10 + share * ((i * 37) % 11) / 50;  // 0.8x to 1.0x the fair share
    s.priority = 20 + (i * 13) % 40;                         // 20..59, below the request's 60
    s.last_used = (i * 7919) % 1000;
    s.cold_start_s = 10.0 + (i % 17) * 10.0;
    s.wake_s = 0.5 + (i % 5) * 1.0;
    s.sleep_residual = s.vram / 10;
    switch (i % 8) {
      case 0:
        s.state = SvcState::ready;
        s.pinned = true;
        break;
      case 1:
        s.state = SvcState::ready;
        s.leases = 1;
        break;
      case 2:
      case 3:
      case 4:
        s.state = SvcState::ready;
        s.can_sleep = true;
        break;
      case 5:
        s.state = SvcState::ready;
        break;
      default:
        s.state = SvcState::sleeping;
        s.can_sleep = true;
        break;
    }
    GpuView& g = c.gpus[static_cast<std::size_t>(s.gpu)];
    const Bytes charge = gpumod::policy::charge_of(s);
    if (g.ledger + charge > g.total - g.headroom) {
      s.state = SvcState::stopped;  // does not fit any more: a stopped preset
    } else {
      g.ledger += charge;
    }
    c.services.push_back(s);
  }
  if (service_count > 2) c.services[2].port = 7070;
  for (auto& g : c.gpus) g.live_free = g.total - g.ledger;
  ServiceView target;
  target.id = "target";
  target.state = SvcState::stopped;
  target.vram = 40 * kGiB;
  target.port = 7070;
  c.services.push_back(target);
  c.request.target = c.services.size() - 1;
  c.request.priority = 60;
  return c;
}

void BM_Plan(benchmark::State& state) {
  const Cluster c = make_cluster(static_cast<int>(state.range(0)), static_cast<int>(state.range(1)));
  const auto check = gpumod::policy::plan(c.gpus, c.services, c.request);
  if (check.outcome != Outcome::plan || check.actions.size() <= 2) {
    state.SkipWithError(("cluster does not need evictions: " + check.reason).c_str());
    return;
  }
  for (auto _ : state) {  // NOLINT(clang-analyzer-deadcode.DeadStores): the benchmark loop idiom
    auto p = gpumod::policy::plan(c.gpus, c.services, c.request);
    benchmark::DoNotOptimize(p);
  }
  state.counters["actions"] = static_cast<double>(check.actions.size());
}

BENCHMARK(BM_Plan)->ArgNames({"gpus", "services"})->ArgsProduct({{1, 2, 8}, {8, 64, 256}});

}  // namespace

BENCHMARK_MAIN();
