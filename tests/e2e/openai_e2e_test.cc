// End-to-end tests of the OpenAI-compatible HTTP API on the real kvserve: the same request over HTTP
// and over gRPC must give the same tokens, text and logprobs (the gRPC API is the reference, itself
// checked against PyTorch); and what a serving system owes its clients over HTTP too: a client that
// hangs up mid-stream loses its request and its blocks, a full queue is 429 with Retry-After, a
// draining server is 503, an oversize body is 413 with a message, a bearer token is enforced, and
// more concurrent streams than worker threads all complete. (tests/e2e/openai_client_test.py
// checks the shapes from Python's standard library, an independent client.)
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "kvserve/v1/kvserve.grpc.pb.h"
#include "tests/e2e/generation_client.h"
#include "tests/e2e/server_process.h"

namespace kvserve {
namespace {

using namespace std::chrono_literals;
using Json = nlohmann::json;
using testing::ServerProcess;
using testing::status;
using testing::stub;
using testing::wait_all_blocks_free;
using testing::wait_for_status;

const std::string kModel = std::string(KVSERVE_TEST_DATA) + "/models/tiny-llama";

std::vector<std::string> with_openai(std::vector<std::string> args) {
  args.insert(args.end(), {"--model", kModel, "--openai-host", "127.0.0.1", "--openai-port", "0"});
  return args;
}

struct HttpReply {
  int status = 0;  // 0: no reply (connection failed or the client hung up)
  std::string body;
  httplib::Headers headers;
};

// POSTs `body` to `path`; `keep_reading` (if set) sees the body as it arrives and may hang up.
HttpReply post(int port, const std::string& path, const Json& body, httplib::Headers headers = {},
               std::function<bool(const std::string&)> keep_reading = nullptr) {
  httplib::Client client("127.0.0.1", port);
  client.set_read_timeout(60, 0);
  httplib::Request req;
  req.method = "POST";
  req.path = path;
  req.headers = std::move(headers);
  req.body = body.is_string() ? body.get<std::string>() : body.dump();
  req.set_header("Content-Type", "application/json");
  HttpReply reply;
  req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
    reply.body.append(data, n);
    return !keep_reading || keep_reading(reply.body);
  };
  if (auto res = client.send(req)) {
    reply.status = res->status;
    reply.headers = res->headers;
  } else {
    // Status 0: no HTTP reply at all. Say why, so a failure names the transport error.
    reply.body += "[client error: " + httplib::to_string(res.error()) + "]";
  }
  return reply;
}

// The JSON of each server-sent event; [DONE] as the string "[DONE]".
std::vector<Json> events(const std::string& body) {
  std::vector<Json> out;
  size_t pos = 0;
  while ((pos = body.find("data: ", pos)) != std::string::npos) {
    const size_t end = body.find("\n\n", pos);
    if (end == std::string::npos) break;
    const std::string data = body.substr(pos + 6, end - pos - 6);
    out.push_back(data == "[DONE]" ? Json("[DONE]") : Json::parse(data));
    pos = end + 2;
  }
  return out;
}

std::vector<float> floats(const Json& array) {
  std::vector<float> out;
  for (const Json& x : array)
    out.push_back(x.get<float>());  // float -> JSON -> float is exact
  return out;
}

// Left out, max_tokens is OpenAI's (and vLLM's) default: 16 for completions, all that fits for chat.
TEST(OpenAiE2E, MaxTokensLeftOutIsSixteenForCompletionsAndAllThatFitsForChat) {
  ServerProcess server(with_openai({"--max-model-len", "64"}));
  const HttpReply completion = post(server.openai_port(), "/v1/completions",
                                    Json{{"prompt", "Once upon a time"}, {"ignore_eos", true}});
  ASSERT_EQ(completion.status, 200) << completion.body;
  EXPECT_EQ(Json::parse(completion.body)["usage"]["completion_tokens"], 16);
  const HttpReply chat =
      post(server.openai_port(), "/v1/chat/completions",
           Json{{"messages", {{{"role", "user"}, {"content", "Hi"}}}}, {"ignore_eos", true}});
  ASSERT_EQ(chat.status, 200) << chat.body;
  const Json usage = Json::parse(chat.body)["usage"];
  EXPECT_EQ(usage["prompt_tokens"].get<int>() + usage["completion_tokens"].get<int>(), 64);
  EXPECT_EQ(Json::parse(chat.body)["choices"][0]["finish_reason"], "length");
}

TEST(OpenAiE2E, CompletionsGiveTheGrpcApisTokensTextAndLogprobs) {
  ServerProcess server(with_openai({}));
  auto client = stub(server);
  struct Case {
    float temperature;
    uint64_t seed;
  };
  for (const Case c : {Case{0.0f, 0}, Case{0.8f, 7}, Case{1.0f, 99}}) {
    SCOPED_TRACE("temperature " + std::to_string(c.temperature) + ", seed " + std::to_string(c.seed));
    v1::GenerateRequest g;
    g.set_text("The paged cache holds every key and value");
    g.mutable_sampling()->set_temperature(c.temperature);
    g.mutable_sampling()->set_seed(c.seed);
    g.mutable_stop()->set_max_tokens(12);
    g.set_top_logprobs(2);
    const testing::ReceivedCall call = testing::generate(*client, g);
    ASSERT_TRUE(call.status.ok()) << call.status.error_message();
    const testing::ReceivedChoice& want = call.choices.at(0);

    const Json body{{"prompt", g.text()},
                    {"temperature", c.temperature},
                    {"seed", c.seed},
                    {"max_tokens", 12},
                    {"logprobs", 2}};
    const HttpReply whole = post(server.openai_port(), "/v1/completions", body);
    ASSERT_EQ(whole.status, 200) << whole.body;
    const Json reply = Json::parse(whole.body);
    const Json& choice = reply["choices"][0];
    EXPECT_EQ(choice["text"], want.text);
    // The same model's logprobs, to within 1e-4 (they are about -5): the gRPC request left its
    // prompt's blocks in the prefix cache, so this one prefills fewer rows, and OpenBLAS's sgemm
    // rounds a row differently with another row count on some CPUs (its Cooperlake kernels, which
    // it picks on AMD Zen 4, do). The JSON itself is exact: the streamed reply, below, ran the same
    // way as this one and must equal it bit for bit.
    const std::vector<float> whole_logprobs = floats(choice["logprobs"]["token_logprobs"]);
    ASSERT_EQ(whole_logprobs.size(), want.logprobs.size());
    for (size_t i = 0; i < whole_logprobs.size(); ++i)
      EXPECT_NEAR(whole_logprobs[i], want.logprobs[i], 1e-4) << "token " << i;
    EXPECT_EQ(choice["logprobs"]["top_logprobs"].size(), want.tokens.size());
    EXPECT_EQ(choice["finish_reason"], want.finish == v1::FINISH_REASON_STOP ? "stop" : "length");
    EXPECT_EQ(reply["usage"]["completion_tokens"], want.tokens.size());

    // Streamed: the same text and logprobs, chunk by chunk, then [DONE].
    Json stream_body = body;
    stream_body["stream"] = true;
    const HttpReply streamed = post(server.openai_port(), "/v1/completions", stream_body);
    ASSERT_EQ(streamed.status, 200) << streamed.body;
    EXPECT_NE(streamed.headers.find("Content-Type")->second.find("text/event-stream"), std::string::npos);
    const std::vector<Json> chunks = events(streamed.body);
    ASSERT_GE(chunks.size(), 2u);
    EXPECT_EQ(chunks.back(), "[DONE]");
    std::string text;
    std::vector<float> logprobs;
    for (size_t i = 0; i + 1 < chunks.size(); ++i) {
      text += chunks[i]["choices"][0]["text"].get<std::string>();
      for (float x : floats(chunks[i]["choices"][0]["logprobs"]["token_logprobs"]))
        logprobs.push_back(x);
    }
    EXPECT_EQ(text, want.text);
    EXPECT_EQ(logprobs, whole_logprobs);
  }
  EXPECT_TRUE(wait_all_blocks_free(*client));
}

// vLLM's include_stop_str_in_output: the text ends with the stop string that ended it, which is
// otherwise cut. The stop is two ASCII characters from the middle of the greedy text.
TEST(OpenAiE2E, AnIncludedStopStringEndsTheText) {
  ServerProcess server(with_openai({}));
  const Json body{
      {"prompt", "The paged cache holds every key and value"}, {"max_tokens", 24}, {"temperature", 0}};
  const HttpReply free_run = post(server.openai_port(), "/v1/completions", body);
  ASSERT_EQ(free_run.status, 200) << free_run.body;
  const std::string text = Json::parse(free_run.body)["choices"][0]["text"];
  std::string stop;
  for (size_t i = text.size() / 2; i + 1 < text.size() && stop.empty(); ++i)
    if (std::isalnum(static_cast<unsigned char>(text[i])) &&
        std::isalnum(static_cast<unsigned char>(text[i + 1])))
      stop = text.substr(i, 2);
  if (stop.empty()) GTEST_SKIP() << "no two ASCII letters in a row in " << text;
  const size_t at = text.find(stop);
  for (const bool include : {false, true}) {
    Json stopped = body;
    stopped["stop"] = stop;
    stopped["include_stop_str_in_output"] = include;
    const HttpReply reply = post(server.openai_port(), "/v1/completions", stopped);
    ASSERT_EQ(reply.status, 200) << reply.body;
    const Json choice = Json::parse(reply.body)["choices"][0];
    EXPECT_EQ(choice["text"], text.substr(0, include ? at + stop.size() : at)) << "stop " << stop;
    EXPECT_EQ(choice["finish_reason"], "stop");
  }
}

TEST(OpenAiE2E, ChatCompletionsRunTheSameConversationAsGrpc) {
  ServerProcess server(with_openai({}));
  auto client = stub(server);
  v1::GenerateRequest g;
  v1::ChatMessage* system = g.mutable_chat()->add_messages();
  system->set_role("system");
  system->set_content("Be brief.");
  v1::ChatMessage* user = g.mutable_chat()->add_messages();
  user->set_role("user");
  user->set_content("Why is the sky blue?");
  g.mutable_stop()->set_max_tokens(10);
  const testing::ReceivedCall call = testing::generate(*client, g);  // greedy
  ASSERT_TRUE(call.status.ok()) << call.status.error_message();
  const testing::ReceivedChoice& want = call.choices.at(0);

  const Json body{{"messages", Json::array({{{"role", "system"}, {"content", "Be brief."}},
                                            {{"role", "user"}, {"content", "Why is the sky blue?"}}})},
                  {"temperature", 0},
                  {"max_completion_tokens", 10}};
  const HttpReply whole = post(server.openai_port(), "/v1/chat/completions", body);
  ASSERT_EQ(whole.status, 200) << whole.body;
  const Json reply = Json::parse(whole.body);
  EXPECT_EQ(reply["object"], "chat.completion");
  EXPECT_EQ(reply["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(reply["choices"][0]["message"]["content"], want.text);
  EXPECT_EQ(reply["usage"]["completion_tokens"], want.tokens.size());
}

TEST(OpenAiE2E, SeveralPromptsInOneCompletionRequestAreEachTheirOwnRequest) {
  ServerProcess server(with_openai({}));
  const Json prompts = Json::parse(R"(["The paged cache", "Every key and value", [5, 9, 13, 21]])");
  // Each prompt alone: the reference (greedy, so both choices of a prompt agree).
  std::vector<std::string> alone;
  int prompt_tokens = 0;
  for (const Json& prompt : prompts) {
    const HttpReply one = post(server.openai_port(), "/v1/completions",
                               Json{{"prompt", prompt}, {"max_tokens", 6}, {"temperature", 0}});
    ASSERT_EQ(one.status, 200) << one.body;
    alone.push_back(Json::parse(one.body)["choices"][0]["text"]);
    prompt_tokens += Json::parse(one.body)["usage"]["prompt_tokens"].get<int>();
  }
  ASSERT_NE(alone[0], alone[1]);  // else a choice given the wrong prompt could pass unseen
  ASSERT_NE(alone[1], alone[2]);
  Json body{{"prompt", prompts}, {"max_tokens", 6}, {"temperature", 0}, {"n", 2}};
  const HttpReply whole = post(server.openai_port(), "/v1/completions", body);
  ASSERT_EQ(whole.status, 200) << whole.body;
  const Json reply = Json::parse(whole.body);
  ASSERT_EQ(reply["choices"].size(), 6u);
  for (size_t i = 0; i < 6; ++i) {
    EXPECT_EQ(reply["choices"][i]["index"], i);
    EXPECT_EQ(reply["choices"][i]["text"], alone[i / 2]) << "choice " << i << " is prompt " << i / 2 << "'s";
  }
  EXPECT_EQ(reply["usage"]["prompt_tokens"], prompt_tokens);
  EXPECT_EQ(reply["usage"]["completion_tokens"], 6 * 6);

  // Streamed: each choice's chunks join to the same text.
  body["stream"] = true;
  const HttpReply streamed = post(server.openai_port(), "/v1/completions", body);
  ASSERT_EQ(streamed.status, 200) << streamed.body;
  std::vector<std::string> texts(6);
  for (const Json& chunk : events(streamed.body))
    if (chunk != "[DONE]")
      for (const Json& choice : chunk["choices"])
        texts.at(choice["index"].get<size_t>()) += choice["text"].get<std::string>();
  for (size_t i = 0; i < 6; ++i)
    EXPECT_EQ(texts[i], alone[i / 2]) << "streamed choice " << i;

  // Each further prompt's request id is the client's plus "-1", "-2", ...: one that would then pass
  // the 256-byte bound is refused up front, naming the header.
  body["stream"] = false;
  const HttpReply long_id =
      post(server.openai_port(), "/v1/completions", body, {{"X-Request-Id", std::string(255, 'r')}});
  EXPECT_EQ(long_id.status, 400);
  EXPECT_NE(long_id.body.find("X-Request-Id header is 255 bytes"), std::string::npos) << long_id.body;
  EXPECT_EQ(
      post(server.openai_port(), "/v1/completions", body, {{"X-Request-Id", std::string(254, 'r')}}).status,
      200);
}

// Streamed, several prompts' chunks go out as their tokens come, whichever prompt they are from:
// the second prompt's tokens are not held back until the first prompt ends. 10 ms steps give each
// token a message of its own; of the second prompt's 20 tokens, 5 chunks before the first prompt's
// last leaves room for a loaded machine merging some (prompt after prompt, it was 0). The first
// chunk is the first prompt's, and every chunk carries the reply's one id.
TEST(OpenAiE2E, SeveralStreamedPromptsInterleaveTheirChunks) {
  ServerProcess server(with_openai({"--debug-step-delay-ms", "10"}));
  const Json body{{"prompt", Json::parse(R"(["The paged cache", [5, 9, 13, 21]])")},
                  {"max_tokens", 20},
                  {"ignore_eos", true},
                  {"logprobs", 0},
                  {"stream", true}};
  const HttpReply streamed =
      post(server.openai_port(), "/v1/completions", body, {{"X-Request-Id", "interleaved"}});
  ASSERT_EQ(streamed.status, 200) << streamed.body;
  const std::vector<Json> chunks = events(streamed.body);
  ASSERT_FALSE(chunks.empty());
  EXPECT_EQ(chunks.back(), "[DONE]");
  EXPECT_EQ(chunks.front()["choices"][0]["index"], 0);
  std::vector<int> tokens(2, 0);
  int second_before_first_ended = 0;
  bool first_ended = false;
  for (const Json& chunk : chunks) {
    if (chunk == "[DONE]") continue;
    EXPECT_EQ(chunk["id"], "cmpl-interleaved");
    for (const Json& choice : chunk["choices"]) {
      const size_t index = choice["index"].get<size_t>();
      tokens.at(index) += static_cast<int>(choice["logprobs"]["tokens"].size());
      if (index == 1 && !first_ended) ++second_before_first_ended;
      if (index == 0 && !choice["finish_reason"].is_null()) first_ended = true;
    }
  }
  EXPECT_EQ(tokens, std::vector<int>({20, 20}));
  EXPECT_GE(second_before_first_ended, 5) << streamed.body;
}

// lm-evaluation-harness's loglikelihood request (token-id prompts, echo, logprobs 1, max_tokens 1):
// the logprobs echoed for a continuation are those the server reported when it generated that
// continuation itself over gRPC, and a greedy continuation reads as greedy (each token its
// position's best). Generation computes them a token per step, scoring in one prefill pass: the same
// float32 arithmetic but for the order of the matrix products' sums, so they agree to 1e-3 (logprobs
// of magnitude ~1-10 in float32: rounding differences are ~1e-6).
TEST(OpenAiE2E, EchoedPromptLogprobsAreTheGeneratedTokensOwn) {
  constexpr float kTolerance = 1e-3f;
  ServerProcess server(with_openai({}));
  auto client = stub(server);
  const std::vector<uint32_t> prompt = {5, 9, 13, 21, 34, 55};
  v1::GenerateRequest g;
  for (uint32_t id : prompt)
    g.mutable_token_ids()->add_ids(id);
  g.mutable_stop()->set_max_tokens(6);
  g.mutable_stop()->set_ignore_eos(true);
  const testing::ReceivedCall call = testing::generate(*client, g);  // greedy
  ASSERT_TRUE(call.status.ok()) << call.status.error_message();
  const testing::ReceivedChoice& want = call.choices.at(0);
  ASSERT_EQ(want.tokens.size(), 6u);

  // Prompt 0: the prompt and five of the six tokens; prompt 1: the prompt alone.
  Json scored = prompt;
  for (size_t j = 0; j < 5; ++j)
    scored.push_back(want.tokens[j]);
  const Json body{{"prompt", Json::array({scored, prompt})},
                  {"echo", true},
                  {"logprobs", 1},
                  {"max_tokens", 1},
                  {"temperature", 0},
                  {"prompt_logprobs", 0}};
  const HttpReply whole = post(server.openai_port(), "/v1/completions", body);
  ASSERT_EQ(whole.status, 200) << whole.body;
  const Json reply = Json::parse(whole.body);
  const Json& lp = reply["choices"][0]["logprobs"];
  const size_t n = prompt.size();
  ASSERT_EQ(lp["token_logprobs"].size(), n + 6) << "the echoed prompt and the generated token";
  EXPECT_EQ(lp["token_logprobs"][0], nullptr);
  EXPECT_EQ(lp["top_logprobs"][0], nullptr);
  for (size_t j = 0; j < 6; ++j) {
    SCOPED_TRACE("continuation token " + std::to_string(j));
    const float got = lp["token_logprobs"][n + j].get<float>();
    EXPECT_NEAR(got, want.logprobs[j], kTolerance);
    float best = -INFINITY;
    for (const auto& [token, logprob] : lp["top_logprobs"][n + j].items())
      best = std::max(best, logprob.get<float>());
    EXPECT_EQ(best, got) << "a greedy token is its position's likeliest";
  }
  // vLLM's prompt_logprobs says the same, by token id.
  const Json& vllm = reply["choices"][0]["prompt_logprobs"];
  ASSERT_EQ(vllm.size(), n + 5);
  EXPECT_EQ(vllm[0], nullptr);
  for (size_t j = 0; j < 5; ++j)
    EXPECT_NEAR(vllm[n + j][std::to_string(want.tokens[j])]["logprob"].get<float>(), want.logprobs[j],
                kTolerance);
  // Prompt 1 is scored on its own; its generated token is the first of the continuation.
  const Json& alone = reply["choices"][1]["logprobs"];
  ASSERT_EQ(alone["token_logprobs"].size(), n + 1);
  EXPECT_NEAR(alone["token_logprobs"][n].get<float>(), want.logprobs[0], kTolerance);
  for (size_t i = 1; i < n; ++i)
    EXPECT_NEAR(alone["token_logprobs"][i].get<float>(), lp["token_logprobs"][i].get<float>(), kTolerance)
        << "the same prompt position " << i;

  // max_tokens 0: the prompt alone, with the same scores.
  Json prompt_only = body;
  prompt_only["max_tokens"] = 0;
  prompt_only["prompt"] = scored;
  const HttpReply only = post(server.openai_port(), "/v1/completions", prompt_only);
  ASSERT_EQ(only.status, 200) << only.body;
  const Json only_reply = Json::parse(only.body);
  const Json& only_lp = only_reply["choices"][0]["logprobs"]["token_logprobs"];
  ASSERT_EQ(only_lp.size(), n + 5);
  for (size_t j = 0; j < 5; ++j)
    EXPECT_NEAR(only_lp[n + j].get<float>(), want.logprobs[j], kTolerance);
  EXPECT_EQ(only_reply["usage"]["completion_tokens"], 0);
  EXPECT_EQ(only_reply["choices"][0]["finish_reason"], "length");
  EXPECT_TRUE(wait_all_blocks_free(*client));
}

TEST(OpenAiE2E, ARefusedPromptRefusesTheRequestAndCancelsTheOthersAtOnce) {
  // 100 ms steps: the good prompt's 1000 tokens would run for 100 s, past the client's 60 s
  // timeout had the refusal waited for them; cancelled, it frees its blocks at the next step. The
  // refused prompt comes last, after the good one has started.
  ServerProcess server(with_openai({"--debug-step-delay-ms", "100"}));
  for (const bool stream : {false, true}) {
    SCOPED_TRACE(stream ? "streamed" : "whole");
    const HttpReply refused = post(
        server.openai_port(), "/v1/completions",
        Json{{"prompt", Json::parse(R"(["fine", [5, 999999]])")}, {"max_tokens", 1000}, {"stream", stream}});
    EXPECT_EQ(refused.status, 400) << refused.body;
    EXPECT_NE(refused.body.find("999999"), std::string::npos) << refused.body;
    EXPECT_TRUE(wait_all_blocks_free(*stub(server))) << "the good prompt ran on";
  }
}

// /v1/embeddings is the Embed RPC (the reference: the same server over gRPC, itself checked against
// the float64 reference in embed_e2e_test.cc): one string, a list of strings and token ids, in
// OpenAI's reply shape, as floats or as base64 of little-endian float32; bad input is a 400. The
// second call finds the prompts in the prefix cache and computes fewer rows at once, which
// changes float32 summation order: values agree to 1e-5 (they are of order 0.1), not bitwise.
void expect_close(const std::vector<float>& got, const google::protobuf::RepeatedField<float>& want) {
  ASSERT_EQ(got.size(), static_cast<size_t>(want.size()));
  for (size_t i = 0; i < got.size(); ++i)
    EXPECT_NEAR(got[i], want[static_cast<int>(i)], 1e-5) << "dimension " << i;
}

TEST(OpenAiE2E, EmbeddingsAreTheEmbedRpcsAsFloatsOrBase64) {
  ServerProcess server(with_openai({}));
  auto client = stub(server);
  v1::EmbedRequest request;
  request.add_inputs()->set_text("The paged cache holds every key");
  request.add_inputs()->mutable_token_ids()->add_ids(5);
  request.mutable_inputs(1)->mutable_token_ids()->add_ids(17);
  request.set_dimensions(32);
  grpc::ClientContext context;
  v1::EmbedResponse want;
  ASSERT_TRUE(client->Embed(&context, request, &want).ok());

  const Json input = Json::array({"The paged cache holds every key", Json::array({5, 17})});
  const HttpReply reply =
      post(server.openai_port(), "/v1/embeddings", Json{{"input", input}, {"dimensions", 32}});
  ASSERT_EQ(reply.status, 200) << reply.body;
  const Json got = Json::parse(reply.body);
  EXPECT_EQ(got["object"], "list");
  ASSERT_EQ(got["data"].size(), 2u);
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(got["data"][i]["object"], "embedding");
    EXPECT_EQ(got["data"][i]["index"], i);
    expect_close(floats(got["data"][i]["embedding"]), want.embeddings(i).values());
  }
  EXPECT_EQ(got["usage"]["prompt_tokens"], want.usage().prompt_tokens());
  EXPECT_EQ(got["usage"]["total_tokens"], want.usage().prompt_tokens());

  const HttpReply one = post(
      server.openai_port(), "/v1/embeddings",
      Json{{"input", "The paged cache holds every key"}, {"dimensions", 32}, {"encoding_format", "base64"}});
  ASSERT_EQ(one.status, 200) << one.body;
  const Json encoded = Json::parse(one.body)["data"];
  ASSERT_EQ(encoded.size(), 1u);
  std::string bytes;  // decoded with OpenSSL, not the server's encoder
  const std::string text = encoded[0]["embedding"].get<std::string>();
  bytes.resize(text.size());
  const int n =
      EVP_DecodeBlock(reinterpret_cast<unsigned char*>(bytes.data()),
                      reinterpret_cast<const unsigned char*>(text.data()), static_cast<int>(text.size()));
  ASSERT_EQ(n, static_cast<int>(32 * sizeof(float) + 1));  // 128 bytes pad to 129 in base64's blocks
  std::vector<float> decoded(32);
  std::memcpy(decoded.data(), bytes.data(), 32 * sizeof(float));
  expect_close(decoded, want.embeddings(0).values());

  EXPECT_EQ(post(server.openai_port(), "/v1/embeddings", Json{{"input", ""}}).status, 400);
  EXPECT_EQ(post(server.openai_port(), "/v1/embeddings", Json{{"prompt", "x"}}).status, 400);
  EXPECT_EQ(post(server.openai_port(), "/v1/embeddings", Json{{"input", "x"}, {"dimensions", 100000}}).status,
            400);
  EXPECT_EQ(
      post(server.openai_port(), "/v1/embeddings", Json{{"input", "x"}, {"encoding_format", "int8"}}).status,
      400);
  EXPECT_EQ(post(server.openai_port(), "/v1/embeddings", Json{{"input", "x"}, {"model", "other"}}).status,
            404);
  EXPECT_TRUE(wait_all_blocks_free(*client));
}

TEST(OpenAiE2E, TokenizeAndDetokenizeAreTheGrpcRpcs) {
  ServerProcess server(with_openai({}));
  auto client = stub(server);
  const std::string text = "The paged cache holds every key";
  // The gRPC Tokenize RPC is the reference.
  grpc::ClientContext context;
  v1::TokenizeRequest request;
  request.set_text(text);
  request.set_add_bos(true);
  v1::TokenizeResponse want;
  ASSERT_TRUE(client->Tokenize(&context, request, &want).ok());
  const std::vector<uint32_t> want_ids(want.token_ids().begin(), want.token_ids().end());

  const HttpReply tokens =
      post(server.openai_port(), "/tokenize", Json{{"prompt", text}, {"return_token_strs", true}});
  ASSERT_EQ(tokens.status, 200) << tokens.body;
  const Json reply = Json::parse(tokens.body);
  EXPECT_EQ(reply["tokens"].get<std::vector<uint32_t>>(), want_ids);
  EXPECT_EQ(reply["count"], want_ids.size());
  EXPECT_EQ(reply["max_model_len"], 1024);
  ASSERT_EQ(reply["token_strs"].size(), want_ids.size());
  EXPECT_EQ(reply["token_strs"][0], "<s>");  // BOS first (add_special_tokens defaults to true)

  // Back to the text: the prompt's tokens, BOS dropped as a control token.
  const HttpReply back = post(server.openai_port(), "/detokenize", Json{{"tokens", reply["tokens"]}});
  ASSERT_EQ(back.status, 200) << back.body;
  EXPECT_EQ(Json::parse(back.body)["prompt"], text);
  EXPECT_EQ(post(server.openai_port(), "/detokenize", Json{{"tokens", {5, 99999}}}).status, 400);

  // A conversation counts the prompt the chat endpoint runs.
  const Json messages = Json::parse(R"([{"role": "user", "content": "How long is a block?"}])");
  const HttpReply counted = post(server.openai_port(), "/tokenize", Json{{"messages", messages}});
  ASSERT_EQ(counted.status, 200) << counted.body;
  const HttpReply answered =
      post(server.openai_port(), "/v1/chat/completions", Json{{"messages", messages}, {"max_tokens", 1}});
  ASSERT_EQ(answered.status, 200) << answered.body;
  EXPECT_EQ(Json::parse(counted.body)["count"], Json::parse(answered.body)["usage"]["prompt_tokens"]);
  EXPECT_TRUE(Json::parse(counted.body)["token_strs"].is_null());
}

TEST(OpenAiE2E, AClientThatHangsUpMidStreamLosesItsRequestAndItsBlocks) {
  ServerProcess server(with_openai({"--debug-step-delay-ms", "20"}));
  auto client = stub(server);
  const Json body{{"prompt", "A long story begins"}, {"max_tokens", 400}, {"stream", true}};
  int chunks_seen = 0;
  const HttpReply reply =
      post(server.openai_port(), "/v1/completions", body, {}, [&](const std::string& so_far) {
        chunks_seen = static_cast<int>(events(so_far).size());
        return chunks_seen < 3;  // hang up after three chunks
      });
  EXPECT_GE(chunks_seen, 3);
  // 400 tokens at 20 ms a step would take 8 s: the request must end long before, aborted.
  EXPECT_TRUE(wait_all_blocks_free(*client, 5s)) << "the request of a client that hung up kept running";
  EXPECT_EQ(status(*client).requests_served(), 1u);
}

// Posts `body` to /v1/completions from another thread and hangs up once the server's status
// satisfies `ready`. What comes back is nothing, or the error the server may still write to a
// half-shut socket; never a 200.
template <typename Ready>
void hang_up_when(int port, v1::Generation::Stub& stub, const Json& body, Ready ready,
                  const std::string& path = "/v1/completions") {
  httplib::Client http("127.0.0.1", port);
  http.set_read_timeout(60, 0);
  std::thread waiting([&] {
    const auto reply = http.Post(path, body.dump(), "application/json");
    EXPECT_TRUE(!reply || reply->status != 200) << "the reply began before the hang-up";
  });
  EXPECT_TRUE(ready(wait_for_status(stub, ready))) << "the request never got where it should hang up";
  http.stop();  // shuts the connection down mid-request
  waiting.join();
}

// An embeddings client that hangs up cancels its call: the inputs not computed yet are aborted
// (100 inputs two at a time at 50 ms a step would take 2.5 s), and no block stays taken.
TEST(OpenAiE2E, AnEmbeddingsClientThatHangsUpLosesItsInputs) {
  ServerProcess server(with_openai({"--debug-step-delay-ms", "50", "--max-num-seqs", "2"}));
  auto client = stub(server);
  ASSERT_EQ(post(server.openai_port(), "/v1/embeddings", Json{{"input", "warm"}}).status, 200);
  Json inputs = Json::array();
  for (int i = 0; i < 100; ++i)
    inputs.push_back("input " + std::to_string(i) + " of a client that will not wait");
  hang_up_when(
      server.openai_port(), *client, Json{{"input", inputs}},
      [](const v1::ServerStatus& s) { return s.num_waiting() > 50; }, "/v1/embeddings");
  EXPECT_TRUE(wait_all_blocks_free(*client, 10s));
  httplib::Client http("127.0.0.1", server.metrics_port());
  const auto metrics = http.Get("/metrics");
  ASSERT_TRUE(metrics);
  const std::string aborted = "kvserve_requests_total{finish_reason=\"aborted\"} ";
  const size_t at = metrics->body.find(aborted);
  ASSERT_NE(at, std::string::npos) << metrics->body;
  EXPECT_GE(std::stod(metrics->body.substr(at + aborted.size())), 50);
}

TEST(OpenAiE2E, AClientThatHangsUpBeforeItsWholeReplyLosesItsRequestAndItsBlocks) {
  ServerProcess server(with_openai({"--debug-step-delay-ms", "20"}));
  auto client = stub(server);
  // A first request on this thread (httplib's static regexes; see MoreConcurrentStreams below).
  ASSERT_EQ(post(server.openai_port(), "/v1/completions", Json{{"prompt", "warm"}, {"max_tokens", 1}}).status,
            200);
  hang_up_when(server.openai_port(), *client,
               Json{{"prompt", "A long story begins"}, {"max_tokens", 400}, {"ignore_eos", true}},
               [](const v1::ServerStatus& s) { return s.num_running() == 1; });
  // 400 tokens at 20 ms a step would take 8 s: the request must end long before, aborted.
  EXPECT_TRUE(wait_all_blocks_free(*client, 5s)) << "the request of a client that hung up kept running";
  EXPECT_EQ(status(*client).requests_served(), 2u);
  EXPECT_EQ(
      post(server.openai_port(), "/v1/completions", Json{{"prompt", "still here"}, {"max_tokens", 2}}).status,
      200);
}

TEST(OpenAiE2E, AQueuedStreamingClientThatHangsUpLeavesTheQueue) {
  ServerProcess server(with_openai({"--max-num-seqs", "1", "--debug-step-delay-ms", "10"}));
  auto client = stub(server);
  ASSERT_EQ(post(server.openai_port(), "/v1/completions", Json{{"prompt", "warm"}, {"max_tokens", 1}}).status,
            200);
  // One long request holds the only seat.
  grpc::ClientContext running_ctx;
  v1::GenerateRequest longer;
  longer.set_text("hold the engine");
  longer.mutable_stop()->set_max_tokens(1000);
  longer.mutable_stop()->set_ignore_eos(true);
  auto running = client->Generate(&running_ctx, longer);
  v1::GenerateResponse first;
  ASSERT_TRUE(running->Read(&first));  // it holds the seat
  hang_up_when(server.openai_port(), *client,
               Json{{"prompt", "wait for me"}, {"max_tokens", 8}, {"stream", true}},
               [](const v1::ServerStatus& s) { return s.num_waiting() == 1; });
  // It leaves the queue while the long request (10 s) still runs.
  const v1::ServerStatus after =
      wait_for_status(*client, [](const v1::ServerStatus& s) { return s.num_waiting() == 0; });
  EXPECT_EQ(after.num_waiting(), 0u) << "a client that hung up stayed in the queue";
  EXPECT_EQ(after.num_running(), 1u);
  running_ctx.TryCancel();
  v1::GenerateResponse rest;
  while (running->Read(&rest)) {
  }
  EXPECT_EQ(running->Finish().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_TRUE(wait_all_blocks_free(*client));
}

TEST(OpenAiE2E, AFullQueueIs429WithRetryAfterAndTheServerGoesOn) {
  ServerProcess server(
      with_openai({"--max-num-seqs", "1", "--max-queue", "1", "--debug-step-delay-ms", "10"}));
  auto client = stub(server);
  // One request runs and one waits: the queue is full.
  grpc::ClientContext running_ctx, waiting_ctx;
  v1::GenerateRequest longer;
  longer.set_text("hold the engine");
  longer.mutable_stop()->set_max_tokens(500);
  longer.mutable_stop()->set_ignore_eos(true);
  // One at a time: two arriving together would find the queue holding the first, and one be refused.
  auto running = client->Generate(&running_ctx, longer);
  wait_for_status(*client, [](const v1::ServerStatus& s) { return s.num_running() >= 1; });
  auto waiting = client->Generate(&waiting_ctx, longer);
  wait_for_status(*client, [](const v1::ServerStatus& s) { return s.num_waiting() >= 1; });
  ASSERT_EQ(status(*client).num_running(), 1u);
  ASSERT_EQ(status(*client).num_waiting(), 1u);

  const HttpReply refused = post(server.openai_port(), "/v1/completions", Json{{"prompt", "one more"}});
  EXPECT_EQ(refused.status, 429) << refused.body;
  ASSERT_EQ(refused.headers.count("Retry-After"), 1u);
  EXPECT_EQ(refused.headers.find("Retry-After")->second, "1");
  const Json error = Json::parse(refused.body)["error"];
  EXPECT_EQ(error["code"], "resource_exhausted");
  EXPECT_EQ(error["type"], "rate_limit_error");
  EXPECT_FALSE(error["message"].get<std::string>().empty());

  running_ctx.TryCancel();
  waiting_ctx.TryCancel();
  v1::GenerateResponse rest;
  while (running->Read(&rest)) {
  }
  while (waiting->Read(&rest)) {
  }
  running->Finish();
  waiting->Finish();
  ASSERT_TRUE(wait_all_blocks_free(*client));  // the cancelled requests have left the queue
  const HttpReply served =
      post(server.openai_port(), "/v1/completions", Json{{"prompt", "now there is room"}, {"max_tokens", 3}});
  EXPECT_EQ(served.status, 200) << served.body;
}

TEST(OpenAiE2E, DrainingRefusesNewRequestsWith503AndEndsStreamsWithAnError) {
  // 500 tokens at 20 ms a step outlast the 3 s drain.
  ServerProcess server(with_openai({"--debug-step-delay-ms", "20", "--drain-timeout", "3"}));
  const int port = server.openai_port();
  std::atomic<bool> started{false};
  HttpReply streamed;
  std::thread stream([&] {
    streamed =
        post(port, "/v1/completions",
             Json{{"prompt", "until the end"}, {"max_tokens", 500}, {"ignore_eos", true}, {"stream", true}},
             {}, [&](const std::string&) {
               started = true;
               return true;
             });
  });
  while (!started)
    std::this_thread::sleep_for(5ms);
  server.signal(SIGTERM);
  // /health turns 503 when the drain begins; from then on new requests are refused.
  httplib::Client health("127.0.0.1", port);
  int health_status = 0;
  for (int i = 0; i < 1000 && health_status != 503; ++i) {
    auto probe = health.Get("/health");
    ASSERT_TRUE(probe);
    health_status = probe->status;
    if (health_status != 503) std::this_thread::sleep_for(10ms);
  }
  ASSERT_EQ(health_status, 503);
  const HttpReply refused = post(port, "/v1/completions", Json{{"prompt", "too late"}});
  EXPECT_EQ(refused.status, 503) << refused.body;
  EXPECT_EQ(Json::parse(refused.body)["error"]["code"], "unavailable");

  stream.join();
  // The stream's request outlived the drain: it ends with an error event, not a finish. (Its last
  // chunk says "abort" when that message got out before the server closed the call.)
  const std::vector<Json> chunks = events(streamed.body);
  ASSERT_GE(chunks.size(), 3u) << streamed.body;
  for (size_t i = 0; i + 2 < chunks.size(); ++i) {
    const Json& finish = chunks[i]["choices"][0]["finish_reason"];
    EXPECT_TRUE(finish.is_null() || finish == "abort") << finish;
  }
  EXPECT_EQ(chunks[chunks.size() - 2]["error"]["code"], "unavailable");
  EXPECT_EQ(chunks.back(), "[DONE]");
  EXPECT_EQ(server.wait_exit(30s), 0);
}

TEST(OpenAiE2E, HttpLevelRefusalsAreOpenAiErrors) {
  ServerProcess server(with_openai({"--max-request-bytes", "2000"}));
  const HttpReply big =
      post(server.openai_port(), "/v1/completions", Json{{"prompt", std::string(5000, 'x')}});
  EXPECT_EQ(big.status, 413);
  EXPECT_NE(Json::parse(big.body)["error"]["message"].get<std::string>().find("--max-request-bytes"),
            std::string::npos);
  const HttpReply route = post(server.openai_port(), "/v1/rerank", Json{{"query", "x"}});
  EXPECT_EQ(route.status, 404);
  EXPECT_NE(Json::parse(route.body)["error"]["message"].get<std::string>().find("POST /v1/embeddings"),
            std::string::npos);
  const HttpReply bad = post(server.openai_port(), "/v1/chat/completions", Json("{\"messages\": ["));
  EXPECT_EQ(bad.status, 400);
  EXPECT_NE(Json::parse(bad.body)["error"]["message"].get<std::string>().find("not valid JSON"),
            std::string::npos);
  // A value only the gRPC service checks keeps its message.
  const HttpReply temperature =
      post(server.openai_port(), "/v1/completions", Json{{"prompt", "x"}, {"temperature", -1}});
  EXPECT_EQ(temperature.status, 400);
  EXPECT_NE(Json::parse(temperature.body)["error"]["message"].get<std::string>().find("temperature"),
            std::string::npos);
  // Headers that would be gRPC metadata are checked first: gRPC aborts the process on bytes
  // outside printable ASCII. An Authorization header that cannot be a token is left off (this
  // server wants none).
  const Json small{{"prompt", "x"}, {"max_tokens", 2}};
  const HttpReply auth =
      post(server.openai_port(), "/v1/completions", small, {{"Authorization", "Bearer \xc3\xa9\x01"}});
  EXPECT_EQ(auth.status, 200) << auth.body;
  const HttpReply id = post(server.openai_port(), "/v1/completions", small, {{"X-Request-Id", "\xff"}});
  EXPECT_EQ(id.status, 400) << id.body;
  // Bodies without a length, or compressed, are refused before they are read: httplib's size
  // limit could not bound them. A chunked body that never ends must be cut off at its headers: the
  // client gets the 411, or, when the server's close overtakes its upload, a failed write, but
  // never gets to send more than the sockets' buffers hold.
  httplib::Client client("127.0.0.1", server.openai_port());
  client.set_write_timeout(5, 0);
  size_t sent = 0;
  auto chunked = client.Post(
      "/v1/completions",
      [&sent](size_t, httplib::DataSink& sink) {
        const std::string piece(64 * 1024, ' ');
        if (!sink.write(piece.data(), piece.size())) return false;
        sent += piece.size();
        return sent < (size_t{1} << 30);
      },
      "application/json");
  EXPECT_LT(sent, size_t{64} << 20) << "the server read on into a body with no length";
  if (chunked) {
    EXPECT_EQ(chunked->status, 411);
    EXPECT_NE(Json::parse(chunked->body)["error"]["message"].get<std::string>().find("Content-Length"),
              std::string::npos);
  }
  // A compressed body is refused by its header (sent with no body, so nothing is left unread).
  httplib::Client gzip_client("127.0.0.1", server.openai_port());
  auto gzipped = gzip_client.Post("/v1/completions", {{"Content-Encoding", "gzip"}}, "", "application/json");
  ASSERT_TRUE(gzipped);
  EXPECT_EQ(gzipped->status, 415);
  const HttpReply ok =
      post(server.openai_port(), "/v1/completions", Json{{"prompt", "still serving"}, {"max_tokens", 2}});
  EXPECT_EQ(ok.status, 200) << ok.body;
}

TEST(OpenAiE2E, TheBearerTokenIsRequiredAndHealthStaysOpen) {
  char dir_template[] = "/tmp/kvserve-openai-XXXXXX";
  ASSERT_NE(mkdtemp(dir_template), nullptr);
  const std::string token_file = std::string(dir_template) + "/token";
  std::ofstream(token_file) << "s3cret\n";
  ServerProcess server(with_openai({"--auth-token-file", token_file}));
  const Json body{{"prompt", "x"}, {"max_tokens", 2}};
  const HttpReply missing = post(server.openai_port(), "/v1/completions", body);
  EXPECT_EQ(missing.status, 401) << missing.body;
  EXPECT_EQ(Json::parse(missing.body)["error"]["code"], "unauthenticated");
  // A header that cannot be a token is as good as none.
  EXPECT_EQ(
      post(server.openai_port(), "/v1/completions", body, {{"Authorization", "Bearer s3cret\x01"}}).status,
      401);
  EXPECT_EQ(post(server.openai_port(), "/v1/completions", body, {{"Authorization", "Bearer wrong"}}).status,
            401);
  EXPECT_EQ(post(server.openai_port(), "/v1/completions", body, {{"Authorization", "Bearer s3cret"}}).status,
            200);
  httplib::Client http("127.0.0.1", server.openai_port());
  auto models = http.Get("/v1/models");
  ASSERT_TRUE(models);
  EXPECT_EQ(models->status, 401);
  auto models_ok = http.Get("/v1/models", {{"Authorization", "Bearer s3cret"}});
  ASSERT_TRUE(models_ok);
  EXPECT_EQ(models_ok->status, 200);
  EXPECT_EQ(Json::parse(models_ok->body)["data"][0]["id"], kModel);
  // Stored responses are read, listed, deleted and continued with the token too, checked before
  // anything is looked up.
  const auto expect_401 = [](const httplib::Result& result) {
    ASSERT_TRUE(result);
    EXPECT_EQ(result->status, 401) << result->body;
  };
  expect_401(http.Get("/v1/responses/resp_x"));
  expect_401(http.Get("/v1/responses/resp_x/input_items"));
  expect_401(http.Delete("/v1/responses/resp_x"));
  expect_401(http.Post("/v1/responses/resp_x/cancel", "", "application/json"));
  EXPECT_EQ(
      post(server.openai_port(), "/v1/responses", Json{{"input", "x"}, {"previous_response_id", "resp_x"}},
           {{"Authorization", "Bearer wrong"}})
          .status,
      401);
  auto health = http.Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  std::filesystem::remove_all(dir_template);
}

TEST(OpenAiE2E, MoreConcurrentStreamsThanWorkerThreadsAllComplete) {
  ServerProcess server(with_openai({"--openai-threads", "4", "--served-model-name", "tiny"}));
  auto client = stub(server);
  constexpr int kStreams = 24;
  // One request first, on this thread: httplib's client builds function-local static regexes on
  // first use, inside its (uninstrumented) library, which ThreadSanitizer would otherwise report
  // as racing with the threads below.
  ASSERT_EQ(post(server.openai_port(), "/v1/completions",
                 Json{{"model", "tiny"}, {"prompt", "warm"}, {"max_tokens", 1}})
                .status,
            200);
  std::vector<HttpReply> replies(kStreams);
  std::vector<std::thread> threads;
  for (int i = 0; i < kStreams; ++i) {
    threads.emplace_back([&, i] {
      replies[i] = post(
          server.openai_port(), "/v1/chat/completions",
          Json{{"model", "tiny"},
               {"messages", Json::array({{{"role", "user"}, {"content", "story " + std::to_string(i)}}})},
               {"max_tokens", 16},
               {"seed", i},
               {"stream", true},
               {"stream_options", {{"include_usage", true}}}});
    });
  }
  for (auto& t : threads)
    t.join();
  for (int i = 0; i < kStreams; ++i) {
    SCOPED_TRACE("stream " + std::to_string(i));
    ASSERT_EQ(replies[i].status, 200) << replies[i].body;
    const std::vector<Json> chunks = events(replies[i].body);
    ASSERT_GE(chunks.size(), 3u);
    EXPECT_EQ(chunks.back(), "[DONE]");
    const Json& usage = chunks[chunks.size() - 2]["usage"];
    EXPECT_GT(usage["completion_tokens"].get<int>(), 0);
    EXPECT_EQ(chunks.front()["model"], "tiny");
    EXPECT_EQ(chunks.front()["choices"][0]["delta"]["role"], "assistant");
  }
  EXPECT_TRUE(wait_all_blocks_free(*client));
  EXPECT_EQ(status(*client).requests_served(), static_cast<uint64_t>(kStreams) + 1);
}

// Tool calling on the real server, with a hermes-style template (written for these tests): the
// tools reach the prompt, and a reply the model writes as a call comes back as tool_calls, whole
// and streamed alike. The tiny model's weights are random, so constraints make it write calls:
// a regex in the template's format for tool_choice "auto", and the server's own constraint for
// "required" and a named function.
const Json kWeatherTools = Json::parse(R"([
  {"type": "function", "function": {"name": "get_weather", "description": "Weather now",
   "parameters": {"type": "object", "properties": {"city": {"enum": ["Oslo", "Rome", "Lima"]},
                  "days": {"type": "integer"}}, "required": ["city", "days"]}}},
  {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object",
   "properties": {"zone": {"type": "string", "maxLength": 6}}, "required": ["zone"]}}}])");

