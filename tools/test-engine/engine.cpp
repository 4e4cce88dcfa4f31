#include "tools/test-engine/engine.hpp"

#include <unistd.h>

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdio>
#include <ctime>
#include <memory>
#include <optional>
#include <sstream>
#include <string_view>
#include <thread>
#include <vector>

namespace gpumod::engine {

namespace {

using json = nlohmann::json;
constexpr std::int64_t kMiB = 1024LL * 1024;
constexpr std::size_t kEmbeddingDims = 16;
// The longest reply a request may ask for with max_tokens (a stream of this many chunks is
// already far more than a benchmark needs; larger values are refused, not silently cut).
constexpr std::int64_t kMaxReplyTokens = 100000;

void send_json(http::HttpResponse& res, int status, const json& body) {
  res.status = status;
  res.set_content(body.dump(), "application/json");
}

// llama.cpp-style error object.
json llama_error(int code, const std::string& message, const std::string& type) {
  return json{{"error", {{"code", code}, {"message", message}, {"type", type}}}};
}

std::uint64_t fnv1a(const std::string& text) {
  std::uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : text) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  return h;
}

std::vector<std::string> words_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  std::string w;
  while (in >> w) out.push_back(w);
  return out;
}

// The toy answer: the model's name, a hash tag of the prompt and the prompt's first words
// in reverse order. The same input always gives the same text. With `length` (the request's
// max_tokens) the reply has exactly that many tokens: cut short, or continued with fillers
// "t<i>" (i = the token's position), so every chunk of a long stream is distinct and a
// reader can tell that none was lost or reordered.
std::vector<std::string> toy_reply(const std::string& model, const std::string& prompt,
                                   std::optional<std::size_t> length) {
  std::vector<std::string> out{"[" + model + "]"};
  char tag[24];
  std::snprintf(tag, sizeof tag, "#%06llx", static_cast<unsigned long long>(fnv1a(prompt) & 0xffffffULL));
  out.emplace_back(tag);
  auto words = words_of(prompt);
  if (words.size() > 8) words.resize(8);
  for (auto it = words.rbegin(); it != words.rend(); ++it) out.push_back(*it);
  if (length) {
    if (out.size() > *length) out.resize(*length);
    out.reserve(*length);
    while (out.size() < *length) out.push_back("t" + std::to_string(out.size()));
  }
  return out;
}

// The reply length a generate request asks for: "max_tokens" (or the newer chat field
// "max_completion_tokens"); nullopt when neither is given (or null).
Result<std::optional<std::size_t>> requested_length(const json& body) {
  for (const char* key : {"max_tokens", "max_completion_tokens"}) {
    const auto it = body.find(key);
    if (it == body.end() || it->is_null()) continue;
    if (!it->is_number_integer() || it->get<std::int64_t>() < 1 ||
        it->get<std::int64_t>() > kMaxReplyTokens) {
      return make_error(std::string(key) + ": expected an integer from 1 to " +
                        std::to_string(kMaxReplyTokens) + ", got " + it->dump());
    }
    return std::optional<std::size_t>(it->get<std::size_t>());
  }
  return std::optional<std::size_t>();
}

// `key` of a JSON object body when it is a string; "" otherwise (missing, wrong type, bad JSON).
std::string string_field(const std::string& body_text, const char* key) {
  const auto body = json::parse(body_text, nullptr, false);
  if (!body.is_object()) return "";
  const auto it = body.find(key);
  return it != body.end() && it->is_string() ? it->get<std::string>() : "";
}

// Decodes %XX and '+' of one query component; a malformed escape is kept as it is.
std::string decode_component(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '+') {
      out += ' ';
    } else if (text[i] == '%' && i + 2 < text.size() && hex(text[i + 1]) >= 0 && hex(text[i + 2]) >= 0) {
      out += static_cast<char>(hex(text[i + 1]) * 16 + hex(text[i + 2]));
      i += 2;
    } else {
      out += text[i];
    }
  }
  return out;
}

// Every value of query parameter `name` in a request target, in order.
std::vector<std::string> query_values(std::string_view target, std::string_view name) {
  std::vector<std::string> values;
  const auto q = target.find('?');
  if (q == std::string_view::npos) return values;
  std::string_view rest = target.substr(q + 1);
  if (const auto hash = rest.find('#'); hash != std::string_view::npos) rest = rest.substr(0, hash);
  while (!rest.empty()) {
    const auto amp = rest.find('&');
    const std::string_view pair = rest.substr(0, amp);
    rest = amp == std::string_view::npos ? std::string_view() : rest.substr(amp + 1);
    const auto eq = pair.find('=');
    if (decode_component(pair.substr(0, eq)) != name) continue;
    values.push_back(eq == std::string_view::npos ? std::string() : decode_component(pair.substr(eq + 1)));
  }
  return values;
}

