#include "server/metrics_http.h"

#include <memory>
#include <utility>

#include <httplib.h>

namespace kvserve {
namespace {

// A scraper and a probe or two at a time; more threads would only sit idle. Two slow clients cannot
// hold every worker and make the health probe time out.
constexpr size_t kWorkerThreads = 4;

}  // namespace

MetricsHttpServer::MetricsHttpServer(const Metrics& metrics, HealthCheck healthy)
    : metrics_(metrics), healthy_(std::move(healthy)) {}

Status MetricsHttpServer::start(const std::string& host, int port) {
  auto server = std::make_unique<httplib::Server>();
  server->new_task_queue = [] { return new httplib::ThreadPool(kWorkerThreads); };
  // An idle keep-alive connection holds a worker, and stop() waits for every worker (5 s with
  // httplib's defaults): keep that wait short. Scrapes come seconds apart, so reusing a connection
  // saves nothing. A client stalled mid-request still holds stop() for up to the read timeout.
  server->set_keep_alive_max_count(1);
  server->set_keep_alive_timeout(1);
  server->set_read_timeout(2);
  server->set_write_timeout(2);

  server->Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.body = metrics_.render();
    res.set_header("Content-Type", kMetricsContentType);
  });
  server->Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    const bool healthy = !healthy_ || healthy_();
    res.status = healthy ? 200 : 503;
    res.set_content(healthy ? "ok" : "draining", "text/plain; charset=utf-8");
  });
  return listener_.start(std::move(server), host, port, "metrics");
}

}  // namespace kvserve
