#include "server/metrics_http.h"

#include <chrono>
#include <utility>

#include <httplib.h>
#include <sys/socket.h>

namespace kvserve {
namespace {

// A scraper and a probe or two at a time; more threads would only sit idle. Two slow clients cannot
// hold every worker and make the health probe time out.
constexpr size_t kWorkerThreads = 4;

}  // namespace

MetricsHttpServer::MetricsHttpServer(const Metrics& metrics, HealthCheck healthy)
    : metrics_(metrics), healthy_(std::move(healthy)) {}

MetricsHttpServer::~MetricsHttpServer() {
  stop();
}

Status MetricsHttpServer::start(const std::string& host, int port) {
  std::lock_guard lock(mu_);
  if (server_) {
    return Status::Internal("the metrics endpoint is already serving on port " +
                            std::to_string(bound_port_.load()));
  }
  if (port < 0 || port > 65535) {
    return Status::InvalidArgument("metrics port " + std::to_string(port) + " is not in 0..65535");
  }
  auto server = std::make_unique<httplib::Server>();
  server->new_task_queue = [] { return new httplib::ThreadPool(kWorkerThreads); };
  // httplib's default sets SO_REUSEPORT, which lets a second process bind the same port and take a
  // share of the scrapes. SO_REUSEADDR alone still allows a quick restart over TIME_WAIT sockets.
  server->set_socket_options([](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
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

  const int bound =
      port == 0 ? server->bind_to_any_port(host) : (server->bind_to_port(host, port) ? port : -1);
  if (bound <= 0) {
    return Status::Unavailable("cannot listen on " + host + ":" + std::to_string(port) +
                               " for metrics (address in use, not local, or not permitted); "
                               "choose another metrics address or port");
  }
  listener_done_ = false;
  thread_ = std::thread([this, raw = server.get()] {
    raw->listen_after_bind();
    listener_done_ = true;
  });
  server_ = std::move(server);
  bound_port_ = bound;
  return Status::Ok();
}

void MetricsHttpServer::stop() {
  std::lock_guard lock(mu_);
  if (!server_) return;
  // httplib's stop() does nothing until listen_after_bind() has marked the server running, which
  // the thread may not have reached yet right after start(): repeat it until the listener is out.
  // Later calls find the socket already closed and are harmless.
  while (!listener_done_) {
    server_->stop();
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  thread_.join();
  server_.reset();
  bound_port_ = 0;
}

}  // namespace kvserve
