// The placement planner: a pure function from a snapshot of GPUs and services plus one
// request to a plan. No I/O, no clocks, no threads; deterministic for equal inputs.
// The objective and every rule are documented in planner.cpp's header comment and in
// docs/policy.md.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace gpumod::policy {

using Bytes = std::int64_t;

struct GpuView {
  int index = 0;
  Bytes total = 0;
  Bytes live_free = 0;  // what the probe reports now
  Bytes ledger = 0;     // what gpumod has committed on it (sum of charges below)
  Bytes headroom = 0;   // always kept free
  // min(live_free, total - ledger) - headroom: negative when over-committed.
  [[nodiscard]] Bytes raw_free() const;
  // raw_free(), never below 0.
  [[nodiscard]] Bytes effective_free() const;
};

enum class SvcState { stopped, starting, ready, sleeping, waking, stopping, failed };
// Every state, in declaration order: the one list that metrics and views iterate.
inline constexpr std::array<SvcState, 7> kAllSvcStates = {
    SvcState::stopped, SvcState::starting, SvcState::ready, SvcState::sleeping,
    SvcState::waking,  SvcState::stopping, SvcState::failed};
const char* to_string(SvcState s);

struct ServiceView {
  std::string id;
  SvcState state = SvcState::stopped;
  int gpu = -1;              // where it lives (meaningful unless stopped/failed)
  Bytes vram = 0;            // declared, charged from starting to stopping
  Bytes sleep_residual = 0;  // charged while sleeping
  bool can_sleep = false;
  int priority = 50;               // higher is more important
  bool pinned = false;             // the preset says never evict it
  bool in_flight = false;          // the scheduler has an operation under way on it
  bool retiring = false;           // it left the config and goes once its users are done
  int leases = 0;                  // > 0 => busy, never evicted
  bool keep_alive_active = false;  // inside its keep-alive window => not evicted for lower priority
  std::int64_t last_used = 0;      // monotonic ticks; smaller = used longer ago
  double cold_start_s = 30.0;      // moving estimates, used as eviction cost
  double wake_s = 2.0;
  int port = 0;                   // services sharing a port are mutually exclusive
  std::vector<int> allowed_gpus;  // empty => any
};

struct PlanRequest {
  std::size_t target = 0;  // index into the services vector
  int priority = 50;       // effective priority of the request (after aging)
};

enum class ActionKind { sleep, stop, wait_free, start, wake };
const char* to_string(ActionKind k);

struct Action {
  ActionKind kind = ActionKind::start;
  std::size_t service = 0;  // index into services (unused for wait_free)
  int gpu = -1;
  Bytes bytes = 0;  // wait_free: bytes that must show free on `gpu` before continuing
};

enum class Outcome {
  already_ready,  // target is ready: nothing to do
  in_progress,    // target is starting or waking: join it
  plan,           // run `actions` in order
  wait,           // memory is held by services that may not be touched now; retry later
  never_fits      // larger than every GPU it may use: reject
};
const char* to_string(Outcome o);

struct Plan {
  Outcome outcome = Outcome::wait;
  std::vector<Action> actions;
  int gpu = -1;        // where the target will run
  std::string reason;  // human-readable: why this plan, or why wait / never fits, with numbers
};

Plan plan(const std::vector<GpuView>& gpus, const std::vector<ServiceView>& services,
          const PlanRequest& request);

// Helpers the planner uses, public so the scheduler and tests apply the same rules.
// Bytes a service is charged for in its state: vram from starting to stopping, the sleep
// residual while sleeping, nothing when stopped or failed.
Bytes charge_of(const ServiceView& s);
// Bytes `s` needs on top of what it holds to be ready: vram - sleep_residual when it sleeps (it
// wakes where it is), else vram.
Bytes need_of(const ServiceView& s);
// Why `s` may not be slept or stopped for a request of `request_priority` ("pinned",
// "operation in flight", "leaving the config", "leased", "higher priority", "keep-alive", or its
// in-transit state), or nullptr when it may be.
const char* protection_of(const ServiceView& s, int request_priority);
// "19.53 GiB", "512 MiB", "12 B": how reasons print sizes.
std::string format_bytes(Bytes b);

}  // namespace gpumod::policy
