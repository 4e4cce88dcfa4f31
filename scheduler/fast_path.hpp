// The fast path: the one deliberate exception to the scheduler thread owning everything.
//
// A request for a model whose service is ready is answered on the caller's thread (the HTTP
// loop) without a round trip through the scheduler thread: two thread hand-offs per request
// were most of the cost of a ready answer (bench/README.md "HTTP"). What is shared for it, and
// why each is safe:
//   * the published Snapshot and Config: immutable once published, swapped whole through atomic
//     shared_ptrs by the scheduler thread (publish) and read by any thread. An answer from a
//     snapshot a few microseconds old is no different from one given just before an eviction.
//   * the LeaseGates (scheduler/lease_gate.hpp): a /v1 call's lease is taken and given back on
//     the caller's thread through the service's gate, a compare-and-swap on one word; the
//     scheduler closes the gate and waits for it to drain before it lets the service go.
//   * the batch of answers given here, under one mutex: the scheduler thread records them
//     (LRU order, keep-alive, the admission-wait histogram) at the start of each round.
// Nothing else: every decision that changes state is still the scheduler thread's.
//
// Threads: answer(), give_back(), live(), snapshot() and config(): any thread. publish(),
// set_live(), drain() and next_drain(): the scheduler thread only.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "base/clock.hpp"
#include "config/config.hpp"
#include "exporter/metrics.hpp"
#include "scheduler/lease_gate.hpp"
#include "scheduler/scheduler.hpp"

namespace gpumod::scheduler {

class FastPath {
 public:
  using TimePoint = Clock::TimePoint;
  // Posts a task to the scheduler loop; false when the loop is not running.
  using Post = std::function<bool(const char* what, std::function<void(TimePoint)> task)>;
  // The scheduler thread's reaction to a gate that drained (SchedulerCore::on_gate_drained).
  using OnGateDrained = std::function<void(std::size_t slot, TimePoint at)>;
  // Records `count` answers for service `id` (SchedulerCore::note_served).
  using NoteServed = std::function<void(const std::string& id, std::optional<std::chrono::seconds> keep_alive,
                                        std::uint64_t count, TimePoint last)>;

  FastPath(const Clock& clock, exporter::Metrics* metrics, LeaseGates& gates, Post post,
           OnGateDrained on_gate_drained);

  // --- any thread ---
  // The answer for a model whose service is ready in the published snapshot (with a lease
  // through its gate when spec.hold_lease), or nothing: then the scheduler thread decides.
  std::optional<RequestOutcome> answer(const RequestSpec& spec);
  // A gate lease back. counted: it is in the active-leases gauge (handed to a caller).
  void give_back(LeaseId lease, bool counted);
  [[nodiscard]] bool live() const { return live_.load(std::memory_order_acquire); }
  [[nodiscard]] std::shared_ptr<const Snapshot> snapshot() const { return snap_.load(); }
  [[nodiscard]] std::shared_ptr<const config::Config> config() const { return cfg_.load(); }

  // --- the scheduler thread ---
  void publish(std::shared_ptr<const Snapshot> snap, std::shared_ptr<const config::Config> cfg);
  void set_live(bool live) { live_.store(live, std::memory_order_release); }
  // Records the answers given since the last drain. While answers keep coming, the next drain
  // is timed (next_drain) rather than posted, so a steady stream of answers costs the scheduler
  // thread one wake-up per kServedLinger, not one per answer.
  void drain(TimePoint at, const NoteServed& note);
  [[nodiscard]] std::optional<TimePoint> next_drain() const { return drain_at_; }

  // How long answers may wait to be recorded. Every round of the loop drains first, so a plan,
  // an idle check or an eviction always sees every answer given before it; the linger delays
  // only the admission-wait histogram and the keep-alive clock (which then counts from the later
  // time, the safe side).
  static constexpr auto kServedLinger = std::chrono::milliseconds(50);

 private:
  std::optional<RequestOutcome> answer_from_snapshot(const RequestSpec& spec);
  std::optional<RequestOutcome> lease_from_gate(const RequestSpec& spec);
  bool record_served(const std::string& id, std::optional<std::chrono::seconds> keep_alive);

  const Clock& clock_;
  exporter::Metrics* metrics_;
  LeaseGates& gates_;  // thread-safe; lives as long as the core
  Post post_;
  OnGateDrained on_gate_drained_;

  std::atomic<bool> live_{false};  // the scheduler loop runs
  std::atomic<std::shared_ptr<const Snapshot>> snap_;
  std::atomic<std::shared_ptr<const config::Config>> cfg_;

  struct Served {
    std::uint64_t count = 0;
    std::optional<std::chrono::seconds> keep_alive;  // the longest asked for
    TimePoint last{};  // when the last was answered: the eviction order (LRU) needs it
  };
  std::mutex served_mutex_;
  std::map<std::string, Served> served_;  // guarded by served_mutex_
  bool drain_pending_ = false;            // guarded by served_mutex_: a drain is posted or timed
  std::optional<TimePoint> drain_at_;     // scheduler thread
};

}  // namespace gpumod::scheduler