void send_model_not_found(http::HttpResponse& res, const std::string& model) {
  send_json(res, 404, llama_error(404, "model '" + model + "' not found", "not_found_error"));
}

std::string text_of(const json& content) {
  if (content.is_string()) return content.get<std::string>();
  std::string out;
  if (content.is_array()) {
    for (const auto& part : content) {
      if (part.is_object() && part.value("type", "") == "text") out += part.value("text", "") + " ";
    }
  }
  return out;
}

std::string prompt_of(const json& body, bool chat) {
  if (!chat) {
    const auto& p = body.value("prompt", json(""));
    if (p.is_array() && !p.empty() && p.front().is_string()) return p.front().get<std::string>();
    return p.is_string() ? p.get<std::string>() : p.dump();
  }
  std::string prompt;
  for (const auto& m : body.value("messages", json::array())) {
    if (m.is_object() && m.value("role", "") == "user") prompt = text_of(m.value("content", json("")));
  }
  return prompt;
}

std::vector<double> toy_embedding(const std::string& input) {
  std::vector<double> v(kEmbeddingDims);
  double norm = 0;
  for (std::size_t i = 0; i < v.size(); ++i) {
    const auto h = fnv1a(input + "#" + std::to_string(i));
    v[i] = static_cast<double>(h % 2001) / 1000.0 - 1.0;
    norm += v[i] * v[i];
  }
  norm = std::sqrt(norm);
  if (norm > 0) {
    for (auto& x : v) x /= norm;
  }
  return v;
}

long long now_seconds() {
  return static_cast<long long>(std::time(nullptr));
}

}  // namespace

Engine::Engine(Options options, Memory& memory, std::chrono::steady_clock::time_point started)
    : options_(std::move(options)), memory_(memory), started_(started) {
  for (const auto& m : options_.models) models_[m] = RouterModelState{};
  if (options_.protocol == Protocol::router) ready_ = true;  // a router answers at once
}

Engine::~Engine() {
  join_loaders();
}

std::int64_t Engine::total_bytes() const {
  return options_.vram_mb * kMiB;
}
std::int64_t Engine::residual_bytes() const {
  return options_.sleep_residual_mb * kMiB;
}
std::int64_t Engine::weights_bytes() const {
  return (total_bytes() - residual_bytes()) * 6 / 10;
}
std::int64_t Engine::kv_bytes() const {
  return total_bytes() - residual_bytes() - weights_bytes();
}

void Engine::request_stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
}

void Engine::wait_for_stop() {
  std::unique_lock lock(mu_);
  cv_.wait(lock, [&] { return stopping_; });
}

bool Engine::stopping() {
  std::lock_guard lock(mu_);
  return stopping_;
}

bool Engine::stop_within(std::chrono::milliseconds d) {
  std::unique_lock lock(mu_);
  return cv_.wait_for(lock, d, [&] { return stopping_; });
}

bool Engine::stop_before(std::chrono::steady_clock::time_point t) {
  std::unique_lock lock(mu_);
  return cv_.wait_until(lock, t, [&] { return stopping_; });
}

void Engine::join_loaders() {
  std::vector<std::thread> loaders;
  {
    std::lock_guard lock(mu_);
    loaders.swap(loaders_);
  }
  for (auto& t : loaders) {
    if (t.joinable()) t.join();
  }
}

bool Engine::load() {
  Result<void> r;
  if (options_.protocol == Protocol::vllm) {
    r = memory_.allocate("residual", residual_bytes());
    if (r) r = memory_.allocate("weights", weights_bytes());
    if (r) r = memory_.allocate("kv", kv_bytes());
  } else {
    r = memory_.allocate("model", total_bytes());
  }
  if (!r) {
    std::fprintf(stderr, "gpumod-test-engine: loading %s failed: %s\n", options_.model.c_str(),
                 r.error().c_str());
    std::fflush(stderr);
    ::_exit(1);
  }
  if (options_.crash_on_load) {
    if (stop_before(started_ + options_.load / 2)) return false;
    std::fprintf(stderr, "gpumod-test-engine: crashed while loading %s (--crash-on-load)\n",
                 options_.model.c_str());
    std::fflush(stderr);
    ::_exit(1);  // like a real crash: no cleanup, the charge lingers until the probe sees the pid gone
  }
  if (stop_before(started_ + options_.load)) return false;
  if (!options_.never_healthy) {
    std::lock_guard lock(mu_);
    ready_ = true;
  }
  std::fprintf(stderr, "gpumod-test-engine: %s %s\n", options_.model.c_str(),
               options_.never_healthy ? "loaded but never healthy (--never-healthy)" : "ready");
  return true;
}

