// Command rendering: the argv and env each driver gets from its unit_vars, extra_args
// splitting, errors that name the preset and key, and the unit file text.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include "backends/command.hpp"
#include "tests/support/temp_dir.hpp"

namespace gpumod::backends {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using Args = std::vector<std::string>;

config::Preset preset(const std::string& id, config::Driver driver, int port) {
  config::Preset p;
  p.id = id;
  p.name = id;
  p.driver = driver;
  p.port = port;
  p.loc = {"presets/" + id + ".yaml", 1};
  return p;
}

TEST(RenderCommand, LlamaCppRouterModeFromPredecessorVars) {
  auto p = preset("qwen3-coder", config::Driver::llamacpp, 7070);
  p.context_size = 65536;
  p.unit_vars = {{"models_dir", "/models/gguf"}, {"models_max", "1"},
                 {"n_gpu_layers", "99"},         {"jinja", "true"},
                 {"flash_attn", "on"},           {"threads", "8"}};
  p.env = {{"LLAMA_ARG_X", "1"}};
  auto c = render_command(p, 0);
  ASSERT_TRUE(c.ok()) << c.error();
  EXPECT_EQ(c->argv,
            (Args{"llama-server", "--models-dir", "/models/gguf", "--no-models-autoload", "--models-max", "1",
                  "--host", "127.0.0.1", "--port", "7070", "--ctx-size", "65536", "--n-gpu-layers", "99",
                  "--threads", "8", "--flash-attn", "on", "--jinja"}));
  EXPECT_EQ(c->env,
            (std::map<std::string, std::string>{{"CUDA_VISIBLE_DEVICES", "0"}, {"LLAMA_ARG_X", "1"}}));
}

TEST(RenderCommand, LlamaCppSingleModelWithBinaryCtxSizeVarAndExtraArgs) {
  auto p = preset("nemo", config::Driver::llamacpp, 7071);
  p.model_path = "/models/nemotron Q4.gguf";
  p.unit_vars = {
      {"binary", "/opt/llama/bin/llama-server"},
      {"ctx_size", "8192"},
      {"flash_attn", "false"},
      {"jinja", "no"},
      {"extra_args", R"(--chat-template-kwargs '{"enable_thinking": false}' --alias "nemo 3" -np\ 2)"}};
  auto c = render_command(p, 1);
  ASSERT_TRUE(c.ok()) << c.error();
  EXPECT_EQ(c->argv,
            (Args{"/opt/llama/bin/llama-server", "--model", "/models/nemotron Q4.gguf", "--host", "127.0.0.1",
                  "--port", "7071", "--ctx-size", "8192", "--flash-attn", "off", "--chat-template-kwargs",
                  R"({"enable_thinking": false})", "--alias", "nemo 3", "-np 2"}));
  EXPECT_EQ(c->env.at("CUDA_VISIBLE_DEVICES"), "1");
}

TEST(RenderCommand, LlamaCppWithoutModelNamesTheKey) {
  auto p = preset("nomodel", config::Driver::llamacpp, 7070);
  auto c = render_command(p, 0);
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.error(), HasSubstr("presets/nomodel.yaml:1: preset 'nomodel': model_path:"));
  EXPECT_THAT(c.error(), HasSubstr("models_dir"));
}

TEST(RenderCommand, VllmWithSleepModeAndAllVars) {
  auto p = preset("vllm-embedding-code", config::Driver::vllm, 8210);
  p.model_id = "Qwen/Qwen3-Embedding-0.6B";
  p.supports_sleep = true;
  p.sleep_mode = config::SleepMode::l1;
  p.unit_vars = {{"gpu_mem_util", "0.10"},
                 {"max_model_len", "8192"},
                 {"max_num_seqs", "16"},
                 {"dtype", "bfloat16"},
                 {"enforce_eager", "true"},
                 {"runner", "pooling"},
                 {"tensor_parallel_size", "1"},
                 {"hf_overrides", R"({"is_matryoshka": true})"},
                 {"extra_args", "--served-model-name code-embed"}};
  auto c = render_command(p, 0);
  ASSERT_TRUE(c.ok()) << c.error();
  EXPECT_EQ(c->argv, (Args{"vllm",
                           "serve",
                           "Qwen/Qwen3-Embedding-0.6B",
                           "--host",
                           "127.0.0.1",
                           "--port",
                           "8210",
                           "--gpu-memory-utilization",
                           "0.1",
                           "--max-model-len",
                           "8192",
                           "--max-num-seqs",
                           "16",
                           "--dtype",
                           "bfloat16",
                           "--enforce-eager",
                           "--runner",
                           "pooling",
                           "--tensor-parallel-size",
                           "1",
                           "--hf-overrides",
                           R"({"is_matryoshka": true})",
                           "--enable-sleep-mode",
                           "--served-model-name",
                           "code-embed"}));
  EXPECT_EQ(c->env, (std::map<std::string, std::string>{{"CUDA_VISIBLE_DEVICES", "0"},
                                                        {"VLLM_SERVER_DEV_MODE", "1"}}));
}

