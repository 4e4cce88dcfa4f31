// SchedulerCore logic: events in, effects out, with in-memory fakes and a ManualClock.
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <sstream>
#include <thread>

#include "exporter/metrics.hpp"

#include "tests/scheduler/rig.hpp"

namespace gpumod::scheduler::testing {
namespace {

using policy::SvcState;
constexpr std::int64_t kCard = 24 * kGiB;

bool contains(const std::string& hay, const std::string& needle) {
  return hay.find(needle) != std::string::npos;
}

TEST(Core, RequestStartsStoppedServiceThroughEveryLifecycleState) {
  Rig rig(make_config({sleepy(preset("embed", 2500, 8210), 250)}), {kCard});
  EXPECT_EQ(rig.state("embed"), SvcState::stopped);
  rig.submit("r1", "embed-model");
  EXPECT_EQ(rig.state("embed"), SvcState::starting);  // launched, health still loading
  EXPECT_FALSE(rig.done("r1"));
  ASSERT_TRUE(rig.run_until([&] { return rig.done("r1"); }));
  EXPECT_EQ(rig.state("embed"), SvcState::ready);
  EXPECT_EQ(rig.outcome("r1").refusal, Refusal::none);
  EXPECT_EQ(rig.outcome("r1").endpoint, "http://127.0.0.1:8210");
  EXPECT_EQ(rig.outcome("r1").gpu, 0);

  rig.hold_ops = true;  // look at the transitional states
  auto sleep = rig.action("embed", ServiceAction::sleep);
  EXPECT_EQ(rig.state("embed"), SvcState::sleeping);
  ASSERT_EQ(rig.held.size(), 1u);
  rig.core->on_op_done(rig.exec->run(rig.held[0]), rig.now());
  rig.held.clear();
  rig.settle();
  ASSERT_TRUE(rig.actions.at(sleep).ok);
  EXPECT_EQ(rig.world.used(0), 250 * kMiB);

  auto wake = rig.action("embed", ServiceAction::wake);
  EXPECT_EQ(rig.state("embed"), SvcState::waking);
  ASSERT_EQ(rig.held.size(), 1u);
  EXPECT_EQ(rig.held[0].kind, Effect::Kind::wake);
  rig.hold_ops = false;
  rig.core->on_op_done(rig.exec->run(rig.held[0]), rig.now());
  rig.held.clear();
  rig.settle();
  ASSERT_TRUE(rig.run_until([&] { return rig.actions.count(wake) != 0; }));
  EXPECT_TRUE(rig.actions.at(wake).ok) << rig.actions.at(wake).message;
  EXPECT_EQ(rig.state("embed"), SvcState::ready);

  rig.hold_ops = true;
  auto stop = rig.action("embed", ServiceAction::stop);
  EXPECT_EQ(rig.state("embed"), SvcState::stopping);
  rig.core->on_op_done(rig.exec->run(rig.held[0]), rig.now());
  rig.held.clear();
  rig.settle();
  EXPECT_TRUE(rig.actions.at(stop).ok);
  EXPECT_EQ(rig.state("embed"), SvcState::stopped);
  EXPECT_EQ(rig.world.starts("embed"), 1);
}

TEST(Core, ReadyModelSkipsTheQueue) {
  Rig rig(make_config({preset("embed", 2500, 8210)}), {kCard});
  rig.submit("r1", "embed");
  ASSERT_TRUE(rig.run_until([&] { return rig.done("r1"); }));
  const auto before = rig.effects_seen.size();
  rig.submit("r2", "embed");
  ASSERT_TRUE(rig.done("r2"));  // answered within the submit call, no time passed
  EXPECT_EQ(rig.outcome("r2").refusal, Refusal::none);
  EXPECT_EQ(rig.outcome("r2").waited_seconds, 0);
  EXPECT_EQ(rig.effects_seen.size(), before);  // nothing to do for a ready model
  EXPECT_EQ(rig.core->queue_length(), 0u);
}

TEST(Core, ConcurrentRequestsForOneModelJoinOneLoad) {
  Rig rig(make_config({preset("coder", 20000, 7070)}), {kCard});
  rig.submit("a", "coder");
  rig.submit("b", "coder-model");
  rig.submit("c", "coder", 99);
  ASSERT_TRUE(rig.run_until([&] { return rig.done("a") && rig.done("b") && rig.done("c"); }));
  for (const char* id : {"a", "b", "c"}) EXPECT_EQ(rig.outcome(id).refusal, Refusal::none) << id;
  EXPECT_EQ(rig.world.starts("coder"), 1);
}

TEST(Core, UnknownModelIs404AndNeverFitsIs422) {
  Rig rig(make_config({preset("huge", 40000, 7070)}), {kCard});
  rig.submit("r1", "nope");
  ASSERT_TRUE(rig.done("r1"));
  EXPECT_EQ(rig.outcome("r1").refusal, Refusal::unknown);
  rig.submit("r2", "huge");
  ASSERT_TRUE(rig.done("r2"));
  EXPECT_EQ(rig.outcome("r2").refusal, Refusal::never_fits);
  EXPECT_TRUE(contains(rig.outcome("r2").message, "never fits")) << rig.outcome("r2").message;
  EXPECT_EQ(rig.world.starts("huge"), 0);
  // Both stay visible to GET /requests/{id}: a wait:false client may have been told 202 first.
  const auto snap = rig.core->snapshot(rig.now());
  ASSERT_NE(snap.recent, nullptr);
  for (const char* id : {"r1", "r2"}) {
    const auto it = std::find_if(snap.recent->begin(), snap.recent->end(),
                                 [&](const RequestInfo& r) { return r.request_id == id; });
    ASSERT_NE(it, snap.recent->end()) << id;
    EXPECT_EQ(it->status, RequestStatus::rejected) << id;
    ASSERT_TRUE(it->outcome.has_value()) << id;
    EXPECT_EQ(it->outcome->refusal, rig.outcome(id).refusal) << id;
  }
}

TEST(Core, EvictionRefusedWhileLeaseHeldAndGrantedWhenItEnds) {
  Rig rig(make_config({preset("coder", 20000, 7070), preset("nemo", 20000, 7071)}), {kCard});
  rig.submit("r1", "coder", std::nullopt, std::nullopt, /*lease=*/true);
  ASSERT_TRUE(rig.run_until([&] { return rig.done("r1"); }));
  ASSERT_TRUE(rig.outcome("r1").lease.has_value());
  rig.submit("r2", "nemo");
  rig.run_for(5s);
  EXPECT_FALSE(rig.done("r2"));
  EXPECT_EQ(rig.state("coder"), SvcState::ready);  // not evicted while busy
  EXPECT_EQ(rig.world.stops("coder"), 0);
  EXPECT_EQ(rig.core->queue_length(), 1u);

  rig.core->release_lease(*rig.outcome("r1").lease, rig.now());
  rig.settle();
  ASSERT_TRUE(rig.run_until([&] { return rig.done("r2"); }));
  EXPECT_EQ(rig.outcome("r2").refusal, Refusal::none);
  EXPECT_EQ(rig.state("coder"), SvcState::stopped);
  EXPECT_EQ(rig.world.stops("coder"), 1);
  // Never started before the driver showed the memory free.
  EXPECT_GE(rig.world.free_at_start("nemo"), 20000 * kMiB);
}

TEST(Core, SlowReleaseHoldsTheStartUntilTheProbeShowsMemoryFree) {
  Rig rig(make_config({preset("coder", 20000, 7070), preset("nemo", 20000, 7071)}), {kCard});
  Behavior slow = rig.world.behavior("coder");
  slow.release_after_samples = 10;
  rig.world.set_behavior("coder", slow);
  rig.submit("r1", "coder");
  ASSERT_TRUE(rig.run_until([&] { return rig.done("r1"); }));
  rig.submit("r2", "nemo");
  ASSERT_TRUE(rig.run_until([&] { return rig.world.stops("coder") == 1; }));
  EXPECT_EQ(rig.world.starts("nemo"), 0);  // coder's memory still shows used
  EXPECT_EQ(rig.state("nemo"), SvcState::starting);
  ASSERT_TRUE(rig.run_until([&] { return rig.done("r2"); }));
  EXPECT_EQ(rig.outcome("r2").refusal, Refusal::none);
  EXPECT_GE(rig.world.free_at_start("nemo"), 20000 * kMiB);
}

TEST(Core, ReleaseThatNeverComesFailsCleanlyAfterTheTimeout) {
  auto cfg = make_config({preset("coder", 20000, 7070), preset("nemo", 20000, 7071)});
  cfg.daemon.policy.vram_release_timeout = 10s;
  Rig rig(std::move(cfg), {kCard});
  Behavior zombie = rig.world.behavior("coder");
  zombie.hold_memory_after_stop = true;
  rig.world.set_behavior("coder", zombie);
  rig.submit("r1", "coder");
  ASSERT_TRUE(rig.run_until([&] { return rig.done("r1"); }));
  const int coder_pid = rig.core->snapshot(rig.now()).services.front().pid;
  rig.submit("r2", "nemo");
  rig.run_for(9s);
  EXPECT_FALSE(rig.done("r2"));
  ASSERT_TRUE(rig.run_until([&] { return rig.done("r2"); }, 5s));
  const auto& o = rig.outcome("r2");
  EXPECT_EQ(o.refusal, Refusal::unavailable);
  EXPECT_GT(o.retry_after_seconds, 0);
  EXPECT_TRUE(contains(o.message, "GPU 0")) << o.message;
  EXPECT_TRUE(contains(o.message, "needed 19.53 GiB")) << o.message;
  EXPECT_TRUE(contains(o.message, "shows 4.47 GiB free")) << o.message;
  EXPECT_TRUE(contains(o.message, "pid " + std::to_string(coder_pid) + " (coder)")) << o.message;
  // Known state afterwards: the evicted one is stopped, the target stays stopped, nothing started.
  EXPECT_EQ(rig.state("coder"), SvcState::stopped);
  EXPECT_EQ(rig.state("nemo"), SvcState::stopped);
  EXPECT_EQ(rig.world.starts("nemo"), 0);
  EXPECT_TRUE(contains(rig.core->last_error_of("nemo"), "not released")) << rig.core->last_error_of("nemo");
}

TEST(Core, FullQueueAnswersFullImmediately) {
  auto cfg = make_config({preset("coder", 20000, 7070), preset("a", 20000, 7071), preset("b", 20000, 7072),
                          preset("c", 20000, 7073)});
  cfg.daemon.policy.queue_max = 2;
  Rig rig(std::move(cfg), {kCard});
  rig.submit("r0", "coder", std::nullopt, std::nullopt, true);
  ASSERT_TRUE(rig.run_until([&] { return rig.done("r0"); }));
  rig.submit("r1", "a");
  rig.submit("r2", "b");
  EXPECT_FALSE(rig.done("r1"));
  EXPECT_FALSE(rig.done("r2"));
  rig.submit("r3", "c");
  ASSERT_TRUE(rig.done("r3"));  // at once, no time passed
  EXPECT_EQ(rig.outcome("r3").refusal, Refusal::queue_full);
  EXPECT_GT(rig.outcome("r3").retry_after_seconds, 0);
  EXPECT_TRUE(contains(rig.outcome("r3").message, "full"));
}

TEST(Core, DeadlinePassedIs504) {
  Rig rig(make_config({preset("coder", 20000, 7070), preset("nemo", 20000, 7071)}), {kCard});
  rig.submit("r0", "coder", std::nullopt, std::nullopt, true);
  ASSERT_TRUE(rig.run_until([&] { return rig.done("r0"); }));
  rig.submit("r1", "nemo", std::nullopt, std::chrono::milliseconds(2000));
  rig.run_for(1900ms);
  EXPECT_FALSE(rig.done("r1"));
  rig.run_for(200ms);
  ASSERT_TRUE(rig.done("r1"));
  EXPECT_EQ(rig.outcome("r1").refusal, Refusal::deadline);
  EXPECT_EQ(rig.outcome("r1").status, RequestStatus::timed_out);
  EXPECT_EQ(rig.core->queue_length(), 0u);
}

#ifndef NDEBUG
// Debug builds check that one thread drives the core: a second thread's call aborts and names
// the method.
TEST(CoreDeathTest, ACallFromASecondThreadAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        Rig rig(make_config({preset("coder", 20000, 7070)}), {kCard});
        rig.core->tick(rig.now());
        std::thread([&] { rig.core->tick(rig.now()); }).join();
      },
      "SchedulerCore::tick called off its owning thread");
}
#endif

