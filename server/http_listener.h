// One cpp-httplib server bound to an address and serving on a thread of its own, with the start /
// stop handling both of kvserve's HTTP endpoints need (metrics, the OpenAI-compatible API).
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "engine/status.h"

namespace httplib {
class Server;
}  // namespace httplib

namespace kvserve {

class HttpListener {
 public:
  HttpListener() = default;
  ~HttpListener();  // stops
  HttpListener(const HttpListener&) = delete;
  HttpListener& operator=(const HttpListener&) = delete;

  // Binds `server` (its routes and options already set) to host:port (port 0: a free port the
  // system picks) and serves on a background thread until stop(). `what` names the endpoint in
  // errors. Fails if the address cannot be bound or a server is already running.
  Status start(std::unique_ptr<httplib::Server> server, const std::string& host, int port,
               const std::string& what);
  // Closes the listening socket, lets requests in flight finish and joins the threads. Idempotent;
  // start() may be called again afterwards.
  void stop();
  // The port bound by start(), or 0 while stopped.
  int bound_port() const { return bound_port_.load(); }

 private:
  std::mutex mu_;  // serializes start() and stop()
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  std::atomic<bool> listener_done_{true};
  std::atomic<int> bound_port_{0};
};

}  // namespace kvserve
