// A log sink for the daemon's stderr that buffers lines and writes them in batches: every
// `interval`, at once for a line of level warn or above, when 64 KiB have gathered, on flush()
// and on destruction. spdlog's console sinks write and fflush every line, which at the API's
// rate (a line per request, tens of thousands a second) cost about a third of the fast path's
// throughput (bench/README.md "HTTP"). The price: after a SIGKILL, up to `interval` of info
// lines can be lost (warnings and errors never wait).
#pragma once

#include <spdlog/sinks/sink.h>

#include <chrono>
#include <memory>

namespace gpumod::app {

std::shared_ptr<spdlog::sinks::sink> make_buffered_stderr_sink(
    std::chrono::milliseconds interval = std::chrono::milliseconds(100));

}  // namespace gpumod::app
