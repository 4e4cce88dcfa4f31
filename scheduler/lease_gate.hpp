// Lease gates: leases on a ready service taken and given back on the caller's thread, without
// a round trip through the scheduler thread (docs/scheduler.md "Leases and keep-alive").
//
// LeaseGate is one service's gate. LeaseGates holds the gate of every service id the scheduler
// has known (one slot per id, never reused while it lives) and the per-lease cells that make
// each gate lease id unique, so a lease given back twice is noticed instead of counted twice.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "scheduler/scheduler.hpp"

namespace gpumod::scheduler {

// One atomic word: OPEN (lessees may enter), WANTED (the scheduler waits for the count to reach
// 0) and the number of leases taken through the gate. Why one word: the scheduler's "close
// only if nobody holds a lease" and a lessee's "enter only if open" must not both succeed, and
// a lessee's "last one out" must not miss a scheduler that just started waiting. With two
// variables that needs a Dekker-style handshake (store mine, fence, load yours) on both sides;
// with one word every change is a compare-and-swap that sees the whole state, so each side
// either sees the other's change or its own CAS fails and it looks again.
//
// The scheduler thread calls open, try_close, force_close and watch; any thread calls
// try_acquire and release.
class LeaseGate {
 public:
  static constexpr std::uint64_t kOpen = std::uint64_t{1} << 63;
  static constexpr std::uint64_t kWanted = std::uint64_t{1} << 62;
  static constexpr std::uint64_t kCountMask = kWanted - 1;

  // Count + 1, only while the gate is open.
  bool try_acquire() noexcept;
  // Count - 1. True when this took the count to 0 while WANTED was set: WANTED is cleared and
  // the caller must tell the scheduler (once). Does nothing and returns false at count 0.
  [[nodiscard]] bool release() noexcept;
  // Closes the gate only when no lease is held (true). Otherwise the gate stays open, WANTED is
  // set, and the release that empties it reports it (false).
  bool try_close() noexcept;
  void open() noexcept;
  // Closes whatever the count (the service went away on its own). Sets WANTED when leases are
  // still held, so their end is reported: they still count for the scheduler until then.
  void force_close() noexcept;
  // The count; when it is not 0 also sets WANTED, so that a scheduler which decides to wait for
  // these leases hears when they end. Atomic with the read: no release is missed.
  std::uint64_t watch() noexcept;

  [[nodiscard]] std::uint64_t count() const noexcept {
    return word_.load(std::memory_order_acquire) & kCountMask;
  }
  [[nodiscard]] bool is_open() const noexcept { return (word_.load(std::memory_order_acquire) & kOpen) != 0; }
  [[nodiscard]] bool wanted() const noexcept {
    return (word_.load(std::memory_order_acquire) & kWanted) != 0;
  }

 private:
  std::atomic<std::uint64_t> word_{0};  // closed, nobody waiting, no lease
};

// The gates of all services, by slot, plus the lease cells.
//
// Gate lease id: bit 63 set (the scheduler's own lease ids count up from 1 and never get there),
// bits 0-11 the lease cell, bits 12-31 the service slot, bits 32-62 the cell's generation. A
// cell holds the id of the lease it carries; giving the lease back swaps the cell to the next
// generation, so the same id given back again (or a made-up one) matches no cell and changes
// no count.
class LeaseGates {
 public:
  static constexpr LeaseId kGateLeaseBit = LeaseId{1} << 63;
  static constexpr std::size_t kCells = 4096;        // gate leases held at once, all services
  static constexpr std::size_t kMaxSlots = 1 << 20;  // services with gate leases

  LeaseGates();
  ~LeaseGates();
  LeaseGates(const LeaseGates&) = delete;
  LeaseGates& operator=(const LeaseGates&) = delete;

  // Scheduler thread: the slot of service `id`, made closed on first use; an id always gets
  // the same slot back (a removed and re-added service shares its gate).
  std::size_t add(const std::string& id);

  // Any thread.
  [[nodiscard]] LeaseGate* gate(std::size_t slot) const;  // null: no such slot
  [[nodiscard]] std::optional<std::size_t> slot_of(const std::string& id) const;
  [[nodiscard]] std::string name(std::size_t slot) const;  // "" for no such slot

  // A lease through the gate of `slot`; nothing when the gate is closed or every cell is taken
  // (the caller then asks the scheduler thread as before).
  std::optional<LeaseId> acquire(std::size_t slot);
  struct Released {
    bool released = false;  // a held gate lease was given back (false: not held; nothing changed)
    bool notify = false;    // the gate emptied while the scheduler waited: post on_gate_drained(slot)
    std::size_t slot = 0;
  };
  Released release(LeaseId lease);

  static bool is_gate_lease(LeaseId lease) { return (lease & kGateLeaseBit) != 0; }

 private:
  struct Table {
    std::vector<std::shared_ptr<LeaseGate>> gates;  // by slot
    std::vector<std::string> names;                 // by slot
    std::unordered_map<std::string, std::size_t> slots;
  };
  // Copy-on-write: readers load the table without a lock; add() (rare: start-up, reload)
  // publishes a new one. Gates are shared between versions, so their addresses never change.
  std::atomic<std::shared_ptr<const Table>> table_;
  std::unique_ptr<std::atomic<std::uint64_t>[]> cells_;
  std::atomic<std::uint64_t> next_cell_{0};
};

}  // namespace gpumod::scheduler
