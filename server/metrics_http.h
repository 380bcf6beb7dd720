// The metrics HTTP endpoint: GET /metrics (Prometheus text format) and GET /health, served by
// cpp-httplib on a small thread pool of its own, so scrapes and probes never touch the engine loop
// beyond the snapshot copy inside Metrics::render().
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "engine/status.h"
#include "server/metrics.h"

namespace httplib {
class Server;
}  // namespace httplib

namespace kvserve {

class MetricsHttpServer {
 public:
  // Called on an HTTP worker thread for every GET /health, so it must be thread-safe and quick.
  // True answers 200 "ok"; false answers 503 "draining" (a load balancer stops sending new work).
  using HealthCheck = std::function<bool()>;

  // metrics must outlive this object. An empty health check means always healthy.
  MetricsHttpServer(const Metrics& metrics, HealthCheck healthy);
  ~MetricsHttpServer();  // stops
  MetricsHttpServer(const MetricsHttpServer&) = delete;
  MetricsHttpServer& operator=(const MetricsHttpServer&) = delete;

  // Binds host:port (port 0: a free port the system picks) and serves on a background thread until
  // stop(). Fails if the address cannot be bound or the server is already started.
  Status start(const std::string& host, int port);
  // Closes the listening socket, lets requests in flight finish and joins the threads. Idempotent;
  // start() may be called again afterwards.
  void stop();
  // The port bound by start(), or 0 while stopped.
  int bound_port() const { return bound_port_.load(); }

  static constexpr const char* kMetricsContentType = "text/plain; version=0.0.4; charset=utf-8";

 private:
  const Metrics& metrics_;
  HealthCheck healthy_;
  std::mutex mu_;  // serializes start() and stop()
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  std::atomic<bool> listener_done_{true};
  std::atomic<int> bound_port_{0};
};

}  // namespace kvserve
