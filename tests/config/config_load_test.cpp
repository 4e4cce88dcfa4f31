// Good paths: the predecessor's files load as they are, directory trees, overrides, defaults,
// environment expansion, warnings, model resolution, and the small text parsers.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "config/config.hpp"
#include "config/unit_vars.hpp"
#include "config_test_support.hpp"

namespace gpumod::config::test {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

// The predecessor's QA setup on a 24 GB RTX 4090, written the way its preset files were.
void write_predecessor_setup(const TempDir& dir) {
  dir.write("presets/llamacpp/qwen3-coder.yaml", R"(id: qwen3-coder
name: Qwen3 Coder 30B A3B (router)
driver: llamacpp
port: 7070
vram_mb: 20000
context_size: 65536
kv_cache_per_1k: 96.5
model_id: qwen3-coder
model_path: /models/Qwen3-Coder-30B-A3B-Instruct-Q4_K_M.gguf
health_endpoint: /health
startup_timeout: 180
supports_sleep: true
sleep_mode: router
unit_template: llama-router@.service
unit_vars:
  models_dir: /models
  models_max: 1
  n_gpu_layers: 99
  ctx_size: 65536
  jinja: true
  flash_attn: on
)");
  dir.write("presets/llamacpp/nemotron-3-nano.yaml", R"(id: nemotron-3-nano
name: Nemotron 3 Nano
driver: llamacpp
port: 7070
vram_mb: 20000
context_size: 32768
model_id: nemotron-3-nano
model_path: /models/Nemotron-3-Nano-30B-A3B-Q4_K_M.gguf
health_endpoint: /health
startup_timeout: 120
supports_sleep: false
sleep_mode: none
unit_template: llama-router@.service
unit_vars:
  models_dir: /models
  ctx_size: 32768
)");
  dir.write("presets/vllm/vllm-embedding-code.yaml", R"(id: vllm-embedding-code
name: Code embeddings
driver: vllm
port: 8210
vram_mb: 2500
model_id: nomic-ai/nomic-embed-code
health_endpoint: /health
startup_timeout: 120
supports_sleep: true
sleep_mode: l1
unit_template: vllm@.service
unit_vars:
  gpu_mem_util: 0.1
  max_model_len: 8192
  hf_overrides: '{"is_causal": false}'
  runner: pooling
  extra_args: "--trust-remote-code"
)");
  dir.write("presets/vllm/vllm-embedding.yaml", R"(id: vllm-embedding
name: Text embeddings
driver: vllm
port: 8200
vram_mb: 5000
model_id: BAAI/bge-m3
startup_timeout: 120
supports_sleep: false
sleep_mode: none
unit_template: vllm@.service
unit_vars:
  gpu_mem_util: 0.2
  max_model_len: 8192
)");
  dir.write("presets/vllm/devstral-small-2.yaml", R"(id: devstral-small-2
name: Devstral Small 2
driver: vllm
port: 8000
vram_mb: 15000
model_id: mistralai/Devstral-Small-2-24B-Instruct-2512
startup_timeout: 180
supports_sleep: true
sleep_mode: l1
unit_template: vllm@.service
unit_vars:
  gpu_mem_util: 0.62
  max_model_len: 32768
  max_num_seqs: 4
  enforce_eager: false
)");
  dir.write("presets/fastapi/kokoro.yaml", R"(id: kokoro-tts
name: Kokoro TTS
driver: fastapi
port: 8880
vram_mb: 1200
model_path: /models/kokoro
health_endpoint: /health
startup_timeout: 60
supports_sleep: false
sleep_mode: none
unit_template: fastapi@.service
unit_vars:
  app_module: kokoro_server:app
  working_dir: /srv/kokoro
)");
  dir.write("modes/blank.yaml",
            "id: blank\nname: Blank\ndescription: embeddings only\nservices:\n  - vllm-embedding-code\n");
  dir.write(
      "modes/code.yaml",
      "id: code\nname: Code\ndescription: coding\nservices:\n  - vllm-embedding-code\n  - qwen3-coder\n");
  dir.write(
      "modes/rag.yaml",
      "id: rag\nname: RAG\ndescription: retrieval\nservices:\n  - vllm-embedding-code\n  - vllm-embedding\n");
  dir.write("modes/nemotron.yaml",
            "id: nemotron\nname: Nemotron\ndescription: nemotron\nservices:\n  - vllm-embedding-code\n  - "
            "nemotron-3-nano\n");
}

TEST(ConfigLoad, PredecessorFilesLoadAsTheyAre) {
  TempDir dir;
  write_predecessor_setup(dir);
  const LoadResult r = load(dir.path());
  ASSERT_TRUE(r.ok()) << all_text(r);
  const Config& c = *r.config;
  EXPECT_TRUE(r.diagnostics.empty()) << all_text(r);  // every unit_var is one a renderer reads
  EXPECT_EQ(c.presets.size(), 6U);
  EXPECT_EQ(c.modes.size(), 4U);
  EXPECT_EQ(c.source, dir.path().string());

  const Preset* q = c.find_preset("qwen3-coder");
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->driver, Driver::llamacpp);
  EXPECT_EQ(q->port, 7070);
  EXPECT_EQ(q->vram_mb, 20000);
  EXPECT_EQ(q->context_size, 65536);
  EXPECT_DOUBLE_EQ(q->kv_cache_per_1k.value_or(0), 96.5);
  EXPECT_EQ(q->model_path, "/models/Qwen3-Coder-30B-A3B-Instruct-Q4_K_M.gguf");
  EXPECT_EQ(q->startup_timeout, seconds(180));
  EXPECT_TRUE(q->can_sleep());
  EXPECT_EQ(q->sleep_mode, SleepMode::router);
  EXPECT_EQ(q->unit_template, "llama-router@.service");
  EXPECT_EQ(q->unit_vars.at("models_max"), "1");
  EXPECT_EQ(q->unit_vars.at("flash_attn"), "true");  // YAML "on" is a boolean
  EXPECT_EQ(q->loc.file, (dir.path() / "presets/llamacpp/qwen3-coder.yaml").string());
  EXPECT_EQ(q->loc.line, 1);
  EXPECT_EQ(q->key_locs.at("port").line, 4);
  EXPECT_EQ(q->key_locs.at("unit_vars.ctx_size").line, 19);
  // gpumod's own keys take their defaults
  EXPECT_EQ(q->runner, RunnerKind::process);
  EXPECT_EQ(q->priority, 50);
  EXPECT_FALSE(q->pinned);
  EXPECT_TRUE(q->cmd.empty());