TEST(Core, CancelRemovesAQueuedRequest) {
  Rig rig(make_config({preset("coder", 20000, 7070), preset("nemo", 20000, 7071)}), {kCard});
  rig.submit("r0", "coder", std::nullopt, std::nullopt, true);
  ASSERT_TRUE(rig.run_until([&] { return rig.done("r0"); }));
  rig.submit("r1", "nemo");
  ASSERT_TRUE(rig.core->cancel("r1", rig.now()).ok());
  rig.settle();
  ASSERT_TRUE(rig.done("r1"));
  EXPECT_EQ(rig.outcome("r1").status, RequestStatus::cancelled);
  EXPECT_EQ(rig.core->queue_length(), 0u);
  EXPECT_FALSE(rig.core->cancel("r1", rig.now()).ok());
  // Nothing is evicted for a cancelled request once the lease ends.
  rig.core->release_lease(*rig.outcome("r0").lease, rig.now());
  rig.run_for(1s);
  EXPECT_EQ(rig.state("coder"), SvcState::ready);
}

TEST(Core, BackfillOnlyWhenItLeavesTheWaitingRequestItsMemory) {
  // GPU 0: "low" (priority 10, 12 GiB) is leased; "big" (priority 80, 16 GiB) must wait for it.
  auto mid = preset("mid", 10000, 7003, 20);
  auto tiny = preset("tiny", 2000, 7004, 20);
  auto other = preset("other", 10000, 7005, 20);
  other.gpus = {1};
  Rig rig(make_config({preset("low", 12000, 7001, 10), preset("big", 16000, 7002, 80), mid, tiny, other}),
          {kCard, kCard});
  // Put low on GPU 0 and fill GPU 1 with outside usage so "big" can only go to GPU 0.
  rig.world.set_outside_usage(1, 10 * kGiB);
  rig.submit("r0", "low", std::nullopt, std::nullopt, true);
  ASSERT_TRUE(rig.run_until([&] { return rig.done("r0"); }));
  ASSERT_EQ(rig.outcome("r0").gpu, 0);
  rig.submit("head", "big");
  rig.submit("c-mid", "mid");
  rig.submit("c-tiny", "tiny");
  rig.submit("c-other", "other");
  rig.run_for(3s);
  EXPECT_FALSE(rig.done("head"));
  // mid would take 10 of the 11.7 GiB that big needs once low's lease ends: it waits.
  EXPECT_FALSE(rig.done("c-mid"));
  EXPECT_EQ(rig.world.starts("mid"), 0);
  // tiny leaves big enough (free 11.7 - 2 + low's 11.7 >= 15.6): it goes ahead.
  ASSERT_TRUE(rig.done("c-tiny"));
  EXPECT_EQ(rig.outcome("c-tiny").refusal, Refusal::none);
  // other can only use GPU 1, which big cannot use: it goes ahead.
  ASSERT_TRUE(rig.done("c-other"));
  EXPECT_EQ(rig.outcome("c-other").gpu, 1);
  // When the lease ends, big gets its memory.
  rig.core->release_lease(*rig.outcome("r0").lease, rig.now());
  rig.settle();
  ASSERT_TRUE(rig.run_until([&] { return rig.done("head"); }));
  EXPECT_EQ(rig.outcome("head").refusal, Refusal::none);
}

