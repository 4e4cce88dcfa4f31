// The two endpoints that stream for as long as the client stays: GET /events (Server-Sent Events
// of the scheduler's decisions, from its EventLog) and GET /services/{id}/logs?follow=1 (a
// service's log as it grows). Both run on the HTTP loop thread with no thread of their own: a
// stream is woken by a post (new events), inotify (the log grew) or a timer, writes what it has
// and sleeps again. Neither may slow anything else: a client that reads slowly gets nothing
// more queued once its backlog passes kMaxBacklog (the events it misses meanwhile are counted
// and reported to it in a `dropped` event; a log follower just resumes where it was), and one
// that leaves is forgotten at once.
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "api/http_context.hpp"
#include "backends/service_log.hpp"
#include "scheduler/event_log.hpp"

namespace gpumod::api {

namespace {

using Client = std::shared_ptr<http::Responder>;

// Above this many bytes queued for a client, a stream stops producing until they are taken.
constexpr std::size_t kMaxBacklog = std::size_t{256} * 1024;
// Events sent per wake-up before the stream yields the loop to others.
constexpr std::size_t kEventsPerRound = 256;
// SSE comment sent when nothing happened for this long, so proxies keep the stream open.
constexpr auto kKeepAlive = std::chrono::seconds(15);
// A log follower checks its file this often even without an inotify event (inotify missing,
// or a log written through a path it does not see).
constexpr auto kLogCheckInterval = std::chrono::seconds(1);
constexpr std::size_t kLogReadPerRound = std::size_t{64} * 1024;
constexpr int kDefaultTailLines = 100;
constexpr int kMaxTailLines = 10000;

// A non-negative integer query parameter; nullopt (and a 400 in `res`) when it is not one.
std::optional<std::uint64_t> count_param(const HttpRequest& req, HttpResponse& res, const std::string& name,
                                         std::uint64_t fallback, std::uint64_t max) {
  if (!req.has_param(name)) return fallback;
  const std::string v = req.param(name);
  std::uint64_t n = 0;
  const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
  if (v.empty() || ec != std::errc() || end != v.data() + v.size() || n > max) {
    send_error(res, 400,
               "query parameter '" + name + "' must be a whole number from 0 to " + std::to_string(max) +
                   ", got '" + v + "'");
    return std::nullopt;
  }
  return n;
}

std::optional<bool> flag_param(const HttpRequest& req, HttpResponse& res, const std::string& name) {
  if (!req.has_param(name)) return false;
  const std::string v = req.param(name);
  if (v == "1" || v == "true" || v.empty()) return true;
  if (v == "0" || v == "false") return false;
  send_error(res, 400, "query parameter '" + name + "' must be 1, true, 0 or false, got '" + v + "'");
  return std::nullopt;
}

// ---------- GET /events ----------

class EventStream : public std::enable_shared_from_this<EventStream> {
 public:
  EventStream(scheduler::EventLog& log, std::shared_ptr<LoopPoster> poster, std::uint64_t cursor)
      : log_(log), poster_(std::move(poster)), cursor_(cursor) {}
  ~EventStream() { stop_listening(); }
  EventStream(const EventStream&) = delete;
  EventStream& operator=(const EventStream&) = delete;

  void begin(const Client& client) {
    client_ = client;
    auto& res = client->response();
    res.status = 200;
    res.content_type = "text/event-stream";
    res.set_header("Cache-Control", "no-cache");
    res.set_header("X-Accel-Buffering", "no");  // nginx: do not buffer the stream
    client->start_stream();
    client->write(": gpumod scheduler events\n\n");
    client->on_gone([weak = weak_from_this()] {
      if (auto self = weak.lock()) self->end();
    });
    // Called on the scheduler thread: only a post, at most one outstanding.
    listener_ = log_.listen([poster = poster_, weak = weak_from_this(), pending = pending_] {
      if (pending->exchange(true)) return;
      poster->post([weak] {
        if (auto self = weak.lock()) self->pump();
      });
    });
    arm_keep_alive();
    pump();
  }

 private:
  void pump() {
    pending_->store(false);
    if (!client_ || !client_->open()) return end();
    for (;;) {
      if (client_->backlog() > kMaxBacklog) {
        // The client is slow: nothing more is queued until it has taken what it has. Events
        // that leave the ring meanwhile are reported as missed.
        if (!waiting_drain_) {
          waiting_drain_ = true;
          client_->notify_when_drained([weak = weak_from_this()] {
            if (auto self = weak.lock()) {
              self->waiting_drain_ = false;
              self->pump();
            }
          });
        }
        return;
      }
      const auto read = log_.read_after(cursor_, kEventsPerRound);
      if (read.missed > 0) {
        client_->write("event: dropped\ndata: {\"missed\":" + std::to_string(read.missed) +
                       ",\"message\":\"this client fell behind; " + std::to_string(read.missed) +
                       " event(s) were dropped\"}\n\n");
        cursor_ += read.missed;
      }
      if (read.events.empty()) return;
      std::string out;
      for (const auto& e : read.events) {
        out += "id: " + std::to_string(e->seq) + "\nevent: " + e->kind + "\ndata: " + e->json + "\n\n";
        cursor_ = e->seq;
      }
      if (!client_->write(out)) return end();
      wrote_ = true;
      if (read.events.size() < kEventsPerRound) return;
    }
  }