void Engine::install(http::HttpServer& server) {
  using http::HandlerKind;
  // Handlers that only read state answer on the server's loop thread; those that wait
  // (--wake-ms), charge or free memory (files, CUDA) run on its workers. A streamed reply
  // always runs on a worker (the server moves it there).
  auto add = [&server](const char* method, const char* path, HandlerKind kind, auto handler) {
    server.route(method, path, kind, [handler](Request& q, Response& s) { handler(q, s); });
  };
  const auto fast = HandlerKind::inline_;
  const auto slow = HandlerKind::blocking;
  add("GET", "/health", fast, [this](const Request& q, Response& s) { health(q, s); });
  add("GET", "/v1/models", fast, [this](const Request& q, Response& s) { v1_models(q, s); });
  add("POST", "/v1/chat/completions", fast,
      [this](const Request& q, Response& s) { v1_generate(q, s, true); });
  add("POST", "/v1/completions", fast, [this](const Request& q, Response& s) { v1_generate(q, s, false); });
  add("POST", "/v1/embeddings", fast, [this](const Request& q, Response& s) { v1_embeddings(q, s); });
  if (options_.protocol == Protocol::vllm) {
    add("POST", "/sleep", slow, [this](const Request& q, Response& s) { vllm_sleep(q, s); });
    add("POST", "/wake_up", slow, [this](const Request& q, Response& s) { vllm_wake(q, s); });
    add("GET", "/is_sleeping", fast, [this](const Request& q, Response& s) { vllm_is_sleeping(q, s); });
    add("POST", "/collective_rpc", slow,
        [this](const Request& q, Response& s) { vllm_collective_rpc(q, s); });
    add("POST", "/reset_prefix_cache", fast, [](const Request&, Response& s) { s.status = 200; });
  }
  if (options_.protocol == Protocol::router) {
    add("GET", "/models", fast, [this](const Request& q, Response& s) { router_models(q, s); });
    add("POST", "/models/load", slow, [this](const Request& q, Response& s) { router_load(q, s); });
    add("POST", "/models/unload", slow, [this](const Request& q, Response& s) { router_unload(q, s); });
  }
}

void Engine::health(const Request&, Response& res) {
  std::lock_guard lock(mu_);
  if (ready_) {
    send_json(res, 200, json{{"status", "ok"}});
  } else {
    send_json(res, 503, llama_error(503, "Loading model", "unavailable_error"));
  }
}

void Engine::vllm_sleep(const Request& req, Response& res) {
  const std::string level_text = req.has_param("level") ? req.param("level") : "1";
  if (level_text != "1" && level_text != "2") {
    send_json(res, 400, json{{"error", "level must be 1 or 2, got " + level_text}});
    return;
  }
  std::lock_guard op(sleep_mu_);
  {
    std::lock_guard lock(mu_);
    if (!ready_) {
      send_json(res, 503, json{{"error", "engine is not ready"}});
      return;
    }
  }
  if (level_text == "1") {
    if (auto r = memory_.offload("weights"); !r) {
      send_json(res, 500, json{{"error", r.error()}});
      return;
    }
  } else {
    memory_.discard("weights");
  }
  memory_.discard("kv");
  std::lock_guard lock(mu_);
  weights_awake_ = false;
  kv_awake_ = false;
  std::fprintf(stderr, "gpumod-test-engine: sleeping at level %s\n", level_text.c_str());
  res.status = 200;
}