// The chat reply's calls joined from its stream: (name, arguments) per call, and the finish reason.
struct StreamedCalls {
  std::vector<std::pair<std::string, std::string>> calls;
  std::string content;
  std::string finish_reason;
};
StreamedCalls join_stream(const std::string& body) {
  StreamedCalls out;
  for (const Json& chunk : events(body)) {
    if (chunk == "[DONE]" || chunk["choices"].empty()) continue;
    const Json& choice = chunk["choices"][0];
    const Json& delta = choice["delta"];
    if (delta.contains("content") && delta["content"].is_string())
      out.content += delta["content"].get<std::string>();
    for (const Json& call : delta.value("tool_calls", Json::array())) {
      const size_t index = call["index"];
      if (index == out.calls.size()) {
        EXPECT_EQ(call["id"].get<std::string>().rfind("call_", 0), 0u);
        out.calls.emplace_back(call["function"]["name"], "");
      }
      out.calls.at(index).second += call["function"]["arguments"].get<std::string>();
    }
    if (choice["finish_reason"].is_string()) out.finish_reason = choice["finish_reason"];
  }
  return out;
}

TEST(OpenAiE2E, ToolCallsComeBackAsToolCallsWholeAndStreamed) {
  ServerProcess server(with_openai(
      {"--chat-template", std::string(KVSERVE_TEST_DATA) + "/chat_templates/hermes_tools.jinja"}));
  const Json messages = Json::parse(R"([{"role": "user", "content": "Weather in Oslo for two days?"}])");
  auto chat = [&](Json body) {
    body["messages"] = messages;
    body["tools"] = kWeatherTools;
    body["max_tokens"] = 160;
    body["seed"] = 5;
    const HttpReply whole = post(server.openai_port(), "/v1/chat/completions", body);
    body["stream"] = true;
    const HttpReply streamed = post(server.openai_port(), "/v1/chat/completions", body);
    EXPECT_EQ(streamed.status, 200) << streamed.body;
    return std::make_pair(whole, join_stream(streamed.body));
  };
  // Whole and streamed replies are the same draws (same seed): the same calls.
  auto expect_same_calls = [](const Json& reply, const StreamedCalls& streamed) {
    const Json& message = reply["choices"][0]["message"];
    ASSERT_EQ(message["tool_calls"].size(), streamed.calls.size()) << reply.dump();
    for (size_t i = 0; i < streamed.calls.size(); ++i) {
      EXPECT_EQ(message["tool_calls"][i]["function"]["name"], streamed.calls[i].first);
      EXPECT_EQ(message["tool_calls"][i]["function"]["arguments"], streamed.calls[i].second);
    }
    EXPECT_EQ(reply["choices"][0]["finish_reason"], streamed.finish_reason);
  };

  // "auto": the model's reply in the template's format is read for calls.
  const auto [auto_whole, auto_streamed] = chat(Json{
      {"response_format",
       {{"type", "regex"},
        {"regex",
         R"re(Let me check\.\n<tool_call>\n\{"name": "get_weather", "arguments": \{"city": "(Oslo|Rome)", "days": [1-9]\}\}\n</tool_call>)re"}}}});
  ASSERT_EQ(auto_whole.status, 200) << auto_whole.body;
  const Json auto_reply = Json::parse(auto_whole.body);
  const Json& auto_message = auto_reply["choices"][0]["message"];
  EXPECT_EQ(auto_message["content"], "Let me check.");
  ASSERT_EQ(auto_message["tool_calls"].size(), 1u) << auto_whole.body;
  EXPECT_EQ(auto_message["tool_calls"][0]["type"], "function");
  EXPECT_EQ(auto_message["tool_calls"][0]["function"]["name"], "get_weather");
  const Json arguments =
      Json::parse(auto_message["tool_calls"][0]["function"]["arguments"].get<std::string>());
  EXPECT_TRUE(arguments["city"] == "Oslo" || arguments["city"] == "Rome") << arguments;
  EXPECT_EQ(auto_reply["choices"][0]["finish_reason"], "tool_calls");
  expect_same_calls(auto_reply, auto_streamed);
  EXPECT_EQ(auto_streamed.content, "Let me check.");

  // A named function: the reply is its arguments, an instance of its parameters' schema.
  const auto [named_whole, named_streamed] =
      chat(Json{{"tool_choice", {{"type", "function"}, {"function", {{"name", "get_weather"}}}}}});
  ASSERT_EQ(named_whole.status, 200) << named_whole.body;
  const Json named_reply = Json::parse(named_whole.body);
  const Json& named_call = named_reply["choices"][0]["message"]["tool_calls"][0];
  EXPECT_EQ(named_call["function"]["name"], "get_weather");
  const Json named_arguments = Json::parse(named_call["function"]["arguments"].get<std::string>());
  EXPECT_TRUE(named_arguments["city"].is_string() && named_arguments["days"].is_number_integer())
      << named_arguments;
  EXPECT_TRUE(named_reply["choices"][0]["message"]["content"].is_null());
  expect_same_calls(named_reply, named_streamed);

  // "required": a call of one of the offered functions, with that function's arguments. (One:
  // without parallel_tool_calls false the random model may go on adding calls to max_tokens.)
  const auto [required_whole, required_streamed] =
      chat(Json{{"tool_choice", "required"}, {"parallel_tool_calls", false}});
  ASSERT_EQ(required_whole.status, 200) << required_whole.body;
  const Json required_reply = Json::parse(required_whole.body);
  const Json& calls = required_reply["choices"][0]["message"]["tool_calls"];
  ASSERT_EQ(calls.size(), 1u) << required_whole.body;
  EXPECT_EQ(required_reply["choices"][0]["finish_reason"], "tool_calls");
  for (const Json& call : calls) {
    const Json args = Json::parse(call["function"]["arguments"].get<std::string>());
    if (call["function"]["name"] == "get_weather")
      EXPECT_TRUE(args.contains("city") && args.contains("days")) << args;
    else
      EXPECT_TRUE(call["function"]["name"] == "get_time" && args["zone"].is_string()) << call;
  }
  expect_same_calls(required_reply, required_streamed);

  // The tools are in the prompt, whatever the choice: "none" renders the same prompt as "auto",
  // and a request without tools a much shorter one.
  Json none{{"messages", messages}, {"tools", kWeatherTools}, {"tool_choice", "none"}, {"max_tokens", 1}};
  const HttpReply with_none = post(server.openai_port(), "/v1/chat/completions", none);
  ASSERT_EQ(with_none.status, 200) << with_none.body;
  const HttpReply without =
      post(server.openai_port(), "/v1/chat/completions", Json{{"messages", messages}, {"max_tokens", 1}});
  ASSERT_EQ(without.status, 200) << without.body;
  const int auto_prompt = Json::parse(auto_whole.body)["usage"]["prompt_tokens"];
  EXPECT_EQ(Json::parse(with_none.body)["usage"]["prompt_tokens"], auto_prompt);
  EXPECT_GT(auto_prompt, Json::parse(without.body)["usage"]["prompt_tokens"].get<int>() + 100);

  // The conversation goes on: the call (arguments as OpenAI's clients send them, JSON text) and
  // its result are rendered for the next turn.
  Json next{{"messages", messages}, {"tools", kWeatherTools}, {"max_tokens", 4}, {"temperature", 0}};
  next["messages"].push_back(auto_message);
  next["messages"].push_back(
      {{"role", "tool"}, {"tool_call_id", auto_message["tool_calls"][0]["id"]}, {"content", "sunny, 21 C"}});
  const HttpReply answer = post(server.openai_port(), "/v1/chat/completions", next);
  ASSERT_EQ(answer.status, 200) << answer.body;
  // The arguments' text was rendered as the object it stands for: the prompt is the one the same
  // call with an object gets, token for token.
  Json as_object = next;
  Json& sent_arguments = as_object["messages"][1]["tool_calls"][0]["function"]["arguments"];
  sent_arguments = Json::parse(sent_arguments.get<std::string>());
  const HttpReply object_answer = post(server.openai_port(), "/v1/chat/completions", as_object);
  ASSERT_EQ(object_answer.status, 200) << object_answer.body;
  EXPECT_EQ(Json::parse(answer.body)["usage"]["prompt_tokens"],
            Json::parse(object_answer.body)["usage"]["prompt_tokens"]);
  EXPECT_EQ(Json::parse(answer.body)["choices"][0]["message"],
            Json::parse(object_answer.body)["choices"][0]["message"]);
  EXPECT_TRUE(wait_all_blocks_free(*stub(server)));
}

