// http_probe: the measuring client of bench/http/run.sh (not part of the daemon).
//
//   http_probe latency --direct HOST:PORT --proxy HOST:PORT --path P --body JSON --n N
//       One keep-alive client per side; N pairs, each pair one call direct and one through
//       gpumod, the order alternating, so both sides see the same machine state. Prints the
//       median and p99 of each side and of the per-pair difference (proxy - direct).
//   http_probe stream --direct ... --proxy ... --path P --body JSON --rounds R --clients C --per N
//       R rounds of (direct phase, proxy phase), order alternating; a phase runs C threads that
//       each make N streaming calls. Counts SSE events ("\n\n"-terminated) and bytes per second.
//   http_probe load --daemon HOST:PORT --models A[,B] --load-ms L --runs N
//       One model: cold loads (stop it, wait until stopped, time POST /request to 200).
//       Two models that cannot share the GPU: swaps (time POST /request for the one not
//       loaded, which evicts the other). Prints time-to-200 minus L (the engine's own load time).
//
//   http_probe ports --n N
//       N distinct free loopback ports, one per line.
//
// Every result line starts with "RESULT " followed by key=value pairs, for run.sh to tabulate.
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

// Percentile by nearest rank over a copy (q in [0, 1]).
double percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  const auto rank = static_cast<std::size_t>(std::lround(q * static_cast<double>(v.size() - 1)));
  return v[std::min(rank, v.size() - 1)];
}

struct Args {
  std::map<std::string, std::string> values;
  std::string get(const std::string& key, const std::string& fallback = "") const {
    auto it = values.find(key);
    return it == values.end() ? fallback : it->second;
  }
  int num(const std::string& key, int fallback) const {
    auto it = values.find(key);
    return it == values.end() ? fallback : std::atoi(it->second.c_str());
  }
};

std::optional<Args> parse(int argc, char** argv) {
  Args a;
  for (int i = 2; i < argc; ++i) {
    std::string flag = argv[i];
    if (flag.rfind("--", 0) != 0 || i + 1 >= argc) return std::nullopt;
    a.values[flag.substr(2)] = argv[++i];
  }
  return a;
}

httplib::Client client_for(const std::string& host_port) {
  const auto colon = host_port.rfind(':');
  httplib::Client c(host_port.substr(0, colon), std::atoi(host_port.c_str() + colon + 1));
  c.set_keep_alive(true);
  // The client is not what is measured: keep Nagle's algorithm out of its own writes.
  c.set_tcp_nodelay(true);
  c.set_connection_timeout(std::chrono::seconds(5));
  c.set_read_timeout(std::chrono::seconds(120));
  c.set_write_timeout(std::chrono::seconds(120));
  return c;
}

// One timed POST; nullopt (with a message on stderr) unless the answer is 200.
std::optional<double> timed_post(httplib::Client& c, const std::string& path, const std::string& body) {
  const auto start = Clock::now();
  auto r = c.Post(path, body, "application/json");
  const double took = ms_since(start);
  if (!r || r->status != 200) {
    std::fprintf(
        stderr, "http_probe: POST %s -> %s\n", path.c_str(),
        r ? (std::to_string(r->status) + " " + r->body).c_str() : httplib::to_string(r.error()).c_str());
    return std::nullopt;
  }
  return took;
}

int run_latency(const Args& a) {
  auto direct = client_for(a.get("direct"));
  auto proxy = client_for(a.get("proxy"));
  // The proxy opens a new upstream connection per call: this third series (direct, new
  // connection each time) tells that cost apart from the rest of the proxy's work.
  auto fresh = client_for(a.get("direct"));
  fresh.set_keep_alive(false);
  const std::string path = a.get("path");
  const std::string body = a.get("body");
  const int n = a.num("n", 2000);
  // Warm-up: connections, caches, the daemon's first lease.
  for (int i = 0; i < 50; ++i) {
    if (!timed_post(direct, path, body) || !timed_post(proxy, path, body)) return 1;
  }
  std::vector<double> d_ms;
  std::vector<double> p_ms;
  std::vector<double> diff_ms;
  std::vector<double> fresh_ms;
  fresh_ms.reserve(static_cast<std::size_t>(n));
  d_ms.reserve(static_cast<std::size_t>(n));
  p_ms.reserve(static_cast<std::size_t>(n));
  diff_ms.reserve(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) {
    std::optional<double> d;
    std::optional<double> p;
    if (i % 2 == 0) {
      d = timed_post(direct, path, body);
      p = timed_post(proxy, path, body);
    } else {
      p = timed_post(proxy, path, body);
      d = timed_post(direct, path, body);
    }
    auto f = timed_post(fresh, path, body);
    if (!d || !p || !f) return 1;
    fresh_ms.push_back(*f);
    d_ms.push_back(*d);
    p_ms.push_back(*p);
    diff_ms.push_back(*p - *d);
  }
  std::printf(
      "RESULT kind=latency n=%d direct_p50_ms=%.4f direct_p99_ms=%.4f proxy_p50_ms=%.4f proxy_p99_ms=%.4f "
      "added_p50_ms=%.4f added_p99_ms=%.4f pairdiff_p50_ms=%.4f pairdiff_p99_ms=%.4f "
      "direct_newconn_p50_ms=%.4f\n",
      n, percentile(d_ms, 0.5), percentile(d_ms, 0.99), percentile(p_ms, 0.5), percentile(p_ms, 0.99),
      percentile(p_ms, 0.5) - percentile(d_ms, 0.5), percentile(p_ms, 0.99) - percentile(d_ms, 0.99),
      percentile(diff_ms, 0.5), percentile(diff_ms, 0.99), percentile(fresh_ms, 0.5));
  return 0;
}