TEST(RenderCommand, VllmWithoutSleepUsesModelPathAndContextSize) {
  auto p = preset("devstral", config::Driver::vllm, 8000);
  p.model_path = "/models/devstral";
  p.context_size = 32768;
  p.unit_vars = {{"host", "0.0.0.0"}};
  auto c = render_command(p, 2);
  ASSERT_TRUE(c.ok()) << c.error();
  EXPECT_EQ(c->argv, (Args{"vllm", "serve", "/models/devstral", "--host", "0.0.0.0", "--port", "8000",
                           "--max-model-len", "32768"}));
  EXPECT_EQ(c->env, (std::map<std::string, std::string>{{"CUDA_VISIBLE_DEVICES", "2"}}));
}

TEST(RenderCommand, VllmBadValuesNameThePresetAndKey) {
  auto p = preset("bad", config::Driver::vllm, 8000);
  p.model_id = "m";
  p.unit_vars = {{"gpu_mem_util", "1.5"}};
  auto c = render_command(p, 0);
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.error(),
              HasSubstr("preset 'bad': unit_vars.gpu_mem_util: expected a number in (0, 1], got '1.5'"));

  p.unit_vars = {{"max_model_len", "lots"}};
  c = render_command(p, 0);
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.error(), HasSubstr("preset 'bad': unit_vars.max_model_len: expected an integer"));

  p.unit_vars = {{"enforce_eager", "maybe"}};
  c = render_command(p, 0);
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.error(), HasSubstr("unit_vars.enforce_eager: expected true or false, got 'maybe'"));

  p.unit_vars = {};
  p.model_id.clear();
  c = render_command(p, 0);
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.error(), HasSubstr("preset 'bad': model_id: vllm needs model_id or model_path"));
}

TEST(RenderCommand, FastapiUvicornWithWorkingDir) {
  auto p = preset("whisper", config::Driver::fastapi, 8300);
  p.unit_vars = {
      {"app_module", "server:app"}, {"working_dir", "/srv/whisper"}, {"extra_args", "--workers 1"}};
  auto c = render_command(p, 0);
  ASSERT_TRUE(c.ok()) << c.error();
  EXPECT_EQ(c->argv, (Args{"python3", "-m", "uvicorn", "server:app", "--host", "127.0.0.1", "--port", "8300",
                           "--workers", "1"}));
  EXPECT_EQ(c->working_dir, "/srv/whisper");

  p.unit_vars["python"] = "/srv/whisper/.venv/bin/python";
  c = render_command(p, 0);
  ASSERT_TRUE(c.ok()) << c.error();
  EXPECT_EQ(c->argv[0], "/srv/whisper/.venv/bin/python");

  p.unit_vars.erase("app_module");
  c = render_command(p, 0);
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.error(), HasSubstr("preset 'whisper': unit_vars.app_module"));
}

TEST(RenderCommand, ExplicitCmdIsUsedAsIsAndGpuWins) {
  auto p = preset("custom", config::Driver::generic, 9000);
  p.cmd = {"/usr/bin/my-server", "--flag with space", "$NOT_EXPANDED"};
  p.env = {{"CUDA_VISIBLE_DEVICES", "7"}, {"A", "b"}};
  p.unit_vars = {{"extra_args", "ignored 'because explicit"}};
  auto c = render_command(p, 3);
  ASSERT_TRUE(c.ok()) << c.error();
  EXPECT_EQ(c->argv, p.cmd);
  EXPECT_EQ(c->env, (std::map<std::string, std::string>{{"A", "b"}, {"CUDA_VISIBLE_DEVICES", "3"}}));

  c = render_command(p, -1);
  ASSERT_TRUE(c.ok()) << c.error();
  EXPECT_EQ(c->env.at("CUDA_VISIBLE_DEVICES"), "7") << "no GPU chosen: the preset's value stays";
}

