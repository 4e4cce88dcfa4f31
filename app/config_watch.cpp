#include "app/config_watch.hpp"

#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <thread>
#include <utility>

namespace gpumod::app {

namespace fs = std::filesystem;

namespace {

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

constexpr std::uint32_t kEvents =
    IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE | IN_CREATE | IN_DELETE_SELF | IN_MOVE_SELF;

}  // namespace

bool ConfigWatcher::relevant(std::string_view name) {
  if (name.empty() || name.front() == '.') return false;
  if (name == "4913") return false;
  for (std::string_view t : {".swp", ".swx", "~", ".tmp"}) {
    if (ends_with(name, t)) return false;
  }
  return true;
}

struct ConfigWatcher::Impl {
  OnChange on_change;
  std::chrono::milliseconds debounce;
  int inotify = -1;
  int stop_fd = -1;
  using Watches = std::map<int, std::pair<fs::path, bool>>;  // wd -> (folder, recursive)
  Watches watches;  // touched only by the watcher's thread once it runs
  std::thread thread;

  void add(const fs::path& dir, bool recursive, Watches& into) {
    const int wd = ::inotify_add_watch(inotify, dir.c_str(), kEvents | IN_ONLYDIR);
    if (wd < 0) {
      spdlog::warn("watch: cannot watch {}: {}", dir.string(), std::strerror(errno));
      return;
    }
    into[wd] = {dir, recursive};
    if (!recursive) return;
    std::error_code ec;
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
      if (it->is_directory(ec) && relevant(it->path().filename().string())) add(it->path(), true, into);
    }
  }

  // Watches exactly `dirs` from now on. A folder still wanted is never unwatched on the way
  // (inotify hands back the same descriptor for a folder it already watches): removing every
  // watch and adding them back left a gap after each reload in which a write was missed.
  void watch_all(const std::vector<config::Config::WatchedDir>& dirs) {
    Watches next;
    for (const auto& d : dirs) add(d.path, d.recursive, next);
    for (const auto& [wd, what] : watches) {
      if (next.count(wd) == 0) ::inotify_rm_watch(inotify, wd);
    }
    watches = std::move(next);
  }

  // Reads what inotify has; true when something relevant changed.
  bool drain() {
    alignas(inotify_event) char buf[16384];
    bool changed = false;
    for (;;) {
      const ssize_t n = ::read(inotify, buf, sizeof buf);
      if (n <= 0) return changed;
      for (ssize_t at = 0; at < n;) {
        const auto* e = reinterpret_cast<const inotify_event*>(buf + at);
        at += static_cast<ssize_t>(sizeof(inotify_event) + e->len);
        const std::string name = e->len > 0 ? std::string(e->name) : std::string();
        const auto w = watches.find(e->wd);
        if ((e->mask & (IN_DELETE_SELF | IN_MOVE_SELF)) != 0) {
          changed = true;  // a watched folder went away: reload (which says what is missing)
          continue;
        }
        if (!relevant(name)) continue;
        if ((e->mask & IN_ISDIR) != 0 && (e->mask & (IN_CREATE | IN_MOVED_TO)) != 0 && w != watches.end() &&
            w->second.second) {
          add(w->second.first / name, true, watches);  // a new subfolder of presets or modes
        }
        changed = true;
      }
    }
  }

  void run() {
    // A plain flag and time point (not an optional: gcc's -Wmaybe-uninitialized misreads it).
    bool pending = false;
    auto due = std::chrono::steady_clock::now();
    for (;;) {
      int timeout = -1;
      if (pending) {
        const auto left =
            std::chrono::duration_cast<std::chrono::milliseconds>(due - std::chrono::steady_clock::now());
        timeout = static_cast<int>(std::max<std::int64_t>(0, left.count()));
      }
      pollfd fds[2] = {{inotify, POLLIN, 0}, {stop_fd, POLLIN, 0}};
      const int r = ::poll(fds, 2, timeout);
      if ((fds[1].revents & POLLIN) != 0) return;
      if (r > 0 && (fds[0].revents & POLLIN) != 0) {
        if (drain()) {
          pending = true;
          due = std::chrono::steady_clock::now() + debounce;
        }
        continue;
      }
      if (pending && std::chrono::steady_clock::now() >= due) {
        pending = false;
        spdlog::info("watch: the configuration changed; reloading");
        watch_all(on_change());
      }
    }
  }
};

ConfigWatcher::ConfigWatcher(std::vector<config::Config::WatchedDir> dirs, OnChange on_change,
                             std::chrono::milliseconds debounce)
    : impl_(std::make_unique<Impl>()) {
  impl_->on_change = std::move(on_change);
  impl_->debounce = debounce;
  impl_->inotify = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  impl_->stop_fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (impl_->inotify < 0 || impl_->stop_fd < 0) {
    spdlog::error("watch: inotify is not available ({}); config changes need SIGHUP or POST /reload",
                  std::strerror(errno));
    return;
  }
  impl_->watch_all(dirs);
  spdlog::info("watch: reloading on changes under {} folder(s)", impl_->watches.size());
  impl_->thread = std::thread([impl = impl_.get()] { impl->run(); });
}

ConfigWatcher::~ConfigWatcher() {
  if (impl_->thread.joinable()) {
    const std::uint64_t one = 1;
    [[maybe_unused]] const ssize_t n = ::write(impl_->stop_fd, &one, sizeof one);
    impl_->thread.join();
  }
  if (impl_->inotify >= 0) ::close(impl_->inotify);
  if (impl_->stop_fd >= 0) ::close(impl_->stop_fd);
}

}  // namespace gpumod::app
