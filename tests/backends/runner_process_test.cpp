// The process runner against real processes: /bin/sh scripts and /bin/sleep stand in for
// model servers (the tests may use a shell; gpumod itself never does).
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "backends/run_state.hpp"
#include "backends/service_log.hpp"
#include "backends/runner.hpp"
#include "tests/support/eventually.hpp"
#include "tests/support/temp_dir.hpp"

extern char** environ;  // NOLINT(readability-redundant-declaration)

namespace gpumod::backends {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using gpumod::testing::eventually;
using gpumod::testing::TempDir;

std::string read_file(const fs::path& p) {
  std::ifstream in(p);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Independent of the runner's own /proc helpers: live (non-zombie) members of a group.
std::vector<int> live_members(int pgid) {
  std::vector<int> out;
  for (const auto& e : fs::directory_iterator("/proc")) {
    const std::string name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::string stat = read_file(e.path() / "stat");
    auto close = stat.rfind(')');
    if (close == std::string::npos) continue;
    char state = 0;
    int ppid = 0;
    int pg = 0;
    if (std::sscanf(stat.c_str() + close + 1, " %c %d %d", &state, &ppid, &pg) == 3 && pg == pgid &&
        state != 'Z')
      out.push_back(std::stoi(name));
  }
  return out;
}

bool alive_not_zombie(int pid) {
  std::string stat = read_file("/proc/" + std::to_string(pid) + "/stat");
  auto close = stat.rfind(')');
  return close != std::string::npos && close + 2 < stat.size() && stat[close + 2] != 'Z';
}

// Whatever a failing test leaves behind is killed: the group of every service it started.
class GroupReaper {
 public:
  void watch(int pgid) { pgids_.push_back(pgid); }
  ~GroupReaper() {
    for (int g : pgids_)
      if (g > 0 && ::testing::Test::HasFailure() && !live_members(g).empty()) ::kill(-g, SIGKILL);
    while (::waitpid(-1, nullptr, WNOHANG) > 0) {
    }
  }

 private:
  std::vector<int> pgids_;
};

class ProcessRunnerTest : public ::testing::Test {
 protected:
  LaunchSpec sh(const std::string& id, const std::string& script) {
    LaunchSpec s;
    s.service_id = id;
    s.argv = {"/bin/sh", "-c", script};
    s.log_path = dir.path() / "logs" / (id + ".log");
    return s;
  }
  RunInfo start_ok(Runner& r, const LaunchSpec& spec) {
    auto info = r.start(spec);
    EXPECT_TRUE(info.ok()) << (info.ok() ? "" : info.error());
    if (!info.ok()) return {};
    reaper.watch(info->pgid);
    return info.value();
  }

  TempDir dir{"gpumod-runner"};
  GroupReaper reaper;
};

TEST_F(ProcessRunnerTest, StartRunsInOwnGroupCapturesLogAndPersistsState) {
  auto runner = make_process_runner(dir.path());
  EXPECT_STREQ(runner->kind(), "process");
  auto spec = sh("svc", "echo \"hello $GREETING\"; echo to-stderr >&2; pwd; exec sleep 300");
  spec.env["GREETING"] = "from-spec";
  spec.working_dir = dir.path();
  RunInfo info = start_ok(*runner, spec);
  ASSERT_GT(info.pid, 0);
  EXPECT_EQ(info.pgid, info.pid) << "the service leads its own process group";
  EXPECT_EQ(::getpgid(info.pid), info.pid);
  EXPECT_NE(info.start_time, 0u);
  EXPECT_EQ(info.argv_hash, hash_argv(spec.argv, spec.env));
  EXPECT_TRUE(runner->running("svc"));

  ASSERT_TRUE(eventually([&] {
    std::string log = read_file(spec.log_path);
    return log.find("hello from-spec") != std::string::npos && log.find("to-stderr") != std::string::npos &&
           log.find(dir.path().string()) != std::string::npos;
  })) << read_file(spec.log_path);

  const fs::path record = dir.path() / "runners" / "svc.json";
  ASSERT_TRUE(fs::exists(record));
  auto j = nlohmann::json::parse(read_file(record));
  EXPECT_EQ(j.at("pid").get<int>(), info.pid);
  EXPECT_EQ(j.at("start_time").get<std::uint64_t>(), info.start_time);
  EXPECT_EQ(j.at("log_path").get<std::string>(), spec.log_path.string());

  auto pids = runner->pids("svc");
  EXPECT_EQ(pids, std::vector<int>{info.pid});

  ASSERT_TRUE(runner->stop("svc", 5s).ok());
  EXPECT_FALSE(runner->running("svc"));
  EXPECT_TRUE(live_members(info.pgid).empty());
  EXPECT_FALSE(fs::exists(record)) << "the state record goes away with the service";
  EXPECT_FALSE(runner->poll_exit("svc").has_value()) << "a requested stop is not reported as an exit";
}

TEST_F(ProcessRunnerTest, InheritsDaemonEnvironmentAndSpecOverrides) {
  ::setenv("GPUMOD_TEST_INHERITED", "daemon-value", 1);
  ::setenv("GPUMOD_TEST_OVERRIDDEN", "daemon-value", 1);
  auto runner = make_process_runner(dir.path());
  auto spec = sh("env", "echo \"i=$GPUMOD_TEST_INHERITED o=$GPUMOD_TEST_OVERRIDDEN\"; exec sleep 300");
  spec.env["GPUMOD_TEST_OVERRIDDEN"] = "spec-value";
  start_ok(*runner, spec);
  EXPECT_TRUE(eventually([&] {
    return read_file(spec.log_path).find("i=daemon-value o=spec-value") != std::string::npos;
  })) << read_file(spec.log_path);
  EXPECT_TRUE(runner->stop("env", 5s).ok());
  ::unsetenv("GPUMOD_TEST_INHERITED");
  ::unsetenv("GPUMOD_TEST_OVERRIDDEN");
}

TEST_F(ProcessRunnerTest, StopKillsTheWholeGroupIncludingGrandchildren) {
  auto runner = make_process_runner(dir.path());
  // The background sleep stands in for a vLLM EngineCore child of the server process.
  RunInfo info = start_ok(*runner, sh("grp", "sleep 300 & sleep 300"));
  ASSERT_TRUE(eventually([&] { return runner->pids("grp").size() >= 3; }))
      << "sh plus two sleeps expected, got " << runner->pids("grp").size();
  ASSERT_GE(live_members(info.pgid).size(), 3u);

  ASSERT_TRUE(runner->stop("grp", 5s).ok());
  EXPECT_TRUE(live_members(info.pgid).empty()) << "no process of the group may survive a stop";
  EXPECT_TRUE(runner->pids("grp").empty());
}

TEST_F(ProcessRunnerTest, SigtermIgnoredLeadsToSigkillAfterGrace) {
  auto runner = make_process_runner(dir.path());
  auto spec = sh("stubborn", "trap '' TERM; echo ready; sleep 300 & while :; do sleep 1; done");
  RunInfo info = start_ok(*runner, spec);
  ASSERT_TRUE(eventually([&] { return read_file(spec.log_path).find("ready") != std::string::npos; }));
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(runner->stop("stubborn", 300ms).ok());
  // Lower bound only: the runner must have given SIGTERM its grace before escalating.
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 300ms);
  EXPECT_TRUE(live_members(info.pgid).empty());
  EXPECT_FALSE(runner->running("stubborn"));
}

// The scheduler starts watching GPU memory when SIGTERM goes out, not when the process is
// gone: the callback must come while a slow-exiting service is still running, exactly once.
TEST_F(ProcessRunnerTest, StopSignalledCallbackComesAfterSigtermBeforeTheExit) {
  auto runner = make_process_runner(dir.path());
  auto spec =
      sh("slowexit", "trap 'echo term; sleep 0.3; exit 0' TERM; echo ready; while :; do sleep 0.05; done");
  RunInfo info = start_ok(*runner, spec);
  ASSERT_TRUE(eventually([&] { return read_file(spec.log_path).find("ready") != std::string::npos; }));
  int calls = 0;
  bool leader_alive_at_signal = false;
  ASSERT_TRUE(runner
                  ->stop("slowexit", 5s,
                         [&] {
                           ++calls;
                           leader_alive_at_signal = alive_not_zombie(info.pid);
                         })
                  .ok());
  EXPECT_EQ(calls, 1);
  EXPECT_TRUE(leader_alive_at_signal) << "the callback came only after the process was gone";
  EXPECT_NE(read_file(spec.log_path).find("term"), std::string::npos);  // it did get SIGTERM
  EXPECT_TRUE(live_members(info.pgid).empty());

  // Nothing running: no signal, no callback.
  EXPECT_TRUE(runner->stop("slowexit", 5s, [&] { ++calls; }).ok());
  EXPECT_EQ(calls, 1);
}

TEST_F(ProcessRunnerTest, CrashIsReportedOnceWithStatusAndLogTail) {
  auto runner = make_process_runner(dir.path());
  auto spec =
      sh("crash",
         "for i in 1 2 3 4 5 6 7 8 9 10 11 12; do echo line-$i; done; echo 'fatal: out of cheese'; exit 3");
  start_ok(*runner, spec);
  std::optional<ExitInfo> exit;
  ASSERT_TRUE(eventually([&] { return (exit = runner->poll_exit("crash")).has_value(); }));
  EXPECT_EQ(exit->exit_code, 3);
  EXPECT_EQ(exit->signal, 0);
  EXPECT_NE(exit->message.find("exited with status 3"), std::string::npos) << exit->message;
  EXPECT_NE(exit->message.find("fatal: out of cheese"), std::string::npos) << exit->message;
  EXPECT_NE(exit->message.find("line-12"), std::string::npos) << exit->message;
  EXPECT_EQ(exit->message.find("line-1\n"), std::string::npos) << "only the last lines: " << exit->message;
  EXPECT_FALSE(runner->poll_exit("crash").has_value()) << "an exit is reported once";
  EXPECT_FALSE(runner->running("crash"));
  EXPECT_FALSE(fs::exists(dir.path() / "runners" / "crash.json"));
  // The name is free again.
  start_ok(*runner, sh("crash", "exec sleep 300"));
  EXPECT_TRUE(runner->stop("crash", 5s).ok());
}

TEST_F(ProcessRunnerTest, LeaderDeathKillsLeftoverGroupMembers) {
  auto runner = make_process_runner(dir.path());
  // The leader dies by a signal while its child (an "EngineCore") keeps running.
  RunInfo info = start_ok(*runner, sh("orphaning", "sleep 300 & echo started; kill -KILL $$"));
  std::optional<ExitInfo> exit;
  ASSERT_TRUE(eventually([&] { return (exit = runner->poll_exit("orphaning")).has_value(); }));
  EXPECT_EQ(exit->exit_code, -1);
  EXPECT_EQ(exit->signal, SIGKILL);
  EXPECT_NE(exit->message.find("killed by signal 9"), std::string::npos) << exit->message;
  EXPECT_TRUE(eventually([&] { return live_members(info.pgid).empty(); }))
      << "no orphan may outlive its leader";
}

TEST_F(ProcessRunnerTest, ExecFailureIsReportedClearly) {
  auto runner = make_process_runner(dir.path());
  LaunchSpec spec;
  spec.service_id = "missing";
  spec.log_path = dir.path() / "missing.log";

  spec.argv = {"/nonexistent/gpumod-no-such-server", "--port", "1"};
  auto r = runner->start(spec);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error(), "cannot exec '/nonexistent/gpumod-no-such-server': No such file or directory");

