#include "tools/test-engine/options.hpp"

#include <exception>
#include <sstream>

namespace gpumod::engine {

const char* to_string(Protocol p) {
  switch (p) {
    case Protocol::vllm:
      return "vllm";
    case Protocol::llamacpp:
      return "llamacpp";
    case Protocol::router:
      return "router";
    case Protocol::generic:
      return "generic";
  }
  return "generic";
}

std::string usage() {
  return "usage: gpumod-test-engine --port N --protocol vllm|llamacpp|router|generic --model NAME\n"
         "         [--models a,b,c] --vram-mb N [--load-ms N] [--wake-ms N] [--sleep-residual-mb N]\n"
         "         [--crash-on-load] [--never-healthy] [--ignore-sigterm] [--fail-wake]\n"
         "         [--release-lag-ms N] [--stream-gap-ms N] [--host ADDR]\n"
         "A test engine of the gpumod project (not a model server). GPU index from\n"
         "CUDA_VISIBLE_DEVICES (default 0); simulated GPU directory from GPUMOD_SIM_DIR.\n"
         "  --stream-gap-ms N   pause between SSE chunks of a streamed reply (default 3; 0: none)\n"
         "A /v1/chat/completions or /v1/completions request with \"max_tokens\": N (1..100000)\n"
         "gets exactly N toy tokens (N SSE content chunks when streamed); without it, a short reply.\n";
}

namespace {

std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

Result<std::int64_t> number(const std::string& flag, const std::string& text) {
  try {
    std::size_t used = 0;
    const long long v = std::stoll(text, &used);
    if (used != text.size() || v < 0) throw std::invalid_argument(text);
    return static_cast<std::int64_t>(v);
  } catch (const std::exception&) {
    return make_error(flag + ": expected a non-negative integer, got '" + text + "'");
  }
}

}  // namespace

Result<Options> parse_options(const std::vector<std::string>& args) {
  Options o;
  bool have_protocol = false;
  for (std::size_t i = 1; i < args.size(); ++i) {
    const std::string& flag = args[i];
    auto value = [&]() -> Result<std::string> {
      if (i + 1 >= args.size()) return make_error(flag + ": missing value");
      return args[++i];
    };
    auto int_value = [&]() -> Result<std::int64_t> {
      auto v = value();
      if (!v) return make_error(v.error());
      return number(flag, *v);
    };
    if (flag == "--crash-on-load") {
      o.crash_on_load = true;
    } else if (flag == "--never-healthy") {
      o.never_healthy = true;
    } else if (flag == "--ignore-sigterm") {
      o.ignore_sigterm = true;
    } else if (flag == "--fail-wake") {
      o.fail_wake = true;
    } else if (flag == "--host" || flag == "--model" || flag == "--models" || flag == "--protocol") {
      auto v = value();
      if (!v) return make_error(v.error());
      if (flag == "--host") {
        o.host = *v;
      } else if (flag == "--model") {
        o.model = *v;
      } else if (flag == "--models") {
        o.models = split_list(*v);
      } else if (*v == "vllm") {
        o.protocol = Protocol::vllm;
        have_protocol = true;
      } else if (*v == "llamacpp") {
        o.protocol = Protocol::llamacpp;
        have_protocol = true;
      } else if (*v == "router") {
        o.protocol = Protocol::router;
        have_protocol = true;
      } else if (*v == "generic") {
        o.protocol = Protocol::generic;
        have_protocol = true;
      } else {
        return make_error("--protocol: expected vllm, llamacpp, router or generic, got '" + *v + "'");
      }
    } else if (flag == "--port" || flag == "--vram-mb" || flag == "--load-ms" || flag == "--wake-ms" ||
               flag == "--sleep-residual-mb" || flag == "--release-lag-ms" || flag == "--stream-gap-ms") {
      auto v = int_value();
      if (!v) return make_error(v.error());
      if (flag == "--port") {
        o.port = static_cast<int>(*v);
      } else if (flag == "--vram-mb") {
        o.vram_mb = *v;
      } else if (flag == "--load-ms") {
        o.load = std::chrono::milliseconds(*v);
      } else if (flag == "--wake-ms") {
        o.wake = std::chrono::milliseconds(*v);
      } else if (flag == "--sleep-residual-mb") {
        o.sleep_residual_mb = *v;
      } else if (flag == "--release-lag-ms") {
        o.release_lag = std::chrono::milliseconds(*v);
      } else {
        o.stream_gap = std::chrono::milliseconds(*v);
      }
    } else {
      return make_error("unknown flag '" + flag + "'");
    }
  }
  if (o.port <= 0 || o.port > 65535) return make_error("--port: required, 1..65535");
  if (!have_protocol) return make_error("--protocol: required");
  if (o.protocol == Protocol::router) {
    if (o.models.empty() && !o.model.empty()) o.models.push_back(o.model);
    if (o.models.empty()) return make_error("--models: a router needs at least one model (or --model)");
  } else if (o.model.empty()) {
    return make_error("--model: required");
  }
  if (o.sleep_residual_mb > o.vram_mb) o.sleep_residual_mb = o.vram_mb;
  return o;
}

}  // namespace gpumod::engine
