// The /v1 proxy against a tiny local upstream (an httplib server standing in for llama.cpp or
// vLLM): routing, body forwarding, SSE pass-through chunk by chunk, lease release on completion
// and on client disconnect, and upstream failures as 502 / 504.
#include <gtest/gtest.h>
#include <httplib.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <future>
#include <nlohmann/json.hpp>

#include "tests/api/test_server.hpp"

namespace gpumod::api {
namespace {

using nlohmann::json;
using testing::TestServer;

// Polls `pred` until it holds or 20 s pass (for things other threads finish).
template <typename Pred>
bool eventually(Pred pred) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return pred();
}

// A port nothing listens on: bind one, remember it, close it.
int unused_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    ::close(fd);
    return 1;
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

class Upstream {
 public:
  Upstream() {
    server_.Post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) {
      {
        std::lock_guard lock(mutex_);
        last_body_ = req.body;
        last_request_id_ = req.get_header_value("X-Request-Id");
        last_authorization_ = req.get_header_value("Authorization");
        remote_ports_.push_back(req.remote_port);
      }
      auto body = json::parse(req.body);
      if (body.value("stream", false)) {
        stream(res);
        return;
      }
      if (body.value("fail", false)) {
        res.status = 400;
        res.set_content(R"({"error":{"message":"upstream refuses"}})", "application/json");
        return;
      }
      res.set_content(json{{"object", "chat.completion"}, {"model", body["model"]}}.dump(),
                      "application/json");
    });
    server_.Post("/v1/embeddings", [](const httplib::Request&, httplib::Response& res) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1500));  // slower than the test's read timeout
      res.set_content("{}", "application/json");
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    while (!server_.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ~Upstream() {
    release_chunks();
    server_.stop();
    thread_.join();
  }
  Upstream(const Upstream&) = delete;
  Upstream& operator=(const Upstream&) = delete;

  [[nodiscard]] std::string endpoint() const { return "http://127.0.0.1:" + std::to_string(port_); }
  std::string last_body() {
    std::lock_guard lock(mutex_);
    return last_body_;
  }
  std::string last_request_id() {
    std::lock_guard lock(mutex_);
    return last_request_id_;
  }
  std::string last_authorization() {
    std::lock_guard lock(mutex_);
    return last_authorization_;
  }
  // The client port of each call: the same port twice means one kept-alive connection.
  std::vector<int> remote_ports() {
    std::lock_guard lock(mutex_);
    return remote_ports_;
  }
  // Chunk 2 is sent only after this is called: proves chunk 1 travelled on its own.
  void release_chunks() { chunk_gate_.store(true); }
  // Endless mode: keep sending events until the writer fails (the client went away).
  std::atomic<bool> endless{false};
  std::atomic<bool> writer_failed{false};

 private:
  void stream(httplib::Response& res) {
    res.set_chunked_content_provider("text/event-stream", [this](std::size_t, httplib::DataSink& sink) {
      auto send = [&sink](const std::string& s) { return sink.write(s.data(), s.size()); };
      if (endless.load()) {
        for (int i = 0; i < 20000; ++i) {
          if (!send("data: {\"n\":" + std::to_string(i) + "}\n\n")) {
            writer_failed.store(true);
            return false;
          }
          std::this_thread::sleep_for(std::chrono::milliseconds(2));
        }
        sink.done();
        return true;
      }
      send("data: {\"n\":1}\n\n");
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
      while (!chunk_gate_.load() && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
      }
      send("data: {\"n\":2}\n\n");
      send("data: [DONE]\n\n");
      sink.done();
      return true;
    });
  }

  httplib::Server server_;
  int port_ = 0;
  std::thread thread_;
  std::mutex mutex_;
  std::string last_body_, last_request_id_, last_authorization_;
  std::vector<int> remote_ports_;
  std::atomic<bool> chunk_gate_{false};
};

TEST(Proxy, ModelsListsIdsAliasesAndRouterModelsWithState) {
  TestServer server;
  auto r = server.client()->Get("/v1/models");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200);
  auto b = json::parse(r->body);
  EXPECT_EQ(b["object"], "list");
  std::map<std::string, json> by_id;
  for (const auto& m : b["data"]) by_id[m["id"]] = m;
  for (const char* id : {"qwen3-coder", "coder", "qwen3-coder-30b", "qwen3-coder-small", "vllm-embedding",
                         "BAAI/bge-m3", "embed"}) {
    ASSERT_TRUE(by_id.count(id)) << id;
    EXPECT_EQ(by_id[id]["object"], "model");
  }
  EXPECT_EQ(by_id["coder"]["gpumod"]["service"], "qwen3-coder");
  EXPECT_EQ(by_id["coder"]["gpumod"]["state"], "ready");
  EXPECT_EQ(by_id["embed"]["gpumod"]["state"], "sleeping");
  EXPECT_EQ(by_id.size(), 7U);
}

