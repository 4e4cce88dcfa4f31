#include "app/buffered_log_sink.hpp"

#include <pthread.h>
#include <spdlog/details/log_msg.h>
#include <spdlog/sinks/base_sink.h>
#include <unistd.h>

#include <csignal>

#include <cerrno>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>

namespace gpumod::app {

namespace {

constexpr std::size_t kFlushAtBytes = std::size_t{64} * 1024;

class BufferedStderrSink final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  explicit BufferedStderrSink(std::chrono::milliseconds interval) : interval_(interval) {
    // The flusher must never take a process signal (the daemon waits for SIGTERM / SIGHUP with
    // sigwait on one thread, and the logger may exist before that mask is set): it starts with
    // every signal blocked.
    sigset_t all;
    sigset_t previous;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &previous);
    flusher_ = std::thread([this] { run(); });
    pthread_sigmask(SIG_SETMASK, &previous, nullptr);
  }
  ~BufferedStderrSink() override {
    {
      std::lock_guard lock(stop_mutex_);
      stop_ = true;
    }
    stop_cv_.notify_one();
    flusher_.join();
    flush();
  }
  BufferedStderrSink(const BufferedStderrSink&) = delete;
  BufferedStderrSink& operator=(const BufferedStderrSink&) = delete;

 protected:
  // Called with base_sink's mutex held.
  void sink_it_(const spdlog::details::log_msg& msg) override {
    spdlog::memory_buf_t formatted;
    formatter_->format(msg, formatted);
    buffer_.append(formatted.data(), formatted.size());
    if (msg.level >= spdlog::level::warn || buffer_.size() >= kFlushAtBytes) write_out();
  }
  void flush_() override { write_out(); }

 private:
  void write_out() {
    std::size_t done = 0;
    while (done < buffer_.size()) {
      const ssize_t n = ::write(STDERR_FILENO, buffer_.data() + done, buffer_.size() - done);
      if (n > 0) {
        done += static_cast<std::size_t>(n);
      } else if (n < 0 && errno == EINTR) {
        continue;
      } else {
        break;  // stderr is gone: drop the lines rather than block the daemon
      }
    }
    buffer_.clear();
  }

  void run() {
    std::unique_lock lock(stop_mutex_);
    while (!stop_) {
      stop_cv_.wait_for(lock, interval_);
      if (stop_) break;
      lock.unlock();
      flush();  // base_sink::flush takes the sink's mutex
      lock.lock();
    }
  }

  std::string buffer_;
  std::chrono::milliseconds interval_;
  std::mutex stop_mutex_;
  std::condition_variable stop_cv_;
  bool stop_ = false;
  std::thread flusher_;
};

}  // namespace

std::shared_ptr<spdlog::sinks::sink> make_buffered_stderr_sink(std::chrono::milliseconds interval) {
  return std::make_shared<BufferedStderrSink>(interval);
}

}  // namespace gpumod::app
