// The OpenAI-compatible API's translation, both ways: request bodies into the GenerateRequest they
// stand for (every field, every refusal), and gRPC messages into OpenAI's reply objects and events.
// The expected values are written out from OpenAI's API reference, not from the code's output.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <cctype>
#include <limits>
#include <string>
#include <vector>

#include "engine/tokenizer.h"
#include "server/openai_request.h"
#include "server/openai_response.h"

namespace kvserve::openai {
namespace {

using Json = nlohmann::json;

constexpr const char* kModel = "my-model";

// A server for kModel whose model writes no tool calls kvserve reads, unless a test says otherwise.
const ServedApi kServed{.model = kModel};
const ServedApi kServedHermes{.model = kModel, .tool_call_format = ToolCallFormat::kHermes};

ParsedRequest parse_ok(Endpoint endpoint, const std::string& body, const ServedApi& served = kServed) {
  ParsedRequest out;
  const Status s = parse_request(endpoint, body, served, &out);
  EXPECT_TRUE(s.ok()) << body << " -> " << s.message();
  return out;
}

// The message of a refused body; fails the test if it was accepted.
std::string refusal(Endpoint endpoint, const std::string& body,
                    StatusCode code = StatusCode::kInvalidArgument, const ServedApi& served = kServed) {
  ParsedRequest out;
  const Status s = parse_request(endpoint, body, served, &out);
  EXPECT_FALSE(s.ok()) << body << " was accepted";
  EXPECT_EQ(s.code(), code) << body << " -> " << s.message();
  return s.message();
}

constexpr Endpoint kCompletions = Endpoint::kCompletions;
constexpr Endpoint kChat = Endpoint::kChatCompletions;

TEST(OpenAiRequest, CompletionDefaultsFollowOpenAi) {
  const ParsedRequest r = parse_ok(kCompletions, R"({"prompt": "Hello"})");
  EXPECT_EQ(r.generate.text(), "Hello");
  // OpenAI samples at temperature 1 unless told otherwise; the proto's unset 0 would be greedy.
  EXPECT_FLOAT_EQ(r.generate.sampling().temperature(), 1.0f);
  EXPECT_EQ(r.generate.stop().max_tokens(), 16u);  // OpenAI's completions default (chat's is the server's)
  EXPECT_EQ(r.generate.n(), 0u);
  EXPECT_FALSE(r.generate.no_bos());
  EXPECT_FALSE(r.stream);
  EXPECT_FALSE(r.logprobs);
  EXPECT_FALSE(r.generate.has_response_format());
  EXPECT_EQ(r.model, kModel);
  // null reads as "not set", as OpenAI's clients send it.
  const ParsedRequest nulls =
      parse_ok(kCompletions,
               R"({"prompt": "Hi", "temperature": null, "max_tokens": null, "stop": null, "model": null})");
  EXPECT_FLOAT_EQ(nulls.generate.sampling().temperature(), 1.0f);
  EXPECT_EQ(nulls.generate.stop().max_tokens(), 16u);
}

TEST(OpenAiRequest, PromptFormsAndRefusals) {
  EXPECT_EQ(parse_ok(kCompletions, R"({"prompt": ["one"]})").generate.text(), "one");
  const ParsedRequest ids = parse_ok(kCompletions, R"({"prompt": [1, 15043, 7]})");
  EXPECT_EQ(
      std::vector<uint32_t>(ids.generate.token_ids().ids().begin(), ids.generate.token_ids().ids().end()),
      (std::vector<uint32_t>{1, 15043, 7}));
  EXPECT_EQ(parse_ok(kCompletions, R"({"prompt": [[5, 6]]})").generate.token_ids().ids_size(), 2);
  EXPECT_TRUE(parse_ok(kCompletions, R"({"prompt": ["one"]})").more_prompts.empty());
  EXPECT_NE(refusal(kCompletions, R"({})").find("prompt: missing"), std::string::npos);
  EXPECT_NE(refusal(kCompletions, R"({"prompt": []})").find("prompt: empty"), std::string::npos);
  EXPECT_NE(refusal(kCompletions, R"({"prompt": [1, -2]})").find("prompt[1]"), std::string::npos);
  EXPECT_NE(refusal(kCompletions, R"({"prompt": 7})").find("prompt: expected a string or an array"),
            std::string::npos);
  EXPECT_TRUE(parse_ok(kCompletions, R"({"prompt": "x", "add_special_tokens": false})").generate.no_bos());
}

TEST(OpenAiRequest, SeveralPromptsAreTheSameRequestEach) {
  // A list of prompts, strings and token ids alike: the first in `generate`, the others each the
  // same request with its own input (every other field copied).
  const ParsedRequest r = parse_ok(kCompletions, R"({"prompt": ["a b", [5, 6], "c"], "max_tokens": 3,
      "temperature": 0.5, "n": 2, "stop": ["x"], "seed": 9, "logprobs": 1, "add_special_tokens": false})");
  EXPECT_EQ(r.generate.text(), "a b");
  ASSERT_EQ(r.more_prompts.size(), 2u);
  EXPECT_EQ(r.more_prompts[0].token_ids().ids_size(), 2);
  EXPECT_EQ(r.more_prompts[0].token_ids().ids(1), 6u);
  EXPECT_EQ(r.more_prompts[1].text(), "c");
  for (const v1::GenerateRequest& more : r.more_prompts) {
    v1::GenerateRequest expected = r.generate;
    expected.clear_text();
    if (more.has_token_ids())
      *expected.mutable_token_ids() = more.token_ids();
    else
      expected.set_text(more.text());
    EXPECT_EQ(more.SerializeAsString(), expected.SerializeAsString()) << more.DebugString();
  }
  // Each prompt's refusal names it; at most 256 in one request.
  EXPECT_EQ(
      refusal(kCompletions, R"({"prompt": ["a", [1, -2]]})").rfind("prompt[1][1]: expected a token id", 0),
      0u);
  EXPECT_EQ(refusal(kCompletions, R"({"prompt": ["a", []]})").rfind("prompt[1]: empty", 0), 0u);
  EXPECT_EQ(
      refusal(kCompletions, R"({"prompt": ["a", 3]})").rfind("prompt[1]: expected a string or an array", 0),
      0u);
  std::string many = R"({"prompt": [)";
  for (int i = 0; i < 257; ++i)
    many += i ? ", \"p\"" : "\"p\"";
  EXPECT_EQ(refusal(kCompletions, many + "]}").rfind("prompt: 257 prompts in one request, at most 256", 0),
            0u);
  // Prompts times n: each choice holds a place in the queue.
  EXPECT_EQ(refusal(kCompletions, R"({"prompt": ["a", "b", "c"], "n": 100})")
                .rfind("prompt: 3 prompts of n = 100 choices each make 300, at most 256", 0),
            0u);
  // Each prompt's request carries the shared fields: together within --max-request-bytes.
  const std::string schema = R"({"type": "object", "properties": {"a": {"type": "string", "description": ")" +
                             std::string(2000, 'x') + R"("}}})";
  const std::string body = R"({"prompt": ["a", "b", "c"], "response_format": {"type": "json_schema",
      "json_schema": {"schema": )" +
                           schema + "}}}";
  ParsedRequest parsed;
  const Status small =
      parse_request(kCompletions, body, {.model = kModel, .max_request_bytes = 5000}, &parsed);
  EXPECT_EQ(small.message().rfind(
                "prompt: the 3 prompts' requests, each with the request's other fields, come to about", 0),
            0u)
      << small.message();
  EXPECT_TRUE(parse_request(kCompletions, body, {.model = kModel, .max_request_bytes = 8000}, &parsed).ok());
}

TEST(OpenAiRequest, SamplingFieldsMapOntoTheProto) {
  const ParsedRequest r =
      parse_ok(kCompletions, R"({"prompt": "x", "temperature": 0.5, "top_p": 0.9, "top_k": 40,
      "min_p": 0.05, "repetition_penalty": 1.2, "presence_penalty": -0.5, "frequency_penalty": 1.5,
      "seed": 42, "logit_bias": {"7": -100, "4294967295": 2.5}, "n": 3, "best_of": 3})");
  const v1::SamplingParams& s = r.generate.sampling();
  EXPECT_FLOAT_EQ(s.temperature(), 0.5f);
  EXPECT_FLOAT_EQ(s.top_p(), 0.9f);
  EXPECT_EQ(s.top_k(), 40);
  EXPECT_FLOAT_EQ(s.min_p(), 0.05f);
  EXPECT_FLOAT_EQ(s.repetition_penalty(), 1.2f);
  EXPECT_FLOAT_EQ(s.presence_penalty(), -0.5f);
  EXPECT_FLOAT_EQ(s.frequency_penalty(), 1.5f);
  ASSERT_TRUE(s.has_seed());
  EXPECT_EQ(s.seed(), 42u);
  ASSERT_EQ(s.logit_bias_size(), 2);
  EXPECT_FLOAT_EQ(s.logit_bias().at(7), -100.0f);
  EXPECT_FLOAT_EQ(s.logit_bias().at(4294967295u), 2.5f);
  EXPECT_EQ(r.generate.n(), 3u);
  // vLLM's top_k = -1 means no limit, the proto's 0.
  EXPECT_EQ(parse_ok(kCompletions, R"({"prompt": "x", "top_k": -1})").generate.sampling().top_k(), 0);
  // A negative seed is a seed too: its two's complement.
  EXPECT_EQ(parse_ok(kCompletions, R"({"prompt": "x", "seed": -1})").generate.sampling().seed(), UINT64_MAX);
  EXPECT_EQ(
      parse_ok(kCompletions, R"({"prompt": "x", "seed": 18446744073709551615})").generate.sampling().seed(),
      UINT64_MAX);
}

TEST(OpenAiRequest, ValuesThatWouldReadAsUnsetAreRefused) {
  // The proto's 0 means "unset" for these; OpenAI's 0 means something else (or nothing valid).
  EXPECT_NE(refusal(kCompletions, R"({"prompt": "x", "top_p": 0})").find("top_p: must be in (0, 1]"),
            std::string::npos);
  EXPECT_NE(refusal(kCompletions, R"({"prompt": "x", "repetition_penalty": 0})").find("repetition_penalty"),
            std::string::npos);
  EXPECT_NE(
      refusal(kCompletions, R"({"prompt": "x", "max_tokens": 0})").find("max_tokens: 0 is outside [1, "),
      std::string::npos);
  EXPECT_NE(refusal(kCompletions, R"({"prompt": "x", "n": 0})").find("n: 0 is outside"), std::string::npos);
}

