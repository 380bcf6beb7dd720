// Reaching the network through an HTTP proxy, read from the environment as requests (and so
// huggingface_hub) reads it: which proxy a URL goes through (https_proxy, http_proxy, all_proxy,
// uppercase names too, and the exceptions no_proxy lists), and a local forwarder in front of it.
//
// Why the forwarder: httplib, given a proxy's credentials, also sends them in every request inside
// a CONNECT tunnel, that is to the origin server (the Hub, its CDN); and it reports a CONNECT the
// proxy refused (other than with 407) as a failed TLS handshake. Through the forwarder, httplib
// never holds the credentials: the forwarder puts them in the head of each request it forwards,
// the one request of each connection (CONNECT for https, the absolute-form request for http), and
// keeps the proxy's reason when it refuses.
#pragma once

#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace kvserve {

// Standard base64 (RFC 4648, padded): proxy credentials, and OpenAI's base64 embeddings.
std::string base64(std::string_view data);

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
  // The variables the two proxies came from, for messages that say which one to change.
  std::string https_proxy_variable = "https_proxy";
  std::string http_proxy_variable = "http_proxy";

  // The variable that names the proxy for URLs of `scheme` ("https" or "http").
  const std::string& variable_for(std::string_view scheme) const {
    return scheme == "https" ? https_proxy_variable : http_proxy_variable;
  }

  static ProxyEnvironment from_environment();
};

// http://[user[:password]@]host[:port][/]; a bare host[:port] is taken as http, as requests does;
// the port is 80 when left out. Throws std::invalid_argument saying what to change: a proxy spoken to
// over TLS (https://) and SOCKS proxies are not supported.
HttpProxy parse_proxy_url(std::string_view url);

// Whether a no_proxy list exempts host:port from the proxy: "*" alone exempts every host; else
// entries separated by commas (or spaces), each a domain with or without a leading dot (it and its
// subdomains), an address (that address only), or an IPv4 range in CIDR form (10.0.0.0/8); each
// may end in :port.
bool proxy_exempts(std::string_view no_proxy, std::string_view host, int port);

// The proxy that requests to `origin` (scheme://host[:port]) go through, or nullopt for a direct
// connection. Throws std::invalid_argument for a proxy variable that parse_proxy_url refuses.
std::optional<HttpProxy> proxy_for(std::string_view origin, const ProxyEnvironment& environment);

// Every connection httplib makes through a proxy goes to one of these instead: it listens on
// 127.0.0.1 (a free port) and forwards each connection to `upstream`, the request head (CONNECT,
// or an absolute-form request) carrying the upstream's credentials, if any, then relays bytes both
// ways until both sides close. Seeing the proxy's answer to a CONNECT, it can say why a tunnel
// failed, which httplib reports only as a failed TLS handshake. Stopped (every connection closed)
// when destroyed.
class ProxyForwarder {
 public:
  explicit ProxyForwarder(HttpProxy upstream);
  ~ProxyForwarder();
  ProxyForwarder(const ProxyForwarder&) = delete;
  ProxyForwarder& operator=(const ProxyForwarder&) = delete;

  int port() const { return port_; }
  // The Basic credentials the client must give its proxy (httplib's set_proxy_basic_auth): a
  // random token of this process's, so that no other local process (a pod's sidecar) can use the
  // forwarder, and the operator's credentials with it. It also reaches the origin inside CONNECT
  // tunnels, where it is worthless.
  const std::string& local_user() const { return local_user_; }
  const std::string& local_password() const { return local_password_; }
  // Why the latest forwarded connection failed at the proxy (it could not be reached, or refused
  // a CONNECT: its status line, and its Proxy-Authenticate scheme), or "" when none did; cleared
  // by the call.
  std::string take_failure();

 private:
  void accept_loop();
  void forward(int client);
  // Opens a connection to the upstream proxy, or returns -1 with `why` set.
  int connect_upstream(std::string& why);
  // Reads from `fd` until `head` holds a blank line (the end of a head); false on close, timeout,
  // stop or a head past 64 KiB.
  bool read_head(int fd, std::string& head);
  // Copies bytes both ways until both sides have closed (or the forwarder stops).
  void relay(int a, int b);
  void fail(std::string why);
  bool track(int fd);  // false when stopping: the caller closes fd
  void untrack_and_close(int fd);

  const HttpProxy upstream_;
  const std::string credentials_header_;  // "Proxy-Authorization: Basic ...\r\n", or "" for none
  std::string local_user_, local_password_;
  std::string local_authorization_;  // "Basic " + base64(local_user_:local_password_)
  int listen_fd_ = -1;
  int port_ = 0;
  int stop_pipe_[2] = {-1, -1};  // written once when stopping: wakes every poll
  std::mutex mu_;
  std::condition_variable connections_done_;
  bool stopping_ = false;
  int connections_ = 0;        // connection threads (detached) still running
  std::vector<int> open_fds_;  // shut down when stopping, so that no blocked write holds a thread
  std::string failure_;
  std::thread acceptor_;
};

}  // namespace kvserve
