// End-to-end tests of LoRA adapters served beside the model (--lora-modules NAME=DIR): requests
// name one over gRPC (lora_adapter) or the OpenAI API (model), and get the independent reference's
// tokens for that adapter merged into the model (tests/data/loras/*/expected.json, from
// scripts/reference/llama_reference.py --lora); a name not served is NOT_FOUND; bad flags stop
// start-up saying which.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <httplib.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "kvserve/v1/kvserve.grpc.pb.h"
#include "tests/e2e/generation_client.h"
#include "tests/e2e/server_process.h"

namespace kvserve {
namespace {

using Json = nlohmann::json;
using testing::ServerProcess;
using testing::stub;
using testing::wait_all_blocks_free;

const std::string kData = std::string(KVSERVE_TEST_DATA);
const std::string kModel = kData + "/models/tiny-llama3-gqa";
const std::string kLora = kData + "/loras/tiny-llama3-gqa-lora";
const std::string kLoraQv = kData + "/loras/tiny-llama3-gqa-lora-qv";

Json expected(const std::string& dir) {
  std::ifstream in(dir + "/expected.json");
  return Json::parse(in);
}

std::vector<std::string> server_args() {
  // Blocks of 4 tokens, so that the 14-token prompt leaves 3 full blocks to the prefix cache.
  return {
      "--model",       kModel,          "--backend",     "cpu",       "--block-size",  "4", "--lora-modules",
      "mine=" + kLora, "qv=" + kLoraQv, "--openai-host", "127.0.0.1", "--openai-port", "0"};
}

// The reference's prompt, greedy, for as many tokens as the reference has.
v1::GenerateRequest greedy_request(const Json& exp, const std::string& adapter) {
  v1::GenerateRequest req;
  for (uint32_t id : exp.at("prompt_ids").get<std::vector<uint32_t>>())
    req.mutable_token_ids()->add_ids(id);
  req.mutable_stop()->set_max_tokens(static_cast<uint32_t>(exp.at("greedy_ids").size()));
  req.mutable_stop()->set_ignore_eos(true);
  req.set_lora_adapter(adapter);
  return req;
}

TEST(LoraE2E, EachAdapterGeneratesAsItsReferenceAndTheBaseAsItsOwn) {
  ServerProcess server(server_args());
  auto client = stub(server);
  grpc::ClientContext ctx;
  v1::ModelInfo info;
  ASSERT_TRUE(client->GetModelInfo(&ctx, {}, &info).ok());
  EXPECT_EQ(std::vector<std::string>(info.lora_adapters().begin(), info.lora_adapters().end()),
            (std::vector<std::string>{"mine", "qv"}));
  EXPECT_NE(server.output().find("LoRA adapter mine from " + kLora), std::string::npos) << server.output();

  // Twice round: the second finds each adapter's own prompt blocks in the prefix cache.
  for (int round = 0; round < 2; ++round) {
    for (const auto& [adapter, dir] :
         std::vector<std::pair<std::string, std::string>>{{"mine", kLora}, {"", kModel}, {"qv", kLoraQv}}) {
      SCOPED_TRACE("adapter '" + adapter + "', round " + std::to_string(round));
      const Json exp = expected(dir);
      const testing::ReceivedCall call = testing::generate(*client, greedy_request(exp, adapter));
      ASSERT_TRUE(call.status.ok()) << call.status.error_message();
      EXPECT_EQ(call.choices.at(0).tokens, exp.at("greedy_ids").get<std::vector<uint32_t>>());
      const uint32_t prompt = call.choices.at(0).usage.prompt_tokens();
      EXPECT_EQ(call.choices.at(0).usage.cached_prompt_tokens(), round == 0 ? 0u : (prompt - 1) / 4 * 4);
    }
  }

  // Embeddings under an adapter: the reference's final hidden state with the adapter merged.
  v1::EmbedRequest embed;
  v1::TokenIds* ids = embed.add_inputs()->mutable_token_ids();
  for (uint32_t id : expected(kLora).at("prompt_ids").get<std::vector<uint32_t>>())
    ids->add_ids(id);
  embed.set_no_normalize(true);
  embed.set_lora_adapter("mine");
  grpc::ClientContext ectx;
  v1::EmbedResponse embedded;
  ASSERT_TRUE(client->Embed(&ectx, embed, &embedded).ok());
  const auto hidden = expected(kLora).at("prompt_final_hidden").get<std::vector<float>>();
  ASSERT_EQ(embedded.embeddings(0).values_size(), static_cast<int>(hidden.size()));
  for (size_t i = 0; i < hidden.size(); ++i)
    EXPECT_NEAR(embedded.embeddings(0).values(static_cast<int>(i)), hidden[i], 1e-3) << i;

  // The metrics count each adapter's requests and tokens (the embedding's prompt too), the base
  // model's not.
  httplib::Client http("127.0.0.1", server.metrics_port());
  const auto metrics = http.Get("/metrics");
  ASSERT_TRUE(metrics);
  const auto sample = [&](const std::string& name) {
    const size_t at = metrics->body.find("\n" + name + " ");
    return at == std::string::npos ? -1.0 : std::stod(metrics->body.substr(at + name.size() + 2));
  };
  const size_t prompt = expected(kLora).at("prompt_ids").size();
  EXPECT_EQ(sample(R"(kvserve_lora_requests_total{adapter="mine"})"),
            3);  // two generations and the embedding
  EXPECT_EQ(sample(R"(kvserve_lora_requests_total{adapter="qv"})"), 2);
  EXPECT_EQ(sample(R"(kvserve_lora_prompt_tokens_total{adapter="mine"})"), 3.0 * prompt);
  EXPECT_EQ(sample(R"(kvserve_lora_generation_tokens_total{adapter="mine"})"),
            2.0 * expected(kLora).at("greedy_ids").size());
  EXPECT_EQ(sample(R"(kvserve_lora_generation_tokens_total{adapter="qv"})"),
            2.0 * expected(kLoraQv).at("greedy_ids").size());

  // A name not served: NOT_FOUND naming the ones that are; the server goes on.
  const testing::ReceivedCall unknown = testing::generate(*client, greedy_request(expected(kLora), "theirs"));
  EXPECT_EQ(unknown.status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_NE(unknown.status.error_message().find(
                "lora_adapter \"theirs\" is not served here; it serves \"mine\", \"qv\""),
            std::string::npos)
      << unknown.status.error_message();
  EXPECT_TRUE(wait_all_blocks_free(*client));
}

TEST(LoraE2E, TheOpenAiApiNamesAnAdapterAsItsModel) {
  ServerProcess server(server_args());
  httplib::Client http("127.0.0.1", server.openai_port());
  const auto models = http.Get("/v1/models");
  ASSERT_TRUE(models);
  const Json listed = Json::parse(models->body);
  ASSERT_EQ(listed.at("data").size(), 3u) << listed.dump();
  EXPECT_EQ(listed["data"][0]["id"], kModel);
  EXPECT_EQ(listed["data"][1]["id"], "mine");
  EXPECT_EQ(listed["data"][1]["parent"], kModel);
  EXPECT_EQ(listed["data"][2]["id"], "qv");

  // The adapter's completion is the gRPC one's under the same adapter, and not the base model's.
  auto client = stub(server);
  const auto text_of = [&](const std::string& adapter) {
    return testing::generate(*client, greedy_request(expected(kLora), adapter)).choices.at(0).text;
  };
  const auto complete = [&](const std::string& model) {
    const Json body = {{"model", model},
                       {"prompt", expected(kLora).at("prompt_ids")},
                       {"max_tokens", expected(kLora).at("greedy_ids").size()},
                       {"temperature", 0},
                       {"ignore_eos", true}};
    return http.Post("/v1/completions", body.dump(), "application/json");
  };
  const auto adapted = complete("mine");
  ASSERT_TRUE(adapted);
  ASSERT_EQ(adapted->status, 200) << adapted->body;
  const Json reply = Json::parse(adapted->body);
  EXPECT_EQ(reply["model"], "mine");
  EXPECT_EQ(reply["choices"][0]["text"], text_of("mine"));
  EXPECT_NE(reply["choices"][0]["text"], text_of("")) << "the adapter changes the output";
  const auto base = complete(kModel);
  ASSERT_TRUE(base);
  EXPECT_EQ(Json::parse(base->body)["choices"][0]["text"], text_of(""));

  // kvserve-client --lora-adapter: the adapter's normalized embedding of the reference's prompt.
  const std::string kvserve_client = std::string(KVSERVE_CLIENT_BINARY) + " --target " + server.address();
  const auto [status, out] =
      testing::run_command(kvserve_client + " --lora-adapter mine --embed '" +
                           expected(kLora).at("prompt").get<std::string>() + "' 2>/dev/null");
  ASSERT_EQ(status, 0) << out;
  std::istringstream values(out);
  std::vector<double> got;
  for (double x; values >> x;)
    got.push_back(x);
  auto want = expected(kLora).at("prompt_final_hidden").get<std::vector<double>>();
  double norm = 0;
  for (double x : want)
    norm += x * x;
  ASSERT_EQ(got.size(), want.size()) << out;
  for (size_t i = 0; i < want.size(); ++i)
    EXPECT_NEAR(got[i], want[i] / std::sqrt(norm), 1e-3) << i;
  const auto [refused, message] = testing::run_command(kvserve_client + " --lora-adapter theirs 'x' 2>&1");
  EXPECT_EQ(refused, 1);
  EXPECT_NE(message.find("lora_adapter \"theirs\" is not served here"), std::string::npos) << message;

  const auto unknown = complete("theirs");
  ASSERT_TRUE(unknown);
  EXPECT_EQ(unknown->status, 404) << unknown->body;
  EXPECT_NE(unknown->body.find("and the LoRA adapters \\\"mine\\\", \\\"qv\\\""), std::string::npos)
      << unknown->body;
}

TEST(LoraE2E, BadAdaptersStopStartUpSayingWhich) {
  const auto start_error = [](std::vector<std::string> args) {
    try {
      ServerProcess server(std::move(args));
    } catch (const std::runtime_error& e) {
      return std::string(e.what());
    }
    return std::string("started");
  };
  const std::vector<std::string> base = {"--model", kModel, "--backend", "cpu", "--lora-modules"};
  const auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> args = base;
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  };
  EXPECT_NE(start_error(with({"mine"})).find("--lora-modules mine: give each as NAME=DIR"),
            std::string::npos);
  EXPECT_NE(start_error(with({"a=" + kLora, "a=" + kLoraQv})).find("the name 'a' is taken"),
            std::string::npos);
  EXPECT_NE(start_error(with({"a=" + kData + "/models/tiny-llama"})).find("adapter_config.json: cannot open"),
            std::string::npos);
  EXPECT_NE(start_error(with({"a b=" + kLora})).find("a name is 1 to 128 letters, digits"),
            std::string::npos);
  // An adapter of another model: its shapes do not fit.
  const std::string other = start_error(
      {"--model", kData + "/models/tiny-llama", "--backend", "cpu", "--lora-modules", "a=" + kLora});
  EXPECT_NE(other.find("the adapter was trained for another model"), std::string::npos) << other;
}

}  // namespace
}  // namespace kvserve
