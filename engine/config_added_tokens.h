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

// Whether transformers reads the directory's tokenizer.model as "legacy" (a dummy prefix on every
// stretch of text between special tokens): unless tokenizer_config.json says "legacy": false or
// tokenizer.json's Metaspace prepends only to the first stretch (prepend_scheme "first").
bool sentencepiece_is_legacy(const std::filesystem::path& dir);

// `base` (a SentencePiece tokenizer) extended by `added` (ids at or past its vocabulary): they are
// matched in text first and each stretch between them goes to `base` as a text of its own, as
// transformers' Llama tokenizers do; special ones are control tokens, left out of decoded text.
std::unique_ptr<Tokenizer> with_added_tokens(std::unique_ptr<Tokenizer> base, std::vector<AddedToken> added);

}  // namespace kvserve
