// Reading markers (<tool_call>, <think>, ...) out of a model's reply as it streams: the whitespace
// around them that is layout, and the end of a piece that may be the start of a marker still to
// come. Shared by the tool-call and reasoning readers.
#pragma once

#include <algorithm>
#include <cstddef>
#include <string_view>

namespace kvserve {

inline bool is_layout_space(char c) {
  return c == ' ' || c == '\n' || c == '\r' || c == '\t';
}

// The first index at or after `at` that is not layout whitespace (text.size() if none).
inline size_t skip_layout_space(std::string_view text, size_t at) {
  while (at < text.size() && is_layout_space(text[at]))
    ++at;
  return at;
}

// The longest end of `text` that is a proper beginning of `marker` (which may yet complete).
inline size_t partial_marker_at_end(std::string_view text, std::string_view marker) {
  for (size_t n = std::min(text.size(), marker.size() - 1); n > 0; --n)
    if (text.substr(text.size() - n) == marker.substr(0, n)) return n;
  return 0;
}

}  // namespace kvserve
