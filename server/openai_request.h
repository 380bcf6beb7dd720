// The OpenAI-compatible HTTP API's requests: the JSON body of POST /v1/completions or
// /v1/chat/completions read into the kvserve.v1.GenerateRequest it stands for, plus what shapes the
// reply (streaming, logprobs). The gRPC service then checks and runs it as any other request, so
// both APIs share one set of limits, defaults and error messages; this file refuses only what the
// proto cannot say (an OpenAI field kvserve does not support, a value the OpenAI API rules out).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/status.h"
#include "kvserve/v1/kvserve.pb.h"
#include "server/tool_calls.h"

namespace kvserve::openai {

// The generation endpoints. kResponses (server/openai_responses.h) and kMessages (Anthropic's,
// server/anthropic_messages.h) are read into chat requests, so a ParsedRequest's endpoint is only
// ever one of the first two.
enum class Endpoint { kCompletions, kChatCompletions, kResponses, kMessages };

struct ParsedRequest {
  Endpoint endpoint = Endpoint::kCompletions;
  v1::GenerateRequest generate;  // what GenerationService::Generate runs (for the first prompt)
  // /v1/completions with a list of prompts: the requests for the second prompt on, each the same as
  // `generate` but for its input. Prompt i's choice j is the reply's choice i * n + j.
  std::vector<v1::GenerateRequest> more_prompts;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage: a last chunk with the usage
  bool logprobs = false;       // report each token's logprob (and generate.top_logprobs alternatives)
  std::string model;           // the served model's name, echoed in every reply
  // Completions' echo: each choice's text begins with its prompt (as sent, or decoded from its token
  // ids), and with logprobs its logprobs begin with the prompt's tokens (the first one's null).
  bool echo = false;
  // Completions' echo with max_tokens 0: the prompt alone (and its scores). The request generates
  // one token, which the reply leaves out.
  bool prompt_only = false;
  // vLLM's prompt_logprobs (not streamed): the reply's prompt_logprobs, with this many alternatives
  // per prompt token.
  std::optional<int> prompt_logprobs;
  // Chat with tools (tool_choice other than "none"): each choice's text is read through a copy of
  // this reader, which returns the calls as tool_calls. "auto" reads the model's own format;
  // "required" and a named function constrain the reply (generate.response_format) to calls.
  std::optional<ToolCallReader> tool_calls;
  // Chat on a server that reads reasoning: each choice's reply is read for a <think> block first
  // (its reasoning), and only the rest is content (and read for calls).
  bool reasoning = false;
};

// What the server serves, as requests see it.
struct ServedApi {
  // The name the server answers to: a request naming another model gets NOT_FOUND, one naming
  // none is served.
  std::string model;
  // How the model writes tool calls (--tool-call-parser); kNone refuses tool_choice "auto".
  ToolCallFormat tool_call_format = ToolCallFormat::kNone;
  // Its markers that the tokenizer makes control tokens (tool_call_control_markers()): requests
  // for "auto" calls ask the engine to keep them in the reply's text.
  std::vector<std::string> tool_call_control_markers{};
  // Whether chat replies are read for a <think> block, returned apart as reasoning
  // (--reasoning-parser, server/reasoning.h).
  bool reasoning = false;
  // --max-request-bytes: several prompts' requests together must fit in it too (each is a copy of
  // the request's fields).
  size_t max_request_bytes = 1 << 20;
  // The LoRA adapters served (--lora-modules): a request's model may name one instead of `model`.
  std::vector<std::string> lora_adapters{};
};

// Reads `body` for `endpoint`. A request for another model is NOT_FOUND; anything else wrong is
// INVALID_ARGUMENT with the field's name and what to send instead. Fields kvserve does not know
// are ignored, as OpenAI's clients send many optional ones; fields it knows but cannot honour are
// refused.
Status parse_request(Endpoint endpoint, std::string_view body, const ServedApi& served, ParsedRequest* out);

// A request body read as a JSON object, within the bounds of engine/json_limits.h (checked before
// it is parsed); INVALID_ARGUMENT naming "request body" otherwise.
Status read_request_body(std::string_view body, nlohmann::ordered_json* json);

// POST /tokenize, as vLLM's: {"prompt": "text", "add_special_tokens": true} or {"messages": [...],
// "add_generation_prompt", "continue_final_message", "chat_template_kwargs", "tools"} (the prompt
// the chat endpoint would run), and "return_token_strs"; read into the Tokenize RPC's request.
struct ParsedTokenize {
  v1::TokenizeRequest tokenize;
  bool return_token_strs = false;  // also each token's spelling
};
Status parse_tokenize_request(std::string_view body, const ServedApi& served, ParsedTokenize* out);

// POST /v1/embeddings: {"input": a string, an array of strings, an array of token ids or an array
// of such arrays; "encoding_format": "float" or "base64"; "dimensions"; and vLLM's "normalize"
// and "add_special_tokens"}, read into the Embed RPC's request.
struct ParsedEmbeddings {
  v1::EmbedRequest embed;
  bool base64 = false;  // each embedding as base64 of its little-endian float32 values
  std::string model;    // what the reply names: the served model, or the LoRA adapter asked for
};
Status parse_embeddings_request(std::string_view body, const ServedApi& served, ParsedEmbeddings* out);

// POST /detokenize: {"tokens": [ids]}, read into the Detokenize RPC's request.
Status parse_detokenize_request(std::string_view body, const ServedApi& served, v1::DetokenizeRequest* out);

}  // namespace kvserve::openai
