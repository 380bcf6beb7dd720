// Tokens a fine-tune adds past its tokenizer.model's vocabulary ("<|im_start|>" and "<|im_end|>"
// of a ChatML-tuned Mistral, say). Transformers keeps them in tokenizer_config.json
// ("added_tokens_decoder") or added_tokens.json and matches them in any text before SentencePiece
// sees it; without them a chat prompt would spell such a token out character by character.
#pragma once

#include <filesystem>
#include <memory>
#include <vector>

#include "engine/added_tokens.h"
#include "engine/tokenizer.h"

namespace kvserve {

// The added tokens of a model directory whose ids are `first_id` or above (those below are the
// SentencePiece model's own pieces). Throws ModelLoadError naming the file for one that does not read.
std::vector<AddedToken> read_config_added_tokens(const std::filesystem::path& dir, TokenId first_id);

// Where transformers puts SentencePiece's dummy prefix "▁" in a text cut at special tokens.
struct DummyPrefixRule {
  enum class Where { kEveryStretch, kTextStart, kNever };
  Where where = Where::kEveryStretch;  // SentencePiece's own, and Llama 2's "legacy" files
  bool unless_space = false;           // Metaspace: not before a stretch that starts with a space
};

// The rule for a directory's tokenizer.model, as transformers reads it: from its tokenizer.json
// when that reads (its fast tokenizer is the default: a Prepend normalizer prefixes every stretch;
// Metaspace prefixes per prepend_scheme), else tokenizer_config.json's "legacy": false prefixes
// only the text's start (the slow tokenizer), else every stretch.
DummyPrefixRule sentencepiece_prefix_rule(const std::filesystem::path& dir);

// `base` (a SentencePiece tokenizer) extended by `added` (ids at or past its vocabulary): they are
// matched in text first and each stretch between them goes to `base` as a text of its own, as
// transformers' Llama tokenizers do; special ones are control tokens, left out of decoded text.
std::unique_ptr<Tokenizer> with_added_tokens(std::unique_ptr<Tokenizer> base, std::vector<AddedToken> added);

}  // namespace kvserve