  spec.argv = {"gpumod-no-such-server-in-path"};
  r = runner->start(spec);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().find("cannot exec 'gpumod-no-such-server-in-path': No such file or directory"),
            std::string::npos)
      << r.error();

  const fs::path not_exec = dir.path() / "not-executable";
  std::ofstream(not_exec) << "#!/bin/sh\necho hi\n";
  spec.argv = {not_exec.string()};
  r = runner->start(spec);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error(), "cannot exec '" + not_exec.string() + "': Permission denied");

  spec.argv = {"/bin/true"};
  spec.working_dir = dir.path() / "no-such-dir";
  r = runner->start(spec);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().find("cannot chdir to '" + spec.working_dir.string() + "'"), std::string::npos)
      << r.error();

  EXPECT_FALSE(runner->running("missing"));
  EXPECT_FALSE(fs::exists(dir.path() / "runners" / "missing.json"));
}

TEST_F(ProcessRunnerTest, PathLookupUsesTheServiceEnvironment) {
  const fs::path bin = dir.path() / "bin";
  fs::create_directories(bin);
  const fs::path tool = bin / "gpumod-fake-server";
  std::ofstream(tool) << "#!/bin/sh\necho fake-server-ran \"$@\"\nexec sleep 300\n";
  fs::permissions(tool, fs::perms::owner_all);
  auto runner = make_process_runner(dir.path());
  LaunchSpec spec;
  spec.service_id = "pathy";
  spec.argv = {"gpumod-fake-server", "--port", "7070"};
  spec.env["PATH"] = bin.string() + ":/usr/bin:/bin";
  spec.log_path = dir.path() / "pathy.log";
  start_ok(*runner, spec);
  EXPECT_TRUE(eventually(
      [&] { return read_file(spec.log_path).find("fake-server-ran --port 7070") != std::string::npos; }));
  EXPECT_TRUE(runner->stop("pathy", 5s).ok());
}

