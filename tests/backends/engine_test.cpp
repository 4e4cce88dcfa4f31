// gpumod-test-engine as a user of it sees it: its OpenAI-style answers, signals, and the
// charge it keeps on the simulated GPU.
#include <gtest/gtest.h>

#include <httplib.h>

#include <nlohmann/json.hpp>

#include "tests/backends/engine_harness.hpp"

namespace gpumod::testing {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;

struct RunningEngine {
  TempDir dir;
  int port = free_port();
  std::unique_ptr<EngineProcess> process;
  std::filesystem::path sim() const { return dir.path() / "sim"; }

  explicit RunningEngine(std::vector<std::string> extra) {
    std::vector<std::string> args{"--port", std::to_string(port)};
    args.insert(args.end(), extra.begin(), extra.end());
    process = std::make_unique<EngineProcess>(args, sim(), dir.path() / "engine.log");
  }
  httplib::Client client() const {
    httplib::Client c("127.0.0.1", port);
    c.set_connection_timeout(2);
    c.set_read_timeout(5);
    return c;
  }
  bool healthy() const {
    auto c = client();
    auto res = c.Get("/health");
    return res && res->status == 200;
  }
};

TEST(TestEngine, ChatCompletionIsDeterministicAndStreams) {
  RunningEngine e({"--protocol", "vllm", "--model", "m", "--vram-mb", "64"});
  ASSERT_TRUE(eventually([&] { return e.healthy(); }));
  auto c = e.client();
  const std::string body = R"({"model":"m","messages":[{"role":"user","content":"tell me about gpus"}]})";
  auto first = c.Post("/v1/chat/completions", body, "application/json");
  auto second = c.Post("/v1/chat/completions", body, "application/json");
  ASSERT_TRUE(first && second);
  ASSERT_EQ(first->status, 200);
  const auto a = json::parse(first->body);
  const auto b = json::parse(second->body);
  const std::string text = a["choices"][0]["message"]["content"];
  EXPECT_EQ(text, b["choices"][0]["message"]["content"].get<std::string>());
  EXPECT_NE(text.find("gpus"), std::string::npos) << text;
  EXPECT_EQ(a["object"], "chat.completion");

  auto streamed =
      c.Post("/v1/chat/completions",
             R"({"model":"m","stream":true,"messages":[{"role":"user","content":"tell me about gpus"}]})",
             "application/json");
  ASSERT_TRUE(streamed);
  ASSERT_EQ(streamed->status, 200);
  EXPECT_NE(streamed->get_header_value("Content-Type").find("text/event-stream"), std::string::npos);
  // Reassemble the deltas: the same text as the non-streamed answer, then [DONE] last.
  std::string assembled;
  int chunks = 0;
  std::istringstream lines(streamed->body);
  std::string line;
  std::string last_data;
  while (std::getline(lines, line)) {
    if (line.rfind("data: ", 0) != 0) continue;
    last_data = line.substr(6);
    if (last_data == "[DONE]") continue;
    const auto chunk = json::parse(last_data);
    EXPECT_EQ(chunk["object"], "chat.completion.chunk");
    assembled += chunk["choices"][0]["delta"].value("content", "");
    ++chunks;
  }
  EXPECT_GT(chunks, 2);
  EXPECT_EQ(last_data, "[DONE]");
  EXPECT_EQ(assembled, text);
}

// The data lines of an SSE body, in order.
std::vector<std::string> sse_data(const std::string& body) {
  std::vector<std::string> out;
  std::istringstream lines(body);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.rfind("data: ", 0) == 0) out.push_back(line.substr(6));
  }
  return out;
}

std::vector<std::string> words_in(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  std::string w;
  while (in >> w) out.push_back(w);
  return out;
}

TEST(TestEngine, StreamWithMaxTokensAndNoGapDeliversThatManyChunksThenDone) {
  RunningEngine e({"--protocol", "llamacpp", "--model", "m", "--vram-mb", "16", "--stream-gap-ms", "0"});
  ASSERT_TRUE(eventually([&] { return e.healthy(); }));
  auto c = e.client();
  for (const bool chat : {true, false}) {
    SCOPED_TRACE(chat ? "chat" : "completions");
    const std::string body =
        chat ? R"({"model":"m","stream":true,"max_tokens":500,"messages":[{"role":"user","content":"a b"}]})"
             : R"({"model":"m","stream":true,"max_tokens":500,"prompt":"a b"})";
    auto res = c.Post(chat ? "/v1/chat/completions" : "/v1/completions", body, "application/json");
    ASSERT_TRUE(res);
    ASSERT_EQ(res->status, 200);
    const auto data = sse_data(res->body);
    ASSERT_FALSE(data.empty());
    EXPECT_EQ(data.back(), "[DONE]");
    std::vector<std::string> contents;
    std::string finish_reason;
    for (std::size_t i = 0; i + 1 < data.size(); ++i) {
      const auto chunk = json::parse(data[i]);
      const auto& choice = chunk["choices"][0];
      const std::string piece = chat ? choice["delta"].value("content", "") : choice.value("text", "");
      if (!piece.empty()) contents.push_back(piece);
      if (choice["finish_reason"].is_string()) finish_reason = choice["finish_reason"];
    }
    ASSERT_EQ(contents.size(), 500U);
    EXPECT_EQ(finish_reason, "length");
    // The toy reply first ([m], a hash tag, the prompt reversed), then fillers t<position>.
    EXPECT_EQ(contents[0], "[m]");
    EXPECT_EQ(contents[2], " b");
    EXPECT_EQ(contents[3], " a");
    EXPECT_EQ(contents[4], " t4");
    EXPECT_EQ(contents[499], " t499");
  }
}

