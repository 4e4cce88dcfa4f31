// EventLog: numbering, the bounded ring and what a reader that fell behind is told, listeners.
#include "scheduler/event_log.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <nlohmann/json.hpp>
#include <thread>

namespace gpumod::scheduler {
namespace {

SchedEvent ev(const std::string& kind, const std::string& service) {
  SchedEvent e;
  e.kind = kind;
  e.service = service;
  e.message = kind + " " + service;
  e.detail = {{"n", 1}};
  return e;
}

TEST(EventLog, NumbersStampsAndRendersEachEventOnce) {
  EventLog log(8);
  EXPECT_EQ(log.last_seq(), 0u);
  log.append({ev("service.ready", "a"), ev("request.ready", "a")});
  EXPECT_EQ(log.last_seq(), 2u);
  const auto r = log.read_after(0, 10);
  ASSERT_EQ(r.events.size(), 2u);
  EXPECT_EQ(r.missed, 0u);
  const auto j = nlohmann::json::parse(r.events[0]->json);
  EXPECT_EQ(j.at("seq"), 1);
  EXPECT_EQ(j.at("kind"), "service.ready");
  EXPECT_EQ(j.at("service"), "a");
  EXPECT_EQ(j.at("n"), 1);
  EXPECT_EQ(j.at("time").get<std::string>().size(), 24u) << j.at("time");  // 2026-12-07T20:31:05.123Z
  EXPECT_EQ(r.events[1]->seq, 2u);
  EXPECT_TRUE(log.read_after(2, 10).events.empty());
}

TEST(EventLog, AReaderThatFellBehindTheRingIsToldHowManyItMissed) {
  EventLog log(4);
  for (int i = 0; i < 10; ++i) log.append({ev("service.state", std::to_string(i))});
  const auto r = log.read_after(0, 100);
  EXPECT_EQ(r.missed, 6u);
  ASSERT_EQ(r.events.size(), 4u);
  EXPECT_EQ(r.events.front()->seq, 7u);
  EXPECT_EQ(r.events.back()->seq, 10u);
  const auto limited = log.read_after(7, 2);
  EXPECT_EQ(limited.missed, 0u);
  ASSERT_EQ(limited.events.size(), 2u);
  EXPECT_EQ(limited.events[0]->seq, 8u);
}

TEST(EventLog, TextThatIsNotUtf8IsReplacedNotThrownOn) {
  EventLog log(4);
  SchedEvent e = ev("service.failed", "a");
  e.message = "bad \xff\xfe bytes";
  log.append({e});
  const auto r = log.read_after(0, 1);
  ASSERT_EQ(r.events.size(), 1u);
  EXPECT_TRUE(nlohmann::json::accept(r.events[0]->json)) << r.events[0]->json;
}

TEST(EventLog, ListenersHearEveryAppendUntilTheyLeave) {
  EventLog log(16);
  std::atomic<int> heard{0};
  const auto id = log.listen([&] { heard.fetch_add(1); });
  std::thread producer([&] {
    for (int i = 0; i < 5; ++i) log.append({ev("x", "a")});
  });
  producer.join();
  log.append({});  // nothing appended: nobody is woken
  EXPECT_EQ(heard.load(), 5);
  log.unlisten(id);
  log.append({ev("x", "a")});
  EXPECT_EQ(heard.load(), 5);
}

}  // namespace
}  // namespace gpumod::scheduler