TEST(OpenAiRequest, ValuesBelowFloatRangeAreNotReadAsUnset) {
  // Caught by tests/fuzz/fuzz_openai_request's checks (corpus regression_*_underflow): 1e-50
  // rounded to the float 0, the proto's "unset", so top_p 1e-50 sampled from the whole vocabulary.
  const v1::SamplingParams s =
      parse_ok(kCompletions, R"({"prompt": "x", "top_p": 1e-50, "repetition_penalty": 1e-300})")
          .generate.sampling();
  EXPECT_GT(s.top_p(), 0.0f);
  EXPECT_GT(s.repetition_penalty(), 0.0f);
  // Values float can hold pass through as they are.
  EXPECT_FLOAT_EQ(parse_ok(kCompletions, R"({"prompt": "x", "top_p": 1e-30})").generate.sampling().top_p(),
                  1e-30f);
}

TEST(OpenAiRequest, WrongTypesAndKeysNameTheField) {
  EXPECT_EQ(refusal(kCompletions, R"({"prompt": "x", "temperature": "hot"})"),
            "temperature: expected a number, got string");
  EXPECT_EQ(refusal(kCompletions, R"({"prompt": "x", "max_tokens": 1.5})"),
            "max_tokens: expected an integer, got number");
  EXPECT_EQ(refusal(kCompletions, R"({"prompt": "x", "stream": 1})"),
            "stream: expected true or false, got number");
  EXPECT_NE(refusal(kCompletions, R"({"prompt": "x", "logit_bias": {"abc": 1}})")
                .find("key \"abc\" is not a token id"),
            std::string::npos);
  EXPECT_NE(
      refusal(kCompletions, R"({"prompt": "x", "logit_bias": {"4294967296": 1}})").find("is not a token id"),
      std::string::npos);
  EXPECT_EQ(refusal(kCompletions, R"({"prompt": "x", "logit_bias": {"5": "up"}})"),
            "logit_bias[\"5\"]: expected a number, got string");
  EXPECT_EQ(refusal(kCompletions, R"({"prompt": "x", "stop": ["a", 3]})"),
            "stop[1]: expected a string, got number");
  EXPECT_NE(refusal(kCompletions, R"({"prompt": "x", "stop_token_ids": [2, -1]})").find("stop_token_ids[1]"),
            std::string::npos);
  EXPECT_NE(refusal(kCompletions, R"({"prompt": "x", "max_tokens": 99999999999})")
                .find("99999999999 is outside [1, 4294967295]"),
            std::string::npos);
}

TEST(OpenAiRequest, StopRules) {
  const ParsedRequest one = parse_ok(kCompletions, R"({"prompt": "x", "stop": "\n", "max_tokens": 12})");
  ASSERT_EQ(one.generate.stop().stop_size(), 1);
  EXPECT_EQ(one.generate.stop().stop(0), "\n");
  EXPECT_EQ(one.generate.stop().max_tokens(), 12u);
  const ParsedRequest many =
      parse_ok(kCompletions, R"({"prompt": "x", "stop": ["a", "bc"], "stop_token_ids": [2, 9],
      "ignore_eos": true, "min_tokens": 4})");
  EXPECT_EQ(many.generate.stop().stop_size(), 2);
  EXPECT_EQ(many.generate.stop().stop(1), "bc");
  EXPECT_EQ(many.generate.stop().stop_token_ids_size(), 2);
  EXPECT_EQ(many.generate.stop().stop_token_ids(1), 9u);
  EXPECT_TRUE(many.generate.stop().ignore_eos());
  EXPECT_EQ(parse_ok(kCompletions, R"({"prompt": "x", "priority": -7})").generate.priority(), -7);
  EXPECT_NE(refusal(kCompletions, R"({"prompt": "x", "priority": 2147483648})").find("priority"),
            std::string::npos);
  EXPECT_EQ(many.generate.stop().min_tokens(), 4u);
  EXPECT_FALSE(many.generate.stop().include_stop_str_in_output());
  EXPECT_TRUE(parse_ok(kChat, R"({"messages": [{"role": "user", "content": "x"}], "stop": "a",
      "include_stop_str_in_output": true})")
                  .generate.stop()
                  .include_stop_str_in_output());
}

TEST(OpenAiRequest, UnsupportedFeaturesAreRefusedNotIgnored) {
  EXPECT_NE(refusal(kCompletions, R"({"prompt": "x", "suffix": "end"})").find("suffix: not supported"),
            std::string::npos);
  EXPECT_NE(refusal(kCompletions, R"({"prompt": "x", "best_of": 2})").find("best_of"), std::string::npos);
  parse_ok(kCompletions, R"({"prompt": "x", "echo": false, "suffix": "", "user": "u1", "unknown_field": [1],
      "use_beam_search": false, "include_stop_str_in_output": false, "skip_special_tokens": true})");
  // vLLM's extensions kvserve does not do, set to anything but their default.
  const std::pair<std::string, std::string> unhonoured[] = {
      {"use_beam_search", "true"}, {"skip_special_tokens", "false"}, {"guided_grammar", "\"root ::= x\""}};
  for (const auto& [field, value] : unhonoured) {
    const std::string body = R"({"prompt": "x", ")" + field + "\": " + value + "}";
    EXPECT_EQ(refusal(kCompletions, body).rfind(field + ": ", 0), 0u) << body;
  }
  EXPECT_NE(refusal(kChat, R"({"messages": [{"role": "user", "content": "x"}], "echo": true})").find("echo"),
            std::string::npos);
  EXPECT_NE(
      refusal(kChat,
              R"({"messages": [{"role": "user", "content": "x"}], "tool_choice": {"type": "function"}})")
          .find("tool_choice"),
      std::string::npos);
  EXPECT_NE(refusal(kChat, R"({"messages": [{"role": "user", "content": "x"}], "functions": [{}]})")
                .find("functions"),
            std::string::npos);
  EXPECT_NE(
      refusal(kChat, R"({"messages": [{"role": "user", "content": "x"}], "modalities": ["text", "audio"]})")
          .find("modalities"),
      std::string::npos);
}

TEST(OpenAiRequest, ModelNameMustBeTheServedOne) {
  parse_ok(kCompletions, R"({"prompt": "x", "model": "my-model"})");
  parse_ok(kCompletions, R"({"prompt": "x", "model": ""})");
  const std::string m = refusal(kCompletions, R"({"prompt": "x", "model": "gpt-4"})", StatusCode::kNotFound);
  EXPECT_NE(m.find("\"gpt-4\" is not served here"), std::string::npos);
  EXPECT_NE(m.find("\"my-model\""), std::string::npos);
}

TEST(OpenAiRequest, StreamingAndLogprobOptions) {
  const ParsedRequest c = parse_ok(
      kCompletions,
      R"({"prompt": "x", "stream": true, "stream_options": {"include_usage": true}, "logprobs": 3})");
  EXPECT_TRUE(c.stream);
  EXPECT_TRUE(c.include_usage);
  EXPECT_TRUE(c.logprobs);
  EXPECT_EQ(c.generate.top_logprobs(), 3u);
  const ParsedRequest zero = parse_ok(kCompletions, R"({"prompt": "x", "logprobs": 0})");
  EXPECT_TRUE(zero.logprobs);
  EXPECT_EQ(zero.generate.top_logprobs(), 0u);
  EXPECT_NE(
      refusal(kCompletions, R"({"prompt": "x", "logprobs": 21})").find("logprobs: 21 is outside [0, 20]"),
      std::string::npos);

  const std::string chat = R"({"messages": [{"role": "user", "content": "x"}], )";
  const ParsedRequest on = parse_ok(kChat, chat + R"("logprobs": true, "top_logprobs": 5})");
  EXPECT_TRUE(on.logprobs);
  EXPECT_EQ(on.generate.top_logprobs(), 5u);
  EXPECT_NE(refusal(kChat, chat + R"("top_logprobs": 2})").find("needs \"logprobs\": true"),
            std::string::npos);
}

TEST(OpenAiRequest, EchoAndPromptLogprobsAskForTheScoresTheyShow) {
  // echo with logprobs scores the prompt with as many alternatives; echo alone needs no scores.
  const ParsedRequest scored =
      parse_ok(kCompletions, R"({"prompt": [[1, 2], [3]], "echo": true, "logprobs": 2})");
  EXPECT_TRUE(scored.echo);
  EXPECT_EQ(scored.generate.prompt_logprobs(), 2u);
  ASSERT_EQ(scored.more_prompts.size(), 1u);
  EXPECT_EQ(scored.more_prompts[0].prompt_logprobs(), 2u) << "every prompt is scored";
  const ParsedRequest plain = parse_ok(kCompletions, R"({"prompt": "x", "echo": true})");
  EXPECT_TRUE(plain.echo);
  EXPECT_FALSE(plain.generate.has_prompt_logprobs());
  EXPECT_FALSE(parse_ok(kCompletions, R"({"prompt": "x", "echo": true, "stream": true})")
                   .generate.has_prompt_logprobs());

  // vLLM's prompt_logprobs, on both endpoints; with echo, the larger count is computed.
  const ParsedRequest vllm = parse_ok(kCompletions, R"({"prompt": "x", "prompt_logprobs": 5})");
  EXPECT_EQ(vllm.prompt_logprobs, 5);
  EXPECT_EQ(vllm.generate.prompt_logprobs(), 5u);
  EXPECT_EQ(parse_ok(kCompletions, R"({"prompt": "x", "prompt_logprobs": 1, "echo": true, "logprobs": 3})")
                .generate.prompt_logprobs(),
            3u);
  const std::string chat = R"({"messages": [{"role": "user", "content": "x"}], )";
  EXPECT_EQ(parse_ok(kChat, chat + R"("prompt_logprobs": 0})").generate.prompt_logprobs(), 0u);

  // max_tokens 0 with echo: the prompt alone; the engine still generates its one token.
  const ParsedRequest prompt_only =
      parse_ok(kCompletions, R"({"prompt": "x", "echo": true, "max_tokens": 0})");
  EXPECT_TRUE(prompt_only.prompt_only);
  EXPECT_EQ(prompt_only.generate.stop().max_tokens(), 1u);
  EXPECT_FALSE(parse_ok(kCompletions, R"({"prompt": "x", "echo": true, "max_tokens": 3})").prompt_only);
  EXPECT_NE(refusal(kCompletions, R"({"prompt": "x", "max_tokens": 0})").find("max_tokens"),
            std::string::npos);
  EXPECT_EQ(refusal(kCompletions, R"({"prompt": "x", "echo": true, "logprobs": 1, "stream": true})"),
            "echo: with logprobs is not available when streaming; set stream to false");
  EXPECT_EQ(refusal(kChat, chat + R"("prompt_logprobs": 1, "stream": true})"),
            "prompt_logprobs: not available when streaming; set stream to false");
  EXPECT_NE(refusal(kCompletions, R"({"prompt": "x", "prompt_logprobs": 21})").find("prompt_logprobs: 21"),
            std::string::npos);
  EXPECT_NE(refusal(kCompletions, R"({"prompt": "x", "echo": 1})").find("echo"), std::string::npos);
}