TEST(TestEngine, MaxTokensSetsTheLengthOfAPlainReplyAndBadValuesAreRefused) {
  RunningEngine e({"--protocol", "generic", "--model", "m", "--vram-mb", "16"});
  ASSERT_TRUE(eventually([&] { return e.healthy(); }));
  auto c = e.client();
  auto chat = c.Post("/v1/chat/completions",
                     R"({"model":"m","max_tokens":37,"messages":[{"role":"user","content":"x y z"}]})",
                     "application/json");
  ASSERT_TRUE(chat);
  ASSERT_EQ(chat->status, 200);
  const auto doc = json::parse(chat->body);
  EXPECT_EQ(words_in(doc["choices"][0]["message"]["content"]).size(), 37U);
  EXPECT_EQ(doc["usage"]["completion_tokens"], 37);

  auto one =
      c.Post("/v1/completions", R"({"model":"m","max_tokens":1,"prompt":"x y z"})", "application/json");
  ASSERT_TRUE(one);
  ASSERT_EQ(one->status, 200);
  EXPECT_EQ(json::parse(one->body)["choices"][0]["text"], "[m]");

  // Without max_tokens: the short reply of before (model, tag, the prompt's words reversed).
  auto plain = c.Post("/v1/completions", R"({"model":"m","prompt":"x y z"})", "application/json");
  ASSERT_TRUE(plain);
  ASSERT_EQ(plain->status, 200);
  const auto plain_doc = json::parse(plain->body);
  EXPECT_EQ(words_in(plain_doc["choices"][0]["text"]).size(), 5U);
  EXPECT_EQ(plain_doc["choices"][0]["finish_reason"], "stop");

  for (const std::string bad : {"0", "-3", "\"ten\"", "2.5", "100001"}) {
    auto res = c.Post("/v1/completions", R"({"model":"m","prompt":"x","max_tokens":)" + bad + "}",
                      "application/json");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 400) << bad;
    EXPECT_NE(res->body.find("max_tokens"), std::string::npos) << res->body;
  }
}

TEST(TestEngine, NegativeStreamGapIsRefusedAtStart) {
  TempDir dir;
  EngineProcess p(
      {"--protocol", "vllm", "--model", "m", "--port", std::to_string(free_port()), "--stream-gap-ms", "-1"},
      dir.path(), dir.path() / "log");
  const auto code = p.wait_exit();
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, 2);
  EXPECT_NE(p.log().find("--stream-gap-ms"), std::string::npos) << p.log();
}

TEST(TestEngine, EmbeddingsAreDeterministicUnitVectors) {
  RunningEngine e({"--protocol", "llamacpp", "--model", "emb", "--vram-mb", "64"});
  ASSERT_TRUE(eventually([&] { return e.healthy(); }));
  auto c = e.client();
  auto res =
      c.Post("/v1/embeddings", R"({"model":"emb","input":["alpha","beta","alpha"]})", "application/json");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200);
  const auto doc = json::parse(res->body);
  ASSERT_EQ(doc["data"].size(), 3U);
  const auto v0 = doc["data"][0]["embedding"].get<std::vector<double>>();
  const auto v1 = doc["data"][1]["embedding"].get<std::vector<double>>();
  const auto v2 = doc["data"][2]["embedding"].get<std::vector<double>>();
  EXPECT_EQ(v0, v2);
  EXPECT_NE(v0, v1);
  double norm = 0;
  for (double x : v0) norm += x * x;
  EXPECT_NEAR(norm, 1.0, 1e-9);
}