void Engine::vllm_wake(const Request& req, Response& res) {
  bool wake_weights = true;
  bool wake_kv = true;
  // vLLM takes the parameter repeated (?tags=weights&tags=kv_cache); HttpRequest::query
  // keeps only the last value of a name, so the tags are read from the target.
  const auto tags = query_values(req.target, "tags");
  if (!tags.empty()) {
    wake_weights = wake_kv = false;
    for (const auto& tag : tags) {
      if (tag == "weights") {
        wake_weights = true;
      } else if (tag == "kv_cache") {
        wake_kv = true;
      } else {
        send_json(res, 400, json{{"error", "unknown tag " + tag}});
        return;
      }
    }
  }
  if (options_.fail_wake) {
    send_json(res, 500, json{{"error", "wake_up failed (--fail-wake)"}});
    return;
  }
  std::lock_guard op(sleep_mu_);
  bool weights_were_awake = false;
  {
    std::lock_guard lock(mu_);
    weights_were_awake = weights_awake_;
  }
  if (wake_weights && !weights_were_awake) {
    if (stop_within(options_.wake)) {
      send_json(res, 503, json{{"error", "shutting down"}});
      return;
    }
    bool restored = false;
    if (auto r = memory_.restore("weights", restored); !r) {
      send_json(res, 500, json{{"error", r.error()}});
      return;
    }
    std::lock_guard lock(mu_);
    weights_awake_ = true;
    weights_valid_ = restored;  // level 2 woke empty weights: they need reload_weights
  }
  if (wake_kv) {
    if (auto r = memory_.allocate("kv", kv_bytes()); !r) {
      send_json(res, 500, json{{"error", r.error()}});
      return;
    }
    std::lock_guard lock(mu_);
    kv_awake_ = true;
  }
  res.status = 200;
}

void Engine::vllm_is_sleeping(const Request&, Response& res) {
  std::lock_guard lock(mu_);
  send_json(res, 200, json{{"is_sleeping", !(weights_awake_ && kv_awake_)}});
}

void Engine::vllm_collective_rpc(const Request& req, Response& res) {
  const std::string method = string_field(req.body, "method");
  if (method != "reload_weights") {
    send_json(res, 400, json{{"error", "unsupported collective_rpc method '" + method + "'"}});
    return;
  }
  std::lock_guard lock(mu_);
  if (!weights_awake_) {
    send_json(res, 400, json{{"error", "weights are asleep: wake_up?tags=weights first"}});
    return;
  }
  weights_valid_ = true;
  send_json(res, 200, json{{"results", json::array({nullptr})}});
}

void Engine::router_models(const Request&, Response& res) {
  std::lock_guard lock(mu_);
  json data = json::array();
  for (const auto& [id, st] : models_) {
    json status;
    switch (st.status) {
      case ModelStatus::loaded:
        status = {{"value", "loaded"}, {"args", {"gpumod-test-engine", "--model", id}}};
        break;
      case ModelStatus::loading:
        status = {{"value", "loading"}, {"args", {"gpumod-test-engine", "--model", id}}};
        break;
      case ModelStatus::unloaded:
        status = {{"value", "unloaded"}};
        if (st.failed) {
          status["failed"] = true;
          status["exit_code"] = 1;
        }
        break;
    }
    data.push_back(json{{"id", id},
                        {"object", "model"},
                        {"owned_by", "llamacpp"},
                        {"created", now_seconds()},
                        {"in_cache", false},
                        {"path", "/sim/" + id + ".gguf"},
                        {"status", status}});
  }
  send_json(res, 200, json{{"object", "list"}, {"data", data}});
}

void Engine::router_load(const Request& req, Response& res) {
  const std::string model = string_field(req.body, "model");
  std::lock_guard lock(mu_);
  const auto it = models_.find(model);
  if (it == models_.end()) {
    send_model_not_found(res, model);
    return;
  }
  if (it->second.status != ModelStatus::unloaded) {
    send_json(res, 400, llama_error(400, "model '" + model + "' is already loaded", "invalid_request_error"));
    return;
  }
  if (stopping_) {
    send_json(res, 503, llama_error(503, "shutting down", "unavailable_error"));
    return;
  }
  it->second = RouterModelState{ModelStatus::loading, false};
  loaders_.emplace_back([this, model] { router_load_worker(model); });
  send_json(res, 200, json{{"success", true}});
}

void Engine::router_load_worker(const std::string& model) {
  if (auto r = memory_.allocate("model:" + model, total_bytes()); !r) {
    std::fprintf(stderr, "gpumod-test-engine: loading %s failed: %s\n", model.c_str(), r.error().c_str());
    std::lock_guard lock(mu_);
    models_[model] = RouterModelState{ModelStatus::unloaded, true};
    return;
  }
  const auto wait = options_.crash_on_load ? options_.load / 2 : options_.load;
  const bool stopped = stop_within(wait);
  if (options_.crash_on_load && !stopped) {
    std::fprintf(stderr, "gpumod-test-engine: model instance %s crashed while loading (--crash-on-load)\n",
                 model.c_str());
  }
  if (stopped || options_.crash_on_load) {
    memory_.discard("model:" + model);
    std::lock_guard lock(mu_);
    models_[model] = RouterModelState{ModelStatus::unloaded, options_.crash_on_load && !stopped};
    return;
  }
  std::lock_guard lock(mu_);
  models_[model].status = ModelStatus::loaded;
}