TEST(OpenAiRequest, ResponseFormats) {
  const std::string p = R"({"prompt": "x", "response_format": )";
  EXPECT_FALSE(parse_ok(kCompletions, p + R"({"type": "text"}})").generate.has_response_format());
  EXPECT_EQ(
      Json::parse(
          parse_ok(kCompletions, p + R"({"type": "json_object"}})").generate.response_format().json_schema()),
      Json::parse(R"({"type": "object"})"));
  const ParsedRequest schema =
      parse_ok(kCompletions, p + R"({"type": "json_schema", "json_schema": {"name": "p", "strict": true,
          "schema": {"type": "object", "properties": {"a": {"type": "integer"}}}}}})");
  EXPECT_EQ(Json::parse(schema.generate.response_format().json_schema()),
            Json::parse(R"({"type": "object", "properties": {"a": {"type": "integer"}}})"));
  // Properties keep the client's order, which the constrained output follows (not sorted).
  const ParsedRequest ordered = parse_ok(kCompletions, p + R"({"type": "json_schema", "json_schema": {
      "schema": {"properties": {"zeta": {"type": "integer"}, "alpha": {"type": "integer"}}}}}})");
  const std::string ordered_schema = ordered.generate.response_format().json_schema();
  EXPECT_LT(ordered_schema.find("zeta"), ordered_schema.find("alpha")) << ordered_schema;
  EXPECT_EQ(parse_ok(kCompletions, p + R"({"type": "regex", "regex": "[0-9]+"}})")
                .generate.response_format()
                .regex(),
            "[0-9]+");
  const ParsedRequest choice = parse_ok(kCompletions, p + R"({"type": "choice", "choice": ["yes", "no"]}})");
  ASSERT_EQ(choice.generate.response_format().choice().values_size(), 2);
  EXPECT_EQ(choice.generate.response_format().choice().values(1), "no");

  // vLLM's guided_* fields are the same constraints; only one constraint per request.
  EXPECT_EQ(Json::parse(parse_ok(kCompletions, R"({"prompt": "x", "guided_json": {"type": "integer"}})")
                            .generate.response_format()
                            .json_schema()),
            Json::parse(R"({"type": "integer"})"));
  EXPECT_EQ(parse_ok(kCompletions, R"({"prompt": "x", "guided_json": "{\"type\": \"string\"}"})")
                .generate.response_format()
                .json_schema(),
            R"({"type": "string"})");
  EXPECT_EQ(
      parse_ok(kCompletions, R"({"prompt": "x", "guided_regex": "a+"})").generate.response_format().regex(),
      "a+");
  EXPECT_EQ(parse_ok(kCompletions, R"({"prompt": "x", "guided_choice": ["a", "b"]})")
                .generate.response_format()
                .choice()
                .values_size(),
            2);
  EXPECT_NE(refusal(kCompletions, R"({"prompt": "x", "guided_regex": "a", "guided_choice": ["a"]})")
                .find("send one constraint"),
            std::string::npos);
  EXPECT_NE(refusal(kCompletions, p + R"({"type": "regex", "regex": "b"}, "guided_regex": "a"})")
                .find("send one constraint"),
            std::string::npos);

  // An empty list stays a (refused) choice format, not "no format": the service says it is empty.
  const ParsedRequest none = parse_ok(kCompletions, p + R"({"type": "choice", "choice": []}})");
  EXPECT_EQ(none.generate.response_format().format_case(), v1::ResponseFormat::kChoice);
  EXPECT_EQ(none.generate.response_format().choice().values_size(), 0);

  EXPECT_NE(refusal(kCompletions, p + R"({"type": "xml"}})").find("\"xml\" is not supported"),
            std::string::npos);
  EXPECT_NE(refusal(kCompletions, p + R"({}})").find("response_format.type: missing"), std::string::npos);
  EXPECT_NE(refusal(kCompletions, p + R"({"type": "json_schema", "json_schema": {"name": "p"}}})")
                .find("response_format.json_schema.schema"),
            std::string::npos);
  EXPECT_NE(refusal(kCompletions, p + R"({"type": "choice", "choice": ["a", 1]}})")
                .find("response_format.choice[1]"),
            std::string::npos);
}

TEST(OpenAiRequest, ChatMessagesBecomeTheProtoConversation) {
  const ParsedRequest r = parse_ok(kChat, R"({"messages": [
      {"role": "system", "content": "Be brief."},
      {"role": "user", "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}], "name": "ann"},
      {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
                                                             "function": {"name": "f", "arguments": "{\"a\": [1]}"}}]},
      {"role": "tool", "content": "42", "tool_call_id": "c1"}],
    "max_tokens": 7, "max_completion_tokens": 9,
    "chat_template_kwargs": {"enable_thinking": false}, "continue_final_message": false})");
  const v1::Chat& chat = r.generate.chat();
  ASSERT_EQ(chat.messages_size(), 4);
  EXPECT_EQ(chat.messages(0).role(), "system");
  EXPECT_EQ(chat.messages(0).content(), "Be brief.");
  EXPECT_TRUE(chat.messages(0).extra_json().empty());
  EXPECT_EQ(chat.messages(1).content(), "one\ntwo");  // text parts joined by newlines
  EXPECT_EQ(Json::parse(chat.messages(1).extra_json()), Json::parse(R"({"name": "ann"})"));
  // A null content reaches the template as None (the proto's extra_json sets it after content);
  // a call's arguments as the object their JSON text stands for, as templates read them.
  EXPECT_EQ(Json::parse(chat.messages(2).extra_json()),
            Json::parse(R"({"content": null, "tool_calls": [{"id": "c1", "type": "function",
                            "function": {"name": "f", "arguments": {"a": [1]}}}]})"));
  EXPECT_EQ(Json::parse(chat.messages(3).extra_json()), Json::parse(R"({"tool_call_id": "c1"})"));
  EXPECT_EQ(r.generate.stop().max_tokens(), 9u);  // max_completion_tokens wins
  EXPECT_EQ(Json::parse(chat.template_kwargs_json()), Json::parse(R"({"enable_thinking": false})"));
  EXPECT_FALSE(chat.has_add_generation_prompt());  // unset: the proto's default applies
  EXPECT_FALSE(chat.continue_final_message());

  // Tools with tool_choice "none" are rendered (the model sees them, as OpenAI's does), and the
  // reply is text.
  const ParsedRequest none = parse_ok(kChat, R"({"messages": [{"role": "user", "content": "x"}],
      "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "none",
      "add_generation_prompt": false})");
  EXPECT_EQ(Json::parse(none.generate.chat().tools_json()),
            Json::parse(R"([{"type": "function", "function": {"name": "f"}}])"));
  EXPECT_FALSE(none.tool_calls.has_value());
  ASSERT_TRUE(none.generate.chat().has_add_generation_prompt());
  EXPECT_FALSE(none.generate.chat().add_generation_prompt());
}

TEST(OpenAiRequest, ChatRefusalsNameTheMessage) {
  EXPECT_NE(refusal(kChat, R"({})").find("messages: expected a non-empty array"), std::string::npos);
  EXPECT_NE(refusal(kChat, R"({"messages": []})").find("messages: expected a non-empty array"),
            std::string::npos);
  EXPECT_NE(refusal(kChat, R"({"messages": [{"content": "x"}]})").find("messages[0].role"),
            std::string::npos);
  EXPECT_NE(refusal(kChat, R"({"messages": [{"role": "user", "content": 5}]})").find("messages[0].content"),
            std::string::npos);
  EXPECT_NE(refusal(kChat, R"({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content":
      [{"type": "image_url", "image_url": {"url": "x"}}]}]})")
                .find("messages[1].content[0]: only parts of type \"text\""),
            std::string::npos);
}

// Two tools in the shape OpenAI's reference gives them; the keys out of alphabetical order, as a
// client may write them (they reach the template, and the schema's property order, as written).
const std::string kTools = R"("tools": [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather now",
     "parameters": {"type": "object", "properties": {"unit": {"enum": ["C", "F"]}, "city": {"type": "string"}},
                    "required": ["city"]}}},
    {"type": "function", "function": {"name": "now"}}])";

std::string chat_with(const std::string& fields) {
  return R"({"messages": [{"role": "user", "content": "Weather in Oslo?"}], )" + fields + "}";
}

TEST(OpenAiRequest, ToolChoiceAutoRendersTheToolsAndReadsTheServedFormat) {
  for (const std::string& body : {chat_with(kTools), chat_with(kTools + R"(, "tool_choice": "auto")")}) {
    const ParsedRequest r = parse_ok(kChat, body, kServedHermes);
    EXPECT_EQ(Json::parse(r.generate.chat().tools_json()), Json::parse(body)["tools"]);
    // Key order kept: "unit" before "city", as the client wrote them.
    EXPECT_LT(r.generate.chat().tools_json().find("\"unit\""),
              r.generate.chat().tools_json().find("\"city\""));
    EXPECT_TRUE(r.tool_calls.has_value());
    EXPECT_FALSE(r.generate.has_response_format()) << "auto leaves the reply free";
  }
  // A model whose template teaches no format kvserve reads: calls could not come back as
  // tool_calls, so "auto" is refused with the choices that work.
  const std::string m = refusal(kChat, chat_with(kTools));
  EXPECT_EQ(m.rfind("tools: this model's chat template teaches no tool-call format", 0), 0u) << m;
  EXPECT_NE(m.find("tool_choice \"required\" or a named function"), std::string::npos) << m;
  EXPECT_NE(m.find("--tool-call-parser"), std::string::npos) << m;
  // "none", and no tools at all, read nothing.
  EXPECT_FALSE(parse_ok(kChat, chat_with(kTools + R"(, "tool_choice": "none")"), kServedHermes).tool_calls);
  EXPECT_FALSE(parse_ok(kChat, chat_with(R"("tools": [])"), kServedHermes).tool_calls);
  EXPECT_FALSE(parse_ok(kChat, chat_with(R"("tools": null, "parallel_tool_calls": false)")).tool_calls);
}