  const Preset* e = c.find_preset("vllm-embedding-code");
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->unit_vars.at("gpu_mem_util"), "0.1");
  EXPECT_EQ(e->unit_vars.at("hf_overrides"), "{\"is_causal\": false}");
  EXPECT_EQ(e->sleep_mode, SleepMode::l1);
  EXPECT_FALSE(c.find_preset("nemotron-3-nano")->can_sleep());

  const Mode* code = c.find_mode("code");
  ASSERT_NE(code, nullptr);
  EXPECT_EQ(code->services, (std::vector<std::string>{"vllm-embedding-code", "qwen3-coder"}));
  EXPECT_EQ(code->description, "coding");
  EXPECT_EQ(c.find_mode("missing"), nullptr);
}

TEST(ConfigLoad, ServicesSharingAPortInDifferentModesAreAllowed) {
  TempDir dir;
  write_predecessor_setup(dir);  // qwen3-coder and nemotron-3-nano both on 7070, never in one mode
  const LoadResult r = load(dir.path());
  ASSERT_TRUE(r.ok()) << all_text(r);
  EXPECT_EQ(r.config->find_preset("qwen3-coder")->port, r.config->find_preset("nemotron-3-nano")->port);
}

TEST(ConfigLoad, PresetTreeIsLoadedAtAnyDepthInPathOrder) {
  TempDir dir;
  dir.write("presets/top.yaml", "id: top\ndriver: generic\nport: 9001\nvram_mb: 10\ncmd: [/bin/true]\n");
  dir.write("presets/a/b/c/deep.yml",
            "id: deep\ndriver: generic\nport: 9002\nvram_mb: 10\ncmd: [/bin/true]\n");
  dir.write("presets/a/mid.yaml", "id: mid\ndriver: generic\nport: 9003\nvram_mb: 10\ncmd: [/bin/true]\n");
  dir.write("presets/a/notes.txt", "not yaml: [");
  dir.write("presets/.drafts/broken.yaml", "id: [");  // hidden folders are skipped
  const LoadResult r = load(dir.path());
  ASSERT_TRUE(r.ok()) << all_text(r);
  std::vector<std::string> ids;
  for (const auto& p : r.config->presets) ids.push_back(p.id);
  EXPECT_EQ(ids, (std::vector<std::string>{"deep", "mid", "top"}));
  EXPECT_TRUE(r.config->modes.empty());
}

