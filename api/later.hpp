// Internal to api/: answering a client once a scheduler future is ready, holding no thread
// while it waits. A POST /request for a model that loads, a /v1 call behind it, a start, a mode
// switch: each parks its connection (http/async.hpp) and gives the scheduler a Notify; the
// Notify posts to the HTTP loop, and the answer is written there. So a storm of clients waiting
// on one loading model costs memory per client, not a thread per client.
//
// Threads: LoopPoster::post and the Notify from notify() may be called from any thread; all
// else here runs on the HTTP loop thread.
#pragma once

#include <chrono>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <unordered_set>
#include <utility>
#include <vector>

#include "http/async.hpp"
#include "scheduler/scheduler.hpp"

namespace gpumod::api {

// A parked client, as the stopping server sees it.
class WaitingClient {
 public:
  virtual ~WaitingClient() = default;
  // Answers 503 "shutting down" (loop thread).
  virtual void answer_stopping() = 0;
};

// The way back to the HTTP loop, and who waits there.
// post(): any thread. It posts for as long as the server exists and does nothing afterwards: a
// scheduler Notify may fire after the ApiServer is gone (the scheduler answers what is pending
// when it stops), so a Notify never holds the Reactor itself.
// The rest: loop thread only.
class LoopPoster {
 public:
  explicit LoopPoster(http::Reactor& loop) : loop_(&loop) {}
  void post(http::Reactor::Callback callback) {
    std::lock_guard lock(mutex_);
    if (loop_ != nullptr) loop_->post(std::move(callback));
  }
  // The ApiServer, before its HTTP server goes.
  void close() {
    std::lock_guard lock(mutex_);
    loop_ = nullptr;
  }

  void add(WaitingClient* w) { waiting_.insert(w); }
  void remove(WaitingClient* w) { waiting_.erase(w); }
  // The server is about to stop: every parked client gets its answer first.
  void answer_all_stopping() {
    const std::vector<WaitingClient*> all(waiting_.begin(), waiting_.end());
    for (WaitingClient* w : all) {
      if (waiting_.count(w) != 0) w->answer_stopping();
    }
  }

 private:
  std::mutex mutex_;
  http::Reactor* loop_;
  std::unordered_set<WaitingClient*> waiting_;
};

// One client waiting for one future. Use: make(), pass notify() to the Control call and store
// its future in `future`, then park(res, ...) from the handler. The Notify may fire before
// park(): its post runs on the loop only after the handler has returned and park()ed.
template <typename Future>
class LaterAnswer final : public WaitingClient, public std::enable_shared_from_this<LaterAnswer<Future>> {
 public:
  using Client = std::shared_ptr<http::Responder>;
  // Answers the client (send(), or a stream) once `future` is ready.
  using OnReady = std::function<void(Future& future, const Client& client)>;
  // Answers the client when no answer will come in time: the budget passed first (the
  // scheduler did not answer; a 504), or the server is stopping (a 503).
  using OnLate = std::function<void(const Client& client, bool stopping)>;
  // The client left (or the server stopped) before the answer: no answer is possible.
  using OnGone = std::function<void()>;

  static std::shared_ptr<LaterAnswer> make(std::shared_ptr<LoopPoster> poster) {
    return std::shared_ptr<LaterAnswer>(new LaterAnswer(std::move(poster)));
  }

  Future future;

  [[nodiscard]] scheduler::Notify notify() {
    return [poster = poster_, weak = this->weak_from_this()] {
      poster->post([weak] {
        if (auto self = weak.lock()) self->complete(/*in_time=*/true);
      });
    };
  }

  // Parks the handler's connection until the future is ready or `budget` passes.
  void park(http::HttpResponse& res, std::chrono::milliseconds budget, OnReady on_ready, OnLate on_late,
            OnGone on_gone = nullptr) {
    on_ready_ = std::move(on_ready);
    on_late_ = std::move(on_late);
    on_gone_ = std::move(on_gone);
    res.async = [self = this->shared_from_this(), budget](const Client& client) {
      self->begin(client, budget);
    };
  }

 private:
  explicit LaterAnswer(std::shared_ptr<LoopPoster> poster) : poster_(std::move(poster)) {}

  void answer_stopping() override { complete(/*in_time=*/false, /*stopping=*/true); }

  void begin(const Client& client, std::chrono::milliseconds budget) {
    client_ = client;
    poster_->add(this);
    http::Reactor& loop = client->reactor();
    // The timer holds the only strong reference from here on: it goes when the answer is given.
    timer_ = loop.call_at(std::chrono::steady_clock::now() + budget,
                          [self = this->shared_from_this()] { self->complete(/*in_time=*/false); });
    client->on_gone([weak = this->weak_from_this()] {
      auto self = weak.lock();
      if (!self || self->done_) return;
      self->finish_waiting();
      if (self->on_gone_) self->on_gone_();
    });
    if (future.valid() && future.wait_for(std::chrono::seconds(0)) == std::future_status::ready) {
      complete(/*in_time=*/true);
    }
  }

  void complete(bool in_time, bool stopping = false) {
    if (done_ || !client_) return;
    const auto keep = this->shared_from_this();  // finish_waiting drops the timer's reference
    finish_waiting();
    client_->on_gone(nullptr);
    if (!client_->open()) return;
    // The budget can pass in the same round as the answer came: an answer is an answer.
    if (in_time ||
        (future.valid() && future.wait_for(std::chrono::seconds(0)) == std::future_status::ready)) {
      on_ready_(future, client_);
    } else {
      on_late_(client_, stopping);
    }
  }

  void finish_waiting() {
    done_ = true;
    poster_->remove(this);
    client_->reactor().cancel_call(timer_);
  }

  std::shared_ptr<LoopPoster> poster_;
  Client client_;
  http::Reactor::Id timer_ = 0;
  bool done_ = false;
  OnReady on_ready_;
  OnLate on_late_;
  OnGone on_gone_;
};

}  // namespace gpumod::api
