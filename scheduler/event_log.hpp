// EventLog: the scheduler's recent events (event.hpp), kept for the readers of GET /events.
//
// Shared across threads, and why: the scheduler thread appends after each turn of its loop,
// while the HTTP loop (and any other reader) reads at its own pace. So the log is a bounded ring
// behind one mutex, held only to copy pointers in or out: the scheduler never waits for a
// reader, a slow or vanished reader never grows it, and a reader that falls more than
// `capacity` events behind learns how many it missed (Read::missed) instead of slowing anyone.
//
// Threads: every method may be called from any thread. Listeners are called on the appending
// thread, after the lock is released; they must be short and must not block (post to your own
// loop and read from there).
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "scheduler/event.hpp"

namespace gpumod::scheduler {

// An event as kept: numbered from 1 in the order appended, stamped with the wall-clock time of
// its append, and rendered once as the JSON object that GET /events sends.
struct LoggedEvent {
  std::uint64_t seq = 0;
  std::string kind;
  std::string json;  // {"seq":..,"time":"2026-12-07T20:31:05.123Z","kind":..,...}
};

class EventLog {
 public:
  explicit EventLog(std::size_t capacity = 4096);
  EventLog(const EventLog&) = delete;
  EventLog& operator=(const EventLog&) = delete;

  void append(std::vector<SchedEvent> events);

  struct Read {
    std::vector<std::shared_ptr<const LoggedEvent>> events;  // oldest first
    // Events after `after` that the ring no longer holds (the reader fell behind).
    std::uint64_t missed = 0;
  };
  // Up to `max` events with seq > `after`.
  [[nodiscard]] Read read_after(std::uint64_t after, std::size_t max) const;
  // The seq of the newest event (0: none yet).
  [[nodiscard]] std::uint64_t last_seq() const;

  using ListenerId = std::uint64_t;
  // `on_append` is called after every append that added events.
  ListenerId listen(std::function<void()> on_append);
  void unlisten(ListenerId id);

 private:
  const std::size_t capacity_;
  mutable std::mutex mutex_;  // guards ring_ and next_seq_
  std::deque<std::shared_ptr<const LoggedEvent>> ring_;
  std::uint64_t next_seq_ = 1;
  std::mutex listeners_mutex_;  // guards listeners_; held while they run, so unlisten waits for them
  std::map<ListenerId, std::function<void()>> listeners_;
  ListenerId next_listener_ = 1;
};

}  // namespace gpumod::scheduler
