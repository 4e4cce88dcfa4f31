// libFuzzer target: any bytes as a gpumod config file, through the real loader (from text, so
// nothing touches the disk). The first byte picks which file: the daemon file (with inline
// presets and modes), a preset file or a mode file (both beside a valid daemon file and a valid
// preset or mode). Checks, besides the sanitizers: the loader never throws, and every error of a
// refused config names a file and says what is wrong.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "config/config.hpp"

namespace {

void check(bool ok, const std::string& what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz_config_yaml: %s\n", what.c_str());
    std::abort();
  }
}

constexpr const char* kDaemon = "gpus:\n  probe: sim\n";
constexpr const char* kPreset = "id: base\ndriver: vllm\nport: 8000\nvram_mb: 1000\n";
constexpr const char* kMode = "id: m\nservices: [base]\n";

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::string text(reinterpret_cast<const char*>(data) + 1, size - 1);
  gpumod::config::LoadOptions opts;
  opts.bin_dir = "/nonexistent";
  opts.state_dir = "/nonexistent/state";
  gpumod::config::ConfigTexts texts;
  switch (data[0] % 3) {
    case 0:
      texts.daemon = text;
      break;
    case 1:
      texts.daemon = kDaemon;
      texts.presets = {{"presets/fuzz.yaml", text}};
      texts.modes = {{"modes/m.yaml", kMode}};
      break;
    default:
      texts.daemon = kDaemon;
      texts.presets = {{"presets/base.yaml", kPreset}};
      texts.modes = {{"modes/fuzz.yaml", text}};
      break;
  }
  gpumod::config::LoadResult r;
  try {
    r = gpumod::config::load_texts(texts, opts);
  } catch (const std::exception& e) {
    check(false, std::string("the loader threw: ") + e.what());
  }
  if (!r.ok()) {
    check(!r.error_text().empty(), "a refused config with no error text");
    for (const auto& diag : r.diagnostics) {
      check(!diag.file.empty() && !diag.message.empty(), "an error that names no file: " + diag.str());
    }
  }
  return 0;
}