void Engine::router_unload(const Request& req, Response& res) {
  const std::string model = string_field(req.body, "model");
  {
    std::lock_guard lock(mu_);
    const auto it = models_.find(model);
    if (it == models_.end()) {
      send_model_not_found(res, model);
      return;
    }
    if (it->second.status != ModelStatus::loaded) {
      send_json(res, 400, llama_error(400, "model '" + model + "' is not loaded", "invalid_request_error"));
      return;
    }
  }
  memory_.discard("model:" + model);
  std::lock_guard lock(mu_);
  models_[model] = RouterModelState{};
  send_json(res, 200, json{{"success", true}});
}

void Engine::v1_models(const Request& req, Response& res) {
  if (options_.protocol == Protocol::router) {
    router_models(req, res);
    return;
  }
  send_json(
      res, 200,
      json{{"object", "list"},
           {"data",
            json::array({json{{"id", options_.model},
                              {"object", "model"},
                              {"owned_by", std::string("gpumod-test-engine/") + to_string(options_.protocol)},
                              {"created", now_seconds()}}})}});
}

bool Engine::check_model(const std::string& model, Response& res) {
  std::lock_guard lock(mu_);
  if (options_.protocol == Protocol::router) {
    const auto it = models_.find(model);
    if (model.empty()) {
      send_json(res, 400, llama_error(400, "\"model\" is required", "invalid_request_error"));
      return false;
    }
    if (it == models_.end()) {
      send_model_not_found(res, model);
      return false;
    }
    if (it->second.status != ModelStatus::loaded) {
      send_json(res, 400, llama_error(400, "model '" + model + "' is not loaded", "invalid_request_error"));
      return false;
    }
    return true;
  }
  if (!ready_) {
    send_json(res, 503, llama_error(503, "Loading model", "unavailable_error"));
    return false;
  }
  if (options_.protocol == Protocol::vllm) {
    if (!model.empty() && model != options_.model) {
      send_json(res, 404,
                json{{"error",
                      {{"message", "The model `" + model + "` does not exist."},
                       {"type", "NotFoundError"},
                       {"param", nullptr},
                       {"code", 404}}}});
      return false;
    }
    if (!(weights_awake_ && kv_awake_)) {
      send_json(res, 503, json{{"error", {{"message", "the engine is sleeping"}, {"code", 503}}}});
      return false;
    }
  }
  return true;
}

std::optional<Engine::V1Request> Engine::parse_v1_request(const Request& req, Response& res,
                                                          const char* required_field) {
  V1Request parsed;
  parsed.body = json::parse(req.body, nullptr, false);
  if (!parsed.body.is_object()) {
    send_json(res, 400, llama_error(400, "request body is not a JSON object", "invalid_request_error"));
    return std::nullopt;
  }
  if (const auto it = parsed.body.find("model"); it != parsed.body.end() && !it->is_null()) {
    if (!it->is_string()) {
      send_json(res, 400, llama_error(400, "\"model\" must be a string", "invalid_request_error"));
      return std::nullopt;
    }
    parsed.model = it->get<std::string>();
  }
  if (required_field != nullptr && !parsed.body.contains(required_field)) {
    send_json(
        res, 400,
        llama_error(400, "\"" + std::string(required_field) + "\" is required", "invalid_request_error"));
    return std::nullopt;
  }
  if (!check_model(parsed.model, res)) return std::nullopt;
  parsed.served = parsed.model.empty() ? options_.model : parsed.model;
  return parsed;
}

namespace {

// One streamed reply; each SSE chunk is made when the client is ready for it, so a
// 100,000-token stream never holds all its JSON at once.
struct ToyStream {
  std::vector<std::string> words;
  std::string id;
  std::string served;
  std::string finish_reason;
  long long created = 0;
  bool chat = false;
  std::size_t next = 0;  // 0..words.size()-1: content; words.size(): final chunk; then [DONE]

