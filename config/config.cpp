// The plain parts of the config model: names of enums, diagnostics text, lookups, and the small
// text parsers (durations, HOST:PORT) that other modules reuse.
#include "config/config.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>

namespace gpumod::config {

const char* to_string(Driver d) {
  switch (d) {
    case Driver::vllm:
      return "vllm";
    case Driver::llamacpp:
      return "llamacpp";
    case Driver::fastapi:
      return "fastapi";
    case Driver::generic:
      return "generic";
    case Driver::docker:
      return "docker";
  }
  return "unknown";
}

const char* to_string(RunnerKind r) {
  switch (r) {
    case RunnerKind::process:
      return "process";
    case RunnerKind::systemd:
      return "systemd";
  }
  return "unknown";
}

const char* to_string(SleepMode s) {
  switch (s) {
    case SleepMode::none:
      return "none";
    case SleepMode::l1:
      return "l1";
    case SleepMode::l2:
      return "l2";
    case SleepMode::router:
      return "router";
  }
  return "unknown";
}

const char* to_string(ProbeKind p) {
  switch (p) {
    case ProbeKind::auto_detect:
      return "auto";
    case ProbeKind::nvml:
      return "nvml";
    case ProbeKind::sim:
      return "sim";
  }
  return "unknown";
}

std::int64_t Preset::sleep_residual_mb() const {
  if (sleep_vram_mb) return *sleep_vram_mb;
  switch (sleep_mode) {
    case SleepMode::l1:
      return (vram_mb + 9) / 10;  // ~10%, rounded up
    case SleepMode::l2:
    case SleepMode::router:
      return (vram_mb * 2 + 99) / 100;  // ~2%, rounded up
    case SleepMode::none:
      break;
  }
  return vram_mb;  // cannot sleep: it would keep everything
}

std::string Diagnostic::str() const {
  std::string out = file.empty() ? std::string("<config>") : file;
  if (line > 0) out += ":" + std::to_string(line);
  out += ": ";
  if (!key.empty()) out += key + ": ";
  if (severity == Severity::warning) out += "warning: ";
  out += message;
  return out;
}

std::string LoadResult::error_text() const {
  std::string out;
  for (const auto& d : diagnostics) {
    if (d.severity != Diagnostic::Severity::error) continue;
    if (!out.empty()) out += "\n";
    out += d.str();
  }
  return out;
}

const Preset* Config::find_preset(const std::string& id) const {
  for (const auto& p : presets) {
    if (p.id == id) return &p;
  }
  return nullptr;
}

const Mode* Config::find_mode(const std::string& id) const {
  for (const auto& m : modes) {
    if (m.id == id) return &m;
  }
  return nullptr;
}

const Preset* Config::resolve_model(const std::string& model) const {
  if (model.empty()) return nullptr;
  if (const Preset* p = find_preset(model)) return p;
  for (const auto& p : presets) {
    if (!p.model_id.empty() && p.model_id == model) return &p;
  }
  for (const auto& p : presets) {
    if (std::find(p.aliases.begin(), p.aliases.end(), model) != p.aliases.end()) return &p;
  }
  for (const auto& p : presets) {
    if (std::find(p.models.begin(), p.models.end(), model) != p.models.end()) return &p;
  }
  return nullptr;
}

namespace {
std::string quoted(const std::string& s) {
  return "'" + s + "'";
}
}  // namespace

Result<std::chrono::milliseconds> parse_duration(const std::string& raw) {
  std::string text = raw;
  text.erase(std::remove_if(text.begin(), text.end(), [](unsigned char ch) { return std::isspace(ch) != 0; }),
             text.end());
  if (text.empty()) return make_error("empty duration");
  double total_ms = 0;
  std::size_t i = 0;
  bool any = false;
  while (i < text.size()) {
    const std::size_t num_start = i;
    while (i < text.size() && (std::isdigit(static_cast<unsigned char>(text[i])) != 0 || text[i] == '.')) ++i;
    if (i == num_start)
      return make_error(quoted(raw) + " is not a duration: expected a number at " + quoted(text.substr(i)));
    const std::string number = text.substr(num_start, i - num_start);
    if (std::count(number.begin(), number.end(), '.') > 1 || number == ".") {
      return make_error(quoted(raw) + " is not a duration: bad number " + quoted(number));
    }
    const double value = std::strtod(number.c_str(), nullptr);
    const std::size_t unit_start = i;
    while (i < text.size() && std::isalpha(static_cast<unsigned char>(text[i])) != 0) ++i;
    const std::string unit = text.substr(unit_start, i - unit_start);
    double scale = 0;
    if (unit.empty()) {
      if (any || i != text.size()) return make_error("'" + raw + "' is not a duration: a unit is missing");
      scale = 1000;  // a plain number is seconds
    } else if (unit == "ms") {
      scale = 1;
    } else if (unit == "s") {
      scale = 1000;
    } else if (unit == "m") {
      scale = 60'000;
    } else if (unit == "h") {
      scale = 3'600'000;
    } else {
      return make_error(quoted(raw) + " is not a duration: unknown unit " + quoted(unit) +
                        " (use ms, s, m or h)");
    }
    total_ms += value * scale;
    any = true;
  }
  if (!std::isfinite(total_ms) || total_ms > 1e15) return make_error("'" + raw + "' is too long");
  return std::chrono::milliseconds(static_cast<std::int64_t>(std::llround(total_ms)));
}

Result<HostPort> parse_host_port(const std::string& text) {
  std::string host;
  std::string port_text;
  if (!text.empty() && text[0] == '[') {
    const std::size_t close = text.find(']');
    if (close == std::string::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return make_error("'" + text + "' is not HOST:PORT (IPv6 hosts are written [::1]:7979)");
    }
    host = text.substr(1, close - 1);
    port_text = text.substr(close + 2);
  } else {
    const std::size_t colon = text.rfind(':');
    if (colon == std::string::npos) return make_error("'" + text + "' is not HOST:PORT, e.g. 127.0.0.1:7979");
    host = text.substr(0, colon);
    port_text = text.substr(colon + 1);
    if (host.find(':') != std::string::npos) {
      return make_error("'" + text + "' is not HOST:PORT (IPv6 hosts are written [::1]:7979)");
    }
  }
  if (host.empty()) return make_error("'" + text + "' has no host, e.g. 127.0.0.1:7979");
  if (port_text.empty() || port_text.size() > 5 ||
      !std::all_of(port_text.begin(), port_text.end(),
                   [](unsigned char ch) { return std::isdigit(ch) != 0; })) {
    return make_error("'" + text + "' has no valid port (expected 0..65535)");
  }
  const int port = std::stoi(port_text);
  if (port > 65535) return make_error("'" + text + "': port " + port_text + " is out of range 0..65535");
  return HostPort{host, port};
}

bool is_loopback_host(std::string_view host) {
  if (host == "localhost") return true;
  std::string h(host);
  if (h.size() > 2 && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
  in_addr v4{};
  if (inet_pton(AF_INET, h.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  in6_addr v6{};
  if (inet_pton(AF_INET6, h.c_str(), &v6) == 1) {
    static const in6_addr loopback = IN6ADDR_LOOPBACK_INIT;
    return IN6_ARE_ADDR_EQUAL(&v6, &loopback);
  }
  return false;
}

}  // namespace gpumod::config
