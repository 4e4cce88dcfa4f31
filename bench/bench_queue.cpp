// Admission queue operations with 10,000 queued requests, and the core's fast path for a
// model that is already ready (what every /request for a warm model costs on the loop).
#include <benchmark/benchmark.h>

#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "scheduler/admission_queue.hpp"
#include "scheduler/core.hpp"
#include "scheduler/scheduler.hpp"

namespace {

using gpumod::scheduler::AdmissionQueue;
using gpumod::scheduler::QueuedRequest;
using gpumod::scheduler::TimePoint;
using namespace std::chrono_literals;

constexpr int kQueued = 10000;
const TimePoint kT0 = TimePoint(std::chrono::hours(1));

// 10,000 requests over 101 priorities and 64 services, arriving 10 ms apart.
AdmissionQueue filled(std::chrono::milliseconds aging = 30s) {
  AdmissionQueue q(kQueued + 16, aging);
  std::uint32_t x = 7;
  for (int i = 0; i < kQueued; ++i) {
    x = x * 1664525u + 1013904223u;
    const TimePoint at = kT0 + std::chrono::milliseconds(10 * i);
    q.push(QueuedRequest{"r" + std::to_string(i), "svc" + std::to_string(x % 64), static_cast<int>(x % 101),
                         at, at + 10min, 0});
  }
  return q;
}

const TimePoint kNow = kT0 + std::chrono::milliseconds(10 * kQueued);

void BM_QueuePushCancel(benchmark::State& state) {
  AdmissionQueue q = filled();
  int i = 0;
  for (auto _ : state) {
    const std::string id = "extra" + std::to_string(i++ % 8);
    benchmark::DoNotOptimize(q.push(QueuedRequest{id, "svc1", 50, kNow, kNow + 1min, 0}));
    benchmark::DoNotOptimize(q.cancel(id));
  }
}
BENCHMARK(BM_QueuePushCancel);

// Admit the front request and let a new one arrive: the steady state of a busy queue.
void BM_QueuePopFrontAndPush(benchmark::State& state) {
  AdmissionQueue q = filled();
  int i = 0;
  TimePoint now = kNow;
  for (auto _ : state) {
    const QueuedRequest* front = q.front(now);
    const std::string id = front->id;
    benchmark::DoNotOptimize(q.cancel(id));
    now += 1ms;
    q.push(
        QueuedRequest{"n" + std::to_string(i), "svc" + std::to_string(i % 64), i % 101, now, now + 10min, 0});
    ++i;
  }
}
BENCHMARK(BM_QueuePopFrontAndPush);

void BM_QueueCancelMiddleAndRepush(benchmark::State& state) {
  AdmissionQueue q = filled();
  for (auto _ : state) {
    auto r = q.cancel("r5000");
    q.push(*r);
  }
}
BENCHMARK(BM_QueueCancelMiddleAndRepush);

// The effective-priority front with aging across every priority.
void BM_QueueFrontWithAging(benchmark::State& state) {
  AdmissionQueue q = filled(1s);
  for (auto _ : state) benchmark::DoNotOptimize(q.front(kNow));
}
BENCHMARK(BM_QueueFrontWithAging);

// A full ordered walk (what the core does when it looks for backfill candidates).
void BM_QueueOrderedWalkWithAging(benchmark::State& state) {
  AdmissionQueue q = filled(1s);
  for (auto _ : state) benchmark::DoNotOptimize(q.ordered(kNow));
  state.SetItemsProcessed(state.iterations() * kQueued);
}
BENCHMARK(BM_QueueOrderedWalkWithAging);

void BM_QueueExpireNothingDue(benchmark::State& state) {
  AdmissionQueue q = filled();
  for (auto _ : state) benchmark::DoNotOptimize(q.expire(kNow));
}
BENCHMARK(BM_QueueExpireNothingDue);

void BM_QueueTakeService(benchmark::State& state) {
  for (auto _ : state) {
    state.PauseTiming();
    auto q = std::make_unique<AdmissionQueue>(filled());
    state.ResumeTiming();
    benchmark::DoNotOptimize(q->take_service("svc7", kNow));  // ~156 of the 10,000
    state.PauseTiming();
    q.reset();  // freeing 10,000 requests is not part of it
    state.ResumeTiming();
  }
}
BENCHMARK(BM_QueueTakeService)->Iterations(200);

// The core's answer to a request for a ready model: submit + take_output.
void BM_CoreSubmitReadyModel(benchmark::State& state) {
  gpumod::config::Config cfg;
  for (int i = 0; i < 16; ++i) {
    gpumod::config::Preset p;
    p.id = "svc" + std::to_string(i);
    p.port = 8000 + i;
    p.vram_mb = 1000;
    cfg.presets.push_back(p);
  }
  gpumod::scheduler::SchedulerCore core(cfg, nullptr);
  gpumod::backends::ProbeSample sample;
  gpumod::backends::GpuSample g;
  g.total_bytes = g.free_bytes = 24LL << 30;
  sample.gpus.push_back(g);
  core.on_probe_sample(sample, kT0, kT0);
  gpumod::backends::RunInfo run;
  run.service_id = "svc3";
  run.pid = 4242;
  core.adopt({run}, "", kT0);
  for (const auto& e : core.take_output().effects) {
    gpumod::scheduler::OpDone d;
    d.op = e.op;
    d.health = gpumod::backends::Health::ready;
    core.on_op_done(d, kT0);
  }
  (void)core.take_output();
  std::uint64_t n = 0;
  for (auto _ : state) {
    gpumod::scheduler::RequestSpec spec;
    spec.model = "svc3";
    spec.request_id = "q" + std::to_string(n++);
    core.submit(std::move(spec), kNow);
    auto out = core.take_output();
    benchmark::DoNotOptimize(out);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_CoreSubmitReadyModel);

// --- the threaded shell: submit() -> loop thread -> future, for a model already ready ---
class IdleProbe final : public gpumod::backends::GpuProbe {
 public:
  const char* kind() const override { return "bench"; }
  gpumod::Result<gpumod::backends::ProbeSample> sample() override {
    gpumod::backends::ProbeSample s;
    gpumod::backends::GpuSample g;
    g.total_bytes = g.free_bytes = 24LL << 30;
    s.gpus.push_back(g);
    return s;
  }
};
class AdoptingRunner final : public gpumod::backends::Runner {
 public:
  const char* kind() const override { return "bench"; }
  gpumod::Result<gpumod::backends::RunInfo> start(const gpumod::backends::LaunchSpec&) override {
    return gpumod::make_error("not used");
  }
  gpumod::Result<void> stop(const std::string&, std::chrono::milliseconds, const StopSignalled&) override {
    return {};
  }
  std::optional<gpumod::backends::ExitInfo> poll_exit(const std::string&) override { return std::nullopt; }
  bool running(const std::string&) override { return true; }
  std::vector<int> pids(const std::string&) override { return {}; }
  std::vector<gpumod::backends::RunInfo> adopt() override {
    gpumod::backends::RunInfo r;
    r.service_id = "svc3";
    r.pid = 4242;
    return {r};
  }
};
class HealthyDriver final : public gpumod::backends::Driver {
 public:
  const char* kind() const override { return "bench"; }
  gpumod::Result<void> preflight(std::int64_t, std::int64_t) override { return {}; }
  gpumod::backends::HealthResult health() override { return {gpumod::backends::Health::ready, ""}; }
  gpumod::Result<void> activate(std::chrono::milliseconds) override { return {}; }
  gpumod::Result<void> sleep() override { return {}; }
  gpumod::Result<void> wake() override { return {}; }
  gpumod::Result<bool> is_sleeping() override { return false; }
  gpumod::Result<std::vector<gpumod::backends::RouterModel>> list_models() override {
    return gpumod::make_error("no");
  }
  gpumod::Result<void> load_model(const std::string&) override { return {}; }
  gpumod::Result<void> unload_model(const std::string&) override { return {}; }
};

void BM_SchedulerSubmitReadyModelRoundTrip(benchmark::State& state) {
  gpumod::config::Config cfg;
  for (int i = 0; i < 16; ++i) {
    gpumod::config::Preset p;
    p.id = "svc" + std::to_string(i);
    p.port = 8000 + i;
    p.vram_mb = 1000;
    cfg.presets.push_back(p);
  }
  IdleProbe probe;
  AdoptingRunner runner;
  gpumod::scheduler::Deps deps;
  deps.probe = &probe;
  deps.process_runner = &runner;
  deps.make_driver = [](const gpumod::config::Preset&) { return std::make_unique<HealthyDriver>(); };
  gpumod::scheduler::Scheduler sched(cfg, deps);
  sched.start();
  for (int i = 0; i < 2000; ++i) {  // wait (bounded) until the adopted service is verified ready
    auto t = sched.submit(gpumod::scheduler::RequestSpec{"svc3", {}, {}, {}, false, ""});
    if (t.outcome.get().refusal == gpumod::scheduler::Refusal::none) break;
    std::this_thread::sleep_for(1ms);
  }
  for (auto _ : state) {
    auto t = sched.submit(gpumod::scheduler::RequestSpec{"svc3", {}, {}, {}, false, ""});
    benchmark::DoNotOptimize(t.outcome.get().refusal);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_SchedulerSubmitReadyModelRoundTrip)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