// The Responses API on the same server: a named function's call comes back as a function_call
// item, whole and streamed alike (the same seed); and the prompts it renders, for the question and
// tools, then for the call and its output sent back as input items, are as long as the ones the
// chat endpoint renders for the same turns (a reply gives counts, not ids).
TEST(OpenAiE2E, TheResponsesApiReturnsFunctionCallItemsAndTakesTheirOutputs) {
  ServerProcess server(with_openai(
      {"--chat-template", std::string(KVSERVE_TEST_DATA) + "/chat_templates/hermes_tools.jinja"}));
  const std::string question = "Weather in Oslo for two days?";
  Json flat_tools = Json::array();  // Responses' function tools: the function's fields at the top
  for (const Json& tool : kWeatherTools) {
    Json flat = tool["function"];
    flat["type"] = "function";
    flat_tools.push_back(flat);
  }
  const Json chat_body{{"messages", {{{"role", "user"}, {"content", question}}}},
                       {"tools", kWeatherTools},
                       {"tool_choice", {{"type", "function"}, {"function", {{"name", "get_weather"}}}}},
                       {"max_tokens", 160},
                       {"seed", 5}};
  const HttpReply chat = post(server.openai_port(), "/v1/chat/completions", chat_body);
  ASSERT_EQ(chat.status, 200) << chat.body;

  Json body{{"input", question},
            {"tools", flat_tools},
            {"tool_choice", {{"type", "function"}, {"name", "get_weather"}}},
            {"max_output_tokens", 160},
            {"seed", 5}};
  const HttpReply whole = post(server.openai_port(), "/v1/responses", body);
  ASSERT_EQ(whole.status, 200) << whole.body;
  const Json response = Json::parse(whole.body);
  EXPECT_EQ(response["status"], "completed");
  ASSERT_EQ(response["output"].size(), 1u) << whole.body;
  const Json& call = response["output"][0];
  EXPECT_EQ(call["type"], "function_call");
  EXPECT_EQ(call["status"], "completed");
  EXPECT_EQ(call["name"], "get_weather");
  const Json parsed_arguments = Json::parse(call["arguments"].get<std::string>());
  EXPECT_TRUE(parsed_arguments["city"].is_string() && parsed_arguments["days"].is_number_integer()) << call;
  EXPECT_EQ(response["usage"]["input_tokens"], Json::parse(chat.body)["usage"]["prompt_tokens"]);
  EXPECT_EQ(call["call_id"].get<std::string>().rfind("call_", 0), 0u);
  EXPECT_EQ(call["id"].get<std::string>().rfind("fc_", 0), 0u);

  body["stream"] = true;
  const HttpReply streamed = post(server.openai_port(), "/v1/responses", body);
  ASSERT_EQ(streamed.status, 200) << streamed.body;
  std::string arguments, done_arguments, last_type;
  for (size_t at = 0; (at = streamed.body.find("data: ", at)) != std::string::npos;) {
    const size_t end = streamed.body.find("\n\n", at);
    ASSERT_NE(end, std::string::npos);
    const Json event = Json::parse(streamed.body.substr(at + 6, end - at - 6));
    last_type = event["type"];
    if (last_type == "response.function_call_arguments.delta") arguments += event["delta"].get<std::string>();
    if (last_type == "response.function_call_arguments.done") done_arguments = event["arguments"];
    at = end;
  }
  EXPECT_EQ(arguments, call["arguments"]);
  EXPECT_EQ(done_arguments, call["arguments"]);
  EXPECT_EQ(last_type, "response.completed");

  // The next turn: the call and its output as input items, against the chat turns they stand for.
  Json turn{{"input",
             {{{"role", "user"}, {"content", question}},
              {{"type", "function_call"},
               {"call_id", "call_1"},
               {"name", "get_weather"},
               {"arguments", call["arguments"]}},
              {{"type", "function_call_output"}, {"call_id", "call_1"}, {"output", "sunny, 21 C"}}}},
            {"tools", flat_tools},
            {"max_output_tokens", 2}};
  const HttpReply next = post(server.openai_port(), "/v1/responses", turn);
  ASSERT_EQ(next.status, 200) << next.body;
  Json chat_turn{{"messages",
                  {{{"role", "user"}, {"content", question}},
                   {{"role", "assistant"},
                    {"content", nullptr},
                    {"tool_calls",
                     {{{"id", "call_1"},
                       {"type", "function"},
                       {"function", {{"name", "get_weather"}, {"arguments", call["arguments"]}}}}}}},
                   {{"role", "tool"}, {"tool_call_id", "call_1"}, {"content", "sunny, 21 C"}}}},
                 {"tools", kWeatherTools},
                 {"max_tokens", 2}};
  const HttpReply chat_next = post(server.openai_port(), "/v1/chat/completions", chat_turn);
  ASSERT_EQ(chat_next.status, 200) << chat_next.body;
  EXPECT_EQ(Json::parse(next.body)["usage"]["input_tokens"],
            Json::parse(chat_next.body)["usage"]["prompt_tokens"]);
  EXPECT_TRUE(wait_all_blocks_free(*stub(server)));
}

