// The embedded process runner: fork/exec of an argv (never a shell) into its own process
// group, output to a per-service log, the whole group stopped with SIGTERM then SIGKILL.
// State lives in <state_dir>/runners/<id>.json so a restarted daemon re-adopts its services.
// No PR_SET_PDEATHSIG on purpose: services outlive a daemon restart and are adopted.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>
#include <thread>

#include <spdlog/spdlog.h>

#include "backends/command.hpp"
#include "backends/run_state.hpp"
#include "backends/service_log.hpp"
#include "backends/runner.hpp"

extern char** environ;  // NOLINT(readability-redundant-declaration)

namespace gpumod::backends {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

constexpr std::uintmax_t kLogRotateBytes = 8ULL * 1024 * 1024;
constexpr auto kPollInterval = 10ms;
constexpr auto kKillWait = 10s;  // after SIGKILL, how long the kernel may take to tear down
constexpr int kExitTailLines = 10;

// What the child reports through the CLOEXEC pipe when it cannot get to exec.
struct ChildFailure {
  int stage;  // 1 setpgid, 2 chdir, 3 dup2, 4 exec
  int err;
};

struct Service {
  std::mutex mu;  // guards the fields below (reaping may race between stop and poll_exit)
  run_state::Record rec;
  fs::path record_file;
  bool is_child = false;  // forked by this runner instance (waitpid works) vs adopted
  bool reaped = false;
  int wait_status = 0;
  bool stopping = false;
};

std::string describe_status(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    const char* name = strsignal(WTERMSIG(status));
    return "killed by signal " + std::to_string(WTERMSIG(status)) + " (" + (name ? name : "?") + ")";
  }
  return "ended (wait status " + std::to_string(status) + ")";
}

// Moves an fd to 3 or above so the dup2 calls onto 0-2 in the child cannot clobber it
// (a daemon started with a closed stdin gets fd 0 from open()).
int lift_fd(int fd) {
  if (fd < 0 || fd > 2) return fd;
  int lifted = ::fcntl(fd, F_DUPFD_CLOEXEC, 3);
  ::close(fd);
  return lifted;
}

// A pidfd (Linux 5.3+) for a process: readable once it has exited. Without one (older
// kernel, process already gone) wait() just sleeps, which is what the poll loop did before.
class PidFd {
 public:
  explicit PidFd(int pid) : fd_(pid > 0 ? static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)) : -1) {}
  ~PidFd() {
    if (fd_ >= 0) ::close(fd_);
  }
  PidFd(const PidFd&) = delete;
  PidFd& operator=(const PidFd&) = delete;

  // Returns when the process exits or `limit` passes, whichever is first. Once the exit has
  // been seen the pidfd stays readable, so later calls sleep for `limit` instead of spinning
  // (the caller is then waiting for other members of the group).
  void wait(std::chrono::steady_clock::duration limit) {
    const auto ms = std::chrono::ceil<std::chrono::milliseconds>(limit);
    if (fd_ >= 0 && !exited_) {
      pollfd p{fd_, POLLIN, 0};
      const int r = ::poll(&p, 1, static_cast<int>(ms.count()));
      if (r > 0) exited_ = true;
      if (r >= 0) return;
    }
    std::this_thread::sleep_for(ms);
  }

 private:
  int fd_;
  bool exited_ = false;
};

class ProcessRunner final : public Runner {
 public:
  explicit ProcessRunner(fs::path state_dir)
      : state_dir_(std::move(state_dir)), records_dir_(state_dir_ / "runners") {
    std::error_code ec;
    fs::create_directories(records_dir_, ec);
    if (ec) spdlog::warn("process runner: cannot create {}: {}", records_dir_.string(), ec.message());
  }

  const char* kind() const override { return "process"; }

