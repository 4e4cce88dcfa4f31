#include "backends/service_log.hpp"

#include <algorithm>
#include <fstream>
#include <iterator>

namespace gpumod::backends {

namespace fs = std::filesystem;

fs::path service_log_path(const fs::path& log_dir, const std::string& service_id) {
  return log_dir / (service_id + ".log");
}

std::string last_lines(std::string_view data, int max_lines) {
  if (max_lines <= 0) return "";
  while (!data.empty() && (data.back() == '\n' || data.back() == '\r')) data.remove_suffix(1);
  // Walk back over max_lines newlines; everything after the last one found is the tail.
  std::size_t begin = data.size();
  int found = 0;
  while (found < max_lines) {
    if (begin == 0) break;
    auto nl = data.rfind('\n', begin - 1);
    if (nl == std::string_view::npos) {
      begin = 0;
      break;
    }
    ++found;
    begin = found == max_lines ? nl + 1 : nl;
  }
  return std::string(data.substr(begin));
}

std::string tail_lines(const fs::path& path, int max_lines) {
  std::ifstream in(path, std::ios::binary);
  if (!in || max_lines <= 0) return "";
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  const std::streamoff start = std::max<std::streamoff>(0, size - kTailWindowBytes);
  in.seekg(start);
  const std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return last_lines(data, max_lines);
}

}  // namespace gpumod::backends
