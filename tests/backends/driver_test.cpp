// The llama.cpp, vLLM and generic drivers against real gpumod-test-engine processes.
#include <gtest/gtest.h>

#include <httplib.h>

#include "backends/driver.hpp"
#include "tests/backends/engine_harness.hpp"

namespace gpumod::backends {
namespace {

using gpumod::testing::EngineProcess;
using gpumod::testing::eventually;
using gpumod::testing::free_port;
using gpumod::testing::kMiB;
using gpumod::testing::read_charge;
using gpumod::testing::TempDir;
using std::chrono::milliseconds;
using namespace std::chrono_literals;

constexpr milliseconds kHttpTimeout{2000};

struct Fixture {
  TempDir dir;
  int port = free_port();
  std::filesystem::path sim() const { return dir.path() / "sim"; }
  std::filesystem::path log() const { return dir.path() / "engine.log"; }
};

config::Preset preset(const std::string& id, config::Driver driver, int port) {
  config::Preset p;
  p.id = id;
  p.driver = driver;
  p.port = port;
  p.model_id = id;
  p.startup_timeout = std::chrono::seconds(20);
  return p;
}

bool health_is(Driver& d, Health h) {
  return d.health().health == h;
}

TEST(LlamaCppDriver, ReportsLoadingWhileTheModelLoadsThenReady) {
  Fixture f;
  EngineProcess engine({"--port", std::to_string(f.port), "--protocol", "llamacpp", "--model", "coder",
                        "--vram-mb", "300", "--load-ms", "600"},
                       f.sim(), f.log());
  auto driver = make_driver(preset("coder", config::Driver::llamacpp, f.port), kHttpTimeout);
  ASSERT_STREQ(driver->kind(), "llamacpp");
  // Binds at once and answers 503 while loading.
  ASSERT_TRUE(eventually([&] { return health_is(*driver, Health::loading); }));
  ASSERT_TRUE(eventually([&] { return health_is(*driver, Health::ready); }));
  EXPECT_EQ(read_charge(f.sim(), engine.pid()), 300 * kMiB);
  auto sleeping = driver->is_sleeping();
  ASSERT_TRUE(sleeping.ok()) << sleeping.error();
  EXPECT_FALSE(*sleeping);
  auto slept = driver->sleep();
  ASSERT_FALSE(slept.ok());
  EXPECT_NE(slept.error().find("coder"), std::string::npos) << slept.error();
}

TEST(LlamaCppDriver, DownWhenNothingListens) {
  const int port = free_port();
  auto driver = make_driver(preset("nobody", config::Driver::llamacpp, port), kHttpTimeout);
  EXPECT_EQ(driver->health().health, Health::down);
}

TEST(LlamaCppDriver, RouterActivatesSleepsByUnloadingAndWakes) {
  Fixture f;
  EngineProcess engine({"--port", std::to_string(f.port), "--protocol", "router", "--models",
                        "qwen3-coder,nemotron", "--vram-mb", "400", "--load-ms", "200"},
                       f.sim(), f.log());
  auto p = preset("qwen3-coder", config::Driver::llamacpp, f.port);
  p.models = {"qwen3-coder", "nemotron"};
  p.supports_sleep = true;
  p.sleep_mode = config::SleepMode::router;
  auto driver = make_driver(p, kHttpTimeout);
  ASSERT_STREQ(driver->kind(), "llamacpp-router");
  ASSERT_TRUE(eventually([&] { return health_is(*driver, Health::ready); }));

  auto activated = driver->activate(10s);
  ASSERT_TRUE(activated.ok()) << activated.error();
  auto models = driver->list_models();
  ASSERT_TRUE(models.ok()) << models.error();
  ASSERT_EQ(models->size(), 2U);
  for (const auto& m : *models) EXPECT_EQ(m.status, m.id == "qwen3-coder" ? "loaded" : "unloaded") << m.id;
  EXPECT_EQ(read_charge(f.sim(), engine.pid()), 400 * kMiB);
  EXPECT_FALSE(*driver->is_sleeping());

  auto slept = driver->sleep();
  ASSERT_TRUE(slept.ok()) << slept.error();
  EXPECT_TRUE(*driver->is_sleeping());
  EXPECT_EQ(read_charge(f.sim(), engine.pid()), 0);

  auto woke = driver->wake();
  ASSERT_TRUE(woke.ok()) << woke.error();
  EXPECT_FALSE(*driver->is_sleeping());
  EXPECT_EQ(read_charge(f.sim(), engine.pid()), 400 * kMiB);

  // Direct load / unload of another model.
  ASSERT_TRUE(driver->load_model("nemotron").ok());
  ASSERT_TRUE(eventually([&] {
    auto ms = driver->list_models();
    return ms.ok() && ms->at(0).id == "nemotron" && ms->at(0).status == "loaded";
  }));
  EXPECT_EQ(read_charge(f.sim(), engine.pid()), 800 * kMiB);
  ASSERT_TRUE(driver->unload_model("nemotron").ok());
  EXPECT_EQ(read_charge(f.sim(), engine.pid()), 400 * kMiB);

  auto unknown = driver->load_model("no-such-model");
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.error().find("404"), std::string::npos) << unknown.error();
}

TEST(LlamaCppDriver, RouterLoadFailureIsReported) {
  Fixture f;
  EngineProcess engine({"--port", std::to_string(f.port), "--protocol", "router", "--models", "broken",
                        "--vram-mb", "100", "--load-ms", "200", "--crash-on-load"},
                       f.sim(), f.log());
  auto p = preset("broken", config::Driver::llamacpp, f.port);
  p.models = {"broken"};
  auto driver = make_driver(p, kHttpTimeout);
  ASSERT_TRUE(eventually([&] { return health_is(*driver, Health::ready); }));
  auto activated = driver->activate(10s);
  ASSERT_FALSE(activated.ok());
  EXPECT_NE(activated.error().find("failed to load"), std::string::npos) << activated.error();
}

TEST(LlamaCppDriver, CrashWhileLoadingEndsDown) {
  Fixture f;
  EngineProcess engine({"--port", std::to_string(f.port), "--protocol", "llamacpp", "--model", "m",
                        "--vram-mb", "100", "--load-ms", "400", "--crash-on-load"},
                       f.sim(), f.log());
  auto driver = make_driver(preset("m", config::Driver::llamacpp, f.port), kHttpTimeout);
  const auto code = engine.wait_exit();
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, 1);
  EXPECT_NE(engine.log().find("crashed while loading"), std::string::npos) << engine.log();
  EXPECT_EQ(driver->health().health, Health::down);
}

