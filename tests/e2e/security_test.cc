// TLS, mutual TLS and the bearer token, against the real server with certificates made at test
// time by the openssl command-line tool (a throwaway CA, a server certificate for 127.0.0.1 and a
// client certificate). Loopback only.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <httplib.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "grpc/health/v1/health.grpc.pb.h"
#include "kvserve/v1/kvserve.grpc.pb.h"
#include "tests/e2e/server_process.h"

namespace kvserve {
namespace {

namespace fs = std::filesystem;
using testing::ServerProcess;

const std::string kModel = std::string(KVSERVE_TEST_DATA) + "/models/tiny-llama";

class Security : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::temp_directory_path() / ("kvserve-tls-" + std::to_string(getpid()));
    fs::create_directories(dir_);
    const std::string d = dir_.string();
    const std::string key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    const std::string script = "cd " + d + " && openssl req -x509 " + key +
                               " -keyout ca.key -out ca.crt -days 1 -subj '/CN=kvserve test CA'" +
                               " && openssl req " + key +
                               " -keyout server.key -out server.csr -subj '/CN=localhost'" +
                               " && printf 'subjectAltName=DNS:localhost,IP:127.0.0.1' > san.ext" +
                               " && openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key "
                               "-CAcreateserial -out server.crt -days 1" +
                               " -extfile san.ext" + " && openssl req " + key +
                               " -keyout client.key -out client.csr -subj '/CN=client'" +
                               " && openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key "
                               "-CAcreateserial -out client.crt -days 1" +
                               " && printf 's3cret-token\\n' > token";
    openssl_ok_ = std::system(("(" + script + ") > /dev/null 2>&1").c_str()) == 0;
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }

  void SetUp() override {
    if (!openssl_ok_) GTEST_SKIP() << "the openssl command is missing or failed: TLS tests skipped";
  }