TEST(OpenAiRequest, ToolChoiceRequiredConstrainsTheReplyToAnArrayOfCalls) {
  // Needs no format: the constraint makes the reply the calls themselves.
  const ParsedRequest r = parse_ok(kChat, chat_with(kTools + R"(, "tool_choice": "required")"));
  ASSERT_TRUE(r.tool_calls.has_value());
  EXPECT_FALSE(r.generate.chat().tools_json().empty());
  const Json expected = Json::parse(R"({"type": "array", "minItems": 1, "items": {"anyOf": [
      {"type": "object",
       "properties": {"name": {"const": "get_weather"},
                      "parameters": {"type": "object",
                                     "properties": {"unit": {"enum": ["C", "F"]}, "city": {"type": "string"}},
                                     "required": ["city"]}},
       "required": ["name", "parameters"]},
      {"type": "object",
       "properties": {"name": {"const": "now"}, "parameters": {"type": "object"}},
       "required": ["name", "parameters"]}]}})");
  EXPECT_EQ(Json::parse(r.generate.response_format().json_schema()), expected);
  // One call only when the client asks for no parallel calls.
  const ParsedRequest one =
      parse_ok(kChat, chat_with(kTools + R"(, "tool_choice": "required", "parallel_tool_calls": false)"));
  EXPECT_EQ(Json::parse(one.generate.response_format().json_schema())["maxItems"], 1);
}

TEST(OpenAiRequest, NamedToolChoiceConstrainsTheReplyToItsArguments) {
  const ParsedRequest r = parse_ok(
      kChat,
      chat_with(kTools + R"(, "tool_choice": {"type": "function", "function": {"name": "get_weather"}})"));
  ASSERT_TRUE(r.tool_calls.has_value());
  const std::string schema = r.generate.response_format().json_schema();
  EXPECT_EQ(Json::parse(schema),
            Json::parse(kTools.substr(kTools.find(':') + 1))[0]["function"]["parameters"]);
  EXPECT_LT(schema.find("\"unit\""), schema.find("\"city\"")) << "properties in the order the client gave";
  const ParsedRequest no_parameters = parse_ok(
      kChat, chat_with(kTools + R"(, "tool_choice": {"type": "function", "function": {"name": "now"}})"));
  EXPECT_EQ(Json::parse(no_parameters.generate.response_format().json_schema()),
            Json::parse(R"({"type": "object"})"));
}

TEST(OpenAiRequest, ToolRefusalsNameTheFieldAndWhatToSend) {
  const std::pair<std::string, std::string> cases[] = {
      {R"("tools": {"name": "f"})", "tools: expected an array of tool specifications, got object"},
      {R"("tools": [3])", "tools[0]: expected an object"},
      {R"("tools": [{"type": "retrieval"}])", "tools[0].type: only \"function\" tools are supported"},
      {R"("tools": [{"type": "function"}])", "tools[0].function: expected an object"},
      {R"("tools": [{"type": "function", "function": {"name": ""}}])", "tools[0].function.name: expected"},
      {R"("tools": [{"function": {"name": "f"}}, {"function": {"name": "f"}}])",
       "tools[1].function.name: \"f\" names two tools"},
      {R"("tools": [{"function": {"name": "f", "parameters": "x"}}])",
       "tools[0].function.parameters: expected a JSON schema (an object), got string"},
      {R"("tool_choice": "required")", "tool_choice: a tool choice needs tools"},
      {kTools + R"(, "tool_choice": "any")", "tool_choice: \"any\" is not a choice; send \"none\""},
      {kTools + R"(, "tool_choice": 1)", "tool_choice: expected \"none\", \"auto\", \"required\" or a"},
      {kTools + R"(, "tool_choice": {"type": "function"})", "tool_choice: expected {\"type\": \"function\""},
      {kTools + R"(, "tool_choice": {"type": "function", "function": {"name": "weather"}})",
       "tool_choice.function.name: no tool is named \"weather\""},
      {kTools + R"(, "tool_choice": "required", "response_format": {"type": "json_object"})",
       "tool_choice: \"required\" constrains the reply to calls itself; leave response_format"},
      {kTools + R"(, "tool_choice": "required", "parallel_tool_calls": "no")",
       "parallel_tool_calls: expected true or false"},
      // A schema the constraint cannot follow is reported against the tool that has it.
      {R"("tools": [{"function": {"name": "a"}}, {"function": {"name": "b", "parameters": {"type": "object",
           "properties": {"n": {"type": "integer", "minimum": 0}}}}}], "tool_choice": "required")",
       "tools[1].function.parameters: json_schema: keyword 'minimum'"},
  };
  for (const auto& [fields, message] : cases) {
    const std::string m = refusal(kChat, chat_with(fields), StatusCode::kInvalidArgument, kServedHermes);
    EXPECT_EQ(m.rfind(message, 0), 0u) << fields << "\n -> " << m;
  }
  // The auto reply is free, so a schema only matters once it constrains the reply.
  parse_ok(kChat, chat_with(R"("tools": [{"function": {"name": "b", "parameters": {"type": "object",
           "properties": {"n": {"type": "integer", "minimum": 0}}}}}])"),
           kServedHermes);
}

TEST(OpenAiRequest, HistoryCallArgumentsMustBeJsonObjects) {
  auto history = [](const std::string& calls) {
    return R"({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": )" + calls +
           "}]}";
  };
  const ParsedRequest r = parse_ok(
      kChat,
      history(
          R"([{"function": {"name": "f", "arguments": ""}}, {"function": {"name": "g", "arguments": {"k": 1}}}])"));
  EXPECT_EQ(
      Json::parse(r.generate.chat().messages(1).extra_json())["tool_calls"],
      Json::parse(
          R"([{"function": {"name": "f", "arguments": {}}}, {"function": {"name": "g", "arguments": {"k": 1}}}])"));
  EXPECT_EQ(
      refusal(kChat, history(R"([{"function": {"name": "f", "arguments": "city=Oslo"}}])"))
          .rfind("messages[1].tool_calls[0].function.arguments: expected the JSON text of an object", 0),
      0u);
  EXPECT_EQ(refusal(kChat, history(R"([{"function": {"name": "f", "arguments": "[1]"}}])"))
                .rfind("messages[1].tool_calls[0].function.arguments", 0),
            0u);
  EXPECT_EQ(refusal(kChat, history(R"([{"function": {"name": "f", "arguments": 3}}])"))
                .rfind("messages[1].tool_calls[0].function.arguments: expected the JSON text", 0),
            0u);
  // Nesting inside the text, which the body's own check does not see (it is a string there): the
  // parser would recurse through it.
  const std::string deep = R"([{"function": {"name": "f", "arguments": "{\"a\": )" + std::string(300, '[') +
                           std::string(300, ']') + R"(}"}}])";
  EXPECT_EQ(refusal(kChat, history(deep))
                .rfind("messages[1].tool_calls[0].function.arguments: nested deeper than 256", 0),
            0u);
  EXPECT_EQ(
      refusal(kChat, history(R"({"function": {}})")).rfind("messages[1].tool_calls: expected an array", 0),
      0u);
  EXPECT_EQ(
      refusal(kChat, history(R"([{"id": "c1"}])")).rfind("messages[1].tool_calls[0].function: expected", 0),
      0u);
}

TEST(OpenAiRequest, TokenizeTakesAPromptOrAConversation) {
  ParsedTokenize text;
  ASSERT_TRUE(parse_tokenize_request(R"({"model": "my-model", "prompt": "Hello", "return_token_strs": true})",
                                     kServed, &text)
                  .ok());
  EXPECT_EQ(text.tokenize.text(), "Hello");
  EXPECT_TRUE(text.tokenize.add_bos());  // add_special_tokens defaults to true for a prompt
  EXPECT_TRUE(text.return_token_strs);
  ASSERT_TRUE(
      parse_tokenize_request(R"({"prompt": "Hi", "add_special_tokens": false})", kServed, &text).ok());
  EXPECT_FALSE(text.tokenize.add_bos());

  // A conversation is the prompt the chat endpoint would run: template options and tools as there.
  ParsedTokenize chat;
  ASSERT_TRUE(parse_tokenize_request(chat_with(kTools + R"(, "add_generation_prompt": false,
      "continue_final_message": true, "chat_template_kwargs": {"enable_thinking": false})"),
                                     kServed, &chat)
                  .ok());
  ASSERT_EQ(chat.tokenize.chat().messages_size(), 1);
  EXPECT_EQ(chat.tokenize.chat().messages(0).content(), "Weather in Oslo?");
  EXPECT_EQ(Json::parse(chat.tokenize.chat().tools_json()).size(), 2u);
  EXPECT_FALSE(chat.tokenize.chat().add_generation_prompt());
  EXPECT_TRUE(chat.tokenize.chat().continue_final_message());
  EXPECT_EQ(Json::parse(chat.tokenize.chat().template_kwargs_json()),
            Json::parse(R"({"enable_thinking": false})"));

  const std::pair<std::string, std::string> refused[] = {
      {R"({})", "prompt: send either \"prompt\" (text) or \"messages\""},
      {R"({"prompt": "a", "messages": [{"role": "user", "content": "b"}]})", "prompt: send either"},
      {R"({"prompt": [1, 2]})", "prompt: expected a string, got array"},
      {R"({"messages": [{"role": "user", "content": "b"}], "add_special_tokens": true})",
       "add_special_tokens: not for messages"},
      {R"({"messages": []})", "messages: expected a non-empty array"},
      {R"({"prompt": "a", "return_token_strs": 1})", "return_token_strs: expected true or false"},
  };
  for (const auto& [body, message] : refused) {
    ParsedTokenize out;
    const Status s = parse_tokenize_request(body, kServed, &out);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << body;
    EXPECT_EQ(s.message().rfind(message, 0), 0u) << body << " -> " << s.message();
  }
  ParsedTokenize other;
  EXPECT_EQ(parse_tokenize_request(R"({"model": "gpt-4", "prompt": "a"})", kServed, &other).code(),
            StatusCode::kNotFound);
}

