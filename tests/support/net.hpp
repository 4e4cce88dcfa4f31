// Network helpers for tests that start servers of their own on the loopback interface.
#pragma once

namespace gpumod::testing {

// A TCP port on 127.0.0.1 that nothing listened on a moment ago (the kernel's pick for an
// ephemeral bind). Throws std::runtime_error when the kernel gives none.
int free_port();

}  // namespace gpumod::testing
