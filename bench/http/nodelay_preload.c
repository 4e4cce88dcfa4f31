/* nodelay_preload.so: an LD_PRELOAD library for bench/http/run.sh (never part of gpumod).
 *
 * Sets TCP_NODELAY on every TCP socket the process accepts or connects, i.e. what
 * httplib::Server::set_tcp_nodelay(true) / httplib::Client::set_tcp_nodelay(true) would do.
 * cpp-httplib leaves Nagle's algorithm on by default (CPPHTTPLIB_TCP_NODELAY false); a response
 * written as headers then body then waits for the peer's delayed ACK (~40 ms on Linux). run.sh
 * measures the daemon as built and, with this library preloaded into gpumod and its engines,
 * what the same code costs once that wait is gone.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

static void set_nodelay(int fd) {
  int type = 0;
  socklen_t len = sizeof type;
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0 || type != SOCK_STREAM) return;
  struct sockaddr_storage addr;
  socklen_t addr_len = sizeof addr;
  if (getsockname(fd, (struct sockaddr*)&addr, &addr_len) != 0) return;
  if (addr.ss_family != AF_INET && addr.ss_family != AF_INET6) return;
  const int one = 1;
  (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

typedef int (*accept_fn)(int, struct sockaddr*, socklen_t*);
typedef int (*accept4_fn)(int, struct sockaddr*, socklen_t*, int);
typedef int (*connect_fn)(int, const struct sockaddr*, socklen_t);

int accept(int fd, struct sockaddr* addr, socklen_t* len) {
  static accept_fn real = 0;
  if (!real) *(void**)(&real) = dlsym(RTLD_NEXT, "accept");
  const int conn = real(fd, addr, len);
  if (conn >= 0) set_nodelay(conn);
  return conn;
}

int accept4(int fd, struct sockaddr* addr, socklen_t* len, int flags) {
  static accept4_fn real = 0;
  if (!real) *(void**)(&real) = dlsym(RTLD_NEXT, "accept4");
  const int conn = real(fd, addr, len, flags);
  if (conn >= 0) set_nodelay(conn);
  return conn;
}

int connect(int fd, const struct sockaddr* addr, socklen_t len) {
  static connect_fn real = 0;
  if (!real) *(void**)(&real) = dlsym(RTLD_NEXT, "connect");
  if (addr && (addr->sa_family == AF_INET || addr->sa_family == AF_INET6)) set_nodelay(fd);
  return real(fd, addr, len);
}