TEST(OpenAiRequest, DetokenizeTakesTokenIds) {
  v1::DetokenizeRequest out;
  ASSERT_TRUE(parse_detokenize_request(R"({"tokens": [1, 450, 7]})", kServed, &out).ok());
  EXPECT_EQ(std::vector<uint32_t>(out.token_ids().begin(), out.token_ids().end()),
            (std::vector<uint32_t>{1, 450, 7}));
  ASSERT_TRUE(parse_detokenize_request(R"({"tokens": []})", kServed, &out).ok());
  EXPECT_EQ(out.token_ids_size(), 0);
  EXPECT_EQ(parse_detokenize_request(R"({"tokens": [1, -1]})", kServed, &out).message(),
            "tokens[1]: expected a token id (an integer from 0)");
  EXPECT_EQ(parse_detokenize_request(R"({"tokens": "1 2"})", kServed, &out).message(),
            "tokens: expected an array of token ids");
  EXPECT_EQ(parse_detokenize_request(R"({"model": "x", "tokens": [1]})", kServed, &out).code(),
            StatusCode::kNotFound);
}

TEST(OpenAiRequest, EmbeddingsTakeEveryInputShapeAndTheirOptions) {
  ParsedEmbeddings one;
  ASSERT_TRUE(parse_embeddings_request(R"({"model": "my-model", "input": "Hello"})", kServed, &one).ok());
  ASSERT_EQ(one.embed.inputs_size(), 1);
  EXPECT_EQ(one.embed.inputs(0).text(), "Hello");
  EXPECT_FALSE(one.base64);
  EXPECT_FALSE(one.embed.no_normalize());
  EXPECT_FALSE(one.embed.no_bos());
  EXPECT_EQ(one.embed.dimensions(), 0u);

  ParsedEmbeddings ids;
  ASSERT_TRUE(parse_embeddings_request(R"({"input": [3, 4, 5]})", kServed, &ids).ok());
  ASSERT_EQ(ids.embed.inputs_size(), 1);
  EXPECT_EQ(ids.embed.inputs(0).token_ids().ids_size(), 3);

  ParsedEmbeddings many;
  ASSERT_TRUE(parse_embeddings_request(R"({"input": ["a", "b"], "encoding_format": "base64", "dimensions": 8,
                                           "normalize": false, "add_special_tokens": false})",
                                       kServed, &many)
                  .ok());
  ASSERT_EQ(many.embed.inputs_size(), 2);
  EXPECT_EQ(many.embed.inputs(1).text(), "b");
  EXPECT_TRUE(many.base64);
  EXPECT_EQ(many.embed.dimensions(), 8u);
  EXPECT_TRUE(many.embed.no_normalize());
  EXPECT_TRUE(many.embed.no_bos());

  ParsedEmbeddings lists;
  ASSERT_TRUE(parse_embeddings_request(R"({"input": [[1, 2], [3]]})", kServed, &lists).ok());
  ASSERT_EQ(lists.embed.inputs_size(), 2);
  EXPECT_EQ(lists.embed.inputs(1).token_ids().ids(0), 3u);

  const std::pair<std::string, std::string> refused[] = {
      {R"({})", "input: missing"},
      {R"({"input": ""})", "input: empty"},
      {R"({"input": ["a", ""]})", "input[1]: empty"},
      {R"({"input": [[1], [-2]]})", "input[1][0]: expected a token id"},
      {R"({"input": 7})", "input: expected a string or an array of token ids"},
      {R"({"input": "a", "encoding_format": "int8"})", "encoding_format: \"int8\" is not one of"},
      {R"({"input": "a", "dimensions": 0})", "dimensions: 0 is outside"},
      {R"({"input": "a", "normalize": "yes"})", "normalize: expected true or false"},
  };
  for (const auto& [body, message] : refused) {
    ParsedEmbeddings out;
    const Status s = parse_embeddings_request(body, kServed, &out);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << body;
    EXPECT_EQ(s.message().rfind(message, 0), 0u) << body << " -> " << s.message();
  }
  ParsedEmbeddings other;
  EXPECT_EQ(parse_embeddings_request(R"({"model": "x", "input": "a"})", kServed, &other).code(),
            StatusCode::kNotFound);
}

TEST(OpenAiRequest, BodiesThatAreNotObjectsAreRefused) {
  EXPECT_NE(refusal(kCompletions, "{\"prompt\": ").find("not valid JSON"), std::string::npos);
  EXPECT_EQ(refusal(kCompletions, "[1, 2]"), "request body: expected a JSON object, got array");
  EXPECT_NE(refusal(kCompletions, "").find("not valid JSON"), std::string::npos);
  // Deep nesting is refused before the (recursive) parser sees it; brackets in strings do not count.
  const std::string deep =
      "{\"prompt\": \"x\", \"a\": " + std::string(300, '[') + std::string(300, ']') + "}";
  EXPECT_NE(refusal(kCompletions, deep).find("nested deeper than 256"), std::string::npos);
  // An object of more members than any field takes (logit_bias: 1024) is refused before the parser,
  // which keeps key order at a cost quadratic in the members.
  std::string wide = R"({"prompt": "x", "logit_bias": {)";
  for (int i = 0; i < 1025; ++i)
    wide += (i ? ", \"" : "\"") + std::to_string(i) + "\": 1";
  EXPECT_EQ(refusal(kCompletions, wide + "}}"), "request body: an object with more than 1024 members");
  wide.resize(wide.rfind(','));
  parse_ok(kCompletions, wide + "}}");                                            // 1024 members
  parse_ok(kCompletions, R"({"prompt": "{,,,[,,]}", "stop": [",", ",", "}"]})");  // commas in strings
  parse_ok(kCompletions, "{\"prompt\": \"" + std::string(300, '[') + "\"}");
}

// ---- replies ----

v1::GenerateResponse message(uint32_t index, const std::string& text,
                             std::vector<std::pair<uint32_t, float>> tokens,
                             v1::FinishReason finish = v1::FINISH_REASON_UNSPECIFIED) {
  v1::GenerateResponse m;
  m.set_request_id("r7");
  m.set_index(index);
  m.set_text(text);
  for (const auto& [id, logprob] : tokens) {
    m.add_token_ids(id);
    v1::TokenLogprob* lp = m.add_logprobs();
    lp->set_token_id(id);
    lp->set_logprob(logprob);
  }
  m.set_finish_reason(finish);
  return m;
}

void set_usage(v1::GenerateResponse& m, uint32_t prompt, uint32_t completion, uint32_t cached) {
  m.mutable_usage()->set_prompt_tokens(prompt);
  m.mutable_usage()->set_completion_tokens(completion);
  m.mutable_usage()->set_cached_prompt_tokens(cached);
}

// The JSON of each "data:" event; "[DONE]" as a string.
std::vector<Json> events_of(const std::string& events) {
  std::vector<Json> out;
  size_t pos = 0;
  while (pos < events.size()) {
    EXPECT_EQ(events.compare(pos, 6, "data: "), 0) << events.substr(pos);
    const size_t end = events.find("\n\n", pos);
    EXPECT_NE(end, std::string::npos);
    const std::string data = events.substr(pos + 6, end - pos - 6);
    out.push_back(data == "[DONE]" ? Json("[DONE]") : Json::parse(data));
    pos = end + 2;
  }
  return out;
}

TEST(OpenAiReply, CompletionCollectsInterleavedChoicesInIndexOrder) {
  ParsedRequest request = parse_ok(kCompletions, R"({"prompt": "x", "n": 2})");
  ReplyBuilder reply(request, 1700000000, nullptr);
  reply.add(message(1, "B", {{5, -0.5f}}));
  reply.add(message(0, "A", {{4, -0.25f}}));
  v1::GenerateResponse last1 = message(1, "b", {{6, -1.0f}}, v1::FINISH_REASON_STOP);
  set_usage(last1, 10, 2, 8);
  reply.add(last1);
  v1::GenerateResponse last0 = message(0, "a!", {{7, -2.0f}, {8, -3.0f}}, v1::FINISH_REASON_LENGTH);
  set_usage(last0, 10, 3, 4);
  reply.add(last0);
  const Json expected = Json::parse(R"({
    "id": "cmpl-r7", "object": "text_completion", "created": 1700000000, "model": "my-model",
    "choices": [
      {"index": 0, "text": "Aa!", "logprobs": null, "finish_reason": "length", "stop_reason": null},
      {"index": 1, "text": "Bb", "logprobs": null, "finish_reason": "stop", "stop_reason": null}],
    "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15,
              "prompt_tokens_details": {"cached_tokens": 4}}})");
  EXPECT_EQ(Json::parse(reply.body()), expected);
}

// vLLM's stop_reason: the stop string or stop token id that ended a choice, null for EOS, the
// length or anything else; whole and streamed (null until the choice finishes).
TEST(OpenAiReply, StopReasonNamesTheStopStringOrStopTokenThatEndedAChoice) {
  ParsedRequest request =
      parse_ok(kCompletions, R"({"prompt": "x", "n": 4, "stop": ["END"], "stop_token_ids": [9]})");
  ReplyBuilder reply(request, 1, nullptr);
  v1::GenerateResponse by_string = message(0, "a", {{5, -0.5f}}, v1::FINISH_REASON_STOP);
  by_string.set_stop_string("END");
  const v1::GenerateResponse by_token = message(1, "b", {{9, -0.5f}}, v1::FINISH_REASON_STOP);
  const v1::GenerateResponse by_eos = message(2, "c", {{2, -0.5f}}, v1::FINISH_REASON_STOP);
  const v1::GenerateResponse by_length = message(3, "d", {{9, -0.5f}}, v1::FINISH_REASON_LENGTH);
  for (const v1::GenerateResponse& m : {by_string, by_token, by_eos, by_length})
    reply.add(m);
  const Json body = Json::parse(reply.body());
  EXPECT_EQ(body["choices"][0]["stop_reason"], "END");
  EXPECT_EQ(body["choices"][1]["stop_reason"], 9);
  EXPECT_EQ(body["choices"][2]["stop_reason"], nullptr);
  EXPECT_EQ(body["choices"][3]["stop_reason"], nullptr);

  request.stream = true;
  ReplyBuilder stream(request, 1, nullptr);
  EXPECT_EQ(events_of(stream.event(message(0, "x", {{4, -0.5f}})))[0]["choices"][0]["stop_reason"], nullptr);
  EXPECT_EQ(events_of(stream.event(by_string))[0]["choices"][0]["stop_reason"], "END");
}