  void arm_keep_alive() {
    timer_ = client_->reactor().call_at(std::chrono::steady_clock::now() + kKeepAlive,
                                        [self = shared_from_this()] { self->keep_alive(); });
  }
  void keep_alive() {
    timer_ = 0;
    if (!client_ || !client_->open()) return end();
    if (!wrote_ && client_->backlog() == 0) client_->write(": keep-alive\n\n");
    wrote_ = false;
    arm_keep_alive();
  }

  void end() {
    stop_listening();
    if (timer_ != 0 && client_) client_->reactor().cancel_call(timer_);
    timer_ = 0;
  }
  void stop_listening() {
    if (listener_ != 0) log_.unlisten(std::exchange(listener_, 0));
  }

  scheduler::EventLog& log_;
  std::shared_ptr<LoopPoster> poster_;
  std::shared_ptr<std::atomic<bool>> pending_ = std::make_shared<std::atomic<bool>>(false);
  std::uint64_t cursor_;  // the last seq sent
  Client client_;
  scheduler::EventLog::ListenerId listener_ = 0;
  http::Reactor::Id timer_ = 0;
  bool waiting_drain_ = false;
  bool wrote_ = false;  // since the last keep-alive check
};

void get_events(Context& ctx, HttpRequest& req, HttpResponse& res) {
  scheduler::EventLog& log = ctx.control->events();
  const std::uint64_t last = log.last_seq();
  // Where to start: after the id a reconnecting EventSource sends, after ?since=, or the last
  // ?tail= events; by default only what happens from now on.
  std::uint64_t cursor = 0;
  const std::string& resume = req.header("Last-Event-ID");
  if (!resume.empty()) {
    std::uint64_t n = 0;
    const auto [end, ec] = std::from_chars(resume.data(), resume.data() + resume.size(), n);
    if (ec != std::errc() || end != resume.data() + resume.size()) {
      send_error(res, 400, "Last-Event-ID must be an event id (a whole number), got '" + resume + "'");
      return;
    }
    cursor = std::min(n, last);
  } else if (req.has_param("since")) {
    auto since = count_param(req, res, "since", last, UINT64_MAX);
    if (!since) return;
    cursor = std::min(*since, last);
  } else {
    auto tail = count_param(req, res, "tail", 0, 100000);
    if (!tail) return;
    cursor = last - std::min(*tail, last);
  }
  auto stream = std::make_shared<EventStream>(log, ctx.poster, cursor);
  res.async = [stream](const Client& client) { stream->begin(client); };
}

// ---------- GET /services/{id}/logs ----------

// Follows one log file: what is appended, across rotation (the file renamed away and a new
// one made) and truncation (read again from the start).
class LogFollower : public std::enable_shared_from_this<LogFollower> {
 public:
  LogFollower(std::filesystem::path path, int fd, std::int64_t offset)
      : path_(std::move(path)), fd_(fd), offset_(offset) {}
  ~LogFollower() { close_all(); }
  LogFollower(const LogFollower&) = delete;
  LogFollower& operator=(const LogFollower&) = delete;

  void begin(const Client& client, const std::string& tail) {
    client_ = client;
    auto& res = client->response();
    res.status = 200;
    res.content_type = "text/plain; charset=utf-8";
    res.set_header("Cache-Control", "no-cache");
    res.set_header("X-Accel-Buffering", "no");
    client->start_stream();
    if (!tail.empty()) client->write(tail + "\n");
    client->on_gone([weak = weak_from_this()] {
      if (auto self = weak.lock()) self->close_all();
    });
    // The directory is watched, not the file: the file may not exist yet, or be replaced.
    inotify_ = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (inotify_ >= 0 && ::inotify_add_watch(inotify_, path_.parent_path().c_str(),
                                             IN_MODIFY | IN_CREATE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE |
                                                 IN_CLOSE_WRITE) >= 0) {
      watch_ = client->reactor().watch(inotify_, EPOLLIN, [weak = weak_from_this()](std::uint32_t) {
        if (auto self = weak.lock()) self->on_inotify();
      });
    }
    arm_timer();
    check();
  }

 private:
  void on_inotify() {
    char buf[4096];
    while (::read(inotify_, buf, sizeof buf) > 0) {
    }
    check();
  }

  void arm_timer() {
    timer_ = client_->reactor().call_at(std::chrono::steady_clock::now() + kLogCheckInterval,
                                        [self = shared_from_this()] {
                                          self->timer_ = 0;
                                          if (!self->client_ || !self->client_->open())
                                            return self->close_all();
                                          self->check();
                                          self->arm_timer();
                                        });
  }

