// Clock: the one source of time for logic that must be testable without sleeping.
// Production code uses SystemClock; tests use ManualClock and advance it by hand.
#pragma once

#include <atomic>
#include <chrono>

namespace gpumod {

class Clock {
 public:
  using Duration = std::chrono::steady_clock::duration;
  using TimePoint = std::chrono::steady_clock::time_point;

  virtual ~Clock() = default;
  [[nodiscard]] virtual TimePoint now() const = 0;
};

class SystemClock final : public Clock {
 public:
  [[nodiscard]] TimePoint now() const override { return std::chrono::steady_clock::now(); }
  static SystemClock& instance() {
    static SystemClock clock;
    return clock;
  }
};

// A clock that only moves when told. Thread-safe so a test thread may advance it while the
// scheduler thread reads it.
class ManualClock final : public Clock {
 public:
  [[nodiscard]] TimePoint now() const override { return TimePoint(Duration(ticks_.load())); }
  void advance(Duration d) { ticks_.fetch_add(d.count()); }

 private:
  std::atomic<Duration::rep> ticks_{Duration(std::chrono::hours(1)).count()};
};

}  // namespace gpumod
