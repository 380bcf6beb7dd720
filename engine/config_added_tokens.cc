#include "engine/config_added_tokens.h"

#include <algorithm>
#include <charconv>
#include <fstream>
#include <limits>
#include <map>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "engine/model.h"

namespace kvserve {
namespace {

using nlohmann::json;

std::optional<json> read_json(const std::filesystem::path& file) {
  std::error_code ec;
  if (!std::filesystem::exists(file, ec)) return std::nullopt;
  std::ifstream in(file, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  try {
    return json::parse(text.str());
  } catch (const json::exception& e) {
    throw ModelLoadError(file.string() + ": not valid JSON (" + e.what() + "); fix or re-download it");
  }
}

bool flag(const json& entry, const char* key) {
  const auto it = entry.find(key);
  return it != entry.end() && it->is_boolean() && it->get<bool>();
}

class AddedTokensTokenizer final : public StretchTokenizer {
 public:
  AddedTokensTokenizer(std::unique_ptr<Tokenizer> base, std::vector<AddedToken> added)
      : base_(std::move(base)), matcher_(added) {
    vocab_size_ = base_->vocab_size();
    for (AddedToken& t : added) {
      vocab_size_ = std::max(vocab_size_, t.id + 1);
      by_id_.emplace(t.id, std::move(t));
    }
  }

  int vocab_size() const override { return vocab_size_; }
  std::optional<TokenId> bos_id() const override { return base_->bos_id(); }
  std::optional<TokenId> eos_id() const override { return base_->eos_id(); }

  std::vector<TokenId> encode_stretch(std::string_view text, bool at_text_start,
                                      bool with_special_tokens) const override {
    std::vector<TokenId> out;
    for (const auto& piece : matcher_.split(text)) {
      if (piece.id) {
        out.push_back(*piece.id);
      } else {
        const bool starts = at_text_start && piece.text.data() == text.data();
        const std::vector<TokenId> ids = base_->encode_stretch(piece.text, starts, with_special_tokens);
        out.insert(out.end(), ids.begin(), ids.end());
      }
    }
    return out;
  }

  // Runs of the base vocabulary decode as the base decodes them; an added token is its content.
  // Only the text's first piece loses its "▁" as the dummy prefix: one after an added token is a
  // space (transformers decodes the whole sequence at once).
  std::string decode(const std::vector<TokenId>& ids) const override {
    std::string text;
    std::vector<TokenId> run;
    bool after_added = false;
    const auto flush = [&] {
      std::string part = base_->decode(run);
      if (after_added && !run.empty() && !part.starts_with(' ') &&
          base_->token_spelling(run.front()).starts_with("\xE2\x96\x81"))
        part.insert(0, 1, ' ');
      text += part;
      run.clear();
    };
    for (TokenId id : ids) {
      const auto it = by_id_.find(id);
      if (it == by_id_.end()) {
        run.push_back(id);
        continue;
      }
      if (it->second.special) continue;  // control tokens stay out of the text, as skip_special_tokens
      flush();
      text += it->second.content;
      after_added = true;
    }
    flush();
    return text;
  }

  bool is_control(TokenId id) const override {
    const auto it = by_id_.find(id);
    return it != by_id_.end() ? it->second.special : base_->is_control(id);
  }

  std::string token_spelling(TokenId id) const override {
    const auto it = by_id_.find(id);
    return it != by_id_.end() ? it->second.content : base_->token_spelling(id);
  }

  std::string token_bytes(TokenId id) const override {
    const auto it = by_id_.find(id);
    if (it == by_id_.end()) return base_->token_bytes(id);
    return it->second.special ? std::string() : it->second.content;
  }

 private:
  std::unique_ptr<Tokenizer> base_;
  AddedTokenMatcher matcher_;
  std::map<TokenId, AddedToken> by_id_;
  int vocab_size_ = 0;
};

}  // namespace

std::vector<AddedToken> read_config_added_tokens(const std::filesystem::path& dir, TokenId first_id) {
  std::map<TokenId, AddedToken> found;
  const std::filesystem::path config_file = dir / "tokenizer_config.json";
  if (const auto config = read_json(config_file); config && config->is_object()) {
    const auto decoder = config->find("added_tokens_decoder");
    if (decoder != config->end() && decoder->is_object()) {
      for (const auto& [key, entry] : decoder->items()) {
        TokenId id = -1;
        const auto parsed = std::from_chars(key.data(), key.data() + key.size(), id);
        if (parsed.ec != std::errc() || parsed.ptr != key.data() + key.size() || id < 0 ||
            id == std::numeric_limits<TokenId>::max() || !entry.is_object() || !entry.contains("content") ||
            !entry["content"].is_string() || entry["content"].get<std::string>().empty())
          throw ModelLoadError(config_file.string() + ": added_tokens_decoder[\"" + key +
                               "\"] must be a token id with an object holding a non-empty \"content\"");
        if (id < first_id) continue;
        found[id] = AddedToken{.content = entry["content"].get<std::string>(),
                               .id = id,
                               .special = flag(entry, "special"),
                               .single_word = flag(entry, "single_word"),
                               .lstrip = flag(entry, "lstrip"),
                               .rstrip = flag(entry, "rstrip")};
      }
    }
  }
  // The older file: {"content": id}; not special unless tokenizer_config.json says so.
  const std::filesystem::path added_file = dir / "added_tokens.json";
  if (const auto added = read_json(added_file)) {
    if (!added->is_object())
      throw ModelLoadError(added_file.string() + ": must hold a JSON object {\"token\": id}");
    for (const auto& [content, id] : added->items()) {
      if (!id.is_number_integer() || content.empty())
        throw ModelLoadError(added_file.string() + ": \"" + content + "\" must map to a token id");
      if (id.get<int64_t>() < 0 || id.get<int64_t>() >= std::numeric_limits<TokenId>::max())
        throw ModelLoadError(added_file.string() + ": \"" + content + "\" maps to an id out of range");
      const TokenId tid = id.get<TokenId>();
      if (tid >= first_id && !found.count(tid)) found[tid] = AddedToken{.content = content, .id = tid};
    }
  }
  std::vector<AddedToken> out;
  for (auto& [id, token] : found)
    out.push_back(std::move(token));
  return out;
}

DummyPrefixRule sentencepiece_prefix_rule(const std::filesystem::path& dir) {
  using Where = DummyPrefixRule::Where;
  std::optional<json> fast;
  try {
    fast = read_json(dir / "tokenizer.json");
  } catch (const ModelLoadError&) {
    // Not kvserve's to read (the tokenizer.model is used): the config decides.
  }
  // A component alone or inside a Sequence.
  const auto find_type = [](const json& root, const char* key, const char* list_key, const char* type) {
    const json* found = nullptr;
    if (!root.is_object() || !root.contains(key)) return found;
    const json& part = root[key];
    if (part.is_object() && part.value("type", "") == type) return &part;
    if (part.is_object() && part.value("type", "") == "Sequence" && part.contains(list_key) &&
        part[list_key].is_array())
      for (const auto& p : part[list_key])
        if (p.is_object() && p.value("type", "") == type) return &p;
    return found;
  };
  if (fast) {
    if (find_type(*fast, "normalizer", "normalizers", "Prepend")) return {Where::kEveryStretch, false};
    if (const json* meta = find_type(*fast, "pre_tokenizer", "pretokenizers", "Metaspace")) {
      std::string scheme = meta->value("prepend_scheme", "");
      if (scheme.empty()) scheme = meta->value("add_prefix_space", true) ? "always" : "never";
      if (scheme == "first") return {Where::kTextStart, true};
      if (scheme == "never") return {Where::kNever, false};
      return {Where::kEveryStretch, true};
    }
  }
  if (const auto config = read_json(dir / "tokenizer_config.json"); config && config->is_object()) {
    const auto legacy = config->find("legacy");
    if (legacy != config->end() && legacy->is_boolean() && !legacy->get<bool>())
      return {Where::kTextStart, false};
  }
  return {};
}

std::unique_ptr<Tokenizer> with_added_tokens(std::unique_ptr<Tokenizer> base, std::vector<AddedToken> added) {
  if (added.empty()) return base;
  return std::make_unique<AddedTokensTokenizer>(std::move(base), std::move(added));
}

}  // namespace kvserve