TEST(Proxy, ForwardsTheBodyAndReturnsTheUpstreamAnswerThenReleasesTheLease) {
  Upstream upstream;
  ServerOptions opts;
  opts.api_token = "tok";
  TestServer server(opts);
  server.control().endpoint = upstream.endpoint();
  auto client = server.client();
  client->set_bearer_token_auth("tok");
  const std::string body = R"({"model":"qwen3-coder-30b","messages":[{"role":"user","content":"hi"}]})";
  auto r = client->Post("/v1/chat/completions", {{"X-Request-Id", "chat-1"}}, body, "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(json::parse(r->body)["model"], "qwen3-coder-30b");
  EXPECT_EQ(upstream.last_body(), body);  // a router model name is passed as is
  EXPECT_EQ(upstream.last_request_id(), "chat-1");
  EXPECT_EQ(upstream.last_authorization(), "");  // gpumod's token is not leaked upstream
  auto spec = server.control().submitted().at(0);
  EXPECT_TRUE(spec.hold_lease);
  EXPECT_EQ(spec.model, "qwen3-coder-30b");
  EXPECT_EQ(server.control().released(), std::vector<scheduler::LeaseId>{101});
  ASSERT_EQ(server.control().proxied().size(), 1U);
  EXPECT_EQ(server.control().proxied()[0].service, "qwen3-coder");
  EXPECT_EQ(server.control().proxied()[0].endpoint, "/v1/chat/completions");
  EXPECT_EQ(server.control().proxied()[0].code, 200);
}

TEST(Proxy, ConsecutiveCallsReuseOneUpstreamConnection) {
  Upstream upstream;
  TestServer server;
  server.control().endpoint = upstream.endpoint();
  auto client = server.client();
  for (int i = 0; i < 3; ++i) {
    auto r = client->Post("/v1/chat/completions", R"({"model":"coder"})", "application/json");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200) << r->body;
  }
  // A stream that ran to its end leaves its connection reusable too.
  upstream.release_chunks();
  auto s = client->Post("/v1/chat/completions", R"({"model":"coder","stream":true})", "application/json");
  ASSERT_TRUE(s);
  EXPECT_EQ(s->body, "data: {\"n\":1}\n\ndata: {\"n\":2}\n\ndata: [DONE]\n\n");
  auto ports = upstream.remote_ports();
  ASSERT_EQ(ports.size(), 4U);
  EXPECT_EQ(ports[1], ports[0]);
  EXPECT_EQ(ports[2], ports[0]);
  EXPECT_EQ(ports[3], ports[0]);
  EXPECT_EQ(server.control().released().size(), 4U);
}

