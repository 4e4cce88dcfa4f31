// Who listens on a TCP port: the kernel's socket tables (/proc/net/tcp, /proc/net/tcp6) and
// each process's descriptors (/proc/PID/fd). The scheduler's effect runner asks before it
// starts a service (a port held by a process gpumod did not start fails the start at once,
// rather than health-checking a stranger) and when a process-runner service first answers
// (the listener must be one of the service's own processes). Any thread; reads /proc only.
#pragma once

#include <string>
#include <vector>

namespace gpumod::backends {

struct PortListener {
  unsigned long inode = 0;  // the listening socket
  int pid = 0;              // 0: no visible process holds it (another user's, without privilege)
  int pgid = 0;             // the holder's process group (0 when pid is 0)
  std::string name;         // the holder's command name (/proc/PID/comm), "" when pid is 0
};

// Every socket in LISTEN state on `port` (any local address, IPv4 or IPv6) and the processes
// that hold it; one entry per holding process. Empty when nothing listens. The processes in
// `look_first` (a service's own pids, say) are looked at first, and when they hold every such
// socket the other processes are not read: then only holders among them are listed.
std::vector<PortListener> tcp_listeners(int port, const std::vector<int>& look_first = {});

// "pid 4242 (llama-server)", "pid 1 (a), pid 2 (b)" or "a process this user cannot see
// (socket inode 123)": for messages.
std::string describe(const std::vector<PortListener>& listeners);

// The LISTEN sockets on `port` in one /proc/net/tcp-format table (pure: for tests).
std::vector<unsigned long> listening_inodes(const std::string& table, int port);

}  // namespace gpumod::backends
