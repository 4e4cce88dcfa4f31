// Hand-written cases, one per planner rule, in the words an operator would use.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "cluster.hpp"
#include "policy/planner.hpp"

namespace gpumod::policy {
namespace {

using testing::Cluster;
using testing::kGiB;
using testing::kMiB;
using testing::service;

// Actions as short text, e.g. "sleep emb@0, wait_free 0 10240MiB, start qwen@0".
std::string describe(const Cluster& c, const Plan& p) {
  std::string out;
  for (const auto& a : p.actions) {
    if (!out.empty()) out += ", ";
    out += to_string(a.kind);
    if (a.kind == ActionKind::wait_free) {
      out += " " + std::to_string(a.gpu) + " " + std::to_string(a.bytes / kMiB) + "MiB";
    } else {
      out += " " + c.services[a.service].id + "@" + std::to_string(a.gpu);
    }
  }
  return out;
}

void expect_replays_cleanly(Cluster& c, std::size_t target, const Plan& p, int priority = 50) {
  c.settle();
  EXPECT_EQ(testing::replay(c.gpus, c.services, PlanRequest{target, priority}, p), "");
}

TEST(PlannerRules, ReadyTargetIsAlreadyReady) {
  Cluster c;
  c.add_gpu(24 * kGiB);
  const auto t = c.add(service("qwen", SvcState::ready, 0, 20 * kGiB));
  const Plan p = c.plan_for(t);
  EXPECT_EQ(p.outcome, Outcome::already_ready);
  EXPECT_TRUE(p.actions.empty());
  EXPECT_EQ(p.gpu, 0);
}

TEST(PlannerRules, StartingOrWakingTargetIsJoined) {
  Cluster c;
  c.add_gpu(24 * kGiB);
  const auto t = c.add(service("qwen", SvcState::starting, 0, 20 * kGiB));
  EXPECT_EQ(c.plan_for(t).outcome, Outcome::in_progress);
  c[t].state = SvcState::waking;
  EXPECT_EQ(c.plan_for(t).outcome, Outcome::in_progress);
}

TEST(PlannerRules, StoppingTargetWaits) {
  Cluster c;
  c.add_gpu(24 * kGiB);
  const auto t = c.add(service("qwen", SvcState::stopping, 0, 20 * kGiB));
  const Plan p = c.plan_for(t);
  EXPECT_EQ(p.outcome, Outcome::wait);
  EXPECT_NE(p.reason.find("stopping"), std::string::npos) << p.reason;
}

TEST(PlannerRules, StartOnEmptyGpuStillWaitsForLiveFreeFirst) {
  Cluster c;
  c.add_gpu(24 * kGiB, 512 * kMiB);
  const auto t = c.add(service("qwen", SvcState::stopped, -1, 20000 * kMiB));
  const Plan p = c.plan_for(t);
  ASSERT_EQ(p.outcome, Outcome::plan) << p.reason;
  EXPECT_EQ(describe(c, p), "wait_free 0 20512MiB, start qwen@0");
  EXPECT_EQ(p.gpu, 0);
  expect_replays_cleanly(c, t, p);
}

TEST(PlannerRules, FailedTargetIsStartedLikeAStoppedOne) {
  Cluster c;
  c.add_gpu(24 * kGiB);
  const auto t = c.add(service("qwen", SvcState::failed, 0, 4 * kGiB));
  const Plan p = c.plan_for(t);
  ASSERT_EQ(p.outcome, Outcome::plan);
  EXPECT_EQ(describe(c, p), "wait_free 0 4096MiB, start qwen@0");
}

TEST(PlannerRules, SleepIsPreferredOverStopWhenItFreesEnough) {
  Cluster c;
  c.add_gpu(24 * kGiB);
  auto a = service("devstral", SvcState::ready, 0, 20 * kGiB);
  a.can_sleep = true;
  a.sleep_residual = 1 * kGiB;
  c.add(a);
  const auto t = c.add(service("emb", SvcState::stopped, -1, 10 * kGiB));
  const Plan p = c.plan_for(t);
  ASSERT_EQ(p.outcome, Outcome::plan) << p.reason;
  EXPECT_EQ(describe(c, p), "sleep devstral@0, wait_free 0 10240MiB, start emb@0");
  expect_replays_cleanly(c, t, p);
}

TEST(PlannerRules, StopWhenSleepingDoesNotFreeEnough) {
  Cluster c;
  c.add_gpu(24 * kGiB);
  auto a = service("devstral", SvcState::ready, 0, 20 * kGiB);
  a.can_sleep = true;
  a.sleep_residual = 12 * kGiB;  // sleeping frees only 8 GiB; 4 + 8 < 14
  c.add(a);
  const auto t = c.add(service("emb", SvcState::stopped, -1, 14 * kGiB));
  const Plan p = c.plan_for(t);
  ASSERT_EQ(p.outcome, Outcome::plan) << p.reason;
  EXPECT_EQ(describe(c, p), "stop devstral@0, wait_free 0 14336MiB, start emb@0");
  expect_replays_cleanly(c, t, p);
}

TEST(PlannerRules, ASleepingServiceCanOnlyBeStopped) {
  Cluster c;
  c.add_gpu(10 * kGiB);
  auto a = service("old", SvcState::sleeping, 0, 8 * kGiB);
  a.can_sleep = true;
  a.sleep_residual = 3 * kGiB;
  c.add(a);
  const auto t = c.add(service("new", SvcState::stopped, -1, 8 * kGiB));  // 7 GiB free
  const Plan p = c.plan_for(t);
  ASSERT_EQ(p.outcome, Outcome::plan) << p.reason;
  EXPECT_EQ(describe(c, p), "stop old@0, wait_free 0 8192MiB, start new@0");
}

TEST(PlannerRules, HigherPriorityServiceIsNotEvictedForLowerRequest) {
  Cluster c;
  c.add_gpu(24 * kGiB);
  auto a = service("coder", SvcState::ready, 0, 20 * kGiB);
  a.priority = 90;
  c.add(a);
  const auto t = c.add(service("emb", SvcState::stopped, -1, 10 * kGiB));
  const Plan low = c.plan_for(t, 50);
  EXPECT_EQ(low.outcome, Outcome::wait);
  EXPECT_NE(low.reason.find("coder"), std::string::npos) << low.reason;
  EXPECT_NE(low.reason.find("higher priority"), std::string::npos) << low.reason;
  EXPECT_TRUE(low.actions.empty());

  const Plan high = c.plan_for(t, 95);
  ASSERT_EQ(high.outcome, Outcome::plan) << high.reason;
  EXPECT_EQ(describe(c, high), "stop coder@0, wait_free 0 10240MiB, start emb@0");
}

TEST(PlannerRules, EqualPriorityServiceMayBeEvicted) {
  Cluster c;
  c.add_gpu(24 * kGiB);
  c.add(service("coder", SvcState::ready, 0, 20 * kGiB));
  const auto t = c.add(service("emb", SvcState::stopped, -1, 10 * kGiB));
  EXPECT_EQ(c.plan_for(t, 50).outcome, Outcome::plan);
}

TEST(PlannerRules, LeasedServiceIsRefusedUntilTheLeaseEnds) {
  Cluster c;
  c.add_gpu(24 * kGiB);
  auto a = service("coder", SvcState::ready, 0, 20 * kGiB);
  a.leases = 2;
  const auto holder = c.add(a);
  const auto t = c.add(service("emb", SvcState::stopped, -1, 10 * kGiB));
  const Plan busy = c.plan_for(t, 99);
  EXPECT_EQ(busy.outcome, Outcome::wait);
  EXPECT_NE(busy.reason.find("coder"), std::string::npos) << busy.reason;
  EXPECT_NE(busy.reason.find("leased"), std::string::npos) << busy.reason;

  c[holder].leases = 0;
  const Plan freed = c.plan_for(t, 99);
  ASSERT_EQ(freed.outcome, Outcome::plan) << freed.reason;
  EXPECT_EQ(describe(c, freed), "stop coder@0, wait_free 0 10240MiB, start emb@0");
}

TEST(PlannerRules, PinnedServiceIsNeverEvicted) {
  Cluster c;
  c.add_gpu(24 * kGiB);
  auto a = service("coder", SvcState::ready, 0, 20 * kGiB);
  a.pinned = true;
  a.priority = 0;
  c.add(a);
  const auto t = c.add(service("emb", SvcState::stopped, -1, 10 * kGiB));
  const Plan p = c.plan_for(t, 100);
  EXPECT_EQ(p.outcome, Outcome::wait);
  EXPECT_NE(p.reason.find("pinned"), std::string::npos) << p.reason;
}

// A service the scheduler is busy with (an operation under way) or that leaves the config is
// protected too, and the reason says which, not "pinned".
TEST(PlannerRules, AServiceInFlightOrLeavingIsProtectedWithItsOwnReason) {
  for (const bool leaving : {false, true}) {
    Cluster c;
    c.add_gpu(24 * kGiB);
    auto a = service("coder", SvcState::ready, 0, 20 * kGiB);
    a.priority = 0;
    (leaving ? a.retiring : a.in_flight) = true;
    c.add(a);
    const auto t = c.add(service("emb", SvcState::stopped, -1, 10 * kGiB));
    const Plan p = c.plan_for(t, 100);
    EXPECT_EQ(p.outcome, Outcome::wait);
    EXPECT_NE(p.reason.find(leaving ? "leaving the config" : "operation in flight"), std::string::npos)
        << p.reason;
    EXPECT_EQ(p.reason.find("pinned"), std::string::npos) << p.reason;
  }
}

TEST(PlannerRules, KeepAliveProtectsAgainstEqualButNotHigherPriority) {
  Cluster c;
  c.add_gpu(24 * kGiB);
  auto a = service("coder", SvcState::ready, 0, 20 * kGiB);
  a.keep_alive_active = true;
  c.add(a);
  const auto t = c.add(service("emb", SvcState::stopped, -1, 10 * kGiB));
  const Plan equal = c.plan_for(t, 50);
  EXPECT_EQ(equal.outcome, Outcome::wait);
  EXPECT_NE(equal.reason.find("keep-alive"), std::string::npos) << equal.reason;
  EXPECT_EQ(c.plan_for(t, 51).outcome, Outcome::plan);
}

TEST(PlannerRules, ServicesInTransitAreNeverTouched) {
  for (const SvcState s : {SvcState::starting, SvcState::waking, SvcState::stopping}) {
    Cluster c;
    c.add_gpu(24 * kGiB);
    c.add(service("coder", s, 0, 20 * kGiB));
    const auto t = c.add(service("emb", SvcState::stopped, -1, 10 * kGiB));
    const Plan p = c.plan_for(t, 100);
    EXPECT_EQ(p.outcome, Outcome::wait) << to_string(s);
    EXPECT_NE(p.reason.find(to_string(s)), std::string::npos) << p.reason;
  }
}

TEST(PlannerRules, LowestPriorityIsEvictedFirst) {
  Cluster c;
  c.add_gpu(24 * kGiB);
  auto a = service("a", SvcState::ready, 0, 10 * kGiB);
  a.priority = 40;
  auto b = service("b", SvcState::ready, 0, 10 * kGiB);
  b.priority = 10;
  b.last_used = 1000;  // more recent, but lower priority wins
  c.add(a);
  c.add(b);
  const auto t = c.add(service("new", SvcState::stopped, -1, 10 * kGiB));
  const Plan p = c.plan_for(t);
  ASSERT_EQ(p.outcome, Outcome::plan);
  EXPECT_EQ(describe(c, p), "stop b@0, wait_free 0 10240MiB, start new@0");
}

TEST(PlannerRules, LeastRecentlyUsedIsEvictedFirstAtEqualPriority) {
  Cluster c;
  c.add_gpu(24 * kGiB);
  auto a = service("recent", SvcState::ready, 0, 10 * kGiB);
  a.last_used = 200;
  auto b = service("stale", SvcState::ready, 0, 10 * kGiB);
  b.last_used = 100;
  c.add(a);
  c.add(b);
  const auto t = c.add(service("new", SvcState::stopped, -1, 10 * kGiB));
  const Plan p = c.plan_for(t);
  ASSERT_EQ(p.outcome, Outcome::plan);
  EXPECT_EQ(describe(c, p), "stop stale@0, wait_free 0 10240MiB, start new@0");
}

TEST(PlannerRules, CheapestToBringBackIsEvictedFirstAtEqualPriorityAndAge) {
  Cluster c;
  c.add_gpu(24 * kGiB);
  auto a = service("slow", SvcState::ready, 0, 10 * kGiB);
  a.can_sleep = true;
  a.wake_s = 6.0;
  auto b = service("quick", SvcState::ready, 0, 10 * kGiB);
  b.can_sleep = true;
  b.wake_s = 0.5;
  c.add(a);
  c.add(b);
  const auto t = c.add(service("new", SvcState::stopped, -1, 10 * kGiB));
  const Plan p = c.plan_for(t);
  ASSERT_EQ(p.outcome, Outcome::plan);
  EXPECT_EQ(describe(c, p), "sleep quick@0, wait_free 0 10240MiB, start new@0");
}

TEST(PlannerRules, EvictsNoMoreThanNeeded) {
  Cluster c;
  c.add_gpu(16 * kGiB);
  // Order of preference a, b, c, d (by priority); a alone is too small, a+b is not enough,
  // a+b+c is, and then a is not needed any more: b+c suffices.
  const int prio[] = {10, 20, 30, 40};
  const Bytes size[] = {1 * kGiB, 4 * kGiB, 6 * kGiB, 5 * kGiB};
  const char* names[] = {"a", "b", "c", "d"};
  for (int i = 0; i < 4; ++i) {
    auto s = service(names[i], SvcState::ready, 0, size[i]);
    s.priority = prio[i];
    c.add(s);
  }
  const auto t = c.add(service("new", SvcState::stopped, -1, 10 * kGiB));  // 0 free now
  const Plan p = c.plan_for(t);
  ASSERT_EQ(p.outcome, Outcome::plan) << p.reason;
  EXPECT_EQ(describe(c, p), "stop b@0, stop c@0, wait_free 0 10240MiB, start new@0");
  expect_replays_cleanly(c, t, p);
}

TEST(PlannerRules, NothingIsEvictedWhenTheTargetAlreadyFits) {
  Cluster c;
  c.add_gpu(24 * kGiB);
  c.add(service("coder", SvcState::ready, 0, 10 * kGiB));
  const auto t = c.add(service("emb", SvcState::stopped, -1, 10 * kGiB));
  const Plan p = c.plan_for(t);
  EXPECT_EQ(describe(c, p), "wait_free 0 10240MiB, start emb@0");
}

TEST(PlannerRules, BestFitPicksTheTightestGpuThatNeedsNoEviction) {
  Cluster c;
  c.add_gpu(24 * kGiB);
  c.add_gpu(12 * kGiB);
  c.add_gpu(16 * kGiB);
  const auto t = c.add(service("emb", SvcState::stopped, -1, 11 * kGiB));
  const Plan p = c.plan_for(t);
  ASSERT_EQ(p.outcome, Outcome::plan);
  EXPECT_EQ(p.gpu, 1);
}

TEST(PlannerRules, BestFitPrefersAGpuWithoutEvictionOverATighterOneWithEviction) {
  Cluster c;
  c.add_gpu(12 * kGiB);
  c.add_gpu(24 * kGiB);
  c.add(service("small", SvcState::ready, 0, 4 * kGiB));
  const auto t = c.add(service("emb", SvcState::stopped, -1, 10 * kGiB));
  const Plan p = c.plan_for(t);
  ASSERT_EQ(p.outcome, Outcome::plan);
  EXPECT_EQ(describe(c, p), "wait_free 1 10240MiB, start emb@1");
}

TEST(PlannerRules, BestFitPrefersASleepToAStopOnAnotherGpu) {
  Cluster c;
  c.add_gpu(16 * kGiB);
  c.add_gpu(16 * kGiB);
  auto a = service("stopme", SvcState::ready, 0, 12 * kGiB);
  a.priority = 10;
  auto b = service("sleepme", SvcState::ready, 1, 12 * kGiB);
  b.priority = 40;
  b.can_sleep = true;
  b.sleep_residual = 1 * kGiB;
  c.add(a);
  c.add(b);
  const auto t = c.add(service("emb", SvcState::stopped, -1, 10 * kGiB));
  const Plan p = c.plan_for(t);
  ASSERT_EQ(p.outcome, Outcome::plan);
  EXPECT_EQ(describe(c, p), "sleep sleepme@1, wait_free 1 10240MiB, start emb@1");
}

TEST(PlannerRules, BestFitTiesGoToTheLowerGpuIndex) {
  Cluster c;
  c.add_gpu(16 * kGiB);
  c.add_gpu(16 * kGiB);
  const auto t = c.add(service("emb", SvcState::stopped, -1, 10 * kGiB));
  EXPECT_EQ(c.plan_for(t).gpu, 0);
}

TEST(PlannerRules, AllowedGpusAreRespected) {
  Cluster c;
  c.add_gpu(24 * kGiB);
  c.add_gpu(12 * kGiB);
  auto a = service("busy", SvcState::ready, 1, 8 * kGiB);
  c.add(a);
  auto s = service("emb", SvcState::stopped, -1, 6 * kGiB);
  s.allowed_gpus = {1};
  const auto t = c.add(s);
  const Plan p = c.plan_for(t);
  ASSERT_EQ(p.outcome, Outcome::plan) << p.reason;
  EXPECT_EQ(describe(c, p), "stop busy@1, wait_free 1 6144MiB, start emb@1");
}

TEST(PlannerRules, OutsideUsageIsNeverCountedAsFreeable) {
  Cluster c;
  // 24 GiB card: coder charged 10 GiB, something outside gpumod uses 10 GiB, so 4 GiB free.
  c.add_gpu(24 * kGiB, 0, 10 * kGiB);
  c.add(service("coder", SvcState::ready, 0, 10 * kGiB));
  const auto fits = c.add(service("mid", SvcState::stopped, -1, 12 * kGiB));
  const Plan p = c.plan_for(fits);
  ASSERT_EQ(p.outcome, Outcome::plan) << p.reason;
  EXPECT_EQ(describe(c, p), "stop coder@0, wait_free 0 12288MiB, start mid@0");

  // 16 GiB would fit per the ledger alone (24 - 10 + 10 freed), but the outside 10 GiB stays.
  const auto big = c.add(service("big", SvcState::stopped, -1, 16 * kGiB));
  const Plan w = c.plan_for(big);
  EXPECT_EQ(w.outcome, Outcome::wait);
  EXPECT_NE(w.reason.find("outside gpumod"), std::string::npos) << w.reason;
  EXPECT_NE(w.reason.find("10.00 GiB"), std::string::npos) << w.reason;
}

TEST(PlannerRules, HeadroomIsAlwaysKeptFree) {
  Cluster c;
  c.add_gpu(24 * kGiB, 2 * kGiB);
  c.add(service("coder", SvcState::ready, 0, 12 * kGiB));
  const auto t = c.add(service("emb", SvcState::stopped, -1, 11 * kGiB));  // 12 - 2 = 10 < 11
  const Plan p = c.plan_for(t);
  ASSERT_EQ(p.outcome, Outcome::plan);
  EXPECT_EQ(describe(c, p), "stop coder@0, wait_free 0 13312MiB, start emb@0");
}

TEST(PlannerRules, SleepingTargetIsWokenOnItsOwnGpu) {
  Cluster c;
  c.add_gpu(24 * kGiB);
  c.add_gpu(24 * kGiB, 1 * kGiB);
  auto s = service("devstral", SvcState::sleeping, 1, 15 * kGiB);
  s.can_sleep = true;
  s.sleep_residual = 1 * kGiB;
  const auto t = c.add(s);
  const Plan p = c.plan_for(t);
  ASSERT_EQ(p.outcome, Outcome::plan) << p.reason;
  // Needs vram - residual = 14 GiB more, plus the 1 GiB headroom visible as live free.
  EXPECT_EQ(describe(c, p), "wait_free 1 15360MiB, wake devstral@1");
  EXPECT_EQ(p.gpu, 1);
  expect_replays_cleanly(c, t, p);
}

TEST(PlannerRules, WakeEvictsOnTheTargetsGpuOnly) {
  Cluster c;
  c.add_gpu(24 * kGiB);
  c.add_gpu(24 * kGiB);
  c.add(service("other", SvcState::ready, 0, 20 * kGiB));
  c.add(service("neighbour", SvcState::ready, 1, 20 * kGiB));
  auto s = service("devstral", SvcState::sleeping, 1, 15 * kGiB);
  s.can_sleep = true;
  s.sleep_residual = 1 * kGiB;
  const auto t = c.add(s);
  const Plan p = c.plan_for(t);
  ASSERT_EQ(p.outcome, Outcome::plan) << p.reason;
  EXPECT_EQ(describe(c, p), "stop neighbour@1, wait_free 1 14336MiB, wake devstral@1");
}

TEST(PlannerRules, PortSharerIsStoppedNotSleptEvenWhenMemoryIsPlenty) {
  Cluster c;
  c.add_gpu(80 * kGiB);
  auto other = service("nemotron", SvcState::ready, 0, 20 * kGiB);
  other.port = 7070;
  other.can_sleep = true;
  other.sleep_residual = 1 * kGiB;
  c.add(other);
  auto s = service("qwen3-coder", SvcState::stopped, -1, 20 * kGiB);
  s.port = 7070;
  const auto t = c.add(s);
  const Plan p = c.plan_for(t);
  ASSERT_EQ(p.outcome, Outcome::plan) << p.reason;
  EXPECT_EQ(describe(c, p), "stop nemotron@0, wait_free 0 20480MiB, start qwen3-coder@0");
  EXPECT_NE(p.reason.find("port 7070"), std::string::npos) << p.reason;
  expect_replays_cleanly(c, t, p);
}

TEST(PlannerRules, PortSharersOnOtherGpusAndAsleepAreStoppedToo) {
  Cluster c;
  c.add_gpu(24 * kGiB);
  c.add_gpu(24 * kGiB);
  auto a = service("on-other-gpu", SvcState::ready, 1, 4 * kGiB);
  a.port = 7070;
  auto b = service("asleep", SvcState::sleeping, 0, 4 * kGiB);
  b.port = 7070;
  b.can_sleep = true;
  b.sleep_residual = 512 * kMiB;
  auto d = service("stopped-sharer", SvcState::stopped, -1, 4 * kGiB);
  d.port = 7070;
  c.add(a);
  c.add(b);
  c.add(d);
  auto s = service("qwen", SvcState::stopped, -1, 8 * kGiB);
  s.port = 7070;
  const auto t = c.add(s);
  const Plan p = c.plan_for(t);
  ASSERT_EQ(p.outcome, Outcome::plan) << p.reason;
  EXPECT_EQ(describe(c, p), "stop on-other-gpu@1, stop asleep@0, wait_free 0 8192MiB, start qwen@0");
  expect_replays_cleanly(c, t, p);
}

TEST(PlannerRules, PortStopCountsAsFreedMemory) {
  // The predecessor's "code" -> "nemotron" switch on a 24 GB card.
  Cluster c;
  c.add_gpu(24564 * kMiB, 512 * kMiB);
  auto emb = service("vllm-embedding-code", SvcState::ready, 0, 2500 * kMiB);
  emb.port = 8210;
  auto coder = service("qwen3-coder", SvcState::ready, 0, 20000 * kMiB);
  coder.port = 7070;
  coder.can_sleep = true;
  coder.sleep_residual = 500 * kMiB;
  c.add(emb);
  c.add(coder);
  auto nemo = service("nemotron-3-nano", SvcState::stopped, -1, 20000 * kMiB);
  nemo.port = 7070;
  const auto t = c.add(nemo);
  const Plan p = c.plan_for(t);
  ASSERT_EQ(p.outcome, Outcome::plan) << p.reason;
  EXPECT_EQ(describe(c, p), "stop qwen3-coder@0, wait_free 0 20512MiB, start nemotron-3-nano@0");
  expect_replays_cleanly(c, t, p);
}

TEST(PlannerRules, ProtectedPortSharerMakesTheRequestWait) {
  Cluster c;
  c.add_gpu(80 * kGiB);
  auto other = service("nemotron", SvcState::ready, 0, 20 * kGiB);
  other.port = 7070;
  other.leases = 1;
  c.add(other);
  auto s = service("qwen3-coder", SvcState::stopped, -1, 20 * kGiB);
  s.port = 7070;
  const auto t = c.add(s);
  const Plan p = c.plan_for(t, 100);
  EXPECT_EQ(p.outcome, Outcome::wait);
  EXPECT_NE(p.reason.find("port 7070"), std::string::npos) << p.reason;
  EXPECT_NE(p.reason.find("nemotron (leased)"), std::string::npos) << p.reason;
}

TEST(PlannerRules, NeverFitsNamesTheNumbers) {
  Cluster c;
  c.add_gpu(24 * kGiB, 512 * kMiB);
  c.add_gpu(16 * kGiB, 512 * kMiB);
  const auto t = c.add(service("llama-70b", SvcState::stopped, -1, 40 * kGiB));
  const Plan p = c.plan_for(t, 100);
  EXPECT_EQ(p.outcome, Outcome::never_fits);
  EXPECT_TRUE(p.actions.empty());
  EXPECT_NE(p.reason.find("llama-70b needs 40.00 GiB"), std::string::npos) << p.reason;
  EXPECT_NE(p.reason.find("GPU 0 holds at most 23.50 GiB (24.00 GiB total - 512 MiB headroom)"),
            std::string::npos)
      << p.reason;
  EXPECT_NE(p.reason.find("GPU 1 holds at most 15.50 GiB"), std::string::npos) << p.reason;
}

TEST(PlannerRules, NeverFitsOnlyConsidersAllowedGpus) {
  Cluster c;
  c.add_gpu(80 * kGiB);
  c.add_gpu(16 * kGiB);
  auto s = service("big", SvcState::stopped, -1, 20 * kGiB);
  s.allowed_gpus = {1};
  const auto t = c.add(s);
  EXPECT_EQ(c.plan_for(t).outcome, Outcome::never_fits);
  c[t].allowed_gpus = {0, 1};
  EXPECT_EQ(c.plan_for(t).outcome, Outcome::plan);
}

TEST(PlannerRules, ExactFitIsNotNeverFits) {
  Cluster c;
  c.add_gpu(24 * kGiB, 1 * kGiB);
  const auto t = c.add(service("exact", SvcState::stopped, -1, 23 * kGiB));
  EXPECT_EQ(c.plan_for(t).outcome, Outcome::plan);
  c[t].vram = 23 * kGiB + 1;
  EXPECT_EQ(c.plan_for(t).outcome, Outcome::never_fits);
}

TEST(PlannerRules, GpuOverItsHeadroomMustPayBackTheDeficit) {
  Cluster c;
  // Ledger 23 GiB on 24 GiB with 2 GiB headroom: already 1 GiB into the headroom.
  c.add_gpu(24 * kGiB, 2 * kGiB);
  c.add(service("a", SvcState::ready, 0, 20 * kGiB));
  auto b = service("b", SvcState::ready, 0, 3 * kGiB);
  b.priority = 10;
  c.add(b);
  const auto t = c.add(service("new", SvcState::stopped, -1, 2 * kGiB));
  const Plan p = c.plan_for(t);
  ASSERT_EQ(p.outcome, Outcome::plan) << p.reason;
  // Stopping b frees 3 GiB: -1 + 3 = 2 GiB, exactly enough.
  EXPECT_EQ(describe(c, p), "stop b@0, wait_free 0 4096MiB, start new@0");
  expect_replays_cleanly(c, t, p);
}

TEST(PlannerRules, PlanReasonExplainsTheChoiceWithNumbers) {
  Cluster c;
  c.add_gpu(24 * kGiB);
  auto a = service("devstral", SvcState::ready, 0, 20 * kGiB);
  a.can_sleep = true;
  a.sleep_residual = 1 * kGiB;
  c.add(a);
  const auto t = c.add(service("emb", SvcState::stopped, -1, 10 * kGiB));
  const Plan p = c.plan_for(t);
  EXPECT_EQ(
      p.reason,
      "start emb on GPU 0: needs 10.00 GiB, 4.00 GiB free after 0 MiB headroom; sleep devstral (frees 19.00 "
      "GiB); then wait for 10.00 GiB live free");
}

TEST(PlannerRules, WaitReasonNamesWhatHoldsTheMemory) {
  Cluster c;
  c.add_gpu(24 * kGiB);
  auto a = service("coder", SvcState::ready, 0, 16 * kGiB);
  a.pinned = true;
  c.add(a);
  c.add(service("emb", SvcState::ready, 0, 4 * kGiB));
  const auto t = c.add(service("new", SvcState::stopped, -1, 10 * kGiB));
  const Plan p = c.plan_for(t);
  EXPECT_EQ(p.outcome, Outcome::wait);
  EXPECT_EQ(p.reason,
            "no room for new now: GPU 0: 4.00 GiB free after 0 MiB headroom, 10.00 GiB needed; held by coder "
            "16.00 GiB (pinned); evictable 4.00 GiB");
}

TEST(PlannerRules, UnknownTargetIndexIsRejected) {
  const Plan p = plan({}, {}, PlanRequest{3, 50});
  EXPECT_EQ(p.outcome, Outcome::never_fits);
}

TEST(PlannerRules, EffectiveFreeUsesTheSmallerViewMinusHeadroom) {
  GpuView g;
  g.total = 24 * kGiB;
  g.ledger = 10 * kGiB;
  g.live_free = 12 * kGiB;
  g.headroom = 1 * kGiB;
  EXPECT_EQ(g.effective_free(), 11 * kGiB);
  g.live_free = 16 * kGiB;
  EXPECT_EQ(g.effective_free(), 13 * kGiB);
  g.live_free = 512 * kMiB;
  EXPECT_EQ(g.effective_free(), 0);
}

}  // namespace
}  // namespace gpumod::policy
