// Tokenizer: text <-> token ids, through a SentencePiece model (tokenizer.model: Llama 2, Mistral,
// the project's tiny test models) or a byte-level BPE tokenizer.json (Llama 3, Qwen2, GPT-2;
// engine/hf_tokenizer.h).
#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "engine/block_pool.h"

namespace kvserve {

class Tokenizer {
 public:
  // Reads a tokenizer.model, or a tokenizer.json when the file name ends in ".json". Throws
  // ModelLoadError (engine/model.h) naming the file when it is missing or not a supported model.
  static std::unique_ptr<Tokenizer> load(const std::filesystem::path& file);
  // The tokenizer of a model directory: its tokenizer.model when there is one that reads (the
  // exact SentencePiece reading, for the models that ship both files), with the tokens a fine-tune
  // added past its vocabulary (engine/config_added_tokens.h), else its tokenizer.json.
  // Throws ModelLoadError naming both files when neither is there or neither reads.
  static std::unique_ptr<Tokenizer> load_from_model_dir(const std::filesystem::path& dir);
  virtual ~Tokenizer() = default;

  virtual int vocab_size() const = 0;
  virtual std::optional<TokenId> bos_id() const = 0;
  virtual std::optional<TokenId> eos_id() const = 0;

  // Token ids of `text`; with add_bos, the BOS id first (when the model has one; a tokenizer.json
  // adds what its post-processor puts around a text).
  virtual std::vector<TokenId> encode(std::string_view text, bool add_bos) const = 0;
  // Token ids of `text` in which the spelling of a special token ("<s>", "<|eot_id|>") stands for
  // that token, no BOS added: a rendered chat template, which writes its special tokens itself, as
  // Hugging Face tokenizes it (add_special_tokens=False). A tokenizer.json's encode() already reads
  // its added tokens so; a SentencePiece model's reads "<s>" as three characters.
  virtual std::vector<TokenId> encode_with_special_tokens(std::string_view text) const = 0;
  // For a tokenizer wrapping this one (engine/config_added_tokens.h): `text` as one stretch of a
  // longer text already cut at the wrapper's tokens, with or without this tokenizer's own special
  // spellings standing for their ids. A SentencePiece model puts its dummy prefix on the stretch
  // where transformers would (engine/config_added_tokens.h), which depends on `at_text_start`.
  virtual std::vector<TokenId> encode_stretch(std::string_view text, bool at_text_start,
                                              bool with_special_tokens) const {
    (void)at_text_start;
    return with_special_tokens ? encode_with_special_tokens(text) : encode(text, false);
  }

  // The token's spelling in the vocabulary ("<s>", "<|begin_of_text|>"); empty for an id outside
  // it. What a chat template gets as bos_token / eos_token when the model's files name none.
  virtual std::string token_spelling(TokenId id) const = 0;
  // Text of `ids`, control tokens (BOS, EOS, ...) dropped. Ids outside the vocabulary are skipped.
  // Bytes that do not form UTF-8 come out as U+FFFD, as the model's reference library decodes them
  // (at most three at the end of the text for an incomplete character).
  virtual std::string decode(const std::vector<TokenId>& ids) const = 0;
  // True for control tokens (BOS, EOS, PAD, UNK's control kin) that never appear in text output.
  virtual bool is_control(TokenId id) const = 0;
  // The bytes the token adds to generated text, which always follows a prompt: a SentencePiece
  // "▁" is a space (never a dummy prefix to strip), a byte-fallback token is its one byte (alone
  // perhaps part of a UTF-8 character). Empty for control tokens and ids outside the vocabulary.
  // Structured output (engine/token_constraint.h) matches these against its pattern.
  virtual std::string token_bytes(TokenId id) const = 0;
};

// A tokenizer whose work is all in encode_stretch() (the SentencePiece model, and the wrapper that
// adds a fine-tune's tokens to it): encode() is the BOS, then the whole text as one stretch, and
// encode_with_special_tokens() the whole text with special spellings read as their ids.
class StretchTokenizer : public Tokenizer {
 public:
  std::vector<TokenId> encode(std::string_view text, bool add_bos) const final {
    std::vector<TokenId> out;
    if (add_bos && bos_id()) out.push_back(*bos_id());
    const std::vector<TokenId> ids = encode_stretch(text, true, false);
    out.insert(out.end(), ids.begin(), ids.end());
    return out;
  }
  std::vector<TokenId> encode_with_special_tokens(std::string_view text) const final {
    return encode_stretch(text, true, true);
  }
  std::vector<TokenId> encode_stretch(std::string_view text, bool at_text_start,
                                      bool with_special_tokens) const override = 0;
};

}  // namespace kvserve
