// Proxies read from the environment (server/http_proxy.h): proxy URLs, no_proxy's exceptions,
// which variable a URL's scheme picks, and the forwarder that alone holds a proxy's credentials and
// keeps its reasons (against the fake proxy of tests/server/fake_proxy.h). Fetching models through a proxy is
// in hub_download_test.cc.
#include "server/http_proxy.h"

#include <gtest/gtest.h>
#include <httplib.h>

#include <cstdlib>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "tests/server/fake_proxy.h"

namespace kvserve {
namespace {

// The message parse_proxy_url throws, or "" when it does not.
std::string refusal(const std::string& url) {
  try {
    parse_proxy_url(url);
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "";
}

TEST(HttpProxy, ReadsProxyUrlsAsCurlAndRequestsDo) {
  HttpProxy p = parse_proxy_url("http://proxy.corp:3128");
  EXPECT_EQ(p.host, "proxy.corp");
  EXPECT_EQ(p.port, 3128);
  EXPECT_EQ(p.user, "");
  p = parse_proxy_url(" proxy.corp:8080 ");  // no scheme: http
  EXPECT_EQ(p.host, "proxy.corp");
  EXPECT_EQ(p.port, 8080);
  p = parse_proxy_url("HTTP://proxy/");  // no port: 80; a trailing slash means nothing
  EXPECT_EQ(p.host, "proxy");
  EXPECT_EQ(p.port, 80);
  // Credentials are percent-decoded: '@' and ':' in them must be written %40 and %3A.
  p = parse_proxy_url("http://al%40ce:s3cr%3At%20@10.0.0.1:3128");
  EXPECT_EQ(p.user, "al@ce");
  EXPECT_EQ(p.password, "s3cr:t ");
  EXPECT_EQ(p.host, "10.0.0.1");
  EXPECT_EQ(p.address(), "10.0.0.1:3128") << "messages never show the credentials";
  p = parse_proxy_url("http://user@proxy:1");  // a user without a password
  EXPECT_EQ(p.user, "user");
  EXPECT_EQ(p.password, "");
  p = parse_proxy_url("http://[fd00::1]:3128");
  EXPECT_EQ(p.host, "fd00::1");
  EXPECT_EQ(p.address(), "[fd00::1]:3128");
}

TEST(HttpProxy, RefusesProxiesItCannotSpeakToSayingWhatToChange) {
  EXPECT_NE(refusal("https://proxy:443").find("http:// address"), std::string::npos)
      << refusal("https://proxy:443");
  EXPECT_NE(refusal("socks5://proxy:1080").find("SOCKS"), std::string::npos);
  EXPECT_NE(refusal("socks5h://proxy:1080").find("SOCKS"), std::string::npos);
  EXPECT_NE(refusal("ftp://proxy:21").find("'ftp'"), std::string::npos);
  for (const char* bad : {"", "  ", "http://:3128", "http://proxy:0", "http://proxy:65536",
                          "http://proxy:80x", "http://[::1", "http://[::1]x", "http://fd00::1:3128"}) {
    SCOPED_TRACE(bad);
    EXPECT_NE(refusal(bad), "");
  }
}

TEST(HttpProxy, NoProxyExemptsDomainsAddressesRangesAndPorts) {
  struct Case {
    const char* no_proxy;
    const char* host;
    int port;
    bool exempt;
  };
  const std::vector<Case> cases = {
      {"", "huggingface.co", 443, false},
      {"*", "huggingface.co", 443, true},
      {" * ", "huggingface.co", 443, true},
      {"corp.example,*", "huggingface.co", 443, false},  // "*" exempts all only alone, as in curl
      {"huggingface.co", "huggingface.co", 443, true},
      {"huggingface.co", "cdn-lfs.huggingface.co", 443, true},  // subdomains too
      {".huggingface.co", "huggingface.co", 443, true},         // a leading dot: the same
      {"*.huggingface.co", "cdn-lfs.huggingface.co", 443, true},
      {"huggingface.co", "nothuggingface.co", 443, false},  // a suffix is not a subdomain
      {"huggingface.co", "huggingface.co.evil", 443, false},
      {"HuggingFace.CO", "huggingface.co", 443, true},  // case does not matter
      {"localhost, 127.0.0.1 ,::1", "127.0.0.1", 80, true},
      {"localhost,127.0.0.1", "127.0.0.10", 80, false},
      {"localhost 127.0.0.1", "127.0.0.1", 80, true},  // spaces separate too
      {"::1", "::1", 80, true},
      {"0.1", "10.0.0.1", 80, false},  // an address is matched whole, never by its tail
      {"10.0.0.1", "10.0.0.1", 80, true},
      {"huggingface.co.", "cdn.huggingface.co", 443, true},  // trailing dots mean nothing
      {"huggingface.co", "huggingface.co.", 443, true},
      {"10.0.0.0/8", "10.1.2.3", 443, true},
      {"10.0.0.0/8", "11.1.2.3", 443, false},
      {"10.0.0.0/8", "ten.example", 443, false},
      {"192.168.1.0/24", "192.168.1.77", 443, true},
      {"0.0.0.0/0", "8.8.8.8", 443, true},
      {"mirror.corp:8080", "mirror.corp", 8080, true},
      {"mirror.corp:8080", "mirror.corp", 443, false},  // another port goes through the proxy
      {"[::1]:8080", "::1", 8080, true},
      {",,", "huggingface.co", 443, false},
      {"mirror.corp:bad,huggingface.co", "huggingface.co", 443, true},  // a bad entry is skipped
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(std::string(c.no_proxy) + " / " + c.host + ":" + std::to_string(c.port));
    EXPECT_EQ(proxy_exempts(c.no_proxy, c.host, c.port), c.exempt);
  }
}

TEST(HttpProxy, TheUrlsSchemePicksTheVariable) {
  ProxyEnvironment env;
  EXPECT_EQ(proxy_for("https://huggingface.co", env), std::nullopt) << "no proxy set: direct";
  env.https_proxy = "http://secure-proxy:3128";
  env.http_proxy = "http://plain-proxy:8080";
  EXPECT_EQ(proxy_for("https://huggingface.co", env)->host, "secure-proxy");
  EXPECT_EQ(proxy_for("http://mirror.corp", env)->host, "plain-proxy");
  env.no_proxy = "mirror.corp:80,.hf.co";
  EXPECT_EQ(proxy_for("http://mirror.corp", env), std::nullopt) << "the default port counts for no_proxy";
  EXPECT_EQ(proxy_for("https://cdn-lfs.hf.co/some/path", env), std::nullopt);
  EXPECT_EQ(proxy_for("http://mirror.corp:8000", env)->host, "plain-proxy");
  env.https_proxy = "socks5://nope:1080";
  EXPECT_THROW(proxy_for("https://huggingface.co", env), std::invalid_argument);
  EXPECT_EQ(proxy_for("https://cdn-lfs.hf.co", env), std::nullopt) << "an exempt host never reads it";
}

// Sets environment variables for one test and restores them after.
class ScopedEnvironment {
 public:
  void set(const std::string& name, const char* value) {
    const char* old = std::getenv(name.c_str());
    saved_.emplace_back(name, old ? std::optional<std::string>(old) : std::nullopt);
    if (value)
      ::setenv(name.c_str(), value, 1);
    else
      ::unsetenv(name.c_str());
  }
  ~ScopedEnvironment() {
    for (auto it = saved_.rbegin(); it != saved_.rend(); ++it) {
      if (it->second)
        ::setenv(it->first.c_str(), it->second->c_str(), 1);
      else
        ::unsetenv(it->first.c_str());
    }
  }

 private:
  std::vector<std::pair<std::string, std::optional<std::string>>> saved_;
};

TEST(HttpProxy, TheEnvironmentIsReadLowercaseFirstThenAllProxy) {
  ScopedEnvironment env;
  for (const char* name : {"https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY",
                           "no_proxy", "NO_PROXY"})
    env.set(name, nullptr);
  EXPECT_EQ(ProxyEnvironment::from_environment().https_proxy, "");
  env.set("ALL_PROXY", "http://all:1");
  EXPECT_EQ(ProxyEnvironment::from_environment().https_proxy, "http://all:1");
  EXPECT_EQ(ProxyEnvironment::from_environment().http_proxy, "http://all:1");
  // Messages name the variable to change: the one the proxy came from.
  EXPECT_EQ(ProxyEnvironment::from_environment().variable_for("https"), "ALL_PROXY");
  EXPECT_EQ(ProxyEnvironment::from_environment().variable_for("http"), "ALL_PROXY");
  env.set("HTTPS_PROXY", "http://upper:2");
  env.set("https_proxy", "http://lower:3");
  env.set("HTTP_PROXY", "http://plain:4");
  env.set("NO_PROXY", "upper.example");
  ProxyEnvironment read = ProxyEnvironment::from_environment();
  EXPECT_EQ(read.https_proxy, "http://lower:3");
  EXPECT_EQ(read.http_proxy, "http://plain:4");
  EXPECT_EQ(read.variable_for("https"), "https_proxy");
  EXPECT_EQ(read.variable_for("http"), "HTTP_PROXY");
  EXPECT_EQ(read.no_proxy, "upper.example");
  env.set("no_proxy", "lower.example");
  EXPECT_EQ(ProxyEnvironment::from_environment().no_proxy, "lower.example");
}

// A plain HTTP server on loopback.
class OriginServer {
 public:
  OriginServer() {
    server_.Get("/hello", [](const httplib::Request&, httplib::Response& res) {
      res.set_content("hello", "text/plain");
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    while (!server_.is_running())
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ~OriginServer() {
    server_.stop();
    thread_.join();
  }
  std::string origin() const { return "http://127.0.0.1:" + std::to_string(port_); }

 private:
  httplib::Server server_;
  int port_ = 0;
  std::thread thread_;
};

// A client of `forwarder`, as the Hub fetcher makes them.
std::unique_ptr<httplib::Client> client_through(const ProxyForwarder& forwarder, const std::string& origin) {
  auto client = std::make_unique<httplib::Client>(origin);
  client->set_proxy("127.0.0.1", forwarder.port());
  client->set_proxy_basic_auth(forwarder.local_user(), forwarder.local_password());
  return client;
}

TEST(ProxyForwarder, PutsTheProxysCredentialsInEachRequestItForwards) {
  OriginServer origin;
  testing::FakeProxy proxy;
  proxy.require("Basic YWxpY2U6czNjcjp0IEA=");  // alice:s3cr:t @
  ProxyForwarder forwarder(parse_proxy_url(proxy.url("alice:s3cr%3At%20%40")));
  for (int i = 0; i < 3; ++i) {  // one connection each
    httplib::Result res = client_through(forwarder, origin.origin())->Get("/hello");
    ASSERT_TRUE(res) << httplib::to_string(res.error());
    EXPECT_EQ(res->status, 200);
    EXPECT_EQ(res->body, "hello");
  }
  const std::vector<testing::FakeProxy::Request> seen = proxy.requests();
  ASSERT_EQ(seen.size(), 3u);
  for (const testing::FakeProxy::Request& request : seen) {
    EXPECT_EQ(request.line, "GET " + origin.origin() + "/hello HTTP/1.1");
    EXPECT_EQ(request.authorization, "Basic YWxpY2U6czNjcjp0IEA=")
        << "the proxy's, in place of the local token";
  }
  EXPECT_EQ(forwarder.take_failure(), "");
}

// The forwarder holds the operator's credentials: another local process (a sidecar sharing the
// pod's loopback) without this process's token is refused and reaches no proxy.
TEST(ProxyForwarder, RefusesClientsWithoutItsToken) {
  OriginServer origin;
  testing::FakeProxy proxy;
  ProxyForwarder forwarder(parse_proxy_url(proxy.url("alice:secret")));
  httplib::Client stranger(origin.origin());
  stranger.set_proxy("127.0.0.1", forwarder.port());
  httplib::Result res = stranger.Get("/hello");
  ASSERT_TRUE(res) << httplib::to_string(res.error());
  EXPECT_EQ(res->status, 407);
  stranger.set_proxy_basic_auth(forwarder.local_user(), "guess");
  res = stranger.Get("/hello");
  ASSERT_TRUE(res) << httplib::to_string(res.error());
  EXPECT_EQ(res->status, 407);
  EXPECT_TRUE(proxy.requests().empty());
}

TEST(ProxyForwarder, AnUnreachableProxyIsAnswered502WithTheReasonKeptForTheCaller) {
  ProxyForwarder forwarder(parse_proxy_url("http://user:pass@127.0.0.1:1"));  // nothing listens there
  httplib::Result res = client_through(forwarder, "http://127.0.0.1:9")->Get("/hello");
  ASSERT_TRUE(res) << httplib::to_string(res.error());
  EXPECT_EQ(res->status, 502);
  EXPECT_NE(res->body.find("cannot connect to the proxy 127.0.0.1:1"), std::string::npos) << res->body;
  const std::string failure = forwarder.take_failure();
  EXPECT_NE(failure.find("cannot connect to the proxy 127.0.0.1:1: Connection refused"), std::string::npos)
      << failure;
  EXPECT_EQ(failure.find("pass"), std::string::npos) << "never the credentials";
  EXPECT_EQ(forwarder.take_failure(), "") << "taken once";
}

// httplib reports a CONNECT the proxy refused (other than with 407) as a failed TLS handshake; the
// forwarder keeps the proxy's answer.
TEST(ProxyForwarder, KeepsTheAnswerOfARefusedConnect) {
  OriginServer origin;  // not reached: the proxy blocks its port
  testing::FakeProxy proxy;
  const int port = std::stoi(origin.origin().substr(origin.origin().rfind(':') + 1));
  proxy.block(port);
  ProxyForwarder forwarder(parse_proxy_url(proxy.url()));
  httplib::Result res = client_through(forwarder, "https://127.0.0.1:" + std::to_string(port))->Get("/hello");
  EXPECT_FALSE(res && res->status == 200);
  EXPECT_EQ(forwarder.take_failure(),
            "the proxy 127.0.0.1:" + std::to_string(proxy.port()) + " answered HTTP/1.1 403 Forbidden");
  proxy.block(-1);
  proxy.require("Basic c29tZW9uZTplbHNl");  // someone:else
  res = client_through(forwarder, "https://127.0.0.1:" + std::to_string(port))->Get("/hello");
  ASSERT_TRUE(res) << httplib::to_string(res.error());
  EXPECT_EQ(res->status, 407);
  EXPECT_EQ(forwarder.take_failure(), "the proxy 127.0.0.1:" + std::to_string(proxy.port()) +
                                          " answered HTTP/1.1 407 Proxy Authentication Required (it asks for "
                                          "Basic authentication)");
}

}  // namespace
}  // namespace kvserve
