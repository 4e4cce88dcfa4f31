// The /v1 proxy against a tiny local upstream (an httplib server standing in for llama.cpp or
// vLLM): routing, body forwarding, SSE pass-through chunk by chunk, lease release on completion
// and on client disconnect, and upstream failures as 502 / 504.
#include <gtest/gtest.h>
#include <httplib.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <poll.h>

#include <array>
#include <atomic>
#include <functional>
#include <future>
#include <nlohmann/json.hpp>
#include <sstream>

#include "tests/api/test_server.hpp"
#include "tests/support/eventually.hpp"
#include "tests/support/net.hpp"

namespace gpumod::api {
namespace {

using nlohmann::json;
using testing::TestServer;

using gpumod::testing::eventually;

// A raw TCP upstream whose connections follow a script, for what httplib's server will not do
// on demand: close a kept-alive connection at a chosen moment, frame an answer a chosen way,
// notice when gpumod hangs up. Connections are served one after the other.
class RawUpstream {
 public:
  using Script = std::function<void(RawUpstream& self, int fd, int connection)>;

  explicit RawUpstream(Script script) : script_(std::move(script)) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
        ::listen(listen_fd_, 16) != 0 ||
        ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      throw std::runtime_error("RawUpstream: cannot listen");
    }
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { serve(); });
  }
  ~RawUpstream() {
    stop_.store(true);
    thread_.join();
    ::close(listen_fd_);
  }
  RawUpstream(const RawUpstream&) = delete;
  RawUpstream& operator=(const RawUpstream&) = delete;

  [[nodiscard]] std::string endpoint() const { return "http://127.0.0.1:" + std::to_string(port_); }
  [[nodiscard]] int requests() const { return requests_.load(); }
  [[nodiscard]] int connections() const { return connections_.load(); }
  [[nodiscard]] bool saw_hangup() const { return saw_hangup_.load(); }

  // Reads one request (head and Content-Length body); false when the peer closed first.
  bool read_request(int fd) {
    std::string in;
    std::array<char, 4096> buf{};
    std::size_t need = std::string::npos;
    for (;;) {
      const auto head_end = in.find("\r\n\r\n");
      if (head_end != std::string::npos && need == std::string::npos) {
        const auto cl = in.find("Content-Length: ");
        const std::size_t length = cl == std::string::npos ? 0 : std::stoul(in.substr(cl + 16));
        need = head_end + 4 + length;
      }
      if (need != std::string::npos && in.size() >= need) {
        requests_.fetch_add(1);
        return true;
      }
      if (!wait_readable(fd)) return false;
      const ssize_t n = ::recv(fd, buf.data(), buf.size(), 0);
      if (n <= 0) return false;
      in.append(buf.data(), static_cast<std::size_t>(n));
    }
  }
  // Waits until gpumod closes its end (or 20 s pass); true when it did.
  bool wait_for_hangup(int fd) {
    std::array<char, 4096> buf{};
    while (wait_readable(fd)) {
      if (::recv(fd, buf.data(), buf.size(), 0) <= 0) {
        saw_hangup_.store(true);
        return true;
      }
    }
    return false;
  }
  static void send_all(int fd, std::string_view data) {
    while (!data.empty()) {
      const ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
      if (n <= 0) return;
      data.remove_prefix(static_cast<std::size_t>(n));
    }
  }
  static std::string answer(const std::string& body) {
    return "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " +
           std::to_string(body.size()) + "\r\n\r\n" + body;
  }

 private:
  bool wait_readable(int fd) const {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (!stop_.load() && std::chrono::steady_clock::now() < deadline) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 20) > 0) return true;
    }
    return false;
  }
  void serve() {
    for (int index = 0; !stop_.load();) {
      pollfd p{listen_fd_, POLLIN, 0};
      if (::poll(&p, 1, 20) <= 0) continue;
      const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      connections_.fetch_add(1);
      script_(*this, fd, index++);
      ::close(fd);
    }
  }

  Script script_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> requests_{0};
  std::atomic<int> connections_{0};
  std::atomic<bool> saw_hangup_{false};
  std::thread thread_;
};

// A streaming chat completion for "coder"; the caller adds its receivers.
httplib::Request streaming_chat_request() {
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/chat/completions";
  req.body = R"({"model":"coder","stream":true})";
  req.headers = {{"Content-Type", "application/json"}};
  return req;
}

