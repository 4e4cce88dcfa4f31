#include "tests/support/net.hpp"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <random>
#include <stdexcept>
#include <string>

namespace gpumod::testing {
namespace {

// Whether nothing is bound to 127.0.0.1:port right now (port 0: the kernel picks; the pick is
// returned through `port`).
bool bindable(int& port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::runtime_error(std::string("free_port: socket: ") + std::strerror(errno));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  socklen_t len = sizeof addr;
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
                  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0;
  ::close(fd);
  if (ok) port = ntohs(addr.sin_port);
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

}  // namespace

int free_port() {
  // Ports below the ephemeral range: the kernel's own picks (port 0) are also the local ports
  // of every outgoing connection, and with the tests' many connections one of those could take
  // the port between this check and the server's bind. Below the range only another test's
  // pick can collide: a random start per process and a step per call keep that rare.
  constexpr int kLowest = 10000;
  const int high = ephemeral_low();
  if (high - kLowest >= 1000) {
    static std::atomic<unsigned> next{static_cast<unsigned>(std::random_device{}()) ^
                                      static_cast<unsigned>(::getpid())};
    const auto span = static_cast<unsigned>(high - kLowest);
    for (int attempt = 0; attempt < 64; ++attempt) {
      int port = kLowest + static_cast<int>(next.fetch_add(7919) % span);
      if (bindable(port)) return port;
    }
  }
  int port = 0;
  if (!bindable(port)) {
    throw std::runtime_error(std::string("free_port: no free loopback port: ") + std::strerror(errno));
  }
  return port;
}

}  // namespace gpumod::testing
