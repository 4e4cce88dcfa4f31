// The threaded Scheduler shell wired to the fakes: a real loop thread and real worker
// threads, the system clock and short poll intervals. Waits are bounded polls of futures
// with a generous deadline (20 s); the normal run takes milliseconds.
#include <gtest/gtest.h>

#include <stdlib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "backends/service_log.hpp"
#include "exporter/metrics.hpp"
#include "scheduler/lease_gate.hpp"
#include "scheduler/scheduler.hpp"
#include "tests/scheduler/fakes.hpp"
#include "tests/scheduler/rig.hpp"
#include "tests/support/temp_dir.hpp"

namespace gpumod::scheduler::testing {
namespace {

constexpr auto kDeadline = std::chrono::seconds(20);

template <typename F>
bool ready_in_time(F& f) {
  return f.wait_for(kDeadline) == std::future_status::ready;
}

using gpumod::testing::TempDir;

config::Config shell_config(const std::filesystem::path& state_dir) {
  auto c = make_config(
      {sleepy(preset("coder", 20000, 7070), 400), preset("embed", 2500, 8210), preset("nemo", 20000, 7071)});
  config::Mode code;
  code.id = "code";
  code.services = {"embed", "coder"};
  config::Mode nemo;
  nemo.id = "nemo";
  nemo.services = {"embed", "nemo"};
  c.modes = {code, nemo};
  c.daemon.state_dir = state_dir;
  c.daemon.policy.vram_poll_interval = std::chrono::milliseconds(5);
  c.daemon.policy.health_poll_interval = std::chrono::milliseconds(5);
  c.daemon.policy.idle_poll_interval = std::chrono::milliseconds(50);
  return c;
}

struct Shell {
  explicit Shell(const std::filesystem::path& state_dir) : world({24 * kGiB}), runner(world), probe(world) {
    cfg = shell_config(state_dir);
    for (const auto& p : cfg.presets) {
      Behavior b;
      b.bytes = p.vram_mb * kMiB;
      b.sleep_bytes = p.sleep_residual_mb() * kMiB;
      b.health_checks_until_ready = 2;
      world.set_behavior(p.id, b);
    }
    deps.probe = &probe;
    deps.process_runner = &runner;
    deps.worker_threads = 4;
    deps.make_driver = [this](const config::Preset& p) { return std::make_unique<FakeDriver>(world, p.id); };
    deps.make_launch = [](const config::Preset& p, int gpu) -> Result<backends::LaunchSpec> {
      backends::LaunchSpec s;
      s.service_id = p.id;
      s.argv = {"fake", p.id};
      s.env["GPUMOD_TEST_GPU"] = std::to_string(gpu);
      return s;
    };
  }
  std::unique_ptr<Scheduler> make() { return std::make_unique<Scheduler>(cfg, deps); }