TEST(ConfigLoad, DaemonFileAndCommandLineOverrides) {
  TempDir dir;
  dir.write("gpumod.yaml", R"(listen: "127.0.0.1:9000"
state_dir: state
systemd_bus: system
gpus:
  probe: sim
  use: [1]
  sim:
    - {name: small, memory_mb: 8192}
    - {name: big, memory_mb: 49152}
  sim_release_lag: 250ms
policy:
  headroom_mb: 1024
  vram_release_timeout: 2m
  vram_poll_interval: 10ms
  health_poll_interval: 0.1
  idle_poll_interval: 3s
  stop_grace: 15s
  queue_max: 64
  default_request_timeout: 1m30s
  aging_interval: 45s
  default_keep_alive: 5m
  max_body_bytes: 1048576
  stall_timeout: 30s
)");
  dir.write("presets/a.yaml", "id: a\ndriver: vllm\nport: 8000\nvram_mb: 40000\n");
  const LoadResult r = load(dir.path());
  ASSERT_TRUE(r.ok()) << all_text(r);
  const DaemonSettings& d = r.config->daemon;
  EXPECT_EQ(d.listen_host, "127.0.0.1");
  EXPECT_EQ(d.listen_port, 9000);
  EXPECT_EQ(d.state_dir, dir.path() / "state");  // relative to the daemon file
  EXPECT_EQ(d.log_dir, dir.path() / "state" / "logs");
  EXPECT_EQ(d.systemd_bus, "system");
  EXPECT_EQ(d.probe, ProbeKind::sim);
  EXPECT_EQ(d.gpus, (std::vector<int>{1}));
  ASSERT_EQ(d.sim_gpus.size(), 2U);
  EXPECT_EQ(d.sim_gpus[1].name, "big");
  EXPECT_EQ(d.sim_gpus[1].memory_mb, 49152);
  EXPECT_EQ(d.sim_release_lag, milliseconds(250));
  EXPECT_EQ(d.policy.headroom_mb, 1024);
  EXPECT_EQ(d.policy.vram_release_timeout, milliseconds(120000));
  EXPECT_EQ(d.policy.vram_poll_interval, milliseconds(10));
  EXPECT_EQ(d.policy.health_poll_interval, milliseconds(100));
  EXPECT_EQ(d.policy.idle_poll_interval, milliseconds(3000));
  EXPECT_EQ(d.policy.stop_grace, milliseconds(15000));
  EXPECT_EQ(d.policy.queue_max, 64U);
  EXPECT_EQ(d.policy.default_request_timeout, milliseconds(90000));
  EXPECT_EQ(d.policy.aging_interval, milliseconds(45000));
  EXPECT_EQ(d.policy.default_keep_alive, seconds(300));
  EXPECT_EQ(d.policy.max_body_bytes, 1048576);
  EXPECT_EQ(d.policy.stall_timeout, milliseconds(30000));
  // A 40000 MB service fits: it may use GPU 1 (the 48 GiB one) only.

  LoadOptions opts;
  opts.listen = "127.0.0.1:0";
  opts.state_dir = dir.path() / "elsewhere";
  const LoadResult o = load(dir.path(), opts);
  ASSERT_TRUE(o.ok()) << all_text(o);
  EXPECT_EQ(o.config->daemon.listen_port, 0);  // any free port (tests)
  EXPECT_EQ(o.config->daemon.state_dir, dir.path() / "elsewhere");
  EXPECT_EQ(o.config->daemon.log_dir, dir.path() / "elsewhere" / "logs");
}

