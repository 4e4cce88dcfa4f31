// Who may overtake a blocked request: a lower one may be planned past it only when its plan
// leaves the blocked one the memory it could get once today's protections end.
#include <gtest/gtest.h>

#include <vector>

#include "cluster.hpp"
#include "policy/backfill.hpp"
#include "policy/planner.hpp"

namespace gpumod::policy {
namespace {

using testing::Cluster;
using testing::kGiB;
using testing::service;

ServiceView with_priority(ServiceView s, int priority) {
  s.priority = priority;
  return s;
}

// GPU 0 (24 GiB): chat 12 GiB is leased (busy now, evictable later), old 8 GiB is idle, 4 GiB
// free. big (priority 80, 20 GiB) must wait for chat's lease to end.
struct BusyCard {
  Cluster c;
  std::size_t chat, old, big;
  BusyCard() {
    c.add_gpu(24 * kGiB);
    chat = c.add(with_priority(service("chat", SvcState::ready, 0, 12 * kGiB), 50));
    c[chat].leases = 1;
    old = c.add(with_priority(service("old", SvcState::ready, 0, 8 * kGiB), 30));
    big = c.add(with_priority(service("big", SvcState::stopped, -1, 20 * kGiB), 80));
  }
  std::vector<PlanRequest> blocked() const { return {PlanRequest{big, 80}}; }
};

TEST(Backfill, TheBlockedRequestIsTheOneThatWaits) {
  BusyCard card;
  const Plan p = card.c.plan_for(card.big, 80);
  EXPECT_EQ(p.outcome, Outcome::wait) << p.reason;
  // Everything on the card counts once the lease ends: 4 free + chat 12 + old 8.
  EXPECT_EQ(reachable(card.c.gpus[0], card.c.services, card.blocked()[0]), 24 * kGiB);
}

TEST(Backfill, ALowerRequestThatEvictsWhereTheBlockedOneCouldFitWaitsBehindIt) {
  BusyCard card;
  const std::size_t mid = card.c.add(with_priority(service("mid", SvcState::stopped, -1, 10 * kGiB), 40));
  const Plan p = card.c.plan_for(mid, 40);
  ASSERT_EQ(p.outcome, Outcome::plan) << p.reason;  // it would stop old: 4 + 8 free >= 10
  EXPECT_FALSE(backfill_safe(p, card.c.gpus, card.c.services, card.blocked()));
}

TEST(Backfill, ALowerRequestMayNotEvictWhereTheBlockedOneCouldFitEvenWithRoomToSpare) {
  // GPU 0 (48 GiB): chat 30 GiB leased, old 6 GiB idle, 12 GiB free. big (20 GiB) waits for the
  // lease; mid (14 GiB) would stop old and still leave big 48 - 14 = 34 GiB in the end, but an
  // eviction on a card the blocked request could use is never a backfill.
  Cluster c;
  c.add_gpu(48 * kGiB);
  const std::size_t chat = c.add(with_priority(service("chat", SvcState::ready, 0, 30 * kGiB), 50));
  c[chat].leases = 1;
  const std::size_t old = c.add(with_priority(service("old", SvcState::ready, 0, 6 * kGiB), 30));
  const std::size_t big = c.add(with_priority(service("big", SvcState::stopped, -1, 20 * kGiB), 80));
  const std::size_t mid = c.add(with_priority(service("mid", SvcState::stopped, -1, 14 * kGiB), 40));
  EXPECT_EQ(c.plan_for(big, 80).outcome, Outcome::wait);
  const Plan p = c.plan_for(mid, 40);
  ASSERT_EQ(p.outcome, Outcome::plan) << p.reason;
  ASSERT_FALSE(p.actions.empty());
  EXPECT_EQ(p.actions.front().service, old);
  EXPECT_FALSE(backfill_safe(p, c.gpus, c.services, {PlanRequest{big, 80}}));
}

TEST(Backfill, ALowerRequestThatLeavesTheBlockedOneItsMemoryGoesAhead) {
  BusyCard card;
  const std::size_t tiny = card.c.add(with_priority(service("tiny", SvcState::stopped, -1, 4 * kGiB), 40));
  const Plan p = card.c.plan_for(tiny, 40);
  ASSERT_EQ(p.outcome, Outcome::plan) << p.reason;  // start in the 4 GiB free
  EXPECT_TRUE(backfill_safe(p, card.c.gpus, card.c.services, card.blocked()));
}

TEST(Backfill, ALowerRequestThatWouldTakeMemoryTheBlockedOneNeedsWaits) {
  BusyCard card;
  card.c[card.old].state = SvcState::stopped;  // 12 GiB free now
  const std::size_t six = card.c.add(with_priority(service("six", SvcState::stopped, -1, 6 * kGiB), 40));
  const Plan p = card.c.plan_for(six, 40);
  ASSERT_EQ(p.outcome, Outcome::plan) << p.reason;
  // 24 - 6 = 18 GiB would be left for big, which needs 20.
  EXPECT_FALSE(backfill_safe(p, card.c.gpus, card.c.services, card.blocked()));
}

TEST(Backfill, WorkOnACardTheBlockedRequestCouldNeverFitOnGoesAhead) {
  BusyCard card;
  card.c.add_gpu(8 * kGiB);  // GPU 1: too small for big
  const std::size_t small = card.c.add(with_priority(service("small", SvcState::ready, 1, 6 * kGiB), 20));
  const std::size_t other = card.c.add(with_priority(service("other", SvcState::stopped, -1, 6 * kGiB), 40));
  card.c[other].allowed_gpus = {1};
  const Plan p = card.c.plan_for(other, 40);
  ASSERT_EQ(p.outcome, Outcome::plan) << p.reason;
  ASSERT_FALSE(p.actions.empty());
  EXPECT_EQ(p.actions.front().service, small);  // it evicts small on GPU 1
  EXPECT_FALSE(gpu_usable_by(card.c.gpus[1], card.c.services[card.big]));
  EXPECT_TRUE(backfill_safe(p, card.c.gpus, card.c.services, card.blocked()));
}

TEST(Backfill, ACardOutsideTheBlockedRequestsAllowedGpusIsFreeForBackfill) {
  BusyCard card;
  card.c[card.big].allowed_gpus = {0};
  card.c.add_gpu(24 * kGiB);  // GPU 1: big may not use it
  const std::size_t idle = card.c.add(with_priority(service("idle", SvcState::ready, 1, 20 * kGiB), 20));
  const std::size_t other = card.c.add(with_priority(service("other", SvcState::stopped, -1, 10 * kGiB), 40));
  card.c[other].allowed_gpus = {1};
  const Plan p = card.c.plan_for(other, 40);
  ASSERT_EQ(p.outcome, Outcome::plan) << p.reason;
  EXPECT_EQ(p.actions.front().service, idle);
  EXPECT_TRUE(backfill_safe(p, card.c.gpus, card.c.services, card.blocked()));
  card.c[card.big].allowed_gpus.clear();  // now it could use GPU 1: the eviction waits
  EXPECT_FALSE(backfill_safe(p, card.c.gpus, card.c.services, card.blocked()));
}

TEST(Backfill, PinnedAndHigherPriorityMemoryIsNeverCountedAsReachable) {
  Cluster c;
  c.add_gpu(24 * kGiB);
  const std::size_t pinned = c.add(with_priority(service("pinned", SvcState::ready, 0, 10 * kGiB), 10));
  c[pinned].pinned = true;
  c.add(with_priority(service("top", SvcState::ready, 0, 6 * kGiB), 90));
  const std::size_t big = c.add(with_priority(service("big", SvcState::stopped, -1, 20 * kGiB), 80));
  const std::size_t tiny = c.add(with_priority(service("tiny", SvcState::stopped, -1, 8 * kGiB), 40));
  EXPECT_EQ(c.plan_for(big, 80).outcome, Outcome::wait);
  EXPECT_EQ(reachable(c.gpus[0], c.services, PlanRequest{big, 80}), 8 * kGiB);
  // big could never get 20 GiB here, so taking the 8 GiB free does not hurt it.
  const Plan p = c.plan_for(tiny, 40);
  ASSERT_EQ(p.outcome, Outcome::plan) << p.reason;
  EXPECT_TRUE(backfill_safe(p, c.gpus, c.services, {PlanRequest{big, 80}}));
}

TEST(Backfill, ASleepingBlockedRequestOnlyCaresAboutTheCardItSleepsOn) {
  Cluster c;
  c.add_gpu(24 * kGiB);
  c.add_gpu(24 * kGiB);
  const std::size_t idle0 = c.add(with_priority(service("idle0", SvcState::ready, 0, 20 * kGiB), 20));
  const std::size_t holder = c.add(with_priority(service("holder", SvcState::ready, 1, 20 * kGiB), 50));
  c[holder].leases = 1;
  ServiceView big = with_priority(service("big", SvcState::sleeping, 1, 20 * kGiB), 80);
  big.sleep_residual = 2 * kGiB;
  big.can_sleep = true;
  const std::size_t b = c.add(big);
  EXPECT_EQ(c.plan_for(b, 80).outcome, Outcome::wait);  // it can only wake on GPU 1
  EXPECT_FALSE(gpu_usable_by(c.gpus[0], c.services[b]));
  EXPECT_TRUE(gpu_usable_by(c.gpus[1], c.services[b]));
  const std::size_t other = c.add(with_priority(service("other", SvcState::stopped, -1, 10 * kGiB), 40));
  c[other].allowed_gpus = {0};
  const Plan p = c.plan_for(other, 40);
  ASSERT_EQ(p.outcome, Outcome::plan) << p.reason;
  EXPECT_EQ(p.actions.front().service, idle0);
  EXPECT_TRUE(backfill_safe(p, c.gpus, c.services, {PlanRequest{b, 80}}));
}

}  // namespace
}  // namespace gpumod::policy
