// The OpenAI-compatible HTTP API's requests: the JSON body of POST /v1/completions or
// /v1/chat/completions read into the kvserve.v1.GenerateRequest it stands for, plus what shapes the
// reply (streaming, logprobs). The gRPC service then checks and runs it as any other request, so
// both APIs share one set of limits, defaults and error messages; this file refuses only what the
// proto cannot say (an OpenAI field kvserve does not support, a value the OpenAI API rules out).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "engine/status.h"
#include "kvserve/v1/kvserve.pb.h"

namespace kvserve::openai {

enum class Endpoint { kCompletions, kChatCompletions };

struct ParsedRequest {
  Endpoint endpoint = Endpoint::kCompletions;
  v1::GenerateRequest generate;  // what GenerationService::Generate runs
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage: a last chunk with the usage
  bool logprobs = false;       // report each token's logprob (and generate.top_logprobs alternatives)
  std::string model;           // the served model's name, echoed in every reply
};

// Reads `body` for `endpoint`. `served_model` is the name the server answers to: a request naming
// another model gets NOT_FOUND, one naming none is served. Anything else wrong is INVALID_ARGUMENT
// with the field's name and what to send instead. Fields kvserve does not know are ignored, as
// OpenAI's clients send many optional ones; fields it knows but cannot honour are refused.
Status parse_request(Endpoint endpoint, std::string_view body, const std::string& served_model,
                     ParsedRequest* out);

}  // namespace kvserve::openai