// A daemon file without a policy section gets the defaults docs/config.md states. Health is
// polled every 5 ms while a service starts or wakes: a 10 ms poll alone put a swap over the
// 20 ms scheduler-overhead target (bench/README.md "HTTP").
TEST(ConfigLoad, PolicyDefaultsAreTheDocumentedOnes) {
  const LoadResult r = load_daemon_string("listen: \"127.0.0.1:7979\"\n", "no-policy.yaml");
  ASSERT_TRUE(r.ok()) << all_text(r);
  const PolicySettings& p = r.config->daemon.policy;
  EXPECT_EQ(p.health_poll_interval, milliseconds(5));
  EXPECT_EQ(p.vram_poll_interval, milliseconds(5));
  EXPECT_EQ(p.idle_poll_interval, milliseconds(2000));
  EXPECT_EQ(p.headroom_mb, 512);
  EXPECT_EQ(p.vram_release_timeout, milliseconds(120000));
  EXPECT_EQ(p.stop_grace, milliseconds(10000));
  EXPECT_EQ(p.queue_max, 1024U);
  EXPECT_EQ(p.default_request_timeout, milliseconds(300000));
  EXPECT_EQ(p.aging_interval, milliseconds(30000));
  EXPECT_EQ(p.default_keep_alive, seconds(0));
  EXPECT_EQ(p.max_body_bytes, 8 * 1024 * 1024);
  EXPECT_EQ(p.stall_timeout, milliseconds(10000));
}

TEST(ConfigLoad, DefaultStateDirFollowsTheEnvironment) {
  TempDir dir;
  dir.write("presets/a.yaml", "id: a\ndriver: vllm\nport: 8000\nvram_mb: 100\n");
  {
    ScopedEnv s("GPUMOD_STATE_DIR", "/srv/gpumod-state");
    const LoadResult r = load(dir.path());
    ASSERT_TRUE(r.ok()) << all_text(r);
    EXPECT_EQ(r.config->daemon.state_dir, "/srv/gpumod-state");
    EXPECT_EQ(r.config->daemon.log_dir, "/srv/gpumod-state/logs");
  }
  ScopedEnv no_state("GPUMOD_STATE_DIR", std::nullopt);
  {
    ScopedEnv x("XDG_STATE_HOME", "/home/tester/.state");
    const LoadResult r = load(dir.path());
    ASSERT_TRUE(r.ok()) << all_text(r);
    EXPECT_EQ(r.config->daemon.state_dir, "/home/tester/.state/gpumod");
  }
  ScopedEnv no_xdg("XDG_STATE_HOME", std::nullopt);
  ScopedEnv home("HOME", "/home/tester");
  const LoadResult r = load(dir.path());
  ASSERT_TRUE(r.ok()) << all_text(r);
  EXPECT_EQ(r.config->daemon.state_dir, "/home/tester/.local/state/gpumod");
  EXPECT_EQ(r.config->daemon.listen_host, "127.0.0.1");
  EXPECT_EQ(r.config->daemon.listen_port, 7979);
}

TEST(ConfigLoad, EnvironmentAndBinDirExpansion) {
  ScopedEnv home("HOME", "/home/tester");
  ScopedEnv var("GPUMOD_TEST_VAR", "abc");
  TempDir dir;
  dir.write("gpumod.yaml", "state_dir: $HOME/gpumod-state\n");
  dir.write("presets/a.yaml", R"(id: a
driver: llamacpp
port: 7070
vram_mb: 100
model_path: ${HOME}/models/a.gguf
cmd: ["${GPUMOD_BIN_DIR}/gpumod-test-engine", "--dir", "$HOME", "$GPUMOD_BIN_DIRX"]
unit_vars:
  models_dir: $HOME/models
  extra_args: "--tag ${GPUMOD_TEST_VAR}-x --price $$5 --cost $ 3"
  binary: ${GPUMOD_BIN_DIR}/llama-server
  host: ~/sock
)");
  LoadOptions opts;
  opts.bin_dir = "/opt/gpumod/bin";
  const LoadResult r = load(dir.path(), opts);
  ASSERT_TRUE(r.ok()) << all_text(r);
  const Preset& p = r.config->presets.at(0);
  EXPECT_EQ(p.unit_vars.at("models_dir"), "/home/tester/models");
  EXPECT_EQ(p.unit_vars.at("extra_args"), "--tag abc-x --price $5 --cost $ 3");
  EXPECT_EQ(p.unit_vars.at("binary"), "/opt/gpumod/bin/llama-server");
  EXPECT_EQ(p.unit_vars.at("host"), "/home/tester/sock");
  EXPECT_EQ(p.model_path, "/home/tester/models/a.gguf");
  // argv has no shell: only ${GPUMOD_BIN_DIR} is replaced, "$HOME" stays as written.
  EXPECT_EQ(p.cmd, (std::vector<std::string>{"/opt/gpumod/bin/gpumod-test-engine", "--dir", "$HOME",
                                             "$GPUMOD_BIN_DIRX"}));
  EXPECT_EQ(r.config->daemon.state_dir, "/home/tester/gpumod-state");
}

