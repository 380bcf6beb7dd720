#include "server/reasoning.h"

#include <algorithm>

namespace kvserve {
namespace {

constexpr std::string_view kOpen = "<think>";
constexpr std::string_view kClose = "</think>";

bool is_space(char c) {
  return c == ' ' || c == '\n' || c == '\r' || c == '\t';
}

// The longest end of `text` that is a proper beginning of `tag` (which may yet complete).
size_t partial_tag_at_end(std::string_view text, std::string_view tag) {
  for (size_t n = std::min(text.size(), tag.size() - 1); n > 0; --n)
    if (text.substr(text.size() - n) == tag.substr(0, n)) return n;
  return 0;
}

}  // namespace

bool template_teaches_thinking(std::string_view chat_template_source) {
  return chat_template_source.find(kOpen) != std::string_view::npos &&
         chat_template_source.find(kClose) != std::string_view::npos;
}

ReasoningReader::Output ReasoningReader::feed(std::string_view text) {
  buffer_ += text;
  return step(false);
}

ReasoningReader::Output ReasoningReader::finish() {
  return step(true);
}

ReasoningReader::Output ReasoningReader::step(bool final) {
  Output out;
  while (true) {
    if (skip_space_) {
      size_t n = 0;
      while (n < buffer_.size() && is_space(buffer_[n]))
        ++n;
      buffer_.erase(0, n);
      if (buffer_.empty() && !final) return out;
      skip_space_ = false;
    }
    switch (state_) {
      case State::kStart: {
        // Reasoning only when the reply opens with the tag; leading whitespace waits to see.
        size_t first = 0;
        while (first < buffer_.size() && is_space(buffer_[first]))
          ++first;
        const std::string_view rest = std::string_view(buffer_).substr(first);
        if (rest.starts_with(kOpen)) {
          buffer_.erase(0, first + kOpen.size());
          state_ = State::kReasoning;
          skip_space_ = true;
          continue;
        }
        if (!final && kOpen.starts_with(rest)) return out;  // all whitespace, or part of the tag
        state_ = State::kAnswer;
        continue;
      }
      case State::kReasoning: {
        const size_t close = buffer_.find(kClose);
        if (close == std::string::npos) {
          const size_t ready = final ? buffer_.size() : buffer_.size() - partial_tag_at_end(buffer_, kClose);
          out.reasoning += buffer_.substr(0, ready);
          buffer_.erase(0, ready);
          return out;
        }
        out.reasoning += buffer_.substr(0, close);
        buffer_.erase(0, close + kClose.size());
        state_ = State::kAnswer;
        skip_space_ = true;
        continue;
      }
      case State::kAnswer:
        out.content += buffer_;
        buffer_.clear();
        return out;
    }
  }
}

}  // namespace kvserve
