// GET /events and GET /services/{id}/logs on the real ApiServer over a FakeControl (whose
// EventLog is the real one): the SSE framing a browser's EventSource and `gpumod events` rely
// on, resuming, what a slow reader is told, and a log followed across rotation.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tests/api/test_server.hpp"
#include "tests/support/stream_client.hpp"
#include "tests/support/temp_dir.hpp"

namespace gpumod::api {
namespace {

namespace fs = std::filesystem;
using api::testing::TestServer;
using gpumod::testing::Frame;
using gpumod::testing::StreamClient;
using gpumod::testing::TempDir;

scheduler::SchedEvent event(const std::string& kind, const std::string& service, std::string message = "m") {
  scheduler::SchedEvent e;
  e.kind = kind;
  e.service = service;
  e.message = std::move(message);
  return e;
}

bool has(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

TEST(Events, StreamsServerSentEventsWithIdsAndResumesAfterLastEventId) {
  TestServer server;
  auto& log = server.control().events();
  log.append(
      {event("service.ready", "qwen3-coder"), event("request.ready", "qwen3-coder"), event("mode.end", "")});
  StreamClient client(server.port(), "/events?tail=2");
  ASSERT_EQ(client.head().status, 200);
  EXPECT_TRUE(has(client.head().head, "Content-Type: text/event-stream")) << client.head().head;
  EXPECT_TRUE(has(client.head().head, "Cache-Control: no-cache")) << client.head().head;
  std::vector<Frame> got;
  ASSERT_TRUE(client.frames(2, got));
  EXPECT_EQ(got[0].id, "2");
  EXPECT_EQ(got[0].event, "request.ready");
  EXPECT_EQ(got[0].data.at("seq"), 2);
  EXPECT_EQ(got[0].data.at("service"), "qwen3-coder");
  EXPECT_EQ(got[1].event, "mode.end");
  // Live: what happens next arrives on the open stream.
  log.append({event("service.evicting", "vllm-embedding", "evicting it")});
  ASSERT_TRUE(client.frames(3, got));
  EXPECT_EQ(got[2].id, "4");
  EXPECT_EQ(got[2].data.at("message"), "evicting it");

  // A reconnecting EventSource sends the last id it saw and gets what came after.
  StreamClient again(server.port(), "/events", "Last-Event-ID: 2\r\n");
  std::vector<Frame> resumed;
  ASSERT_TRUE(again.frames(2, resumed));
  EXPECT_EQ(resumed[0].id, "3");
  EXPECT_EQ(resumed[1].id, "4");
}

TEST(Events, WithoutParametersOnlyWhatHappensFromNowOn) {
  TestServer server;
  auto& log = server.control().events();
  log.append({event("service.ready", "a"), event("service.ready", "b")});
  StreamClient client(server.port(), "/events");
  ASSERT_EQ(client.head().status, 200);
  log.append({event("service.state", "c")});
  std::vector<Frame> got;
  ASSERT_TRUE(client.frames(1, got));
  EXPECT_EQ(got[0].id, "3");
  EXPECT_EQ(got[0].data.at("service"), "c");
}

TEST(Events, AReaderBehindTheBufferIsToldHowManyEventsItMissed) {
  TestServer server;
  auto& log = server.control().events();  // the fake keeps 64
  for (int i = 1; i <= 100; ++i) log.append({event("service.state", "s" + std::to_string(i))});
  StreamClient client(server.port(), "/events?since=0");
  std::vector<Frame> got;
  ASSERT_TRUE(client.frames(65, got));
  EXPECT_EQ(got[0].event, "dropped");
  EXPECT_EQ(got[0].data.at("missed"), 36);
  EXPECT_EQ(got[1].id, "37");
  EXPECT_EQ(got[64].id, "100");
}

// The scheduler appends whether or not a subscriber reads: a subscriber that stops reading
// costs it nothing, and learns later what it missed.
TEST(Events, ASubscriberThatStopsReadingNeverHoldsUpTheScheduler) {
  TestServer server;
  auto& log = server.control().events();
  StreamClient slow(server.port(), "/events");
  ASSERT_EQ(slow.head().status, 200);
  const std::string big(32 * 1024, 'x');
  constexpr int kEvents = 600;  // ~19 MiB: far more than the socket buffers and the backlog hold
  for (int i = 1; i <= kEvents; ++i) log.append({event("service.log_tail", "s", big)});
  EXPECT_EQ(log.last_seq(), static_cast<std::uint64_t>(kEvents));  // every append returned
  std::vector<Frame> got;
  bool dropped = false;
  while (got.empty() || got.back().id != std::to_string(kEvents)) {
    ASSERT_TRUE(slow.frames(got.size() + 1, got)) << "stream ended after " << got.size() << " frames";
    if (got.back().event == "dropped") {
      dropped = true;
      EXPECT_GT(got.back().data.at("missed").get<int>(), 0);
    }
  }
  EXPECT_TRUE(dropped) << "the reader was not told it missed events";
  EXPECT_LT(got.size(), static_cast<std::size_t>(kEvents)) << "nothing was dropped, so nothing was bounded";
}

TEST(Events, BadParametersAre400WithAMessage) {
  TestServer server;
  StreamClient since(server.port(), "/events?since=abc");
  EXPECT_EQ(since.head().status, 400);
  EXPECT_TRUE(has(since.body(), "query parameter 'since' must be a whole number")) << since.head().head;
  StreamClient resume(server.port(), "/events", "Last-Event-ID: x1\r\n");
  EXPECT_EQ(resume.head().status, 400);
  EXPECT_TRUE(has(resume.body(), "Last-Event-ID must be an event id"));
}

TEST(Events, RequireTheTokenWhenOneIsSet) {
  ServerOptions o;
  o.api_token = "s3cret";
  TestServer server(o);
  StreamClient anonymous(server.port(), "/events");
  EXPECT_EQ(anonymous.head().status, 401);
  StreamClient authorized(server.port(), "/events", "Authorization: Bearer s3cret\r\n");
  EXPECT_EQ(authorized.head().status, 200);
}

class ServiceLogs : public ::testing::Test {
 protected:
  void SetUp() override { server.control().set_log_dir(dir.path()); }
  void write_log(const std::string& text, std::ios::openmode mode = std::ios::app) {
    std::ofstream(dir.path() / "qwen3-coder.log", mode | std::ios::binary) << text;
  }
  TempDir dir;
  TestServer server;
};

TEST_F(ServiceLogs, TailGivesTheLastLines) {
  write_log("one\ntwo\nthree\nfour\n");
  auto c = server.client();
  auto r = c->Get("/services/qwen3-coder/logs?tail=2");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "three\nfour\n");
  EXPECT_EQ(r->get_header_value("Content-Type"), "text/plain; charset=utf-8");
  r = c->Get("/services/qwen3-coder/logs");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body, "one\ntwo\nthree\nfour\n");  // default: the last 100
}

TEST_F(ServiceLogs, UnknownServiceMissingLogAndBadTailSayWhatIsWrong) {
  auto c = server.client();
  auto r = c->Get("/services/nope/logs");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404);
  EXPECT_TRUE(has(r->body, "unknown service 'nope'")) << r->body;
  r = c->Get("/services/vllm-embedding/logs");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404);
  EXPECT_TRUE(has(r->body, "no log for vllm-embedding yet")) << r->body;
  r = c->Get("/services/qwen3-coder/logs?tail=-1");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);
  EXPECT_TRUE(has(r->body, "'tail' must be a whole number from 0 to 10000")) << r->body;
  r = c->Get("/services/qwen3-coder/logs?follow=maybe");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);
  EXPECT_TRUE(has(r->body, "'follow' must be 1, true, 0 or false")) << r->body;
}