TEST(ConfigLoad, BinDirComesFromTheEnvironmentWhenNotGiven) {
  ScopedEnv bin("GPUMOD_BIN_DIR", "/usr/lib/gpumod");
  const LoadResult r = load_daemon_string(
      "presets:\n  - {id: a, driver: generic, port: 9000, vram_mb: 1, cmd: [\"${GPUMOD_BIN_DIR}/engine\"]}\n",
      "inline");
  ASSERT_TRUE(r.ok()) << all_text(r);
  EXPECT_EQ(r.config->presets.at(0).cmd.at(0), "/usr/lib/gpumod/engine");
}

TEST(ConfigLoad, UnusedUnitVarIsAWarningNotAnError) {
  TempDir dir;
  dir.write("presets/a.yaml",
            "id: a\ndriver: llamacpp\nport: 7070\nvram_mb: 100\nunit_vars:\n  ctx_size: 4096\n"
            "  gpu_mem_util: 0.9\n");
  const LoadResult r = load(dir.path());
  ASSERT_TRUE(r.ok()) << all_text(r);
  ASSERT_EQ(r.diagnostics.size(), 1U) << all_text(r);
  const Diagnostic& w = r.diagnostics[0];
  EXPECT_EQ(w.severity, Diagnostic::Severity::warning);
  EXPECT_EQ(w.file, (dir.path() / "presets/a.yaml").string());
  EXPECT_EQ(w.line, 7);
  EXPECT_EQ(w.key, "unit_vars.gpu_mem_util");
  EXPECT_NE(w.message.find("not used by the llamacpp command renderer"), std::string::npos) << w.message;
  EXPECT_NE(w.str().find(":7: unit_vars.gpu_mem_util: warning: not used"), std::string::npos) << w.str();
  ASSERT_EQ(r.config->warnings.size(), 1U);
  EXPECT_EQ(r.config->presets[0].unit_vars.at("gpu_mem_util"),
            "0.9");  // kept: a renderer may still pass it on
  EXPECT_TRUE(r.error_text().empty());
}

TEST(ConfigLoad, UnitVarsScalarsBecomeTheirText) {
  const LoadResult r = load_daemon_string(R"(presets:
  - id: v
    driver: vllm
    port: 8000
    vram_mb: 100
    unit_vars:
      gpu_mem_util: 0.85
      max_model_len: 32768
      enforce_eager: yes
      dtype: "yes"
      extra_args:
)",
                                          "inline.yaml");
  ASSERT_TRUE(r.ok()) << all_text(r);
  const auto& vars = r.config->presets.at(0).unit_vars;
  EXPECT_EQ(vars.at("gpu_mem_util"), "0.85");
  EXPECT_EQ(vars.at("max_model_len"), "32768");
  EXPECT_EQ(vars.at("enforce_eager"), "true");
  EXPECT_EQ(vars.at("dtype"), "yes");  // quoted: text, not a boolean
  EXPECT_EQ(vars.at("extra_args"), "");
}

TEST(ConfigLoad, UnitVarsTableNamesEachRenderersVariables) {
  EXPECT_EQ(unit_vars_used_by(Driver::llamacpp).count("models_dir"), 1U);
  EXPECT_EQ(unit_vars_used_by(Driver::llamacpp).count("gpu_mem_util"), 0U);
  EXPECT_EQ(unit_vars_used_by(Driver::vllm).count("hf_overrides"), 1U);
  EXPECT_EQ(unit_vars_used_by(Driver::fastapi).count("app_module"), 1U);
  EXPECT_EQ(unit_vars_used_by(Driver::generic), (std::set<std::string>{"extra_args", "binary"}));
  EXPECT_EQ(unit_vars_used_by(Driver::docker), unit_vars_used_by(Driver::generic));
}

