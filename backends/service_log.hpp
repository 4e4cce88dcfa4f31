// Where a service's output goes and how to read its end: the runners write stdout and stderr of
// every service to <log_dir>/<id>.log (rotated to <id>.log.1 at a start once it is large), and
// the runners, the scheduler and GET /services/{id}/logs read it back. Any thread; plain file
// reads, so a caller on an event loop keeps to small reads.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

namespace gpumod::backends {

std::filesystem::path service_log_path(const std::filesystem::path& log_dir, const std::string& service_id);

// How much of a log's end a tail reads at most: a tail of more lines than fit is shorter.
inline constexpr std::int64_t kTailWindowBytes = 64 * 1024;

// The last `max_lines` lines of `data`, without the final newline.
std::string last_lines(std::string_view data, int max_lines);
// The last `max_lines` lines of a file (of its last kTailWindowBytes), without the final
// newline; "" when unreadable.
std::string tail_lines(const std::filesystem::path& path, int max_lines);

}  // namespace gpumod::backends
