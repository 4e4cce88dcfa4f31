// LeaseGate and LeaseGates: see lease_gate.hpp.
#include "scheduler/lease_gate.hpp"

namespace gpumod::scheduler {

namespace {

constexpr auto kAcqRel = std::memory_order_acq_rel;
constexpr auto kAcquire = std::memory_order_acquire;

// Lease id fields (lease_gate.hpp).
constexpr int kSlotShift = 12;
constexpr int kGenShift = 32;
constexpr std::uint64_t kCellMask = LeaseGates::kCells - 1;
constexpr std::uint64_t kSlotMask = LeaseGates::kMaxSlots - 1;
constexpr std::uint64_t kGenMask = (std::uint64_t{1} << 31) - 1;
static_assert((LeaseGates::kCells & kCellMask) == 0 && LeaseGates::kCells == (std::size_t{1} << kSlotShift));
static_assert(LeaseGates::kMaxSlots == (std::size_t{1} << (kGenShift - kSlotShift)));
// Consecutive acquires start this many cells apart (odd: every cell is visited), so leases
// taken one after the other by different threads do not share a cache line.
constexpr std::uint64_t kCellStride = 9;

// The free form of a cell after `id` is given back: the next generation, bit 63 clear.
constexpr std::uint64_t next_free(std::uint64_t id) {
  return (((id >> kGenShift) + 1) & kGenMask) << kGenShift;
}

}  // namespace

// ---------- LeaseGate ----------

bool LeaseGate::try_acquire() noexcept {
  std::uint64_t w = word_.load(kAcquire);
  for (;;) {
    if ((w & kOpen) == 0 || (w & kCountMask) == kCountMask) return false;
    if (word_.compare_exchange_weak(w, w + 1, kAcqRel, kAcquire)) return true;
  }
}

bool LeaseGate::release() noexcept {
  std::uint64_t w = word_.load(kAcquire);
  for (;;) {
    if ((w & kCountMask) == 0) return false;  // unbalanced: never borrow from the flag bits
    std::uint64_t next = w - 1;
    const bool notify = (next & kCountMask) == 0 && (next & kWanted) != 0;
    if (notify) next &= ~kWanted;
    if (word_.compare_exchange_weak(w, next, kAcqRel, kAcquire)) return notify;
  }
}

bool LeaseGate::try_close() noexcept {
  std::uint64_t w = word_.load(kAcquire);
  for (;;) {
    const bool empty = (w & kCountMask) == 0;
    const std::uint64_t next = empty ? (w & ~(kOpen | kWanted)) : (w | kWanted);
    if (word_.compare_exchange_weak(w, next, kAcqRel, kAcquire)) return empty;
  }
}

void LeaseGate::open() noexcept {
  word_.fetch_or(kOpen, kAcqRel);
}

void LeaseGate::force_close() noexcept {
  std::uint64_t w = word_.load(kAcquire);
  for (;;) {
    std::uint64_t next = w & ~kOpen;
    if ((w & kCountMask) != 0) next |= kWanted;
    if (word_.compare_exchange_weak(w, next, kAcqRel, kAcquire)) return;
  }
}

std::uint64_t LeaseGate::watch() noexcept {
  std::uint64_t w = word_.load(kAcquire);
  for (;;) {
    const std::uint64_t n = w & kCountMask;
    if (n == 0 || (w & kWanted) != 0) return n;
    if (word_.compare_exchange_weak(w, w | kWanted, kAcqRel, kAcquire)) return n;
  }
}

// ---------- LeaseGates ----------

LeaseGates::LeaseGates()
    : table_(std::make_shared<const Table>()),
      cells_(std::make_unique<std::atomic<std::uint64_t>[]>(kCells)) {
  for (std::size_t i = 0; i < kCells; ++i) cells_[i].store(0, std::memory_order_relaxed);
}

LeaseGates::~LeaseGates() = default;

std::size_t LeaseGates::add(const std::string& id) {
  const auto current = table_.load();
  if (const auto it = current->slots.find(id); it != current->slots.end()) return it->second;
  auto next = std::make_shared<Table>(*current);
  const std::size_t slot = next->gates.size();
  next->gates.push_back(std::make_shared<LeaseGate>());
  next->names.push_back(id);
  next->slots.emplace(id, slot);
  table_.store(std::move(next));
  return slot;
}

LeaseGate* LeaseGates::gate(std::size_t slot) const {
  const auto t = table_.load();
  // The gate outlives this table version: every later version shares it, and the last one
  // lives as long as LeaseGates.
  return slot < t->gates.size() ? t->gates[slot].get() : nullptr;
}

std::optional<std::size_t> LeaseGates::slot_of(const std::string& id) const {
  const auto t = table_.load();
  const auto it = t->slots.find(id);
  if (it == t->slots.end()) return std::nullopt;
  return it->second;
}

std::string LeaseGates::name(std::size_t slot) const {
  const auto t = table_.load();
  return slot < t->names.size() ? t->names[slot] : std::string();
}

std::optional<LeaseId> LeaseGates::acquire(std::size_t slot) {
  if (slot >= kMaxSlots) return std::nullopt;
  LeaseGate* g = gate(slot);
  if (g == nullptr || !g->is_open()) return std::nullopt;  // closed: do not touch a cell
  const std::uint64_t start = next_cell_.fetch_add(1, std::memory_order_relaxed) * kCellStride;
  for (std::uint64_t i = 0; i < kCells; ++i) {
    const std::uint64_t c = (start + i) & kCellMask;
    std::atomic<std::uint64_t>& cell = cells_[c];
    std::uint64_t w = cell.load(std::memory_order_relaxed);
    if ((w & kGateLeaseBit) != 0) continue;  // carries a lease
    const LeaseId id =
        kGateLeaseBit | (w & (kGenMask << kGenShift)) | (std::uint64_t{slot} << kSlotShift) | c;
    if (!cell.compare_exchange_strong(w, id, kAcqRel, std::memory_order_relaxed)) continue;
    if (g->try_acquire()) return id;
    cell.store(next_free(id), std::memory_order_release);  // closed meanwhile: give the cell back
    return std::nullopt;
  }
  return std::nullopt;  // kCells gate leases held: the caller takes the slow path
}

LeaseGates::Released LeaseGates::release(LeaseId lease) {
  Released r;
  if (!is_gate_lease(lease)) return r;
  r.slot = static_cast<std::size_t>((lease >> kSlotShift) & kSlotMask);
  std::uint64_t expected = lease;
  if (!cells_[lease & kCellMask].compare_exchange_strong(expected, next_free(lease), kAcqRel, kAcquire)) {
    return r;  // given back before, or never handed out: no count changes
  }
  r.released = true;
  if (LeaseGate* g = gate(r.slot)) r.notify = g->release();
  return r;
}

}  // namespace gpumod::scheduler