TEST(ConfigLoad, GpumodOwnPresetKeys) {
  const LoadResult r = load_daemon_string(R"(presets:
  - id: tts
    driver: fastapi
    port: 8880
    vram_mb: 1200
    runner: systemd
    unit_template: kokoro.service
    cmd: [/usr/bin/python3, -m, uvicorn, "app:app"]
    env: {HF_HOME: /srv/hf, CUDA_LAUNCH_BLOCKING: 1}
    priority: 80
    pinned: true
    keep_alive: 10m
    gpus: [0]
    aliases: [speech, kokoro]
    supports_sleep: true
    sleep_mode: l1
    sleep_vram_mb: 100
    sleep_url: /sleep
    wake_url: /wake
    startup_timeout: 1500ms
)",
                                          "inline.yaml");
  ASSERT_TRUE(r.ok()) << all_text(r);
  const Preset& p = r.config->presets.at(0);
  EXPECT_EQ(p.runner, RunnerKind::systemd);
  EXPECT_EQ(p.cmd.size(), 4U);
  EXPECT_EQ(p.env.at("CUDA_LAUNCH_BLOCKING"), "1");
  EXPECT_EQ(p.priority, 80);
  EXPECT_TRUE(p.pinned);
  EXPECT_EQ(p.keep_alive, seconds(600));
  EXPECT_EQ(p.gpus, (std::vector<int>{0}));
  EXPECT_EQ(p.aliases, (std::vector<std::string>{"speech", "kokoro"}));
  EXPECT_EQ(p.sleep_residual_mb(), 100);
  EXPECT_EQ(p.sleep_url, "/sleep");
  EXPECT_EQ(p.wake_url, "/wake");
  EXPECT_EQ(p.startup_timeout, seconds(2));  // rounded up to whole seconds
  EXPECT_EQ(p.name, "tts");                  // name defaults to the id
  EXPECT_EQ(p.key_locs.at("priority").file, "inline.yaml");
  EXPECT_EQ(p.key_locs.at("priority").line, 10);
}

TEST(ConfigLoad, SleepResidualDefaultsPerMode) {
  Preset p;
  p.vram_mb = 20000;
  p.sleep_mode = SleepMode::l1;
  EXPECT_EQ(p.sleep_residual_mb(), 2000);
  p.sleep_mode = SleepMode::l2;
  EXPECT_EQ(p.sleep_residual_mb(), 400);
  p.sleep_mode = SleepMode::router;
  EXPECT_EQ(p.sleep_residual_mb(), 400);
  p.sleep_mode = SleepMode::none;
  EXPECT_EQ(p.sleep_residual_mb(), 20000);
  p.sleep_vram_mb = 123;
  EXPECT_EQ(p.sleep_residual_mb(), 123);
}

TEST(ConfigLoad, SupportsSleepIsImpliedBySleepMode) {
  const LoadResult r = load_daemon_string(
      "presets:\n  - {id: v, driver: vllm, port: 8000, vram_mb: 100, sleep_mode: l2}\n", "inline");
  ASSERT_TRUE(r.ok()) << all_text(r);
  EXPECT_TRUE(r.config->presets[0].supports_sleep);
  EXPECT_TRUE(r.config->presets[0].can_sleep());
}

TEST(ConfigLoad, InlineListsAndNamedDirectories) {
  TempDir dir;
  dir.write("etc/gpumod.yaml", R"(presets_dir: ../my-presets
modes_dir: ../my-modes
presets:
  - id: inline
    driver: generic
    port: 9100
    vram_mb: 10
    cmd: [/bin/true]
modes:
  - id: both
    services: [inline, filed]
)");
  dir.write("my-presets/filed.yaml",
            "id: filed\ndriver: generic\nport: 9101\nvram_mb: 10\ncmd: [/bin/true]\n");
  dir.write("my-modes/only.yaml", "id: only\nservices: [filed]\n");
  const LoadResult r = load(dir.path() / "etc" / "gpumod.yaml");
  ASSERT_TRUE(r.ok()) << all_text(r);
  ASSERT_EQ(r.config->presets.size(), 2U);
  EXPECT_EQ(r.config->presets[0].id, "inline");
  EXPECT_EQ(r.config->presets[1].id, "filed");
  EXPECT_EQ(r.config->presets[1].loc.file, (dir.path() / "my-presets/filed.yaml").string());
  ASSERT_EQ(r.config->modes.size(), 2U);
  EXPECT_EQ(r.config->find_mode("both")->services, (std::vector<std::string>{"inline", "filed"}));
  EXPECT_EQ(r.config->find_mode("both")->name, "both");
}