TEST_F(ServiceLogs, FollowSendsWhatIsAppendedAcrossRotationAndTruncation) {
  write_log("old line\nlast before\n");
  StreamClient follow(server.port(), "/services/qwen3-coder/logs?tail=1&follow=1");
  ASSERT_EQ(follow.head().status, 200);
  ASSERT_TRUE(follow.text_until("last before\n"));
  EXPECT_FALSE(has(follow.text(), "old line"));
  write_log("appended 1\n");
  ASSERT_TRUE(follow.text_until("appended 1\n"));
  // Rotation as the runner does it at a start: renamed away, a new file begun.
  fs::rename(dir.path() / "qwen3-coder.log", dir.path() / "qwen3-coder.log.1");
  write_log("after rotation\n");
  ASSERT_TRUE(follow.text_until("after rotation\n"));
  // Truncated in place: read again from the start.
  write_log("fresh\n", std::ios::trunc);
  ASSERT_TRUE(follow.text_until("fresh\n"));
  EXPECT_EQ(follow.text(), "last before\nappended 1\nafter rotation\nfresh\n");
}

TEST_F(ServiceLogs, FollowWaitsForALogThatDoesNotExistYet) {
  StreamClient follow(server.port(), "/services/qwen3-coder/logs?follow=1");
  ASSERT_EQ(follow.head().status, 200);
  write_log("first words\n");
  ASSERT_TRUE(follow.text_until("first words\n"));
}

}  // namespace
}  // namespace gpumod::api
