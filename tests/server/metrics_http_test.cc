#include "server/metrics_http.h"

#include <gtest/gtest.h>
#include <httplib.h>

#include <atomic>
#include <chrono>

namespace kvserve {
namespace {

constexpr const char* kLoopback = "127.0.0.1";

httplib::Client client(int port) {
  httplib::Client c(kLoopback, port);
  c.set_connection_timeout(2);
  c.set_read_timeout(5);
  return c;
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