  Result<RunInfo> start(const LaunchSpec& spec) override {
    if (auto ok = run_state::check_service_id(spec.service_id); !ok) return make_error(ok.error());
    if (spec.argv.empty() || spec.argv[0].empty())
      return make_error("service '" + spec.service_id + "': empty command (argv)");
    if (auto existing = find(spec.service_id)) {
      std::lock_guard slock(existing->mu);
      if (alive_locked(*existing))
        return make_error("service '" + spec.service_id + "' is already running (pid " +
                          std::to_string(existing->rec.info.pid) + ")");
    }

    // Environment: gpumod's own, overridden by the spec.
    std::map<std::string, std::string> env;
    for (char** e = environ; e && *e; ++e) {
      std::string kv = *e;
      auto eq = kv.find('=');
      if (eq != std::string::npos) env[kv.substr(0, eq)] = kv.substr(eq + 1);
    }
    for (const auto& [k, v] : spec.env) env[k] = v;
    auto exe = find_executable(spec.argv[0], env);
    if (!exe) return make_error(exe.error());

    fs::path log_path =
        spec.log_path.empty() ? state_dir_ / "logs" / (spec.service_id + ".log") : spec.log_path;
    std::error_code ec;
    fs::create_directories(log_path.parent_path(), ec);
    if (ec)
      return make_error("cannot create log directory " + log_path.parent_path().string() + ": " +
                        ec.message());
    if (auto size = fs::file_size(log_path, ec); !ec && size > kLogRotateBytes) {
      fs::rename(log_path, log_path.string() + ".1", ec);
      if (ec) spdlog::warn("cannot rotate {}: {}", log_path.string(), ec.message());
    }
    const fs::path work_dir = spec.working_dir.empty() ? state_dir_ : spec.working_dir;

    // Everything the child needs is prepared before fork: after fork only async-signal-safe calls.
    std::vector<std::string> env_strings;
    env_strings.reserve(env.size());
    for (const auto& [k, v] : env) {
      std::string kv = k;
      kv += '=';
      kv += v;
      env_strings.push_back(std::move(kv));
    }
    std::vector<char*> envp;
    envp.reserve(env_strings.size() + 1);
    for (auto& s : env_strings) envp.push_back(s.data());
    envp.push_back(nullptr);
    std::vector<std::string> argv_copy = spec.argv;
    std::vector<char*> argvp;
    argvp.reserve(argv_copy.size() + 1);
    for (auto& s : argv_copy) argvp.push_back(s.data());
    argvp.push_back(nullptr);

    int log_fd = lift_fd(::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644));
    if (log_fd < 0) return make_error("cannot open log " + log_path.string() + ": " + std::strerror(errno));
    int null_fd = lift_fd(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    int pipe_fds[2] = {-1, -1};
    bool piped = ::pipe2(pipe_fds, O_CLOEXEC) == 0;
    if (piped) {
      pipe_fds[0] = lift_fd(pipe_fds[0]);
      pipe_fds[1] = lift_fd(pipe_fds[1]);
    }
    if (null_fd < 0 || !piped || pipe_fds[0] < 0 || pipe_fds[1] < 0) {
      std::string err = std::strerror(errno);
      ::close(log_fd);
      for (int fd : {null_fd, pipe_fds[0], pipe_fds[1]})
        if (fd >= 0) ::close(fd);
      return make_error("cannot prepare to start '" + spec.service_id + "': " + err);
    }

    pid_t pid = ::fork();
    if (pid < 0) {
      std::string err = std::strerror(errno);
      ::close(log_fd);
      ::close(null_fd);
      ::close(pipe_fds[0]);
      ::close(pipe_fds[1]);
      return make_error("cannot fork for '" + spec.service_id + "': " + err);
    }
    if (pid == 0)
      exec_child(argvp.data(), envp.data(), exe->c_str(), work_dir.c_str(), log_fd, null_fd, pipe_fds[1]);

    ::setpgid(pid, pid);  // also in the child: whichever runs first wins the race
    ::close(pipe_fds[1]);
    ::close(log_fd);
    ::close(null_fd);
    ChildFailure failure{};
    ssize_t n;
    do {
      n = ::read(pipe_fds[0], &failure, sizeof failure);
    } while (n < 0 && errno == EINTR);
    ::close(pipe_fds[0]);
    if (n == static_cast<ssize_t>(sizeof failure)) {
      int status = 0;
      ::waitpid(pid, &status, 0);
      const char* what = failure.stage == 2   ? "cannot chdir to '"
                         : failure.stage == 4 ? "cannot exec '"
                                              : "cannot set up the process for '";
      std::string target = failure.stage == 2 ? work_dir.string() : spec.argv[0];
      return make_error(std::string(what) + target + "': " + std::strerror(failure.err));
    }

    auto svc = std::make_shared<Service>();
    svc->is_child = true;
    svc->rec.runner = "process";
    svc->rec.info.service_id = spec.service_id;
    svc->rec.info.pid = pid;
    svc->rec.info.pgid = pid;
    auto st = run_state::read_proc_stat(pid);
    svc->rec.info.start_time = st ? st->start_time : 0;
    svc->rec.info.argv_hash = hash_argv(spec.argv, spec.env);
    svc->rec.log_path = log_path;
    svc->rec.argv = spec.argv;
    svc->record_file = records_dir_ / (spec.service_id + ".json");
    if (auto saved = run_state::save_record(svc->record_file, svc->rec); !saved)
      spdlog::error("service '{}': {} (it runs, but a daemon restart will not adopt it)", spec.service_id,
                    saved.error());
    spdlog::info("service '{}' started: pid {} ({}), log {}", spec.service_id, pid, spec.argv[0],
                 log_path.string());
    RunInfo info = svc->rec.info;
    services_.put(spec.service_id, std::move(svc));
    return info;
  }

