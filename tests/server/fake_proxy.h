// An HTTP proxy on loopback, for the tests of fetching through one (server/http_proxy.h): it tunnels
// CONNECT requests and forwards absolute-form ones (GET http://host:port/path) in origin form, to
// loopback targets only. It records each connection's request line and the Proxy-Authorization it
// carried, and can demand credentials (407 without them) or block a port (403).
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <mutex>
#include <regex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace kvserve::testing {

class FakeProxy {
 public:
  struct Request {
    std::string line;           // "CONNECT 127.0.0.1:1234 HTTP/1.1"
    std::string authorization;  // its Proxy-Authorization, or ""
  };

  FakeProxy() {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t size = sizeof addr;
    if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        ::listen(listen_fd_, 16) != 0 ||
        ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &size) != 0)
      throw std::runtime_error("the fake proxy cannot listen");
    port_ = ntohs(addr.sin_port);
    acceptor_ = std::thread([this] {
      for (;;) {
        const int fd = ::accept(listen_fd_, nullptr, nullptr);
        if (fd < 0) return;  // shut down
        std::lock_guard lock(mu_);
        if (stopped_) {
          ::close(fd);
          return;
        }
        fds_.push_back(fd);
        workers_.emplace_back([this, fd] {
          serve(fd);
          ::shutdown(fd, SHUT_RDWR);
        });
      }
    });
  }

  ~FakeProxy() {
    {
      std::lock_guard lock(mu_);
      stopped_ = true;
      for (int fd : fds_)
        ::shutdown(fd, SHUT_RDWR);
    }
    ::shutdown(listen_fd_, SHUT_RDWR);
    acceptor_.join();
    for (std::thread& worker : workers_)
      worker.join();
    for (int fd : fds_)
      ::close(fd);
    ::close(listen_fd_);
  }

  int port() const { return port_; }
  // http://[userinfo@]127.0.0.1:port
  std::string url(const std::string& userinfo = "") const {
    return "http://" + (userinfo.empty() ? "" : userinfo + "@") + "127.0.0.1:" + std::to_string(port_);
  }
  // Requests without this Proxy-Authorization value get 407.
  void require(const std::string& authorization) {
    std::lock_guard lock(mu_);
    required_ = authorization;
  }
  // Requests to this port get 403, as a proxy answers for a host it does not let through.
  void block(int port) {
    std::lock_guard lock(mu_);
    blocked_port_ = port;
  }
  std::vector<Request> requests() {
    std::lock_guard lock(mu_);
    return requests_;
  }

 private:
  void serve(int client) {
    std::string head;
    char buf[16384];
    while (head.find("\r\n\r\n") == std::string::npos) {
      const ssize_t n = ::recv(client, buf, sizeof buf, 0);
      if (n <= 0) return;
      head.append(buf, static_cast<size_t>(n));
    }
    const std::string line = head.substr(0, head.find("\r\n"));
    std::smatch m;
    const std::regex kAuth("\r\nProxy-Authorization: ([^\r]*)\r\n", std::regex::icase);
    Request request{line, std::regex_search(head, m, kAuth) ? m[1].str() : ""};
    std::string required;
    int blocked_port;
    {
      std::lock_guard lock(mu_);
      requests_.push_back(request);
      required = required_;
      blocked_port = blocked_port_;
    }
    if (!required.empty() && request.authorization != required) {
      send_text(client,
                "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"test\"\r\n"
                "Content-Length: 0\r\nConnection: close\r\n\r\n");
      return;
    }
    static const std::regex kConnect("CONNECT 127\\.0\\.0\\.1:([0-9]+) HTTP/1\\.1");
    static const std::regex kAbsolute("([A-Z]+) http://127\\.0\\.0\\.1:([0-9]+)(/[^ ]*) HTTP/1\\.1");
    if ((std::regex_match(line, m, kConnect) && std::stoi(m[1].str()) == blocked_port) ||
        (std::regex_match(line, m, kAbsolute) && std::stoi(m[2].str()) == blocked_port)) {
      send_text(client, "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
      return;
    }
    int target = -1;
    if (std::regex_match(line, m, kConnect)) {
      target = connect_to(std::stoi(m[1].str()));
      if (target >= 0) send_text(client, "HTTP/1.1 200 Connection established\r\n\r\n");
    } else if (std::regex_match(line, m, kAbsolute)) {
      target = connect_to(std::stoi(m[2].str()));
      // In origin form, and without the proxy's credentials, as a proxy passes it on.
      std::string rest = head.substr(head.find("\r\n"));
      rest = std::regex_replace(rest, kAuth, "\r\n");
      if (target >= 0) send_text(target, m[1].str() + " " + m[3].str() + " HTTP/1.1" + rest);
    }
    if (target < 0) {
      send_text(client, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
      return;
    }
    // Bytes both ways until one side closes.
    for (;;) {
      pollfd fds[2] = {{client, POLLIN, 0}, {target, POLLIN, 0}};
      if (::poll(fds, 2, 30'000) <= 0) break;
      const int from = fds[0].revents ? client : target;
      const ssize_t n = ::recv(from, buf, sizeof buf, 0);
      if (n <= 0 || !send_text(from == client ? target : client, std::string(buf, static_cast<size_t>(n))))
        break;
    }
    ::shutdown(target, SHUT_RDWR);
  }

  int connect_to(int port) {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      ::close(fd);
      return -1;
    }
    std::lock_guard lock(mu_);
    fds_.push_back(fd);
    return fd;
  }

  static bool send_text(int fd, const std::string& text) {
    for (size_t sent = 0; sent < text.size();) {
      const ssize_t n = ::send(fd, text.data() + sent, text.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) return false;
      sent += static_cast<size_t>(n);
    }
    return true;
  }

  int listen_fd_ = -1;
  int port_ = 0;
  std::mutex mu_;
  bool stopped_ = false;
  std::string required_;
  int blocked_port_ = -1;
  std::vector<Request> requests_;
  std::vector<int> fds_;  // closed when the proxy is destroyed
  std::vector<std::thread> workers_;
  std::thread acceptor_;
};

}  // namespace kvserve::testing
