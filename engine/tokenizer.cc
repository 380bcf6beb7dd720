#include "engine/tokenizer.h"

#include <sentencepiece_processor.h>

#include <system_error>

#include "engine/model.h"

namespace kvserve {
namespace {

class SentencePieceTokenizer final : public Tokenizer {
 public:
  explicit SentencePieceTokenizer(const std::filesystem::path& path) {
    std::error_code ec;
    if (!std::filesystem::is_regular_file(path, ec)) {
      throw ModelLoadError(
          "tokenizer model " + path.string() +
          " does not exist or is not a file: pass the tokenizer.model file that ships with the model");
    }
    const auto status = sp_.Load(path.string());
    if (!status.ok()) {
      throw ModelLoadError("tokenizer model " + path.string() + " is not a valid SentencePiece model (" +
                           status.ToString() + "): pass the tokenizer.model file that ships with the model");
    }
    vocab_size_ = sp_.GetPieceSize();
    if (vocab_size_ <= 0) {
      throw ModelLoadError("tokenizer model " + path.string() + " has an empty vocabulary");
    }
  }

  int vocab_size() const override { return vocab_size_; }
  std::optional<TokenId> bos_id() const override { return special(sp_.bos_id()); }
  std::optional<TokenId> eos_id() const override { return special(sp_.eos_id()); }

  std::vector<TokenId> encode(std::string_view text, bool add_bos) const override {
    std::vector<int> ids;
    // Encoding only fails on an unloaded model, which load() rules out; an empty result is the
    // only sensible answer if it ever did.
    if (!sp_.Encode(text, &ids).ok()) ids.clear();
    std::vector<TokenId> out;
    out.reserve(ids.size() + 1);
    if (add_bos) {
      if (const auto bos = bos_id()) out.push_back(*bos);
    }
    out.insert(out.end(), ids.begin(), ids.end());
    return out;
  }

  std::string decode(const std::vector<TokenId>& ids) const override {
    // Control tokens are removed before SentencePiece sees them, not left for it to drop: a control
    // token inside a run of byte-fallback tokens would otherwise split one character into two
    // U+FFFD, and the incremental detokenizer (which never sees control tokens) could not agree.
    std::vector<int> kept;
    kept.reserve(ids.size());
    for (TokenId id : ids) {
      if (id >= 0 && id < vocab_size_ && !sp_.IsControl(id)) kept.push_back(id);
    }
    std::string text;
    if (!sp_.Decode(kept, &text).ok()) text.clear();
    return text;
  }

  bool is_control(TokenId id) const override { return id >= 0 && id < vocab_size_ && sp_.IsControl(id); }

 private:
  std::optional<TokenId> special(int id) const {
    if (id < 0 || id >= vocab_size_) return std::nullopt;
    return id;
  }

  sentencepiece::SentencePieceProcessor sp_;
  int vocab_size_ = 0;
};

}  // namespace

std::unique_ptr<Tokenizer> Tokenizer::load(const std::filesystem::path& tokenizer_model) {
  return std::make_unique<SentencePieceTokenizer>(tokenizer_model);
}

}  // namespace kvserve