  Result<void> stop(const std::string& service_id, std::chrono::milliseconds grace,
                    const StopSignalled& signalled) override {
    auto svc = find(service_id);
    if (!svc) return {};  // nothing of it runs under this runner
    {
      std::lock_guard slock(svc->mu);
      svc->stopping = true;
    }
    const int pgid = svc->rec.info.pgid;
    // Wakes as soon as the leader exits (no polling delay on the common path); members of the
    // group that outlive it are checked every kPollInterval.
    PidFd leader(svc->rec.info.pid);
    auto group_gone = [&] {
      std::lock_guard slock(svc->mu);
      reap_locked(*svc);
      return !leader_alive_locked(*svc) && run_state::pids_in_group(pgid).empty();
    };
    auto wait_gone = [&](std::chrono::milliseconds limit) {
      const auto deadline = std::chrono::steady_clock::now() + limit;
      while (!group_gone()) {
        const auto now = std::chrono::steady_clock::now();
        if (now >= deadline) return false;
        leader.wait(std::min<std::chrono::steady_clock::duration>(kPollInterval, deadline - now));
      }
      return true;
    };

    bool gone = group_gone();
    if (!gone) {
      signal_group(*svc, SIGTERM);
      if (signalled) signalled();
      gone = wait_gone(grace);
    }
    if (!gone) {
      spdlog::warn("service '{}': still running {} ms after SIGTERM, sending SIGKILL to group {}", service_id,
                   grace.count(), pgid);
      signal_group(*svc, SIGKILL);
      gone = wait_gone(std::chrono::duration_cast<std::chrono::milliseconds>(kKillWait));
    }
    if (!gone) {
      std::lock_guard slock(svc->mu);
      svc->stopping = false;
      return make_error("service '" + service_id + "': process group " + std::to_string(pgid) +
                        " still alive after SIGKILL");
    }
    forget(service_id, svc);
    spdlog::info("service '{}' stopped", service_id);
    return {};
  }

  std::optional<ExitInfo> poll_exit(const std::string& service_id) override {
    auto svc = find(service_id);
    if (!svc) return std::nullopt;
    ExitInfo exit;
    {
      std::lock_guard slock(svc->mu);
      if (svc->stopping) return std::nullopt;
      reap_locked(*svc);
      if (leader_alive_locked(*svc)) return std::nullopt;
      if (svc->is_child && svc->reaped) {
        exit.exit_code = WIFEXITED(svc->wait_status) ? WEXITSTATUS(svc->wait_status) : -1;
        exit.signal = WIFSIGNALED(svc->wait_status) ? WTERMSIG(svc->wait_status) : 0;
        exit.message = describe_status(svc->wait_status);
      } else {
        exit.message = "process " + std::to_string(svc->rec.info.pid) +
                       " (adopted, not our child) ended; its exit status is unknown";
      }
      svc->stopping = true;  // from here on this service is being forgotten
    }
    // The leader is gone; nothing of its group may linger (a vLLM EngineCore, for one).
    if (auto rest = run_state::pids_in_group(svc->rec.info.pgid); !rest.empty()) {
      ::kill(-svc->rec.info.pgid, SIGKILL);
      exit.message += "; killed " + std::to_string(rest.size()) + " leftover process(es) of its group";
    }
    std::string tail = tail_lines(svc->rec.log_path, kExitTailLines);
    if (!tail.empty()) exit.message += "; last log lines:\n" + tail;
    forget(service_id, svc);
    spdlog::warn("service '{}' {}", service_id, exit.message);
    return exit;
  }

  bool running(const std::string& service_id) override {
    auto svc = find(service_id);
    if (!svc) return false;
    std::lock_guard slock(svc->mu);
    return alive_locked(*svc);
  }

  std::vector<int> pids(const std::string& service_id) override {
    auto svc = find(service_id);
    if (!svc) return {};
    return run_state::pids_in_group(svc->rec.info.pgid);
  }

