// The metrics HTTP endpoint: GET /metrics (Prometheus text format) and GET /health, served by
// cpp-httplib on a small thread pool of its own, so scrapes and probes never touch the engine loop
// beyond the snapshot copy inside Metrics::render().
#pragma once

#include <functional>
#include <string>

#include "engine/status.h"
#include "server/http_listener.h"
#include "server/metrics.h"

namespace kvserve {

class MetricsHttpServer {
 public:
  // Called on an HTTP worker thread for every GET /health, so it must be thread-safe and quick.
  // True answers 200 "ok"; false answers 503 "draining" (a load balancer stops sending new work).
  using HealthCheck = std::function<bool()>;

  // metrics must outlive this object. An empty health check means always healthy.
  MetricsHttpServer(const Metrics& metrics, HealthCheck healthy);
  ~MetricsHttpServer() = default;  // stops
  MetricsHttpServer(const MetricsHttpServer&) = delete;
  MetricsHttpServer& operator=(const MetricsHttpServer&) = delete;

  // Binds host:port (port 0: a free port the system picks) and serves on a background thread until
  // stop(). Fails if the address cannot be bound or the server is already started.
  Status start(const std::string& host, int port);
  // Closes the listening socket, lets requests in flight finish and joins the threads. Idempotent;
  // start() may be called again afterwards.
  void stop() { listener_.stop(); }
  // The port bound by start(), or 0 while stopped.
  int bound_port() const { return listener_.bound_port(); }

  static constexpr const char* kMetricsContentType = "text/plain; version=0.0.4; charset=utf-8";

 private:
  const Metrics& metrics_;
  HealthCheck healthy_;
  HttpListener listener_;
};

}  // namespace kvserve