// Responses are stored (the default): one is read back as it was returned, streamed or not; a turn
// that continues it by previous_response_id renders the same prompt as the whole conversation sent
// to the chat endpoint; its input items are listed a page at a time; another API key finds
// nothing; deleted, it is gone; store false stores nothing.
TEST(OpenAiE2E, AStoredResponseIsReadBackContinuedAndDeleted) {
  ServerProcess server(with_openai(
      {"--chat-template", std::string(KVSERVE_TEST_DATA) + "/chat_templates/hermes_tools.jinja"}));
  const std::string question = "Weather in Oslo for two days?";
  Json flat_tools = Json::array();
  for (const Json& tool : kWeatherTools) {
    Json flat = tool["function"];
    flat["type"] = "function";
    flat_tools.push_back(flat);
  }
  const HttpReply first = post(server.openai_port(), "/v1/responses",
                               Json{{"input", question},
                                    {"tools", flat_tools},
                                    {"tool_choice", {{"type", "function"}, {"name", "get_weather"}}},
                                    {"max_output_tokens", 160},
                                    {"seed", 5}});
  ASSERT_EQ(first.status, 200) << first.body;
  const Json response = Json::parse(first.body);
  EXPECT_EQ(response["store"], true);
  const std::string id = response["id"];
  EXPECT_EQ(id.size(), 5u + 32u) << id;  // random, not the request's id
  const Json call = response["output"][0];
  ASSERT_EQ(call["type"], "function_call") << first.body;

  httplib::Client client("127.0.0.1", server.openai_port());
  const auto read_back = client.Get("/v1/responses/" + id);
  ASSERT_TRUE(read_back);
  ASSERT_EQ(read_back->status, 200) << read_back->body;
  EXPECT_EQ(Json::parse(read_back->body), response);

  // The next turn sends only the call's output: the same prompt as the whole conversation.
  const HttpReply next = post(
      server.openai_port(), "/v1/responses",
      Json{{"previous_response_id", id},
           {"input",
            {{{"type", "function_call_output"}, {"call_id", call["call_id"]}, {"output", "sunny, 21 C"}}}},
           {"tools", flat_tools},
           {"max_output_tokens", 2}});
  ASSERT_EQ(next.status, 200) << next.body;
  const Json continued = Json::parse(next.body);
  EXPECT_EQ(continued["previous_response_id"], id);
  const HttpReply chat =
      post(server.openai_port(), "/v1/chat/completions",
           Json{{"messages",
                 {{{"role", "user"}, {"content", question}},
                  {{"role", "assistant"},
                   {"content", nullptr},
                   {"tool_calls",
                    {{{"id", call["call_id"]},
                      {"type", "function"},
                      {"function", {{"name", "get_weather"}, {"arguments", call["arguments"]}}}}}}},
                  {{"role", "tool"}, {"tool_call_id", call["call_id"]}, {"content", "sunny, 21 C"}}}},
                {"tools", kWeatherTools},
                {"max_tokens", 2}});
  ASSERT_EQ(chat.status, 200) << chat.body;
  EXPECT_EQ(continued["usage"]["input_tokens"], Json::parse(chat.body)["usage"]["prompt_tokens"]);

  // Its input items: the question, the call and its output, newest first unless asked otherwise.
  const std::string items_path = "/v1/responses/" + continued["id"].get<std::string>() + "/input_items";
  const auto items = client.Get(items_path);
  ASSERT_TRUE(items);
  ASSERT_EQ(items->status, 200) << items->body;
  const Json list = Json::parse(items->body);
  ASSERT_EQ(list["data"].size(), 3u) << items->body;
  EXPECT_EQ(list["data"][0]["type"], "function_call_output");
  EXPECT_EQ(list["data"][1]["call_id"], call["call_id"]);
  EXPECT_EQ(list["data"][2]["content"][0]["text"], question);
  EXPECT_EQ(list["first_id"], list["data"][0]["id"]);
  EXPECT_EQ(list["last_id"], list["data"][2]["id"]);
  EXPECT_EQ(list["has_more"], false);
  const auto page = client.Get(items_path + "?order=asc&limit=1");
  ASSERT_TRUE(page);
  const Json first_page = Json::parse(page->body);
  ASSERT_EQ(first_page["data"].size(), 1u) << page->body;
  EXPECT_EQ(first_page["data"][0]["id"], list["data"][2]["id"]);
  EXPECT_EQ(first_page["has_more"], true);
  const auto rest =
      client.Get(items_path + "?order=asc&limit=5&after=" + first_page["last_id"].get<std::string>());
  ASSERT_TRUE(rest);
  EXPECT_EQ(Json::parse(rest->body)["data"].size(), 2u) << rest->body;
  for (const char* bad : {"?limit=0", "?limit=101", "?order=sideways", "?after=msg_nope"}) {
    const auto refused = client.Get(items_path + bad);
    ASSERT_TRUE(refused);
    EXPECT_EQ(refused->status, 400) << bad << " -> " << refused->body;
  }

  // Another API key finds nothing, to read or to continue.
  const auto other_key = client.Get("/v1/responses/" + id, {{"Authorization", "Bearer someone-else"}});
  ASSERT_TRUE(other_key);
  EXPECT_EQ(other_key->status, 404);
  const HttpReply other_turn =
      post(server.openai_port(), "/v1/responses", Json{{"previous_response_id", id}, {"input", "and?"}},
           {{"Authorization", "Bearer someone-else"}});
  EXPECT_EQ(other_turn.status, 400);
  EXPECT_NE(other_turn.body.find("previous_response_id: no response"), std::string::npos) << other_turn.body;

  // A streamed response is stored as its last event has it.
  const HttpReply streamed = post(server.openai_port(), "/v1/responses",
                                  Json{{"input", "Hello"}, {"max_output_tokens", 3}, {"stream", true}});
  ASSERT_EQ(streamed.status, 200) << streamed.body;
  const size_t last_data = streamed.body.rfind("data: ");
  ASSERT_NE(last_data, std::string::npos);
  const Json streamed_response = Json::parse(streamed.body.substr(last_data + 6))["response"];
  const auto streamed_back = client.Get("/v1/responses/" + streamed_response["id"].get<std::string>());
  ASSERT_TRUE(streamed_back);
  ASSERT_EQ(streamed_back->status, 200) << streamed_back->body;
  EXPECT_EQ(Json::parse(streamed_back->body), streamed_response);

  // store false: not stored.
  const HttpReply unstored = post(server.openai_port(), "/v1/responses",
                                  Json{{"input", "Hello"}, {"max_output_tokens", 2}, {"store", false}});
  ASSERT_EQ(unstored.status, 200) << unstored.body;
  EXPECT_EQ(Json::parse(unstored.body)["store"], false);
  const auto unstored_back =
      client.Get("/v1/responses/" + Json::parse(unstored.body)["id"].get<std::string>());
  ASSERT_TRUE(unstored_back);
  EXPECT_EQ(unstored_back->status, 404);

  // Only a background response can be cancelled; deleting one makes it gone.
  const auto cancel = client.Post("/v1/responses/" + id + "/cancel", "", "application/json");
  ASSERT_TRUE(cancel);
  EXPECT_EQ(cancel->status, 400) << cancel->body;
  const auto deleted = client.Delete("/v1/responses/" + id);
  ASSERT_TRUE(deleted);
  ASSERT_EQ(deleted->status, 200) << deleted->body;
  EXPECT_EQ(Json::parse(deleted->body), (Json{{"id", id}, {"object", "response"}, {"deleted", true}}));
  const auto gone = client.Get("/v1/responses/" + id);
  ASSERT_TRUE(gone);
  EXPECT_EQ(gone->status, 404);
  const auto deleted_again = client.Delete("/v1/responses/" + id);
  ASSERT_TRUE(deleted_again);
  EXPECT_EQ(deleted_again->status, 404);
  // Left stored: the continued and the streamed ones.
  httplib::Client http("127.0.0.1", server.metrics_port());
  const auto metrics = http.Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_NE(metrics->body.find("\nkvserve_responses_stored 2\n"), std::string::npos) << metrics->body;
  EXPECT_TRUE(wait_all_blocks_free(*stub(server)));
}

