#include "scheduler/admission_queue.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <vector>

namespace gpumod::scheduler {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

const TimePoint kT0 = TimePoint(std::chrono::hours(1));

QueuedRequest req(const std::string& id, const std::string& svc, int prio, TimePoint at,
                  Clock::Duration timeout = std::chrono::minutes(5)) {
  return QueuedRequest{id, svc, prio, at, at + timeout, 0};
}

std::vector<std::string> ids(const std::vector<const QueuedRequest*>& v) {
  std::vector<std::string> out;
  out.reserve(v.size());
  for (const auto* r : v) out.push_back(r->id);
  return out;
}

TEST(AdmissionQueue, HigherPriorityFirstThenFifo) {
  AdmissionQueue q(10, seconds(0));
  ASSERT_EQ(q.push(req("a", "x", 10, kT0)), AdmissionQueue::PushResult::queued);
  ASSERT_EQ(q.push(req("b", "y", 50, kT0 + seconds(1))), AdmissionQueue::PushResult::queued);
  ASSERT_EQ(q.push(req("c", "z", 50, kT0 + seconds(2))), AdmissionQueue::PushResult::queued);
  ASSERT_EQ(q.push(req("d", "x", 90, kT0 + seconds(3))), AdmissionQueue::PushResult::queued);
  EXPECT_EQ(ids(q.ordered(kT0 + seconds(4))), (std::vector<std::string>{"d", "b", "c", "a"}));
  EXPECT_EQ(q.front(kT0 + seconds(4))->id, "d");
  EXPECT_EQ(q.size(), 4u);
}

TEST(AdmissionQueue, FullQueueAnswersFullAtOnceAndKeepsWhatItHas) {
  AdmissionQueue q(2, seconds(30));
  EXPECT_EQ(q.push(req("a", "x", 1, kT0)), AdmissionQueue::PushResult::queued);
  EXPECT_EQ(q.push(req("b", "x", 1, kT0)), AdmissionQueue::PushResult::queued);
  EXPECT_EQ(q.push(req("c", "x", 99, kT0)), AdmissionQueue::PushResult::full);
  EXPECT_EQ(q.size(), 2u);
  EXPECT_EQ(q.find("c"), nullptr);
  // After one leaves, there is room again.
  ASSERT_TRUE(q.cancel("a").has_value());
  EXPECT_EQ(q.push(req("c", "x", 99, kT0)), AdmissionQueue::PushResult::queued);
}

TEST(AdmissionQueue, DuplicateIdIsRefused) {
  AdmissionQueue q(5, seconds(30));
  EXPECT_EQ(q.push(req("a", "x", 1, kT0)), AdmissionQueue::PushResult::queued);
  EXPECT_EQ(q.push(req("a", "y", 1, kT0)), AdmissionQueue::PushResult::duplicate_id);
  EXPECT_EQ(q.size(), 1u);
}

TEST(AdmissionQueue, AgingRaisesEffectivePriorityOneStepPerInterval) {
  AdmissionQueue q(10, seconds(30));
  const auto r = req("a", "x", 10, kT0);
  EXPECT_EQ(q.effective_priority(r, kT0), 10);
  EXPECT_EQ(q.effective_priority(r, kT0 + seconds(29)), 10);
  EXPECT_EQ(q.effective_priority(r, kT0 + seconds(30)), 11);
  EXPECT_EQ(q.effective_priority(r, kT0 + seconds(95)), 13);
  AdmissionQueue no_aging(10, seconds(0));
  EXPECT_EQ(no_aging.effective_priority(r, kT0 + std::chrono::hours(5)), 10);
}

TEST(AdmissionQueue, LowPriorityIsEventuallyServedUnderSteadyHighPriorityStream) {
  // One admission per second; every second a fresh priority-90 request arrives.
  AdmissionQueue q(1000, seconds(10));
  TimePoint now = kT0;
  ASSERT_EQ(q.push(req("low", "small", 10, now, std::chrono::hours(10))), AdmissionQueue::PushResult::queued);
  int served_high = 0;
  bool low_served = false;
  for (int i = 0; i < 10000 && !low_served; ++i) {
    ASSERT_EQ(q.push(req("high" + std::to_string(i), "big", 90, now, std::chrono::hours(10))),
              AdmissionQueue::PushResult::queued);
    const QueuedRequest* first = q.front(now);
    ASSERT_NE(first, nullptr);
    const std::string id = first->id;
    ASSERT_TRUE(q.cancel(id).has_value());  // admitted
    if (id == "low") {
      low_served = true;
    } else {
      ++served_high;
    }
    now += seconds(1);
  }
  EXPECT_TRUE(low_served);
  // 80 levels at 10 s per level: served after about 800 high-priority ones, not never.
  EXPECT_GE(served_high, 790);
  EXPECT_LE(served_high, 810);
}

TEST(AdmissionQueue, CancelRemovesOnlyThatRequest) {
  AdmissionQueue q(10, seconds(30));
  ASSERT_EQ(q.push(req("a", "x", 5, kT0)), AdmissionQueue::PushResult::queued);
  ASSERT_EQ(q.push(req("b", "x", 5, kT0)), AdmissionQueue::PushResult::queued);
  auto gone = q.cancel("a");
  ASSERT_TRUE(gone.has_value());
  EXPECT_EQ(gone->id, "a");
  EXPECT_FALSE(q.cancel("a").has_value());
  EXPECT_FALSE(q.cancel("nope").has_value());
  EXPECT_EQ(ids(q.ordered(kT0)), (std::vector<std::string>{"b"}));
}

TEST(AdmissionQueue, ExpireReturnsRequestsPastTheirDeadline) {
  AdmissionQueue q(10, seconds(30));
  ASSERT_EQ(q.push(req("short", "x", 5, kT0, seconds(5))), AdmissionQueue::PushResult::queued);
  ASSERT_EQ(q.push(req("long", "x", 5, kT0, seconds(60))), AdmissionQueue::PushResult::queued);
  EXPECT_TRUE(q.expire(kT0 + seconds(4)).empty());
  auto expired = q.expire(kT0 + seconds(5));
  ASSERT_EQ(expired.size(), 1u);
  EXPECT_EQ(expired[0].id, "short");
  EXPECT_EQ(q.size(), 1u);
}

TEST(AdmissionQueue, TakeServiceRemovesAllRequestsForOneServiceInOrder) {
  AdmissionQueue q(10, seconds(0));
  ASSERT_EQ(q.push(req("a", "coder", 10, kT0)), AdmissionQueue::PushResult::queued);
  ASSERT_EQ(q.push(req("b", "embed", 20, kT0)), AdmissionQueue::PushResult::queued);
  ASSERT_EQ(q.push(req("c", "coder", 30, kT0)), AdmissionQueue::PushResult::queued);
  auto taken = q.take_service("coder", kT0);
  ASSERT_EQ(taken.size(), 2u);
  EXPECT_EQ(taken[0].id, "c");
  EXPECT_EQ(taken[1].id, "a");
  EXPECT_EQ(ids(q.ordered(kT0)), (std::vector<std::string>{"b"}));
}

TEST(AdmissionQueue, OldestAgeTracksTheLongestWaiting) {
  AdmissionQueue q(10, seconds(30));
  EXPECT_EQ(q.oldest_age(kT0), Clock::Duration::zero());
  ASSERT_EQ(q.push(req("a", "x", 1, kT0)), AdmissionQueue::PushResult::queued);
  ASSERT_EQ(q.push(req("b", "x", 99, kT0 + seconds(3))), AdmissionQueue::PushResult::queued);
  EXPECT_EQ(q.oldest_age(kT0 + seconds(10)), Clock::Duration(seconds(10)));
  ASSERT_TRUE(q.cancel("a").has_value());
  EXPECT_EQ(q.oldest_age(kT0 + seconds(10)), Clock::Duration(seconds(7)));
}

TEST(AdmissionQueue, OrderedWalkMatchesRepeatedFrontUnderAging) {
  // Many priorities and arrival times: the merged walk must equal popping front() one by one.
  AdmissionQueue q(5000, milliseconds(700));
  std::uint32_t x = 12345;
  for (int i = 0; i < 2000; ++i) {
    x = x * 1664525u + 1013904223u;
    const int prio = static_cast<int>(x % 7) * 10;
    ASSERT_EQ(q.push(req("r" + std::to_string(i), "s", prio, kT0 + milliseconds(i * 37))),
              AdmissionQueue::PushResult::queued);
  }
  const TimePoint now = kT0 + seconds(200);
  const auto walk = ids(q.ordered(now));
  std::vector<std::string> popped;
  while (!q.empty()) {
    const std::string id = q.front(now)->id;
    popped.push_back(id);
    ASSERT_TRUE(q.cancel(id).has_value());
  }
  EXPECT_EQ(walk, popped);
}

TEST(AdmissionQueue, ShrinkingTheLimitKeepsQueuedRequests) {
  AdmissionQueue q(3, seconds(30));
  for (const char* id : {"a", "b", "c"})
    ASSERT_EQ(q.push(req(id, "x", 1, kT0)), AdmissionQueue::PushResult::queued);
  q.set_limits(1, seconds(10));
  EXPECT_EQ(q.size(), 3u);
  EXPECT_EQ(q.push(req("d", "x", 1, kT0)), AdmissionQueue::PushResult::full);
  EXPECT_EQ(q.aging_interval(), milliseconds(10000));
}

}  // namespace
}  // namespace gpumod::scheduler
