// ConfigWatcher on real files and real inotify: a burst of writes is one reload, editor
// temporaries are none, a new subfolder of presets is watched too.
#include "app/config_watch.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <functional>
#include <thread>

#include "tests/support/eventually.hpp"
#include "tests/support/temp_dir.hpp"

namespace gpumod::app {
namespace {

namespace fs = std::filesystem;
using gpumod::testing::eventually;
using gpumod::testing::TempDir;
using namespace std::chrono_literals;

void write(const fs::path& p, const std::string& text) {
  std::ofstream(p) << text;
}

class Watch : public ::testing::Test {
 protected:
  void SetUp() override {
    fs::create_directories(dir.path() / "presets");
    dirs = {{dir.path(), false}, {dir.path() / "presets", true}};
  }
  std::unique_ptr<ConfigWatcher> start(std::chrono::milliseconds debounce = 200ms) {
    return std::make_unique<ConfigWatcher>(
        dirs,
        [this] {
          const int n = reloads.fetch_add(1) + 1;
          if (during_reload) during_reload(n);
          return dirs;
        },
        debounce);
  }
  TempDir dir;
  std::function<void(int)> during_reload;  // runs inside the reload, as a user's edit might
  std::vector<config::Config::WatchedDir> dirs;
  std::atomic<int> reloads{0};
};

TEST(WatchNames, EditorTemporariesAreNotConfigChanges) {
  for (const char* name :
       {"coder.yaml.swp", ".coder.yaml.swx", "coder.yaml~", "coder.yaml.tmp", "4913", ".#coder.yaml"})
    EXPECT_FALSE(ConfigWatcher::relevant(name)) << name;
  for (const char* name : {"coder.yaml", "gpumod.yaml", "modes", "token"})
    EXPECT_TRUE(ConfigWatcher::relevant(name)) << name;
}

TEST_F(Watch, ABurstOfWritesIsOneReloadAfterItQuietsDown) {
  auto watcher = start();
  auto last_write = std::chrono::steady_clock::now();
  for (int i = 0; i < 5; ++i) {
    if (i > 0) std::this_thread::sleep_for(20ms);
    write(dir.path() / "presets" / "coder.yaml", "id: coder # " + std::to_string(i) + "\n");
    last_write = std::chrono::steady_clock::now();
  }
  ASSERT_TRUE(eventually([&] { return reloads.load() >= 1; }));
  // Not before the burst had been quiet for the debounce (load can only make it later).
  EXPECT_GE(std::chrono::steady_clock::now() - last_write, 200ms);
  std::this_thread::sleep_for(600ms);
  EXPECT_EQ(reloads.load(), 1) << "one burst, one reload";
}

TEST_F(Watch, TemporariesAloneNeverReload) {
  auto watcher = start();
  for (const char* name : {"coder.yaml.swp", "coder.yaml~", "coder.yaml.tmp", "4913", ".#coder.yaml"})
    write(dir.path() / "presets" / name, "x");
  fs::remove(dir.path() / "presets" / "4913");
  std::this_thread::sleep_for(800ms);
  EXPECT_EQ(reloads.load(), 0);
  write(dir.path() / "gpumod.yaml", "policy: {}\n");  // the daemon file's folder is watched too
  ASSERT_TRUE(eventually([&] { return reloads.load() == 1; }));
}

TEST_F(Watch, ANewSubfolderOfPresetsIsWatched) {
  auto watcher = start();
  fs::create_directories(dir.path() / "presets" / "more");
  ASSERT_TRUE(eventually([&] { return reloads.load() == 1; }));  // the folder itself
  write(dir.path() / "presets" / "more" / "embed.yaml", "id: embed\n");
  ASSERT_TRUE(eventually([&] { return reloads.load() == 2; }));
}

// An edit that lands while a reload is reading the files is not lost: it reloads once more.
// (ANewSubfolderOfPresetsIsWatched writes right after the first reload, when the watches are
// renewed: it failed under load while renewing them had a gap.)
TEST_F(Watch, AnEditWhileAReloadRunsIsReloadedToo) {
  during_reload = [this](int n) {
    if (n == 1) write(dir.path() / "presets" / "coder.yaml", "id: coder # edited during the reload\n");
  };
  auto watcher = start();
  write(dir.path() / "presets" / "coder.yaml", "id: coder\n");
  ASSERT_TRUE(eventually([&] { return reloads.load() == 2; }));
}

TEST_F(Watch, AFolderWatchedOnlyAtItsTopIgnoresItsOtherSubfolders) {
  fs::create_directories(dir.path() / "unrelated");
  auto watcher = start();
  write(dir.path() / "unrelated" / "notes.yaml", "x");
  std::this_thread::sleep_for(800ms);
  EXPECT_EQ(reloads.load(), 0);
}

}  // namespace
}  // namespace gpumod::app
