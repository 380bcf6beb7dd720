// What a request asks its output to look like (structured output), as one regex for
// engine/token_constraint.h: a regex as given, a JSON schema (engine/json_schema_regex.h), or a
// list of strings the output must be exactly one of.
#pragma once

#include <string>
#include <vector>

#include "engine/request.h"
#include "engine/status.h"

namespace kvserve {

struct ResponseFormat {
  enum class Kind { kRegex, kJsonSchema, kChoice };
  Kind kind = Kind::kRegex;
  std::string text;                  // the regex, or the schema's JSON text
  std::vector<std::string> choices;  // kChoice
};

inline constexpr int kMaxResponseChoices = 1024;

// The regex the output must match, or InvalidArgument naming the response_format field at fault
// (JSON that does not parse, a schema keyword that is not supported, an empty list).
Status response_format_regex(const ResponseFormat& format, std::string* regex);

// EOS is how a structured output says it is complete: stop rules that hold EOS back (ignore_eos,
// min_tokens) would leave the sampler nothing to draw once the match is whole, so they are refused
// with a response format. The server checks this before compiling, the engine again on admission.
Status check_stop_criteria_for_response_format(const StopCriteria& stop);

}  // namespace kvserve
