#include "server/hangup_watcher.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <future>
#include <iostream>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

namespace kvserve {
namespace {

using namespace std::chrono_literals;

int port_of(int fd, bool peer) {
  sockaddr_storage address{};
  socklen_t length = sizeof(address);
  const int rc = peer ? getpeername(fd, reinterpret_cast<sockaddr*>(&address), &length)
                      : getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  if (rc != 0) return -1;
  return address.ss_family == AF_INET6 ? ntohs(reinterpret_cast<const sockaddr_in6&>(address).sin6_port)
                                       : ntohs(reinterpret_cast<const sockaddr_in&>(address).sin_port);
}

// A TCP listener on a loopback address, and connections to it: the client's end and the server's.
class Loopback {
 public:
  // `listen_on` and `connect_to`: numeric hosts of one family, or "::" with an IPv4 `connect_to`
  // (a dual-stack listener).
  explicit Loopback(const std::string& listen_on = "127.0.0.1", const std::string& connect_to = "127.0.0.1")
      : connect_to_(connect_to) {
    const bool v6 = listen_on.find(':') != std::string::npos;
    listener_ = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_storage address = make_address(listen_on, 0);
    if (listener_ < 0 || bind(listener_, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
        listen(listener_, 64) != 0)
      return;
    port_ = port_of(listener_, false);
  }
  ~Loopback() { close(listener_); }
  bool ok() const { return port_ > 0; }

  struct Connection {
    int client = -1, server = -1;
  };
  Connection connect() const {
    Connection c;
    sockaddr_storage address = make_address(connect_to_, port_);
    c.client = socket(address.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (::connect(c.client, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0)
      throw std::runtime_error("cannot connect to " + connect_to_);
    c.server = accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
    return c;
  }
  int port() const { return port_; }

 private:
  static sockaddr_storage make_address(const std::string& host, int port) {
    sockaddr_storage address{};
    if (host.find(':') != std::string::npos) {
      auto& v6 = reinterpret_cast<sockaddr_in6&>(address);
      v6.sin6_family = AF_INET6;
      v6.sin6_port = htons(static_cast<uint16_t>(port));
      inet_pton(AF_INET6, host.c_str(), &v6.sin6_addr);
    } else {
      auto& v4 = reinterpret_cast<sockaddr_in&>(address);
      v4.sin_family = AF_INET;
      v4.sin_port = htons(static_cast<uint16_t>(port));
      inet_pton(AF_INET, host.c_str(), &v4.sin_addr);
    }
    return address;
  }

  std::string connect_to_;
  int listener_ = -1;
  int port_ = -1;
};

TEST(FindConnectionSocket, FindsTheServersEndOfTheClientsConnection) {
  Loopback loopback;
  ASSERT_TRUE(loopback.ok());
  const Loopback::Connection first = loopback.connect();
  const Loopback::Connection second = loopback.connect();
  const int first_port = port_of(first.client, false);
  const int second_port = port_of(second.client, false);
  const int port = loopback.port();
  EXPECT_EQ(find_connection_socket("127.0.0.1", port, "127.0.0.1", first_port), first.server);
  EXPECT_EQ(find_connection_socket("127.0.0.1", port, "127.0.0.1", second_port), second.server);
  // The client's own end, seen from its side.
  EXPECT_EQ(find_connection_socket("127.0.0.1", first_port, "127.0.0.1", port), first.client);
  EXPECT_EQ(find_connection_socket("127.0.0.1", port, "127.0.0.2", first_port), -1);
  EXPECT_EQ(find_connection_socket("127.0.0.2", port, "127.0.0.1", first_port), -1);
  EXPECT_EQ(find_connection_socket("127.0.0.1", port + 1, "127.0.0.1", first_port), -1);
  for (int fd : {first.client, first.server, second.client, second.server})
    close(fd);
  EXPECT_EQ(find_connection_socket("127.0.0.1", port, "127.0.0.1", first_port), -1);
}

// IPv6, and IPv4 clients of a dual-stack listener, spelled as httplib spells them.
TEST(FindConnectionSocket, FindsIpv6AndIpv4MappedConnections) {
  for (const auto& [listen_on, connect_to, spelled] :
       {std::tuple<std::string, std::string, std::string>{"::1", "::1", "::1"},
        {"::", "127.0.0.1", "::ffff:127.0.0.1"}}) {
    SCOPED_TRACE(listen_on + " <- " + connect_to);
    Loopback loopback(listen_on, connect_to);
    if (!loopback.ok()) {
      std::cout << "no IPv6 loopback here; " << listen_on << " not tried\n";
      continue;
    }
    const Loopback::Connection c = loopback.connect();
    EXPECT_EQ(find_connection_socket(spelled, loopback.port(), spelled, port_of(c.client, false)), c.server);
    close(c.client);
    close(c.server);
  }
}

// Signals once; waits up to 10 s for it (a sanitizer build may be slow to schedule the watcher).
struct Flag {
  std::promise<void> promise;
  std::future<void> future = promise.get_future();
  std::atomic<int> count{0};
  void set() {
    if (count++ == 0) promise.set_value();
  }
  bool wait() { return future.wait_for(10s) == std::future_status::ready; }
};

// One watcher and a loopback listener to connect to, for each test.
class HangupWatcherTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(loopback.ok()); }
  Loopback loopback;
  HangupWatcher watcher;
};

TEST_F(HangupWatcherTest, APeerThatClosesIsReportedOnce) {
  const Loopback::Connection c = loopback.connect();
  Flag hung_up;
  {
    HangupWatcher::Watch watch = watcher.watch(c.server, [&] { hung_up.set(); });
    // Bytes from a client that stays are not a hang-up.
    ASSERT_EQ(write(c.client, "GET", 3), 3);
    std::this_thread::sleep_for(50ms);
    EXPECT_EQ(hung_up.count.load(), 0);
    close(c.client);
    EXPECT_TRUE(hung_up.wait());
  }
  EXPECT_EQ(hung_up.count.load(), 1);
  close(c.server);
}

TEST_F(HangupWatcherTest, APeerGoneBeforeTheWatchIsNoticedAtOnce) {
  const Loopback::Connection c = loopback.connect();
  close(c.client);
  Flag hung_up;
  {
    HangupWatcher::Watch watch = watcher.watch(c.server, [&] { hung_up.set(); });
    EXPECT_TRUE(hung_up.wait());
  }
  close(c.server);
}

TEST_F(HangupWatcherTest, AnEndedWatchReportsNothingAndItsSocketMayBeClosed) {
  const Loopback::Connection c = loopback.connect();
  std::atomic<int> calls{0};
  {
    HangupWatcher::Watch watch = watcher.watch(c.server, [&] { ++calls; });
  }
  close(c.server);  // what the HTTP server does once the handler returns
  close(c.client);
  // Another watch, reported, proves the thread polled after the first ended.
  const Loopback::Connection other = loopback.connect();
  Flag hung_up;
  {
    HangupWatcher::Watch watch = watcher.watch(other.server, [&] { hung_up.set(); });
    close(other.client);
    EXPECT_TRUE(hung_up.wait());
  }
  EXPECT_EQ(calls.load(), 0);
  close(other.server);
}

// The destructor's promise: once it returns, the callback is not running (it may use what the
// caller is about to free).
TEST_F(HangupWatcherTest, EndingAWatchWaitsForItsRunningCallback) {
  const Loopback::Connection c = loopback.connect();
  Flag entered;
  std::atomic<bool> callback_done{false};
  auto watch = std::make_optional(watcher.watch(c.server, [&] {
    entered.set();
    std::this_thread::sleep_for(200ms);
    callback_done = true;
  }));
  close(c.client);
  ASSERT_TRUE(entered.wait());
  watch.reset();
  EXPECT_TRUE(callback_done.load()) << "the Watch ended while its callback still ran";
  close(c.server);
}

TEST_F(HangupWatcherTest, ManyConnectionsFromManyThreadsEachReportOnlyTheirOwn) {
  constexpr int kConnections = 48;
  std::vector<Loopback::Connection> connections;
  for (int i = 0; i < kConnections; ++i)
    connections.push_back(loopback.connect());
  std::vector<std::unique_ptr<Flag>> flags;
  for (int i = 0; i < kConnections; ++i)
    flags.push_back(std::make_unique<Flag>());
  // Each thread watches one connection, as an HTTP worker does while it waits; the even ones'
  // clients hang up, the odd ones' watches end first.
  std::vector<std::thread> workers;
  for (int i = 0; i < kConnections; ++i) {
    workers.emplace_back([&, i] {
      HangupWatcher::Watch watch = watcher.watch(connections[i].server, [&, i] { flags[i]->set(); });
      if (i % 2 == 0) {
        close(connections[i].client);
        EXPECT_TRUE(flags[i]->wait()) << "connection " << i;
      }
    });
  }
  for (auto& t : workers)
    t.join();
  for (int i = 0; i < kConnections; ++i) {
    EXPECT_EQ(flags[i]->count.load(), i % 2 == 0 ? 1 : 0) << "connection " << i;
    if (i % 2 == 1) close(connections[i].client);
    close(connections[i].server);
  }
}

}  // namespace
}  // namespace kvserve