// A server run with --responses-store-mb 0 stores nothing, and says so.
TEST(OpenAiE2E, AServerThatStoresNoResponsesSaysSo) {
  ServerProcess server(with_openai({"--responses-store-mb", "0"}));
  const HttpReply reply =
      post(server.openai_port(), "/v1/responses", Json{{"input", "Hello"}, {"max_output_tokens", 2}});
  ASSERT_EQ(reply.status, 200) << reply.body;
  const Json response = Json::parse(reply.body);
  EXPECT_EQ(response["store"], false);
  httplib::Client client("127.0.0.1", server.openai_port());
  const auto read_back = client.Get("/v1/responses/" + response["id"].get<std::string>());
  ASSERT_TRUE(read_back);
  EXPECT_EQ(read_back->status, 404);
  EXPECT_NE(read_back->body.find("--responses-store-mb 0"), std::string::npos) << read_back->body;
  const HttpReply continued = post(server.openai_port(), "/v1/responses",
                                   Json{{"previous_response_id", response["id"]}, {"input", "and?"}});
  EXPECT_EQ(continued.status, 400);
  EXPECT_NE(continued.body.find("this server stores no responses"), std::string::npos) << continued.body;
}

// --reasoning-parser think: a reply that opens with a <think> block (forced here by a regex on the
// random model) comes back as reasoning_content apart from the content, whole and streamed.
TEST(OpenAiE2E, AThinkBlockComesBackAsReasoningContent) {
  ServerProcess server(with_openai({"--reasoning-parser", "think"}));
  Json body{
      {"messages", {{{"role", "user"}, {"content", "What is 2 + 2?"}}}},
      {"max_tokens", 40},
      {"response_format", {{"type", "regex"}, {"regex", R"(<think>\nPondering\.\n</think>\n\nIt is 4\.)"}}}};
  const HttpReply whole = post(server.openai_port(), "/v1/chat/completions", body);
  ASSERT_EQ(whole.status, 200) << whole.body;
  const Json message = Json::parse(whole.body)["choices"][0]["message"];
  EXPECT_EQ(message["reasoning_content"], "Pondering.\n");
  EXPECT_EQ(message["content"], "It is 4.");
  body["stream"] = true;
  const HttpReply streamed = post(server.openai_port(), "/v1/chat/completions", body);
  ASSERT_EQ(streamed.status, 200) << streamed.body;
  std::string reasoning, content;
  for (const Json& chunk : events(streamed.body)) {
    if (chunk == "[DONE]") continue;
    const Json& delta = chunk["choices"][0]["delta"];
    if (delta.contains("reasoning_content")) reasoning += delta["reasoning_content"].get<std::string>();
    if (delta.contains("content")) content += delta["content"].get<std::string>();
  }
  EXPECT_EQ(reasoning, "Pondering.\n");
  EXPECT_EQ(content, "It is 4.");
  // A template that opens the block in the prompt (as DeepSeek-R1's does): the reply begins in it
  // (and the parser is on by default, since the template writes both tags).
  const std::string opening_template = ::testing::TempDir() + "/opens_think.jinja";
  std::ofstream(opening_template)
      << "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content.split('</think>')[-1] }}<|im_end|>\n"
         "{% endfor %}<|im_start|>assistant\n<think>\n";
  ServerProcess opening(with_openai({"--chat-template", opening_template}));
  // Unconstrained, the random model writes no </think>: its whole reply is reasoning.
  const Json free{{"messages", body["messages"]}, {"max_tokens", 8}, {"ignore_eos", true}, {"seed", 3}};
  const HttpReply thought = post(opening.openai_port(), "/v1/chat/completions", free);
  ASSERT_EQ(thought.status, 200) << thought.body;
  const Json thought_message = Json::parse(thought.body)["choices"][0]["message"];
  EXPECT_TRUE(thought_message["reasoning_content"].is_string() &&
              !thought_message["reasoning_content"].get<std::string>().empty())
      << thought.body;
  EXPECT_EQ(thought_message["content"], "") << thought.body;
  // A constrained reply follows its format from the first token: an answer.
  body["stream"] = false;
  body["response_format"]["regex"] = R"(It is 4\.)";
  const HttpReply answered = post(opening.openai_port(), "/v1/chat/completions", body);
  ASSERT_EQ(answered.status, 200) << answered.body;
  const Json answered_message = Json::parse(answered.body)["choices"][0]["message"];
  EXPECT_TRUE(answered_message["reasoning_content"].is_null()) << answered.body;
  EXPECT_EQ(answered_message["content"], "It is 4.");

  // Completions are text, as the model wrote it.
  const HttpReply completion =
      post(server.openai_port(), "/v1/completions",
           Json{{"prompt", "x"},
                {"max_tokens", 20},
                {"response_format", {{"type", "regex"}, {"regex", "<think>a</think>b"}}}});
  ASSERT_EQ(completion.status, 200) << completion.body;
  EXPECT_EQ(Json::parse(completion.body)["choices"][0]["text"], "<think>a</think>b");
}

