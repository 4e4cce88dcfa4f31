// ConfigWatcher: `watch: true` (or `serve --watch`): notices that a config file changed and
// asks for a reload, as a SIGHUP would. inotify on the folders the config was read from
// (config::Config::watched_dirs; the presets and modes folders with their subfolders, new
// ones included), debounced: the reload runs once things have been quiet for `debounce`, so an
// editor's save (or a `git checkout` of many files) is one reload. Editor temporaries are
// ignored: names ending in .swp, .swx, ~ or .tmp, vim's probe file 4913, and names beginning
// with '.' (emacs' .#lock files, dotfiles).
//
// Threads: one of its own, which calls `on_change`; construct and destroy from one thread.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string_view>
#include <vector>

#include "config/config.hpp"

namespace gpumod::app {

class ConfigWatcher {
 public:
  // `on_change` reloads and returns the folders to watch from then on (a reload may name other
  // presets_dir/modes_dir).
  using OnChange = std::function<std::vector<config::Config::WatchedDir>()>;
  ConfigWatcher(std::vector<config::Config::WatchedDir> dirs, OnChange on_change,
                std::chrono::milliseconds debounce = std::chrono::milliseconds(500));
  ~ConfigWatcher();  // stops the thread (an on_change under way finishes first)
  ConfigWatcher(const ConfigWatcher&) = delete;
  ConfigWatcher& operator=(const ConfigWatcher&) = delete;

  // Whether a change of the file called `name` may change the config (false for temporaries).
  static bool relevant(std::string_view name);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace gpumod::app