TEST(OpenAiReply, SeveralPromptsCountEachPromptOnce) {
  // Two prompts, two choices each: choices 0-1 are prompt 0's, 2-3 prompt 1's (the HTTP server
  // numbers them so). Each prompt's tokens count once, its cached ones from its first choice.
  ParsedRequest request = parse_ok(kCompletions, R"({"prompt": ["x", "y"], "n": 2})");
  ReplyBuilder reply(request, 1, nullptr);
  const uint32_t prompt_tokens[] = {10, 10, 7, 7}, cached[] = {4, 9, 0, 5};
  for (uint32_t i = 0; i < 4; ++i) {
    v1::GenerateResponse m = message(i, "t" + std::to_string(i), {{1, -1.0f}}, v1::FINISH_REASON_LENGTH);
    set_usage(m, prompt_tokens[i], 1, cached[i]);
    reply.add(m);
  }
  const Json body = Json::parse(reply.body());
  ASSERT_EQ(body["choices"].size(), 4u);
  EXPECT_EQ(body["choices"][3]["text"], "t3");
  EXPECT_EQ(body["usage"], Json::parse(R"({"prompt_tokens": 17, "completion_tokens": 4, "total_tokens": 21,
      "prompt_tokens_details": {"cached_tokens": 4}})"));
}

TEST(OpenAiReply, ChatStreamNamesTheRoleOnceAndEndsWithUsageAndDone) {
  ParsedRequest request = parse_ok(
      kChat,
      R"({"messages": [{"role": "user", "content": "x"}], "stream": true, "stream_options": {"include_usage": true}})");
  ReplyBuilder reply(request, 5, nullptr);
  const std::vector<Json> first = events_of(reply.event(message(0, "Hel", {{1, -1.0f}})));
  ASSERT_EQ(first.size(), 1u);
  EXPECT_EQ(first[0], Json::parse(R"({"id": "chatcmpl-r7", "object": "chat.completion.chunk", "created": 5,
      "model": "my-model", "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hel"},
      "logprobs": null, "finish_reason": null, "stop_reason": null}], "usage": null})"));
  // A token whose text is held back (part of a character, a possible stop string) shows nothing.
  EXPECT_EQ(reply.event(message(0, "", {{2, -1.0f}})), "");
  v1::GenerateResponse last = message(0, "lo", {{3, -1.0f}}, v1::FINISH_REASON_STOP);
  set_usage(last, 4, 3, 0);
  const std::vector<Json> end = events_of(reply.event(last));
  ASSERT_EQ(end.size(), 1u);
  EXPECT_EQ(end[0]["choices"][0]["delta"], Json::parse(R"({"content": "lo"})"));
  EXPECT_EQ(end[0]["choices"][0]["finish_reason"], "stop");
  const std::vector<Json> closing = events_of(reply.closing_events());
  ASSERT_EQ(closing.size(), 2u);
  EXPECT_EQ(closing[0]["choices"], Json::array());
  EXPECT_EQ(closing[0]["usage"],
            Json::parse(R"({"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7,
      "prompt_tokens_details": {"cached_tokens": 0}})"));
  EXPECT_EQ(closing[1], "[DONE]");
}

TEST(OpenAiReply, CompletionStreamWithoutUsageEndsWithDoneOnly) {
  ParsedRequest request = parse_ok(kCompletions, R"({"prompt": "x", "stream": true})");
  ReplyBuilder reply(request, 5, nullptr);
  const std::vector<Json> chunk =
      events_of(reply.event(message(0, "abc", {{1, -1.0f}}, v1::FINISH_REASON_ABORTED)));
  ASSERT_EQ(chunk.size(), 1u);
  EXPECT_FALSE(chunk[0].contains("usage"));
  EXPECT_EQ(chunk[0]["choices"][0]["text"], "abc");
  EXPECT_EQ(chunk[0]["choices"][0]["finish_reason"], "abort");
  EXPECT_EQ(reply.closing_events(), "data: [DONE]\n\n");
}

std::shared_ptr<const Tokenizer> tiny_tokenizer() {
  return Tokenizer::load_from_model_dir(std::string(KVSERVE_TEST_DATA) + "/models/tiny-llama");
}

TEST(OpenAiReply, LogprobsSpellTokensWithTheTokenizer) {
  const auto tokenizer = tiny_tokenizer();
  // Two tokens spelled apart, in printable ASCII of two or more characters.
  std::vector<TokenId> ids;
  for (TokenId id = 0; id < tokenizer->vocab_size() && ids.size() < 2; ++id) {
    const std::string b = tokenizer->token_bytes(id);
    bool printable = b.size() >= 2;
    for (const char ch : b)
      printable = printable && ch > 0x20 && ch < 0x7f;
    if (printable && (ids.empty() || tokenizer->token_bytes(ids[0]) != b)) ids.push_back(id);
  }
  ASSERT_EQ(ids.size(), 2u);
  const auto id0 = static_cast<uint32_t>(ids[0]), id1 = static_cast<uint32_t>(ids[1]);
  const std::string t0 = tokenizer->token_bytes(ids[0]), t1 = tokenizer->token_bytes(ids[1]);
  const auto eos = static_cast<uint32_t>(*tokenizer->eos_id());

  // Completions: four parallel arrays; offsets count characters of the token texts so far.
  ParsedRequest completion = parse_ok(kCompletions, R"({"prompt": "x", "logprobs": 1})");
  ReplyBuilder c(completion, 1, tokenizer.get());
  v1::GenerateResponse m = message(0, "text", {{id0, -0.5f}, {id1, -1.5f}});
  m.mutable_logprobs(0)->add_top()->set_token_id(id1);
  m.mutable_logprobs(0)->mutable_top(0)->set_logprob(-0.25f);
  m.mutable_logprobs(1)->add_top()->set_token_id(id0);
  m.mutable_logprobs(1)->mutable_top(0)->set_logprob(-0.75f);
  c.add(m);
  c.add(message(0, "", {{eos, -2.0f}}, v1::FINISH_REASON_STOP));
  const Json lp = Json::parse(c.body())["choices"][0]["logprobs"];
  EXPECT_EQ(lp["tokens"], Json::array({t0, t1, tokenizer->token_spelling(static_cast<TokenId>(eos))}));
  EXPECT_EQ(lp["token_logprobs"], Json::array({-0.5, -1.5, -2.0}));
  // Each token's alternatives and the token itself, as OpenAI's legacy API lists them.
  EXPECT_EQ(lp["top_logprobs"][0], Json::object({{t1, -0.25}, {t0, -0.5}}));
  EXPECT_EQ(lp["top_logprobs"][1], Json::object({{t0, -0.75}, {t1, -1.5}}));
  EXPECT_EQ(lp["top_logprobs"][2],
            Json::object({{tokenizer->token_spelling(static_cast<TokenId>(eos)), -2.0}}));
  EXPECT_EQ(lp["text_offset"], Json::array({0, t0.size(), t0.size() + t1.size()}));  // ASCII here

  // A byte-fallback token holding part of a character is written as U+FFFD and counts as one
  // character, as the client sees it; `bytes` keeps the byte.
  TokenId lone_byte = -1;
  for (TokenId id = 0; id < tokenizer->vocab_size() && lone_byte < 0; ++id) {
    const std::string b = tokenizer->token_bytes(id);
    if (b.size() == 1 && static_cast<unsigned char>(b[0]) >= 0x80) lone_byte = id;
  }
  ASSERT_GE(lone_byte, 0) << "the tiny tokenizer has byte-fallback tokens";
  ReplyBuilder bytes_reply(completion, 1, tokenizer.get());
  v1::GenerateResponse bytes_message =
      message(0, "\xEF\xBF\xBD", {{static_cast<uint32_t>(lone_byte), -1.0f}, {id0, -1.0f}});
  // Two alternatives spelled alike (both U+FFFD): the likelier, listed first, is the one kept.
  for (const auto& [id, logprob] : {std::pair{lone_byte, -1.0f}, std::pair{lone_byte + 1, -1.5f}}) {
    v1::TopLogprob* top = bytes_message.mutable_logprobs(0)->add_top();
    top->set_token_id(static_cast<uint32_t>(id));
    top->set_logprob(logprob);
  }
  ASSERT_EQ(tokenizer->token_bytes(lone_byte + 1).size(), 1u);
  ASSERT_GE(static_cast<unsigned char>(tokenizer->token_bytes(lone_byte + 1)[0]), 0x80);
  bytes_reply.add(bytes_message);
  const Json lone = Json::parse(bytes_reply.body())["choices"][0]["logprobs"];
  EXPECT_EQ(lone["tokens"][0], "\xEF\xBF\xBD");
  EXPECT_EQ(lone["text_offset"], Json::array({0, 1}));
  EXPECT_EQ(lone["top_logprobs"][0], Json::object({{"\xEF\xBF\xBD", -1.0}}));

  // Chat: one entry per token with its UTF-8 bytes.
  ParsedRequest chat =
      parse_ok(kChat, R"({"messages": [{"role": "user", "content": "x"}], "logprobs": true})");
  ReplyBuilder r(chat, 1, tokenizer.get());
  r.add(message(0, "text", {{id0, -0.5f}}));
  const Json content = Json::parse(r.body())["choices"][0]["logprobs"]["content"];
  ASSERT_EQ(content.size(), 1u);
  EXPECT_EQ(content[0]["token"], t0);
  EXPECT_EQ(content[0]["logprob"], -0.5);
  Json bytes = Json::array();
  for (const char ch : t0)
    bytes.push_back(static_cast<unsigned char>(ch));
  EXPECT_EQ(content[0]["bytes"], bytes);
  EXPECT_EQ(content[0]["top_logprobs"], Json::array());
}

// A prompt's first message with its scores: prompt_logprobs[i] scores ids[i + 1], each with one
// alternative (the next id, at half its logprob).
v1::GenerateResponse scored_message(uint32_t index, const std::vector<uint32_t>& ids,
                                    const std::vector<float>& logprobs) {
  v1::GenerateResponse m = message(index, "", {});
  for (uint32_t id : ids)
    m.add_prompt_token_ids(id);
  for (size_t i = 0; i < logprobs.size(); ++i) {
    v1::TokenLogprob* lp = m.add_prompt_logprobs();
    lp->set_token_id(ids[i + 1]);
    lp->set_logprob(logprobs[i]);
    v1::TopLogprob* top = lp->add_top();
    top->set_token_id(ids[i]);
    top->set_logprob(logprobs[i] / 2);
  }
  return m;
}