TEST(Core, KeepAliveProtectsUntilItExpires) {
  auto coder = preset("coder", 20000, 7070);
  coder.keep_alive = std::chrono::seconds(60);
  auto cfg = make_config({coder, preset("nemo", 20000, 7071)});
  cfg.daemon.policy.aging_interval = std::chrono::minutes(10);  // aging would raise r1 above coder
  Rig rig(std::move(cfg), {kCard});
  rig.submit("r0", "coder");
  ASSERT_TRUE(rig.run_until([&] { return rig.done("r0"); }));
  rig.submit("r1", "nemo");  // same priority: does not cut the keep-alive short
  rig.run_for(50s, 500ms);
  EXPECT_FALSE(rig.done("r1"));
  EXPECT_EQ(rig.state("coder"), SvcState::ready);
  ASSERT_TRUE(rig.run_until([&] { return rig.done("r1"); }, 30s, 500ms));
  EXPECT_EQ(rig.outcome("r1").refusal, Refusal::none);
  EXPECT_EQ(rig.state("coder"), SvcState::stopped);
}

TEST(Core, SleepCapableServiceIsSleptNotStoppedAndWokenLater) {
  Rig rig(make_config({sleepy(preset("coder", 18000, 7070), 1000), preset("embed", 8000, 8200)}), {kCard});
  rig.submit("r0", "coder");
  ASSERT_TRUE(rig.run_until([&] { return rig.done("r0"); }));
  rig.submit("r1", "embed");
  ASSERT_TRUE(rig.run_until([&] { return rig.done("r1"); }));
  EXPECT_EQ(rig.state("coder"), SvcState::sleeping);
  EXPECT_EQ(rig.world.stops("coder"), 0);
  rig.submit("r2", "coder");  // now embed must go (sleep residual 1000 MiB stays)
  ASSERT_TRUE(rig.run_until([&] { return rig.done("r2"); }));
  EXPECT_EQ(rig.outcome("r2").refusal, Refusal::none);
  EXPECT_EQ(rig.state("embed"), SvcState::stopped);
  EXPECT_EQ(rig.world.starts("coder"), 1);  // woken, not restarted
}

