// Tokenizer: text <-> token ids through a SentencePiece model (tokenizer.model), as Llama 2,
// Mistral and the project's tiny test models ship.
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
  // Throws ModelLoadError (engine/model.h) naming the file when it is missing or not a valid model.
  static std::unique_ptr<Tokenizer> load(const std::filesystem::path& tokenizer_model);
  virtual ~Tokenizer() = default;

  virtual int vocab_size() const = 0;
  virtual std::optional<TokenId> bos_id() const = 0;
  virtual std::optional<TokenId> eos_id() const = 0;

  // Token ids of `text`; with add_bos, the BOS id first (when the model has one).
  virtual std::vector<TokenId> encode(std::string_view text, bool add_bos) const = 0;
  // Text of `ids`, control tokens (BOS, EOS, ...) dropped. Ids outside the vocabulary are skipped.
  // A trailing incomplete UTF-8 sequence comes out as U+FFFD, as SentencePiece decodes it.
  virtual std::string decode(const std::vector<TokenId>& ids) const = 0;
  // True for control tokens (BOS, EOS, PAD, UNK's control kin) that never appear in text output.
  virtual bool is_control(TokenId id) const = 0;
};

}  // namespace kvserve
