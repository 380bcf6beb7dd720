// A Tokenizer read from a Hugging Face tokenizer.json with a byte-level BPE model, as Llama 3,
// Qwen2 and GPT-2 ship (they have no tokenizer.model). It follows the tokenizers library, which
// its tests use as the reference (tests/data/tokenizer/bytelevel/):
//
// - Added tokens written in the text ("<|eot_id|>") are recognized as their ids, with their
//   single_word / lstrip / rstrip / normalized options; special ones are control tokens, left out
//   of decoded text (skip_special_tokens).
// - The rest is normalized (none, NFC, NFD, NFKC, NFKD, or a Sequence of these), pre-tokenized
//   (Split by a regex or a literal with any split behaviour, ByteLevel, or a Sequence of these) and
//   merged by the BPE model (engine/byte_level_bpe.h).
// - encode(text, add_bos) adds what the post-processor's TemplateProcessing puts around a single
//   sequence (Llama 3: <|begin_of_text|> first); bos_id() is the first id it puts before it.
// - decode() maps byte-level characters back to bytes and repairs ill-formed UTF-8 as the library
//   does (one U+FFFD per maximal ill-formed subsequence).
//
// Text that is not well-formed UTF-8 is first repaired the same way (the library takes only
// well-formed strings). Anything else a tokenizer.json may hold (WordPiece, Unigram, Metaspace
// with byte fallback as Llama 2's, ...) is refused at load with a ModelLoadError naming the field.
#pragma once

#include <filesystem>
#include <memory>

#include "engine/tokenizer.h"

namespace kvserve {

std::unique_ptr<Tokenizer> load_hf_tokenizer(const std::filesystem::path& tokenizer_json);

}  // namespace kvserve