// A plan made on a probe sample from before a sleep finished would see the sleeper's memory
// as still held and evict a service that did not need to go.
TEST(Core, PlanAfterASleepWaitsForAFreshSampleAndEvictsNothingNeedlessly) {
  Rig rig(make_config({sleepy(preset("coder", 14000, 7070), 1000), preset("embed", 4000, 8200),
                       preset("rerank", 7000, 8300)}),
          {kCard});
  rig.submit("r0", "coder");
  ASSERT_TRUE(rig.run_until([&] { return rig.done("r0"); }));
  rig.submit("r1", "embed");
  ASSERT_TRUE(rig.run_until([&] { return rig.done("r1"); }));
  rig.run_for(1s);  // the last sample shows 18000 MiB in use, 6000 free

  const auto t = rig.action("coder", ServiceAction::sleep);
  ASSERT_EQ(rig.actions.count(t), 1u);
  ASSERT_EQ(rig.state("coder"), SvcState::sleeping);
  // No poll since the sleep. On the last sample rerank (7000) would need coder stopped or embed
  // evicted; in truth 19000 MiB are free.
  rig.submit("r2", "rerank");
  ASSERT_TRUE(rig.run_until([&] { return rig.done("r2"); }));
  EXPECT_EQ(rig.outcome("r2").refusal, Refusal::none);
  EXPECT_EQ(rig.state("coder"), SvcState::sleeping);
  EXPECT_EQ(rig.state("embed"), SvcState::ready);
  EXPECT_EQ(rig.world.stops("coder"), 0);
  EXPECT_EQ(rig.world.stops("embed"), 0);
}

// coder (15000 MiB) ready, then nemo (15000 MiB) requested on a 20000 MiB GPU: returns the
// stop effect for coder, held (not run); request "r2" waits for nemo.
Effect hold_the_stop_of_coder_for_nemo(Rig& rig) {
  rig.submit("r1", "coder");
  EXPECT_TRUE(rig.run_until([&] { return rig.done("r1"); }));
  rig.hold_ops = true;
  rig.submit("r2", "nemo");
  EXPECT_EQ(rig.held.size(), 1u);
  if (rig.held.empty()) return Effect{};
  Effect stop = rig.held.front();
  EXPECT_EQ(stop.kind, Effect::Kind::stop);
  rig.held.clear();
  return stop;
}

// The release wait starts when SIGTERM goes out: a server frees its memory well before its
// process is gone, and the next start need not wait for the exit (docs/gpu-release.md).
TEST(Core, StopSignalStartsTheReleaseWaitBeforeTheProcessHasExited) {
  Rig rig(make_config({preset("coder", 15000, 7070), preset("nemo", 15000, 7071)}), {20000 * kMiB});
  const Effect stop = hold_the_stop_of_coder_for_nemo(rig);
  ASSERT_EQ(stop.kind, Effect::Kind::stop);
  rig.clock.advance(5ms);
  rig.core->tick(rig.now());
  rig.settle();
  EXPECT_TRUE(rig.held.empty());  // nothing happens before the signal

  ASSERT_TRUE(rig.world.stop("coder").ok());  // SIGTERM: the server frees its memory...
  rig.core->on_stop_signalled(stop.op, rig.now());
  rig.settle();
  rig.clock.advance(1ms);
  rig.core->tick(rig.now());  // ...the next sample shows it free
  rig.settle();
  ASSERT_EQ(rig.held.size(), 1u);
  EXPECT_EQ(rig.held.front().kind, Effect::Kind::start);
  EXPECT_EQ(rig.held.front().service, "nemo");
  EXPECT_EQ(rig.state("coder"), SvcState::stopping);  // ...while its process is still exiting

  rig.hold_ops = false;
  auto ops = std::move(rig.held);
  rig.held.clear();
  for (const auto& e : ops) rig.core->on_op_done(rig.exec->run(e), rig.now());
  rig.core->on_op_done(rig.exec->run(stop), rig.now());
  rig.settle();
  ASSERT_TRUE(rig.run_until([&] { return rig.done("r2"); }));
  EXPECT_EQ(rig.outcome("r2").refusal, Refusal::none);
  EXPECT_EQ(rig.state("coder"), SvcState::stopped);
  EXPECT_GE(rig.world.free_at_start("nemo"), 15000 * kMiB);
}

TEST(Core, StopSignalDoesNotStartAServiceThatNeedsTheSamePort) {
  Rig rig(make_config({preset("coder", 15000, 7070), preset("nemo", 15000, 7070)}), {20000 * kMiB});
  const Effect stop = hold_the_stop_of_coder_for_nemo(rig);
  ASSERT_EQ(stop.kind, Effect::Kind::stop);
  ASSERT_TRUE(rig.world.stop("coder").ok());
  rig.core->on_stop_signalled(stop.op, rig.now());
  rig.settle();
  rig.run_for(200ms, 10ms);
  EXPECT_TRUE(rig.held.empty());  // the port is still taken until the stop completes
  rig.hold_ops = false;
  rig.core->on_op_done(rig.exec->run(stop), rig.now());
  rig.settle();
  ASSERT_TRUE(rig.run_until([&] { return rig.done("r2"); }));
  EXPECT_EQ(rig.outcome("r2").refusal, Refusal::none);
}

