// What the core reports for GET /events (scheduler/event.hpp): each decision a user would ask
// "why?" about comes with its reason and numbers, in the order it happened.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "tests/scheduler/rig.hpp"

namespace gpumod::scheduler::testing {
namespace {

using policy::SvcState;
constexpr std::int64_t kCard = 24 * kGiB;

// Index of the first event of `kind` for `service` at or after `from`; -1 when none.
long find_event(const std::vector<SchedEvent>& events, const std::string& kind, const std::string& service,
                long from = 0) {
  for (auto i = static_cast<std::size_t>(from); i < events.size(); ++i) {
    if (events[i].kind == kind && (service.empty() || events[i].service == service))
      return static_cast<long>(i);
  }
  return -1;
}

std::string kinds(const std::vector<SchedEvent>& events) {
  std::string out;
  for (const auto& e : events) out += e.kind + "(" + e.service + ") ";
  return out;
}

TEST(CoreEvents, AnEvictionIsReportedWithWhoWentHowForWhomAndWhy) {
  Rig rig(make_config({sleepy(preset("coder", 18000, 7070), 1000), preset("embed", 8000, 8200)}), {kCard});
  rig.submit("r0", "coder");
  ASSERT_TRUE(rig.run_until([&] { return rig.done("r0"); }));
  rig.events.clear();
  rig.submit("r1", "embed");
  ASSERT_TRUE(rig.run_until([&] { return rig.done("r1"); }));
  const auto& ev = rig.events;

  const long queued = find_event(ev, "request.queued", "embed");
  ASSERT_GE(queued, 0) << kinds(ev);
  EXPECT_EQ(ev[queued].request_id, "r1");
  EXPECT_EQ(ev[queued].detail.at("position"), 1);
  EXPECT_EQ(ev[queued].detail.at("model"), "embed");

  const long evicting = find_event(ev, "service.evicting", "coder", queued);
  ASSERT_GT(evicting, queued) << kinds(ev);
  EXPECT_EQ(ev[evicting].detail.at("how"), "sleep");
  EXPECT_EQ(ev[evicting].detail.at("for"), "embed");
  EXPECT_NE(ev[evicting].detail.at("reason").get<std::string>().find("sleep coder"), std::string::npos)
      << ev[evicting].message;
  EXPECT_EQ(ev[evicting].gpu, 0);

  const long admitted = find_event(ev, "service.admitted", "embed", evicting);
  ASSERT_GT(admitted, evicting) << kinds(ev);
  EXPECT_EQ(ev[admitted].detail.at("evicting"), nlohmann::json::array({"coder"}));
  EXPECT_GE(ev[admitted].detail.at("needed_bytes").get<std::int64_t>(), 8000 * kMiB);

  const long slept = find_event(ev, "service.state", "coder", evicting);
  ASSERT_GT(slept, 0) << kinds(ev);
  EXPECT_EQ(ev[slept].detail.at("to"), "sleeping");

  const long starting = find_event(ev, "service.starting", "embed", admitted);
  const long ready = find_event(ev, "service.ready", "embed", starting);
  const long served = find_event(ev, "request.ready", "embed", ready);
  ASSERT_GT(starting, admitted) << kinds(ev);
  ASSERT_GT(ready, starting) << kinds(ev);
  ASSERT_GT(served, ready) << kinds(ev);
  EXPECT_GT(ev[ready].detail.at("seconds").get<double>(), 0.0);
  EXPECT_EQ(ev[served].request_id, "r1");
}

TEST(CoreEvents, AWaitForMemoryIsReportedOnceWithTheNumbers) {
  Rig rig(make_config({preset("coder", 20000, 7070), preset("nemo", 20000, 7071)}), {kCard});
  Behavior slow = rig.world.behavior("coder");
  slow.release_after_samples = 10;
  rig.world.set_behavior("coder", slow);
  rig.submit("r1", "coder");
  ASSERT_TRUE(rig.run_until([&] { return rig.done("r1"); }));
  rig.events.clear();
  rig.submit("r2", "nemo");
  ASSERT_TRUE(rig.run_until([&] { return rig.done("r2"); }));
  const auto& ev = rig.events;
  const long wait = find_event(ev, "service.vram_wait", "nemo");
  ASSERT_GE(wait, 0) << kinds(ev);
  EXPECT_EQ(find_event(ev, "service.vram_wait", "nemo", wait + 1), -1) << "reported once per bring-up";
  const auto needed = ev[wait].detail.at("needed_bytes").get<std::int64_t>();
  const auto free = ev[wait].detail.at("free_bytes").get<std::int64_t>();
  EXPECT_GE(needed, 20000 * kMiB);
  EXPECT_LT(free, needed);
  EXPECT_NE(ev[wait].message.find("(coder)"), std::string::npos)
      << "names who holds it: " << ev[wait].message;
  const long starting = find_event(ev, "service.starting", "nemo", wait);
  ASSERT_GT(starting, wait) << kinds(ev);
  EXPECT_GT(ev[starting].detail.at("vram_wait_s").get<double>(), 0.0);
}

TEST(CoreEvents, AReleaseTimeoutAndTheRefusalItCausesAreReported) {
  auto cfg = make_config({preset("coder", 20000, 7070), preset("nemo", 20000, 7071)});
  cfg.daemon.policy.vram_release_timeout = 5s;
  Rig rig(std::move(cfg), {kCard});
  Behavior zombie = rig.world.behavior("coder");
  zombie.hold_memory_after_stop = true;
  rig.world.set_behavior("coder", zombie);
  rig.submit("r1", "coder");
  ASSERT_TRUE(rig.run_until([&] { return rig.done("r1"); }));
  rig.submit("r2", "nemo");
  ASSERT_TRUE(rig.run_until([&] { return rig.done("r2"); }, 10s));
  const auto& ev = rig.events;
  const long timeout = find_event(ev, "service.vram_timeout", "nemo");
  ASSERT_GE(timeout, 0) << kinds(ev);
  EXPECT_EQ(ev[timeout].detail.at("timeout_s"), 5.0);
  EXPECT_NE(ev[timeout].message.find("not released"), std::string::npos) << ev[timeout].message;
  const long refused = find_event(ev, "request.refused", "nemo", timeout);
  ASSERT_GT(refused, timeout) << kinds(ev);
  EXPECT_EQ(ev[refused].request_id, "r2");
  EXPECT_EQ(ev[refused].detail.at("refusal"), "unavailable");
}

TEST(CoreEvents, AFailureCarriesItsMessage) {
  Rig rig(make_config({preset("coder", 10000, 7070)}), {kCard});
  Behavior b = rig.world.behavior("coder");
  b.crash_while_loading = true;
  rig.world.set_behavior("coder", b);
  rig.submit("r0", "coder");
  ASSERT_TRUE(rig.run_until([&] { return rig.done("r0"); }, 10s));
  const long failed = find_event(rig.events, "service.failed", "coder");
  ASSERT_GE(failed, 0) << kinds(rig.events);
  EXPECT_EQ(rig.events[failed].message, rig.core->last_error_of("coder"));
  EXPECT_EQ(rig.events[failed].detail.at("during"), "starting");
}

TEST(CoreEvents, ModeSwitchesAndReloadsAreReportedWithTheirResults) {
  Rig rig(make_config({preset("embed", 2500, 8210), preset("coder", 10000, 7070)},
                      {mode("rag", {"embed"}), mode("code", {"coder"})}),
          {kCard});
  auto t = rig.switch_mode("rag");
  ASSERT_TRUE(rig.run_until([&] { return rig.modes.count(t) != 0; }));
  t = rig.switch_mode("code");
  ASSERT_TRUE(rig.run_until([&] { return rig.modes.count(t) != 0; }));
  const auto& ev = rig.events;
  const long begin = find_event(ev, "mode.begin", "", find_event(ev, "mode.end", "") + 1);
  ASSERT_GE(begin, 0) << kinds(ev);
  EXPECT_EQ(ev[begin].mode, "code");
  EXPECT_EQ(ev[begin].detail.at("from"), "rag");
  const long end = find_event(ev, "mode.end", "", begin);
  ASSERT_GT(end, begin) << kinds(ev);
  EXPECT_EQ(ev[end].mode, "code");
  EXPECT_EQ(ev[end].detail.at("ok"), true);
  EXPECT_EQ(ev[end].detail.at("started"), nlohmann::json::array({"coder"}));
  EXPECT_EQ(ev[end].detail.at("stopped"), nlohmann::json::array({"embed"}));

  config::LoadResult good;
  good.config =
      make_config({preset("embed", 2500, 8210), preset("coder", 10000, 7070), preset("extra", 100, 9000)});
  rig.reload(good);
  const long reload = find_event(ev, "reload", "");
  ASSERT_GE(reload, 0) << kinds(ev);
  EXPECT_EQ(ev[reload].detail.at("ok"), true);
  EXPECT_EQ(ev[reload].detail.at("added"), nlohmann::json::array({"extra"}));
}

}  // namespace
}  // namespace gpumod::scheduler::testing
