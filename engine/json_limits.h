// Bounds on JSON text, checked in one linear pass before it is parsed, for text from outside (a
// request body or a request's JSON field, a tool call's arguments, a model's reply): dump() and the
// conversions of a parsed value recurse once per nesting level, so "[[[[..." deep enough
// overflows the stack; and an ordered object (kept in the order written, as requests' schemas and
// tools are) finds each key by a linear search, so parsing an object of n members costs n^2.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace kvserve {

// The bounds for JSON in requests: deeper than any conversation, tool list or schema nests; as many
// members as logit_bias may have (engine/sampler.h), far more than any other object needs.
inline constexpr int kMaxRequestJsonDepth = 256;
inline constexpr size_t kMaxRequestJsonMembers = 1024;

// Walks JSON text from `from`, skipping the contents of strings, and calls visit(c, i) for each
// '{', '[', '}', ']' and ',' and for the '"' that opens each string; stops early when visit returns
// false. Returns the index where it stopped, or text.size(). The one scanner of the pre-parse
// checks: bounds here, where a JSON object ends in a model's reply (server/tool_calls.cc).
template <typename Visit>
size_t scan_json_structure(std::string_view text, size_t from, Visit&& visit) {
  bool in_string = false;
  for (size_t i = from; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\')
        ++i;
      else if (c == '"')
        in_string = false;
      continue;
    }
    if (c == '"') in_string = true;
    if (c == '"' || c == '{' || c == '[' || c == '}' || c == ']' || c == ',') {
      if (!visit(c, i)) return i;
    }
  }
  return text.size();
}

// What in `text` is over the bounds ("nested deeper than 256 levels", "an object with more than
// 1024 members"), or "" when it is within them. Brackets, braces and commas inside strings do not
// count. Text that is not JSON may pass: the parser then says what is wrong with it.
std::string json_over_limits(std::string_view text, int max_depth, size_t max_members);

}  // namespace kvserve