TEST(Core, EwmaEstimatesFollowMeasuredStartAndWakeTimes) {
  Rig rig(make_config({sleepy(preset("coder", 10000, 7070), 500)}), {kCard});
  Behavior b = rig.world.behavior("coder");
  b.health_checks_until_ready = 20;  // 20 x 50 ms of loading: ~1 s
  rig.world.set_behavior("coder", b);
  rig.submit("r0", "coder");
  ASSERT_TRUE(rig.run_until([&] { return rig.done("r0"); }));
  const double first = rig.core->snapshot(rig.now()).services[0].cold_start_estimate_s;
  EXPECT_NEAR(first, 1.0, 0.15);
  b.health_checks_until_ready = 60;  // ~3 s
  rig.world.set_behavior("coder", b);
  rig.action("coder", ServiceAction::stop);
  rig.submit("r1", "coder");
  ASSERT_TRUE(rig.run_until([&] { return rig.done("r1"); }));
  const double second = rig.core->snapshot(rig.now()).services[0].cold_start_estimate_s;
  EXPECT_NEAR(second, first + 0.3 * (3.0 - first), 0.1);
  // Wake time is measured separately.
  rig.action("coder", ServiceAction::sleep);
  auto wake = rig.action("coder", ServiceAction::wake);
  ASSERT_TRUE(rig.run_until([&] { return rig.actions.count(wake) != 0; }));
  EXPECT_NEAR(rig.core->snapshot(rig.now()).services[0].wake_estimate_s, 3.0, 0.15);
  EXPECT_NEAR(rig.core->snapshot(rig.now()).services[0].cold_start_estimate_s, second, 1e-9);
}

TEST(Core, CrashWhileLoadingFailsTheServiceAndItsWaiters) {
  Rig rig(make_config({preset("coder", 10000, 7070)}), {kCard});
  Behavior b = rig.world.behavior("coder");
  b.crash_while_loading = true;
  rig.world.set_behavior("coder", b);
  rig.submit("r0", "coder");
  ASSERT_TRUE(rig.run_until([&] { return rig.done("r0"); }, 10s));
  EXPECT_EQ(rig.outcome("r0").refusal, Refusal::unavailable);
  EXPECT_EQ(rig.state("coder"), SvcState::failed);
  EXPECT_TRUE(contains(rig.outcome("r0").message, "coder")) << rig.outcome("r0").message;
  // A failed service is started again by the next request.
  b.crash_while_loading = false;
  rig.world.set_behavior("coder", b);
  rig.submit("r1", "coder");
  ASSERT_TRUE(rig.run_until([&] { return rig.done("r1"); }));
  EXPECT_EQ(rig.outcome("r1").refusal, Refusal::none);
}

TEST(Core, HealthThatNeverTurnsGreenFailsAfterThePresetsStartupTimeout) {
  auto p = preset("slow", 10000, 7070);
  p.startup_timeout = std::chrono::seconds(180);  // legitimately slow: no hard-coded 120 s
  Rig rig(make_config({p}), {kCard});
  Behavior b = rig.world.behavior("slow");
  b.never_healthy = true;
  rig.world.set_behavior("slow", b);
  rig.submit("r0", "slow", std::nullopt, std::chrono::milliseconds(600000));
  rig.run_for(170s, 1s);
  EXPECT_FALSE(rig.done("r0"));
  EXPECT_EQ(rig.state("slow"), SvcState::starting);
  ASSERT_TRUE(rig.run_until([&] { return rig.done("r0"); }, 20s, 1s));
  EXPECT_EQ(rig.outcome("r0").refusal, Refusal::unavailable);
  EXPECT_TRUE(contains(rig.outcome("r0").message, "180.0 s")) << rig.outcome("r0").message;
  EXPECT_EQ(rig.state("slow"), SvcState::failed);
  EXPECT_FALSE(rig.world.running("slow"));  // its process group was stopped
}

TEST(Core, ProcessExitWhileReadyMarksFailed) {
  Rig rig(make_config({preset("coder", 10000, 7070)}), {kCard});
  rig.submit("r0", "coder");
  ASSERT_TRUE(rig.run_until([&] { return rig.done("r0"); }));
  rig.world.crash("coder");
  ASSERT_TRUE(rig.run_until([&] { return rig.state("coder") == SvcState::failed; }, 5s));
  EXPECT_TRUE(contains(rig.core->last_error_of("coder"), "exited")) << rig.core->last_error_of("coder");
}

TEST(Core, ServicesSharingAPortAreNeverUpTogether) {
  Rig rig(make_config({sleepy(preset("qwen", 8000, 7070), 200), preset("nemo", 8000, 7070)}), {kCard});
  rig.submit("r0", "qwen");
  ASSERT_TRUE(rig.run_until([&] { return rig.done("r0"); }));
  rig.submit("r1", "nemo");
  ASSERT_TRUE(rig.run_until([&] { return rig.done("r1"); }));
  EXPECT_EQ(rig.state("qwen"), SvcState::stopped);  // stopped, not slept: it holds the port
  EXPECT_EQ(rig.state("nemo"), SvcState::ready);
}

config::Config modes_config() {
  return make_config({preset("embed-code", 2500, 8210), sleepy(preset("qwen3-coder", 20000, 7070), 400),
                      preset("embed", 5000, 8200), preset("nemotron", 20000, 7070)},
                     {mode("blank", {"embed-code"}), mode("code", {"embed-code", "qwen3-coder"}),
                      mode("rag", {"embed-code", "embed"}), mode("nemotron", {"embed-code", "nemotron"})});
}

