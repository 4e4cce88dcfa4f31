// eventually(): waits for something a real process or server does, by polling.
#pragma once

#include <chrono>
#include <thread>

namespace gpumod::testing {

// Polls `pred` every `every` until it holds or `limit` passes, and looks once more at the
// deadline; true as soon as it held. The default limit is generous so slow CI machines (and
// ASan builds) do not flake, while a passing run returns at the first poll that sees it.
template <typename Pred>
bool eventually(Pred pred, std::chrono::milliseconds limit = std::chrono::seconds(20),
                std::chrono::milliseconds every = std::chrono::milliseconds(10)) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(every);
  }
  return static_cast<bool>(pred());
}

}  // namespace gpumod::testing