  FakeWorld world;
  FakeRunner runner;
  FakeProbe probe;
  Deps deps;
  config::Config cfg;
};

RequestSpec req(const std::string& model, bool lease = false) {
  RequestSpec s;
  s.model = model;
  s.hold_lease = lease;
  return s;
}

TEST(SchedulerShell, ServesARequestThroughWorkerThreadsAndPublishesSnapshots) {
  TempDir dir;
  Shell sh(dir.path());
  auto sched = sh.make();
  sched->start();
  const auto v0 = sched->snapshot()->version;
  auto t1 = sched->submit(req("coder"));
  auto t2 = sched->submit(req("coder-model"));
  ASSERT_TRUE(ready_in_time(t1.outcome));
  ASSERT_TRUE(ready_in_time(t2.outcome));
  EXPECT_EQ(t1.outcome.get().refusal, Refusal::none);
  EXPECT_EQ(t2.outcome.get().refusal, Refusal::none);
  EXPECT_EQ(t1.outcome.get().endpoint, "http://127.0.0.1:7070");
  EXPECT_EQ(sh.world.starts("coder"), 1);  // one load for both
  // Ready: skips the queue, answered from the published snapshot before submit returns
  // (t1's promise is fulfilled only after the snapshot showing coder ready was published).
  auto t3 = sched->submit(req("coder"));
  ASSERT_EQ(t3.outcome.wait_for(std::chrono::seconds(0)), std::future_status::ready);
  EXPECT_EQ(t3.outcome.get().refusal, Refusal::none);
  EXPECT_EQ(t3.outcome.get().endpoint, "http://127.0.0.1:7070");
  EXPECT_EQ(t3.outcome.get().request_id, t3.request_id);
  // A lease on a ready model is taken through its gate, also before submit returns.
  auto leased = sched->submit(req("coder", /*lease=*/true));
  ASSERT_EQ(leased.outcome.wait_for(std::chrono::seconds(0)), std::future_status::ready);
  EXPECT_EQ(leased.outcome.get().refusal, Refusal::none);
  EXPECT_EQ(leased.outcome.get().endpoint, "http://127.0.0.1:7070");
  ASSERT_TRUE(leased.outcome.get().lease.has_value());
  EXPECT_TRUE(LeaseGates::is_gate_lease(*leased.outcome.get().lease));
  sched->release_lease(*leased.outcome.get().lease);
  auto snap = sched->snapshot();
  EXPECT_GT(snap->version, v0);
  ASSERT_EQ(snap->gpus.size(), 1u);
  EXPECT_EQ(snap->gpus[0].total_bytes, 24 * kGiB);
  const auto& coder = snap->services[0];
  EXPECT_EQ(coder.id, "coder");
  EXPECT_EQ(coder.state, policy::SvcState::ready);
  auto info = sched->request_info(t1.request_id);
  ASSERT_TRUE(info.has_value());
  EXPECT_EQ(info->status, RequestStatus::ready);
  auto unknown = sched->submit(req("nope"));
  ASSERT_TRUE(ready_in_time(unknown.outcome));
  EXPECT_EQ(unknown.outcome.get().refusal, Refusal::unknown);
}

// A failed start's event is followed by the last lines of the service's log, read on a worker:
// the failure comes first in the event log however fast that worker is (it once raced ahead).
TEST(SchedulerShell, AFailuresLogTailFollowsItsFailedEvent) {
  TempDir dir;
  Shell sh(dir.path());
  const auto log_dir = dir.path() / "logs";
  std::filesystem::create_directories(log_dir);
  std::ofstream(backends::service_log_path(log_dir, "embed")) << "loading weights\nout of file handles\n";
  Behavior b = sh.world.behavior("embed");
  b.fail_start = true;
  sh.world.set_behavior("embed", b);
  sh.deps.log_dir = log_dir;
  for (int round = 0; round < 20; ++round) {
    auto sched = sh.make();
    sched->start();
    auto t = sched->submit(req("embed"));
    ASSERT_TRUE(ready_in_time(t.outcome));
    EXPECT_NE(t.outcome.get().refusal, Refusal::none);
    std::vector<std::string> kinds;
    std::string tail_json;
    const auto deadline = std::chrono::steady_clock::now() + kDeadline;
    while (tail_json.empty() && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
      kinds.clear();
      for (const auto& e : sched->events().read_after(0, 1000).events) {
        kinds.push_back(e->kind);
        if (e->kind == "service.log_tail") tail_json = e->json;
      }
    }
    const auto failed = std::find(kinds.begin(), kinds.end(), "service.failed");
    const auto tail = std::find(kinds.begin(), kinds.end(), "service.log_tail");
    ASSERT_NE(tail, kinds.end()) << "round " << round;
    ASSERT_LT(failed, tail) << "round " << round;
    EXPECT_NE(tail_json.find("out of file handles"), std::string::npos) << tail_json;
  }
}

// `accepted` is ready only once the published state knows the request: what lets the API
// answer 202 to wait:false and be sure a GET or DELETE right after finds the id.
TEST(SchedulerShell, AnAcceptedRequestIsVisibleAndARefusalIsDecided) {
  TempDir dir;
  Shell sh(dir.path());
  auto sched = sh.make();
  sched->start();
  for (int i = 0; i < 20; ++i) {
    auto cold = sched->submit(req(i % 2 == 0 ? "coder" : "nemo"));
    if (cold.accepted.valid()) {
      ASSERT_EQ(cold.accepted.wait_for(kDeadline), std::future_status::ready);
      EXPECT_TRUE(sched->request_info(cold.request_id).has_value()) << i;
    } else {
      // Decided at once on the fast path: the model was still ready from an earlier round (the
      // other model's load had not evicted it yet; timing on a loaded machine). That answer is
      // complete when submit returns.
      ASSERT_EQ(cold.outcome.wait_for(std::chrono::seconds(0)), std::future_status::ready) << i;
      EXPECT_EQ(cold.outcome.get().status, RequestStatus::ready) << i;
    }
    auto unknown = sched->submit(req("nope"));
    ASSERT_EQ(unknown.accepted.wait_for(kDeadline), std::future_status::ready);
    ASSERT_EQ(unknown.outcome.wait_for(std::chrono::seconds(0)), std::future_status::ready) << i;
    EXPECT_EQ(unknown.outcome.get().refusal, Refusal::unknown);
    const auto info = sched->request_info(unknown.request_id);
    ASSERT_TRUE(info.has_value()) << i;
    EXPECT_EQ(info->status, RequestStatus::rejected);
  }
  sched->stop();
}

// Fast-path answers are recorded by the scheduler thread in batches; none may be lost.
TEST(SchedulerShell, EveryFastPathAnswerIsRecordedInTheAdmissionWaitHistogram) {
  TempDir dir;
  Shell sh(dir.path());
  exporter::Metrics metrics(exporter::BuildInfo{"test", "test", "test"});
  sh.deps.metrics = &metrics;
  auto sched = sh.make();
  sched->start();
  auto first = sched->submit(req("embed"));
  ASSERT_TRUE(ready_in_time(first.outcome));
  ASSERT_EQ(first.outcome.get().refusal, Refusal::none);
  auto count = [&] {
    const std::string text = metrics.render();
    const std::string key = "gpumod_admission_wait_seconds_count ";
    const auto at = text.find(key);
    return at == std::string::npos ? -1.0 : std::stod(text.substr(at + key.size()));
  };
  const double before = count();
  constexpr int kAnswers = 500;
  std::vector<std::thread> clients;
  clients.reserve(4);
  for (int c = 0; c < 4; ++c) {
    clients.emplace_back([&] {
      for (int i = 0; i < kAnswers / 4; ++i) {
        auto t = sched->submit(req("embed"));
        EXPECT_EQ(t.outcome.wait_for(std::chrono::seconds(0)), std::future_status::ready);
      }
    });
  }
  for (auto& c : clients) c.join();
  const auto deadline = std::chrono::steady_clock::now() + kDeadline;
  while (count() < before + kAnswers && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ(count(), before + kAnswers);
  sched->stop();
}

// Answers given while the shell collects a batch (between timed drains) still count before
// the next plan, each at its own time: the least recently used service is the one evicted.
TEST(SchedulerShell, APlanSeesEveryFastPathAnswerGivenBeforeIt) {
  TempDir dir;
  Shell sh(dir.path());
  auto c = make_config({preset("a", 10000, 7080), preset("b", 10000, 7081), preset("c", 10000, 7082)});
  c.daemon.state_dir = dir.path();
  c.daemon.policy = sh.cfg.daemon.policy;
  sh.cfg = c;
  for (const auto& p : sh.cfg.presets) {
    Behavior b;
    b.bytes = p.vram_mb * kMiB;
    b.health_checks_until_ready = 2;
    sh.world.set_behavior(p.id, b);
  }
  auto sched = sh.make();
  sched->start();
  for (const char* m : {"a", "b"}) {
    auto t = sched->submit(req(m));
    ASSERT_TRUE(ready_in_time(t.outcome));
    ASSERT_EQ(t.outcome.get().refusal, Refusal::none);
  }
  // b, then a, answered from the snapshot: recorded in one batch or in two (the second by the
  // drain that starts the round of c's plan). Either way the plan sees a as the later use.
  auto by_b = sched->submit(req("b"));
  auto by_a = sched->submit(req("a"));
  ASSERT_EQ(by_b.outcome.wait_for(std::chrono::seconds(0)), std::future_status::ready);
  ASSERT_EQ(by_a.outcome.wait_for(std::chrono::seconds(0)), std::future_status::ready);
  auto t = sched->submit(req("c"));
  ASSERT_TRUE(ready_in_time(t.outcome));
  EXPECT_EQ(t.outcome.get().refusal, Refusal::none);
  EXPECT_EQ(sh.world.stops("b"), 1);
  EXPECT_EQ(sh.world.stops("a"), 0);
  sched->stop();
}

TEST(SchedulerShell, LeaseBlocksEvictionUntilReleasedAndModesSwitch) {
  TempDir dir;
  Shell sh(dir.path());
  auto sched = sh.make();
  sched->start();
  auto t1 = sched->submit(req("nemo", /*lease=*/true));
  ASSERT_TRUE(ready_in_time(t1.outcome));
  const auto first = t1.outcome.get();
  ASSERT_TRUE(first.lease.has_value());
  auto t2 = sched->submit(req("coder"));
  EXPECT_EQ(t2.outcome.wait_for(std::chrono::milliseconds(200)), std::future_status::timeout);
  EXPECT_EQ(sh.world.stops("nemo"), 0);
  sched->release_lease(*first.lease);
  ASSERT_TRUE(ready_in_time(t2.outcome));
  EXPECT_EQ(t2.outcome.get().refusal, Refusal::none);

  auto m = sched->switch_mode("nemo");
  ASSERT_TRUE(ready_in_time(m));
  const ModeResult r = m.get();
  EXPECT_TRUE(r.ok) << (r.errors.empty() ? "" : r.errors[0]);
  EXPECT_EQ(sched->snapshot()->current_mode, "nemo");
  auto a = sched->service_action("embed", ServiceAction::stop);
  ASSERT_TRUE(ready_in_time(a));
  EXPECT_TRUE(a.get().ok);
  auto dr = sched->dry_run("coder");
  ASSERT_TRUE(ready_in_time(dr));
  auto plan = dr.get();
  ASSERT_TRUE(plan.ok()) << plan.error();
  EXPECT_FALSE(plan->steps.empty());
}

double active_leases(const exporter::Metrics& metrics, const std::string& svc) {
  const std::string text = metrics.render();
  const std::string key = "gpumod_service_active_leases{svc=\"" + svc + "\"} ";
  const auto at = text.find(key);
  return at == std::string::npos ? -1.0 : std::stod(text.substr(at + key.size()));
}

// Waits (bounded) for the gauge of `svc` to reach 0: the last release may be counted by the
// scheduler thread.
bool leases_drain_to_zero(const exporter::Metrics& metrics, const std::string& svc) {
  const auto deadline = std::chrono::steady_clock::now() + kDeadline;
  while (active_leases(metrics, svc) != 0.0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return active_leases(metrics, svc) == 0.0;
}

// The active-leases gauge counts the scheduler's own leases and gate leases together.
TEST(SchedulerShell, ActiveLeasesCountBothKinds) {
  TempDir dir;
  Shell sh(dir.path());
  exporter::Metrics metrics(exporter::BuildInfo{"test", "test", "test"});
  sh.deps.metrics = &metrics;
  auto sched = sh.make();
  sched->start();
  auto cold = sched->submit(req("embed", /*lease=*/true));  // not ready: the scheduler thread's lease
  ASSERT_TRUE(ready_in_time(cold.outcome));
  const auto slow = cold.outcome.get().lease;
  ASSERT_TRUE(slow.has_value());
  EXPECT_FALSE(LeaseGates::is_gate_lease(*slow));
  auto warm = sched->submit(req("embed", /*lease=*/true));  // ready: through the gate
  ASSERT_EQ(warm.outcome.wait_for(std::chrono::seconds(0)), std::future_status::ready);
  const auto fast = warm.outcome.get().lease;
  ASSERT_TRUE(fast.has_value());
  EXPECT_TRUE(LeaseGates::is_gate_lease(*fast));
  EXPECT_EQ(active_leases(metrics, "embed"), 2.0);
  sched->release_lease(*fast);
  EXPECT_EQ(active_leases(metrics, "embed"), 1.0);  // given back on this thread
  sched->release_lease(*fast);                      // twice: ignored
  EXPECT_EQ(active_leases(metrics, "embed"), 1.0);
  sched->release_lease(*slow);
  EXPECT_TRUE(leases_drain_to_zero(metrics, "embed"));
  sched->stop();
}

// Clients take and give back leases on "coder" in a tight loop while the main thread keeps
// asking for "nemo", which fits only once coder is put to sleep. Each client counts itself in
// `held` while it holds a lease; the fake driver's sleep (and the runner's stop) of coder
// checks that nobody does. Also under ASan+UBSan in CI (and once by hand under TSan).
TEST(SchedulerShell, NoLeasedServiceIsEvictedUnderConcurrentLeases) {
  TempDir dir;
  Shell sh(dir.path());
  exporter::Metrics metrics(exporter::BuildInfo{"test", "test", "test"});
  sh.deps.metrics = &metrics;
  std::atomic<int> held{0};
  std::atomic<int> violations{0};
  std::atomic<int> evictions{0};
  sh.world.before_release = [&](const std::string& svc) {
    if (svc != "coder") return;
    evictions.fetch_add(1);
    if (held.load() != 0) violations.fetch_add(1);
  };
  auto sched = sh.make();
  sched->start();
  auto coder_ready = [&] {
    for (const auto& s : sched->snapshot()->services) {
      if (s.id == "coder") return s.state == policy::SvcState::ready;
    }
    return false;
  };

  constexpr int kClients = 4;
  constexpr int kRounds = 5;
  std::atomic<bool> stop{false};
  std::atomic<int> answered{0}, unanswered{0}, refused{0}, gate_leases{0};
  std::vector<std::thread> clients;
  clients.reserve(kClients);
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&] {
      while (!stop.load()) {
        auto t = sched->submit(req("coder", /*lease=*/true));
        if (!ready_in_time(t.outcome)) {
          unanswered.fetch_add(1);
          return;
        }
        answered.fetch_add(1);
        const RequestOutcome o = t.outcome.get();
        if (o.refusal != Refusal::none || !o.lease) {
          refused.fetch_add(1);
          continue;
        }
        if (LeaseGates::is_gate_lease(*o.lease)) gate_leases.fetch_add(1);
        held.fetch_add(1);
        std::this_thread::yield();  // "use" the endpoint
        held.fetch_sub(1);
        sched->release_lease(*o.lease);
        std::this_thread::sleep_for(std::chrono::microseconds(20));
      }
    });
  }
  struct JoinAtExit {  // also when an assertion below ends the test early
    std::atomic<bool>& stop;
    std::vector<std::thread>& threads;
    ~JoinAtExit() { join(); }
    void join() {
      stop.store(true);
      for (auto& t : threads) {
        if (t.joinable()) t.join();
      }
    }
  } join_clients{stop, clients};
  int nemo_served = 0;
  for (int round = 0; round < kRounds; ++round) {
    const auto deadline = std::chrono::steady_clock::now() + kDeadline;
    while (!coder_ready() && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    ASSERT_TRUE(coder_ready()) << "round " << round;
    // Let the clients take a gate lease on this ready spell first (on a loaded machine they may
    // not have run yet), so every round races the eviction against gate leases.
    const int gates_before = gate_leases.load();
    while (gate_leases.load() == gates_before && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
    auto t = sched->submit(req("nemo"));
    ASSERT_TRUE(ready_in_time(t.outcome)) << "round " << round;
    if (t.outcome.get().refusal == Refusal::none) ++nemo_served;
  }
  join_clients.join();

  EXPECT_EQ(violations.load(), 0);
  EXPECT_EQ(unanswered.load(), 0);
  EXPECT_EQ(refused.load(), 0);
  EXPECT_EQ(nemo_served, kRounds);
  EXPECT_GE(evictions.load(), kRounds);
  EXPECT_GE(gate_leases.load(), kRounds);
  EXPECT_GT(answered.load(), gate_leases.load());  // some waited for coder to come back
  EXPECT_EQ(held.load(), 0);
  EXPECT_TRUE(leases_drain_to_zero(metrics, "coder"));
  sched->stop();
}

TEST(SchedulerShell, ReloadCancelAndStopAnswerEveryCaller) {
  TempDir dir;
  Shell sh(dir.path());
  int loads = 0;
  sh.deps.load_config = [&]() {
    ++loads;
    config::LoadResult r;
    auto next = shell_config(dir.path());
    next.presets[1].priority = 80;
    r.config = next;
    return r;
  };
  auto sched = sh.make();
  sched->start();
  auto rl = sched->reload();
  ASSERT_TRUE(ready_in_time(rl));
  const auto rr = rl.get();
  EXPECT_TRUE(rr.ok) << rr.message;
  EXPECT_EQ(loads, 1);
  EXPECT_EQ(sched->config()->presets[1].priority, 80);

  // Hold the GPU with a lease, queue a request, cancel it.
  auto t1 = sched->submit(req("coder", true));
  ASSERT_TRUE(ready_in_time(t1.outcome));
  auto t2 = sched->submit(req("nemo"));
  ASSERT_TRUE(sched->cancel(t2.request_id).get().ok());
  // Once cancel() returns, the published state says so (a client's GET right after its DELETE).
  const auto info = sched->request_info(t2.request_id);
  ASSERT_TRUE(info.has_value());
  EXPECT_EQ(info->status, RequestStatus::cancelled);
  ASSERT_TRUE(ready_in_time(t2.outcome));
  EXPECT_EQ(t2.outcome.get().status, RequestStatus::cancelled);
  EXPECT_FALSE(sched->cancel("no-such-request").get().ok());

  // A request still waiting when the scheduler stops is answered, not left hanging.
  auto t3 = sched->submit(req("nemo"));
  sched->stop();
  ASSERT_TRUE(ready_in_time(t3.outcome));
  EXPECT_EQ(t3.outcome.get().refusal, Refusal::unavailable);
  auto t4 = sched->submit(req("coder"));
  ASSERT_TRUE(ready_in_time(t4.outcome));
  EXPECT_EQ(t4.outcome.get().refusal, Refusal::unavailable);
}

// The HTTP loop waits for nothing: it hands each call a Notify and reads the future when that
// fires. So each Notify must come exactly once, only once its future is ready, for an answer
// given at once, one decided later on the scheduler thread, and one the stop gives.
TEST(SchedulerShell, EveryNotifyFiresOnceAfterItsFutureIsReady) {
  TempDir dir;
  Shell sh(dir.path());
  auto sched = sh.make();
  sched->start();
  struct Watched {
    std::atomic<int> calls{0};
    std::atomic<bool> ready_when_called{true};
  };
  const auto watch = [](Watched& w, auto* future) {
    return [&w, future] {
      if (future->wait_for(std::chrono::seconds(0)) != std::future_status::ready) w.ready_when_called = false;
      ++w.calls;
    };
  };
  const auto once_ready = [](const Watched& w) {
    for (int i = 0; i < 500 && w.calls.load() == 0; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    return w.calls.load() == 1 && w.ready_when_called.load();
  };

  // Decided later: the load happens on the scheduler's workers. The future is stored before
  // the Notify can look at it through the slot (the HTTP loop does the same: its post runs
  // after the handler returned).
  Watched cold_decided, cold_accepted;
  std::shared_future<RequestOutcome> cold_outcome;
  std::shared_future<void> cold_taken;
  std::mutex slots;
  std::unique_lock hold(slots);
  auto cold = sched->submit(
      req("coder"),
      [&] {
        std::lock_guard l(slots);
        watch(cold_decided, &cold_outcome)();
      },
      [&] {
        std::lock_guard l(slots);
        watch(cold_accepted, &cold_taken)();
      });
  cold_outcome = cold.outcome;
  cold_taken = cold.accepted;
  hold.unlock();
  EXPECT_TRUE(once_ready(cold_accepted));
  EXPECT_TRUE(once_ready(cold_decided));
  EXPECT_EQ(cold_outcome.get().status, RequestStatus::ready);

  // Answered at once from the snapshot: both fire inside submit, after the outcome is set.
  Watched warm_accepted;
  int decided_inside = 0;
  auto warm = sched->submit(
      req("coder"), [&] { ++decided_inside; }, [&] { ++warm_accepted.calls; });
  EXPECT_EQ(decided_inside, 1);
  EXPECT_EQ(warm_accepted.calls.load(), 1);
  EXPECT_EQ(warm.outcome.wait_for(std::chrono::seconds(0)), std::future_status::ready);

  // An action, a plan, a cancel of an unknown request.
  Watched action_done, plan_done, cancel_done;
  std::future<ActionResult> action;
  std::future<Result<DryRun>> plan;
  std::future<Result<void>> cancel;
  {
    std::lock_guard l(slots);
    action = sched->service_action("coder", ServiceAction::stop, [&] {
      std::lock_guard g(slots);
      watch(action_done, &action)();
    });
    plan = sched->dry_run("nemo", [&] {
      std::lock_guard g(slots);
      watch(plan_done, &plan)();
    });
    cancel = sched->cancel("no-such-request", [&] {
      std::lock_guard g(slots);
      watch(cancel_done, &cancel)();
    });
  }
  EXPECT_TRUE(once_ready(action_done));
  EXPECT_TRUE(once_ready(plan_done));
  EXPECT_TRUE(once_ready(cancel_done));
  EXPECT_FALSE(cancel.get().ok());

  // Still pending when the scheduler stops: the stop answers it and fires its Notify.
  Behavior slow = sh.world.behavior("nemo");
  slow.never_healthy = true;
  sh.world.set_behavior("nemo", slow);
  Watched stopped_decided;
  std::shared_future<RequestOutcome> stopped_outcome;
  {
    std::lock_guard l(slots);
    auto t = sched->submit(req("nemo"), [&] {
      std::lock_guard g(slots);
      watch(stopped_decided, &stopped_outcome)();
    });
    stopped_outcome = t.outcome;
  }
  sched->stop();
  EXPECT_TRUE(once_ready(stopped_decided));
  EXPECT_EQ(stopped_outcome.get().refusal, Refusal::unavailable);
}

TEST(SchedulerShell, RestartAdoptsWhatIsRunningWithoutStartingItTwice) {
  TempDir dir;
  Shell sh(dir.path());
  {
    auto sched = sh.make();
    sched->start();
    auto t1 = sched->submit(req("coder"));
    ASSERT_TRUE(ready_in_time(t1.outcome));
    auto s = sched->service_action("coder", ServiceAction::sleep);
    ASSERT_TRUE(ready_in_time(s));
    ASSERT_TRUE(s.get().ok);
    auto t2 = sched->submit(req("embed"));
    ASSERT_TRUE(ready_in_time(t2.outcome));
  }  // the daemon goes away; its services keep running
  ASSERT_TRUE(std::filesystem::exists(dir.path() / "scheduler.json"));
  ASSERT_TRUE(sh.world.running("coder"));
  for (const char* id : {"coder", "embed"}) {
    backends::RunInfo info;
    info.service_id = id;
    info.pid = sh.world.pids(id).at(0);
    sh.runner.adopted.push_back(info);
  }
  auto sched = sh.make();
  sched->start();
  auto t3 = sched->submit(req("embed"));
  ASSERT_TRUE(ready_in_time(t3.outcome));
  EXPECT_EQ(t3.outcome.get().refusal, Refusal::none);
  const auto deadline = std::chrono::steady_clock::now() + kDeadline;
  while (sched->snapshot()->services[0].state != policy::SvcState::sleeping &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ(sched->snapshot()->services[0].state, policy::SvcState::sleeping);
  EXPECT_EQ(sh.world.starts("coder"), 1);
  EXPECT_EQ(sh.world.starts("embed"), 1);
  auto t4 = sched->submit(req("coder"));  // wakes the adopted sleeper
  ASSERT_TRUE(ready_in_time(t4.outcome));
  EXPECT_EQ(t4.outcome.get().refusal, Refusal::none);
  EXPECT_EQ(sh.world.starts("coder"), 1);
}

// The heartbeat: an idle loop still turns (not stalled), a step that blocks the loop past
// policy.stall_timeout is reported as stalled with its name, and the report clears once the
// loop turns again.
TEST(SchedulerShell, LoopHealthReportsAStuckStepByName) {
  TempDir dir;
  Shell sh(dir.path());
  sh.cfg.daemon.policy.stall_timeout = std::chrono::seconds(2);  // the smallest the config takes
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  std::atomic<bool> blocked{false};
  sh.deps.before_step = [&](const char* step) {
    if (std::string(step) == "mode switch") {
      blocked = true;
      released.wait();
    }
  };
  auto sched = sh.make();
  EXPECT_FALSE(sched->loop_health().running);
  sched->start();
  // Idle past the stall timeout: the loop keeps turning on its own.
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  auto idle = sched->loop_health();
  EXPECT_TRUE(idle.running);
  EXPECT_FALSE(idle.stalled) << idle.since_last_turn.count() << " ms since the last turn";
  auto sw = sched->switch_mode("code");
  LoopHealth stuck;
  const auto until = std::chrono::steady_clock::now() + kDeadline;
  while (std::chrono::steady_clock::now() < until) {
    stuck = sched->loop_health();
    if (stuck.stalled) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_TRUE(blocked.load());
  ASSERT_TRUE(stuck.stalled);
  EXPECT_EQ(stuck.in_flight, "mode switch");
  EXPECT_GE(stuck.in_flight_for, std::chrono::seconds(2));
  release.set_value();
  ASSERT_TRUE(ready_in_time(sw));
  EXPECT_TRUE(sw.get().ok);
  bool recovered = false;
  for (auto t = std::chrono::steady_clock::now();
       !recovered && std::chrono::steady_clock::now() < t + kDeadline;) {
    recovered = !sched->loop_health().stalled;
    if (!recovered) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_TRUE(recovered);
  sched->stop();
  EXPECT_FALSE(sched->loop_health().stalled);
}

}  // namespace
}  // namespace gpumod::scheduler::testing