TEST(Core, ModeSwitchesFollowTheQaSequence) {
  Rig rig(modes_config(), {kCard});
  auto run_mode = [&](const std::string& m) {
    const auto t = rig.switch_mode(m);
    EXPECT_TRUE(rig.run_until([&] { return rig.modes.count(t) != 0; })) << m;
    return rig.modes.at(t);
  };
  auto r = run_mode("blank");
  EXPECT_TRUE(r.ok);
  EXPECT_EQ(r.started, std::vector<std::string>{"embed-code"});
  r = run_mode("code");
  EXPECT_TRUE(r.ok);
  EXPECT_EQ(r.started, std::vector<std::string>{"qwen3-coder"});
  r = run_mode("rag");
  EXPECT_TRUE(r.ok) << ::testing::PrintToString(r.errors);
  EXPECT_EQ(r.stopped, std::vector<std::string>{"qwen3-coder"});
  EXPECT_EQ(r.started, std::vector<std::string>{"embed"});
  for (int i = 0; i < 3; ++i) {
    r = run_mode("code");
    EXPECT_TRUE(r.ok);
    r = run_mode("nemotron");
    EXPECT_TRUE(r.ok);
    EXPECT_EQ(rig.state("qwen3-coder"), SvcState::stopped);
  }
  r = run_mode("blank");
  EXPECT_TRUE(r.ok);
  EXPECT_EQ(rig.core->snapshot(rig.now()).current_mode, "blank");
  for (const char* s : {"qwen3-coder", "embed", "nemotron"}) EXPECT_EQ(rig.state(s), SvcState::stopped) << s;
  EXPECT_EQ(rig.world.used(0), 2500 * kMiB);
}

TEST(Core, ModeSwitchFailsWithAKnownStateWhenVramIsNotReleased) {
  auto cfg = modes_config();
  cfg.daemon.policy.vram_release_timeout = 5s;
  Rig rig(std::move(cfg), {kCard});
  auto t = rig.switch_mode("code");
  ASSERT_TRUE(rig.run_until([&] { return rig.modes.count(t) != 0; }));
  Behavior z = rig.world.behavior("qwen3-coder");
  z.hold_memory_after_stop = true;
  rig.world.set_behavior("qwen3-coder", z);
  t = rig.switch_mode("nemotron");
  ASSERT_TRUE(rig.run_until([&] { return rig.modes.count(t) != 0; }, 20s));
  const ModeResult& r = rig.modes.at(t);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.refusal, Refusal::unavailable);
  ASSERT_FALSE(r.errors.empty());
  EXPECT_TRUE(contains(r.errors[0], "not released")) << ::testing::PrintToString(r.errors);
  // The process still holding the memory is named after the service that started it, though
  // that service is stopped now.
  EXPECT_TRUE(contains(r.errors[0], "(qwen3-coder)")) << ::testing::PrintToString(r.errors);
  EXPECT_EQ(rig.state("qwen3-coder"), SvcState::stopped);
  EXPECT_EQ(rig.state("nemotron"), SvcState::stopped);
  EXPECT_EQ(rig.state("embed-code"), SvcState::ready);
  EXPECT_EQ(rig.core->snapshot(rig.now()).current_mode, "");
}

TEST(Core, ReloadAppliesPolicyAndKeepsRunningConfigOnError) {
  Rig rig(make_config({preset("coder", 10000, 7070)}), {kCard});
  rig.submit("r0", "coder");
  ASSERT_TRUE(rig.run_until([&] { return rig.done("r0"); }));
  config::LoadResult bad;
  config::Diagnostic diag;
  diag.file = "gpumod.yaml";
  diag.line = 3;
  diag.key = "policy.queue_max";
  diag.message = "must be > 0";
  bad.diagnostics.push_back(diag);
  auto t = rig.reload(bad);
  ASSERT_FALSE(rig.reloads.at(t).ok);
  EXPECT_TRUE(contains(rig.reloads.at(t).message, "gpumod.yaml:3")) << rig.reloads.at(t).message;
  EXPECT_EQ(rig.state("coder"), SvcState::ready);
  EXPECT_EQ(rig.core->config().presets.size(), 1u);

  auto next = make_config({preset("coder", 10000, 7070, 70), preset("embed", 2000, 8200)});
  next.daemon.policy.queue_max = 1;
  config::LoadResult good;
  good.config = next;
  t = rig.reload(good);
  ASSERT_TRUE(rig.reloads.at(t).ok) << rig.reloads.at(t).message;
  EXPECT_EQ(rig.reloads.at(t).added, std::vector<std::string>{"embed"});
  EXPECT_TRUE(rig.reloads.at(t).changed.empty());  // a priority change does not restart
  EXPECT_EQ(rig.state("coder"), SvcState::ready);
  EXPECT_EQ(rig.world.starts("coder"), 1);
  EXPECT_EQ(rig.core->snapshot(rig.now()).services[0].priority, 70);
}

