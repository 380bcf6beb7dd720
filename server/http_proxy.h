// Reaching the network through an HTTP proxy, read from the environment as curl, requests and
// huggingface_hub read it: which proxy a URL goes through (https_proxy, http_proxy, all_proxy,
// uppercase names too, and the exceptions no_proxy lists), and a local forwarder that gives the
// proxy its credentials.
//
// Why the forwarder: httplib, given a proxy's credentials, also sends them in every request inside
// a CONNECT tunnel, that is to the origin server (the Hub, its CDN). Through the forwarder, httplib
// never holds them: it adds Proxy-Authorization to the head of each request it forwards, the one
// request of each connection (CONNECT for https, the absolute-form request for http).
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace kvserve {

struct HttpProxy {
  std::string host;  // a name or an address (an IPv6 one without brackets)
  int port = 0;
  std::string user;  // Basic credentials, percent-decoded; empty = none
  std::string password;

  // host:port, for messages: never the credentials.
  std::string address() const;
};

// The proxy variables as the environment sets them, lowercase names first (as curl and requests).
struct ProxyEnvironment {
  std::string https_proxy;  // https_proxy, HTTPS_PROXY, else all_proxy, ALL_PROXY
  std::string http_proxy;   // http_proxy, HTTP_PROXY, else all_proxy, ALL_PROXY
  std::string no_proxy;     // no_proxy, NO_PROXY

  static ProxyEnvironment from_environment();
};

// http://[user[:password]@]host[:port][/]; a bare host[:port] is taken as http, as requests does;
// the port is 80 when left out. Throws std::invalid_argument saying what to change: a proxy spoken to
// over TLS (https://) and SOCKS proxies are not supported.
HttpProxy parse_proxy_url(std::string_view url);

// Whether a no_proxy list exempts host:port from the proxy. Entries are separated by commas (or
// spaces): "*" (every host), a domain with or without a leading dot (it and its subdomains), an
// address, or an IPv4 range in CIDR form (10.0.0.0/8); each may end in :port.
bool proxy_exempts(std::string_view no_proxy, std::string_view host, int port);

// The proxy that requests to `origin` (scheme://host[:port]) go through, or nullopt for a direct
// connection. Throws std::invalid_argument for a proxy variable that parse_proxy_url refuses.
std::optional<HttpProxy> proxy_for(std::string_view origin, const ProxyEnvironment& environment);

// Listens on 127.0.0.1 (a free port) and forwards each connection to `upstream`, adding its
// Basic credentials to the request head; then relays bytes both ways until both sides close. An
// upstream that cannot be reached is answered 502 with the reason. Stopped (every connection closed)
// when destroyed.
class ProxyCredentialsForwarder {
 public:
  explicit ProxyCredentialsForwarder(HttpProxy upstream);
  ~ProxyCredentialsForwarder();
  ProxyCredentialsForwarder(const ProxyCredentialsForwarder&) = delete;
  ProxyCredentialsForwarder& operator=(const ProxyCredentialsForwarder&) = delete;

  int port() const { return port_; }

 private:
  void accept_loop();
  void forward(int client);
  // Opens a connection to the upstream proxy, or returns -1 with `why` set.
  int connect_upstream(std::string& why);
  // Copies bytes both ways until both sides have closed (or the forwarder stops).
  void relay(int a, int b);
  bool track(int fd);  // false when stopping: the caller closes fd
  void untrack_and_close(int fd);

  const HttpProxy upstream_;
  const std::string credentials_header_;  // "Proxy-Authorization: Basic ...\r\n"
  int listen_fd_ = -1;
  int port_ = 0;
  int stop_pipe_[2] = {-1, -1};  // written once when stopping: wakes every poll
  std::mutex mu_;
  bool stopping_ = false;
  std::vector<int> open_fds_;  // shut down when stopping, so that no blocked write holds a thread
  std::vector<std::thread> connections_;
  std::thread acceptor_;
};

}  // namespace kvserve
