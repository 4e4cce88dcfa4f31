#include "tests/support/net.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <mutex>
#include <random>
#include <stdexcept>
#include <string>

namespace gpumod::testing {
namespace {

// Whether nothing is bound to 127.0.0.1:port right now.
bool bindable(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::runtime_error(std::string("free_port: socket: ") + std::strerror(errno));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return ok;
}

// The first port of the kernel's ephemeral range (32768 when it cannot be read).
int ephemeral_low() {
  std::ifstream in("/proc/sys/net/ipv4/ip_local_port_range");
  int low = 0;
  int high = 0;
  if (in >> low >> high && low > 0) return low;
  return 32768;
}

// Ports are handed out from blocks of kBlock that this process holds exclusively: an flock on
// /tmp/gpumod-test-ports/<first port>.lock, kept for the life of the process (the kernel drops
// it when the process ends, however it ends). Test processes that run at once hold different
// blocks, so two of them can never be given the same port between the pick and the bind. The
// blocks lie below the kernel's ephemeral range, so no outgoing connection can take a port
// either. Each port is still checked bindable: something outside the tests may hold it.
constexpr int kLowest = 10000;
constexpr int kBlock = 100;

class PortBlocks {
 public:
  int next() {
    std::lock_guard<std::mutex> lock(mu_);
    for (int attempt = 0; attempt < 4 * kBlock; ++attempt) {
      if (next_ == 0 || next_ >= block_end_) claim_block();
      const int port = next_++;
      if (bindable(port)) return port;
    }
    throw std::runtime_error("free_port: no bindable port in this process's port blocks");
  }

 private:
  void claim_block() {
    const int blocks = (ephemeral_low() - kLowest) / kBlock;
    if (blocks <= 0) throw std::runtime_error("free_port: no room below the ephemeral port range");
    const std::string dir = "/tmp/gpumod-test-ports";
    ::mkdir(dir.c_str(), 0777);
    std::mt19937 rng(static_cast<unsigned>(std::random_device{}()) ^ static_cast<unsigned>(::getpid()));
    const int first = static_cast<int>(rng() % static_cast<unsigned>(blocks));
    for (int i = 0; i < blocks; ++i) {
      const int start = kLowest + ((first + i) % blocks) * kBlock;
      const std::string path = dir + "/" + std::to_string(start) + ".lock";
      const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0666);
      if (fd < 0) continue;
      if (::flock(fd, LOCK_EX | LOCK_NB) == 0) {
        // Kept open (and locked) until the process exits; never closed on purpose.
        next_ = start;
        block_end_ = start + kBlock;
        return;
      }
      ::close(fd);
    }
    throw std::runtime_error("free_port: every port block is held by another test process");
  }

  std::mutex mu_;
  int next_ = 0;
  int block_end_ = 0;
};

}  // namespace

int free_port() {
  static PortBlocks blocks;
  return blocks.next();
}

}  // namespace gpumod::testing
