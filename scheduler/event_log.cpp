#include "scheduler/event_log.hpp"

#include <chrono>
#include <cstdio>
#include <ctime>
#include <utility>

namespace gpumod::scheduler {

namespace {

std::string utc_now_text() {
  const auto now = std::chrono::system_clock::now();
  const std::time_t secs = std::chrono::system_clock::to_time_t(now);
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[96];  // more than any int fields can take, so -Wformat-truncation has nothing to say
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms));
  return buf;
}

// The event as JSON without its seq, which append() puts in front: {"time":..,"kind":..,...}.
std::string render(const SchedEvent& e, const std::string& time) {
  nlohmann::json j = nlohmann::json::object();
  j["time"] = time;
  j["kind"] = e.kind;
  if (!e.service.empty()) j["service"] = e.service;
  if (!e.request_id.empty()) j["request_id"] = e.request_id;
  if (!e.mode.empty()) j["mode"] = e.mode;
  if (e.gpu >= 0) j["gpu"] = e.gpu;
  j["message"] = e.message;
  for (const auto& [key, value] : e.detail.items()) j[key] = value;
  // Names and messages may carry bytes that are not UTF-8 (a backend's output): replaced, never
  // thrown on.
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace

EventLog::EventLog(std::size_t capacity) : capacity_(capacity == 0 ? 1 : capacity) {}

void EventLog::append(std::vector<SchedEvent> events) {
  if (events.empty()) return;
  // Rendered before the lock, so readers are never held up by it; numbered under it, so the
  // ring is in seq order whoever appends.
  const std::string time = utc_now_text();
  std::vector<std::string> rendered;
  rendered.reserve(events.size());
  for (const SchedEvent& e : events) rendered.push_back(render(e, time));
  {
    std::lock_guard lock(mutex_);
    for (std::size_t i = 0; i < events.size(); ++i) {
      auto logged = std::make_shared<LoggedEvent>();
      logged->seq = next_seq_++;
      logged->kind = std::move(events[i].kind);
      logged->json = "{\"seq\":" + std::to_string(logged->seq) + "," + rendered[i].substr(1);
      ring_.push_back(std::move(logged));
    }
    while (ring_.size() > capacity_) ring_.pop_front();
  }
  std::lock_guard lock(listeners_mutex_);
  for (auto& [id, listener] : listeners_) listener();
}

EventLog::Read EventLog::read_after(std::uint64_t after, std::size_t max) const {
  Read r;
  std::lock_guard lock(mutex_);
  if (ring_.empty()) return r;
  const std::uint64_t first = ring_.front()->seq;
  if (after + 1 < first) r.missed = first - after - 1;
  const std::uint64_t from = std::max(after + 1, first);
  for (std::size_t i = static_cast<std::size_t>(from - first); i < ring_.size() && r.events.size() < max;
       ++i) {
    r.events.push_back(ring_[i]);
  }
  return r;
}

std::uint64_t EventLog::last_seq() const {
  std::lock_guard lock(mutex_);
  return ring_.empty() ? next_seq_ - 1 : ring_.back()->seq;
}

EventLog::ListenerId EventLog::listen(std::function<void()> on_append) {
  std::lock_guard lock(listeners_mutex_);
  const ListenerId id = next_listener_++;
  listeners_.emplace(id, std::move(on_append));
  return id;
}

void EventLog::unlisten(ListenerId id) {
  std::lock_guard lock(listeners_mutex_);
  listeners_.erase(id);
}

}  // namespace gpumod::scheduler