TEST(RenderCommand, GenericAndDockerWithoutCmdAreErrors) {
  for (auto d : {config::Driver::generic, config::Driver::docker}) {
    auto p = preset("g", d, 9000);
    auto c = render_command(p, 0);
    ASSERT_FALSE(c.ok());
    EXPECT_THAT(c.error(), HasSubstr("preset 'g': cmd:"));
    EXPECT_THAT(c.error(), HasSubstr("give an explicit cmd"));
  }
}

TEST(RenderCommand, GenericFromBinaryAndExtraArgs) {
  auto p = preset("embed", config::Driver::generic, 9000);
  p.unit_vars = {{"binary", "/opt/embed/serve"}, {"extra_args", "--port 9000 --name 'my embedder'"}};
  auto c = render_command(p, 0);
  ASSERT_TRUE(c.ok()) << c.error();
  EXPECT_EQ(c->argv, (Args{"/opt/embed/serve", "--port", "9000", "--name", "my embedder"}));
  EXPECT_TRUE(c->working_dir.empty());
}

TEST(RenderCommand, UnbalancedExtraArgsNamePresetAndKey) {
  auto p = preset("q", config::Driver::llamacpp, 7070);
  p.model_path = "/m.gguf";
  p.unit_vars = {{"extra_args", "--alias 'oops"}};
  p.key_locs["unit_vars.extra_args"] = {"presets/q.yaml", 12};
  auto c = render_command(p, 0);
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.error(),
              HasSubstr("presets/q.yaml:12: preset 'q': unit_vars.extra_args: unbalanced single quote"));
}

TEST(RenderCommand, MissingPortIsAnError) {
  auto p = preset("noport", config::Driver::vllm, 0);
  p.model_id = "m";
  auto c = render_command(p, 0);
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.error(), HasSubstr("preset 'noport': port:"));
}

TEST(SplitArgs, ShellLikeWordsWithoutAShell) {
  auto w = [](const std::string& s) {
    auto r = split_args(s);
    EXPECT_TRUE(r.ok()) << s << ": " << (r.ok() ? "" : r.error());
    return r.ok() ? r.value() : Args{};
  };
  EXPECT_THAT(w(""), ElementsAre());
  EXPECT_THAT(w("   \t\n "), ElementsAre());
  EXPECT_THAT(w("a  b\tc"), ElementsAre("a", "b", "c"));
  EXPECT_THAT(w("'a b' \"c d\""), ElementsAre("a b", "c d"));
  EXPECT_THAT(w("pre'quoted'post"), ElementsAre("prequotedpost"));
  EXPECT_THAT(w("'' \"\""), ElementsAre("", ""));
  EXPECT_THAT(w(R"('it''s' "say \"hi\"" 'back\slash')"), ElementsAre("its", "say \"hi\"", "back\\slash"));
  EXPECT_THAT(w(R"("a\b" "\$HOME" $HOME)"), ElementsAre("a\\b", "$HOME", "$HOME")) << "no expansion, ever";
  EXPECT_THAT(w(R"(a\ b c\"d \\)"), ElementsAre("a b", "c\"d", "\\"));
  EXPECT_THAT(w("a;b | c && d"), ElementsAre("a;b", "|", "c", "&&", "d")) << "no shell operators";
  EXPECT_THAT(w("one\\\ntwo"), ElementsAre("onetwo"));
}

TEST(SplitArgs, RejectsUnbalancedQuotesAndTrailingBackslash) {
  auto r = split_args("a 'b");
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.error(), HasSubstr("unbalanced single quote"));
  r = split_args("a \"b");
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.error(), HasSubstr("unbalanced double quote"));
  r = split_args("a\\");
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.error(), HasSubstr("trailing backslash"));
}