TEST(OpenAiE2E, ToolChoiceAutoNeedsAToolCallFormat) {
  // The default model's template (Llama 2 style) teaches no call format: "auto" is refused with
  // what to do instead, and a named function still works.
  ServerProcess server(with_openai({}));
  Json body{{"messages", Json::parse(R"([{"role": "user", "content": "Weather?"}])")},
            {"tools", kWeatherTools},
            {"max_tokens", 80}};
  const HttpReply refused = post(server.openai_port(), "/v1/chat/completions", body);
  EXPECT_EQ(refused.status, 400);
  EXPECT_NE(refused.body.find("--tool-call-parser"), std::string::npos) << refused.body;
  body["tool_choice"] = {{"type", "function"}, {"function", {{"name", "get_time"}}}};
  const HttpReply named = post(server.openai_port(), "/v1/chat/completions", body);
  ASSERT_EQ(named.status, 200) << named.body;
  EXPECT_EQ(Json::parse(named.body)["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
            "get_time");
}

// Anthropic's Messages API: the chat endpoint's reply for the same conversation (greedy), in a
// message's shape, whole or streamed; stop sequences, a prefill and count_tokens against the chat
// endpoint's and /tokenize's own.
TEST(AnthropicE2E, AMessageIsTheChatEndpointsReplyInAnthropicsShape) {
  ServerProcess server(with_openai({}));
  const int port = server.openai_port();
  const Json conversation = Json::array({{{"role", "user"}, {"content", "Why is the sky blue?"}}});
  Json chat_messages = conversation;
  chat_messages.insert(chat_messages.begin(), Json{{"role", "system"}, {"content", "Be brief."}});
  const Json chat_body{
      {"messages", chat_messages}, {"temperature", 0}, {"max_tokens", 12}, {"ignore_eos", true}};
  const HttpReply chat = post(port, "/v1/chat/completions", chat_body);
  ASSERT_EQ(chat.status, 200) << chat.body;
  const std::string text = Json::parse(chat.body)["choices"][0]["message"]["content"];
  const Json chat_usage = Json::parse(chat.body)["usage"];

  Json body{{"model", kModel},  {"system", "Be brief."}, {"messages", conversation},
            {"max_tokens", 12}, {"temperature", 0},      {"ignore_eos", true}};
  const HttpReply whole = post(port, "/v1/messages", body, {{"anthropic-version", "2023-06-01"}});
  ASSERT_EQ(whole.status, 200) << whole.body;
  const Json message = Json::parse(whole.body);
  EXPECT_EQ(message["type"], "message");
  EXPECT_EQ(message["role"], "assistant");
  EXPECT_EQ(message["model"], kModel);
  EXPECT_EQ(message["id"].get<std::string>().rfind("msg_", 0), 0u);
  ASSERT_EQ(message["content"].size(), 1u) << whole.body;
  EXPECT_EQ(message["content"][0], Json({{"type", "text"}, {"text", text}}));
  EXPECT_EQ(message["stop_reason"], "max_tokens");
  EXPECT_EQ(message["stop_sequence"], nullptr);
  const Json& usage = message["usage"];
  EXPECT_EQ(usage["input_tokens"].get<int>() + usage["cache_read_input_tokens"].get<int>(),
            chat_usage["prompt_tokens"].get<int>());
  EXPECT_EQ(usage["output_tokens"], 12);

  // Streamed: the deltas join to the same text; message_delta has the stop reason and usage.
  body["stream"] = true;
  const HttpReply streamed = post(port, "/v1/messages", body);
  ASSERT_EQ(streamed.status, 200) << streamed.body;
  const std::vector<Json> stream = events(streamed.body);
  ASSERT_GE(stream.size(), 4u) << streamed.body;
  EXPECT_EQ(stream.front()["type"], "message_start");
  // message_start has the prompt's counts already (the server's first message carries them).
  const Json& start_usage = stream.front()["message"]["usage"];
  EXPECT_EQ(start_usage["input_tokens"].get<int>() + start_usage["cache_read_input_tokens"].get<int>(),
            chat_usage["prompt_tokens"].get<int>())
      << stream.front();
  EXPECT_EQ(stream.back()["type"], "message_stop");
  std::string joined;
  for (const Json& e : stream)
    if (e["type"] == "content_block_delta") joined += e["delta"]["text"].get<std::string>();
  EXPECT_EQ(joined, text);
  const Json& delta = stream[stream.size() - 2];
  EXPECT_EQ(delta["type"], "message_delta");
  EXPECT_EQ(delta["delta"]["stop_reason"], "max_tokens");
  EXPECT_EQ(delta["usage"]["output_tokens"], 12);
  EXPECT_EQ(streamed.body.rfind("event: message_start\ndata: ", 0), 0u);  // events are named

  // A stop sequence from the middle of the reply ends it there, and is named.
  std::string stop;
  for (size_t at = text.size() / 2; at + 2 <= text.size() && stop.empty(); ++at)
    if (static_cast<unsigned char>(text[at]) < 0x80 && static_cast<unsigned char>(text[at + 1]) < 0x80)
      stop = text.substr(at, 2);
  ASSERT_FALSE(stop.empty()) << text;
  body["stream"] = false;
  body["stop_sequences"] = {"#never#", stop};
  const HttpReply stopped = post(port, "/v1/messages", body);
  ASSERT_EQ(stopped.status, 200) << stopped.body;
  EXPECT_EQ(Json::parse(stopped.body)["stop_reason"], "stop_sequence");
  EXPECT_EQ(Json::parse(stopped.body)["stop_sequence"], stop);
  EXPECT_EQ(Json::parse(stopped.body)["content"][0]["text"], text.substr(0, text.find(stop)));
  body.erase("stop_sequences");

  // A final assistant message is continued, as chat's continue_final_message continues it.
  Json prefilled = body;
  prefilled["messages"].push_back({{"role", "assistant"}, {"content", "The sky"}});
  Json chat_prefilled = chat_body;
  chat_prefilled["messages"].push_back({{"role", "assistant"}, {"content", "The sky"}});
  chat_prefilled["continue_final_message"] = true;
  chat_prefilled["add_generation_prompt"] = false;
  const HttpReply continued = post(port, "/v1/messages", prefilled);
  const HttpReply chat_continued = post(port, "/v1/chat/completions", chat_prefilled);
  ASSERT_EQ(continued.status, 200) << continued.body;
  ASSERT_EQ(chat_continued.status, 200) << chat_continued.body;
  EXPECT_EQ(Json::parse(continued.body)["content"][0]["text"],
            Json::parse(chat_continued.body)["choices"][0]["message"]["content"]);

  // count_tokens: the prompt /v1/messages runs, as /tokenize counts the chat conversation.
  const HttpReply counted =
      post(port, "/v1/messages/count_tokens",
           Json{{"model", kModel}, {"system", "Be brief."}, {"messages", conversation}});
  ASSERT_EQ(counted.status, 200) << counted.body;
  EXPECT_EQ(Json::parse(counted.body), Json({{"input_tokens", chat_usage["prompt_tokens"]}}));
  EXPECT_TRUE(wait_all_blocks_free(*stub(server)));
}

// A forced tool use comes back as a tool_use block whose input is the chat call's arguments; the
// next turn, the call and its tool_result, renders the prompt the chat conversation with the call
// and the tool's message renders.
TEST(AnthropicE2E, ToolUseBlocksAreTheChatCallsAndToolResultsTheirAnswers) {
  ServerProcess server(with_openai(
      {"--chat-template", std::string(KVSERVE_TEST_DATA) + "/chat_templates/hermes_tools.jinja"}));
  const int port = server.openai_port();
  const std::string question = "Weather in Oslo for two days?";
  // Anthropic's tools (name, description, input_schema), and the chat tools they stand for with
  // their fields in the same order (this file's Json sorts keys; the template renders them as sent).
  Json tools = Json::array();
  nlohmann::ordered_json chat_tools = nlohmann::ordered_json::array();
  for (const Json& tool : kWeatherTools) {
    Json anthropic{{"name", tool["function"]["name"]}, {"input_schema", tool["function"]["parameters"]}};
    if (tool["function"].contains("description")) anthropic["description"] = tool["function"]["description"];
    nlohmann::ordered_json function = nlohmann::ordered_json::object();
    for (const auto& [key, value] : anthropic.items())
      function[key == "input_schema" ? "parameters" : key] = value;
    chat_tools.push_back({{"type", "function"}, {"function", function}});
    tools.push_back(anthropic);
  }
  const nlohmann::ordered_json chat_body{
      {"messages", {{{"role", "user"}, {"content", question}}}},
      {"tools", chat_tools},
      {"tool_choice", {{"type", "function"}, {"function", {{"name", "get_weather"}}}}},
      {"max_tokens", 160},
      {"seed", 5}};
  const HttpReply chat = post(port, "/v1/chat/completions", Json(chat_body.dump()));
  ASSERT_EQ(chat.status, 200) << chat.body;
  const Json chat_call = Json::parse(chat.body)["choices"][0]["message"]["tool_calls"][0];

  Json body{{"messages", {{{"role", "user"}, {"content", question}}}},
            {"tools", tools},
            {"tool_choice", {{"type", "tool"}, {"name", "get_weather"}}},
            {"max_tokens", 160},
            {"seed", 5}};
  const HttpReply whole = post(port, "/v1/messages", body);
  ASSERT_EQ(whole.status, 200) << whole.body;
  const Json message = Json::parse(whole.body);
  ASSERT_EQ(message["content"].size(), 1u) << whole.body;
  const Json& block = message["content"][0];
  EXPECT_EQ(block["type"], "tool_use");
  EXPECT_EQ(block["name"], "get_weather");
  EXPECT_EQ(block["input"], Json::parse(chat_call["function"]["arguments"].get<std::string>()));
  EXPECT_EQ(message["stop_reason"], "tool_use");
  EXPECT_EQ(
      message["usage"]["input_tokens"].get<int>() + message["usage"]["cache_read_input_tokens"].get<int>(),
      Json::parse(chat.body)["usage"]["prompt_tokens"].get<int>());

  body["stream"] = true;
  const HttpReply streamed = post(port, "/v1/messages", body);
  ASSERT_EQ(streamed.status, 200) << streamed.body;
  std::string partial_json;
  for (const Json& e : events(streamed.body))
    if (e["type"] == "content_block_delta") partial_json += e["delta"]["partial_json"].get<std::string>();
  EXPECT_EQ(Json::parse(partial_json), block["input"]);

  // The next turn against the chat conversation it stands for: the same prompt, token for token.
  const Json turn{
      {"messages",
       {{{"role", "user"}, {"content", question}},
        {{"role", "assistant"},
         {"content",
          {{{"type", "tool_use"}, {"id", "toolu_1"}, {"name", "get_weather"}, {"input", block["input"]}}}}},
        {{"role", "user"},
         {"content", {{{"type", "tool_result"}, {"tool_use_id", "toolu_1"}, {"content", "sunny, 21 C"}}}}}}},
      {"tools", tools},
      {"max_tokens", 2}};
  const HttpReply next = post(port, "/v1/messages", turn);
  ASSERT_EQ(next.status, 200) << next.body;
  const Json chat_turn{
      {"messages",
       {{{"role", "user"}, {"content", question}},
        {{"role", "assistant"},
         {"content", nullptr},
         {"tool_calls",
          {{{"id", "toolu_1"},
            {"type", "function"},
            {"function", {{"name", "get_weather"}, {"arguments", block["input"].dump()}}}}}}},
        {{"role", "tool"}, {"tool_call_id", "toolu_1"}, {"content", "sunny, 21 C"}}}},
      {"max_tokens", 2}};
  nlohmann::ordered_json chat_turn_body = nlohmann::ordered_json::parse(chat_turn.dump());
  chat_turn_body["tools"] = chat_tools;
  const HttpReply chat_next = post(port, "/v1/chat/completions", Json(chat_turn_body.dump()));
  ASSERT_EQ(chat_next.status, 200) << chat_next.body;
  const int prompt_tokens = Json::parse(chat_next.body)["usage"]["prompt_tokens"];
  const Json next_usage = Json::parse(next.body)["usage"];
  EXPECT_EQ(next_usage["input_tokens"].get<int>() + next_usage["cache_read_input_tokens"].get<int>(),
            prompt_tokens);
  Json count = turn;
  count.erase("max_tokens");
  const HttpReply counted = post(port, "/v1/messages/count_tokens", count);
  ASSERT_EQ(counted.status, 200) << counted.body;
  EXPECT_EQ(Json::parse(counted.body)["input_tokens"], prompt_tokens);
  EXPECT_TRUE(wait_all_blocks_free(*stub(server)));
}

// Errors on the Messages routes have Anthropic's shape and types, which its SDKs raise as their
// own exceptions; x-api-key is the bearer token (on every route); the server goes on serving.
TEST(AnthropicE2E, ErrorsHaveAnthropicsShapeAndXApiKeyIsTheToken) {
  char dir_template[] = "/tmp/kvserve-anthropic-XXXXXX";
  ASSERT_NE(mkdtemp(dir_template), nullptr);
  const std::string token_file = std::string(dir_template) + "/token";
  std::ofstream(token_file) << "s3cret\n";
  ServerProcess server(with_openai({"--auth-token-file", token_file, "--max-request-bytes", "4000"}));
  const int port = server.openai_port();
  const Json body{{"max_tokens", 2}, {"messages", {{{"role", "user"}, {"content", "Hi"}}}}};
  const auto error_type = [](const HttpReply& reply) {
    const Json error = Json::parse(reply.body);
    EXPECT_EQ(error["type"], "error") << reply.body;
    EXPECT_TRUE(error["error"]["message"].is_string()) << reply.body;
    return error["error"]["type"].get<std::string>();
  };
  const HttpReply missing = post(port, "/v1/messages", body);
  EXPECT_EQ(missing.status, 401);
  EXPECT_EQ(error_type(missing), "authentication_error");
  const HttpReply wrong = post(port, "/v1/messages", body, {{"x-api-key", "wrong"}});
  EXPECT_EQ(wrong.status, 401);
  EXPECT_EQ(error_type(wrong), "authentication_error");
  const httplib::Headers key{{"x-api-key", "s3cret"}};
  EXPECT_EQ(post(port, "/v1/messages", body, key).status, 200);
  EXPECT_EQ(post(port, "/v1/messages", body, {{"Authorization", "Bearer s3cret"}}).status, 200);
  EXPECT_EQ(post(port, "/v1/messages/count_tokens", body).status, 401);
  EXPECT_EQ(post(port, "/v1/messages/count_tokens", body, key).status, 200);
  EXPECT_EQ(post(port, "/v1/completions", Json{{"prompt", "x"}, {"max_tokens", 2}}, key).status, 200);

  const HttpReply no_max = post(port, "/v1/messages", Json{{"messages", body["messages"]}}, key);
  EXPECT_EQ(no_max.status, 400);
  EXPECT_EQ(error_type(no_max), "invalid_request_error");
  EXPECT_NE(no_max.body.find("max_tokens"), std::string::npos) << no_max.body;
  Json other = body;
  other["model"] = "claude-sonnet-4-5";
  const HttpReply model = post(port, "/v1/messages", other, key);
  EXPECT_EQ(model.status, 404);
  EXPECT_EQ(error_type(model), "not_found_error");
  const HttpReply bad = post(port, "/v1/messages", Json("{\"messages\": ["), key);
  EXPECT_EQ(bad.status, 400);
  EXPECT_EQ(error_type(bad), "invalid_request_error");
  Json big = body;
  big["messages"][0]["content"] = std::string(5000, 'x');
  const HttpReply too_large = post(port, "/v1/messages", big, key);
  EXPECT_EQ(too_large.status, 413);
  EXPECT_EQ(error_type(too_large), "request_too_large");
  const HttpReply route = post(port, "/v1/messages/batches", body, key);
  EXPECT_EQ(route.status, 404);
  EXPECT_EQ(error_type(route), "not_found_error");
  // The key x-api-key carries is the one a stored response belongs to, however it is sent.
  const HttpReply stored = post(port, "/v1/responses", Json{{"input", "Hi"}, {"max_output_tokens", 2}}, key);
  ASSERT_EQ(stored.status, 200) << stored.body;
  httplib::Client http("127.0.0.1", port);
  const auto read_back = http.Get("/v1/responses/" + Json::parse(stored.body)["id"].get<std::string>(),
                                  {{"Authorization", "Bearer s3cret"}});
  ASSERT_TRUE(read_back);
  EXPECT_EQ(read_back->status, 200) << read_back->body;
  // The OpenAI routes keep OpenAI's shape.
  EXPECT_EQ(Json::parse(post(port, "/v1/chat/completions", Json{{"messages", 1}}, key).body)["error"]["code"],
            "invalid_argument");
  EXPECT_EQ(post(port, "/v1/messages", body, key).status, 200);
  std::filesystem::remove_all(dir_template);
}

}  // namespace
}  // namespace kvserve