TEST_F(ProcessRunnerTest, StartingARunningServiceAgainIsRefused) {
  auto runner = make_process_runner(dir.path());
  RunInfo info = start_ok(*runner, sh("once", "exec sleep 300"));
  auto again = runner->start(sh("once", "exec sleep 300"));
  ASSERT_FALSE(again.ok());
  EXPECT_NE(again.error().find("already running (pid " + std::to_string(info.pid) + ")"), std::string::npos)
      << again.error();
  EXPECT_TRUE(runner->stop("once", 5s).ok());
}

TEST_F(ProcessRunnerTest, NewRunnerOverSameStateDirAdoptsAndStops) {
  RunInfo info;
  {
    auto first = make_process_runner(dir.path());
    info = start_ok(*first, sh("adoptee", "sleep 300 & exec sleep 300"));
    ASSERT_TRUE(eventually([&] { return first->pids("adoptee").size() == 2; }));
  }  // the "daemon" goes away; its services keep running
  ASSERT_TRUE(alive_not_zombie(info.pid));

  auto second = make_process_runner(dir.path());
  EXPECT_FALSE(second->running("adoptee")) << "nothing is known before adopt()";
  auto adopted = second->adopt();
  ASSERT_EQ(adopted.size(), 1u);
  EXPECT_EQ(adopted[0].service_id, "adoptee");
  EXPECT_EQ(adopted[0].pid, info.pid);
  EXPECT_EQ(adopted[0].start_time, info.start_time);
  EXPECT_EQ(adopted[0].argv_hash, info.argv_hash);
  EXPECT_TRUE(second->running("adoptee"));
  EXPECT_EQ(second->pids("adoptee").size(), 2u);
  EXPECT_FALSE(second->poll_exit("adoptee").has_value());

  auto again = second->start(sh("adoptee", "exec sleep 300"));
  EXPECT_FALSE(again.ok()) << "an adopted service must not be started twice";
  EXPECT_EQ(live_members(info.pgid).size(), 2u);
  EXPECT_EQ(second->adopt().size(), 1u) << "adopt() is idempotent";

  ASSERT_TRUE(second->stop("adoptee", 5s).ok());
  EXPECT_TRUE(live_members(info.pgid).empty());
  EXPECT_FALSE(fs::exists(dir.path() / "runners" / "adoptee.json"));
  ::waitpid(info.pid, nullptr, 0);  // in this test the "old daemon" was us: collect the zombie
}