TEST(OpenAiReply, EchoPutsThePromptAndItsScoresBeforeEachChoice) {
  const auto tokenizer = tiny_tokenizer();
  std::vector<uint32_t> ids;  // printable ASCII tokens of two or more characters, no space
  for (TokenId id = 0; id < tokenizer->vocab_size() && ids.size() < 2; ++id) {
    const std::string b = tokenizer->token_bytes(id);
    bool printable = b.size() >= 2;
    for (const char ch : b)
      printable = printable && ch > 0x20 && ch < 0x7f;
    if (printable) ids.push_back(static_cast<uint32_t>(id));
  }
  ASSERT_EQ(ids.size(), 2u);
  const std::string t0 = tokenizer->token_bytes(static_cast<TokenId>(ids[0]));
  const std::string t1 = tokenizer->token_bytes(static_cast<TokenId>(ids[1]));
  const std::string body = R"({"prompt": [)" + std::to_string(ids[0]) + ", " + std::to_string(ids[1]) +
                           R"(], "echo": true, "logprobs": 1, "n": 2, "prompt_logprobs": 1})";
  ParsedRequest request = parse_ok(kCompletions, body);
  ReplyBuilder reply(request, 1, tokenizer.get());
  // Choice 0's first message carries the prompt's scores; choice 1 shows them too.
  v1::GenerateResponse first = scored_message(0, ids, {-3.0f});
  first.set_text("zz");
  first.add_token_ids(ids[1]);
  first.add_logprobs()->set_token_id(ids[1]);
  first.mutable_logprobs(0)->set_logprob(-1.0f);
  first.set_finish_reason(v1::FINISH_REASON_LENGTH);
  reply.add(message(1, "yy", {{ids[0], -2.0f}}, v1::FINISH_REASON_LENGTH));
  reply.add(first);
  const Json out = Json::parse(reply.body());
  const std::string prompt_text =
      tokenizer->decode({static_cast<TokenId>(ids[0]), static_cast<TokenId>(ids[1])});
  const int64_t shift = static_cast<int64_t>(prompt_text.size());  // ASCII
  for (int c = 0; c < 2; ++c) {
    SCOPED_TRACE("choice " + std::to_string(c));
    const Json& choice = out["choices"][c];
    EXPECT_EQ(choice["text"], prompt_text + (c == 0 ? "zz" : "yy"));
    const Json& lp = choice["logprobs"];
    EXPECT_EQ(lp["tokens"], Json::array({t0, t1, c == 0 ? t1 : t0}));
    EXPECT_EQ(lp["token_logprobs"], Json::array({nullptr, -3.0, c == 0 ? -1.0 : -2.0}));
    EXPECT_EQ(lp["top_logprobs"][0], nullptr);
    EXPECT_EQ(lp["top_logprobs"][1], Json::object({{t0, -1.5}, {t1, -3.0}}));
    EXPECT_EQ(lp["text_offset"], Json::array({0, t0.size(), shift}));
    // vLLM's shape: by token id, the prompt token first.
    const Json want_prompt_logprobs = Json::array(
        {nullptr, Json::object({{std::to_string(ids[1]), Json{{"logprob", -3.0}, {"decoded_token", t1}}},
                                {std::to_string(ids[0]), Json{{"logprob", -1.5}, {"decoded_token", t0}}}})});
    EXPECT_EQ(choice["prompt_logprobs"], want_prompt_logprobs);
  }

  // Chat: prompt_logprobs beside the choices.
  ParsedRequest chat =
      parse_ok(kChat, R"({"messages": [{"role": "user", "content": "x"}], "prompt_logprobs": 0})");
  ReplyBuilder chat_reply(chat, 1, tokenizer.get());
  v1::GenerateResponse chat_first = scored_message(0, ids, {-0.5f});
  chat_first.set_finish_reason(v1::FINISH_REASON_STOP);
  chat_reply.add(chat_first);
  const Json chat_out = Json::parse(chat_reply.body());
  EXPECT_EQ(chat_out["prompt_logprobs"],
            Json::array({nullptr, Json::object({{std::to_string(ids[1]),
                                                 Json{{"logprob", -0.5}, {"decoded_token", t1}}}})}));
  EXPECT_FALSE(chat_out["choices"][0].contains("prompt_logprobs"));
}

TEST(OpenAiReply, EchoWithMaxTokensZeroIsThePromptAlone) {
  ParsedRequest request =
      parse_ok(kCompletions, R"({"prompt": [7, 8, 9], "echo": true, "max_tokens": 0, "logprobs": 0})");
  ReplyBuilder reply(request, 1, nullptr);
  v1::GenerateResponse m = scored_message(0, {7, 8, 9}, {-1.0f, -2.0f});
  m.set_text("left out");
  m.add_token_ids(4);
  m.add_logprobs()->set_token_id(4);
  m.set_finish_reason(v1::FINISH_REASON_STOP);  // the token left out was EOS
  set_usage(m, 3, 1, 0);
  reply.add(m);
  const Json out = Json::parse(reply.body());
  const Json& choice = out["choices"][0];
  EXPECT_EQ(choice["text"], "") << "no tokenizer: the ids' text is empty";
  EXPECT_EQ(choice["logprobs"]["token_logprobs"], Json::array({nullptr, -1.0, -2.0}));
  EXPECT_EQ(choice["finish_reason"], "length");
  EXPECT_EQ(out["usage"]["completion_tokens"], 0);
  EXPECT_EQ(out["usage"]["prompt_tokens"], 3);

  ParsedRequest streamed =
      parse_ok(kCompletions, R"({"prompt": "Hi", "echo": true, "max_tokens": 0, "stream": true})");
  ReplyBuilder stream_reply(streamed, 1, nullptr);
  const std::vector<Json> chunks =
      events_of(stream_reply.event(message(0, " left out", {{4, -1.0f}}, v1::FINISH_REASON_LENGTH)));
  ASSERT_EQ(chunks.size(), 1u);
  EXPECT_EQ(chunks[0]["choices"][0]["text"], "Hi");
  EXPECT_EQ(chunks[0]["choices"][0]["finish_reason"], "length");
}

// JSON has no infinity: nlohmann would write null, which a client summing logprobs cannot add.
TEST(OpenAiReply, ImpossibleTokensLogprobIsMinus9999NotNull) {
  const float inf = std::numeric_limits<float>::infinity();
  ParsedRequest request = parse_ok(kCompletions, R"({"prompt": [1, 2], "echo": true, "logprobs": 0})");
  ReplyBuilder reply(request, 1, nullptr);
  v1::GenerateResponse m = scored_message(0, {1, 2}, {-inf});
  m.add_token_ids(3);
  m.add_logprobs()->set_token_id(3);
  m.mutable_logprobs(0)->set_logprob(std::numeric_limits<float>::quiet_NaN());
  reply.add(m);
  EXPECT_EQ(Json::parse(reply.body())["choices"][0]["logprobs"]["token_logprobs"],
            Json::array({nullptr, -9999.0, -9999.0}));
}

TEST(OpenAiReply, StreamedEchoStartsEachChoiceWithItsPrompt) {
  ParsedRequest request = parse_ok(kCompletions, R"({"prompt": ["Hi", "Yo"], "echo": true, "stream": true})");
  ReplyBuilder reply(request, 1, nullptr);
  EXPECT_EQ(events_of(reply.event(message(1, "", {{1, -1.0f}})))[0]["choices"][0]["text"], "Yo");
  EXPECT_EQ(events_of(reply.event(message(0, " there", {{1, -1.0f}})))[0]["choices"][0]["text"], "Hi there");
  EXPECT_EQ(events_of(reply.event(message(0, "!", {{1, -1.0f}})))[0]["choices"][0]["text"], "!");
}

// A chat reply with tools, read by `served`'s reader, from these messages: whole and streamed.
struct ToolReplies {
  Json whole;
  std::vector<Json> chunks;  // the streamed events' JSON, [DONE] left out
};
ToolReplies tool_replies(const std::string& body, const ServedApi& served,
                         const std::vector<v1::GenerateResponse>& messages) {
  ToolReplies out;
  const ParsedRequest whole_request = parse_ok(kChat, body, served);
  ReplyBuilder whole(whole_request, 5, nullptr);
  ParsedRequest stream_request = whole_request;
  stream_request.stream = true;
  ReplyBuilder stream(stream_request, 5, nullptr);
  for (const v1::GenerateResponse& m : messages) {
    whole.add(m);
    for (Json& event : events_of(stream.event(m)))
      out.chunks.push_back(std::move(event));
  }
  out.whole = Json::parse(whole.body());
  return out;
}

// Mistral's format: its markers, control tokens in Mistral's tokenizers, are asked to stay in the
// reply's text; calls get the 9-character ids its templates require.
TEST(OpenAiReply, MistralCallsKeepTheirMarkersAndGetNineCharacterIds) {
  const ServedApi mistral{.model = kModel,
                          .tool_call_format = ToolCallFormat::kMistral,
                          .tool_call_control_markers = {"[TOOL_CALLS]", "[ARGS]"}};
  const ParsedRequest request = parse_ok(kChat, chat_with(kTools), mistral);
  EXPECT_EQ(std::vector<std::string>(request.generate.keep_control_tokens().begin(),
                                     request.generate.keep_control_tokens().end()),
            (std::vector<std::string>{"[TOOL_CALLS]", "[ARGS]"}));
  EXPECT_EQ(parse_ok(kChat, chat_with(kTools + R"(, "tool_choice": "none")"), mistral)
                .generate.keep_control_tokens_size(),
            0)
      << "only a reply read for calls keeps them";
  // tool_choice "required" and a named function get such ids too.
  EXPECT_TRUE(parse_ok(kChat, chat_with(kTools + R"(, "tool_choice": "required")"), mistral)
                  .tool_calls->nine_character_call_ids());
  EXPECT_FALSE(parse_ok(kChat, chat_with(kTools + R"(, "tool_choice": "required")"), kServedHermes)
                   .tool_calls->nine_character_call_ids());
  const ToolReplies r =
      tool_replies(chat_with(kTools), mistral,
                   {message(0, "[TOOL_CALLS]get_weather[ARGS]", {{1, -1.0f}}),
                    message(0, "{\"city\": \"Oslo\"}", {{2, -1.0f}}, v1::FINISH_REASON_STOP)});
  const Json& choice = r.whole["choices"][0];
  EXPECT_EQ(choice["finish_reason"], "tool_calls");
  EXPECT_TRUE(choice["message"]["content"].is_null());
  ASSERT_EQ(choice["message"]["tool_calls"].size(), 1u);
  EXPECT_EQ(choice["message"]["tool_calls"][0]["function"],
            Json::parse(R"({"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"})"));
  const std::string id = choice["message"]["tool_calls"][0]["id"];
  ASSERT_EQ(id.size(), 9u) << id;
  for (char c : id)
    EXPECT_TRUE(std::isalnum(static_cast<unsigned char>(c))) << id;
}

