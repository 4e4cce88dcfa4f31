// Bad input: every case asserts the error's file, line, key and a phrase of what was expected.
#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

#include "config/config.hpp"
#include "config_test_support.hpp"

namespace gpumod::config::test {
namespace {

// A valid preset on lines 1-4; cases append keys from line 5 on.
const std::string kA = "id: a\ndriver: vllm\nport: 8000\nvram_mb: 1000\n";
const std::string kB = "id: b\ndriver: vllm\nport: 8001\nvram_mb: 1000\n";
// One simulated 24 GiB GPU (lines 1-5).
const std::string kSimGpu = "gpus:\n  probe: sim\n  sim:\n    - name: card0\n      memory_mb: 24576\n";

struct BadCase {
  std::string name;
  std::vector<std::pair<std::string, std::string>> files;  // relative path, content
  std::string file;                                        // the file the error must name
  int line;
  std::string key;
  std::string phrase;
};

void PrintTo(const BadCase& c, std::ostream* os) {
  *os << c.name;
}

std::vector<BadCase> cases() {
  const std::string P = "presets/a.yaml";
  const std::string M = "modes/m.yaml";
  const std::string D = "gpumod.yaml";
  return {
      // --- preset files: keys, types, ranges, enums ---
      {"unknown_key", {{P, kA + "vram: 100\n"}}, P, 5, "vram", "unknown key (did you mean 'vram_mb'?)"},
      {"port_not_a_number",
       {{P, "id: a\ndriver: vllm\nport: abc\nvram_mb: 1000\n"}},
       P,
       3,
       "port",
       "expected a whole number from 1 to 65535, got 'abc'"},
      {"port_too_high",
       {{P, "id: a\ndriver: vllm\nport: 70000\nvram_mb: 1000\n"}},
       P,
       3,
       "port",
       "from 1 to 65535, got 70000"},
      {"port_zero",
       {{P, "id: a\ndriver: vllm\nport: 0\nvram_mb: 1000\n"}},
       P,
       3,
       "port",
       "from 1 to 65535, got 0"},
      {"vram_zero",
       {{P, "id: a\ndriver: vllm\nport: 8000\nvram_mb: 0\n"}},
       P,
       4,
       "vram_mb",
       "expected a whole number greater than 0, got 0"},
      {"vram_negative", {{P, "id: a\ndriver: vllm\nport: 8000\nvram_mb: -5\n"}}, P, 4, "vram_mb", "got -5"},
      {"priority_out_of_range", {{P, kA + "priority: 101\n"}}, P, 5, "priority", "from 0 to 100, got 101"},
      {"bad_driver",
       {{P, "id: a\ndriver: tgi\nport: 8000\nvram_mb: 1000\n"}},
       P,
       2,
       "driver",
       "expected one of vllm, llamacpp, fastapi, docker, generic, got 'tgi'"},
      {"bad_sleep_mode",
       {{P, kA + "supports_sleep: true\nsleep_mode: l3\n"}},
       P,
       6,
       "sleep_mode",
       "expected one of none, l1, l2, router, got 'l3'"},
      {"bad_runner",
       {{P, kA + "runner: docker\n"}},
       P,
       5,
       "runner",
       "expected one of process, systemd, got 'docker'"},
      {"missing_id", {{P, "driver: vllm\nport: 8000\nvram_mb: 1000\n"}}, P, 1, "id", "required key missing"},
      {"missing_driver",
       {{P, "id: a\nport: 8000\nvram_mb: 1000\n"}},
       P,
       1,
       "driver",
       "required key missing; expected one of vllm"},
      {"missing_port", {{P, "id: a\ndriver: vllm\nvram_mb: 1000\n"}}, P, 1, "port", "required key missing"},
      {"missing_vram", {{P, "id: a\ndriver: vllm\nport: 8000\n"}}, P, 1, "vram_mb", "required key missing"},
      {"cmd_is_a_string",
       {{P, kA + "cmd: \"llama-server --port 8000\"\n"}},
       P,
       5,
       "cmd",
       "expected a list of strings (the argv; no shell is used)"},
      {"cmd_empty", {{P, kA + "cmd: []\n"}}, P, 5, "cmd", "expected a non-empty list"},
      {"cmd_element_not_a_string",
       {{P, kA + "cmd:\n  - /bin/server\n  - {a: 1}\n"}},
       P,
       7,
       "cmd[1]",
       "expected a string, got a mapping"},
      {"sleep_true_mode_none",
       {{P, kA + "supports_sleep: true\nsleep_mode: none\n"}},
       P,
       6,
       "sleep_mode",
       "supports_sleep is true but sleep_mode is none"},
      {"sleep_false_mode_l1",
       {{P, kA + "supports_sleep: false\nsleep_mode: l1\n"}},
       P,
       6,
       "sleep_mode",
       "sleep_mode is l1 but supports_sleep is false"},
      {"supports_sleep_without_mode",
       {{P, kA + "supports_sleep: true\n"}},
       P,
       5,
       "sleep_mode",
       "supports_sleep is true but sleep_mode is none"},
      {"router_sleep_not_llamacpp",
       {{P, kA + "sleep_mode: router\n"}},
       P,
       5,
       "sleep_mode",
       "expected driver llamacpp, got vllm"},
      {"timeout_bad_unit",
       {{P, kA + "startup_timeout: 10x\n"}},
       P,
       5,
       "startup_timeout",
       "expected a duration > 0 (seconds as a number, or a string such as \"500ms\""},
      {"timeout_zero",
       {{P, kA + "startup_timeout: 0\n"}},
       P,
       5,
       "startup_timeout",
       "expected a duration > 0"},
      {"keep_alive_negative", {{P, kA + "keep_alive: -1\n"}}, P, 5, "keep_alive", "expected a duration >= 0"},
      {"pinned_not_bool",
       {{P, kA + "pinned: maybe\n"}},
       P,
       5,
       "pinned",
       "expected true or false, got 'maybe'"},
      {"gpus_not_a_list", {{P, kA + "gpus: \"0\"\n"}}, P, 5, "gpus", "expected a list of GPU indexes"},
      {"gpus_negative", {{P, kA + "gpus: [-1]\n"}}, P, 5, "gpus[0]", "from 0 to 1023, got -1"},
      {"env_not_a_map",
       {{P, kA + "env: [A=1]\n"}},
       P,
       5,
       "env",
       "expected a mapping of names to values, got a list"},
      {"unit_var_undefined",
       {{P, kA + "unit_vars:\n  models_dir: $GPUMOD_TEST_NOT_SET/models\n"}},
       P,
       6,
       "unit_vars.models_dir",
       "environment variable GPUMOD_TEST_NOT_SET is not set"},
      {"unit_var_list",
       {{P, kA + "unit_vars:\n  extra_args: [a, b]\n"}},
       P,
       6,
       "unit_vars.extra_args",
       "expected a string, number or bool, got a list"},
      {"unit_var_unterminated",
       {{P, kA + "unit_vars:\n  binary: \"${HOME/bin\"\n"}},
       P,
       6,
       "unit_vars.binary",
       "unterminated '${'"},
      {"yaml_syntax",
       {{P, "id: a\ndriver: vllm\nport: 8000\nvram_mb: [1000\n"}},
       P,
       5,
       "",
       "YAML syntax error"},
      {"not_a_mapping",
       {{P, "- id: a\n- id: b\n"}},
       P,
       1,
       "",
       "expected a mapping of preset keys, got a list"},
      {"empty_file", {{P, ""}}, P, 1, "", "expected a mapping of preset keys, got nothing"},
      {"two_documents", {{P, kA + "---\n" + kB}}, P, 6, "", "expected one YAML document per file, found 2"},
      {"key_twice", {{P, kA + "port: 8001\n"}}, P, 5, "port", "key given twice (first at line 3)"},
      {"sleep_vram_above_vram",
       {{P, kA + "supports_sleep: true\nsleep_mode: l1\nsleep_vram_mb: 2000\n"}},
       P,
       7,
       "sleep_vram_mb",
       "expected at most vram_mb (1000), got 2000"},
      {"bad_id",
       {{P, "id: bad id\ndriver: vllm\nport: 8000\nvram_mb: 1000\n"}},
       P,
       1,
       "id",
       "expected an id of letters, digits"},
      {"health_endpoint_not_a_path",
       {{P, kA + "health_endpoint: health\n"}},
       P,
       5,
       "health_endpoint",
       "expected a path starting with '/'"},
      {"context_size_fraction",
       {{P, kA + "context_size: 1.5\n"}},
       P,
       5,
       "context_size",
       "expected a whole number greater than 0, got '1.5'"},
      {"kv_cache_not_a_number",
       {{P, kA + "kv_cache_per_1k: lots\n"}},
       P,
       5,
       "kv_cache_per_1k",
       "expected a number, got 'lots'"},
      {"aliases_not_a_list",
       {{P, kA + "aliases: coder\n"}},
       P,
       5,
       "aliases",
       "expected a list of strings, got 'coder'"},
      // --- cross-checks between files ---
      {"duplicate_preset_id",
       {{P, kA}, {"presets/b.yaml", "id: a\ndriver: vllm\nport: 8001\nvram_mb: 10\n"}},
       "presets/b.yaml",
       1,
       "id",
       "presets/a.yaml:1; expected each preset id once"},
      {"duplicate_mode_id",
       {{P, kA}, {"modes/m1.yaml", "id: m\nservices: [a]\n"}, {"modes/m2.yaml", "id: m\nservices: [a]\n"}},
       "modes/m2.yaml",
       1,
       "id",
       "duplicate mode id 'm': also defined at"},
      {"mode_missing_service",
       {{P, kA}, {M, "id: m\nservices:\n  - a\n  - ghost\n"}},
       M,
       4,
       "services[1]",
       "names service 'ghost', but no preset has that id; expected one of: a"},
      {"mode_two_services_one_port",
       {{P, kA},
        {"presets/b.yaml", "id: b\ndriver: vllm\nport: 8000\nvram_mb: 10\n"},
        {M, "id: m\nservices:\n  - a\n  - b\n"}},
       M,
       4,
       "services[1]",
       "both use port 8000; expected the services of one mode on different ports"},
      {"mode_without_services", {{P, kA}, {M, "id: m\n"}}, M, 1, "services", "required key missing"},
      {"mode_unknown_key",
       {{P, kA}, {M, "id: m\nservices: []\nservice: [a]\n"}},
       M,
       3,
       "service",
       "unknown key (did you mean 'services'?)"},
      {"mode_service_twice",
       {{P, kA}, {M, "id: m\nservices: [a, a]\n"}},
       M,
       2,
       "services[1]",
       "listed twice"},
      {"mode_service_not_a_string",
       {{P, kA}, {M, "id: m\nservices:\n  - {id: a}\n"}},
       M,
       3,
       "services[0]",
       "expected a string, got a mapping"},
      {"alias_is_another_id",
       {{P, kA + "aliases: [b]\n"}, {"presets/b.yaml", kB}},
       P,
       5,
       "aliases",
       "alias 'b' is the id of another preset"},
      // --- GPUs ---
      {"gpu_index_not_configured",
       {{D, kSimGpu}, {P, kA + "gpus: [1]\n"}},
       P,
       5,
       "gpus",
       "GPU 1 is not configured; expected an index below 1"},
      {"larger_than_every_sim_gpu",
       {{D, kSimGpu}, {P, "id: a\ndriver: vllm\nport: 8000\nvram_mb: 30000\n"}},
       P,
       4,
       "vram_mb",
       "needs 30000 MB, more than any GPU it may use offers"},
      {"gpu_not_in_use_list",
       {{D, "gpus:\n  probe: nvml\n  use: [0]\n"}, {P, kA + "gpus: [1]\n"}},
       P,
       5,
       "gpus",
       "GPU 1 is not among the GPUs gpumod may use"},
      {"use_names_unconfigured_gpu",
       {{D, kSimGpu + "  use: [0, 2]\n"}, {P, kA}},
       D,
       6,
       "gpus.use[1]",
       "GPU 2 is not configured"},
      // --- daemon file ---
      {"public_listen_without_token",
       {{D, "listen: \"0.0.0.0:7979\"\n"}, {P, kA}},
       D,
       1,
       "listen",
       "is not a loopback address and no api_token is set"},
      // Only what serve would call loopback (an IPv4 address in 127/8, ::1, localhost) counts:
      // a name that merely starts with "127." does not.
      {"listen_host_looking_like_loopback",
       {{D, "listen: \"127.foo:7979\"\n"}, {P, kA}},
       D,
       1,
       "listen",
       "'127.foo' is not a loopback address and no api_token is set"},
      {"listen_without_port", {{D, "listen: localhost\n"}, {P, kA}}, D, 1, "listen", "is not HOST:PORT"},
      {"listen_bare_number", {{D, "listen: 7979\n"}, {P, kA}}, D, 1, "listen", "is not HOST:PORT"},
      {"bad_probe",
       {{D, "gpus:\n  probe: cuda\n"}, {P, kA}},
       D,
       2,
       "gpus.probe",
       "expected one of auto, nvml, sim, got 'cuda'"},
      {"sim_memory_zero",
       {{D, "gpus:\n  sim:\n    - name: x\n      memory_mb: 0\n"}, {P, kA}},
       D,
       4,
       "gpus.sim[0].memory_mb",
       "greater than 0"},
      {"sim_memory_missing",
       {{D, "gpus:\n  sim:\n    - name: x\n"}, {P, kA}},
       D,
       3,
       "gpus.sim[0].memory_mb",
       "required key missing"},
      {"policy_unknown_key",
       {{D, "policy:\n  headroom: 100\n"}, {P, kA}},
       D,
       2,
       "policy.headroom",
       "unknown key (did you mean 'headroom_mb'?)"},
      {"policy_negative_headroom",
       {{D, "policy:\n  headroom_mb: -1\n"}, {P, kA}},
       D,
       2,
       "policy.headroom_mb",
       "expected a whole number >= 0, got -1"},
      {"policy_zero_grace",
       {{D, "policy:\n  stop_grace: 0s\n"}, {P, kA}},
       D,
       2,
       "policy.stop_grace",
       "expected a duration > 0"},
      {"policy_zero_queue",
       {{D, "policy:\n  queue_max: 0\n"}, {P, kA}},
       D,
       2,
       "policy.queue_max",
       "from 1 to 1000000, got 0"},
      {"policy_stall_timeout_too_short",
       {{D, "policy:\n  stall_timeout: 500ms\n"}, {P, kA}},
       D,
       2,
       "policy.stall_timeout",
       "must be at least 2s"},
      // A stray Latin-1 byte: refused before YAML parsing (yaml-cpp 0.7 looped forever on this
      // one, a fuzzer finding).
      {"preset_not_utf8",
       {{P,
         "id: devstral\n\xe1"
         "driver: vllm\nport: 8000\nvram_mb: 100\n"}},
       P,
       2,
       "",
       "not valid UTF-8: byte 0xe1 at column 1"},
      {"preset_control_character",
       {{P, kA + "name: a\x01"
                 "b\n"}},
       P,
       5,
       "",
       "a control character (byte 0x01 at column 8)"},
      // yaml-cpp 0.7 loops forever on a ',' where a document would go on (fuzzer findings).
      {"preset_starting_with_a_comma",
       {{P, "# a preset\n,id: a\n"}},
       P,
       2,
       "",
       "at column 1: nothing can begin there"},
      {"preset_comma_after_a_scalar",
       {{P, "! e000i2\n,..\n"}},
       P,
       2,
       "",
       "at column 1: nothing can begin there"},
      {"daemon_not_utf8",
       {{D, "listen: \"127.0.0.1:1\" # caf\xe9\n"}, {P, kA}},
       D,
       1,
       "",
       "byte 0xe9 at column 28"},
      {"daemon_unknown_key",
       {{D, "listne: \"127.0.0.1:1\"\n"}, {P, kA}},
       D,
       1,
       "listne",
       "did you mean 'listen'?"},
      {"token_and_token_file",
       {{D, "api_token: abc\napi_token_file: tok\n"}, {"tok", "secret\n"}, {P, kA}},
       D,
       2,
       "api_token_file",
       "both api_token (line 1) and api_token_file are given"},
      {"token_file_missing",
       {{D, "api_token_file: missing-token\n"}, {P, kA}},
       D,
       1,
       "api_token_file",
       "cannot read"},
      {"presets_dir_missing", {{D, "presets_dir: nowhere\n"}}, D, 1, "presets_dir", "is not a directory"},
      // A folder that is the whole disk is refused after a bounded walk (fuzzer finding: the
      // load read every file under / and never ended).
      {"modes_dir_is_the_root", {{D, "modes_dir: /\n"}, {P, kA}}, D, 1, "modes_dir", "holds more than 20000"},
      {"presets_dir_is_the_root", {{D, "presets_dir: /\n"}}, D, 1, "presets_dir", "holds more than 20000"},
      {"bad_systemd_bus",
       {{D, "systemd_bus: session\n"}, {P, kA}},
       D,
       1,
       "systemd_bus",
       "expected one of user, system, got 'session'"},
      {"inline_preset_bad_port",
       {{D, "presets:\n  - id: x\n    driver: vllm\n    port: 99999\n    vram_mb: 10\n"}},
       D,
       4,
       "presets[0].port",
       "from 1 to 65535, got 99999"},
      {"inline_mode_missing_service",
       {{D, "modes:\n  - id: m\n    services: [ghost]\n"}, {P, kA}},
       D,
       3,
       "modes[0].services[0]",
       "no preset has that id"},
      {"preset_on_listen_port",
       {{D, "listen: \"127.0.0.1:8000\"\n"}, {P, kA}},
       P,
       3,
       "port",
       "is gpumod's own listen port"},
      {"sim_release_lag_bad",
       {{D, "gpus:\n  sim_release_lag: fast\n"}, {P, kA}},
       D,
       2,
       "gpus.sim_release_lag",
       "expected a duration >= 0"},
      {"daemon_not_a_mapping",
       {{D, "- listen\n"}, {P, kA}},
       D,
       1,
       "",
       "expected a mapping of daemon settings, got a list"},
  };
}

class BadConfig : public ::testing::TestWithParam<BadCase> {};

TEST_P(BadConfig, NamesFileLineKeyAndWhatWasExpected) {
  const BadCase& c = GetParam();
  TempDir dir;
  for (const auto& [rel, text] : c.files) dir.write(rel, text);
  if (c.files.size() == 1 && c.files[0].first == "gpumod.yaml") dir.write("presets/.keep", "");
  const LoadResult r = load(dir.path());
  ASSERT_FALSE(r.ok()) << "loaded without errors:\n" << all_text(r);
  const std::string want_file = (dir.path() / c.file).string();
  bool found = false;
  for (const auto& d : r.diagnostics) {
    if (d.severity != Diagnostic::Severity::error) continue;
    if (d.file == want_file && d.line == c.line && d.key == c.key &&
        d.message.find(c.phrase) != std::string::npos) {
      found = true;
      // The one-line form every CLI and API error uses.
      const std::string prefix =
          want_file + ":" + std::to_string(c.line) + ": " + (c.key.empty() ? "" : c.key + ": ");
      EXPECT_EQ(d.str().rfind(prefix, 0), 0U) << d.str();
    }
  }
  EXPECT_TRUE(found) << "wanted " << c.file << ":" << c.line << ": " << c.key << ": ..." << c.phrase
                     << "...\ngot:\n"
                     << all_text(r);
  EXPECT_FALSE(r.error_text().empty());
}

INSTANTIATE_TEST_SUITE_P(Cases, BadConfig, ::testing::ValuesIn(cases()),
                         [](const ::testing::TestParamInfo<BadCase>& info) { return info.param.name; });

TEST(ConfigErrors, CollectsEveryErrorNotJustTheFirst) {
  TempDir dir;
  dir.write("presets/a.yaml", "id: a\ndriver: tgi\nport: 0\nvram_mb: -1\npriority: 500\nbogus: 1\n");
  dir.write("modes/m.yaml", "id: m\nservices: [a, ghost]\n");
  const LoadResult r = load(dir.path());
  ASSERT_FALSE(r.ok());
  std::vector<std::string> keys;
  for (const auto& d : r.diagnostics) {
    if (d.severity == Diagnostic::Severity::error) keys.push_back(d.key);
  }
  EXPECT_EQ(keys, (std::vector<std::string>{"driver", "port", "vram_mb", "priority", "bogus", "services[1]"}))
      << all_text(r);
}

TEST(ConfigErrors, BadListenOverrideNamesTheOption) {
  TempDir dir;
  dir.write("presets/a.yaml", kA);
  LoadOptions opts;
  opts.listen = "no-port-here";
  const LoadResult r = load(dir.path(), opts);
  ASSERT_FALSE(r.ok());
  ASSERT_FALSE(r.diagnostics.empty());
  EXPECT_EQ(r.diagnostics[0].file, "--listen");
  EXPECT_EQ(r.diagnostics[0].key, "listen");
  EXPECT_NE(r.diagnostics[0].message.find("is not HOST:PORT"), std::string::npos);
}

TEST(ConfigErrors, PublicListenOverrideNeedsAToken) {
  TempDir dir;
  dir.write("presets/a.yaml", kA);
  LoadOptions opts;
  opts.listen = "0.0.0.0:7979";
  const LoadResult r = load(dir.path(), opts);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error_text().find("--listen: listen: '0.0.0.0' is not a loopback address"), std::string::npos)
      << r.error_text();
}

TEST(ConfigErrors, PresetFileGivenAsDaemonFileSaysSo) {
  TempDir dir;
  const auto file = dir.write("presets/a.yaml", kA);
  const LoadResult r = load(file);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error_text().find("this looks like a preset or mode file"), std::string::npos)
      << r.error_text();
}

TEST(ConfigErrors, MissingPathSaysWhatWasExpected) {
  const LoadResult r = load("/nonexistent/gpumod-config");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error_text(),
            "/nonexistent/gpumod-config: does not exist; expected a daemon file or a config directory");
}

TEST(ConfigErrors, DaemonStringSyntaxErrorHasTheLine) {
  const LoadResult r =
      load_daemon_string("listen: \"127.0.0.1:7979\"\npolicy:\n  headroom_mb: [1\n", "inline.yaml");
  ASSERT_FALSE(r.ok());
  ASSERT_EQ(r.diagnostics.size(), 1U) << all_text(r);
  EXPECT_EQ(r.diagnostics[0].file, "inline.yaml");
  EXPECT_GE(r.diagnostics[0].line, 3);
  EXPECT_NE(r.diagnostics[0].message.find("YAML syntax error"), std::string::npos);
}

}  // namespace
}  // namespace gpumod::config::test