TEST_F(ProcessRunnerTest, AdoptedServiceThatDiesIsReported) {
  RunInfo info;
  {
    auto first = make_process_runner(dir.path());
    info = start_ok(*first, sh("fragile", "exec sleep 300"));
  }
  auto second = make_process_runner(dir.path());
  ASSERT_EQ(second->adopt().size(), 1u);
  ::kill(info.pid, SIGKILL);
  ::waitpid(info.pid, nullptr, 0);
  std::optional<ExitInfo> exit;
  ASSERT_TRUE(eventually([&] { return (exit = second->poll_exit("fragile")).has_value(); }));
  EXPECT_NE(exit->message.find("adopted"), std::string::npos) << exit->message;
  EXPECT_FALSE(second->running("fragile"));
  EXPECT_FALSE(fs::exists(dir.path() / "runners" / "fragile.json"));
}

TEST_F(ProcessRunnerTest, DeadRecordIsCleanedUp) {
  // A pid that surely existed and is gone now.
  pid_t dead = 0;
  char* argv[] = {const_cast<char*>("/bin/true"), nullptr};
  ASSERT_EQ(::posix_spawn(&dead, "/bin/true", nullptr, nullptr, argv, environ), 0);
  ::waitpid(dead, nullptr, 0);

  run_state::Record rec;
  rec.runner = "process";
  rec.info.service_id = "ghost";
  rec.info.pid = dead;
  rec.info.pgid = dead;
  rec.info.start_time = 12345;
  const fs::path file = dir.path() / "runners" / "ghost.json";
  ASSERT_TRUE(run_state::save_record(file, rec).ok());

  auto runner = make_process_runner(dir.path());
  EXPECT_TRUE(runner->adopt().empty());
  EXPECT_FALSE(fs::exists(file));
  EXPECT_FALSE(runner->running("ghost"));
}

