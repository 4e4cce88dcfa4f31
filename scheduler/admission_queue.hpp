// AdmissionQueue: the requests waiting for a service to be brought up, in the order they
// should be admitted. A pure data structure: no clock inside (time is an argument), no
// threads, no knowledge of GPUs. The scheduler core decides whether the request it is shown
// can be admitted now (placement, backfill safety); the queue only keeps the order.
//
// Order: effective priority first (higher wins), then arrival (FIFO). Effective priority is
// priority + floor(age / aging_interval), so a low-priority request gains one level per
// interval and cannot be starved by a steady stream of high-priority ones: once its effective
// priority reaches theirs, its earlier arrival wins the tie. An aging interval of 0 disables
// aging. The length is bounded: push() on a full queue answers `full` at once.
//
// Cost: push and cancel are O(log n); the front is O(p) for p distinct priorities; an
// ordered walk is O(n log p) (a merge of per-priority FIFOs, each already in age order).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "base/clock.hpp"

namespace gpumod::scheduler {

using TimePoint = Clock::TimePoint;

struct QueuedRequest {
  std::string id;
  std::string service;  // the service the model resolved to
  int priority = 0;
  TimePoint enqueued{};
  TimePoint deadline{};
  std::uint64_t seq = 0;  // arrival order, assigned by push()
};

class AdmissionQueue {
 public:
  enum class PushResult { queued, full, duplicate_id };

  AdmissionQueue(std::size_t max_length, std::chrono::milliseconds aging_interval);

  // Policy may change on reload; a shorter limit never drops what is already queued.
  void set_limits(std::size_t max_length, std::chrono::milliseconds aging_interval);

  PushResult push(QueuedRequest request);
  // Removes and returns the request, or nothing when it is not queued.
  std::optional<QueuedRequest> cancel(const std::string& id);
  // Removes every request for `service` (they join one load), in admission order.
  std::vector<QueuedRequest> take_service(const std::string& service, TimePoint now);
  // Removes and returns every request whose deadline is at or before `now`.
  std::vector<QueuedRequest> expire(TimePoint now);

  [[nodiscard]] int effective_priority(const QueuedRequest& r, TimePoint now) const;
  // The request to admit first, or null when empty.
  [[nodiscard]] const QueuedRequest* front(TimePoint now) const;
  // Every queued request in admission order.
  [[nodiscard]] std::vector<const QueuedRequest*> ordered(TimePoint now) const;
  [[nodiscard]] const QueuedRequest* find(const std::string& id) const;

  [[nodiscard]] std::size_t size() const { return by_id_.size(); }
  [[nodiscard]] bool empty() const { return by_id_.empty(); }
  [[nodiscard]] std::size_t max_length() const { return max_length_; }
  [[nodiscard]] std::chrono::milliseconds aging_interval() const { return aging_interval_; }
  // The earliest deadline of a queued request, if any.
  [[nodiscard]] std::optional<TimePoint> next_deadline() const {
    if (deadlines_.empty()) return std::nullopt;
    return deadlines_.begin()->first;
  }
  // Age of the longest-waiting request (0 when empty).
  [[nodiscard]] Clock::Duration oldest_age(TimePoint now) const;

 private:
  using Fifo = std::list<QueuedRequest>;
  struct Where {
    int priority;
    Fifo::iterator it;
  };
  void erase(const std::string& id);

  std::size_t max_length_;
  std::chrono::milliseconds aging_interval_;
  std::uint64_t next_seq_ = 1;
  std::map<int, Fifo, std::greater<>> by_priority_;  // each FIFO is in arrival order
  std::unordered_map<std::string, Where> by_id_;
  std::set<std::pair<TimePoint, std::uint64_t>> deadlines_;
  std::set<std::pair<TimePoint, std::uint64_t>> arrivals_;  // for the oldest age
  std::unordered_map<std::uint64_t, std::string> id_of_seq_;
};

}  // namespace gpumod::scheduler