  // Sends what was appended since the last look (at most kLogReadPerRound per round while the
  // client keeps up).
  void check() {
    if (!client_ || !client_->open()) return close_all();
    if (client_->backlog() > kMaxBacklog) {
      if (!waiting_drain_) {
        waiting_drain_ = true;
        client_->notify_when_drained([weak = weak_from_this()] {
          if (auto self = weak.lock()) {
            self->waiting_drain_ = false;
            self->check();
          }
        });
      }
      return;
    }
    if (fd_ < 0) {  // no file yet: see whether it appeared
      fd_ = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
      offset_ = 0;
      if (fd_ < 0) return;
    }
    struct stat open_st {};
    struct stat path_st {};
    if (::fstat(fd_, &open_st) != 0) return;
    const bool replaced = ::stat(path_.c_str(), &path_st) == 0 &&
                          (path_st.st_ino != open_st.st_ino || path_st.st_dev != open_st.st_dev);
    if (open_st.st_size < offset_) offset_ = 0;  // truncated in place
    std::string chunk(kLogReadPerRound, '\0');
    const ssize_t n = ::pread(fd_, chunk.data(), chunk.size(), offset_);
    if (n > 0) {
      offset_ += n;
      chunk.resize(static_cast<std::size_t>(n));
      if (!client_->write(chunk)) return close_all();
      if (static_cast<std::size_t>(n) == kLogReadPerRound) {  // more to read: yield, then go on
        client_->reactor().post([weak = weak_from_this()] {
          if (auto self = weak.lock()) self->check();
        });
      }
      return;
    }
    if (replaced) {  // the old file is read to its end: go on with the new one
      ::close(fd_);
      fd_ = -1;
      check();
    }
  }

  void close_all() {
    if (watch_ != 0 && client_) client_->reactor().unwatch(std::exchange(watch_, 0));
    if (timer_ != 0 && client_) client_->reactor().cancel_call(std::exchange(timer_, 0));
    if (inotify_ >= 0) ::close(std::exchange(inotify_, -1));
    if (fd_ >= 0) ::close(std::exchange(fd_, -1));
  }

  std::filesystem::path path_;
  int fd_;
  std::int64_t offset_;
  int inotify_ = -1;
  Client client_;
  http::Reactor::Id watch_ = 0;
  http::Reactor::Id timer_ = 0;
  bool waiting_drain_ = false;
};

void get_service_logs(Context& ctx, const std::string& id, HttpRequest& req, HttpResponse& res) {
  auto cfg = ctx.control->config();
  if (!cfg || cfg->find_preset(id) == nullptr) {
    send_error(res, 404, "unknown service '" + id + "'");
    return;
  }
  const auto tail = count_param(req, res, "tail", kDefaultTailLines, kMaxTailLines);
  if (!tail) return;
  const auto follow = flag_param(req, res, "follow");
  if (!follow) return;
  const std::filesystem::path log_dir =
      cfg->daemon.log_dir.empty() ? cfg->daemon.state_dir / "logs" : cfg->daemon.log_dir;
  const std::filesystem::path path = backends::service_log_path(log_dir, id);
  // The tail and the follower's start come from one open file and one size, so no line is
  // sent twice or lost between them.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0 && !*follow) {
    send_error(res, 404,
               "no log for " + id + " yet (" + path.string() + " does not exist: it has not been started)");
    return;
  }
  std::string tail_text;
  std::int64_t size = 0;
  if (fd >= 0) {
    struct stat st {};
    if (::fstat(fd, &st) == 0) size = st.st_size;
    const std::int64_t start = std::max<std::int64_t>(0, size - backends::kTailWindowBytes);
    std::string window(static_cast<std::size_t>(size - start), '\0');
    const ssize_t n = ::pread(fd, window.data(), window.size(), start);
    window.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
    tail_text = backends::last_lines(window, static_cast<int>(*tail));
  }
  if (!*follow) {
    ::close(fd);
    res.set_content(tail_text.empty() ? tail_text : tail_text + "\n", "text/plain; charset=utf-8");
    return;
  }
  auto follower = std::make_shared<LogFollower>(path, fd, size);
  res.async = [follower, tail_text](const Client& client) { follower->begin(client, tail_text); };
}

}  // namespace

void register_stream_routes(http::HttpServer& server, Context& ctx) {
  using http::HandlerKind;
  server.route("GET", "/events", HandlerKind::inline_,
               [&ctx](HttpRequest& req, HttpResponse& res) { get_events(ctx, req, res); });
  // Inline: the reads are of at most kTailWindowBytes of a local file, and a follower must
  // start on the loop.
  server.route("GET", "/services/{}/logs", HandlerKind::inline_, [&ctx](HttpRequest& req, HttpResponse& res) {
    get_service_logs(ctx, req.captures[0], req, res);
  });
}

}  // namespace gpumod::api
