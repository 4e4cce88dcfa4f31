// Network helpers for tests that start servers of their own on the loopback interface.
#pragma once

namespace gpumod::testing {

// A TCP port on 127.0.0.1 that nothing was bound to a moment ago, below the kernel's
// ephemeral range where possible (so an outgoing connection cannot take it before the server
// that is given it binds). Throws std::runtime_error when there is none.
int free_port();

}  // namespace gpumod::testing
