#include "tests/e2e/daemon_fixture.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>

namespace gpumod::e2e {

void write_file(const fs::path& path, const std::string& text) {
  fs::create_directories(path.parent_path());
  std::ofstream out(path);
  out << text;
}

EnginePreset engine_preset(const std::string& id, const std::string& protocol, int port, int vram_mb,
                           int load_ms, const std::string& sleep_mode) {
  EnginePreset p;
  p.id = id;
  p.protocol = protocol;
  p.driver = (protocol == "router" || protocol == "llamacpp") ? "llamacpp" : protocol;
  p.port = port;
  p.vram_mb = vram_mb;
  p.load_ms = load_ms;
  p.sleep_mode = sleep_mode;
  return p;
}

void write_config(const fs::path& dir, const GeneratedConfig& cfg) {
  std::ostringstream d;
  d << "gpus:\n  probe: sim\n  sim:\n    - name: e2e-gpu\n      memory_mb: " << cfg.gpu_mb << "\n"
    << "  sim_release_lag: " << cfg.release_lag_ms << "ms\n"
    << "policy:\n  headroom_mb: " << cfg.headroom_mb
    << "\n  vram_release_timeout: " << cfg.vram_release_timeout << "\n  queue_max: " << cfg.queue_max
    << "\n  stop_grace: 3s\n";
  if (!cfg.stall_timeout.empty()) d << "  stall_timeout: " << cfg.stall_timeout << "\n";
  if (!cfg.api_token.empty()) d << "api_token: " << cfg.api_token << "\n";
  write_file(dir / "gpumod.yaml", d.str());
  for (const auto& p : cfg.presets) {
    std::ostringstream y;
    const std::string model = p.model.empty() ? p.id : p.model;
    y << "id: " << p.id << "\nname: " << p.id << "\ndriver: " << p.driver << "\nport: " << p.port
      << "\nvram_mb: " << p.vram_mb << "\nmodel_id: " << model << "\nstartup_timeout: " << p.startup_timeout_s
      << "\n"
      << "priority: " << p.priority << "\n";
    if (p.sleep_mode != "none") y << "supports_sleep: true\nsleep_mode: " << p.sleep_mode << "\n";
    // vLLM claims gpu_memory_utilization x total at start (and the driver checks that much is
    // free first): give it the share of the GPU the preset declares, as a real preset would.
    if (p.driver == "vllm") {
      const double share = static_cast<double>(p.vram_mb) / cfg.gpu_mb;
      y << "unit_vars:\n  gpu_mem_util: \"" << std::min(1.0, share + 0.005) << "\"\n";
    }
    if (p.protocol == "router") y << "models: [" << model << "]\n";
    if (!p.aliases.empty()) {
      y << "aliases:\n";
      for (const auto& a : p.aliases) y << "  - " << a << "\n";
    }
    y << "cmd:\n  - " << kEngineBin << "\n  - --port\n  - \"" << p.port << "\"\n  - --protocol\n  - "
      << p.protocol << "\n  - --model\n  - " << model << "\n  - --vram-mb\n  - \"" << p.vram_mb
      << "\"\n  - --load-ms\n  - \"" << p.load_ms << "\"\n";
    if (p.protocol == "router") y << "  - --models\n  - " << model << "\n";
    for (const auto& a : p.extra_engine_args) y << "  - \"" << a << "\"\n";
    write_file(dir / "presets" / (p.id + ".yaml"), y.str());
  }
  for (const auto& [id, services] : cfg.modes) {
    std::ostringstream y;
    y << "id: " << id << "\nname: " << id << "\nservices:\n";
    for (const auto& s : services) y << "  - " << s << "\n";
    if (services.empty()) {
      y.str("");
      y << "id: " << id << "\nname: " << id << "\nservices: []\n";
    }
    write_file(dir / "modes" / (id + ".yaml"), y.str());
  }
}

Daemon::Daemon(const fs::path& config_dir, const fs::path& state_dir, std::vector<std::string> extra_args)
    : state_dir_(state_dir), log_path_(state_dir / "daemon.log") {
  fs::create_directories(state_dir_);
  // Port 0: the kernel picks a port no one holds, and serve writes it to the port file once it
  // listens (no free-port guess that a parallel test could take first).
  const fs::path port_file = state_dir_ / "serve.port";
  fs::remove(port_file);
  std::vector<std::string> args = {
      kGpumodBin,    "serve",       "--config",         config_dir.string(), "--listen",
      "127.0.0.1:0", "--port-file", port_file.string(), "--state-dir",       state_dir_.string(),
      "--log-level", "debug"};
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  pid_ = ::fork();
  if (pid_ == 0) {
    int fd = ::open(log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    std::vector<char*> argv;
    argv.reserve(args.size() + 1);
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  const bool listening = eventually(
      [&] {
        std::ifstream in(port_file);
        int status = 0;
        if (in >> port_ && port_ > 0) return true;
        if (::waitpid(pid_, &status, WNOHANG) == pid_) {
          pid_ = -1;
          return true;  // exited: stop waiting (reported as unhealthy below)
        }
        return false;
      },
      std::chrono::seconds(30));
  healthy_ = listening && pid_ > 0 && wait_healthy(std::chrono::seconds(30));
  EXPECT_TRUE(healthy_) << "gpumod serve did not answer /healthz; its log:\n" << log();
}

Daemon::~Daemon() {
  if (unanswered_) {
    const std::string text = log();
    constexpr std::size_t kTail = 20000;
    std::cerr << "e2e: a call went unanswered; the end of the daemon's log:\n"
              << (text.size() > kTail ? text.substr(text.size() - kTail) : text) << std::endl;
  }
  if (pid_ <= 0) return;
  if (healthy_) stop_all_services();
  terminate();
}

std::string Daemon::log() const {
  std::ifstream in(log_path_);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool Daemon::wait_healthy(std::chrono::seconds limit) {
  return eventually(
             [&] {
               int status = 0;
               if (::waitpid(pid_, &status, WNOHANG) == pid_) {
                 pid_ = -1;
                 return true;  // exited: stop waiting (reported as unhealthy below)
               }
               return get("/healthz", std::chrono::seconds(1)).status == 200;
             },
             limit) &&
         pid_ > 0;
}

namespace {
Response to_response(const httplib::Result& r) {
  Response out;
  if (!r) return out;
  out.status = r->status;
  out.body = r->body;
  for (const auto& [k, v] : r->headers) out.headers[k] = v;
  return out;
}
httplib::Client make_client(int port, std::chrono::seconds timeout, const std::string& token) {
  httplib::Client c("127.0.0.1", port);
  if (!token.empty()) c.set_bearer_token_auth(token);
  c.set_connection_timeout(std::chrono::seconds(2));
  c.set_read_timeout(timeout);
  c.set_write_timeout(timeout);
  return c;
}
}  // namespace

Response Daemon::get(const std::string& path, std::chrono::seconds timeout) const {
  auto c = make_client(port_, timeout, token_);
  auto r = c.Get(path);
  if (!r) note_unanswered("GET " + path, httplib::to_string(r.error()));
  return to_response(r);
}

Response Daemon::post(const std::string& path, const std::string& body, std::chrono::seconds timeout) const {
  auto c = make_client(port_, timeout, token_);
  auto r = c.Post(path, body, "application/json");
  if (!r) note_unanswered("POST " + path, httplib::to_string(r.error()));
  return to_response(r);
}

Response Daemon::del(const std::string& path) const {
  auto c = make_client(port_, std::chrono::seconds(30), token_);
  auto r = c.Delete(path);
  if (!r) note_unanswered("DELETE " + path, httplib::to_string(r.error()));
  return to_response(r);
}

void Daemon::note_unanswered(const std::string& what, const std::string& error) const {
  // A call without an answer is what a failing e2e test shows first; say whether the daemon was
  // still there, and keep its log for the end of the test. (Before /healthz first answered,
  // refused connections are expected.)
  if (!healthy_) return;
  const bool alive = pid_ > 0 && ::kill(pid_, 0) == 0;
  std::cerr << "e2e: no answer to " << what << ": " << error << "; daemon pid " << pid_
            << (alive ? " still running" : " gone") << std::endl;
  unanswered_ = true;
}

void Daemon::stop_all_services() {
  auto status = get("/status").js();
  if (!status.is_object() || !status.contains("services")) return;
  for (const auto& s : status["services"]) {
    if (s.value("state", "") != "stopped") post("/services/" + s.value("id", "") + "/stop");
  }
  eventually([&] {
    auto st = get("/status").js();
    if (!st.is_object()) return false;
    for (const auto& s : st["services"]) {
      const std::string state = s.value("state", "");
      if (state != "stopped" && state != "failed") return false;
    }
    return true;
  });
}

void Daemon::kill_hard() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  int status = 0;
  ::waitpid(pid_, &status, 0);
  pid_ = -1;
}

int Daemon::terminate() {
  if (pid_ <= 0) return -1;
  ::kill(pid_, SIGTERM);
  int status = 0;
  bool done = eventually([&] { return ::waitpid(pid_, &status, WNOHANG) == pid_; }, std::chrono::seconds(30));
  if (!done) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, &status, 0);
  }
  pid_ = -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

std::vector<pid_t> processes_using_sim_dir(const fs::path& sim_dir) {
  std::vector<pid_t> out;
  const std::string needle = std::string("GPUMOD_SIM_DIR=") + sim_dir.string();
  for (const auto& entry : fs::directory_iterator("/proc")) {
    const std::string name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream env(entry.path() / "environ", std::ios::binary);
    std::string data((std::istreambuf_iterator<char>(env)), std::istreambuf_iterator<char>());
    std::size_t pos = 0;
    while (pos < data.size()) {
      std::size_t end = data.find('\0', pos);
      if (end == std::string::npos) end = data.size();
      if (data.compare(pos, end - pos, needle) == 0) {
        // Zombies have an empty environ; a process that has it is alive.
        out.push_back(static_cast<pid_t>(std::stoi(name)));
        break;
      }
      pos = end + 1;
    }
  }
  return out;
}

std::int64_t sim_charged_bytes(const fs::path& sim_dir) {
  std::int64_t total = 0;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(sim_dir, ec)) {
    if (entry.path().extension() != ".charge") continue;
    const int pid = std::atoi(entry.path().stem().c_str());
    if (pid <= 0 || ::kill(pid, 0) != 0) continue;
    std::ifstream in(entry.path());
    int gpu = 0;
    std::int64_t bytes = 0;
    if (in >> gpu >> bytes) total += bytes;
  }
  return total;
}

}  // namespace gpumod::e2e