TEST(ConfigLoad, DirectoryAndItsDaemonFileLoadTheSame) {
  TempDir dir;
  write_predecessor_setup(dir);
  dir.write("gpumod.yaml", "listen: \"127.0.0.1:7980\"\n");
  const LoadResult a = load(dir.path());
  const LoadResult b = load(dir.path() / "gpumod.yaml");
  ASSERT_TRUE(a.ok()) << all_text(a);
  ASSERT_TRUE(b.ok()) << all_text(b);
  EXPECT_EQ(a.config->presets.size(), b.config->presets.size());
  EXPECT_EQ(a.config->modes.size(), b.config->modes.size());
  EXPECT_EQ(b.config->daemon.listen_port, 7980);
}

TEST(ConfigLoad, ApiTokenFileAllowsAPublicListenAddress) {
  TempDir dir;
  dir.write("token", "  s3cret-token \n");
  dir.write("gpumod.yaml", "listen: \"0.0.0.0:7979\"\napi_token_file: token\n");
  dir.write("presets/a.yaml", "id: a\ndriver: vllm\nport: 8000\nvram_mb: 100\n");
  const LoadResult r = load(dir.path());
  ASSERT_TRUE(r.ok()) << all_text(r);
  EXPECT_EQ(r.config->daemon.api_token, "s3cret-token");
  EXPECT_EQ(r.config->daemon.listen_host, "0.0.0.0");
}

TEST(ConfigLoad, SizeChecksOnlyAgainstKnownSimulatedGpus) {
  // Exactly what a 24 GiB GPU offers after the default 512 MB headroom fits.
  const std::string sim = "gpus:\n  probe: sim\n  sim: [{memory_mb: 24576}]\n";
  EXPECT_TRUE(
      load_daemon_string(sim + "presets:\n  - {id: a, driver: vllm, port: 8000, vram_mb: 24064}\n", "x")
          .ok());
  EXPECT_FALSE(
      load_daemon_string(sim + "presets:\n  - {id: a, driver: vllm, port: 8000, vram_mb: 24065}\n", "x")
          .ok());
  // With NVML (or auto without a sim list) the real cards are only known at run time.
  EXPECT_TRUE(
      load_daemon_string(
          "gpus: {probe: nvml}\npresets:\n  - {id: a, driver: vllm, port: 8000, vram_mb: 80000}\n", "x")
          .ok());
  EXPECT_TRUE(
      load_daemon_string("presets:\n  - {id: a, driver: vllm, port: 8000, vram_mb: 80000}\n", "x").ok());
}

TEST(ConfigLoad, ModeLargerThanAllGpusIsAWarning) {
  const LoadResult r = load_daemon_string(R"(gpus: {probe: sim, sim: [{memory_mb: 24576}]}
presets:
  - {id: a, driver: vllm, port: 8000, vram_mb: 20000}
  - {id: b, driver: vllm, port: 8001, vram_mb: 20000}
modes:
  - {id: both, services: [a, b]}
)",
                                          "x.yaml");
  ASSERT_TRUE(r.ok()) << all_text(r);
  ASSERT_EQ(r.config->warnings.size(), 1U);
  EXPECT_EQ(r.config->warnings[0].key, "modes[0].services");
  EXPECT_NE(r.config->warnings[0].message.find("needs 40000 MB together"), std::string::npos);
}

TEST(ConfigLoad, ResolveModelByIdModelIdAliasAndRouterModel) {
  const LoadResult r = load_daemon_string(R"(presets:
  - id: router
    driver: llamacpp
    port: 7070
    vram_mb: 100
    model_id: qwen3-coder-30b
    models: [qwen3-coder-30b, gemma-3-12b]
    aliases: [coder]
  - id: embed
    driver: vllm
    port: 8200
    vram_mb: 100
    model_id: BAAI/bge-m3
    aliases: [embedding]
  - id: qwen3-coder-30b-tuned
    driver: vllm
    port: 8300
    vram_mb: 100
    model_id: router
)",
                                          "x.yaml");
  ASSERT_TRUE(r.ok()) << all_text(r);
  const Config& c = *r.config;
  EXPECT_EQ(c.resolve_model("embed")->id, "embed");
  EXPECT_EQ(c.resolve_model("BAAI/bge-m3")->id, "embed");
  EXPECT_EQ(c.resolve_model("embedding")->id, "embed");
  EXPECT_EQ(c.resolve_model("coder")->id, "router");
  EXPECT_EQ(c.resolve_model("gemma-3-12b")->id, "router");
  EXPECT_EQ(c.resolve_model("qwen3-coder-30b")->id, "router");
  // A service id wins over another service's model_id.
  EXPECT_EQ(c.resolve_model("router")->id, "router");
  EXPECT_EQ(c.resolve_model("nope"), nullptr);
  EXPECT_EQ(c.resolve_model(""), nullptr);
}