  std::vector<RunInfo> adopt() override {
    std::vector<RunInfo> adopted;
    for (auto& [file, rec] : run_state::load_records(records_dir_, "process")) {
      const std::string id = rec.info.service_id;
      if (auto existing = find(id)) {
        adopted.push_back(existing->rec.info);
        continue;
      }
      auto st = run_state::read_proc_stat(rec.info.pid);
      const bool ours =
          st && st->state != 'Z' && rec.info.start_time != 0 && st->start_time == rec.info.start_time;
      if (!ours) {
        if (st && st->state != 'Z')
          spdlog::warn(
              "service '{}': pid {} now belongs to another process (start time {} != {}); not touched", id,
              rec.info.pid, st->start_time, rec.info.start_time);
        else
          spdlog::info("service '{}': pid {} from the last run is gone; forgetting it", id, rec.info.pid);
        std::error_code ec;
        fs::remove(file, ec);
        continue;
      }
      auto svc = std::make_shared<Service>();
      svc->rec = rec;
      svc->record_file = file;
      svc->is_child = false;
      spdlog::info("service '{}': adopted running pid {} (group {})", id, rec.info.pid, rec.info.pgid);
      adopted.push_back(rec.info);
      services_.put(id, std::move(svc));
    }
    return adopted;
  }

 private:
  [[noreturn]] static void exec_child(char** argv, char** envp, const char* exe, const char* work_dir,
                                      int log_fd, int null_fd, int err_fd) {
    auto fail = [&err_fd](int stage) {
      ChildFailure f{stage, errno};
      ssize_t ignored = ::write(err_fd, &f, sizeof f);
      (void)ignored;
      ::_exit(127);
    };
    if (::setpgid(0, 0) != 0) fail(1);
    // The daemon may block or ignore signals for its own reasons; a service starts clean.
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; ++sig) ::sigaction(sig, &dfl, nullptr);
    if (::chdir(work_dir) != 0) fail(2);
    if (::dup2(null_fd, STDIN_FILENO) < 0 || ::dup2(log_fd, STDOUT_FILENO) < 0 ||
        ::dup2(log_fd, STDERR_FILENO) < 0)
      fail(3);
    // Keep only 0-2 and the error pipe (moved to fd 3, still CLOEXEC).
    if (err_fd != 3) {
      if (::dup3(err_fd, 3, O_CLOEXEC) < 0) fail(3);
      err_fd = 3;
    }
    ::close_range(4, ~0U, 0);
    ::execve(exe, argv, envp);
    fail(4);
    ::_exit(127);  // not reached
  }

  std::shared_ptr<Service> find(const std::string& id) { return services_.find(id); }
  void forget(const std::string& id, const std::shared_ptr<Service>& svc) { services_.forget(id, svc); }

  static void reap_locked(Service& s) {
    if (!s.is_child || s.reaped) return;
    int status = 0;
    pid_t r = ::waitpid(s.rec.info.pid, &status, WNOHANG);
    if (r == s.rec.info.pid) {
      s.reaped = true;
      s.wait_status = status;
    } else if (r < 0 && errno == ECHILD) {
      s.reaped = true;  // someone else reaped it; status unknown
      s.wait_status = 0;
    }
  }

  static bool leader_alive_locked(const Service& s) {
    if (s.is_child) return !s.reaped;
    return run_state::same_process_alive(s.rec.info.pid, s.rec.info.start_time);
  }

  static bool alive_locked(Service& s) {
    reap_locked(s);
    return leader_alive_locked(s);
  }

  // Signal the group only while it is provably ours: the leader is our (unreaped) child or
  // has the recorded start time, or members of the group remain (a group id cannot be
  // reused while any member lives).
  static void signal_group(Service& s, int sig) {
    std::lock_guard slock(s.mu);
    reap_locked(s);
    const int pgid = s.rec.info.pgid;
    if (leader_alive_locked(s) || !run_state::pids_in_group(pgid).empty()) {
      if (::kill(-pgid, sig) != 0 && errno != ESRCH)
        spdlog::warn("kill(-{}, {}): {}", pgid, sig, std::strerror(errno));
    }
  }

  fs::path state_dir_;
  fs::path records_dir_;
  run_state::ServiceTable<Service> services_;
};

}  // namespace

std::unique_ptr<Runner> make_process_runner(const std::filesystem::path& state_dir) {
  return std::make_unique<ProcessRunner>(state_dir);
}

}  // namespace gpumod::backends