  static std::string file(const std::string& name) {
    std::ifstream in(dir_ / name);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  static std::string path(const std::string& name) { return (dir_ / name).string(); }

  static grpc::Status generate(const std::shared_ptr<grpc::Channel>& channel, const std::string& token = "") {
    auto stub = v1::Generation::NewStub(channel);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    if (!token.empty()) ctx.AddMetadata("authorization", "Bearer " + token);
    v1::GenerateRequest req;
    req.set_text("secure hello");
    req.mutable_stop()->set_max_tokens(4);
    auto reader = stub->Generate(&ctx, req);
    v1::GenerateResponse msg;
    while (reader->Read(&msg)) {
    }
    return reader->Finish();
  }

  static std::shared_ptr<grpc::Channel> tls_channel(const std::string& address, bool with_client_cert) {
    grpc::SslCredentialsOptions options;
    options.pem_root_certs = file("ca.crt");
    if (with_client_cert) {
      options.pem_private_key = file("client.key");
      options.pem_cert_chain = file("client.crt");
    }
    return grpc::CreateChannel(address, grpc::SslCredentials(options));
  }

  static inline fs::path dir_;
  static inline bool openssl_ok_ = false;
};

TEST_F(Security, TlsServesSecureClientsAndRefusesPlaintext) {
  ServerProcess server(
      {"--model", kModel, "--tls-cert", path("server.crt"), "--tls-key", path("server.key")});
  EXPECT_TRUE(generate(tls_channel(server.address(), false)).ok());
  const grpc::Status plain =
      generate(grpc::CreateChannel(server.address(), grpc::InsecureChannelCredentials()));
  EXPECT_EQ(plain.error_code(), grpc::StatusCode::UNAVAILABLE) << plain.error_message();
}

// The OpenAI-compatible API takes the same TLS flags: HTTPS with the server's certificate, and with
// a client CA, client certificates required.
TEST_F(Security, TheOpenAiApiServesHttpsWithTheSameCertificates) {
  ServerProcess server({"--model", kModel, "--tls-cert", path("server.crt"), "--tls-key", path("server.key"),
                        "--openai-host", "127.0.0.1", "--openai-port", "0"});
  ASSERT_NE(server.openai_port(), 0);
  const std::string body = R"({"prompt": "secure hello", "max_tokens": 4})";
  httplib::SSLClient secure("127.0.0.1", server.openai_port());
  secure.set_ca_cert_path(path("ca.crt").c_str());
  secure.enable_server_certificate_verification(true);
  auto reply = secure.Post("/v1/completions", body, "application/json");
  ASSERT_TRUE(reply) << httplib::to_string(reply.error());
  EXPECT_EQ(reply->status, 200) << reply->body;
  httplib::Client plain("127.0.0.1", server.openai_port());
  auto refused = plain.Post("/v1/completions", body, "application/json");
  EXPECT_TRUE(!refused || refused->status >= 400) << "plain HTTP was served on the HTTPS port";
}

TEST_F(Security, TheOpenAiApiRequiresClientCertificatesUnderMutualTls) {
  ServerProcess server({"--model", kModel, "--tls-cert", path("server.crt"), "--tls-key", path("server.key"),
                        "--tls-client-ca", path("ca.crt"), "--openai-host", "127.0.0.1", "--openai-port",
                        "0"});
  const std::string body = R"({"prompt": "secure hello", "max_tokens": 4})";
  httplib::SSLClient with_cert("127.0.0.1", server.openai_port(), path("client.crt"), path("client.key"));
  with_cert.set_ca_cert_path(path("ca.crt").c_str());
  auto reply = with_cert.Post("/v1/completions", body, "application/json");
  ASSERT_TRUE(reply) << httplib::to_string(reply.error());
  EXPECT_EQ(reply->status, 200) << reply->body;
  httplib::SSLClient without_cert("127.0.0.1", server.openai_port());
  without_cert.set_ca_cert_path(path("ca.crt").c_str());
  EXPECT_FALSE(without_cert.Post("/v1/completions", body, "application/json"));
}

TEST_F(Security, MutualTlsRequiresAClientCertificateFromTheCa) {
  ServerProcess server({"--model", kModel, "--tls-cert", path("server.crt"), "--tls-key", path("server.key"),
                        "--tls-client-ca", path("ca.crt")});
  EXPECT_TRUE(generate(tls_channel(server.address(), true)).ok());
  EXPECT_FALSE(generate(tls_channel(server.address(), false)).ok());
}

TEST_F(Security, BearerTokenGuardsEveryRpcButHealth) {
  ServerProcess server({"--model", kModel, "--auth-token-file", path("token")});
  auto channel = grpc::CreateChannel(server.address(), grpc::InsecureChannelCredentials());
  const grpc::Status none = generate(channel);
  EXPECT_EQ(none.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_NE(none.error_message().find("authorization: Bearer"), std::string::npos) << none.error_message();
  EXPECT_EQ(generate(channel, "wrong-token").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_TRUE(generate(channel, "s3cret-token").ok());

  auto stub = v1::Generation::NewStub(channel);
  grpc::ClientContext status_ctx;
  v1::ServerStatus status;
  EXPECT_EQ(stub->GetServerStatus(&status_ctx, {}, &status).error_code(), grpc::StatusCode::UNAUTHENTICATED);

  auto health = grpc::health::v1::Health::NewStub(channel);
  grpc::ClientContext health_ctx;
  grpc::health::v1::HealthCheckResponse resp;
  ASSERT_TRUE(health->Check(&health_ctx, {}, &resp).ok()) << "health must stay open for probes";
  EXPECT_EQ(resp.status(), grpc::health::v1::HealthCheckResponse::SERVING);
}

TEST_F(Security, BadSecurityFlagsStopStartupWithAMessage) {
  EXPECT_THROW(ServerProcess({"--model", kModel, "--tls-cert", path("server.crt")}), std::runtime_error);
  try {
    ServerProcess({"--model", kModel, "--tls-cert", path("nope.crt"), "--tls-key", path("server.key")});
    FAIL() << "expected the server to refuse to start";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot read TLS certificate"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace kvserve
