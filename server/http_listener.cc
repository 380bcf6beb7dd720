#include "server/http_listener.h"

#include <chrono>
#include <utility>

#include <httplib.h>
#include <sys/socket.h>

namespace kvserve {
namespace {

// As many pending connections as Linux allows by default (SOMAXCONN since 5.4).
constexpr int kListenBacklog = 4096;

}  // namespace

HttpListener::~HttpListener() {
  stop();
}

Status HttpListener::start(std::unique_ptr<httplib::Server> server, const std::string& host, int port,
                           const std::string& what) {
  std::lock_guard lock(mu_);
  if (server_) {
    return Status::Internal("the " + what + " endpoint is already serving on port " +
                            std::to_string(bound_port_.load()));
  }
  if (port < 0 || port > 65535) {
    return Status::InvalidArgument(what + " port " + std::to_string(port) + " is not in 0..65535");
  }
  // httplib's default sets SO_REUSEPORT, which lets a second process bind the same port and take a
  // share of its requests. SO_REUSEADDR alone still allows a quick restart over TIME_WAIT sockets.
  // The socket it binds is the last one given to this callback (it tries each resolved address).
  socket_t listening_socket = INVALID_SOCKET;
  server->set_socket_options([&listening_socket](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    listening_socket = sock;
  });
  const int bound =
      port == 0 ? server->bind_to_any_port(host) : (server->bind_to_port(host, port) ? port : -1);
  if (bound <= 0) {
    return Status::Unavailable("cannot listen on " + host + ":" + std::to_string(port) + " for " + what +
                               " (address in use, not local, or not permitted); choose another " + what +
                               " address or port");
  }
  // Debian's compiled httplib listens with a backlog of 5. A burst of clients connecting at once
  // (a benchmark, a batch job's workers) overflows that queue: the kernel drops handshakes or
  // falls back to SYN cookies, and clients see connections reset before any reply. Listening again
  // on a listening socket only resizes its queue (Linux); the kernel caps it at net.core.somaxconn.
  if (listening_socket != INVALID_SOCKET) ::listen(listening_socket, kListenBacklog);
  listener_done_ = false;
  thread_ = std::thread([this, raw = server.get()] {
    raw->listen_after_bind();
    listener_done_ = true;
  });
  server_ = std::move(server);
  bound_port_ = bound;
  return Status::Ok();
}

void HttpListener::stop() {
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
