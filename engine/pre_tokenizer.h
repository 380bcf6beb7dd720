// The pre-tokenizer of a byte-level tokenizer.json: cuts (normalized) text into the words that the
// BPE model merges, by a sequence of steps as the tokenizers library runs them - each step cuts
// every piece the previous steps left.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "engine/unicode_regex.h"

namespace kvserve {

// What becomes of the matches of a Split step (tokenizers' SplitDelimiterBehavior).
enum class SplitBehavior {
  kRemoved,             // dropped
  kIsolated,            // pieces of their own
  kMergedWithPrevious,  // appended to the piece before
  kMergedWithNext,      // prepended to the piece after
  kContiguous,          // neighbouring pieces of the same kind joined (touching matches)
};

// Cuts `text` at `matches` ([begin, end) byte offsets, ascending, non-overlapping; an empty match
// is a cut). With `invert` the matches are the pieces to keep and the text between them the
// delimiters. Empty pieces are left out.
std::vector<std::string_view> split_at_matches(std::string_view text,
                                               const std::vector<std::pair<size_t, size_t>>& matches,
                                               SplitBehavior behavior, bool invert);

class PreTokenizer {
 public:
  // A Split step: `pattern` cuts each piece as `behavior` says.
  void add_split(UnicodeRegex pattern, SplitBehavior behavior, bool invert);
  // A ByteLevel step: optionally a space before each piece that does not start with one, optionally
  // a cut by GPT-2's pattern, then every byte written as its byte-level character.
  void add_byte_level(bool add_prefix_space, bool use_regex);
  bool has_byte_level() const;

  // The words of `text` (well-formed UTF-8), each in byte-level characters once a ByteLevel step ran.
  std::vector<std::string> words(std::string_view text) const;

 private:
  struct Step {
    std::optional<UnicodeRegex> pattern;  // Split's, or ByteLevel's GPT-2 pattern when use_regex
    SplitBehavior behavior = SplitBehavior::kIsolated;
    bool invert = false;
    bool byte_level = false;
    bool add_prefix_space = false;
  };
  std::vector<Step> steps_;
};

}  // namespace kvserve
