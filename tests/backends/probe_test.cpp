// The simulated GPU probe (charge files, release lag on the injected clock) and the NVML
// probe's failure path on a machine without the NVIDIA driver.
#include <gtest/gtest.h>

#include "backends/gpu_probe.hpp"
#include "tests/backends/engine_harness.hpp"

namespace gpumod::backends {
namespace {

using gpumod::testing::EngineProcess;
using gpumod::testing::eventually;
using gpumod::testing::free_port;
using gpumod::testing::kMiB;
using gpumod::testing::TempDir;
using namespace std::chrono_literals;

std::vector<config::SimGpu> two_gpus() {
  config::SimGpu a;
  a.name = "sim 24G";
  a.memory_mb = 24576;
  config::SimGpu b;
  b.name = "sim 8G";
  b.memory_mb = 8192;
  return {a, b};
}

// A pid that certainly belonged to a process that has now exited (and been reaped).
int dead_pid() {
  const pid_t pid = ::fork();
  if (pid == 0) ::_exit(0);
  int status = 0;
  ::waitpid(pid, &status, 0);
  return pid;
}

const ProcessMemory* find_process(const ProbeSample& s, int pid) {
  for (const auto& p : s.processes) {
    if (p.pid == pid) return &p;
  }
  return nullptr;
}

TEST(SimProbe, ReportsCapacityAndChargesPerGpu) {
  TempDir dir;
  ManualClock clock;
  auto probe = make_sim_probe(two_gpus(), dir.path(), 0ms, clock);
  EXPECT_STREQ(probe->kind(), "sim");
  ASSERT_TRUE(write_sim_charge(dir.path(), ::getpid(), 1, 3000 * kMiB).ok());
  auto s = probe->sample();
  ASSERT_TRUE(s.ok()) << s.error();
  ASSERT_EQ(s->gpus.size(), 2U);
  EXPECT_EQ(s->gpus[0].uuid, "GPU-sim-0");
  EXPECT_EQ(s->gpus[1].name, "sim 8G");
  EXPECT_EQ(s->gpus[0].total_bytes, 24576 * kMiB);
  EXPECT_EQ(s->gpus[0].used_bytes, 0);
  EXPECT_EQ(s->gpus[1].used_bytes, 3000 * kMiB);
  EXPECT_EQ(s->gpus[1].free_bytes, (8192 - 3000) * kMiB);
  const auto* me = find_process(*s, ::getpid());
  ASSERT_NE(me, nullptr);
  EXPECT_EQ(me->gpu, 1);
  EXPECT_EQ(me->used_bytes, 3000 * kMiB);

  remove_sim_charge(dir.path(), ::getpid());
  s = probe->sample();
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->gpus[1].used_bytes, 0);
  EXPECT_TRUE(s->processes.empty());
}

TEST(SimProbe, MissingSimDirMeansAnIdleGpu) {
  ManualClock clock;
  auto probe = make_sim_probe(two_gpus(), "/nonexistent/gpumod-sim-dir", 0ms, clock);
  auto s = probe->sample();
  ASSERT_TRUE(s.ok()) << s.error();
  EXPECT_EQ(s->gpus[0].free_bytes, s->gpus[0].total_bytes);
}

TEST(SimProbe, DeadProcessKeepsItsMemoryForTheReleaseLag) {
  TempDir dir;
  ManualClock clock;
  auto probe = make_sim_probe(two_gpus(), dir.path(), 500ms, clock);
  const int pid = dead_pid();
  ASSERT_TRUE(write_sim_charge(dir.path(), pid, 0, 2000 * kMiB).ok());

  auto s = probe->sample();  // first seen dead now
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->gpus[0].used_bytes, 2000 * kMiB);
  clock.advance(499ms);
  s = probe->sample();
  EXPECT_EQ(s->gpus[0].used_bytes, 2000 * kMiB);
  clock.advance(1ms);
  s = probe->sample();
  EXPECT_EQ(s->gpus[0].used_bytes, 0);
  EXPECT_FALSE(std::filesystem::exists(dir.path() / (std::to_string(pid) + ".charge")));
}

TEST(SimProbe, ChargeOnAGpuThatDoesNotExistIsIgnored) {
  TempDir dir;
  ManualClock clock;
  auto probe = make_sim_probe(two_gpus(), dir.path(), 0ms, clock);
  ASSERT_TRUE(write_sim_charge(dir.path(), ::getpid(), 7, 100 * kMiB).ok());
  auto s = probe->sample();
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->gpus[0].used_bytes + s->gpus[1].used_bytes, 0);
  remove_sim_charge(dir.path(), ::getpid());
}

TEST(SimProbe, EngineChargeAppearsAndLingersAfterSigkill) {
  TempDir dir;
  const auto sim = dir.path() / "sim";
  ManualClock clock;
  auto probe = make_sim_probe(two_gpus(), sim, 1000ms, clock);
  const int port = free_port();
  EngineProcess engine(
      {"--port", std::to_string(port), "--protocol", "llamacpp", "--model", "m", "--vram-mb", "700"}, sim,
      dir.path() / "engine.log");
  ASSERT_TRUE(eventually([&] {
    auto s = probe->sample();
    return s.ok() && s->gpus[0].used_bytes == 700 * kMiB;
  }));
  auto s = probe->sample();
  const auto* p = find_process(*s, engine.pid());
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(p->used_bytes, 700 * kMiB);

  engine.signal(SIGKILL);
  ASSERT_TRUE(engine.wait_exit().has_value());
  s = probe->sample();  // seen dead: the lag starts now
  EXPECT_EQ(s->gpus[0].used_bytes, 700 * kMiB);
  clock.advance(999ms);
  EXPECT_EQ(probe->sample()->gpus[0].used_bytes, 700 * kMiB);
  clock.advance(1ms);
  EXPECT_EQ(probe->sample()->gpus[0].used_bytes, 0);
}

TEST(NvmlProbe, MissingLibraryIsAnErrorValue) {
  auto probe = make_nvml_probe("libnvidia-ml-gpumod-test-absent.so.1");
  ASSERT_FALSE(probe.ok());
  EXPECT_NE(probe.error().find("libnvidia-ml-gpumod-test-absent.so.1"), std::string::npos) << probe.error();
}

TEST(NvmlProbe, RealLibraryEitherSamplesOrFailsCleanly) {
  auto probe = make_nvml_probe();
  if (!probe.ok()) {
    EXPECT_NE(probe.error().find("libnvidia-ml"), std::string::npos) << probe.error();
    return;
  }
  auto s = (*probe)->sample();
  ASSERT_TRUE(s.ok()) << s.error();
  ASSERT_FALSE(s->gpus.empty());
  EXPECT_GT(s->gpus[0].total_bytes, 0);
  EXPECT_FALSE(s->gpus[0].uuid.empty());
}

}  // namespace
}  // namespace gpumod::backends
