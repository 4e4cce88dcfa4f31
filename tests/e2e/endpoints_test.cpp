// Every endpoint of a real `gpumod serve`, success and error paths, with real test-engine
// processes on a simulated 24 GiB GPU: the control API, the /v1 proxy and the CLI as a user
// drives them. (The in-process API tests, tests/api, cover the same routes against a fake
// scheduler and the proxy's 502/504 paths against scripted upstreams; here the scheduler,
// drivers, runner and engines are the real ones.)
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tests/e2e/daemon_fixture.hpp"
#include "tests/e2e/e2e_helpers.hpp"
#include "tests/support/raw_http.hpp"

namespace gpumod::e2e {
namespace {

class Endpoints : public ::testing::Test {
 protected:
  void SetUp() override {
    cfg_.gpu_mb = 24576;
    cfg_.presets = {engine_preset("chat", "vllm", free_port(), 8000, 100, "l1"),
                    engine_preset("embed", "vllm", free_port(), 2000, 100),
                    engine_preset("big", "vllm", free_port(), 20000, 100),
                    engine_preset("slow", "vllm", free_port(), 1000, 30000)};
    cfg_.presets[0].aliases = {"chat-alias"};
    cfg_.modes = {{"pair", {"chat", "embed"}}, {"solo", {"big"}}};
    write_config(config_dir(), cfg_);
  }

  fs::path config_dir() const { return dir_.path() / "config"; }
  fs::path state_dir() const { return dir_.path() / "state"; }

  // The error body every failure carries: {"error": {"message", "type", "request_id"}}.
  static std::string error_type(const Response& r) {
    const auto j = r.obj();
    if (!j.is_object() || !j.contains("error") || !j["error"].is_object()) return "<no error object>";
    EXPECT_FALSE(j["error"].value("message", "").empty()) << r.body;
    return j["error"].value("type", "");
  }