struct StreamPhase {
  double seconds = 0;
  std::uint64_t events = 0;
  std::uint64_t bytes = 0;
  int failures = 0;
};

// C threads, each making `per` streaming calls on its own keep-alive client.
StreamPhase stream_phase(const std::string& target, const std::string& path, const std::string& body,
                         int clients, int per) {
  std::atomic<std::uint64_t> events{0};
  std::atomic<std::uint64_t> bytes{0};
  std::atomic<int> failures{0};
  const auto start = Clock::now();
  std::vector<std::thread> threads;
  threads.reserve(static_cast<std::size_t>(clients));
  for (int t = 0; t < clients; ++t) {
    threads.emplace_back([&] {
      auto c = client_for(target);
      for (int i = 0; i < per; ++i) {
        httplib::Request req;
        req.method = "POST";
        req.path = path;
        req.body = body;
        req.set_header("Content-Type", "application/json");
        char last = 0;  // an event ends with "\n\n", possibly split across reads
        std::uint64_t my_events = 0;
        std::uint64_t my_bytes = 0;
        req.content_receiver = [&](const char* data, std::size_t len, std::uint64_t, std::uint64_t) {
          for (std::size_t k = 0; k < len; ++k) {
            if (data[k] == '\n' && last == '\n') ++my_events;
            last = data[k];
          }
          my_bytes += len;
          return true;
        };
        auto r = c.send(req);
        if (!r || r->status != 200) {
          if (failures.fetch_add(1) == 0) {
            std::fprintf(stderr, "http_probe: stream via %s -> %s\n", target.c_str(),
                         r ? (std::to_string(r->status) + " " + r->body).c_str()
                           : httplib::to_string(r.error()).c_str());
          }
          continue;
        }
        events.fetch_add(my_events);
        bytes.fetch_add(my_bytes);
      }
    });
  }
  for (auto& t : threads) t.join();
  return StreamPhase{ms_since(start) / 1000.0, events.load(), bytes.load(), failures.load()};
}

int run_stream(const Args& a) {
  const std::string path = a.get("path");
  const std::string body = a.get("body");
  const int rounds = a.num("rounds", 3);
  const int clients = a.num("clients", 8);
  const int per = a.num("per", 20);
  stream_phase(a.get("direct"), path, body, 2, 2);  // warm-up
  stream_phase(a.get("proxy"), path, body, 2, 2);
  StreamPhase direct_total;
  StreamPhase proxy_total;
  std::vector<double> ratios;
  for (int r = 0; r < rounds; ++r) {
    StreamPhase d;
    StreamPhase p;
    if (r % 2 == 0) {
      d = stream_phase(a.get("direct"), path, body, clients, per);
      p = stream_phase(a.get("proxy"), path, body, clients, per);
    } else {
      p = stream_phase(a.get("proxy"), path, body, clients, per);
      d = stream_phase(a.get("direct"), path, body, clients, per);
    }
    if (d.failures != 0 || p.failures != 0) {
      std::fprintf(stderr, "http_probe: %d direct and %d proxied streams failed\n", d.failures, p.failures);
      return 1;
    }
    ratios.push_back((static_cast<double>(p.events) / p.seconds) /
                     (static_cast<double>(d.events) / d.seconds));
    for (const auto& [sum, phase] : {std::pair{&direct_total, &d}, std::pair{&proxy_total, &p}}) {
      sum->seconds += phase->seconds;
      sum->events += phase->events;
      sum->bytes += phase->bytes;
    }
  }
  const double d_eps = static_cast<double>(direct_total.events) / direct_total.seconds;
  const double p_eps = static_cast<double>(proxy_total.events) / proxy_total.seconds;
  const double d_bps = static_cast<double>(direct_total.bytes) / direct_total.seconds;
  const double p_bps = static_cast<double>(proxy_total.bytes) / proxy_total.seconds;
  const int streams = rounds * clients * per;
  std::printf(
      "RESULT kind=stream streams_per_side=%d events_per_stream=%.1f direct_events_s=%.0f "
      "proxy_events_s=%.0f "
      "direct_bytes_s=%.0f proxy_bytes_s=%.0f ratio_events=%.3f ratio_bytes=%.3f ratio_min_round=%.3f "
      "ratio_max_round=%.3f\n",
      streams, static_cast<double>(direct_total.events) / streams, d_eps, p_eps, d_bps, p_bps, p_eps / d_eps,
      p_bps / d_bps, *std::min_element(ratios.begin(), ratios.end()),
      *std::max_element(ratios.begin(), ratios.end()));
  return 0;
}

