// HttpServer, the Reactor side of the HTTP loop: fd watches, timers, callbacks posted from other
// threads and work offloaded to the pool (server_loop.hpp lists the parts).
#include "http/server_loop.hpp"

#include <sys/epoll.h>
#include <unistd.h>

#include <algorithm>

namespace gpumod::http {

// ---------------------------------------------------------------- Reactor
HttpServer::Loop::Id HttpServer::Loop::watch(int fd, std::uint32_t events, FdCallback callback) {
  assert_on_loop("Reactor::watch");
  auto w = std::make_unique<Watch>();
  w->id = next_id++;
  w->fd = fd;
  w->callback = std::move(callback);
  epoll_event ev{};
  ev.events = events | EPOLLET;
  ev.data.ptr = static_cast<Pollable*>(w.get());
  if (::epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &ev) != 0) return 0;
  const Id id = w->id;
  watches.emplace(id, std::move(w));
  return id;
}

void HttpServer::Loop::unwatch(Id id) {
  assert_on_loop("Reactor::unwatch");
  auto it = watches.find(id);
  if (it == watches.end()) return;
  it->second->dead = true;
  ::epoll_ctl(epoll_fd, EPOLL_CTL_DEL, it->second->fd, nullptr);
  // Not freed yet: this round's events may still point at it, and its callback may be the
  // one running.
  dead_watches.push_back(std::move(it->second));
  watches.erase(it);
}

HttpServer::Loop::Id HttpServer::Loop::call_at(TimePoint when, Callback callback) {
  assert_on_loop("Reactor::call_at");
  const Id id = next_id++;
  timers.emplace(id, Timer{std::move(callback), timer_order.emplace(when, id)});
  return id;
}

void HttpServer::Loop::cancel_call(Id id) {
  assert_on_loop("Reactor::cancel_call");
  auto it = timers.find(id);
  if (it == timers.end()) return;
  timer_order.erase(it->second.order);
  timers.erase(it);
}

void HttpServer::Loop::post(Callback callback) {
  {
    std::lock_guard lock(returned_mutex);
    posted.push_back(std::move(callback));
  }
  const std::uint64_t one = 1;
  (void)!::write(wake_fd, &one, sizeof one);
}

void HttpServer::Loop::offload(Callback callback) {
  WorkItem item;
  item.task = std::move(callback);
  {
    std::lock_guard lock(pool_mutex);
    if (pool_stop) return;
    pool_queue.push_back(std::move(item));
  }
  pool_cv.notify_one();
}

void HttpServer::Loop::run_timers(Clock::time_point now) {
  while (!timer_order.empty() && timer_order.begin()->first <= now) {
    const Id id = timer_order.begin()->second;
    timer_order.erase(timer_order.begin());
    auto it = timers.find(id);
    Callback callback = std::move(it->second.callback);
    timers.erase(it);
    callback();
  }
}

int HttpServer::Loop::wait_timeout_ms(Clock::time_point now) {
  constexpr int kTick = 250;
  if (!dirty.empty()) return 0;  // left over by service_dirty's round cap
  if (timer_order.empty()) return kTick;
  const auto due = timer_order.begin()->first;
  if (due <= now) return 0;
  const auto ms = std::chrono::ceil<std::chrono::milliseconds>(due - now).count();
  return static_cast<int>(std::min<std::int64_t>(ms, kTick));
}

void HttpServer::Loop::free_dead_watches() {
  // A watch's callback may own things whose destructors unwatch more.
  while (!dead_watches.empty()) {
    auto dead = std::move(dead_watches);
    dead_watches.clear();
  }
}

void HttpServer::Loop::service_dirty(Clock::time_point now) {
  for (int round = 0; round < 16 && !dirty.empty(); ++round) {
    auto batch = std::move(dirty);
    dirty.clear();
    for (Connection* c : batch) {
      if (!c->closed && !c->in_worker) service(*c, now);
    }
  }
}

}  // namespace gpumod::http
