// End-to-end tests of the Embed call on the real server: the embedding of a text is the final
// hidden state that the independent float64 PyTorch reference computed for it
// (tests/data/models/tiny-llama/expected.json, scripts/reference/llama_reference.py); bad input
// gets INVALID_ARGUMENT naming the field; a call cancelled by its deadline loses no block.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <sys/wait.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "engine/safetensors.h"
#include "kvserve/v1/kvserve.grpc.pb.h"
#include "tests/e2e/generation_client.h"
#include "tests/e2e/server_process.h"
#include "tests/engine/model_files_test_util.h"

namespace kvserve {
namespace {

using namespace std::chrono_literals;
using testing::ServerProcess;
using testing::stub;
using testing::wait_all_blocks_free;

const std::string kModel = std::string(KVSERVE_TEST_DATA) + "/models/tiny-llama";

// The reference's prompt ("Once upon a time" with BOS) and its final hidden state at the last token.
struct Reference {
  std::string prompt;
  std::vector<uint32_t> prompt_ids;
  std::vector<float> hidden;
};

Reference read_reference() {
  std::ifstream in(kModel + "/expected.json");
  const auto j = nlohmann::json::parse(in);
  return {j.at("prompt").get<std::string>(), j.at("prompt_ids").get<std::vector<uint32_t>>(),
          j.at("prompt_final_hidden").get<std::vector<float>>()};
}

grpc::Status embed(v1::Generation::Stub& client, const v1::EmbedRequest& request, v1::EmbedResponse* response,
                   std::chrono::milliseconds deadline = 30s) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + deadline);
  return client.Embed(&context, request, response);
}

std::vector<float> unit(std::vector<float> v, size_t n) {
  v.resize(n);
  double sum = 0.0;
  for (float x : v)
    sum += static_cast<double>(x) * x;
  for (float& x : v)
    x = static_cast<float>(x / std::sqrt(sum));
  return v;
}

// As the engine test's bound (tests/engine/cpu_backend_test.cc): float32 against float64 leaves
// the hidden state well under 1e-4 away; 1e-3 still catches a wrong token, position or norm.
void expect_near(const v1::Embedding& got, const std::vector<float>& want) {
  ASSERT_EQ(static_cast<size_t>(got.values_size()), want.size());
  for (size_t i = 0; i < want.size(); ++i)
    EXPECT_NEAR(got.values(static_cast<int>(i)), want[i], 1e-3) << "dimension " << i;
}

TEST(EmbedE2E, TextAndTokenInputsGiveTheReferenceHiddenStateRawNormalizedAndTruncated) {
  const Reference ref = read_reference();
  ServerProcess server({"--model", kModel});
  auto client = stub(server);

  v1::EmbedRequest request;
  request.set_request_id("docs");
  request.add_inputs()->set_text(ref.prompt);
  *request.add_inputs()->mutable_token_ids()->mutable_ids() = {ref.prompt_ids.begin(), ref.prompt_ids.end()};
  request.add_inputs()->set_text("A second, longer text that shares nothing with the first one.");
  request.set_no_normalize(true);
  v1::EmbedResponse raw;
  const grpc::Status st = embed(*client, request, &raw);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(raw.request_id(), "docs");
  ASSERT_EQ(raw.embeddings_size(), 3);
  expect_near(raw.embeddings(0), ref.hidden);
  expect_near(raw.embeddings(1), ref.hidden);
  EXPECT_EQ(raw.embeddings(0).prompt_tokens(), ref.prompt_ids.size());
  EXPECT_NE(raw.embeddings(2).values(0), raw.embeddings(0).values(0));
  EXPECT_EQ(raw.usage().prompt_tokens(), raw.embeddings(0).prompt_tokens() +
                                             raw.embeddings(1).prompt_tokens() +
                                             raw.embeddings(2).prompt_tokens());
  EXPECT_EQ(raw.usage().completion_tokens(), 0u);

  request.set_no_normalize(false);
  v1::EmbedResponse normalized;
  ASSERT_TRUE(embed(*client, request, &normalized).ok());
  expect_near(normalized.embeddings(0), unit(ref.hidden, ref.hidden.size()));
  // The longer text (more than a 16-token block) came from the prefix cache this time, to the
  // same embedding.
  EXPECT_GT(normalized.embeddings(2).cached_prompt_tokens(), 0u);
  const std::vector<float> first(raw.embeddings(2).values().begin(), raw.embeddings(2).values().end());
  expect_near(normalized.embeddings(2), unit(first, first.size()));

  request.set_dimensions(16);
  v1::EmbedResponse truncated;
  ASSERT_TRUE(embed(*client, request, &truncated).ok());
  expect_near(truncated.embeddings(1), unit(ref.hidden, 16));
  EXPECT_TRUE(wait_all_blocks_free(*client));

  // Nine inputs ended "embedded"; none generated a token or gave a time-to-first-token sample.
  httplib::Client http("127.0.0.1", server.metrics_port());
  const auto metrics = http.Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_NE(metrics->body.find("kvserve_requests_total{finish_reason=\"embedded\"} 9"), std::string::npos)
      << metrics->body;
  EXPECT_NE(metrics->body.find("\nkvserve_generation_tokens_total 0"), std::string::npos) << metrics->body;
  EXPECT_NE(metrics->body.find("\nkvserve_time_to_first_token_seconds_count 0"), std::string::npos)
      << metrics->body;
}