TEST_F(ProcessRunnerTest, PidReusedByAnotherProgramIsNotAdoptedNorTouched) {
  // An unrelated program (not started by any runner) now holds the recorded pid.
  pid_t other = 0;
  char* argv[] = {const_cast<char*>("/bin/sleep"), const_cast<char*>("300"), nullptr};
  ASSERT_EQ(::posix_spawn(&other, "/bin/sleep", nullptr, nullptr, argv, environ), 0);
  struct KillOther {
    pid_t pid;
    ~KillOther() {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
  } cleanup{other};
  auto real = run_state::read_proc_stat(other);
  ASSERT_TRUE(real.has_value());

  run_state::Record rec;
  rec.runner = "process";
  rec.info.service_id = "reused";
  rec.info.pid = other;
  rec.info.pgid = real->pgid;  // even the group matches: only the start time tells them apart
  rec.info.start_time = real->start_time + 1000;
  const fs::path file = dir.path() / "runners" / "reused.json";
  ASSERT_TRUE(run_state::save_record(file, rec).ok());

  auto runner = make_process_runner(dir.path());
  EXPECT_TRUE(runner->adopt().empty());
  EXPECT_FALSE(fs::exists(file));
  EXPECT_FALSE(runner->running("reused"));
  EXPECT_TRUE(runner->stop("reused", 100ms).ok());
  EXPECT_TRUE(alive_not_zombie(other)) << "a process that is not ours must be left alone";
}

TEST_F(ProcessRunnerTest, RecordsOfOtherRunnersAndBrokenFilesAreLeftAlone) {
  run_state::Record rec;
  rec.runner = "systemd";
  rec.info.service_id = "unit-svc";
  rec.info.unit = "gpumod-unit-svc.service";
  const fs::path unit_file = dir.path() / "runners" / "unit-svc.unit.json";
  ASSERT_TRUE(run_state::save_record(unit_file, rec).ok());
  const fs::path broken = dir.path() / "runners" / "broken.json";
  std::ofstream(broken) << "{ not json";

  auto runner = make_process_runner(dir.path());
  EXPECT_TRUE(runner->adopt().empty());
  EXPECT_TRUE(fs::exists(unit_file));
  EXPECT_TRUE(fs::exists(broken));
}

TEST_F(ProcessRunnerTest, OversizedLogIsRotatedAtStart) {
  auto runner = make_process_runner(dir.path());
  auto spec = sh("big", "echo fresh-start; exec sleep 300");
  fs::create_directories(spec.log_path.parent_path());
  {
    std::ofstream(spec.log_path) << "old-content\n";
    fs::resize_file(spec.log_path, 9ULL * 1024 * 1024);
  }
  start_ok(*runner, spec);
  const fs::path rotated = spec.log_path.string() + ".1";
  ASSERT_TRUE(fs::exists(rotated));
  EXPECT_EQ(fs::file_size(rotated), 9ULL * 1024 * 1024);
  EXPECT_TRUE(eventually([&] { return read_file(spec.log_path) == "fresh-start\n"; }));
  EXPECT_TRUE(runner->stop("big", 5s).ok());
}

TEST_F(ProcessRunnerTest, BadServiceIdsAndEmptyArgvAreRefused) {
  auto runner = make_process_runner(dir.path());
  for (const std::string id : {"", "../escape", ".hidden", "a/b"}) {
    auto r = runner->start(sh(id, "true"));
    EXPECT_FALSE(r.ok()) << "id '" << id << "' must be refused";
  }
  LaunchSpec empty;
  empty.service_id = "empty";
  auto r = runner->start(empty);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().find("empty command"), std::string::npos) << r.error();
}