TEST(LlamaCppDriver, NeverHealthyStaysLoading) {
  Fixture f;
  EngineProcess engine({"--port", std::to_string(f.port), "--protocol", "llamacpp", "--model", "m",
                        "--vram-mb", "100", "--load-ms", "50", "--never-healthy"},
                       f.sim(), f.log());
  auto driver = make_driver(preset("m", config::Driver::llamacpp, f.port), kHttpTimeout);
  ASSERT_TRUE(eventually([&] { return engine.log().find("never healthy") != std::string::npos; }));
  for (int i = 0; i < 5; ++i) EXPECT_EQ(driver->health().health, Health::loading);
}

TEST(VllmDriver, ConnectionRefusedWhileStartingThenReady) {
  Fixture f;
  EngineProcess engine({"--port", std::to_string(f.port), "--protocol", "vllm", "--model", "emb", "--vram-mb",
                        "500", "--load-ms", "500"},
                       f.sim(), f.log());
  auto driver = make_driver(preset("emb", config::Driver::vllm, f.port), kHttpTimeout);
  ASSERT_STREQ(driver->kind(), "vllm");
  EXPECT_EQ(driver->health().health, Health::down);  // not bound during the 500 ms load
  ASSERT_TRUE(eventually([&] { return health_is(*driver, Health::ready); }));
  EXPECT_EQ(read_charge(f.sim(), engine.pid()), 500 * kMiB);
}

TEST(VllmDriver, SleepLevel1KeepsResidualAndWakeRestores) {
  Fixture f;
  EngineProcess engine(
      {"--port", std::to_string(f.port), "--protocol", "vllm", "--model", "devstral", "--vram-mb", "1000",
       "--load-ms", "50", "--sleep-residual-mb", "100", "--wake-ms", "50"},
      f.sim(), f.log());
  auto p = preset("devstral", config::Driver::vllm, f.port);
  p.supports_sleep = true;
  p.sleep_mode = config::SleepMode::l1;
  auto driver = make_driver(p, kHttpTimeout);
  ASSERT_TRUE(eventually([&] { return health_is(*driver, Health::ready); }));
  EXPECT_FALSE(*driver->is_sleeping());

  auto slept = driver->sleep();
  ASSERT_TRUE(slept.ok()) << slept.error();
  EXPECT_TRUE(*driver->is_sleeping());
  EXPECT_EQ(read_charge(f.sim(), engine.pid()), 100 * kMiB);
  EXPECT_EQ(driver->health().health, Health::ready);  // a sleeping vLLM still answers /health

  auto woke = driver->wake();
  ASSERT_TRUE(woke.ok()) << woke.error();
  EXPECT_FALSE(*driver->is_sleeping());
  EXPECT_EQ(read_charge(f.sim(), engine.pid()), 1000 * kMiB);
}