TEST(SystemdQuote, FollowsUnitFileSyntax) {
  EXPECT_EQ(systemd_quote("plain"), "plain");
  EXPECT_EQ(systemd_quote(""), "\"\"");
  EXPECT_EQ(systemd_quote("two words"), "\"two words\"");
  EXPECT_EQ(systemd_quote(R"({"a": 1})"), R"("{\"a\": 1}")");
  EXPECT_EQ(systemd_quote("back\\slash"), R"("back\\slash")");
  EXPECT_EQ(systemd_quote("100%"), "100%%");
  EXPECT_EQ(systemd_quote("$HOME"), "$$HOME");
  EXPECT_EQ(systemd_quote("$HOME", false), "$HOME") << "Environment= does not expand $";
  EXPECT_EQ(systemd_quote(";"), "\\;");
  EXPECT_EQ(systemd_quote("line\nbreak"), R"("line\nbreak")");
}

TEST(RenderUnitFile, CompleteUnitForVllmPreset) {
  auto p = preset("vllm-embedding", config::Driver::vllm, 8200);
  p.name = "RAG embedding";
  p.model_id = "BAAI/bge-m3";
  p.supports_sleep = true;
  p.sleep_mode = config::SleepMode::l1;
  p.unit_vars = {{"gpu_mem_util", "0.2"}, {"hf_overrides", R"({"x": "100%"})"}};
  p.env = {{"HF_HOME", "/var/cache/hf models"}};
  auto u = render_unit_file(p, 0, std::chrono::seconds(30));
  ASSERT_TRUE(u.ok()) << u.error();
  const std::string& t = u.value();
  EXPECT_THAT(t, HasSubstr("[Unit]\nDescription=gpumod service vllm-embedding (RAG embedding)\n"));
  EXPECT_THAT(t, HasSubstr("\n[Service]\nType=exec\n"));
  EXPECT_THAT(t, HasSubstr("\nExecStart=vllm serve BAAI/bge-m3 --host 127.0.0.1 --port 8200 "
                           "--gpu-memory-utilization 0.2 --hf-overrides \"{\\\"x\\\": \\\"100%%\\\"}\" "
                           "--enable-sleep-mode\n"));
  EXPECT_THAT(t, HasSubstr("\nEnvironment=CUDA_VISIBLE_DEVICES=0\n"));
  EXPECT_THAT(t, HasSubstr("\nEnvironment=\"HF_HOME=/var/cache/hf models\"\n"));
  EXPECT_THAT(t, HasSubstr("\nEnvironment=VLLM_SERVER_DEV_MODE=1\n"));
  EXPECT_THAT(t, HasSubstr("\nKillMode=control-group\n"));
  EXPECT_THAT(t, HasSubstr("\nTimeoutStopSec=30\n"));
  EXPECT_THAT(t, HasSubstr("\nRestart=no\n"));
}

TEST(RenderUnitFile, RenderErrorsPassThrough) {
  auto p = preset("g", config::Driver::generic, 9000);
  auto u = render_unit_file(p, 0);
  ASSERT_FALSE(u.ok());
  EXPECT_THAT(u.error(), HasSubstr("give an explicit cmd"));
}

// The one PATH lookup both runners use (their own tests check the error reaches the user).
TEST(FindExecutable, LooksInTheServicesPathTheWayExecvpDoesAndAnswersAnAbsolutePath) {
  const gpumod::testing::TempDir dir;
  const auto bin = dir.path() / "bin";
  std::filesystem::create_directories(bin);
  const auto server = dir.write("bin/my-server", "#!/bin/sh\n");
  ::chmod(server.c_str(), 0755);
  dir.write("bin/not-executable", "data");

  const std::map<std::string, std::string> env{{"PATH", "/nonexistent:" + bin.string()}};
  auto found = find_executable("my-server", env);
  ASSERT_TRUE(found) << found.error();
  EXPECT_EQ(*found, server.string());

  // A name with a slash is taken as given; a file without the execute bit is not a match.
  EXPECT_EQ(*find_executable("./my-server", env), "./my-server");
  auto plain = find_executable("not-executable", env);
  ASSERT_FALSE(plain);
  EXPECT_EQ(plain.error(), "cannot exec 'not-executable': No such file or directory (not found in PATH)");

  // An empty entry is the current directory; the answer is still absolute.
  const auto cwd = std::filesystem::current_path();
  std::filesystem::current_path(bin);
  auto here = find_executable("my-server", {{"PATH", "/nonexistent:"}});
  std::filesystem::current_path(cwd);
  ASSERT_TRUE(here) << here.error();
  EXPECT_EQ(*here, server.string());
}

}  // namespace
}  // namespace gpumod::backends
