// The OpenAI-compatible HTTP API's replies: a call's kvserve.v1.GenerateResponse messages written
// as OpenAI's completion / chat completion objects, whole or as server-sent events, and errors as
// OpenAI's error object with the HTTP status that matches the gRPC one.
#pragma once

#include <grpcpp/support/status.h>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "engine/tokenizer.h"
#include "kvserve/v1/kvserve.pb.h"
#include "server/openai_request.h"
#include "server/reasoning.h"
#include "server/tool_calls.h"

namespace kvserve::openai {

// A call's reply as the HTTP layer writes it, whichever API's shape it has: built from the call's
// kvserve.v1.GenerateResponse messages, either whole or as server-sent events.
class Reply {
 public:
  virtual ~Reply() = default;

  // Streaming: the events for one message, or "" when it carries nothing a client would see.
  virtual std::string event(const v1::GenerateResponse& message) = 0;
  // Streaming, after the call ended OK: the events that close the stream.
  virtual std::string closing_events() = 0;
  // Streaming: the events that end a stream whose call failed after it began.
  virtual std::string failure_events(int http_status, const std::string& message,
                                     const std::string& code) = 0;

  // Not streaming: folds in one message; body() is then the whole reply.
  virtual void add(const v1::GenerateResponse& message) = 0;
  virtual std::string body() = 0;
};

// The reply to one /v1/completions or /v1/chat/completions call. Choices are kept apart by the
// messages' `index`.
class ReplyBuilder final : public Reply {
 public:
  // `created` is the Unix time of the call; `tokenizer` (may be null) spells tokens in logprobs.
  ReplyBuilder(const ParsedRequest& request, int64_t created, const Tokenizer* tokenizer);

  // Streaming: "data: {chunk}\n\n" for one message, or "" when it carries nothing a client would see.
  std::string event(const v1::GenerateResponse& message) override;
  // Streaming, after the call ended OK: the usage chunk (when asked for) and "data: [DONE]".
  std::string closing_events() override;
  // An error object as an event, then "data: [DONE]".
  std::string failure_events(int http_status, const std::string& message, const std::string& code) override;
  void add(const v1::GenerateResponse& message) override;
  std::string body() override;

  // For a reply in another shape built on this one (server/openai_responses.h): the chunk event()
  // sends, as JSON (nullopt for none), and the usage so far.
  std::optional<nlohmann::ordered_json> chunk(const v1::GenerateResponse& message);
  nlohmann::ordered_json usage() const;

 private:
  nlohmann::ordered_json whole() const;  // what body() writes

  struct Choice {
    std::string text;
    // Logprobs so far, in the endpoint's shape: chat's `content` entries, or completions' four
    // parallel arrays.
    std::vector<nlohmann::ordered_json> content;
    std::vector<std::string> tokens;
    std::vector<float> token_logprobs;
    std::vector<nlohmann::ordered_json> top_logprobs;
    std::vector<int64_t> text_offset;
    int64_t next_offset = 0;  // completions: text_offset of the next token
    bool role_sent = false;   // chat streaming: the first chunk names the role
    bool echoed = false;      // completions streaming with echo: the prompt's text went out
    std::string finish_reason;
    // As vLLM's: the stop string, or the stop token's id (of the request's stop_token_ids), that
    // ended the choice; null for EOS, the length or anything else.
    nlohmann::ordered_json stop_reason;
    uint32_t completion_tokens = 0;
    // Chat with reasoning read out: the reply's <think> block, then its content.
    std::optional<ReasoningReader> reasoning_reader;
    std::string reasoning;  // not streaming: all of it
    // Chat with tools: the text is read for calls (a copy of the request's reader).
    std::optional<ToolCallReader> tool_reader;
    std::vector<std::string> call_ids;          // one per call, in order
    std::vector<nlohmann::ordered_json> calls;  // not streaming: the calls as the reply writes them
  };

  nlohmann::ordered_json head(const char* object) const;
  // `message`'s text as the reply gives it: all content, or (with tools) content and calls, the
  // reader's held-back text included once the choice has finished.
  ToolCallOutput read_text(const v1::GenerateResponse& message, Choice& choice, std::string* reasoning);
  // A streamed chunk's tool_calls entries for `calls` (id, type and name in a call's first).
  nlohmann::ordered_json call_deltas(const std::vector<ToolCallDelta>& calls, const Choice& choice) const;
  // The choice's finish_reason: "tool_calls" in place of "stop" when it made calls.
  static nlohmann::ordered_json finish_reason_of(const Choice& choice);
  // The logprobs of `message`'s tokens in the endpoint's shape, appending to `choice`'s offsets.
  nlohmann::ordered_json logprobs_of(const v1::GenerateResponse& message, Choice& choice) const;
  // Notes the usage, the finish reason and (from a prompt's first choice) the prompt's scores.
  void note_usage(const v1::GenerateResponse& message, Choice& choice);
  // Which prompt of the request a choice answers (several prompts in one /v1/completions).
  uint32_t prompt_of(uint32_t choice_index) const;
  // The prompt's text as echo returns it: as sent, or its token ids decoded.
  std::string echo_text(uint32_t prompt) const;
  // Completions' logprobs with echo: the prompt's tokens in the four arrays' shape, to go before
  // the choice's own, whose text_offset then starts at *text_length (the prompt's, in characters).
  nlohmann::ordered_json echo_logprobs(uint32_t prompt, int64_t* text_length) const;
  // vLLM's prompt_logprobs: null for the first token, then for each prompt token an object of it
  // and its alternatives, by token id.
  nlohmann::ordered_json vllm_prompt_logprobs(uint32_t prompt) const;
  std::string token_text(uint32_t id) const;

  const ParsedRequest& request_;
  int64_t created_;
  const Tokenizer* tokenizer_;
  std::string id_;  // "cmpl-" / "chatcmpl-" and the request id, from the first message
  std::map<uint32_t, Choice> choices_;
  // Per prompt (several in one /v1/completions request): its tokens, and those found cached.
  std::map<uint32_t, uint32_t> prompt_tokens_;
  std::map<uint32_t, uint32_t> cached_prompt_tokens_;
  // Per prompt, with prompt logprobs: its token ids and their scores (GenerateResponse's).
  struct PromptScores {
    std::vector<uint32_t> ids;
    std::vector<v1::TokenLogprob> logprobs;  // logprobs[i] scores ids[i + 1]
  };
  std::map<uint32_t, PromptScores> prompt_scores_;
  std::mt19937_64 call_id_rng_{std::random_device{}()};
};

// The HTTP status for a gRPC status (400 for INVALID_ARGUMENT, 429 for RESOURCE_EXHAUSTED, ...).
int http_status(grpc::StatusCode code);
// OpenAI's error object: {"error": {"message", "type", "param", "code"}}.
std::string error_body(int http_status, const std::string& message, const std::string& code);
// The same as a server-sent event, for a call that fails after its stream began, then [DONE].
std::string error_events(int http_status, const std::string& message, const std::string& code);
// The lower-case name of a gRPC code ("invalid_argument"), for the error object's `code`.
std::string code_name(grpc::StatusCode code);

}  // namespace kvserve::openai
