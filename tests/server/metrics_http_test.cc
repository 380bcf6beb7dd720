#include "server/metrics_http.h"

#include <gtest/gtest.h>
#include <httplib.h>

#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <fstream>
#include <optional>

namespace kvserve {
namespace {

constexpr const char* kLoopback = "127.0.0.1";

httplib::Client client(int port) {
  httplib::Client c(kLoopback, port);
  c.set_connection_timeout(2);
  c.set_read_timeout(5);
  return c;
}

// The accept-queue limit of the IPv4 TCP socket listening on `port`, as the kernel reports it over
// sock_diag (what `ss -lt` shows as Send-Q): -1 if no such socket, nullopt if sock_diag is not
// available here.
std::optional<int> listen_backlog(int port) {
  const int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
  if (fd < 0) return std::nullopt;
  struct {
    nlmsghdr header;
    inet_diag_req_v2 request;
  } query{};
  query.header.nlmsg_len = sizeof(query);
  query.header.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  query.header.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  query.request.sdiag_family = AF_INET;
  query.request.sdiag_protocol = IPPROTO_TCP;
  query.request.idiag_states = 1u << TCP_LISTEN;
  std::optional<int> backlog;
  if (send(fd, &query, sizeof(query), 0) == static_cast<ssize_t>(sizeof(query))) {
    backlog = -1;
    alignas(nlmsghdr) char buffer[32768];
    for (bool done = false; !done;) {
      int length = static_cast<int>(recv(fd, buffer, sizeof(buffer), 0));
      if (length <= 0) break;
      for (auto* h = reinterpret_cast<nlmsghdr*>(buffer); NLMSG_OK(h, length); h = NLMSG_NEXT(h, length)) {
        if (h->nlmsg_type == NLMSG_DONE || h->nlmsg_type == NLMSG_ERROR) {
          done = true;
          break;
        }
        const auto* socket_info = static_cast<const inet_diag_msg*>(NLMSG_DATA(h));
        if (ntohs(socket_info->id.idiag_sport) == port) backlog = static_cast<int>(socket_info->idiag_wqueue);
      }
    }
  }
  close(fd);
  return backlog;
}

TEST(MetricsHttpServer, ServesMetricsHealthAndNotFound) {
  Metrics metrics;
  metrics.request_rejected("UNAVAILABLE");
  std::atomic<bool> healthy{true};
  MetricsHttpServer server(metrics, [&healthy] { return healthy.load(); });
  const Status started = server.start(kLoopback, 0);
  ASSERT_TRUE(started.ok()) << started.message();
  ASSERT_GT(server.bound_port(), 0);
  httplib::Client c = client(server.bound_port());

  auto res = c.Get("/metrics");
  ASSERT_TRUE(res) << httplib::to_string(res.error());
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->get_header_value("Content-Type"), "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_NE(res->body.find("\nkvserve_requests_rejected_total{code=\"UNAVAILABLE\"} 1\n"), std::string::npos)
      << res->body;
  EXPECT_EQ(res->body, metrics.render());

  res = c.Get("/health");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->body, "ok");
  healthy = false;
  res = c.Get("/health");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 503);
  EXPECT_EQ(res->body, "draining");

  res = c.Get("/nothing-here");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 404);
  res = c.Get("/metrics/extra");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 404);
}

TEST(MetricsHttpServer, EmptyHealthCheckMeansHealthy) {
  Metrics metrics;
  MetricsHttpServer server(metrics, nullptr);
  ASSERT_TRUE(server.start(kLoopback, 0).ok());
  auto res = client(server.bound_port()).Get("/health");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
}

TEST(MetricsHttpServer, StopIsIdempotentAndCanRestart) {
  Metrics metrics;
  MetricsHttpServer server(metrics, [] { return true; });
  ASSERT_TRUE(server.start(kLoopback, 0).ok());
  const int port = server.bound_port();
  ASSERT_TRUE(client(port).Get("/health"));
  server.stop();
  server.stop();
  EXPECT_EQ(server.bound_port(), 0);
  EXPECT_FALSE(client(port).Get("/health"));  // nothing listens any more

  ASSERT_TRUE(server.start(kLoopback, 0).ok());
  auto res = client(server.bound_port()).Get("/metrics");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  server.stop();
}

TEST(MetricsHttpServer, DestructorStops) {
  Metrics metrics;
  int port = 0;
  {
    MetricsHttpServer server(metrics, [] { return true; });
    ASSERT_TRUE(server.start(kLoopback, 0).ok());
    port = server.bound_port();
    ASSERT_TRUE(client(port).Get("/health"));
  }
  EXPECT_FALSE(client(port).Get("/health"));
}

TEST(MetricsHttpServer, StopRightAfterStartDoesNotHang) {
  // The listener thread may not have started listening yet when stop() comes.
  Metrics metrics;
  MetricsHttpServer server(metrics, [] { return true; });
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(server.start(kLoopback, 0).ok());
    server.stop();
  }
}

TEST(MetricsHttpServer, StopDoesNotWaitLongForAnIdleKeepAliveClient) {
  Metrics metrics;
  MetricsHttpServer server(metrics, [] { return true; });
  ASSERT_TRUE(server.start(kLoopback, 0).ok());
  httplib::Client c = client(server.bound_port());
  c.set_keep_alive(true);
  ASSERT_TRUE(c.Get("/health"));
  const auto begin = std::chrono::steady_clock::now();
  server.stop();
  EXPECT_LT(std::chrono::steady_clock::now() - begin, std::chrono::milliseconds(1500));
}

// httplib listens with a queue of 5 pending connections; a burst of clients connecting at once
// overflowed it and saw connections reset before any reply. HttpListener resizes the queue.
TEST(MetricsHttpServer, ListensWithRoomForABurstOfConnections) {
  Metrics metrics;
  MetricsHttpServer server(metrics, [] { return true; });
  ASSERT_TRUE(server.start(kLoopback, 0).ok());
  const std::optional<int> backlog = listen_backlog(server.bound_port());
  if (!backlog) GTEST_SKIP() << "no NETLINK_SOCK_DIAG here to read the listen queue's size";
  int somaxconn = 4096;  // the kernel caps every listen queue at this
  std::ifstream("/proc/sys/net/core/somaxconn") >> somaxconn;
  EXPECT_GE(*backlog, std::min(1024, somaxconn));
}

TEST(MetricsHttpServer, ReportsAddressInUseAndDoubleStart) {
  Metrics metrics;
  MetricsHttpServer first(metrics, [] { return true; });
  ASSERT_TRUE(first.start(kLoopback, 0).ok());
  const Status again = first.start(kLoopback, 0);
  EXPECT_FALSE(again.ok());

  MetricsHttpServer second(metrics, [] { return true; });
  const Status taken = second.start(kLoopback, first.bound_port());
  EXPECT_FALSE(taken.ok());
  EXPECT_NE(taken.message().find(std::to_string(first.bound_port())), std::string::npos) << taken.message();
  EXPECT_EQ(second.bound_port(), 0);
  EXPECT_FALSE(second.start(kLoopback, 70000).ok());
  second.stop();  // never started: a no-op
}

}  // namespace
}  // namespace kvserve
