#include "scheduler/admission_queue.hpp"

#include <algorithm>

namespace gpumod::scheduler {

AdmissionQueue::AdmissionQueue(std::size_t max_length, std::chrono::milliseconds aging_interval)
    : max_length_(max_length), aging_interval_(aging_interval) {}

void AdmissionQueue::set_limits(std::size_t max_length, std::chrono::milliseconds aging_interval) {
  max_length_ = max_length;
  aging_interval_ = aging_interval;
}

AdmissionQueue::PushResult AdmissionQueue::push(QueuedRequest request) {
  if (by_id_.size() >= max_length_) return PushResult::full;
  if (by_id_.count(request.id) != 0) return PushResult::duplicate_id;
  request.seq = next_seq_++;
  auto& fifo = by_priority_[request.priority];
  deadlines_.emplace(request.deadline, request.seq);
  arrivals_.emplace(request.enqueued, request.seq);
  id_of_seq_.emplace(request.seq, request.id);
  const std::string id = request.id;
  const int priority = request.priority;
  fifo.push_back(std::move(request));
  by_id_.emplace(id, Where{priority, std::prev(fifo.end())});
  return PushResult::queued;
}

void AdmissionQueue::erase(const std::string& id) {
  auto found = by_id_.find(id);
  if (found == by_id_.end()) return;
  const Where where = found->second;
  deadlines_.erase({where.it->deadline, where.it->seq});
  arrivals_.erase({where.it->enqueued, where.it->seq});
  id_of_seq_.erase(where.it->seq);
  auto fifo = by_priority_.find(where.priority);
  fifo->second.erase(where.it);
  if (fifo->second.empty()) by_priority_.erase(fifo);
  by_id_.erase(found);
}

std::optional<QueuedRequest> AdmissionQueue::cancel(const std::string& id) {
  auto found = by_id_.find(id);
  if (found == by_id_.end()) return std::nullopt;
  QueuedRequest copy = *found->second.it;
  erase(id);
  return copy;
}

std::vector<QueuedRequest> AdmissionQueue::take_service(const std::string& service, TimePoint now) {
  // One pass over every FIFO, then order just the matches: O(n + k log k).
  std::vector<std::pair<int, const QueuedRequest*>> found;
  for (const auto& [priority, fifo] : by_priority_) {
    for (const QueuedRequest& r : fifo) {
      if (r.service == service) found.emplace_back(effective_priority(r, now), &r);
    }
  }
  std::sort(found.begin(), found.end(), [](const auto& a, const auto& b) {
    return a.first != b.first ? a.first > b.first : a.second->seq < b.second->seq;
  });
  std::vector<QueuedRequest> taken;
  taken.reserve(found.size());
  for (const auto& [eff, r] : found) taken.push_back(*r);
  for (const auto& r : taken) erase(r.id);
  return taken;
}

std::vector<QueuedRequest> AdmissionQueue::expire(TimePoint now) {
  std::vector<QueuedRequest> expired;
  while (!deadlines_.empty() && deadlines_.begin()->first <= now) {
    const std::string id = id_of_seq_.at(deadlines_.begin()->second);
    expired.push_back(*by_id_.at(id).it);
    erase(id);
  }
  return expired;
}

int AdmissionQueue::effective_priority(const QueuedRequest& r, TimePoint now) const {
  if (aging_interval_.count() <= 0 || now <= r.enqueued) return r.priority;
  const auto steps = (now - r.enqueued) / aging_interval_;
  constexpr std::int64_t kMaxBoost = 1 << 20;  // keeps the sum far from overflow
  return r.priority + static_cast<int>(std::min<std::int64_t>(steps, kMaxBoost));
}

namespace {
// True when a should be admitted before b.
bool before(int eff_a, std::uint64_t seq_a, int eff_b, std::uint64_t seq_b) {
  if (eff_a != eff_b) return eff_a > eff_b;
  return seq_a < seq_b;
}
}  // namespace

const QueuedRequest* AdmissionQueue::front(TimePoint now) const {
  const QueuedRequest* best = nullptr;
  int best_eff = 0;
  // The head of each FIFO is its oldest, hence its highest effective priority.
  for (const auto& [priority, fifo] : by_priority_) {
    const QueuedRequest& head = fifo.front();
    const int eff = effective_priority(head, now);
    if (best == nullptr || before(eff, head.seq, best_eff, best->seq)) {
      best = &head;
      best_eff = eff;
    }
  }
  return best;
}

std::vector<const QueuedRequest*> AdmissionQueue::ordered(TimePoint now) const {
  // A k-way merge of the per-priority FIFOs (each already in admission order). The cursor
  // keeps its head's effective priority and arrival number so comparisons touch no list node.
  struct Cursor {
    int eff;
    std::uint64_t seq;
    Fifo::const_iterator it;
    Fifo::const_iterator end;
  };
  auto later = [](const Cursor& a, const Cursor& b) { return before(b.eff, b.seq, a.eff, a.seq); };
  std::vector<Cursor> heap;
  heap.reserve(by_priority_.size());
  for (const auto& [priority, fifo] : by_priority_) {
    heap.push_back(Cursor{effective_priority(fifo.front(), now), fifo.front().seq, fifo.begin(), fifo.end()});
  }
  std::make_heap(heap.begin(), heap.end(), later);
  std::vector<const QueuedRequest*> out;
  out.reserve(by_id_.size());
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), later);
    Cursor& c = heap.back();
    out.push_back(&*c.it);
    if (++c.it != c.end) {
      c.eff = effective_priority(*c.it, now);
      c.seq = c.it->seq;
      std::push_heap(heap.begin(), heap.end(), later);
    } else {
      heap.pop_back();
    }
  }
  return out;
}

const QueuedRequest* AdmissionQueue::find(const std::string& id) const {
  auto found = by_id_.find(id);
  return found == by_id_.end() ? nullptr : &*found->second.it;
}

Clock::Duration AdmissionQueue::oldest_age(TimePoint now) const {
  if (arrivals_.empty()) return Clock::Duration::zero();
  const TimePoint oldest = arrivals_.begin()->first;
  return now > oldest ? now - oldest : Clock::Duration::zero();
}

}  // namespace gpumod::scheduler
