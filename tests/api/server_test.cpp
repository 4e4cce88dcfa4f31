// The control API through a real HTTP client on an ephemeral port, over a FakeControl.
#include <gtest/gtest.h>
#include <httplib.h>

#include <nlohmann/json.hpp>
#include <optional>
#include <thread>
#include <vector>

#include "tests/api/test_server.hpp"

namespace gpumod::api {
namespace {

using nlohmann::json;
using testing::FakeControl;
using testing::TestServer;

json body_of(const httplib::Result& r) {
  return json::parse(r->body);
}

// Every error: {"error": {"message", "type", "request_id"}} with the X-Request-Id of the exchange.
void expect_error_shape(const httplib::Result& r, int status, const std::string& type,
                        const std::string& phrase) {
  ASSERT_TRUE(r) << "no response";
  EXPECT_EQ(r->status, status) << r->body;
  auto b = json::parse(r->body);
  ASSERT_TRUE(b.contains("error")) << r->body;
  EXPECT_EQ(b["error"]["type"], type);
  EXPECT_NE(b["error"]["message"].get<std::string>().find(phrase), std::string::npos) << r->body;
  EXPECT_EQ(b["error"]["request_id"], r->get_header_value("X-Request-Id"));
  EXPECT_FALSE(r->get_header_value("X-Request-Id").empty());
}

TEST(ApiServer, HealthzAnswersWithAGeneratedRequestId) {
  TestServer server;
  auto r = server.client()->Get("/healthz");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(body_of(r)["status"], "ok");
  EXPECT_EQ(r->get_header_value("X-Request-Id").rfind("req-", 0), 0U);
}

TEST(ApiServer, ClientRequestIdIsReusedAndReachesTheScheduler) {
  TestServer server;
  auto r = server.client()->Post("/request", {{"X-Request-Id", "trace-77"}}, R"({"model":"coder"})",
                                 "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->get_header_value("X-Request-Id"), "trace-77");
  ASSERT_EQ(server.control().submitted().size(), 1U);
  EXPECT_EQ(server.control().submitted()[0].request_id, "trace-77");
}

TEST(ApiServer, InsaneClientRequestIdIsReplaced) {
  TestServer server;
  auto r = server.client()->Get("/healthz", {{"X-Request-Id", std::string(100, 'x')}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->get_header_value("X-Request-Id").rfind("req-", 0), 0U);
}

TEST(ApiServer, PostRequestReadyAnswersWithServiceEndpointAndWait) {
  TestServer server;
  auto r = server.client()->Post(
      "/request", R"({"model":"coder","priority":70,"timeout_s":30,"keep_alive_s":120})", "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  auto b = body_of(r);
  EXPECT_EQ(b["status"], "ready");
  EXPECT_EQ(b["service"], "qwen3-coder");
  EXPECT_EQ(b["endpoint"], "http://127.0.0.1:1");
  EXPECT_EQ(b["gpu"], 0);
  EXPECT_DOUBLE_EQ(b["waited_s"].get<double>(), 0.25);
  EXPECT_EQ(b["request_id"], r->get_header_value("X-Request-Id"));
  auto spec = server.control().submitted().at(0);
  EXPECT_EQ(spec.model, "coder");
  EXPECT_EQ(spec.priority, 70);
  EXPECT_EQ(spec.timeout, std::chrono::milliseconds(30000));
  EXPECT_EQ(spec.keep_alive, std::chrono::seconds(120));
  EXPECT_FALSE(spec.hold_lease);
}

TEST(ApiServer, CurlStyleFormContentTypeStillParsesTheJsonBody) {
  TestServer server;
  auto r = server.client()->Post("/request", R"({"model":"coder"})", "application/x-www-form-urlencoded");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
}

TEST(ApiServer, MalformedRequestBodiesGet400WithTheReason) {
  TestServer server;
  auto client = server.client();
  expect_error_shape(client->Post("/request", "{nope", "application/json"), 400, "invalid_request",
                     "not valid JSON");
  expect_error_shape(client->Post("/request", R"({"model": 1})", "application/json"), 400, "invalid_request",
                     "'model' must be a string");
  expect_error_shape(client->Post("/request", R"({"model": "x y"})", "application/json"), 400,
                     "invalid_request", "outside [A-Za-z0-9._:/@-]");
  expect_error_shape(client->Post("/request", R"({"model": "m", "wiat": true})", "application/json"), 400,
                     "invalid_request", "unknown field 'wiat'");
  EXPECT_TRUE(server.control().submitted().empty());
}

// Each refusal kind and the one HTTP status the API gives it.
struct Rejection {
  scheduler::Refusal refusal;
  int http_status;
  scheduler::RequestStatus status;
  const char* type;
};

class ApiServerRejections : public ::testing::TestWithParam<Rejection> {};

TEST_P(ApiServerRejections, SchedulerRefusalsKeepTheirStatusAndMessage) {
  const auto c = GetParam();
  TestServer server;
  server.control().on_submit = [c](const scheduler::RequestSpec& spec) {
    scheduler::RequestOutcome o;
    o.status = c.status;
    o.refusal = c.refusal;
    o.message = "scheduler says no to " + spec.model;
    o.retry_after_seconds = c.http_status == 503 ? 7 : 0;
    return o;
  };
  auto r = server.client()->Post("/request", R"({"model":"coder"})", "application/json");
  expect_error_shape(r, c.http_status, c.type, "scheduler says no to coder");
  auto b = body_of(r);
  EXPECT_EQ(b["status"], c.http_status == 504 ? "timed_out" : "rejected");
  if (c.http_status == 503) {
    EXPECT_EQ(r->get_header_value("Retry-After"), "7");
  } else {
    EXPECT_FALSE(r->has_header("Retry-After"));
  }
}

INSTANTIATE_TEST_SUITE_P(
    Table, ApiServerRejections,
    ::testing::Values(
        Rejection{scheduler::Refusal::unknown, 404, scheduler::RequestStatus::rejected, "not_found"},
        Rejection{scheduler::Refusal::conflict, 409, scheduler::RequestStatus::rejected, "conflict"},
        Rejection{scheduler::Refusal::never_fits, 422, scheduler::RequestStatus::rejected, "unprocessable"},
        Rejection{scheduler::Refusal::queue_full, 503, scheduler::RequestStatus::rejected, "unavailable"},
        Rejection{scheduler::Refusal::unavailable, 503, scheduler::RequestStatus::rejected, "unavailable"},
        Rejection{scheduler::Refusal::deadline, 504, scheduler::RequestStatus::timed_out, "timeout"},
        Rejection{scheduler::Refusal::failed, 500, scheduler::RequestStatus::rejected, "internal_error"}));

TEST(ApiServer, NoWaitAnswers202ThenTheRequestCanBeInspectedAndCancelled) {
  TestServer server;
  server.control().hold_outcomes = true;
  auto client = server.client();
  auto r = client->Post("/request", {{"X-Request-Id", "q-1"}}, R"({"model":"embed","wait":false})",
                        "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 202) << r->body;
  EXPECT_EQ(body_of(r)["request_id"], "q-1");
  EXPECT_EQ(body_of(r)["status"], "queued");

  auto info = client->Get("/requests/q-1");
  ASSERT_TRUE(info);
  EXPECT_EQ(info->status, 200);
  EXPECT_EQ(body_of(info)["status"], "queued");
  EXPECT_EQ(body_of(info)["model"], "embed");

  auto del = client->Delete("/requests/q-1");
  ASSERT_TRUE(del);
  EXPECT_EQ(del->status, 200) << del->body;
  EXPECT_EQ(body_of(del)["status"], "cancelled");
  EXPECT_EQ(server.control().cancelled(), std::vector<std::string>{"q-1"});

  expect_error_shape(client->Get("/requests/nope"), 404, "not_found", "no request with id 'nope'");
  expect_error_shape(client->Delete("/requests/nope"), 404, "not_found", "no request with id 'nope'");
  server.control().fulfil("q-1", scheduler::RequestOutcome{});
}

// Clients waiting for the scheduler hold no worker thread: with far more waiting calls than the
// server has workers (4), a route that needs a worker (/metrics) still answers at once, and
// every waiting client gets its answer when the scheduler decides.
TEST(ApiServer, ClientsWaitingForTheSchedulerHoldNoWorkerThread) {
  TestServer server;
  server.control().hold_outcomes = true;
  constexpr int kWaiting = 24;
  std::vector<std::thread> clients;
  std::vector<int> statuses(kWaiting, 0);
  for (int i = 0; i < kWaiting; ++i) {
    clients.emplace_back([&, i] {
      auto r = server.client()->Post("/request", {{"X-Request-Id", "w-" + std::to_string(i)}},
                                     R"({"model":"coder"})", "application/json");
      statuses[static_cast<std::size_t>(i)] = r ? r->status : -1;
    });
  }
  for (int i = 0; i < 500 && server.control().submitted().size() < kWaiting; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_EQ(server.control().submitted().size(), static_cast<std::size_t>(kWaiting));
  auto client = server.client();
  client->set_read_timeout(std::chrono::seconds(5));
  auto metrics = client->Get("/metrics");
  ASSERT_TRUE(metrics) << "GET /metrics got no answer while " << kWaiting << " clients waited";
  EXPECT_EQ(metrics->status, 200);
  for (int i = 0; i < kWaiting; ++i) {
    scheduler::RequestOutcome ready;
    ready.status = scheduler::RequestStatus::ready;
    ready.service = "qwen3-coder";
    ready.endpoint = "http://127.0.0.1:7070";
    server.control().fulfil("w-" + std::to_string(i), ready);
  }
  for (auto& t : clients) t.join();
  EXPECT_EQ(statuses, std::vector<int>(kWaiting, 200));
}

// A client still waiting when the server stops is told so (503 with Retry-After), not cut off.
TEST(ApiServer, AClientWaitingWhenTheServerStopsGets503) {
  auto control = std::make_shared<FakeControl>();
  control->hold_outcomes = true;
  auto server = std::make_unique<TestServer>(ServerOptions{}, control);
  std::optional<httplib::Result> answer;
  std::thread waiter([&, client = server->client()] {
    answer.emplace(
        client->Post("/request", {{"X-Request-Id", "w-stop"}}, R"({"model":"coder"})", "application/json"));
  });
  for (int i = 0; i < 500 && control->submitted().empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_EQ(control->submitted().size(), 1U);
  server.reset();  // stops and joins the server
  waiter.join();
  ASSERT_TRUE(answer.has_value());
  expect_error_shape(*answer, 503, "unavailable", "shutting down");
  if (*answer) {
    EXPECT_FALSE((*answer)->get_header_value("Retry-After").empty());
  }
  control->fulfil("w-stop", scheduler::RequestOutcome{});  // the Notify finds no server: nothing happens
}

TEST(ApiServer, CancellingAFinishedRequestIsAConflict) {
  TestServer server;
  scheduler::RequestInfo info;
  info.request_id = "done-1";
  info.status = scheduler::RequestStatus::ready;
  server.control().add_request_info(info);
  expect_error_shape(server.client()->Delete("/requests/done-1"), 409, "conflict", "already ready");
}

TEST(ApiServer, AWaitThatOutlivesItsDeadlineIs504AndCancelsTheRequest) {
  ServerOptions opts;
  opts.scheduler_grace = std::chrono::milliseconds(50);
  TestServer server(opts);
  server.control().hold_outcomes = true;
  auto r = server.client()->Post("/request", {{"X-Request-Id", "slow-1"}},
                                 R"({"model":"coder","timeout_s":0.1})", "application/json");
  expect_error_shape(r, 504, "timeout", "did not finish");
  EXPECT_EQ(server.control().cancelled(), std::vector<std::string>{"slow-1"});
  server.control().fulfil("slow-1", scheduler::RequestOutcome{});
}

TEST(ApiServer, StatusCarriesGpusServicesQueueModeAndProbe) {
  TestServer server;
  auto r = server.client()->Get("/status");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  auto b = body_of(r);
  EXPECT_EQ(b["mode"], "code");
  EXPECT_EQ(b["probe"]["kind"], "sim");
  EXPECT_EQ(b["probe"]["up"], true);
  ASSERT_EQ(b["gpus"].size(), 1U);
  EXPECT_EQ(b["gpus"][0]["total_bytes"], 24LL << 30);
  ASSERT_EQ(b["services"].size(), 2U);
  EXPECT_EQ(b["services"][0]["state"], "ready");
  EXPECT_EQ(b["services"][1]["state"], "sleeping");
  EXPECT_TRUE(b["queue"].is_array());
}

TEST(ApiServer, ServicesListGetAndUnknown) {
  TestServer server;
  auto client = server.client();
  auto list = client->Get("/services");
  ASSERT_TRUE(list);
  EXPECT_EQ(body_of(list)["services"].size(), 2U);
  auto one = client->Get("/services/vllm-embedding");
  ASSERT_TRUE(one);
  EXPECT_EQ(one->status, 200);
  EXPECT_EQ(body_of(one)["port"], 8200);
  expect_error_shape(client->Get("/services/ghost"), 404, "not_found",
                     "unknown service 'ghost'; configured: qwen3-coder, vllm-embedding");
}

TEST(ApiServer, ServiceActionsReachTheSchedulerAndReportFailures) {
  TestServer server;
  auto client = server.client();
  auto r = client->Post("/services/qwen3-coder/sleep", "", "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(body_of(r)["action"], "sleep");
  EXPECT_EQ(body_of(r)["ok"], true);
  EXPECT_EQ(server.control().actions(), std::vector<std::string>{"qwen3-coder:2"});

  server.control().action_result =
      scheduler::ActionResult{false, scheduler::Refusal::conflict, "qwen3-coder is busy (2 leases)"};
  auto refused = client->Post("/services/qwen3-coder/stop", "", "application/json");
  expect_error_shape(refused, 409, "conflict", "busy (2 leases)");
  EXPECT_EQ(body_of(refused)["ok"], false);

  expect_error_shape(client->Post("/services/ghost/start", "", "application/json"), 404, "not_found",
                     "unknown service 'ghost'");
  expect_error_shape(client->Post("/services/qwen3-coder/explode", "", "application/json"), 404, "not_found",
                     "no such endpoint");
}

TEST(ApiServer, UnitFileIsPlainText) {
  TestServer server;
  auto r = server.client()->Get("/services/qwen3-coder/unit");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "[Unit]\nDescription=gpumod qwen3-coder\n");
  EXPECT_EQ(r->get_header_value("Content-Type").rfind("text/plain", 0), 0U);
}

TEST(ApiServer, ModesListMarksTheCurrentOne) {
  TestServer server;
  auto r = server.client()->Get("/modes");
  ASSERT_TRUE(r);
  auto b = body_of(r);
  EXPECT_EQ(b["current"], "code");
  ASSERT_EQ(b["modes"].size(), 2U);
  EXPECT_EQ(b["modes"][0]["id"], "code");
  EXPECT_EQ(b["modes"][0]["current"], true);
  EXPECT_EQ(b["modes"][1]["current"], false);
  EXPECT_EQ(b["modes"][1]["services"], json::array({"vllm-embedding"}));
}

TEST(ApiServer, ModeSwitchReturnsWhatItDid) {
  TestServer server;
  server.control().mode_result.ok = true;
  server.control().mode_result.stopped = {"qwen3-coder"};
  server.control().mode_result.started = {"vllm-embedding"};
  auto r = server.client()->Post("/modes/rag/switch", "", "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  auto b = body_of(r);
  EXPECT_EQ(b["mode"], "rag");
  EXPECT_EQ(b["stopped"], json::array({"qwen3-coder"}));
  EXPECT_EQ(b["started"], json::array({"vllm-embedding"}));
  EXPECT_TRUE(b["errors"].empty());
}

TEST(ApiServer, FailedModeSwitchKeepsTheDetailsAndTheErrorShape) {
  TestServer server;
  server.control().mode_result.ok = false;
  server.control().mode_result.refusal = scheduler::Refusal::unavailable;
  server.control().mode_result.stopped = {"qwen3-coder"};
  server.control().mode_result.errors = {"GPU 0: 20 GiB needed, 3 GiB free after 120 s"};
  auto r = server.client()->Post("/modes/rag/switch", "", "application/json");
  expect_error_shape(r, 503, "unavailable", "GPU 0: 20 GiB needed");
  EXPECT_EQ(body_of(r)["stopped"], json::array({"qwen3-coder"}));
  EXPECT_TRUE(r->has_header("Retry-After"));
  expect_error_shape(server.client()->Post("/modes/nope/switch", "", "application/json"), 404, "not_found",
                     "unknown mode 'nope'; configured: code, rag");
}

TEST(ApiServer, ReloadReportsChangesOrKeepsTheRunningConfig) {
  TestServer server;
  server.control().reload_result = scheduler::ReloadResult{true, "1 added", {"new-svc"}, {}, {}};
  auto ok = server.client()->Post("/reload", "", "application/json");
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200);
  EXPECT_EQ(body_of(ok)["added"], json::array({"new-svc"}));
  server.control().reload_result =
      scheduler::ReloadResult{false, "presets/x.yaml:3: port: must be 1..65535", {}, {}, {}};
  expect_error_shape(server.client()->Post("/reload", "", "application/json"), 422, "unprocessable",
                     "the running config stays: presets/x.yaml:3: port");
}

TEST(ApiServer, PlanIsADryRun) {
  TestServer server;
  auto client = server.client();
  auto r = client->Get("/plan?model=embed");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  auto b = body_of(r);
  EXPECT_EQ(b["service"], "vllm-embedding");
  EXPECT_EQ(b["outcome"], "plan");
  EXPECT_EQ(b["steps"].size(), 2U);
  EXPECT_EQ(b["actions"][0]["kind"], "sleep");
  expect_error_shape(client->Get("/plan"), 400, "invalid_request", "'model' is required");
  expect_error_shape(client->Get("/plan?model=ghost"), 404, "not_found", "unknown model 'ghost'");
  EXPECT_TRUE(server.control().actions().empty());  // nothing was switched or started
}

TEST(ApiServer, MetricsUsePrometheusTextFormat) {
  TestServer server;
  auto r = server.client()->Get("/metrics");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->get_header_value("Content-Type").rfind("text/plain; version=0.0.4", 0), 0U);
  EXPECT_NE(r->body.find("gpumod_build_info"), std::string::npos);
}

TEST(ApiServer, LandingPageLinksMetricsAndStatus) {
  TestServer server;
  auto r = server.client()->Get("/");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_NE(r->body.find("href=\"/metrics\""), std::string::npos);
  EXPECT_NE(r->body.find("href=\"/status\""), std::string::npos);
}

TEST(ApiServer, UnknownEndpointIs404AndWrongMethodIs405) {
  TestServer server;
  auto client = server.client();
  expect_error_shape(client->Get("/nothing/here"), 404, "not_found", "no such endpoint: GET /nothing/here");
  auto r = client->Get("/request");
  expect_error_shape(r, 405, "method_not_allowed", "use POST");
  EXPECT_EQ(r->get_header_value("Allow"), "POST");
  auto d = client->Delete("/status");
  expect_error_shape(d, 405, "method_not_allowed", "DELETE is not allowed on /status");
}

TEST(ApiServer, BodiesOverTheLimitAre413) {
  ServerOptions opts;
  opts.max_body_bytes = 64;
  TestServer server(opts);
  auto client = server.client();
  const std::string big = R"({"model":"coder","pad":")" + std::string(200, 'x') + "\"}";
  expect_error_shape(client->Post("/request", big, "application/json"), 413, "payload_too_large",
                     "limit of 64 bytes");
  // Chunked uploads carry no Content-Length; the server counts while de-chunking.
  auto chunked = client->Post(
      "/request",
      [&big](std::size_t offset, httplib::DataSink& sink) {
        if (offset < big.size()) {
          sink.write(big.data() + offset, big.size() - offset);
        } else {
          sink.done();
        }
        return true;
      },
      "application/json");
  expect_error_shape(chunked, 413, "payload_too_large", "limit of 64 bytes");
  EXPECT_TRUE(server.control().submitted().empty());
}

TEST(ApiServer, TokenIsRequiredOnEveryControlEndpointButHealthz) {
  ServerOptions opts;
  opts.api_token = "s3cret-token";
  TestServer server(opts);
  auto client = server.client();
  for (const char* path : {"/status", "/metrics", "/services", "/modes", "/", "/v1/models"}) {
    auto r = client->Get(path);
    expect_error_shape(r, 401, "unauthorized", "Authorization: Bearer");
    EXPECT_EQ(r->get_header_value("WWW-Authenticate"), "Bearer") << path;
  }
  expect_error_shape(client->Post("/request", R"({"model":"coder"})", "application/json"), 401,
                     "unauthorized", "Bearer");
  expect_error_shape(client->Get("/status", {{"Authorization", "Bearer wrong"}}), 401, "unauthorized",
                     "not valid");
  EXPECT_TRUE(server.control().submitted().empty());

  auto health = client->Get("/healthz");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);

  client->set_bearer_token_auth("s3cret-token");
  auto ok = client->Get("/status");
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200);
}

TEST(ApiServer, RefusesToListenBeyondLoopbackWithoutAToken) {
  auto control = std::make_shared<FakeControl>();
  ServerOptions opts;
  opts.host = "0.0.0.0";
  opts.port = 0;
  ApiServer open_server(control, opts);
  auto bound = open_server.bind();
  ASSERT_FALSE(bound.ok());
  EXPECT_NE(bound.error().find("not a loopback address and no api_token"), std::string::npos)
      << bound.error();

  opts.api_token = "";  // an empty token is no token
  ApiServer empty_token(control, opts);
  EXPECT_FALSE(empty_token.bind().ok());

  opts.api_token = "t0ken";
  ApiServer guarded(control, opts);
  auto ok = guarded.bind();
  ASSERT_TRUE(ok.ok()) << ok.error();
  EXPECT_GT(*ok, 0);
}

TEST(ApiServer, StopWithoutRunAndStopRightAfterStartDoNotHang) {
  auto control = std::make_shared<FakeControl>();
  ServerOptions opts;
  opts.port = 0;
  {
    ApiServer s(control, opts);
    ASSERT_TRUE(s.bind().ok());
  }
  ApiServer s(control, opts);
  ASSERT_TRUE(s.bind().ok());
  std::thread t([&s] { s.run(); });
  s.stop();
  t.join();
}

}  // namespace
}  // namespace gpumod::api