TEST(ConfigLoad, NoPresetsIsAWarning) {
  const LoadResult r = load_daemon_string("listen: \"127.0.0.1:7979\"\n", "only-daemon.yaml");
  ASSERT_TRUE(r.ok()) << all_text(r);
  ASSERT_EQ(r.config->warnings.size(), 1U);
  EXPECT_NE(r.config->warnings[0].message.find("no presets found"), std::string::npos);
}

TEST(ConfigText, Durations) {
  EXPECT_EQ(parse_duration("500ms").value(), milliseconds(500));
  EXPECT_EQ(parse_duration("90s").value(), milliseconds(90000));
  EXPECT_EQ(parse_duration("3m").value(), milliseconds(180000));
  EXPECT_EQ(parse_duration("1h").value(), milliseconds(3600000));
  EXPECT_EQ(parse_duration("1m30s").value(), milliseconds(90000));
  EXPECT_EQ(parse_duration("90").value(), milliseconds(90000));
  EXPECT_EQ(parse_duration("0.5").value(), milliseconds(500));
  EXPECT_EQ(parse_duration("1.5s").value(), milliseconds(1500));
  EXPECT_EQ(parse_duration("0").value(), milliseconds(0));
  for (const char* bad : {"", "s", "10x", "-1", "1.2.3s", "ten", "5 days", "10s5"}) {
    EXPECT_FALSE(parse_duration(bad).ok()) << bad;
  }
  EXPECT_NE(parse_duration("10x").error().find("unknown unit 'x'"), std::string::npos);
}

TEST(ConfigText, HostPort) {
  auto a = parse_host_port("127.0.0.1:7979");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->host, "127.0.0.1");
  EXPECT_EQ(a->port, 7979);
  auto b = parse_host_port("[::1]:8080");
  ASSERT_TRUE(b.ok()) << b.error();
  EXPECT_EQ(b->host, "::1");
  EXPECT_EQ(b->port, 8080);
  EXPECT_EQ(parse_host_port("localhost:0")->port, 0);
  for (const char* bad : {"7979", ":7979", "host:", "host:65536", "host:http", "::1:80", "[::1]80"}) {
    EXPECT_FALSE(parse_host_port(bad).ok()) << bad;
  }
}

TEST(ConfigText, OnlyLoopbackAddressesCountAsLoopback) {
  for (const char* h : {"127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"})
    EXPECT_TRUE(is_loopback_host(h)) << h;
  for (const char* h : {"0.0.0.0", "::", "192.168.1.10", "10.0.0.1", "example.com", "", "128.0.0.1",
                        "127.foo", "127.0.0.1.example.com", "::2"}) {
    EXPECT_FALSE(is_loopback_host(h)) << h;
  }
}

TEST(ConfigText, DiagnosticForms) {
  Diagnostic e{Diagnostic::Severity::error, "a.yaml", 3, "port", "expected 1..65535"};
  EXPECT_EQ(e.str(), "a.yaml:3: port: expected 1..65535");
  Diagnostic w{Diagnostic::Severity::warning, "a.yaml", 7, "unit_vars.x", "not used"};
  EXPECT_EQ(w.str(), "a.yaml:7: unit_vars.x: warning: not used");
  Diagnostic bare{Diagnostic::Severity::error, "dir", 0, "", "does not exist"};
  EXPECT_EQ(bare.str(), "dir: does not exist");
  EXPECT_STREQ(to_string(Driver::llamacpp), "llamacpp");
  EXPECT_STREQ(to_string(SleepMode::router), "router");
  EXPECT_STREQ(to_string(RunnerKind::systemd), "systemd");
  EXPECT_STREQ(to_string(ProbeKind::auto_detect), "auto");
}

}  // namespace
}  // namespace gpumod::config::test