TEST(Core, RemovedServiceIsStoppedOnceIdle) {
  Rig rig(make_config({preset("coder", 10000, 7070), preset("embed", 2000, 8200)}), {kCard});
  rig.submit("r0", "coder", std::nullopt, std::nullopt, true);
  ASSERT_TRUE(rig.run_until([&] { return rig.done("r0"); }));
  config::LoadResult good;
  good.config = make_config({preset("embed", 2000, 8200)});
  auto t = rig.reload(good);
  ASSERT_TRUE(rig.reloads.at(t).ok);
  EXPECT_EQ(rig.reloads.at(t).removed, std::vector<std::string>{"coder"});
  rig.run_for(1s);
  EXPECT_TRUE(rig.world.running("coder"));  // busy: kept until the lease ends
  rig.submit("r1", "coder");
  EXPECT_EQ(rig.outcome("r1").refusal, Refusal::unknown);  // not routable any more
  rig.core->release_lease(*rig.outcome("r0").lease, rig.now());
  rig.settle();
  ASSERT_TRUE(rig.run_until([&] { return !rig.world.running("coder"); }, 5s));
  rig.run_for(200ms);
  const auto snap = rig.core->snapshot(rig.now());
  EXPECT_TRUE(std::none_of(snap.services.begin(), snap.services.end(),
                           [](const ServiceSnapshot& s) { return s.id == "coder"; }));
}

TEST(Core, ChangedServiceIsRestartedOnceIdle) {
  Rig rig(make_config({preset("coder", 10000, 7070)}), {kCard});
  rig.submit("r0", "coder", std::nullopt, std::nullopt, true);
  ASSERT_TRUE(rig.run_until([&] { return rig.done("r0"); }));
  auto changed = preset("coder", 10000, 7070);
  changed.cmd = {"llama-server", "--ctx-size", "65536"};
  config::LoadResult good;
  good.config = make_config({changed});
  auto t = rig.reload(good);
  ASSERT_TRUE(rig.reloads.at(t).ok);
  EXPECT_EQ(rig.reloads.at(t).changed, std::vector<std::string>{"coder"});
  rig.run_for(1s);
  EXPECT_EQ(rig.world.starts("coder"), 1);  // busy: not restarted yet
  rig.core->release_lease(*rig.outcome("r0").lease, rig.now());
  rig.settle();
  ASSERT_TRUE(rig.run_until([&] { return rig.world.starts("coder") == 2 && rig.ready("coder"); }));
  EXPECT_EQ(rig.world.stops("coder"), 1);
}

TEST(Core, ReloadRestartsForLaunchKeysOnlyAndAppliesTheRestAtOnce) {
  Rig rig(make_config({preset("coder", 10000, 7070)}), {kCard});
  rig.submit("r0", "coder", std::nullopt, std::nullopt, true);  // busy: restarts wait for it
  ASSERT_TRUE(rig.run_until([&] { return rig.done("r0"); }));
  // Keys the process was not started with: applied without a restart.
  auto same = preset("coder", 10000, 7070, 80);
  same.aliases = {"the-coder"};
  same.pinned = true;
  same.keep_alive = std::chrono::seconds(600);
  same.kv_cache_per_1k = 96.5;
  config::LoadResult first;
  first.config = make_config({same});
  auto t = rig.reload(first);
  ASSERT_TRUE(rig.reloads.at(t).ok) << rig.reloads.at(t).message;
  EXPECT_TRUE(rig.reloads.at(t).changed.empty());
  EXPECT_EQ(rig.core->config().resolve_model("the-coder")->id, "coder");
  // Each launch key alone is a change that restarts; reverting it before the restart happened
  // cancels the restart (the process already runs with what the file says again).
  const std::vector<std::pair<const char*, std::function<void(config::Preset&)>>> launch_keys = {
      {"env", [](config::Preset& p) { p.env["LLAMA_ARG_THREADS"] = "4"; }},
      {"health_endpoint", [](config::Preset& p) { p.health_endpoint = "/v1/models"; }},
      {"context_size", [](config::Preset& p) { p.context_size = 8192; }},
      {"sleep_url", [](config::Preset& p) { p.sleep_url = "http://127.0.0.1:7070/sleep"; }},
      {"unit_vars", [](config::Preset& p) { p.unit_vars["models_dir"] = "/srv/models"; }},
  };
  for (const auto& [key, change] : launch_keys) {
    auto next = same;
    change(next);
    config::LoadResult r;
    r.config = make_config({next});
    t = rig.reload(r);
    ASSERT_TRUE(rig.reloads.at(t).ok) << key << ": " << rig.reloads.at(t).message;
    EXPECT_EQ(rig.reloads.at(t).changed, std::vector<std::string>{"coder"}) << key;
    config::LoadResult back;
    back.config = make_config({same});
    t = rig.reload(back);
    ASSERT_TRUE(rig.reloads.at(t).ok) << key << ": " << rig.reloads.at(t).message;
    EXPECT_TRUE(rig.reloads.at(t).changed.empty()) << key;
  }
  rig.core->release_lease(*rig.outcome("r0").lease, rig.now());
  rig.settle();
  rig.run_for(2s);
  EXPECT_EQ(rig.world.starts("coder"), 1) << "a reverted change must not restart the service";
  EXPECT_EQ(rig.world.stops("coder"), 0);
  EXPECT_TRUE(rig.ready("coder"));
}

TEST(Core, AdoptsRunningServicesFromRunnersAndStateFile) {
  auto cfg = make_config({sleepy(preset("coder", 10000, 7070), 500), preset("embed", 2000, 8200)});
  Rig rig(std::move(cfg), {kCard, kCard});
  const int pid = rig.world.add_running("coder", 1, 500 * kMiB, /*asleep=*/true);
  rig.world.add_running("embed", 0, 2000 * kMiB);
  std::vector<backends::RunInfo> runs(2);
  runs[0].service_id = "coder";
  runs[0].pid = pid;
  runs[1].service_id = "embed";
  runs[1].pid = pid + 1;
  rig.core->adopt(runs, R"({"version":1,"services":{"coder":{"gpu":1,"state":"sleeping"}}})", rig.now());
  rig.settle();
  rig.run_for(200ms);
  EXPECT_EQ(rig.state("coder"), SvcState::sleeping);
  EXPECT_EQ(rig.state("embed"), SvcState::ready);
  const auto snap = rig.core->snapshot(rig.now());
  EXPECT_EQ(snap.services[0].gpu, 1);
  rig.submit("r0", "embed");
  ASSERT_TRUE(rig.done("r0"));
  EXPECT_EQ(rig.world.starts("embed"), 0);  // nothing started twice
  // The state file the core persists names both.
  EXPECT_TRUE(contains(rig.persisted, "\"coder\"")) << rig.persisted;
  EXPECT_TRUE(contains(rig.persisted, "\"sleeping\"")) << rig.persisted;
}