TEST(Proxy, AnAliasIsRewrittenToTheServedModelId) {
  Upstream upstream;
  TestServer server;
  server.control().endpoint = upstream.endpoint();
  auto r =
      server.client()->Post("/v1/chat/completions", R"({"model":"embed","messages":[]})", "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(json::parse(upstream.last_body())["model"], "BAAI/bge-m3");
}

TEST(Proxy, UpstreamErrorsPassThroughWithTheirStatus) {
  Upstream upstream;
  TestServer server;
  server.control().endpoint = upstream.endpoint();
  auto r =
      server.client()->Post("/v1/chat/completions", R"({"model":"coder","fail":true})", "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);
  EXPECT_EQ(r->body, R"({"error":{"message":"upstream refuses"}})");
  // qwen3-coder has no model_id, so the alias passes unchanged.
  EXPECT_EQ(json::parse(upstream.last_body())["model"], "coder");
  EXPECT_EQ(server.control().proxied().at(0).code, 400);
  EXPECT_EQ(server.control().released().size(), 1U);
}

TEST(Proxy, StreamingPassesChunksThroughOneByOne) {
  Upstream upstream;
  TestServer server;
  server.control().endpoint = upstream.endpoint();
  auto client = server.client();
  std::string received;
  int chunks_seen = 0;
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/chat/completions";
  req.body = R"({"model":"coder","stream":true})";
  req.headers = {{"Content-Type", "application/json"}};
  int status = 0;
  std::string content_type;
  req.response_handler = [&](const httplib::Response& r) {
    status = r.status;
    content_type = r.get_header_value("Content-Type");
    return true;
  };
  req.content_receiver = [&](const char* data, std::size_t n, std::uint64_t, std::uint64_t) {
    received.append(data, n);
    ++chunks_seen;
    // The first event arrived while the upstream still holds the rest back.
    if (received.find("\"n\":1") != std::string::npos) upstream.release_chunks();
    return true;
  };
  auto result = client->send(req);
  ASSERT_TRUE(result) << httplib::to_string(result.error());
  EXPECT_EQ(status, 200);
  EXPECT_EQ(content_type, "text/event-stream");
  EXPECT_EQ(received, "data: {\"n\":1}\n\ndata: {\"n\":2}\n\ndata: [DONE]\n\n");
  EXPECT_GE(chunks_seen, 2);
  EXPECT_TRUE(eventually([&] { return server.control().released().size() == 1; }));
  EXPECT_TRUE(eventually([&] { return server.control().proxied().size() == 1; }));
}

TEST(Proxy, AClientThatDisconnectsMidStreamReleasesItsLease) {
  Upstream upstream;
  upstream.endless.store(true);
  TestServer server;
  server.control().endpoint = upstream.endpoint();
  auto client = server.client();
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/chat/completions";
  req.body = R"({"model":"coder","stream":true})";
  req.headers = {{"Content-Type", "application/json"}};
  int events = 0;
  req.content_receiver = [&](const char*, std::size_t, std::uint64_t, std::uint64_t) { return ++events < 3; };
  auto result = client->send(req);
  EXPECT_FALSE(result);  // we hung up on purpose
  client.reset();
  EXPECT_TRUE(
      eventually([&] { return server.control().released() == std::vector<scheduler::LeaseId>{101}; }));
  // ... and the upstream call was stopped, not left running to the end.
  EXPECT_TRUE(eventually([&] { return upstream.writer_failed.load(); }));
}

TEST(Proxy, AnUnreachableServiceIs502AndTheLeaseIsReleased) {
  const int dead_port = unused_port();
  TestServer server;
  server.control().endpoint = "http://127.0.0.1:" + std::to_string(dead_port);
  auto r = server.client()->Post("/v1/chat/completions", R"({"model":"coder"})", "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 502) << r->body;
  auto b = json::parse(r->body);
  EXPECT_EQ(b["error"]["type"], "upstream_unavailable");
  EXPECT_NE(b["error"]["message"].get<std::string>().find("cannot connect to service 'qwen3-coder'"),
            std::string::npos);
  EXPECT_EQ(server.control().released().size(), 1U);
  EXPECT_EQ(server.control().proxied().at(0).code, 502);

  auto s =
      server.client()->Post("/v1/chat/completions", R"({"model":"coder","stream":true})", "application/json");
  ASSERT_TRUE(s);
  EXPECT_EQ(s->status, 502) << s->body;
  EXPECT_TRUE(eventually([&] { return server.control().released().size() == 2; }));
}

TEST(Proxy, ASlowServiceIs504) {
  Upstream upstream;
  ServerOptions opts;
  opts.upstream_read_timeout = std::chrono::milliseconds(300);
  TestServer server(opts);
  server.control().endpoint = upstream.endpoint();
  auto r = server.client()->Post("/v1/embeddings", R"({"model":"embed","input":"x"})", "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 504) << r->body;
  EXPECT_EQ(json::parse(r->body)["error"]["type"], "timeout");
  EXPECT_EQ(server.control().released().size(), 1U);
}

TEST(Proxy, AModelThatCannotBeServedIsNotForwarded) {
  TestServer server;
  server.control().on_submit = [](const scheduler::RequestSpec&) {
    scheduler::RequestOutcome o;
    o.status = scheduler::RequestStatus::rejected;
    o.http_status = 503;
    o.message = "the admission queue is full (1024 waiting)";
    o.retry_after_seconds = 3;
    return o;
  };
  auto r = server.client()->Post("/v1/chat/completions", R"({"model":"coder"})", "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503);
  EXPECT_EQ(r->get_header_value("Retry-After"), "3");
  EXPECT_NE(r->body.find("admission queue is full"), std::string::npos);
  EXPECT_TRUE(server.control().released().empty());
  EXPECT_TRUE(server.control().proxied().empty());
}

TEST(Proxy, BadBodiesAndUnknownModelsAreRefusedBeforeAnyScheduling) {
  TestServer server;
  auto client = server.client();
  auto bad = client->Post("/v1/chat/completions", "{oops", "application/json");
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->status, 400);
  auto no_model = client->Post("/v1/completions", R"({"prompt":"x"})", "application/json");
  ASSERT_TRUE(no_model);
  EXPECT_EQ(no_model->status, 400);
  EXPECT_NE(no_model->body.find("string field 'model'"), std::string::npos);
  auto unknown = client->Post("/v1/embeddings", R"({"model":"ghost"})", "application/json");
  ASSERT_TRUE(unknown);
  EXPECT_EQ(unknown->status, 404);
  EXPECT_NE(unknown->body.find("GET /v1/models"), std::string::npos);
  EXPECT_TRUE(server.control().submitted().empty());
}

}  // namespace
}  // namespace gpumod::api