TEST_F(ProcessRunnerTest, ConcurrentStartsAndStopsOfDifferentServices) {
  auto runner = make_process_runner(dir.path());
  constexpr int kServices = 6;
  std::vector<std::thread> threads;
  threads.reserve(kServices);
  std::vector<int> ok(kServices, 0);
  std::vector<int> pgids(kServices, 0);
  for (int i = 0; i < kServices; ++i) {
    threads.emplace_back([&, i] {
      auto r = runner->start(sh("c" + std::to_string(i), "sleep 300 & exec sleep 300"));
      if (r.ok()) {
        pgids[i] = r->pgid;
        ok[i] = runner->stop("c" + std::to_string(i), 5s).ok() ? 1 : 0;
      }
    });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < kServices; ++i) {
    reaper.watch(pgids[i]);
    EXPECT_EQ(ok[i], 1) << "service c" << i;
    EXPECT_TRUE(live_members(pgids[i]).empty());
  }
}

TEST(RunState, ParsesProcStatWithAwkwardCommandNames) {
  auto st = run_state::parse_proc_stat(
      "4242 (evil) (name Z 1 2) S 1 4240 4240 0 -1 4194304 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10");
  ASSERT_TRUE(st.has_value());
  EXPECT_EQ(st->pid, 4242);
  EXPECT_EQ(st->state, 'S');
  EXPECT_EQ(st->ppid, 1);
  EXPECT_EQ(st->pgid, 4240);
  EXPECT_EQ(st->start_time, 987654u);
  EXPECT_FALSE(run_state::parse_proc_stat("garbage").has_value());
  EXPECT_FALSE(run_state::parse_proc_stat("12 (short) S 1 2").has_value());
}

TEST(RunState, OwnStartTimeMatchesProc) {
  auto st = run_state::read_proc_stat(::getpid());
  ASSERT_TRUE(st.has_value());
  EXPECT_EQ(st->pgid, ::getpgrp());
  EXPECT_TRUE(run_state::same_process_alive(::getpid(), st->start_time));
  EXPECT_FALSE(run_state::same_process_alive(::getpid(), st->start_time + 1));
}

TEST(RunState, TailKeepsTheLastLines) {
  TempDir dir;
  std::ofstream(dir / "log") << "a\nb\nc\nd\n";
  EXPECT_EQ(backends::tail_lines(dir / "log", 2), "c\nd");
  EXPECT_EQ(backends::tail_lines(dir / "log", 10), "a\nb\nc\nd");
  EXPECT_EQ(backends::tail_lines(dir / "missing", 3), "");
}

TEST(HashArgv, StableAndSensitiveToArgvAndEnv) {
  const std::vector<std::string> argv{"vllm", "serve", "m"};
  const std::map<std::string, std::string> env{{"CUDA_VISIBLE_DEVICES", "0"}};
  EXPECT_EQ(hash_argv(argv, env), hash_argv(argv, env));
  EXPECT_EQ(hash_argv(argv, env).size(), 16u);
  EXPECT_NE(hash_argv(argv, env), hash_argv({"vllm", "serve", "n"}, env));
  EXPECT_NE(hash_argv(argv, env), hash_argv(argv, {{"CUDA_VISIBLE_DEVICES", "1"}}));
  EXPECT_NE(hash_argv({"ab", "c"}, {}), hash_argv({"a", "bc"}, {})) << "word boundaries count";
}

}  // namespace
}  // namespace gpumod::backends