// State of one service from GET /services/{id} ("" when unreadable).
std::string service_state(httplib::Client& c, const std::string& id) {
  auto r = c.Get("/services/" + id);
  if (!r || r->status != 200) return "";
  const auto js = nlohmann::json::parse(r->body, nullptr, false);
  return js.is_object() ? js.value("state", "") : "";
}

bool wait_state(httplib::Client& c, const std::string& id, const std::string& want) {
  const auto deadline = Clock::now() + std::chrono::seconds(30);
  while (Clock::now() < deadline) {
    if (service_state(c, id) == want) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  std::fprintf(stderr, "http_probe: %s did not become %s (is %s)\n", id.c_str(), want.c_str(),
               service_state(c, id).c_str());
  return false;
}

int run_load(const Args& a) {
  auto c = client_for(a.get("daemon"));
  std::vector<std::string> models;
  std::stringstream list(a.get("models"));
  for (std::string m; std::getline(list, m, ',');) models.push_back(m);
  const double load_ms = a.num("load-ms", 0);
  const int runs = a.num("runs", 20);
  if (models.empty() || models.size() > 2) return 2;
  const bool swap = models.size() == 2;
  std::vector<double> overhead;
  std::vector<double> total;
  if (swap && !timed_post(c, "/request", "{\"model\":\"" + models[1] + "\"}")) return 1;
  for (int i = 0; i < runs; ++i) {
    const std::string& model = swap ? models[static_cast<std::size_t>(i % 2)] : models[0];
    if (!swap) {
      auto stop = c.Post("/services/" + model + "/stop", "{}", "application/json");
      if (!stop || !wait_state(c, model, "stopped")) return 1;
    } else if (service_state(c, model) != "stopped") {
      std::fprintf(stderr, "http_probe: swap run %d: %s is not stopped before its request\n", i,
                   model.c_str());
      return 1;
    }
    auto took = timed_post(c, "/request", "{\"model\":\"" + model + "\"}");
    if (!took) return 1;
    total.push_back(*took);
    overhead.push_back(*took - load_ms);
    if (swap && service_state(c, models[static_cast<std::size_t>((i + 1) % 2)]) != "stopped") {
      std::fprintf(stderr, "http_probe: swap run %d did not evict the other model\n", i);
      return 1;
    }
  }
  std::printf(
      "RESULT kind=%s runs=%d load_ms=%.0f total_p50_ms=%.2f overhead_p50_ms=%.2f overhead_min_ms=%.2f "
      "overhead_p90_ms=%.2f overhead_max_ms=%.2f\n",
      swap ? "swap" : "cold", runs, load_ms, percentile(total, 0.5), percentile(overhead, 0.5),
      percentile(overhead, 0.0), percentile(overhead, 0.9), percentile(overhead, 1.0));
  return 0;
}

// N distinct free loopback ports, one per line (all held open until printed so they differ).
int run_ports(const Args& a) {
  std::vector<int> fds;
  for (int i = 0; i < a.num("n", 1); ++i) {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      std::perror("http_probe: free port");
      return 1;
    }
    fds.push_back(fd);
    std::printf("%d\n", ntohs(addr.sin_port));
  }
  for (const int fd : fds) ::close(fd);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  auto args = parse(argc, argv);
  if (!args || (mode != "latency" && mode != "stream" && mode != "load" && mode != "ports")) {
    std::fprintf(
        stderr,
        "usage: http_probe latency|stream|load|ports --flag value ... (see the comment at the top)\n");
    return 2;
  }
  if (mode == "ports") return run_ports(*args);
  if (mode == "latency") return run_latency(*args);
  if (mode == "stream") return run_stream(*args);
  return run_load(*args);
}