TEST(TestEngine, UnknownModelIsRejectedLikeTheRealServers) {
  RunningEngine vllm({"--protocol", "vllm", "--model", "m", "--vram-mb", "16"});
  RunningEngine router({"--protocol", "router", "--models", "a,b", "--vram-mb", "16"});
  ASSERT_TRUE(eventually([&] { return vllm.healthy() && router.healthy(); }));
  auto v =
      vllm.client().Post("/v1/chat/completions", R"({"model":"other","messages":[]})", "application/json");
  ASSERT_TRUE(v);
  EXPECT_EQ(v->status, 404);
  auto r =
      router.client().Post("/v1/chat/completions", R"({"model":"zzz","messages":[]})", "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404);
  auto not_loaded =
      router.client().Post("/v1/chat/completions", R"({"model":"a","messages":[]})", "application/json");
  ASSERT_TRUE(not_loaded);
  EXPECT_EQ(not_loaded->status, 400);
  EXPECT_NE(not_loaded->body.find("not loaded"), std::string::npos);
}

// HTTP basics a client of the engine relies on: an unknown path is 404, a known path with the
// wrong method is 405 naming the allowed ones, and one keep-alive connection carries on (the
// engine used to close it after 5 requests, as httplib's server does by default).
TEST(TestEngine, UnknownPathIs404WrongMethodIs405AndKeepAliveLasts) {
  RunningEngine e({"--protocol", "vllm", "--model", "m", "--vram-mb", "16"});
  ASSERT_TRUE(eventually([&] { return e.healthy(); }));
  auto c = e.client();
  c.set_keep_alive(true);
  auto missing = c.Get("/no/such/path");
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 404);
  EXPECT_NE(missing->body.find("Not Found"), std::string::npos) << missing->body;
  auto wrong = c.Get("/v1/chat/completions");
  ASSERT_TRUE(wrong);
  EXPECT_EQ(wrong->status, 405);
  EXPECT_NE(wrong->get_header_value("Allow").find("POST"), std::string::npos);
  for (int i = 0; i < 20; ++i) {
    auto r = c.Get("/health");
    ASSERT_TRUE(r) << i;
    EXPECT_EQ(r->status, 200) << i;
    EXPECT_NE(r->get_header_value("Connection"), "close") << "closed after request " << i;
  }
}

TEST(TestEngine, RouterModelsListMatchesLlamaCppShape) {
  RunningEngine e({"--protocol", "router", "--models", "a,b", "--vram-mb", "16", "--load-ms", "100"});
  ASSERT_TRUE(eventually([&] { return e.healthy(); }));
  auto c = e.client();
  auto load = c.Post("/models/load", R"({"model":"b"})", "application/json");
  ASSERT_TRUE(load);
  EXPECT_EQ(load->status, 200);
  EXPECT_EQ(json::parse(load->body)["success"], true);
  ASSERT_TRUE(eventually([&] {
    auto res = c.Get("/models");
    if (!res) return false;
    const auto doc = json::parse(res->body);
    return doc["object"] == "list" && doc["data"][1]["id"] == "b" &&
           doc["data"][1]["status"]["value"] == "loaded" && doc["data"][0]["status"]["value"] == "unloaded";
  }));
  auto again = c.Post("/models/load", R"({"model":"b"})", "application/json");
  ASSERT_TRUE(again);
  EXPECT_EQ(again->status, 400);
}

TEST(TestEngine, CleanSigtermFreesTheChargeAndExitsZero) {
  RunningEngine e({"--protocol", "vllm", "--model", "m", "--vram-mb", "128"});
  ASSERT_TRUE(eventually([&] { return e.healthy(); }));
  EXPECT_EQ(read_charge(e.sim(), e.process->pid()), 128 * kMiB);
  e.process->signal(SIGTERM);
  const auto code = e.process->wait_exit();
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, 0);
  EXPECT_FALSE(std::filesystem::exists(e.sim() / (std::to_string(e.process->pid()) + ".charge")));
}

TEST(TestEngine, IgnoreSigtermNeedsSigkill) {
  RunningEngine e({"--protocol", "llamacpp", "--model", "m", "--vram-mb", "16", "--ignore-sigterm"});
  ASSERT_TRUE(eventually([&] { return e.healthy(); }));
  e.process->signal(SIGTERM);
  EXPECT_FALSE(e.process->wait_exit(300ms).has_value());
  EXPECT_TRUE(e.healthy());
  e.process->signal(SIGKILL);
  const auto code = e.process->wait_exit();
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, -SIGKILL);
}

TEST(TestEngine, ReleaseLagKeepsTheChargeAfterSleepThenDrops) {
  RunningEngine e({"--protocol", "vllm", "--model", "m", "--vram-mb", "200", "--sleep-residual-mb", "10",
                   "--release-lag-ms", "2000"});
  ASSERT_TRUE(eventually([&] { return e.healthy(); }));
  auto res = e.client().Post("/sleep?level=1", "", "application/json");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200);
  EXPECT_EQ(read_charge(e.sim(), e.process->pid()), 200 * kMiB);  // the driver has not let go yet
  EXPECT_TRUE(eventually([&] { return read_charge(e.sim(), e.process->pid()) == 10 * kMiB; }));
}

TEST(TestEngine, BadCommandLineExitsWithUsage) {
  TempDir dir;
  EngineProcess p({"--protocol", "vllm", "--model", "m", "--port", "0"}, dir.path(), dir.path() / "log");
  const auto code = p.wait_exit();
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, 2);
  EXPECT_NE(p.log().find("--port"), std::string::npos) << p.log();
}

}  // namespace
}  // namespace gpumod::testing