TEST(VllmDriver, SleepLevel2WakeReloadsWeights) {
  Fixture f;
  EngineProcess engine({"--port", std::to_string(f.port), "--protocol", "vllm", "--model", "emb2",
                        "--vram-mb", "1000", "--load-ms", "50", "--sleep-residual-mb", "20"},
                       f.sim(), f.log());
  auto p = preset("emb2", config::Driver::vllm, f.port);
  p.supports_sleep = true;
  p.sleep_mode = config::SleepMode::l2;
  auto driver = make_driver(p, kHttpTimeout);
  ASSERT_TRUE(eventually([&] { return health_is(*driver, Health::ready); }));
  ASSERT_TRUE(driver->sleep().ok());
  EXPECT_EQ(read_charge(f.sim(), engine.pid()), 20 * kMiB);
  auto woke = driver->wake();
  ASSERT_TRUE(woke.ok()) << woke.error();
  EXPECT_FALSE(*driver->is_sleeping());
  EXPECT_EQ(read_charge(f.sim(), engine.pid()), 1000 * kMiB);
  // The engine answers with a marker when weights were woken but never reloaded.
  httplib::Client client("127.0.0.1", f.port);
  auto res = client.Post("/v1/completions", R"({"model":"emb2","prompt":"after wake"})", "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->body.find("weights-not-reloaded"), std::string::npos) << res->body;
}

TEST(VllmDriver, WakeFailureNamesServiceUrlAndStatus) {
  Fixture f;
  EngineProcess engine({"--port", std::to_string(f.port), "--protocol", "vllm", "--model", "v", "--vram-mb",
                        "100", "--load-ms", "50", "--fail-wake"},
                       f.sim(), f.log());
  auto p = preset("v", config::Driver::vllm, f.port);
  p.sleep_mode = config::SleepMode::l1;
  auto driver = make_driver(p, kHttpTimeout);
  ASSERT_TRUE(eventually([&] { return health_is(*driver, Health::ready); }));
  ASSERT_TRUE(driver->sleep().ok());
  auto woke = driver->wake();
  ASSERT_FALSE(woke.ok());
  EXPECT_NE(woke.error().find("v:"), std::string::npos) << woke.error();
  EXPECT_NE(woke.error().find("/wake_up"), std::string::npos) << woke.error();
  EXPECT_NE(woke.error().find("HTTP 500"), std::string::npos) << woke.error();
  EXPECT_NE(woke.error().find("fail-wake"), std::string::npos) << woke.error();
}

TEST(VllmDriver, PreflightRefusesWhenFreeMemoryIsBelowUtilisationTimesTotal) {
  auto p = preset("vllm-embedding-code", config::Driver::vllm, 8210);
  constexpr std::int64_t kGiB = 1024LL * 1024 * 1024;
  const auto total = static_cast<std::int64_t>(23.52 * kGiB);
  const auto free = static_cast<std::int64_t>(0.82 * kGiB);
  auto driver = make_driver(p);
  auto refused = driver->preflight(free, total);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.error().find("0.82"), std::string::npos) << refused.error();
  EXPECT_NE(refused.error().find("23.52"), std::string::npos) << refused.error();
  EXPECT_NE(refused.error().find("0.90"), std::string::npos) << refused.error();
  EXPECT_TRUE(driver->preflight(total, total).ok());

  p.unit_vars["gpu_mem_util"] = "0.1";
  EXPECT_DOUBLE_EQ(vllm_gpu_memory_utilization(p), 0.1);
  EXPECT_TRUE(make_driver(p)->preflight(3 * kGiB, total).ok());
  EXPECT_FALSE(make_driver(p)->preflight(2 * kGiB, total).ok());
}

TEST(GenericDriver, HealthAndMissingSleepUrl) {
  Fixture f;
  EngineProcess engine({"--port", std::to_string(f.port), "--protocol", "generic", "--model", "whisper",
                        "--vram-mb", "100", "--load-ms", "50"},
                       f.sim(), f.log());
  auto p = preset("whisper", config::Driver::fastapi, f.port);
  auto driver = make_driver(p, kHttpTimeout);
  ASSERT_STREQ(driver->kind(), "generic");
  ASSERT_TRUE(eventually([&] { return health_is(*driver, Health::ready); }));
  auto slept = driver->sleep();
  ASSERT_FALSE(slept.ok());
  EXPECT_NE(slept.error().find("sleep_url"), std::string::npos) << slept.error();

  // A sleep URL the server does not serve: the error names the URL and the status.
  p.sleep_url = "http://127.0.0.1:" + std::to_string(f.port) + "/no-sleep-here";
  auto with_url = make_driver(p, kHttpTimeout);
  slept = with_url->sleep();
  ASSERT_FALSE(slept.ok());
  EXPECT_NE(slept.error().find("/no-sleep-here"), std::string::npos) << slept.error();
  EXPECT_NE(slept.error().find("HTTP 404"), std::string::npos) << slept.error();

  // An absolute health URL works too.
  p.health_endpoint = "http://127.0.0.1:" + std::to_string(f.port) + "/v1/models";
  EXPECT_EQ(make_driver(p, kHttpTimeout)->health().health, Health::ready);
}

}  // namespace
}  // namespace gpumod::backends