// A plain client socket to gpumod, for exchanges httplib's client will not make (pipelining,
// hanging up mid-call).
int connect_to(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

std::string post_text(const std::string& path, const std::string& body) {
  return "POST " + path + " HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: " +
         std::to_string(body.size()) + "\r\n\r\n" + body;
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
  httplib::Request req = streaming_chat_request();
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
  httplib::Request req = streaming_chat_request();
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
  const int dead_port = gpumod::testing::free_port();
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
    o.refusal = scheduler::Refusal::queue_full;
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

TEST(Proxy, AKeptAliveConnectionTheServiceDroppedIsRetriedOnceOnANewOne) {
  // Connection 0 answers one call, then reads the next request and closes without answering
  // (the race of a server closing an idle connection as a request goes out). Connection 1
  // answers.
  RawUpstream upstream([](RawUpstream& self, int fd, int connection) {
    if (connection == 0) {
      if (!self.read_request(fd)) return;
      RawUpstream::send_all(fd, RawUpstream::answer(R"({"n":1})"));
      self.read_request(fd);
      return;
    }
    while (self.read_request(fd)) RawUpstream::send_all(fd, RawUpstream::answer(R"({"n":2})"));
  });
  TestServer server;
  server.control().endpoint = upstream.endpoint();
  auto client = server.client();
  auto first = client->Post("/v1/chat/completions", R"({"model":"coder"})", "application/json");
  ASSERT_TRUE(first);
  EXPECT_EQ(first->body, R"({"n":1})");
  auto second = client->Post("/v1/chat/completions", R"({"model":"coder"})", "application/json");
  ASSERT_TRUE(second);
  EXPECT_EQ(second->status, 200) << second->body;
  EXPECT_EQ(second->body, R"({"n":2})");
  EXPECT_EQ(upstream.requests(), 3);  // the dropped one, then the retry
  EXPECT_EQ(upstream.connections(), 2);
  EXPECT_EQ(server.control().released().size(), 2U);
}

// A service that accepts but never reads: the silence timeout covers the request's way out
// too, so the call ends (504) and the lease goes back instead of waiting for ever.
TEST(Proxy, AServiceThatNeverTakesTheRequestIs504AndTheLeaseIsReleased) {
  RawUpstream upstream(
      [](RawUpstream&, int, int) { std::this_thread::sleep_for(std::chrono::milliseconds(900)); });
  ServerOptions opts;
  opts.upstream_read_timeout = std::chrono::milliseconds(300);
  TestServer server(opts);
  server.control().endpoint = upstream.endpoint();
  // More than the loopback socket buffers hold, so the send stalls.
  const std::string body = R"({"model":"coder","pad":")" + std::string(std::size_t{6} << 20, 'x') + R"("})";
  auto r = server.client()->Post("/v1/chat/completions", body, "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 504) << r->body;
  EXPECT_NE(r->body.find("took none of the request"), std::string::npos) << r->body;
  EXPECT_EQ(server.control().released().size(), 1U);
}

// A service may answer before it has read the whole request (an early 413). That connection
// still carries the rest of the request, so it must not serve the next call.
TEST(Proxy, AnAnswerBeforeTheWholeRequestWentOutEndsThatConnection) {
  std::atomic<bool> first_answered{false};
  RawUpstream upstream([&first_answered](RawUpstream& self, int fd, int connection) {
    if (connection == 0) {
      std::array<char, 4096> head{};
      if (::recv(fd, head.data(), head.size(), 0) <= 0) return;
      RawUpstream::send_all(fd, "HTTP/1.1 413 Payload Too Large\r\nContent-Length: 2\r\n\r\n{}");
      // Reads nothing more until the client has the answer, so gpumod's send stalls: 6 MiB is
      // more than its send buffer (at most 4 MiB) and an unread receive buffer hold. Then drains
      // until gpumod closes; a connection it kept would block the next call here.
      for (int i = 0; i < 2000 && !first_answered.load(); ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
      std::vector<char> sink(std::size_t{1} << 20);
      while (::recv(fd, sink.data(), sink.size(), 0) > 0) {
      }
      return;
    }
    while (self.read_request(fd)) RawUpstream::send_all(fd, RawUpstream::answer(R"({"n":2})"));
  });
  ServerOptions opts;
  opts.upstream_read_timeout = std::chrono::seconds(3);
  TestServer server(opts);
  server.control().endpoint = upstream.endpoint();
  auto client = server.client();
  const std::string big = R"({"model":"coder","pad":")" + std::string(std::size_t{6} << 20, 'x') + R"("})";
  auto first = client->Post("/v1/chat/completions", big, "application/json");
  first_answered.store(true);
  ASSERT_TRUE(first);
  EXPECT_EQ(first->status, 413);
  auto second = client->Post("/v1/chat/completions", R"({"model":"coder"})", "application/json");
  ASSERT_TRUE(second);
  EXPECT_EQ(second->status, 200) << second->body;
  EXPECT_EQ(second->body, R"({"n":2})");
  EXPECT_EQ(upstream.connections(), 2);
  EXPECT_EQ(server.control().released().size(), 2U);
}

// A streaming client that stops reading but keeps its socket open (a stopped process) must
// not hold the lease for ever: after idle_timeout with reading paused it is dropped (499).
TEST(Proxy, AStreamClientThatStopsReadingIsDroppedAndItsLeaseReleased) {
  RawUpstream upstream([](RawUpstream& self, int fd, int) {
    if (!self.read_request(fd)) return;
    RawUpstream::send_all(fd,
                          "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                          "Transfer-Encoding: chunked\r\n\r\n");
    std::string events;
    for (int i = 0; i < 64; ++i) events += "data: " + std::string(1000, 'x') + "\n\n";
    std::ostringstream chunk;
    chunk << std::hex << events.size() << "\r\n" << events << "\r\n";
    const std::string wire = chunk.str();
    // Blocks once gpumod stops reading; fails once gpumod ends the call (or after 30 s stuck,
    // so a broken gpumod fails the test instead of hanging it).
    const timeval stuck{30, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &stuck, sizeof stuck);
    for (int i = 0; i < 100000; ++i) {
      if (::send(fd, wire.data(), wire.size(), MSG_NOSIGNAL) <= 0) break;
    }
    self.wait_for_hangup(fd);
  });
  ServerOptions opts;
  opts.idle_timeout = std::chrono::milliseconds(400);
  TestServer server(opts);
  server.control().endpoint = upstream.endpoint();
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const int small = 4096;
  ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<std::uint16_t>(server.port()));
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  const std::string request = post_text("/v1/chat/completions", R"({"model":"coder","stream":true})");
  ASSERT_EQ(::send(fd, request.data(), request.size(), MSG_NOSIGNAL), static_cast<ssize_t>(request.size()));
  // ... and never reads.
  EXPECT_TRUE(eventually([&] { return server.control().released().size() == 1; }));
  EXPECT_TRUE(eventually([&] { return upstream.saw_hangup(); })) << "the call to the service ended";
  const auto proxied = server.control().proxied();
  ASSERT_EQ(proxied.size(), 1U);
  EXPECT_EQ(proxied[0].code, 499);
  ::close(fd);
}

// A 204 to a streaming call has no body and no framing; the next call on the same client
// connection is read cleanly after it.
TEST(Proxy, ABodilessAnswerToAStreamingCallLeavesTheConnectionClean) {
  RawUpstream upstream([](RawUpstream& self, int fd, int) {
    for (int n = 0; self.read_request(fd); ++n) {
      RawUpstream::send_all(
          fd, n == 0 ? std::string("HTTP/1.1 204 No Content\r\n\r\n") : RawUpstream::answer(R"({"n":2})"));
    }
  });
  TestServer server;
  server.control().endpoint = upstream.endpoint();
  auto client = server.client();
  auto first = client->Post("/v1/chat/completions", R"({"model":"coder","stream":true})", "application/json");
  ASSERT_TRUE(first);
  EXPECT_EQ(first->status, 204);
  EXPECT_EQ(first->get_header_value("Transfer-Encoding"), "");
  EXPECT_EQ(first->body, "");
  auto second = client->Post("/v1/chat/completions", R"({"model":"coder"})", "application/json");
  ASSERT_TRUE(second) << httplib::to_string(second.error());
  EXPECT_EQ(second->status, 200);
  EXPECT_EQ(second->body, R"({"n":2})");
}

TEST(Proxy, AServiceThatClosesEveryConnectionAfterItsAnswerNeverCostsAFailedCall) {
  RawUpstream upstream([](RawUpstream& self, int fd, int) {
    if (self.read_request(fd)) RawUpstream::send_all(fd, RawUpstream::answer(R"({"ok":true})"));
  });
  TestServer server;
  server.control().endpoint = upstream.endpoint();
  auto client = server.client();
  for (int i = 0; i < 5; ++i) {
    auto r = client->Post("/v1/chat/completions", R"({"model":"coder"})", "application/json");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200) << "call " << i << ": " << r->body;
  }
  EXPECT_EQ(upstream.connections(), upstream.requests());  // never two requests on one connection
}

TEST(Proxy, ChunkedAndCloseDelimitedAnswersArriveWhole) {
  RawUpstream upstream([](RawUpstream& self, int fd, int) {
    if (!self.read_request(fd)) return;
    RawUpstream::send_all(
        fd,
        "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        "5\r\n{\"a\":\r\n");
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // the rest in a later packet
    RawUpstream::send_all(fd, "4;ext=1\r\n\"bc\"\r\n1\r\n}\r\n0\r\nX-Trailer: t\r\n\r\n");
    if (!self.read_request(fd)) return;
    RawUpstream::send_all(
        fd, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nuntil the ");
    RawUpstream::send_all(fd, "end");
  });
  TestServer server;
  server.control().endpoint = upstream.endpoint();
  auto client = server.client();
  auto chunked = client->Post("/v1/chat/completions", R"({"model":"coder"})", "application/json");
  ASSERT_TRUE(chunked);
  EXPECT_EQ(chunked->status, 201);
  EXPECT_EQ(chunked->body, R"({"a":"bc"})");
  auto closing = client->Post("/v1/chat/completions", R"({"model":"coder"})", "application/json");
  ASSERT_TRUE(closing);
  EXPECT_EQ(closing->status, 200);
  EXPECT_EQ(closing->get_header_value("Content-Type"), "text/plain");
  EXPECT_EQ(closing->body, "until the end");
  EXPECT_EQ(server.control().released().size(), 2U);
}

TEST(Proxy, AClientThatHangsUpBeforeTheAnswerReleasesTheLeaseAndEndsTheCall) {
  RawUpstream upstream([](RawUpstream& self, int fd, int) {
    if (self.read_request(fd)) self.wait_for_hangup(fd);  // never answers
  });
  TestServer server;
  server.control().endpoint = upstream.endpoint();
  const int fd = connect_to(server.port());
  ASSERT_GE(fd, 0);
  RawUpstream::send_all(fd, post_text("/v1/chat/completions", R"({"model":"coder"})"));
  ASSERT_TRUE(eventually([&] { return upstream.requests() == 1; }));
  ::close(fd);
  EXPECT_TRUE(
      eventually([&] { return server.control().released() == std::vector<scheduler::LeaseId>{101}; }));
  EXPECT_TRUE(eventually([&] { return upstream.saw_hangup(); }));  // gpumod closed the upstream call
  ASSERT_TRUE(eventually([&] { return server.control().proxied().size() == 1; }));
  EXPECT_EQ(server.control().proxied()[0].code, 499);
}

TEST(Proxy, ASlowReaderGetsEveryByteOfALargeStream) {
  // 4 MiB of events, written as fast as the socket takes them: gpumod must hold the service
  // back while the client is not reading, and lose nothing.
  constexpr int kEvents = 1024;
  auto event = [](int i) { return "data: " + std::to_string(i) + " " + std::string(4000, 'x') + "\n\n"; };
  RawUpstream upstream([&](RawUpstream& self, int fd, int) {
    if (!self.read_request(fd)) return;
    RawUpstream::send_all(
        fd, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n");
    for (int i = 0; i < kEvents; ++i) {
      const std::string e = event(i);
      std::ostringstream size;
      size << std::hex << e.size();
      RawUpstream::send_all(fd, size.str() + "\r\n" + e + "\r\n");
    }
    RawUpstream::send_all(fd, "0\r\n\r\n");
    self.read_request(fd);
  });
  TestServer server;
  server.control().endpoint = upstream.endpoint();
  auto client = server.client();
  httplib::Request req = streaming_chat_request();
  std::string received;
  bool slept = false;
  req.content_receiver = [&](const char* data, std::size_t n, std::uint64_t, std::uint64_t) {
    if (!slept) {
      slept = true;
      std::this_thread::sleep_for(std::chrono::milliseconds(300));  // let everything pile up
    }
    received.append(data, n);
    return true;
  };
  auto result = client->send(req);
  ASSERT_TRUE(result) << httplib::to_string(result.error());
  std::string expected;
  for (int i = 0; i < kEvents; ++i) expected += event(i);
  EXPECT_EQ(received.size(), expected.size());
  EXPECT_TRUE(received == expected);
  EXPECT_TRUE(eventually([&] { return server.control().released().size() == 1; }));
}

TEST(Proxy, RequestsPipelinedBehindAProxiedCallAreAnsweredInOrder) {
  Upstream upstream;
  TestServer server;
  server.control().endpoint = upstream.endpoint();
  const int fd = connect_to(server.port());
  ASSERT_GE(fd, 0);
  RawUpstream::send_all(fd, post_text("/v1/chat/completions", R"({"model":"coder"})") +
                                "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" +
                                post_text("/v1/chat/completions", R"({"model":"embed"})"));
  std::string in;
  std::array<char, 4096> buf{};
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  auto answers = [&] {
    std::size_t n = 0;
    for (auto at = in.find("HTTP/1.1 "); at != std::string::npos; at = in.find("HTTP/1.1 ", at + 1)) ++n;
    return n;
  };
  while (answers() < 3 || in.find("BAAI/bge-m3") == std::string::npos) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << in;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    const ssize_t n = ::recv(fd, buf.data(), buf.size(), 0);
    ASSERT_GT(n, 0) << in;
    in.append(buf.data(), static_cast<std::size_t>(n));
  }
  ::close(fd);
  const auto coder = in.find(R"("model":"coder")");
  const auto health = in.find(R"("status":"ok")");
  const auto embed = in.find("BAAI/bge-m3");
  ASSERT_NE(coder, std::string::npos) << in;
  ASSERT_NE(health, std::string::npos) << in;
  EXPECT_LT(coder, health);
  EXPECT_LT(health, embed);
}

TEST(Proxy, ACallWhoseModelMustLoadFirstIsForwardedOnceItIsReady) {
  Upstream upstream;
  TestServer server;
  server.control().endpoint = upstream.endpoint();
  server.control().hold_outcomes = true;
  auto answer = std::async(std::launch::async, [&] {
    return server.client()->Post("/v1/chat/completions", R"({"model":"coder"})", "application/json");
  });
  ASSERT_TRUE(eventually([&] { return server.control().submitted().size() == 1; }));
  scheduler::RequestOutcome ready;
  ready.status = scheduler::RequestStatus::ready;
  ready.service = "qwen3-coder";
  ready.endpoint = upstream.endpoint();
  ready.lease = 55;
  server.control().fulfil(server.control().submitted()[0].request_id, ready);
  auto r = answer.get();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(server.control().released(), std::vector<scheduler::LeaseId>{55});

  // A client that leaves while its model loads withdraws its request.
  const int fd = connect_to(server.port());
  ASSERT_GE(fd, 0);
  RawUpstream::send_all(fd, post_text("/v1/chat/completions", R"({"model":"coder"})"));
  ASSERT_TRUE(eventually([&] { return server.control().submitted().size() == 2; }));
  ::close(fd);
  const std::string id = server.control().submitted()[1].request_id;
  EXPECT_TRUE(eventually([&] {
    auto c = server.control().cancelled();
    return std::find(c.begin(), c.end(), id) != c.end();
  }));
}

// The wait for a loading model times out (504), and the scheduler serves the request just
// before the cancel lands (the cancel then fails): the lease it granted must still go back.
TEST(Proxy, ALeaseGrantedAsTheWaitTimesOutIsGivenBack) {
  ServerOptions opts;
  opts.scheduler_grace = std::chrono::milliseconds(100);
  TestServer server(opts);
  auto cfg = std::make_shared<config::Config>(*server.control().config());
  cfg->daemon.policy.default_request_timeout = std::chrono::milliseconds(200);
  server.control().set_config(cfg);
  server.control().hold_outcomes = true;
  server.control().on_cancel = [&](const std::string& id) -> Result<void> {
    scheduler::RequestOutcome ready;
    ready.status = scheduler::RequestStatus::ready;
    ready.service = "qwen3-coder";
    ready.endpoint = "http://127.0.0.1:1";
    ready.lease = 77;
    server.control().fulfil(id, ready);  // served a moment before the cancel
    return make_error("it is already ready");
  };
  auto r = server.client()->Post("/v1/chat/completions", R"({"model":"coder"})", "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 504) << r->body;
  EXPECT_TRUE(eventually([&] { return server.control().released() == std::vector<scheduler::LeaseId>{77}; }));
}

}  // namespace
}  // namespace gpumod::api