  [[nodiscard]] bool finished() const { return next > words.size() + 1; }
  std::string take() {
    const std::size_t i = next++;
    if (i == words.size() + 1) return "data: [DONE]\n\n";
    const bool last = i == words.size();
    const std::string piece = last ? "" : (i == 0 ? words[i] : " " + words[i]);
    json choice = {{"index", 0}, {"finish_reason", last ? json(finish_reason) : json(nullptr)}};
    if (chat) {
      choice["delta"] = last ? json::object() : json{{"role", "assistant"}, {"content", piece}};
    } else {
      choice["text"] = piece;
    }
    const json chunk = {{"id", id},
                        {"object", chat ? "chat.completion.chunk" : "text_completion"},
                        {"created", created},
                        {"model", served},
                        {"choices", json::array({choice})}};
    return "data: " + chunk.dump() + "\n\n";
  }
};

}  // namespace

void Engine::v1_generate(const Request& req, Response& res, bool chat) {
  auto parsed = parse_v1_request(req, res);
  if (!parsed) return;
  const json& body = parsed->body;
  const auto length = requested_length(body);
  if (!length) {
    send_json(res, 400, llama_error(400, length.error(), "invalid_request_error"));
    return;
  }
  const std::string prompt = prompt_of(body, chat);
  auto words = toy_reply(parsed->served, prompt, *length);
  {
    std::lock_guard lock(mu_);
    if (!weights_valid_) words.insert(words.begin(), "(weights-not-reloaded)");
  }
  const std::string id =
      std::string(chat ? "chatcmpl-" : "cmpl-") + std::to_string(fnv1a(req.body) % 1000000007ULL);
  // A reply of the requested length ended because of max_tokens, as real servers report it.
  const std::string finish_reason = length->has_value() ? "length" : "stop";
  const auto stream = body.find("stream");
  const bool streamed = stream != body.end() && stream->is_boolean() && stream->get<bool>();

  if (!streamed) {
    const std::size_t prompt_tokens = words_of(prompt).size();
    std::string text;
    for (const auto& w : words) text += (text.empty() ? "" : " ") + w;
    json choice = {{"index", 0}, {"finish_reason", finish_reason}};
    if (chat) {
      choice["message"] = {{"role", "assistant"}, {"content", text}};
    } else {
      choice["text"] = text;
    }
    send_json(res, 200,
              json{{"id", id},
                   {"object", chat ? "chat.completion" : "text_completion"},
                   {"created", now_seconds()},
                   {"model", parsed->served},
                   {"choices", json::array({choice})},
                   {"usage",
                    {{"prompt_tokens", prompt_tokens},
                     {"completion_tokens", words.size()},
                     {"total_tokens", prompt_tokens + words.size()}}}});
    return;
  }

  // SSE: one chunk per word, --stream-gap-ms apart, then a final chunk and [DONE].
  auto toy = std::make_shared<ToyStream>();
  toy->words = std::move(words);
  toy->id = id;
  toy->served = parsed->served;
  toy->finish_reason = finish_reason;
  toy->created = now_seconds();
  toy->chat = chat;
  const auto gap = options_.stream_gap;
  res.content_type = "text/event-stream";
  res.stream = [toy = std::move(toy), gap](http::StreamSink& sink) {
    while (!toy->finished()) {
      if (toy->next > 0 && gap.count() > 0) std::this_thread::sleep_for(gap);
      if (!sink.write(toy->take())) return false;  // the client left or the engine is stopping
    }
    return true;
  };
}

void Engine::v1_embeddings(const Request& req, Response& res) {
  auto parsed = parse_v1_request(req, res, "input");
  if (!parsed) return;
  std::vector<std::string> inputs;
  const json& input = parsed->body.at("input");
  if (input.is_string()) {
    inputs.push_back(input.get<std::string>());
  } else if (input.is_array()) {
    for (const auto& i : input) inputs.push_back(i.is_string() ? i.get<std::string>() : i.dump());
  } else {
    inputs.push_back(input.dump());
  }
  json data = json::array();
  std::size_t tokens = 0;
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    tokens += words_of(inputs[i]).size();
    data.push_back(json{{"object", "embedding"}, {"index", i}, {"embedding", toy_embedding(inputs[i])}});
  }
  send_json(res, 200,
            json{{"object", "list"},
                 {"data", data},
                 {"model", parsed->served},
                 {"usage", {{"prompt_tokens", tokens}, {"total_tokens", tokens}}}});
}

}  // namespace gpumod::engine
