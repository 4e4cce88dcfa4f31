#include "tests/prometheus/prometheus_server.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "tests/e2e/daemon_fixture.hpp"
#include "tests/support/eventually.hpp"
#include "tests/support/net.hpp"

namespace gpumod::prom {

std::optional<fs::path> find_prometheus() {
  if (::access("/usr/bin/prometheus", X_OK) == 0) return fs::path("/usr/bin/prometheus");
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path != nullptr ? path : "");
  std::string dir;
  while (std::getline(dirs, dir, ':')) {
    if (dir.empty()) continue;
    const fs::path candidate = fs::path(dir) / "prometheus";
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return std::nullopt;
}

std::string scrape_config(const std::string& target, const std::vector<fs::path>& rule_files) {
  std::ostringstream y;
  y << "global:\n"
    << "  scrape_interval: 1s\n"
    << "  scrape_timeout: 1s\n"
    << "  evaluation_interval: 1s\n"
    << "rule_files:\n";
  for (const auto& f : rule_files) y << "  - \"" << f.string() << "\"\n";
  y << "scrape_configs:\n"
    << "  - job_name: gpumod\n"
    << "    static_configs:\n"
    << "      - targets: [\"" << target << "\"]\n";
  return y.str();
}

PrometheusServer::PrometheusServer(const fs::path& binary, const fs::path& work_dir,
                                   const std::string& target, const std::vector<fs::path>& rule_files)
    : log_path_(work_dir / "prometheus.log"), port_(testing::free_port()) {
  fs::create_directories(work_dir / "data");
  e2e::write_file(work_dir / "prometheus.yml", scrape_config(target, rule_files));
  std::vector<std::string> args = {binary.string(),
                                   "--config.file=" + (work_dir / "prometheus.yml").string(),
                                   "--storage.tsdb.path=" + (work_dir / "data").string(),
                                   "--web.listen-address=127.0.0.1:" + std::to_string(port_),
                                   "--storage.tsdb.retention.time=1h",
                                   "--log.level=info"};
  // Built before fork: the child only calls async-signal-safe functions.
  std::vector<char*> argv;
  argv.reserve(args.size() + 1);
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_ = ::fork();
  if (pid_ == 0) {
    // Dies with the test process even if the test crashes before the destructor runs.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    const int fd = ::open(log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    if (::chdir(work_dir.c_str()) != 0) ::_exit(126);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  ready_ = testing::eventually(
               [&] {
                 int status = 0;
                 if (::waitpid(pid_, &status, WNOHANG) == pid_) {
                   pid_ = -1;
                   return true;  // exited: stop waiting (reported as not ready)
                 }
                 httplib::Client c("127.0.0.1", port_);
                 c.set_connection_timeout(std::chrono::seconds(1));
                 c.set_read_timeout(std::chrono::seconds(2));
                 auto r = c.Get("/-/ready");
                 return r && r->status == 200;
               },
               std::chrono::seconds(30)) &&
           pid_ > 0;
  EXPECT_TRUE(ready_) << "prometheus did not become ready; its log:\n" << log();
}

PrometheusServer::~PrometheusServer() {
  stop();
}

int PrometheusServer::stop() {
  if (pid_ <= 0) return -1;
  ::kill(pid_, SIGTERM);
  int status = 0;
  const bool done = testing::eventually([&] { return ::waitpid(pid_, &status, WNOHANG) == pid_; },
                                        std::chrono::seconds(20));
  if (!done) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, &status, 0);
  }
  pid_ = -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

std::string PrometheusServer::log() const {
  std::ifstream in(log_path_);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

ApiAnswer PrometheusServer::api(const std::string& path,
                                const std::vector<std::pair<std::string, std::string>>& params) const {
  ApiAnswer out;
  httplib::Client c("127.0.0.1", port_);
  c.set_connection_timeout(std::chrono::seconds(2));
  c.set_read_timeout(std::chrono::seconds(20));
  httplib::Params form;
  for (const auto& [k, v] : params) form.emplace(k, v);
  // With parameters, POST a form body (no URL length limits; query and series accept it); the
  // endpoints without parameters (alerts, rules, targets) answer GET only.
  auto r = form.empty() ? c.Get("/api/v1/" + path) : c.Post("/api/v1/" + path, form);
  if (!r) {
    out.error = "no answer from prometheus (" + httplib::to_string(r.error()) + ")";
    return out;
  }
  const json body = json::parse(r->body, nullptr, false);
  if (!body.is_object()) {
    out.error = "HTTP " + std::to_string(r->status) + ", not JSON: " + r->body.substr(0, 300);
    return out;
  }
  if (body.value("status", "") != "success") {
    out.error = "HTTP " + std::to_string(r->status) + ": " + body.value("errorType", "?") + ": " +
                body.value("error", "?");
    return out;
  }
  out.ok = true;
  out.data = body.contains("data") ? body["data"] : json();
  return out;
}

namespace {
double sample_value(const json& sample) {
  // A sample is [unix_time, "value"]; the value may be "NaN", "+Inf" or "-Inf".
  if (!sample.is_array() || sample.size() != 2 || !sample[1].is_string()) return std::nan("");
  const std::string text = sample[1].get<std::string>();
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  return end == text.c_str() ? std::nan("") : v;
}
}  // namespace

std::vector<std::pair<json, double>> instant_values(const json& data) {
  std::vector<std::pair<json, double>> out;
  if (!data.is_object()) return out;
  const std::string type = data.value("resultType", "");
  const json& result = data.contains("result") ? data["result"] : json();
  if (type == "vector" && result.is_array()) {
    for (const auto& s : result)
      out.emplace_back(s.value("metric", json::object()), sample_value(s["value"]));
  } else if (type == "scalar") {
    out.emplace_back(json::object(), sample_value(result));
  }
  return out;
}

}  // namespace gpumod::prom
