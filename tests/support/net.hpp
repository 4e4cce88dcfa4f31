// Network helpers for tests that start servers of their own on the loopback interface.
#pragma once

namespace gpumod::testing {

// A TCP port on 127.0.0.1 for a server whose port must be known before it starts (a service in
// a generated gpumod config). Servers that can bind port 0 and report the port they got should
// do that instead (gpumod serve --listen 127.0.0.1:0 --port-file). The port comes from a block
// that this process holds exclusively among the test processes (an flock), below the kernel's
// ephemeral range, and was bindable a moment ago: no other test can be given it, and no
// outgoing connection can take it. Thread-safe. Throws std::runtime_error when there is none.
int free_port();

}  // namespace gpumod::testing
