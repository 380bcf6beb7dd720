#include "server/reasoning.h"

#include "server/text_markers.h"

namespace kvserve {
namespace {

constexpr std::string_view kOpen = "<think>";
constexpr std::string_view kClose = "</think>";

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
      buffer_.erase(0, skip_layout_space(buffer_, 0));
      if (buffer_.empty() && !final) return out;
      skip_space_ = false;
    }
    switch (state_) {
      case State::kStart: {
        // Reasoning only when the reply opens with the tag; leading whitespace waits to see.
        const size_t first = skip_layout_space(buffer_, 0);
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
          const size_t ready =
              final ? buffer_.size() : buffer_.size() - partial_marker_at_end(buffer_, kClose);
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
