// Lease gates in the core (docs/scheduler.md "Leases and keep-alive"): when a service's gate is
// open, and that a lease taken through it keeps the service exactly as busy as one the core
// handed out itself. The test thread plays the shell's fast path (Rig::gate_lease/give_back).
#include <gtest/gtest.h>

#include <sstream>

#include "exporter/metrics.hpp"

#include "tests/scheduler/rig.hpp"

namespace gpumod::scheduler::testing {
namespace {

using policy::SvcState;
constexpr std::int64_t kCard = 24 * kGiB;

bool contains(const std::string& hay, const std::string& needle) {
  return hay.find(needle) != std::string::npos;
}

int leases_in_snapshot(Rig& rig, const std::string& svc) {
  for (const auto& s : rig.core->snapshot(rig.now()).services) {
    if (s.id == svc) return s.leases;
  }
  return -1;
}

TEST(CoreGate, OpenExactlyWhileTheServiceIsServedAtOnce) {
  Rig rig(make_config({sleepy(preset("embed", 2500, 8210), 250)}), {kCard});
  EXPECT_FALSE(rig.gate("embed").is_open());  // stopped
  EXPECT_FALSE(rig.gate_lease("embed").has_value());
  rig.hold_ops = true;
  rig.submit("r1", "embed");
  EXPECT_EQ(rig.state("embed"), SvcState::starting);
  EXPECT_FALSE(rig.gate("embed").is_open());
  rig.hold_ops = false;
  for (const auto& e : rig.held) rig.core->on_op_done(rig.exec->run(e), rig.now());
  rig.held.clear();
  rig.settle();
  ASSERT_TRUE(rig.run_until([&] { return rig.done("r1"); }));
  EXPECT_TRUE(rig.gate("embed").is_open());  // ready and idle

  const auto sleep = rig.action("embed", ServiceAction::sleep);
  ASSERT_TRUE(rig.actions.at(sleep).ok);
  EXPECT_FALSE(rig.gate("embed").is_open());
  const auto wake = rig.action("embed", ServiceAction::wake);
  ASSERT_TRUE(rig.run_until([&] { return rig.actions.count(wake) != 0; }));
  EXPECT_TRUE(rig.gate("embed").is_open());
  const auto stop = rig.action("embed", ServiceAction::stop);
  ASSERT_TRUE(rig.actions.at(stop).ok);
  EXPECT_FALSE(rig.gate("embed").is_open());
}

TEST(CoreGate, ACrashClosesTheGateButItsLeasesStillCount) {
  Rig rig(make_config({preset("coder", 10000, 7070)}), {kCard});
  rig.submit("r0", "coder");
  ASSERT_TRUE(rig.run_until([&] { return rig.done("r0"); }));
  const auto lease = rig.gate_lease("coder");
  ASSERT_TRUE(lease.has_value());
  rig.world.crash("coder");
  ASSERT_TRUE(rig.run_until([&] { return rig.state("coder") != SvcState::ready; }, 5s));
  EXPECT_FALSE(rig.gate("coder").is_open());
  EXPECT_FALSE(rig.gate_lease("coder").has_value());
  EXPECT_EQ(leases_in_snapshot(rig, "coder"), 1);
  rig.give_back(*lease);
  EXPECT_EQ(leases_in_snapshot(rig, "coder"), 0);
}

TEST(CoreGate, EvictionWaitsForAGateLeaseAndFollowsItsEndAtOnce) {
  Rig rig(make_config({preset("coder", 20000, 7070), preset("nemo", 20000, 7071)}), {kCard});
  rig.submit("r1", "coder");
  ASSERT_TRUE(rig.run_until([&] { return rig.done("r1"); }));
  const auto lease = rig.gate_lease("coder");
  ASSERT_TRUE(lease.has_value());
  EXPECT_TRUE(LeaseGates::is_gate_lease(*lease));
  rig.submit("r2", "nemo");
  rig.run_for(5s);
  EXPECT_FALSE(rig.done("r2"));
  EXPECT_EQ(rig.state("coder"), SvcState::ready);  // not evicted while busy
  EXPECT_EQ(rig.world.stops("coder"), 0);
  EXPECT_EQ(rig.core->queue_length(), 1u);
  EXPECT_TRUE(rig.gate("coder").is_open());  // still serving new leases meanwhile
  EXPECT_TRUE(rig.gate("coder").wanted());   // and the core waits for their end

  // Giving it back tells the core; the eviction follows without waiting for a tick.
  rig.give_back(*lease);
  EXPECT_EQ(rig.world.stops("coder"), 1);
  EXPECT_FALSE(rig.gate("coder").is_open());
  ASSERT_TRUE(rig.run_until([&] { return rig.done("r2"); }));
  EXPECT_EQ(rig.outcome("r2").refusal, Refusal::none);
  EXPECT_EQ(rig.state("coder"), SvcState::stopped);
}

TEST(CoreGate, ALeaseGivenBackTwiceDoesNotLetABusyServiceBeEvicted) {
  Rig rig(make_config({preset("coder", 20000, 7070), preset("nemo", 20000, 7071)}), {kCard});
  rig.submit("r1", "coder");
  ASSERT_TRUE(rig.run_until([&] { return rig.done("r1"); }));
  const auto first = rig.gate_lease("coder");
  const auto second = rig.gate_lease("coder");
  ASSERT_TRUE(first && second);
  EXPECT_NE(*first, *second);
  rig.submit("r2", "nemo");
  rig.give_back(*first);
  rig.give_back(*first);  // a caller bug: ignored
  rig.run_for(5s);
  EXPECT_FALSE(rig.done("r2"));
  EXPECT_EQ(rig.world.stops("coder"), 0);
  EXPECT_EQ(leases_in_snapshot(rig, "coder"), 1);
  rig.give_back(*second);
  ASSERT_TRUE(rig.run_until([&] { return rig.done("r2"); }));
  EXPECT_EQ(rig.world.stops("coder"), 1);
}

TEST(CoreGate, StopAndSleepAre409WhileAGateLeaseIsHeld) {
  Rig rig(make_config({sleepy(preset("coder", 20000, 7070), 400)}), {kCard});
  rig.submit("r1", "coder");
  ASSERT_TRUE(rig.run_until([&] { return rig.done("r1"); }));
  const auto lease = rig.gate_lease("coder");
  ASSERT_TRUE(lease.has_value());
  for (const auto action : {ServiceAction::stop, ServiceAction::sleep}) {
    const auto t = rig.action("coder", action);
    const ActionResult r = rig.actions.at(t);
    EXPECT_FALSE(r.ok) << to_string(action);
    EXPECT_EQ(r.refusal, Refusal::conflict);
    EXPECT_TRUE(contains(r.message, "busy: 1 active lease(s)")) << r.message;
  }
  EXPECT_EQ(rig.state("coder"), SvcState::ready);
  EXPECT_EQ(rig.world.stops("coder"), 0);
  const auto another = rig.gate_lease("coder");  // a refused stop leaves the gate open
  ASSERT_TRUE(another.has_value());
  rig.give_back(*another);
  rig.give_back(*lease);
  const auto t = rig.action("coder", ServiceAction::stop);
  EXPECT_TRUE(rig.actions.at(t).ok) << rig.actions.at(t).message;
  EXPECT_EQ(rig.state("coder"), SvcState::stopped);
}

TEST(CoreGate, ModeSwitchWaitsForAGateLease) {
  Rig rig(make_config({preset("coder", 20000, 7070), preset("nemo", 20000, 7071)},
                      {mode("code", {"coder"}), mode("nemo", {"nemo"})}),
          {kCard});
  auto t = rig.switch_mode("code");
  ASSERT_TRUE(rig.run_until([&] { return rig.modes.count(t) != 0; }));
  ASSERT_TRUE(rig.modes.at(t).ok);
  const auto lease = rig.gate_lease("coder");
  ASSERT_TRUE(lease.has_value());
  t = rig.switch_mode("nemo");
  rig.run_for(5s);
  EXPECT_EQ(rig.modes.count(t), 0u);  // drains: waits for the lease (deadline: release timeout)
  EXPECT_EQ(rig.state("coder"), SvcState::ready);
  EXPECT_EQ(rig.world.stops("coder"), 0);
  rig.give_back(*lease);
  ASSERT_TRUE(rig.run_until([&] { return rig.modes.count(t) != 0; }));
  const ModeResult r = rig.modes.at(t);
  EXPECT_TRUE(r.ok) << ::testing::PrintToString(r.errors);
  EXPECT_EQ(r.stopped, std::vector<std::string>{"coder"});
  EXPECT_EQ(rig.state("nemo"), SvcState::ready);
}

TEST(CoreGate, RemovedServiceClosesItsGateAndStopsWhenItsLeasesEnd) {
  Rig rig(make_config({preset("coder", 10000, 7070), preset("embed", 2000, 8200)}), {kCard});
  rig.submit("r0", "coder");
  ASSERT_TRUE(rig.run_until([&] { return rig.done("r0"); }));
  const auto lease = rig.gate_lease("coder");
  ASSERT_TRUE(lease.has_value());
  config::LoadResult good;
  good.config = make_config({preset("embed", 2000, 8200)});
  const auto t = rig.reload(good);
  ASSERT_TRUE(rig.reloads.at(t).ok);
  EXPECT_FALSE(rig.gate("coder").is_open());  // no new leases for a removed service
  rig.run_for(1s);
  EXPECT_TRUE(rig.world.running("coder"));  // busy: kept until the lease ends
  rig.give_back(*lease);
  ASSERT_TRUE(rig.run_until([&] { return !rig.world.running("coder"); }, 5s));
}

TEST(CoreGate, ChangedServiceRestartsWhenItsGateLeasesEnd) {
  Rig rig(make_config({preset("coder", 10000, 7070)}), {kCard});
  rig.submit("r0", "coder");
  ASSERT_TRUE(rig.run_until([&] { return rig.done("r0"); }));
  const auto lease = rig.gate_lease("coder");
  ASSERT_TRUE(lease.has_value());
  auto changed = preset("coder", 10000, 7070);
  changed.cmd = {"llama-server", "--ctx-size", "65536"};
  config::LoadResult good;
  good.config = make_config({changed});
  const auto t = rig.reload(good);
  ASSERT_TRUE(rig.reloads.at(t).ok);
  rig.run_for(1s);
  EXPECT_EQ(rig.world.starts("coder"), 1);  // busy: not restarted yet
  rig.give_back(*lease);
  ASSERT_TRUE(rig.run_until([&] { return rig.world.starts("coder") == 2 && rig.ready("coder"); }));
  EXPECT_TRUE(rig.gate("coder").is_open());  // the slot is per service id: same gate again
}

TEST(CoreGate, SnapshotAndPlannerCountBothKindsOfLease) {
  exporter::Metrics metrics(exporter::BuildInfo{"test", "test", "test"});
  Rig rig(make_config({preset("coder", 20000, 7070), preset("nemo", 20000, 7071)}), {kCard}, &metrics);
  rig.submit("r0", "coder", std::nullopt, std::nullopt, /*lease=*/true);  // the core's own lease
  ASSERT_TRUE(rig.run_until([&] { return rig.done("r0"); }));
  const auto gate_lease = rig.gate_lease("coder");
  ASSERT_TRUE(gate_lease.has_value());
  EXPECT_EQ(leases_in_snapshot(rig, "coder"), 2);
  // The core adds its own leases to the gauge; the shell adds gate leases (shell test).
  EXPECT_NE(metrics.render().find("gpumod_service_active_leases{svc=\"coder\"} 1"), std::string::npos);
  rig.submit("r1", "nemo");
  rig.core->release_lease(*rig.outcome("r0").lease, rig.now());
  rig.settle();
  EXPECT_NE(metrics.render().find("gpumod_service_active_leases{svc=\"coder\"} 0"), std::string::npos);
  rig.run_for(2s);
  EXPECT_FALSE(rig.done("r1"));  // the gate lease still holds it
  EXPECT_EQ(rig.world.stops("coder"), 0);
  rig.give_back(*gate_lease);
  ASSERT_TRUE(rig.run_until([&] { return rig.done("r1"); }));
  EXPECT_EQ(rig.outcome("r1").refusal, Refusal::none);
}

}  // namespace
}  // namespace gpumod::scheduler::testing