TEST(Core, DryRunDescribesThePlanWithoutDoingIt) {
  Rig rig(make_config({sleepy(preset("coder", 20000, 7070), 400), preset("nemo", 20000, 7071)}), {kCard});
  rig.submit("r0", "coder");
  ASSERT_TRUE(rig.run_until([&] { return rig.done("r0"); }));
  auto dr = rig.core->dry_run("nemo", rig.now());
  ASSERT_TRUE(dr.ok()) << dr.error();
  ASSERT_FALSE(dr->steps.empty());
  EXPECT_TRUE(contains(dr->steps[0], "sleep coder on GPU 0")) << dr->steps[0];
  EXPECT_TRUE(contains(dr->steps.back(), "start nemo on GPU 0")) << dr->steps.back();
  EXPECT_EQ(rig.state("coder"), SvcState::ready);
}

TEST(Core, LowPriorityRequestIsServedUnderSteadyHighPriorityStream) {
  // One GPU that holds one service at a time; "hi-*" services at priority 90 keep arriving.
  std::vector<config::Preset> ps = {preset("low", 20000, 7000, 10)};
  for (int i = 0; i < 4; ++i) ps.push_back(preset("hi" + std::to_string(i), 20000, 7001 + i, 90));
  auto cfg = make_config(ps);
  cfg.daemon.policy.aging_interval = 1s;
  Rig rig(std::move(cfg), {kCard});
  // hi0 holds the GPU (leased) while the queue fills up.
  rig.submit("first", "hi0", std::nullopt, std::nullopt, /*lease=*/true);
  ASSERT_TRUE(rig.run_until([&] { return rig.done("first"); }));
  const TimePoint low_submitted = rig.now();
  rig.submit("low", "low", std::nullopt, std::chrono::milliseconds(3600000));
  int n = 0;
  auto feed = [&] {  // keep at least two high-priority requests queued at all times
    while (rig.core->queue_length() < 3 && n < 5000) {
      rig.submit("h" + std::to_string(n), "hi" + std::to_string(1 + n % 3), std::nullopt,
                 std::chrono::milliseconds(3600000));
      ++n;
    }
  };
  feed();
  rig.core->release_lease(*rig.outcome("first").lease, rig.now());
  rig.settle();
  ASSERT_TRUE(rig.run_until(
      [&] {
        feed();
        return rig.done("low");
      },
      600s, 200ms));
  EXPECT_EQ(rig.outcome("low").refusal, Refusal::none);
  // Served once aging lifted it to 90: about 80 aging intervals, with high ones served meanwhile.
  EXPECT_GE(rig.now() - low_submitted, 79s);
  EXPECT_GT(n, 20);
}

// The value of the first sample of `name` whose labels include every `labels` pair.
std::optional<double> metric(const std::string& text, const std::string& name,
                             const std::vector<std::string>& labels) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(name + "{", 0) != 0) continue;
    const auto close = line.find('}');
    const std::string label_text = line.substr(name.size(), close - name.size() + 1);
    if (std::all_of(labels.begin(), labels.end(),
                    [&](const std::string& l) { return label_text.find(l) != std::string::npos; })) {
      return std::stod(line.substr(close + 2));
    }
  }
  return std::nullopt;
}

TEST(Core, ReportsTransitionsToTheExporter) {
  exporter::Metrics metrics(exporter::BuildInfo{"test", "test", "test"});
  auto cfg = make_config({preset("coder", 20000, 7070), preset("nemo", 20000, 7071)});
  cfg.daemon.policy.vram_release_timeout = 5s;
  Rig rig(std::move(cfg), {kCard}, &metrics);
  Behavior zombie = rig.world.behavior("coder");
  zombie.hold_memory_after_stop = true;
  rig.world.set_behavior("coder", zombie);
  rig.submit("r1", "coder");
  ASSERT_TRUE(rig.run_until([&] { return rig.done("r1"); }));
  rig.submit("r2", "nemo");
  ASSERT_TRUE(rig.run_until([&] { return rig.done("r2"); }, 10s));
  rig.submit("r3", "nope");
  const std::string text = metrics.render();
  EXPECT_EQ(metric(text, "gpumod_vram_release_timeouts_total", {"gpu=\"0\""}), 1.0) << text;
  EXPECT_EQ(metric(text, "gpumod_service_starts_total", {"svc=\"coder\""}), 1.0);
  EXPECT_EQ(metric(text, "gpumod_service_starts_total", {"svc=\"nemo\""}), 0.0);
  EXPECT_EQ(metric(text, "gpumod_service_evictions_total", {"svc=\"coder\"", "stop"}), 1.0);
  EXPECT_EQ(metric(text, "gpumod_service_state", {"svc=\"coder\"", "state=\"stopped\""}), 1.0);
  EXPECT_EQ(metric(text, "gpumod_service_state", {"svc=\"coder\"", "state=\"ready\""}), 0.0);
  EXPECT_EQ(metric(text, "gpumod_request_rejections_total", {"unknown_model"}), 1.0);
  EXPECT_EQ(metric(text, "gpumod_gpu_memory_total_bytes", {"gpu=\"0\""}), static_cast<double>(kCard));
}

}  // namespace
}  // namespace gpumod::scheduler::testing
