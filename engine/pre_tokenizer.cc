#include "engine/pre_tokenizer.h"

#include <algorithm>

#include "engine/byte_level_bpe.h"

namespace kvserve {
namespace {

// The pattern GPT-2 split words with, which a ByteLevel step with use_regex applies.
constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

}  // namespace

std::vector<std::string_view> split_at_matches(std::string_view text,
                                               const std::vector<std::pair<size_t, size_t>>& matches,
                                               SplitBehavior behavior, bool invert) {
  // The text as consecutive spans, each a match (a delimiter, unless inverted) or not.
  struct Span {
    size_t begin;
    size_t end;
    bool delimiter;
  };
  std::vector<Span> spans;
  size_t at = 0;
  for (const auto& [begin, end] : matches) {
    if (begin > at) spans.push_back({at, begin, invert});
    spans.push_back({begin, end, !invert});
    at = end;
  }
  if (at < text.size()) spans.push_back({at, text.size(), invert});

  std::vector<Span> pieces;
  switch (behavior) {
    case SplitBehavior::kRemoved:
      for (const Span& s : spans)
        if (!s.delimiter) pieces.push_back(s);
      break;
    case SplitBehavior::kIsolated:
      pieces = spans;
      break;
    case SplitBehavior::kMergedWithPrevious: {
      bool previous_delimiter = false;
      for (const Span& s : spans) {
        if (s.delimiter && !previous_delimiter && !pieces.empty()) {
          pieces.back().end = s.end;
        } else {
          pieces.push_back(s);
        }
        previous_delimiter = s.delimiter;
      }
      break;
    }
    case SplitBehavior::kMergedWithNext: {
      bool next_delimiter = false;  // walking backwards: whether the span after was a delimiter
      for (auto s = spans.rbegin(); s != spans.rend(); ++s) {
        if (s->delimiter && !next_delimiter && !pieces.empty()) {
          pieces.back().begin = s->begin;
        } else {
          pieces.push_back(*s);
        }
        next_delimiter = s->delimiter;
      }
      std::reverse(pieces.begin(), pieces.end());
      break;
    }
    case SplitBehavior::kContiguous: {
      // Neighbours of the same kind join: matches that touch (inverted, the pieces kept).
      bool previous_delimiter = false;
      for (const Span& s : spans) {
        if (s.delimiter == previous_delimiter && !pieces.empty()) {
          pieces.back().end = s.end;
        } else {
          pieces.push_back(s);
        }
        previous_delimiter = s.delimiter;
      }
      break;
    }
  }
  std::vector<std::string_view> out;
  out.reserve(pieces.size());
  for (const Span& s : pieces)
    if (s.end > s.begin) out.push_back(text.substr(s.begin, s.end - s.begin));
  return out;
}

void PreTokenizer::add_split(UnicodeRegex pattern, SplitBehavior behavior, bool invert) {
  Step step;
  step.pattern.emplace(std::move(pattern));
  step.behavior = behavior;
  step.invert = invert;
  steps_.push_back(std::move(step));
}

void PreTokenizer::add_byte_level(bool add_prefix_space, bool use_regex) {
  Step step;
  if (use_regex) step.pattern.emplace(kGpt2Pattern);
  step.byte_level = true;
  step.add_prefix_space = add_prefix_space;
  steps_.push_back(std::move(step));
}

bool PreTokenizer::has_byte_level() const {
  for (const Step& s : steps_)
    if (s.byte_level) return true;
  return false;
}

std::vector<std::string> PreTokenizer::words(std::string_view text) const {
  std::vector<std::string> pieces;
  if (!text.empty()) pieces.emplace_back(text);
  for (const Step& step : steps_) {
    std::vector<std::string> next;
    for (std::string& piece : pieces) {
      if (step.add_prefix_space && !piece.starts_with(' ')) piece.insert(0, 1, ' ');
      std::vector<std::string_view> cut{piece};
      if (step.pattern)
        cut = split_at_matches(piece, step.pattern->find_all(piece), step.behavior, step.invert);
      for (std::string_view c : cut)
        next.push_back(step.byte_level ? to_byte_level(c) : std::string(c));
    }
    pieces = std::move(next);
  }
  return pieces;
}

}  // namespace kvserve
