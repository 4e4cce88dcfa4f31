// ThreadOwner: the thread that may call an object's loop-only methods, checked in debug builds.
//
// gpumod's loops (the HTTP server's, the scheduler's) own their state alone, and their headers
// say which methods are for the loop thread only. A call from another thread would be a data
// race that works nearly always; this makes it fail at once in a debug build (the sanitizer
// build of the test suite is one), with the method's name. Release builds check nothing.
//
// The first checked call binds the owner, unless bind() named one before: a loop binds itself
// when it starts, and whoever drives the object after the loop ended (a stop that drains what
// is left) binds itself again. Any thread may call bind(); only the owner, the checked methods.
#pragma once

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <thread>

namespace gpumod {

class ThreadOwner {
 public:
  void bind() noexcept { owner_.store(std::this_thread::get_id(), std::memory_order_relaxed); }

  void assert_owner([[maybe_unused]] const char* what) const noexcept {
#ifndef NDEBUG
    const std::thread::id me = std::this_thread::get_id();
    std::thread::id owner = owner_.load(std::memory_order_relaxed);
    if (owner == std::thread::id{} && owner_.compare_exchange_strong(owner, me, std::memory_order_relaxed)) {
      return;
    }
    if (owner != me) {
      std::fprintf(stderr, "gpumod: %s called off its owning thread (a loop-only method)\n", what);
      std::abort();
    }
#endif
  }

 private:
  mutable std::atomic<std::thread::id> owner_{};
};

}  // namespace gpumod