  TempDir dir_;
  GeneratedConfig cfg_;
};

TEST_F(Endpoints, ControlApiSuccessAndErrorPaths) {
  Daemon d(config_dir(), state_dir());
  ASSERT_TRUE(d.started());

  // Basics: health, landing page, unknown path, wrong method, request ids.
  EXPECT_EQ(d.get("/healthz").obj().value("status", ""), "ok");
  {
    // The one landing page: HTML that links what a person opening the daemon looks for.
    auto landing = d.get("/");
    EXPECT_EQ(landing.status, 200);
    EXPECT_NE(landing.headers["Content-Type"].find("text/html"), std::string::npos)
        << landing.headers["Content-Type"];
    for (const char* link :
         {"href=\"/status\"", "href=\"/metrics\"", "href=\"/v1/models\"", "href=\"/healthz\""})
      EXPECT_NE(landing.body.find(link), std::string::npos) << link;
  }
  auto unknown = d.get("/nope");
  EXPECT_EQ(unknown.status, 404);
  EXPECT_EQ(error_type(unknown), "not_found");
  auto wrong_method = d.del("/status");
  EXPECT_EQ(wrong_method.status, 405);
  EXPECT_EQ(error_type(wrong_method), "method_not_allowed");
  {
    httplib::Client c("127.0.0.1", d.port());
    auto r = c.Get("/status", {{"X-Request-Id", "e2e-trace-1"}});
    ASSERT_TRUE(r);
    EXPECT_EQ(r->get_header_value("X-Request-Id"), "e2e-trace-1");
    EXPECT_TRUE(eventually([&] { return d.log().find("request_id=e2e-trace-1") != std::string::npos; }))
        << "the access log line names the request id";
  }

  // POST /request: ready, then every refusal.
  auto ready = d.post("/request", R"({"model":"embed","priority":60})");
  ASSERT_EQ(ready.status, 200) << ready.body;
  const auto rj = ready.obj();
  EXPECT_EQ(rj.value("status", ""), "ready");
  EXPECT_EQ(rj.value("service", ""), "embed");
  EXPECT_EQ(rj.value("gpu", -1), 0);
  EXPECT_TRUE(rj.contains("waited_s"));
  {
    const std::string endpoint = rj.value("endpoint", "");
    const auto colon = endpoint.rfind(':');
    ASSERT_NE(colon, std::string::npos) << endpoint;
    httplib::Client engine("127.0.0.1", std::stoi(endpoint.substr(colon + 1)));
    auto health = engine.Get("/health");
    ASSERT_TRUE(health) << "the endpoint answers";
    EXPECT_EQ(health->status, 200);
  }
  auto not_json = d.post("/request", "{model: embed");
  EXPECT_EQ(not_json.status, 400);
  EXPECT_EQ(error_type(not_json), "invalid_request");
  EXPECT_EQ(d.post("/request", R"({"model":"embed","prioritee":3})").status, 400);
  EXPECT_EQ(d.post("/request", R"({"model":"bad name!"})").status, 400);
  auto no_such = d.post("/request", R"({"model":"nope"})");
  EXPECT_EQ(no_such.status, 404);
  EXPECT_NE(no_such.body.find("nope"), std::string::npos);
  auto too_big =
      d.post("/request", R"({"model":")" + std::string(std::size_t{9} * 1024 * 1024, 'x') + R"("})");
  EXPECT_EQ(too_big.status, 413);

  // wait:false, GET and DELETE /requests/{id}.
  auto queued = d.post("/request", R"({"model":"slow","wait":false})");
  ASSERT_EQ(queued.status, 202) << queued.body;
  const std::string slow_id = queued.obj().value("request_id", "");
  ASSERT_FALSE(slow_id.empty());
  auto info = d.get("/requests/" + slow_id);
  EXPECT_EQ(info.status, 200);
  EXPECT_EQ(info.obj().value("model", ""), "slow");
  auto cancelled = d.del("/requests/" + slow_id);
  EXPECT_EQ(cancelled.status, 200) << cancelled.body;
  EXPECT_EQ(cancelled.obj().value("status", ""), "cancelled");
  EXPECT_EQ(d.get("/requests/" + slow_id).obj().value("status", ""), "cancelled");
  EXPECT_EQ(d.del("/requests/" + slow_id).status, 409) << "already decided";
  // The load it set off goes on (another request may want it); stopping the service ends it.
  auto stop_loading = d.post("/services/slow/stop");
  EXPECT_EQ(stop_loading.status, 200) << stop_loading.body;
  EXPECT_EQ(service_state(d, "slow"), "stopped");
  EXPECT_EQ(d.get("/requests/no-such-request").status, 404);
  EXPECT_EQ(d.del("/requests/no-such-request").status, 404);
  auto later = d.post("/request", R"({"model":"chat","wait":false})");
  ASSERT_TRUE(later.status == 202 || later.status == 200) << later.body;
  const std::string chat_id = later.obj().value("request_id", "");
  EXPECT_TRUE(eventually([&] { return d.get("/requests/" + chat_id).obj().value("status", "") == "ready"; }));

  // Services.
  auto list = d.get("/services").obj();
  ASSERT_TRUE(list.contains("services"));
  EXPECT_EQ(list["services"].size(), cfg_.presets.size());
  EXPECT_EQ(d.get("/services/embed").obj().value("state", ""), "ready");
  auto no_service = d.get("/services/nope");
  EXPECT_EQ(no_service.status, 404);
  EXPECT_NE(no_service.body.find("embed"), std::string::npos) << "the 404 lists the configured ids";
  auto stop = d.post("/services/embed/stop");
  EXPECT_EQ(stop.status, 200) << stop.body;
  EXPECT_TRUE(stop.obj().value("ok", false));
  EXPECT_EQ(service_state(d, "embed"), "stopped");
  EXPECT_EQ(d.post("/services/embed/start").status, 200);
  EXPECT_EQ(service_state(d, "embed"), "ready");
  auto no_sleep = d.post("/services/embed/sleep");
  EXPECT_EQ(no_sleep.status, 409) << no_sleep.body;
  EXPECT_EQ(no_sleep.obj().value("action", ""), "sleep");
  EXPECT_FALSE(no_sleep.obj().value("ok", true));
  EXPECT_EQ(d.post("/services/chat/sleep").status, 200);
  EXPECT_EQ(service_state(d, "chat"), "sleeping");
  EXPECT_EQ(d.post("/services/chat/wake").status, 200);
  EXPECT_EQ(service_state(d, "chat"), "ready");
  EXPECT_EQ(d.post("/services/nope/start").status, 404);
  EXPECT_EQ(d.post("/services/embed/explode").status, 404);
  auto unit = d.get("/services/embed/unit");
  EXPECT_EQ(unit.status, 200);
  EXPECT_NE(unit.headers["Content-Type"].find("text/plain"), std::string::npos);
  EXPECT_NE(unit.body.find("[Service]"), std::string::npos) << unit.body;

  // Plan: a dry run that changes nothing.
  auto plan = d.get("/plan?model=big");
  ASSERT_EQ(plan.status, 200) << plan.body;
  EXPECT_EQ(plan.obj().value("outcome", ""), "plan") << plan.body;
  EXPECT_FALSE(plan.obj()["steps"].empty()) << plan.body;
  EXPECT_EQ(service_state(d, "chat"), "ready") << "a plan starts and stops nothing";
  EXPECT_EQ(service_state(d, "big"), "stopped");
  EXPECT_EQ(d.get("/plan?model=nope").status, 404);
  EXPECT_EQ(d.get("/plan").status, 400);

  // Modes.
  auto modes = d.get("/modes").obj();
  ASSERT_TRUE(modes.contains("modes"));
  EXPECT_EQ(modes["modes"].size(), 2U);
  auto solo = d.post("/modes/solo/switch", "{}", std::chrono::seconds(90));
  ASSERT_EQ(solo.status, 200) << solo.body;
  EXPECT_TRUE(solo.obj().value("ok", false));
  EXPECT_EQ(solo.obj()["started"], json::array({"big"})) << solo.body;
  EXPECT_EQ(service_state(d, "chat"), "stopped");
  EXPECT_EQ(service_state(d, "embed"), "stopped");
  EXPECT_EQ(service_state(d, "big"), "ready");
  EXPECT_EQ(d.get("/modes").obj().value("current", ""), "solo");
  auto no_mode = d.post("/modes/nope/switch");
  EXPECT_EQ(no_mode.status, 404);
  EXPECT_NE(no_mode.body.find("pair"), std::string::npos) << "the 404 lists the configured modes";

  // Reload: a good config is taken, a broken one refused with file and line, the running kept.
  write_file(config_dir() / "presets" / "extra.yaml",
             "id: extra\ndriver: generic\nport: " + std::to_string(free_port()) +
                 "\nvram_mb: 1000\nmodel_id: extra\n"
                 "cmd: [/bin/true]\n");
  auto reload = d.post("/reload");
  ASSERT_EQ(reload.status, 200) << reload.body;
  EXPECT_EQ(reload.obj()["added"], json::array({"extra"})) << reload.body;
  write_file(config_dir() / "presets" / "extra.yaml", "id: extra\ndriver: vllm\nport: 1\nvram_mb: lots\n");
  auto bad_reload = d.post("/reload");
  EXPECT_EQ(bad_reload.status, 422) << bad_reload.body;
  EXPECT_NE(bad_reload.body.find("extra.yaml:4"), std::string::npos) << bad_reload.body;
  EXPECT_EQ(d.get("/services").obj()["services"].size(), cfg_.presets.size() + 1) << "running config kept";
  EXPECT_EQ(service_state(d, "big"), "ready") << "and nothing was disturbed";

  // Metrics.
  auto metrics = d.get("/metrics");
  EXPECT_EQ(metrics.status, 200);
  EXPECT_NE(metrics.headers["Content-Type"].find("text/plain; version=0.0.4"), std::string::npos);
  EXPECT_NE(metrics.body.find("gpumod_service_state{"), std::string::npos);
}

TEST_F(Endpoints, ProxyLoadsRoutesStreamsAndReleases) {
  Daemon d(config_dir(), state_dir());
  ASSERT_TRUE(d.started());

  auto models = d.get("/v1/models");
  ASSERT_EQ(models.status, 200);
  const json listed = models.obj();
  std::vector<std::string> ids;
  for (const auto& m : listed["data"]) ids.push_back(m.value("id", ""));
  for (const char* want : {"chat", "chat-alias", "embed", "big"}) {
    EXPECT_NE(std::find(ids.begin(), ids.end(), want), ids.end()) << want << " in " << models.body;
  }

  // A cold model is loaded through the admission queue, then answered; the alias is rewritten.
  EXPECT_EQ(service_state(d, "chat"), "stopped");
  auto cold = d.post("/v1/chat/completions",
                     R"({"model":"chat-alias","messages":[{"role":"user","content":"hello there"}]})");
  ASSERT_EQ(cold.status, 200) << cold.body << d.log();
  EXPECT_EQ(cold.obj().value("model", ""), "chat") << cold.body;
  EXPECT_FALSE(cold.obj()["choices"].empty());
  EXPECT_EQ(service_state(d, "chat"), "ready");

  // Streaming passes the engine's SSE through.
  {
    httplib::Client c("127.0.0.1", d.port());
    std::string body;
    std::string content_type;
    httplib::Request req;
    req.method = "POST";
    req.path = "/v1/chat/completions";
    req.body = R"({"model":"chat","stream":true,"messages":[{"role":"user","content":"one two three"}]})";
    req.headers = {{"Content-Type", "application/json"}};
    req.response_handler = [&](const httplib::Response& r) {
      content_type = r.get_header_value("Content-Type");
      return true;
    };
    req.content_receiver = [&](const char* data, std::size_t n, std::uint64_t, std::uint64_t) {
      body.append(data, n);
      return true;
    };
    auto r = c.send(req);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
    EXPECT_NE(content_type.find("text/event-stream"), std::string::npos);
    std::size_t events = 0;
    for (auto at = body.find("data: "); at != std::string::npos; at = body.find("data: ", at + 1)) ++events;
    EXPECT_GE(events, 3U) << body;
    EXPECT_NE(body.find("data: [DONE]"), std::string::npos) << body;
  }

  auto completion = d.post("/v1/completions", R"({"model":"chat","prompt":"say something"})");
  EXPECT_EQ(completion.status, 200) << completion.body;
  auto embedding = d.post("/v1/embeddings", R"({"model":"embed","input":["a","b"]})");
  ASSERT_EQ(embedding.status, 200) << embedding.body;
  ASSERT_EQ(embedding.obj()["data"].size(), 2U);
  EXPECT_EQ(embedding.obj()["data"][0]["embedding"].size(), 16U);

  // A sleeping model is woken for the call.
  ASSERT_EQ(d.post("/services/chat/sleep").status, 200);
  auto woken =
      d.post("/v1/chat/completions", R"({"model":"chat","messages":[{"role":"user","content":"hi"}]})");
  EXPECT_EQ(woken.status, 200) << woken.body;
  EXPECT_EQ(service_state(d, "chat"), "ready");

  // Refusals are not forwarded.
  auto no_model = d.post("/v1/chat/completions", R"({"messages":[]})");
  EXPECT_EQ(no_model.status, 400);
  EXPECT_EQ(error_type(no_model), "invalid_request");
  EXPECT_EQ(d.post("/v1/chat/completions", "not json").status, 400);
  EXPECT_EQ(d.post("/v1/embeddings", R"({"model":"nope","input":"x"})").status, 404);

  // Every lease was given back.
  EXPECT_TRUE(eventually([&] {
    for (const char* id : {"chat", "embed"}) {
      if (service_status(d, id).value("leases", -1) != 0) return false;
    }
    return true;
  }));
  auto metrics = d.get("/metrics").body;
  EXPECT_NE(
      metrics.find(R"(gpumod_proxy_requests_total{code="200",endpoint="/v1/chat/completions",svc="chat"})"),
      std::string::npos)
      << metrics;
}

TEST_F(Endpoints, CliDrivesTheDaemon) {
  Daemon d(config_dir(), state_dir());
  ASSERT_TRUE(d.started());
  const std::string cli = std::string(kGpumodBin) + " --url " + d.url() + " ";

  auto request = run_command(cli + "request embed");
  EXPECT_EQ(request.exit_code, 0) << request.output;
  EXPECT_NE(request.output.find("embed is ready"), std::string::npos) << request.output;
  auto status = run_command(cli + "status");
  EXPECT_EQ(status.exit_code, 0) << status.output;
  EXPECT_NE(status.output.find("e2e-gpu"), std::string::npos) << status.output;
  EXPECT_NE(status.output.find("embed"), std::string::npos) << status.output;
  auto status_json = run_command(cli + "status --json");
  EXPECT_EQ(status_json.exit_code, 0);
  EXPECT_TRUE(json::parse(status_json.output, nullptr, false).is_object()) << status_json.output;
  auto refused = run_command(cli + "request nope");
  EXPECT_EQ(refused.exit_code, 1) << refused.output;
  EXPECT_NE(refused.output.find("nope"), std::string::npos) << refused.output;

  EXPECT_EQ(run_command(cli + "service stop embed").exit_code, 0);
  EXPECT_EQ(service_state(d, "embed"), "stopped");
  EXPECT_EQ(run_command(cli + "service start embed").exit_code, 0);
  EXPECT_EQ(service_state(d, "embed"), "ready");
  EXPECT_EQ(run_command(cli + "service sleep embed").exit_code, 1) << "embed cannot sleep";
  auto unit = run_command(cli + "service unit embed");
  EXPECT_EQ(unit.exit_code, 0);
  EXPECT_NE(unit.output.find("[Service]"), std::string::npos) << unit.output;

  auto plan = run_command(cli + "plan big");
  EXPECT_EQ(plan.exit_code, 0) << plan.output;
  EXPECT_NE(plan.output.find("big"), std::string::npos) << plan.output;
  auto mode = run_command(cli + "mode switch pair");
  EXPECT_EQ(mode.exit_code, 0) << mode.output;
  EXPECT_EQ(service_state(d, "chat"), "ready");
  EXPECT_EQ(run_command(cli + "mode switch nope").exit_code, 1);
  auto modes = run_command(cli + "mode list");
  EXPECT_EQ(modes.exit_code, 0);
  EXPECT_NE(modes.output.find("pair"), std::string::npos) << modes.output;
  EXPECT_EQ(run_command(cli + "reload").exit_code, 0);
  EXPECT_EQ(run_command(cli + "frobnicate").exit_code, 2);
  const int dead_port = free_port();
  EXPECT_EQ(run_command(std::string(kGpumodBin) + " --url http://127.0.0.1:" + std::to_string(dead_port) +
                        " status")
                .exit_code,
            3);
  auto from_env = run_command("GPUMOD_URL=" + d.url() + " " + kGpumodBin + " service list");
  EXPECT_EQ(from_env.exit_code, 0) << from_env.output;
  EXPECT_NE(from_env.output.find("chat"), std::string::npos) << from_env.output;
}

// No input is a 500: invalid UTF-8 in a body, a path, a query or a header, sent to every
// endpoint that takes one, gets a 400 whose JSON error says what is wrong (and parses: any
// input it echoes is escaped). Sent raw, as an attacker would, not through a client that might
// encode it.
TEST_F(Endpoints, InvalidUtf8AnywhereIs400WithAReadableErrorNeverA500) {
  Daemon d(config_dir(), state_dir());
  ASSERT_TRUE(d.started());
  auto exchange = [&](const std::string& method, const std::string& target, const std::string& extra_headers,
                      const std::string& body) {
    gpumod::testing::Raw c(d.port());
    const std::string wire = method + " " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\n" + extra_headers +
                             "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
    EXPECT_TRUE(c.send(wire));
    return c.reply();
  };
  const std::string bad = "\xff\xfe";
  struct Case {
    std::string method, target, headers, body;
  };
  const std::vector<Case> cases = {
      {"POST", "/request", "", "{\"model\":\"" + bad + "\"}"},
      {"POST", "/request", "", "{\"model\":\"chat\",\"" + bad + "\":1}"},
      {"POST", "/request", "", "{\"model\":\"chat\"}" + bad},
      {"POST", "/v1/chat/completions", "",
       "{\"model\":\"chat\",\"messages\":[{\"role\":\"user\",\"content\":\"" + bad + "\"}]}"},
      {"POST", "/v1/completions", "", "{\"model\":\"chat\",\"prompt\":\"" + bad + "\"}"},
      {"POST", "/v1/embeddings", "", "{\"model\":\"embed\",\"input\":\"" + bad + "\"}"},
      {"POST", "/v1/chat/completions", "", "{\"model\":\"" + bad + "\"}"},
      {"GET", "/requests/%ff%fe", "", ""},
      {"DELETE", "/requests/%ff%fe", "", ""},
      {"GET", "/services/%ff%fe", "", ""},
      {"GET", "/services/%ff%fe/unit", "", ""},
      {"POST", "/services/%ff%fe/start", "", ""},
      {"POST", "/services/%ff%fe/stop", "", ""},
      {"POST", "/services/%ff%fe/sleep", "", ""},
      {"POST", "/services/%ff%fe/wake", "", ""},
      {"POST", "/modes/%ff%fe/switch", "", ""},
      {"GET", "/plan?model=%ff%fe", "", ""},
      {"GET", "/status", "X-Request-Id: " + bad + "\r\n", ""},
      {"GET", "/status", "Authorization: Bearer " + bad + "\r\n", ""},
      {"POST", "/v1/chat/completions", "Accept: " + bad + "\r\n", "{\"model\":\"chat\"}"},
      {"GET", "/services/" + bad, "", ""},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.method + " " + c.target + " " + c.headers);
    auto r = exchange(c.method, c.target, c.headers, c.body);
    ASSERT_TRUE(r) << "no answer";
    EXPECT_EQ(r->status, 400) << r->body;
    const auto j = json::parse(r->body, nullptr, false);
    ASSERT_TRUE(j.is_object()) << r->body;
    const std::string message = j["error"].value("message", "");
    EXPECT_TRUE(message.find("UTF-8") != std::string::npos ||
                message.find("characters outside") != std::string::npos ||
                message.find("non-ASCII") != std::string::npos)
        << message;
  }
  // A valid but unusual name is echoed back escaped, and the daemon is still fine.
  auto accented = exchange("GET", "/services/caf%C3%A9%22%5C", "", "");
  ASSERT_TRUE(accented);
  EXPECT_EQ(accented->status, 400) << accented->body;
  EXPECT_TRUE(json::parse(accented->body, nullptr, false).is_object()) << accented->body;
  EXPECT_EQ(d.get("/healthz").status, 200);
  EXPECT_EQ(d.log().find("-> 500"), std::string::npos) << d.log();
}

// A body over max_body_bytes (8 MiB by default) gets a 413 that the client can read, whichever
// way it sends: curl with and without "Expect: 100-continue", Python's http.client (which writes
// all 20 MB before it reads) and Node's fetch. The daemon reads and drops the rest of the body
// before it closes, so the close is not a reset that destroys the answer.
TEST_F(Endpoints, AnOversizedBodyGetsA413ThatEveryClientReads) {
  Daemon d(config_dir(), state_dir());
  ASSERT_TRUE(d.started());
  constexpr std::size_t kSize = std::size_t{20} * 1000 * 1000;
  const fs::path big = dir_.path() / "big.json";
  write_file(big, std::string(kSize, 'x'));
  const std::string url = d.url() + "/request";
  const std::string clients = std::string(GPUMOD_SOURCE_DIR) + "/tests/e2e/clients/";
  const std::vector<std::pair<std::string, std::string>> runs = {
      {"curl (Expect: 100-continue)",
       "curl -s -o /dev/null -w '%{http_code}' --data-binary @" + big.string() + " " + url},
      {"curl (no Expect)",
       "curl -s -o /dev/null -w '%{http_code}' -H 'Expect:' --data-binary @" + big.string() + " " + url},
      {"python http.client", "python3 " + clients + "post_big_body.py " + url + " " + std::to_string(kSize)},
      {"node fetch", "node " + clients + "post_big_body.mjs " + url + " " + std::to_string(kSize)},
  };
  for (const auto& [client, command] : runs) {
    for (int round = 0; round < 3; ++round) {
      // The status is the last line (Node 18 may print an ExperimentalWarning about fetch first).
      std::string out = run_command(command).output;
      while (!out.empty() && out.back() == '\n') out.pop_back();
      const std::string status = out.substr(out.rfind('\n') == std::string::npos ? 0 : out.rfind('\n') + 1);
      EXPECT_EQ(status, "413") << client << " round " << round << ": " << out;
    }
  }
  EXPECT_EQ(d.get("/healthz").status, 200);
}

}  // namespace
}  // namespace gpumod::e2e