TEST(OpenAiReply, ToolCallsComeBackAsOpenAiWritesThem) {
  // Text, then a call split over messages the way tokens arrive.
  const std::vector<v1::GenerateResponse> messages = {
      message(0, "Checking.\n<tool", {{1, -1.0f}}),
      message(0, "_call>\n{\"name\": \"get_weather\", ", {{2, -1.0f}}),
      message(0, "\"arguments\": {\"city\": \"Oslo\"}}\n</tool_call>", {{3, -1.0f}}, v1::FINISH_REASON_STOP)};
  const ToolReplies r = tool_replies(chat_with(kTools), kServedHermes, messages);

  const Json& choice = r.whole["choices"][0];
  EXPECT_EQ(choice["finish_reason"], "tool_calls");
  EXPECT_EQ(choice["message"]["role"], "assistant");
  EXPECT_EQ(choice["message"]["content"], "Checking.");
  ASSERT_EQ(choice["message"]["tool_calls"].size(), 1u);
  const Json& call = choice["message"]["tool_calls"][0];
  EXPECT_EQ(call["type"], "function");
  EXPECT_EQ(call["function"], Json::parse(R"({"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"})"));
  const std::string id = call["id"];
  ASSERT_EQ(id.size(), 29u) << id;  // "call_" and 24 letters and digits
  EXPECT_EQ(id.rfind("call_", 0), 0u);
  for (char c : id.substr(5))
    EXPECT_TRUE(std::isalnum(static_cast<unsigned char>(c))) << id;

  // Streamed: the text as it came, nothing while the call is incomplete, then the call in one
  // delta with its id, type and name.
  ASSERT_EQ(r.chunks.size(), 2u);
  EXPECT_EQ(r.chunks[0]["choices"][0]["delta"],
            Json::parse(R"({"role": "assistant", "content": "Checking."})"));
  const Json& last = r.chunks[1]["choices"][0];
  EXPECT_EQ(last["finish_reason"], "tool_calls");
  ASSERT_EQ(last["delta"]["tool_calls"].size(), 1u);
  const Json& streamed = last["delta"]["tool_calls"][0];
  EXPECT_EQ(streamed["index"], 0);
  EXPECT_EQ(streamed["type"], "function");
  EXPECT_EQ(streamed["function"], call["function"]);
  EXPECT_EQ(streamed["id"].get<std::string>().size(), 29u);
}

TEST(OpenAiReply, AReplyOfCallsAloneHasNullContentAndEachCallItsOwnId) {
  const std::vector<v1::GenerateResponse> messages = {
      message(0, "<tool_call>{\"name\": \"now\", \"arguments\": {}}</tool_call>\n", {{1, -1.0f}}),
      message(0, "<tool_call>{\"name\": \"now\", \"arguments\": {}}</tool_call>", {{2, -1.0f}},
              v1::FINISH_REASON_STOP)};
  const ToolReplies r = tool_replies(chat_with(kTools), kServedHermes, messages);
  const Json& message = r.whole["choices"][0]["message"];
  EXPECT_TRUE(message["content"].is_null());
  ASSERT_EQ(message["tool_calls"].size(), 2u);
  EXPECT_NE(message["tool_calls"][0]["id"], message["tool_calls"][1]["id"]);
  EXPECT_EQ(r.chunks[1]["choices"][0]["delta"]["tool_calls"][0]["index"], 1);
}

TEST(OpenAiReply, WithoutParallelCallsAutoKeepsTheFirst) {
  const std::vector<v1::GenerateResponse> messages = {
      message(0, "<tool_call>{\"name\": \"now\", \"arguments\": {}}</tool_call>\n", {{1, -1.0f}}),
      message(0, "<tool_call>{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Rome\"}}</tool_call>",
              {{2, -1.0f}}, v1::FINISH_REASON_STOP)};
  const ToolReplies r =
      tool_replies(chat_with(kTools + R"(, "parallel_tool_calls": false)"), kServedHermes, messages);
  const Json& message = r.whole["choices"][0]["message"];
  ASSERT_EQ(message["tool_calls"].size(), 1u);
  EXPECT_EQ(message["tool_calls"][0]["function"]["name"], "now");
  EXPECT_TRUE(message["content"].is_null());
  EXPECT_EQ(r.whole["choices"][0]["finish_reason"], "tool_calls");
  size_t streamed_calls = 0;
  for (const Json& chunk : r.chunks)
    streamed_calls += chunk["choices"][0]["delta"].value("tool_calls", Json::array()).size();
  EXPECT_EQ(streamed_calls, 1u);
}

TEST(OpenAiReply, CutOffCallsAndPlainTextStayText) {
  // max_tokens cut the call off: the text comes back whole, and the reason says so.
  const ToolReplies cut = tool_replies(
      chat_with(kTools), kServedHermes,
      {message(0, "<tool_call>{\"name\": \"now\", \"argu", {{1, -1.0f}}, v1::FINISH_REASON_LENGTH)});
  EXPECT_EQ(cut.whole["choices"][0]["message"], Json::parse(R"({"role": "assistant",
      "content": "<tool_call>{\"name\": \"now\", \"argu"})"));
  EXPECT_EQ(cut.whole["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(cut.chunks.back()["choices"][0]["delta"]["content"], "<tool_call>{\"name\": \"now\", \"argu");
  // An answer without calls is an ordinary reply.
  const ToolReplies text = tool_replies(chat_with(kTools), kServedHermes,
                                        {message(0, "It is sunny.", {{1, -1.0f}}, v1::FINISH_REASON_STOP)});
  EXPECT_EQ(text.whole["choices"][0]["message"],
            Json::parse(R"({"role": "assistant", "content": "It is sunny."})"));
  EXPECT_EQ(text.whole["choices"][0]["finish_reason"], "stop");
}

TEST(OpenAiReply, NamedCallStreamsItsArgumentsAsTheyCome) {
  const std::string body =
      chat_with(kTools + R"(, "tool_choice": {"type": "function", "function": {"name": "get_weather"}})");
  const ToolReplies r = tool_replies(body, kServed,
                                     {message(0, "{\"city\": ", {{1, -1.0f}}),
                                      message(0, "\"Oslo\"}", {{2, -1.0f}}, v1::FINISH_REASON_STOP)});
  const Json& call = r.whole["choices"][0]["message"]["tool_calls"][0];
  EXPECT_EQ(call["function"], Json::parse(R"({"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"})"));
  // As OpenAI's API: a call the client named ends with "stop" (auto and required: "tool_calls").
  EXPECT_EQ(r.whole["choices"][0]["finish_reason"], "stop");
  ASSERT_EQ(r.chunks.size(), 2u);
  const Json first = r.chunks[0]["choices"][0]["delta"]["tool_calls"][0];
  EXPECT_EQ(first["function"], Json::parse(R"({"name": "get_weather", "arguments": "{\"city\": "})"));
  EXPECT_TRUE(first.contains("id"));
  EXPECT_EQ(r.chunks[1]["choices"][0]["delta"]["tool_calls"][0],
            Json::parse(R"({"index": 0, "function": {"arguments": "\"Oslo\"}"}})"));
}

TEST(OpenAiReply, RequiredCallsOfEachChoiceAreReadApart) {
  const std::string body = chat_with(kTools + R"(, "tool_choice": "required", "n": 2)");
  const ToolReplies r =
      tool_replies(body, kServed,
                   {message(1, "[{\"name\": \"now\", ", {{1, -1.0f}}),
                    message(0, "[{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Rome\"}}]",
                            {{2, -1.0f}}, v1::FINISH_REASON_STOP),
                    message(1, "\"parameters\": {}}]", {{3, -1.0f}}, v1::FINISH_REASON_STOP)});
  ASSERT_EQ(r.whole["choices"].size(), 2u);
  EXPECT_EQ(r.whole["choices"][0]["message"]["tool_calls"][0]["function"],
            Json::parse(R"({"name": "get_weather", "arguments": "{\"city\":\"Rome\"}"})"));
  EXPECT_EQ(r.whole["choices"][1]["message"]["tool_calls"][0]["function"],
            Json::parse(R"({"name": "now", "arguments": "{}"})"));
  EXPECT_EQ(r.whole["choices"][1]["finish_reason"], "tool_calls");
}

TEST(OpenAiReply, ErrorsCarryTheMatchingHttpStatus) {
  EXPECT_EQ(http_status(grpc::StatusCode::INVALID_ARGUMENT), 400);
  EXPECT_EQ(http_status(grpc::StatusCode::FAILED_PRECONDITION), 400);
  EXPECT_EQ(http_status(grpc::StatusCode::UNAUTHENTICATED), 401);
  EXPECT_EQ(http_status(grpc::StatusCode::NOT_FOUND), 404);
  EXPECT_EQ(http_status(grpc::StatusCode::RESOURCE_EXHAUSTED), 429);
  EXPECT_EQ(http_status(grpc::StatusCode::UNAVAILABLE), 503);
  EXPECT_EQ(http_status(grpc::StatusCode::CANCELLED), 503);  // the server cut the call off
  EXPECT_EQ(http_status(grpc::StatusCode::INTERNAL), 500);
  EXPECT_EQ(code_name(grpc::StatusCode::RESOURCE_EXHAUSTED), "resource_exhausted");
  EXPECT_EQ(code_name(grpc::StatusCode::UNAUTHENTICATED), "unauthenticated");
  EXPECT_EQ(Json::parse(error_body(429, "queue full", "resource_exhausted")),
            Json::parse(R"({"error": {"message": "queue full", "type": "rate_limit_error", "param": null,
                "code": "resource_exhausted"}})"));
  for (int status : {400, 401, 404, 413})
    EXPECT_EQ(Json::parse(error_body(status, "m", "c"))["error"]["type"], "invalid_request_error");
  EXPECT_EQ(Json::parse(error_body(503, "m", "c"))["error"]["type"], "server_error");
  const std::vector<Json> events = events_of(error_events(503, "draining", "unavailable"));
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0]["error"]["message"], "draining");
  EXPECT_EQ(events[1], "[DONE]");
}

}  // namespace
}  // namespace kvserve::openai