TEST(EmbedE2E, BadInputIsRefusedNamingTheFieldAndTheServerGoesOn) {
  ServerProcess server({"--model", kModel, "--max-model-len", "64"});
  auto client = stub(server);
  struct Case {
    const char* name;
    void (*build)(v1::EmbedRequest&);
    const char* message;
  };
  const Case cases[] = {
      {"no inputs", [](v1::EmbedRequest&) {}, "at least one input"},
      {"empty text", [](v1::EmbedRequest& r) { r.add_inputs()->set_text(""); }, "inputs[0].text"},
      {"unset input",
       [](v1::EmbedRequest& r) {
         r.add_inputs()->set_text("fine");
         r.add_inputs();
       },
       "inputs[1]: set text or token_ids"},
      {"token id outside the vocabulary",
       [](v1::EmbedRequest& r) { r.add_inputs()->mutable_token_ids()->add_ids(1u << 30); }, "vocabulary"},
      {"too many dimensions",
       [](v1::EmbedRequest& r) {
         r.add_inputs()->set_text("fine");
         r.set_dimensions(100000);
       },
       "hidden size"},
      {"an input longer than the server takes",
       [](v1::EmbedRequest& r) {
         r.add_inputs()->set_text("fine");
         r.add_inputs()->mutable_token_ids()->mutable_ids()->Resize(64, 5);
       },
       "inputs[1]: 64 tokens, more than the 63"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    v1::EmbedRequest request;
    c.build(request);
    v1::EmbedResponse response;
    const grpc::Status st = embed(*client, request, &response);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << st.error_message();
    EXPECT_NE(st.error_message().find(c.message), std::string::npos) << st.error_message();
  }
  v1::EmbedRequest good;
  good.add_inputs()->set_text("still serving");
  v1::EmbedResponse response;
  ASSERT_TRUE(embed(*client, good, &response).ok());
  EXPECT_EQ(response.embeddings_size(), 1);
  EXPECT_TRUE(wait_all_blocks_free(*client));
}

// The count of a finish reason in kvserve_requests_total (0 when absent).
double requests_ended(const ServerProcess& server, const std::string& reason) {
  httplib::Client http("127.0.0.1", server.metrics_port());
  const auto metrics = http.Get("/metrics");
  if (!metrics) return -1;
  const std::string name = "kvserve_requests_total{finish_reason=\"" + reason + "\"} ";
  const size_t at = metrics->body.find(name);
  return at == std::string::npos ? 0 : std::stod(metrics->body.substr(at + name.size()));
}

// Runs a command, returning its exit status and what it printed on stdout.
// kvserve-client --embed prints the Embed RPC's values on one line (9 digits: each float exactly),
// and fails with the server's message on a bad request.
TEST(EmbedE2E, TheClientPrintsTheEmbedding) {
  const Reference ref = read_reference();
  ServerProcess server({"--model", kModel});
  const std::string client = std::string(KVSERVE_CLIENT_BINARY) + " --target " + server.address();
  const auto [status, out] =
      testing::run_command(client + " --embed --dimensions 16 '" + ref.prompt + "' 2>/dev/null");
  ASSERT_EQ(status, 0) << out;
  std::istringstream values(out);
  std::vector<float> got;
  for (float x; values >> x;)
    got.push_back(x);
  const std::vector<float> want = unit(ref.hidden, 16);
  ASSERT_EQ(got.size(), want.size()) << out;
  for (size_t i = 0; i < want.size(); ++i)
    EXPECT_NEAR(got[i], want[i], 1e-3) << "dimension " << i;
  const auto [refused, message] = testing::run_command(client + " --embed --dimensions 100000 'x' 2>&1");
  EXPECT_EQ(refused, 1);
  EXPECT_NE(message.find("hidden size"), std::string::npos) << message;
}

// A call whose deadline passes while its inputs are queued and running ends DEADLINE_EXCEEDED, and
// the inputs not done by then are aborted (not computed for nobody): 40 inputs two at a time take
// 20 steps of 50 ms, the deadline is 300 ms. No block stays taken, nothing stays queued.
TEST(EmbedE2E, ADeadlineAbortsEveryInputAndFreesItsBlocks) {
  // 40 inputs two at a time, 100 ms a step: 2 s of work, cut at 1 s, so at most 20 are embedded.
  ServerProcess server({"--model", kModel, "--debug-step-delay-ms", "100", "--max-num-seqs", "2"});
  auto client = stub(server);
  v1::EmbedRequest request;
  // A first call connects the channel and warms the server, so that the cut call's deadline is
  // spent in the engine, not on the way there (under ThreadSanitizer that took over 300 ms once,
  // and the call expired before the server submitted anything).
  request.add_inputs()->set_text("warm up");
  v1::EmbedResponse response;
  ASSERT_TRUE(embed(*client, request, &response).ok());
  request.clear_inputs();
  for (int i = 0; i < 40; ++i)
    request.add_inputs()->set_text("input number " + std::to_string(i) + " waits its turn in the queue");
  const grpc::Status st = embed(*client, request, &response, 1000ms);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << st.error_message();
  EXPECT_TRUE(wait_all_blocks_free(*client, 10s));
  const double aborted = requests_ended(server, "aborted"), embedded = requests_ended(server, "embedded");
  EXPECT_GE(aborted, 20);
  EXPECT_EQ(aborted + embedded, 41) << "the warm-up's input and the 40";
}

// An embedding model's checkpoint (no "model." prefix, no lm_head: tiny-llama3-gqa, untied,
// rewritten so) is served for embeddings only: ModelInfo says so, Generate is FAILED_PRECONDITION
// naming Embed, and its embeddings are those of the full model it was cut from.
TEST(EmbedE2E, AModelWithoutAnLmHeadServesEmbeddingsAndRefusesGeneration) {
  const std::filesystem::path full = std::string(KVSERVE_TEST_DATA) + "/models/tiny-llama3-gqa";
  const model_test::TempDir dir;
  std::vector<model_test::RawTensor> tensors;
  const SafetensorsFile file(full / "model.safetensors");
  for (const SafetensorsTensor& t : file.tensors())
    if (t.name != "lm_head.weight")
      tensors.push_back({t.name.substr(std::string("model.").size()), safetensors_dtype_name(t.dtype),
                         t.shape,
                         std::string(reinterpret_cast<const char*>(t.bytes.data()), t.bytes.size())});
  model_test::write_file(dir / "model.safetensors", model_test::safetensors_bytes(tensors));
  for (const char* name : {"config.json", "tokenizer.model"})
    model_test::write_file(dir / name, model_test::read_file(full / name));

  v1::EmbedRequest request;
  request.add_inputs()->set_text("an embedding model embeds");
  v1::EmbedResponse want;
  {
    ServerProcess original({"--model", full.string()});
    auto client = stub(original);
    ASSERT_TRUE(embed(*client, request, &want).ok());
  }
  ServerProcess server({"--model", dir.path().string()});
  auto client = stub(server);
  grpc::ClientContext info_context;
  v1::ModelInfo info;
  ASSERT_TRUE(client->GetModelInfo(&info_context, {}, &info).ok());
  EXPECT_TRUE(info.embedding_only());

  v1::GenerateRequest generate;
  generate.set_text("no text from this one");
  const testing::ReceivedCall refused = testing::generate(*client, generate);
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_NE(refused.status.error_message().find("call Embed"), std::string::npos)
      << refused.status.error_message();

  v1::EmbedResponse got;
  ASSERT_TRUE(embed(*client, request, &got).ok());
  ASSERT_EQ(got.embeddings(0).values_size(), want.embeddings(0).values_size());
  for (int i = 0; i < want.embeddings(0).values_size(); ++i)
    EXPECT_EQ(got.embeddings(0).values(i), want.embeddings(0).values(i)) << "dimension " << i;
}

}  // namespace
}  // namespace kvserve
