// Who listens on a port (backends/port_owner.hpp): the /proc/net/tcp parser on a table as the
// kernel writes it, and the whole lookup against a socket this test really listens on.
#include "backends/port_owner.hpp"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

namespace gpumod::backends {
namespace {

TEST(PortOwner, ParsesListeningSocketsOutOfTheKernelsTable) {
  const std::string table =
      "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
      "   0: 0100007F:1B9A 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0 "
      "100 0\n"
      "   1: 00000000:1B9A 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4343 1 0 "
      "100 0\n"
      "   2: 0100007F:1B9A 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 5555 1 0 "
      "20 4\n"
      "   3: 0100007F:1B9B 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 6666 1 0 "
      "100 0\n"
      "garbage line\n";
  // 0x1B9A = 7066: two listeners (loopback and any address); the established connection and
  // the other port do not count.
  EXPECT_EQ(listening_inodes(table, 7066), (std::vector<unsigned long>{4242, 4343}));
  EXPECT_TRUE(listening_inodes(table, 7068).empty());
  EXPECT_TRUE(listening_inodes("", 7066).empty());
}

TEST(PortOwner, FindsThisProcessListeningAndNothingOnceItStops) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  const int port = ntohs(addr.sin_port);
  EXPECT_TRUE(tcp_listeners(port).empty()) << "bound but not listening";
  ASSERT_EQ(::listen(fd, 1), 0);
  const auto held = tcp_listeners(port);
  ASSERT_EQ(held.size(), 1U);
  EXPECT_EQ(held[0].pid, ::getpid());
  EXPECT_EQ(held[0].pgid, ::getpgrp());
  EXPECT_FALSE(held[0].name.empty());
  EXPECT_EQ(describe(held), "pid " + std::to_string(::getpid()) + " (" + held[0].name + ")");
  // Told where to look first, it finds the same holder; told a pid that holds nothing (our
  // parent), it still finds the real holder by reading every process.
  const auto first = tcp_listeners(port, {::getpid()});
  ASSERT_EQ(first.size(), 1U);
  EXPECT_EQ(first[0].pid, ::getpid());
  EXPECT_EQ(first[0].inode, held[0].inode);
  const auto elsewhere = tcp_listeners(port, {::getppid(), -1, 0});
  ASSERT_EQ(elsewhere.size(), 1U);
  EXPECT_EQ(elsewhere[0].pid, ::getpid());
  ::close(fd);
  EXPECT_TRUE(tcp_listeners(port).empty());
}

}  // namespace
}  // namespace gpumod::backends
