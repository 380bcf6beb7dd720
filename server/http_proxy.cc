#include "server/http_proxy.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <stdexcept>
#include <system_error>
#include <utility>

namespace kvserve {
namespace {

constexpr int kConnectTimeoutMs = 10'000;
constexpr int kHeadTimeoutMs = 30'000;
constexpr size_t kMaxHeadBytes = 64 * 1024;

std::string lowercase(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return std::tolower(c); });
  return out;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front())))
    s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back())))
    s.remove_suffix(1);
  return s;
}

std::string percent_decode(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && std::isxdigit(static_cast<unsigned char>(s[i + 1])) &&
        std::isxdigit(static_cast<unsigned char>(s[i + 2]))) {
      out += static_cast<char>(std::stoi(std::string(s.substr(i + 1, 2)), nullptr, 16));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

// A port's digits, or -1.
int parse_port(std::string_view digits) {
  if (digits.empty() || digits.size() > 5 ||
      !std::all_of(digits.begin(), digits.end(), [](unsigned char c) { return std::isdigit(c); }))
    return -1;
  const int port = std::atoi(std::string(digits).c_str());
  return port >= 1 && port <= 65535 ? port : -1;
}

struct HostPort {
  std::string host;
  int port = -1;  // -1: none given
  bool valid = true;
};

// host, host:port, [v6] or [v6]:port; an IPv6 address without brackets is a host without a port.
HostPort split_host_port(std::string_view s) {
  HostPort out;
  if (s.starts_with("[")) {
    const size_t close = s.find(']');
    if (close == std::string_view::npos) return {std::string(s), -1, false};
    out.host = std::string(s.substr(1, close - 1));
    const std::string_view after = s.substr(close + 1);
    if (after.starts_with(":")) {
      out.port = parse_port(after.substr(1));
      out.valid = out.port != -1;
    } else {
      out.valid = after.empty();
    }
    return out;
  }
  const size_t colon = s.find(':');
  if (colon == std::string_view::npos || s.find(':', colon + 1) != std::string_view::npos) {
    out.host = std::string(s);
    return out;
  }
  out.host = std::string(s.substr(0, colon));
  out.port = parse_port(s.substr(colon + 1));
  out.valid = out.port != -1;
  return out;
}

// Whether `host` (an IPv4 address) lies in `range` (a.b.c.d/bits).
bool in_ipv4_range(std::string_view host, std::string_view range) {
  const size_t slash = range.find('/');
  in_addr net{}, addr{};
  const std::string bits_text(range.substr(slash + 1));
  if (bits_text.empty() || bits_text.size() > 2 ||
      !std::all_of(bits_text.begin(), bits_text.end(), [](unsigned char c) { return std::isdigit(c); }))
    return false;
  const int bits = std::atoi(bits_text.c_str());
  if (bits > 32 || inet_pton(AF_INET, std::string(range.substr(0, slash)).c_str(), &net) != 1 ||
      inet_pton(AF_INET, std::string(host).c_str(), &addr) != 1)
    return false;
  const uint32_t mask = bits == 0 ? 0 : ~uint32_t{0} << (32 - bits);
  return (ntohl(net.s_addr) & mask) == (ntohl(addr.s_addr) & mask);
}

bool send_all(int fd, const char* data, size_t size) {
  while (size > 0) {
    const ssize_t n = ::send(fd, data, size, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

}  // namespace

std::string base64(std::string_view data) {
  std::string out(4 * ((data.size() + 2) / 3) + 1, '\0');
  const int size =
      EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                      reinterpret_cast<const unsigned char*>(data.data()), static_cast<int>(data.size()));
  out.resize(static_cast<size_t>(size));
  return out;
}

std::string HttpProxy::address() const {
  return (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

ProxyEnvironment ProxyEnvironment::from_environment() {
  // The first of `names` set (and not empty) into `value`, its name into `variable`.
  const auto first_set = [](std::initializer_list<const char*> names, std::string& value,
                            std::string* variable) {
    for (const char* name : names) {
      if (const char* set = std::getenv(name); set && *set) {
        value = set;
        if (variable) *variable = name;
        return;
      }
    }
  };
  ProxyEnvironment e;
  first_set({"https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"}, e.https_proxy, &e.https_proxy_variable);
  first_set({"http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"}, e.http_proxy, &e.http_proxy_variable);
  first_set({"no_proxy", "NO_PROXY"}, e.no_proxy, nullptr);
  return e;
}

HttpProxy parse_proxy_url(std::string_view url) {
  std::string_view rest = trim(url);
  if (rest.empty()) throw std::invalid_argument("it is empty: set it as http://host:port");
  if (const size_t scheme_end = rest.find("://"); scheme_end != std::string_view::npos) {
    const std::string scheme = lowercase(rest.substr(0, scheme_end));
    if (scheme == "https")
      throw std::invalid_argument(
          "proxies spoken to over TLS (https://) are not supported: give the proxy's http:// address "
          "(https URLs still go through it encrypted, by CONNECT)");
    if (scheme.starts_with("socks"))
      throw std::invalid_argument("SOCKS proxies are not supported: give an HTTP proxy, http://host:port");
    if (scheme != "http")
      throw std::invalid_argument("the scheme '" + scheme + "' is not a proxy's: set it as http://host:port");
    rest.remove_prefix(scheme_end + 3);
  }
  rest = rest.substr(0, rest.find('/'));  // a trailing "/" or path means nothing to a proxy
  HttpProxy proxy;
  if (const size_t at = rest.rfind('@'); at != std::string_view::npos) {
    const std::string_view userinfo = rest.substr(0, at);
    const size_t colon = userinfo.find(':');
    proxy.user = percent_decode(userinfo.substr(0, colon));
    if (colon != std::string_view::npos) proxy.password = percent_decode(userinfo.substr(colon + 1));
    rest.remove_prefix(at + 1);
  }
  const HostPort where = split_host_port(rest);
  // In a URL an IPv6 address is bracketed: fd00::1:3128 could be either.
  const bool bare_ipv6 = !rest.starts_with("[") && where.host.find(':') != std::string::npos;
  if (!where.valid || where.host.empty() || bare_ipv6)
    throw std::invalid_argument(
        "it names no host and port that can be read: set it as http://[user:password@]host:port (an IPv6 "
        "address in brackets; '@', ':' and '/' in credentials percent-encoded: %40, %3A, %2F)");
  proxy.host = where.host;
  proxy.port = where.port == -1 ? 80 : where.port;
  return proxy;
}

bool proxy_exempts(std::string_view no_proxy, std::string_view host_in, int port) {
  if (trim(no_proxy) == "*") return true;
  std::string host = lowercase(host_in);
  while (host.ends_with("."))
    host.pop_back();
  in6_addr address{};
  const bool host_is_address =
      inet_pton(AF_INET, host.c_str(), &address) == 1 || inet_pton(AF_INET6, host.c_str(), &address) == 1;
  size_t begin = 0;
  while (begin < no_proxy.size()) {
    size_t end = no_proxy.find_first_of(", \t", begin);
    if (end == std::string_view::npos) end = no_proxy.size();
    const std::string entry_text = lowercase(trim(no_proxy.substr(begin, end - begin)));
    begin = end + 1;
    if (entry_text.empty()) continue;
    HostPort entry = split_host_port(entry_text);
    if (!entry.valid) continue;
    if (entry.port != -1 && entry.port != port) continue;
    if (entry.host.find('/') != std::string::npos) {
      if (in_ipv4_range(host, entry.host)) return true;
      continue;
    }
    std::string_view domain = entry.host;
    if (domain.starts_with("*.")) domain.remove_prefix(1);
    if (domain.starts_with(".")) domain.remove_prefix(1);
    while (domain.ends_with("."))
      domain.remove_suffix(1);
    if (domain.empty()) continue;
    if (host_is_address) {  // an address is no domain: "0.1" does not exempt 10.0.0.1
      if (host == domain) return true;
      continue;
    }
    if (host == domain || (host.size() > domain.size() && host.ends_with(domain) &&
                           host[host.size() - domain.size() - 1] == '.'))
      return true;
  }
  return false;
}

std::optional<HttpProxy> proxy_for(std::string_view origin, const ProxyEnvironment& environment) {
  const size_t scheme_end = origin.find("://");
  const std::string scheme =
      scheme_end == std::string_view::npos ? "" : lowercase(origin.substr(0, scheme_end));
  std::string_view authority = scheme_end == std::string_view::npos ? origin : origin.substr(scheme_end + 3);
  authority = authority.substr(0, authority.find('/'));
  const std::string& variable = scheme == "https" ? environment.https_proxy : environment.http_proxy;
  if (trim(variable).empty()) return std::nullopt;
  const HostPort where = split_host_port(authority);
  const int port = where.port != -1 ? where.port : scheme == "https" ? 443 : 80;
  if (proxy_exempts(environment.no_proxy, where.host, port)) return std::nullopt;
  return parse_proxy_url(variable);
}

ProxyForwarder::ProxyForwarder(HttpProxy upstream)
    : upstream_(std::move(upstream)),
      credentials_header_(upstream_.user.empty() && upstream_.password.empty()
                              ? ""
                              : "Proxy-Authorization: Basic " +
                                    base64(upstream_.user + ":" + upstream_.password) + "\r\n") {
  unsigned char token[16];
  if (RAND_bytes(token, sizeof token) != 1)
    throw std::runtime_error("no random bytes for the proxy forwarder");
  local_user_ = "kvserve";
  local_password_ = base64(std::string_view(reinterpret_cast<const char*>(token), sizeof token));
  local_authorization_ = "Basic " + base64(local_user_ + ":" + local_password_);
  if (::pipe2(stop_pipe_, O_CLOEXEC) != 0)
    throw std::runtime_error(std::string("cannot make a pipe: ") + std::strerror(errno));
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t size = sizeof addr;
  if (listen_fd_ < 0 || ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::listen(listen_fd_, 16) != 0 ||
      ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &size) != 0) {
    const std::string why = std::strerror(errno);
    if (listen_fd_ >= 0) ::close(listen_fd_);
    ::close(stop_pipe_[0]);
    ::close(stop_pipe_[1]);
    throw std::runtime_error("cannot listen on loopback to forward to the proxy: " + why);
  }
  port_ = ntohs(addr.sin_port);
  acceptor_ = std::thread([this] { accept_loop(); });
}

ProxyForwarder::~ProxyForwarder() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    for (int fd : open_fds_)
      ::shutdown(fd, SHUT_RDWR);
  }
  const char wake = 'x';
  while (::write(stop_pipe_[1], &wake, 1) < 0 && errno == EINTR) {
  }
  acceptor_.join();
  std::unique_lock lock(mu_);
  connections_done_.wait(lock, [this] { return connections_ == 0; });
  lock.unlock();
  ::close(listen_fd_);
  ::close(stop_pipe_[0]);
  ::close(stop_pipe_[1]);
}

std::string ProxyForwarder::take_failure() {
  std::lock_guard lock(mu_);
  return std::exchange(failure_, std::string());
}

void ProxyForwarder::fail(std::string why) {
  std::lock_guard lock(mu_);
  failure_ = std::move(why);
}

void ProxyForwarder::accept_loop() {
  for (;;) {
    pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {stop_pipe_[0], POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (fds[1].revents != 0) return;
    const int client = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (client < 0) {
      // Out of descriptors (EMFILE) leaves the connection pending: wait instead of spinning.
      if (errno != EINTR && errno != ECONNABORTED) std::this_thread::sleep_for(std::chrono::milliseconds(10));
      continue;
    }
    std::lock_guard lock(mu_);
    try {
      // Detached, and counted: the destructor waits for the count to reach 0.
      std::thread([this, client] {
        forward(client);
        std::lock_guard done(mu_);
        --connections_;
        connections_done_.notify_all();
      }).detach();
      ++connections_;
    } catch (const std::system_error&) {  // no thread to be had (a pids limit): the client sees a close
      ::close(client);
    }
  }
}

bool ProxyForwarder::track(int fd) {
  std::lock_guard lock(mu_);
  if (stopping_) return false;
  open_fds_.push_back(fd);
  return true;
}

void ProxyForwarder::untrack_and_close(int fd) {
  // Closed under the lock: the destructor never shuts down a number reused by then.
  std::lock_guard lock(mu_);
  open_fds_.erase(std::remove(open_fds_.begin(), open_fds_.end(), fd), open_fds_.end());
  ::close(fd);
}

bool ProxyForwarder::read_head(int fd, std::string& head) {
  char buf[16 * 1024];
  while (head.find("\r\n\r\n") == std::string::npos) {
    pollfd fds[2] = {{fd, POLLIN, 0}, {stop_pipe_[0], POLLIN, 0}};
    const int ready = ::poll(fds, 2, kHeadTimeoutMs);
    if (ready < 0 && errno == EINTR) continue;
    const ssize_t n = ready > 0 && fds[1].revents == 0 ? ::recv(fd, buf, sizeof buf, 0) : -1;
    if (n <= 0 || head.size() + static_cast<size_t>(n) > kMaxHeadBytes) return false;
    head.append(buf, static_cast<size_t>(n));
  }
  return true;
}

void ProxyForwarder::forward(int client) {
  if (!track(client)) {
    ::close(client);
    return;
  }
  // The request head, up to its blank line: one request per connection (CONNECT, or an absolute-form
  // request httplib sends with Connection: close).
  std::string head;
  if (!read_head(client, head)) {
    untrack_and_close(client);
    return;
  }
  // Its header lines but Proxy-Authorization, which must be the local token; the upstream's
  // credentials go after the request line instead. Bytes past the head pass as they are.
  const size_t line_end = head.find("\r\n") + 2;
  const size_t head_end = head.find("\r\n\r\n") + 2;
  const bool is_connect = head.starts_with("CONNECT ");
  std::string forwarded = head.substr(0, line_end) + credentials_header_;
  bool local_token = false;
  for (size_t at = line_end; at < head_end;) {
    const size_t next = head.find("\r\n", at) + 2;
    const std::string_view line(head.data() + at, next - at);
    if (lowercase(line.substr(0, 20)) == "proxy-authorization:")
      local_token = trim(line.substr(20)) == local_authorization_;
    else
      forwarded += line;
    at = next;
  }
  forwarded += head.substr(head_end);
  if (!local_token) {
    const std::string refusal =
        "HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    send_all(client, refusal.data(), refusal.size());
    untrack_and_close(client);
    return;
  }

  std::string why;
  const int upstream = connect_upstream(why);
  if (upstream < 0) {
    fail("cannot connect to the proxy " + upstream_.address() + ": " + why);
    const std::string body = "cannot connect to the proxy " + upstream_.address() + ": " + why + "\n";
    const std::string reply = "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\nContent-Length: " +
                              std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
    send_all(client, reply.data(), reply.size());
    untrack_and_close(client);
    return;
  }
  bool ok = send_all(upstream, forwarded.data(), forwarded.size());
  if (ok && is_connect) {
    // The proxy's answer to the CONNECT: passed on, and kept when it refuses (httplib would go on
    // to a TLS handshake with the refusal, and report only that); after a refusal the connection
    // ends there, so that the handshake fails at once.
    std::string answer;
    ok = read_head(upstream, answer);
    if (!ok) {
      fail("the proxy " + upstream_.address() + " closed the connection without answering the CONNECT");
    } else if (!answer.starts_with("HTTP/1.1 2") && !answer.starts_with("HTTP/1.0 2")) {
      std::string reason =
          "the proxy " + upstream_.address() + " answered " + answer.substr(0, answer.find("\r\n"));
      const std::string lower = lowercase(answer);
      if (const size_t at = lower.find("\r\nproxy-authenticate:"); at != std::string::npos) {
        const size_t begin = at + std::string_view("\r\nproxy-authenticate:").size();
        std::string_view scheme =
            trim(std::string_view(answer).substr(begin, answer.find("\r\n", begin) - begin));
        scheme = scheme.substr(0, scheme.find(' '));
        reason += " (it asks for " + std::string(scheme) + " authentication" +
                  (lowercase(scheme) == "basic" ? "" : ", and kvserve speaks only Basic") + ")";
      }
      fail(std::move(reason));
      // httplib is given the status line alone: it deadlocks on a refused CONNECT's
      // "Connection: close" (0.11 takes a lock its caller holds), and the reason is kept anyway.
      const std::string refusal = answer.substr(0, answer.find("\r\n")) + "\r\nContent-Length: 0\r\n\r\n";
      send_all(client, refusal.data(), refusal.size());
      ok = false;
    }
    ok = ok && send_all(client, answer.data(), answer.size());
  }
  if (ok) relay(client, upstream);
  untrack_and_close(upstream);
  untrack_and_close(client);
}

int ProxyForwarder::connect_upstream(std::string& why) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (const int rc =
          ::getaddrinfo(upstream_.host.c_str(), std::to_string(upstream_.port).c_str(), &hints, &found);
      rc != 0) {
    why = ::gai_strerror(rc);
    return -1;
  }
  int connected = -1;
  why = "no address";
  for (const addrinfo* a = found; a != nullptr && connected < 0; a = a->ai_next) {
    const int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, a->ai_protocol);
    if (fd < 0 || !track(fd)) {
      why = fd < 0 ? std::strerror(errno) : "stopping";
      if (fd >= 0) ::close(fd);
      continue;
    }
    int error = 0;
    if (::connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
      error = errno;
      if (error == EINPROGRESS) {
        pollfd fds[2] = {{fd, POLLOUT, 0}, {stop_pipe_[0], POLLIN, 0}};
        const int ready = ::poll(fds, 2, kConnectTimeoutMs);
        socklen_t size = sizeof error;
        if (ready == 0)
          error = ETIMEDOUT;
        else if (ready < 0 || fds[1].revents != 0)
          error = ECANCELED;
        else if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &size) != 0)
          error = errno;
      }
    }
    if (error == 0 && ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK) == 0) {
      connected = fd;
    } else {
      why = std::strerror(error != 0 ? error : errno);
      untrack_and_close(fd);
    }
  }
  ::freeaddrinfo(found);
  return connected;
}

void ProxyForwarder::relay(int a, int b) {
  bool a_open = true, b_open = true;  // whether each side may still send
  char buf[64 * 1024];
  while (a_open || b_open) {
    // A negative fd is skipped by poll: a side that has closed is not watched again.
    pollfd fds[3] = {{a_open ? a : -1, POLLIN, 0}, {b_open ? b : -1, POLLIN, 0}, {stop_pipe_[0], POLLIN, 0}};
    if (::poll(fds, 3, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (fds[2].revents != 0) return;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].revents == 0) continue;
      const int from = i == 0 ? a : b;
      const int to = i == 0 ? b : a;
      const ssize_t n = ::recv(from, buf, sizeof buf, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {  // that side is done: pass the end on
        ::shutdown(to, SHUT_WR);
        (i == 0 ? a_open : b_open) = false;
      } else if (!send_all(to, buf, static_cast<size_t>(n))) {
        return;
      }
    }
  }
}

}  // namespace kvserve
