#include "backends/port_owner.hpp"

#include <dirent.h>
#include <unistd.h>

#include <array>
#include <fstream>
#include <set>
#include <sstream>

#include "backends/run_state.hpp"

namespace gpumod::backends {

namespace {

constexpr const char* kListenState = "0A";  // TCP_LISTEN in /proc/net/tcp's "st" column

std::string read_all(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string comm_of(int pid) {
  std::string name = read_all("/proc/" + std::to_string(pid) + "/comm");
  while (!name.empty() && (name.back() == '\n' || name.back() == ' ')) name.pop_back();
  return name;
}

}  // namespace

std::vector<unsigned long> listening_inodes(const std::string& table, int port) {
  // "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode"
  // "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 ..."
  std::vector<unsigned long> out;
  std::istringstream in(table);
  std::string line;
  std::getline(in, line);  // the header
  while (std::getline(in, line)) {
    std::istringstream f(line);
    std::string slot, local, remote, state, queues, timer, retransmits, uid, timeout;
    unsigned long inode = 0;
    if (!(f >> slot >> local >> remote >> state >> queues >> timer >> retransmits >> uid >> timeout >> inode))
      continue;
    if (state != kListenState) continue;
    const auto colon = local.rfind(':');
    if (colon == std::string::npos) continue;
    unsigned long p = 0;
    try {
      p = std::stoul(local.substr(colon + 1), nullptr, 16);
    } catch (const std::exception&) {
      continue;
    }
    if (static_cast<int>(p) == port && inode != 0) out.push_back(inode);
  }
  return out;
}

std::vector<PortListener> tcp_listeners(int port, const std::vector<int>& look_first) {
  std::set<unsigned long> inodes;
  for (const char* table : {"/proc/net/tcp", "/proc/net/tcp6"}) {
    for (unsigned long i : listening_inodes(read_all(table), port)) inodes.insert(i);
  }
  std::vector<PortListener> out;
  if (inodes.empty()) return out;
  std::set<unsigned long> seen;
  std::set<int> looked;
  // Adds `pid` to `out` when it holds one of the listening sockets.
  const auto look = [&](int pid) {
    if (!looked.insert(pid).second) return;
    const std::string fd_dir = "/proc/" + std::to_string(pid) + "/fd";
    DIR* fds = ::opendir(fd_dir.c_str());
    if (fds == nullptr) return;  // gone, or not ours to look at
    unsigned long held = 0;
    while (dirent* f = ::readdir(fds)) {
      if (f->d_name[0] == '.') continue;
      std::array<char, 64> target{};
      const std::string link = fd_dir + "/" + f->d_name;
      const ssize_t n = ::readlink(link.c_str(), target.data(), target.size() - 1);
      if (n <= 0) continue;
      const std::string t(target.data(), static_cast<std::size_t>(n));
      if (t.rfind("socket:[", 0) != 0) continue;
      unsigned long inode = 0;
      try {
        inode = std::stoul(t.substr(8));
      } catch (const std::exception&) {
        continue;
      }
      if (inodes.count(inode) != 0) {
        held = inode;
        seen.insert(inode);
      }
    }
    ::closedir(fds);
    if (held == 0) return;
    PortListener l;
    l.inode = held;
    l.pid = pid;
    const auto st = run_state::read_proc_stat(pid);
    l.pgid = st ? st->pgid : 0;
    l.name = comm_of(pid);
    out.push_back(std::move(l));
  };
  for (int pid : look_first) {
    if (pid > 0) look(pid);
  }
  // Every socket found among the likely holders: the rest of /proc (hundreds of processes, a
  // readlink per descriptor) need not be read. Otherwise every process is looked at.
  if (seen.size() < inodes.size()) {
    if (DIR* proc = ::opendir("/proc")) {
      while (dirent* e = ::readdir(proc)) {
        const std::string pid_text = e->d_name;
        if (pid_text.empty() || pid_text.find_first_not_of("0123456789") != std::string::npos) continue;
        look(std::stoi(pid_text));
      }
      ::closedir(proc);
    }
  }
  for (unsigned long inode : inodes) {
    if (seen.count(inode) == 0) out.push_back(PortListener{inode, 0, 0, ""});
  }
  return out;
}

std::string describe(const std::vector<PortListener>& listeners) {
  std::string out;
  for (const auto& l : listeners) {
    if (!out.empty()) out += ", ";
    if (l.pid > 0) {
      out += "pid " + std::to_string(l.pid) + " (" + (l.name.empty() ? "?" : l.name) + ")";
    } else {
      out += "a process this user cannot see (socket inode " + std::to_string(l.inode) + ")";
    }
  }
  return out;
}

}  // namespace gpumod::backends
