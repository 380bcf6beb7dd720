#include "engine/hf_tokenizer.h"

#include <algorithm>
#include <fstream>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/added_tokens.h"
#include "engine/byte_level_bpe.h"
#include "engine/model.h"
#include "engine/pre_tokenizer.h"
#include "engine/unicode_text.h"
#include "engine/utf8.h"

namespace kvserve {
namespace {

using json = nlohmann::json;

// What a reader of tokenizer.json needs while parsing: the file, to name it in every error.
class Reader {
 public:
  explicit Reader(std::filesystem::path path) : path_(std::move(path)) {}

  [[noreturn]] void fail(const std::string& field, const std::string& why) const { fail(field + " " + why); }
  [[noreturn]] void fail(const std::string& what) const {
    throw ModelLoadError("tokenizer " + path_.string() + ": " + what);
  }

  const json& member(const json& object, const std::string& field, const char* key) const {
    if (!object.is_object() || !object.contains(key)) fail(field, std::string("has no '") + key + "'");
    return object.at(key);
  }
  std::string string(const json& value, const std::string& field) const {
    if (!value.is_string()) fail(field, "must be a string");
    return value.get<std::string>();
  }
  bool flag(const json& object, const std::string& field, const char* key, bool absent) const {
    if (!object.contains(key) || object.at(key).is_null()) return absent;
    if (!object.at(key).is_boolean()) fail(field + "." + key, "must be true or false");
    return object.at(key).get<bool>();
  }
  TokenId id(const json& value, const std::string& field) const {
    if (!value.is_number_integer() || value.get<int64_t>() < 0 || value.get<int64_t>() >= (int64_t{1} << 30))
      fail(field, "must be a token id (an integer in [0, 2^30))");
    return static_cast<TokenId>(value.get<int64_t>());
  }
  std::string type(const json& object, const std::string& field) const {
    return string(member(object, field, "type"), field + ".type");
  }

 private:
  std::filesystem::path path_;
};

// Sequence of normalization forms; empty = none.
std::vector<NormalizationForm> read_normalizer(const Reader& r, const json& j, const std::string& field) {
  if (j.is_null()) return {};
  const std::string type = r.type(j, field);
  if (type == "Sequence") {
    std::vector<NormalizationForm> forms;
    const json& list = r.member(j, field, "normalizers");
    if (!list.is_array()) r.fail(field + ".normalizers", "must be a list");
    for (size_t i = 0; i < list.size(); ++i) {
      for (NormalizationForm f :
           read_normalizer(r, list[i], field + ".normalizers[" + std::to_string(i) + "]"))
        forms.push_back(f);
    }
    return forms;
  }
  if (type == "NFC") return {NormalizationForm::kNFC};
  if (type == "NFD") return {NormalizationForm::kNFD};
  if (type == "NFKC") return {NormalizationForm::kNFKC};
  if (type == "NFKD") return {NormalizationForm::kNFKD};
  r.fail(field + ".type",
         "'" + type + "' is not supported (supported: NFC, NFD, NFKC, NFKD, or a Sequence of them)");
}

SplitBehavior read_behavior(const Reader& r, const json& j, const std::string& field) {
  const std::string name = r.string(j, field);
  if (name == "Removed") return SplitBehavior::kRemoved;
  if (name == "Isolated") return SplitBehavior::kIsolated;
  if (name == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (name == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (name == "Contiguous") return SplitBehavior::kContiguous;
  r.fail(field, "'" + name + "' is not a split behaviour");
}

void read_pre_tokenizer(const Reader& r, const json& j, const std::string& field, PreTokenizer& out) {
  if (j.is_null()) return;
  const std::string type = r.type(j, field);
  if (type == "Sequence") {
    const json& list = r.member(j, field, "pretokenizers");
    if (!list.is_array()) r.fail(field + ".pretokenizers", "must be a list");
    for (size_t i = 0; i < list.size(); ++i)
      read_pre_tokenizer(r, list[i], field + ".pretokenizers[" + std::to_string(i) + "]", out);
  } else if (type == "Split") {
    const json& pattern = r.member(j, field, "pattern");
    const bool literal = pattern.is_object() && pattern.contains("String");
    if (!literal && !(pattern.is_object() && pattern.contains("Regex")))
      r.fail(field + ".pattern", "must be {\"Regex\": ...} or {\"String\": ...}");
    const std::string where = field + ".pattern." + (literal ? "String" : "Regex");
    const std::string text = r.string(pattern.at(literal ? "String" : "Regex"), where);
    const SplitBehavior behavior = read_behavior(r, r.member(j, field, "behavior"), field + ".behavior");
    try {
      out.add_split(
          UnicodeRegex(text, literal ? UnicodeRegex::Syntax::kLiteral : UnicodeRegex::Syntax::kOniguruma),
          behavior, r.flag(j, field, "invert", false));
    } catch (const std::invalid_argument& e) {
      r.fail(where, e.what());
    }
  } else if (type == "ByteLevel") {
    out.add_byte_level(r.flag(j, field, "add_prefix_space", true), r.flag(j, field, "use_regex", true));
  } else {
    r.fail(field + ".type", "'" + type +
                                "' is not supported (supported: Split, ByteLevel, or a Sequence of them, as "
                                "byte-level BPE tokenizers use)");
  }
}

// The ids a TemplateProcessing puts before and after a single sequence ("$A").
struct Template {
  std::vector<TokenId> before;
  std::vector<TokenId> after;
  bool seen = false;  // a TemplateProcessing was read
};

void read_post_processor(const Reader& r, const json& j, const std::string& field, Template& out) {
  if (j.is_null()) return;
  const std::string type = r.type(j, field);
  if (type == "ByteLevel") return;  // it only adjusts offsets
  if (type == "Sequence") {
    const json& list = r.member(j, field, "processors");
    if (!list.is_array()) r.fail(field + ".processors", "must be a list");
    for (size_t i = 0; i < list.size(); ++i)
      read_post_processor(r, list[i], field + ".processors[" + std::to_string(i) + "]", out);
    return;
  }
  if (type != "TemplateProcessing") {
    r.fail(field + ".type",
           "'" + type + "' is not supported (supported: TemplateProcessing, ByteLevel, Sequence)");
  }
  if (out.seen) r.fail(field, "is a second TemplateProcessing; only one is supported");
  out.seen = true;
  const json& single = r.member(j, field, "single");
  const json& specials = r.member(j, field, "special_tokens");
  if (!single.is_array()) r.fail(field + ".single", "must be a list");
  bool seen_sequence = false;
  for (size_t i = 0; i < single.size(); ++i) {
    const std::string item = field + ".single[" + std::to_string(i) + "]";
    if (single[i].contains("Sequence")) {
      seen_sequence = true;
      continue;
    }
    const std::string name = r.string(r.member(r.member(single[i], item, "SpecialToken"), item, "id"), item);
    const std::string entry = field + ".special_tokens." + name;
    const json& ids = r.member(r.member(specials, field + ".special_tokens", name.c_str()), entry, "ids");
    if (!ids.is_array()) r.fail(entry + ".ids", "must be a list");
    for (const json& id : ids)
      (seen_sequence ? out.after : out.before).push_back(r.id(id, entry + ".ids"));
  }
  if (!seen_sequence) r.fail(field + ".single", "has no {\"Sequence\": ...} item for the text");
}

class HfTokenizer final : public Tokenizer {
 public:
  // vocab_size: one more than the largest id the parts use (checked by the loader).
  HfTokenizer(std::vector<NormalizationForm> normalizer, PreTokenizer pre_tokenizer, ByteLevelBpe model,
              const std::vector<AddedToken>& added, Template post, int vocab_size)
      : normalizer_(std::move(normalizer)),
        pre_tokenizer_(std::move(pre_tokenizer)),
        model_(std::move(model)),
        raw_added_(select(added, false)),
        normalized_added_(select(added, true)),
        post_(std::move(post)),
        pieces_(static_cast<size_t>(vocab_size)) {
    // What each id decodes to, as the ByteLevel decoder maps a token's text back to bytes; text
    // that is not byte-level characters (an added token's, say) stands for itself.
    const auto set = [&](TokenId id, const std::string& text, bool special) {
      Piece& p = pieces_[static_cast<size_t>(id)];
      p.spelling = text;
      p.bytes.clear();
      if (!from_byte_level(text, p.bytes)) p.bytes = text;
      p.present = true;
      p.special = special;
    };
    for (const auto& [text, id] : model_.vocab())
      set(id, text, false);
    for (const AddedToken& t : added)
      set(t.id, t.content, t.special);
  }

  int vocab_size() const override { return static_cast<int>(pieces_.size()); }
  std::optional<TokenId> bos_id() const override {
    return post_.before.empty() ? std::nullopt : std::optional<TokenId>(post_.before.front());
  }
  std::optional<TokenId> eos_id() const override { return std::nullopt; }  // config.json says which

  std::vector<TokenId> encode(std::string_view text, bool add_bos) const override {
    std::vector<TokenId> out;
    if (add_bos) out = post_.before;
    const std::string valid = utf8_lossy(text);
    for (const auto& raw : raw_added_.split(valid)) {
      if (raw.id) {
        out.push_back(*raw.id);
        continue;
      }
      const std::string normalized = normalize(raw.text);
      for (const auto& piece : normalized_added_.split(normalized)) {
        if (piece.id) {
          out.push_back(*piece.id);
          continue;
        }
        for (const std::string& word : pre_tokenizer_.words(piece.text))
          model_.encode_word(word, out);
      }
    }
    if (add_bos) out.insert(out.end(), post_.after.begin(), post_.after.end());
    return out;
  }

  // encode() already finds added tokens, special ones included, wherever the text spells them.
  std::vector<TokenId> encode_with_special_tokens(std::string_view text) const override {
    return encode(text, false);
  }

  std::string token_spelling(TokenId id) const override {
    return id >= 0 && id < vocab_size() ? pieces_[static_cast<size_t>(id)].spelling : std::string();
  }

  std::string decode(const std::vector<TokenId>& ids) const override {
    std::string bytes;
    for (TokenId id : ids) {
      if (id < 0 || id >= vocab_size()) continue;
      const Piece& p = pieces_[static_cast<size_t>(id)];
      if (p.present && !p.special) bytes += p.bytes;
    }
    return utf8_lossy(bytes);
  }

  std::string token_bytes(TokenId id) const override {
    if (id < 0 || id >= vocab_size()) return {};
    const Piece& p = pieces_[static_cast<size_t>(id)];
    return p.present && !p.special ? p.bytes : std::string();
  }

  // Special tokens, and ids no token has (they decode to nothing, as control tokens do).
  bool is_control(TokenId id) const override {
    if (id < 0 || id >= vocab_size()) return false;
    const Piece& p = pieces_[static_cast<size_t>(id)];
    return p.special || !p.present;
  }

 private:
  struct Piece {
    std::string spelling;  // as the file writes it (byte-level characters for the vocabulary's)
    std::string bytes;     // what the id decodes to
    bool present = false;  // ids between the vocabulary's and the added tokens' may be unassigned
    bool special = false;
  };

  // The added tokens matched in the raw text, or those matched in the normalized text, where they
  // are looked for normalized too (a token written in NFD still matches under NFC).
  AddedTokenMatcher select(const std::vector<AddedToken>& added, bool normalized) const {
    std::vector<AddedToken> some;
    for (const AddedToken& t : added) {
      if (t.normalized != normalized) continue;
      some.push_back(t);
      if (normalized) some.back().content = normalize(t.content);
    }
    return AddedTokenMatcher(some);
  }

  std::string normalize(std::string_view text) const {
    std::string out(text);
    for (NormalizationForm form : normalizer_)
      out = normalize_unicode(out, form);
    return out;
  }

  std::vector<NormalizationForm> normalizer_;
  PreTokenizer pre_tokenizer_;
  ByteLevelBpe model_;
  AddedTokenMatcher raw_added_;         // matched in the text as it comes
  AddedTokenMatcher normalized_added_;  // matched in the normalized text
  Template post_;
  std::vector<Piece> pieces_;  // by id
};

ByteLevelBpe read_model(const Reader& r, const json& j) {
  const std::string field = "model";
  if (!j.is_object()) r.fail(field, "must be an object");
  if (j.contains("type") && r.string(j.at("type"), "model.type") != "BPE") {
    r.fail("model.type",
           "'" + j.at("type").get<std::string>() +
               "' is not supported: only BPE models (byte-level, as Llama 3, Qwen2 and GPT-2 use) are");
  }
  if (r.flag(j, field, "byte_fallback", false)) {
    r.fail("model.byte_fallback",
           "is true: this is a SentencePiece-style tokenizer (Llama 2, Mistral); put the "
           "model's tokenizer.model in the directory, which kvserve reads instead");
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (j.contains(key) && !j.at(key).is_null() &&
        !(j.at(key).is_string() && j.at(key).get<std::string>().empty()))
      r.fail(std::string("model.") + key,
             "is set, which byte-level BPE does not use and kvserve does not support");
  }
  if (j.contains("dropout") && !j.at("dropout").is_null() &&
      !(j.at("dropout").is_number() && j.at("dropout") == 0))
    r.fail("model.dropout", "is set: BPE dropout is for training, not serving");

  const json& vocab_json = r.member(j, field, "vocab");
  if (!vocab_json.is_object() || vocab_json.empty())
    r.fail("model.vocab", "must be a non-empty object of token -> id");
  std::unordered_map<std::string, TokenId> vocab;
  vocab.reserve(vocab_json.size());
  std::unordered_map<TokenId, std::string> text_of;  // to refuse an id given twice
  text_of.reserve(vocab_json.size());
  for (const auto& [text, id_json] : vocab_json.items()) {
    const TokenId id = r.id(id_json, "model.vocab['" + text + "']");
    if (const auto [it, fresh] = text_of.emplace(id, text); !fresh)
      r.fail("model.vocab['" + text + "']",
             "has id " + std::to_string(id) + ", which '" + it->second + "' has too");
    vocab.emplace(text, id);
  }

  const json& merges_json = r.member(j, field, "merges");
  if (!merges_json.is_array()) r.fail("model.merges", "must be a list");
  std::vector<std::pair<std::string, std::string>> merges;
  merges.reserve(merges_json.size());
  for (size_t i = 0; i < merges_json.size(); ++i) {
    const json& m = merges_json[i];
    const std::string where = "model.merges[" + std::to_string(i) + "]";
    if (m.is_string()) {  // "left right": byte-level tokens hold no space, so one space separates
      const std::string s = m.get<std::string>();
      const size_t space = s.find(' ');
      if (space == std::string::npos || space == 0 || space + 1 == s.size() ||
          s.find(' ', space + 1) != std::string::npos)
        r.fail(where, "'" + s + "' is not two tokens separated by one space");
      merges.emplace_back(s.substr(0, space), s.substr(space + 1));
    } else if (m.is_array() && m.size() == 2) {
      merges.emplace_back(r.string(m[0], where), r.string(m[1], where));
    } else {
      r.fail(where, "must be \"left right\" or [\"left\", \"right\"]");
    }
  }
  ByteLevelBpe::Options options;
  options.ignore_merges = r.flag(j, field, "ignore_merges", false);
  options.fuse_unk = r.flag(j, field, "fuse_unk", false);
  if (j.contains("unk_token") && !j.at("unk_token").is_null()) {
    const std::string unk = r.string(j.at("unk_token"), "model.unk_token");
    const auto it = vocab.find(unk);
    if (it == vocab.end()) r.fail("model.unk_token", "'" + unk + "' is not in model.vocab");
    options.unk = it->second;
  }
  try {
    return ByteLevelBpe(std::move(vocab), merges, options);
  } catch (const std::invalid_argument& e) {
    r.fail("model.merges" + std::string(e.what()));  // "[i] ('a' + 'b') needs ..."
  }
}

std::vector<AddedToken> read_added_tokens(const Reader& r, const json& j) {
  std::vector<AddedToken> out;
  if (j.is_null()) return out;
  if (!j.is_array()) r.fail("added_tokens", "must be a list");
  for (size_t i = 0; i < j.size(); ++i) {
    const std::string field = "added_tokens[" + std::to_string(i) + "]";
    AddedToken t;
    t.id = r.id(r.member(j[i], field, "id"), field + ".id");
    t.content = r.string(r.member(j[i], field, "content"), field + ".content");
    if (t.content.empty() || utf8_lossy(t.content) != t.content)
      r.fail(field + ".content", "must be non-empty, well-formed UTF-8");
    t.special = r.flag(j[i], field, "special", false);
    t.single_word = r.flag(j[i], field, "single_word", false);
    t.lstrip = r.flag(j[i], field, "lstrip", false);
    t.rstrip = r.flag(j[i], field, "rstrip", false);
    t.normalized = r.flag(j[i], field, "normalized", !t.special);
    out.push_back(std::move(t));
  }
  return out;
}

}  // namespace

std::unique_ptr<Tokenizer> load_hf_tokenizer(const std::filesystem::path& path) {
  const Reader r(path);
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw ModelLoadError(
        "tokenizer " + path.string() +
        " does not exist or cannot be read: pass the tokenizer.json that ships with the model");
  json j;
  try {
    j = json::parse(in);
  } catch (const json::exception& e) {
    throw ModelLoadError("tokenizer " + path.string() + " is not valid JSON (" + e.what() + ")");
  }
  if (!j.is_object()) throw ModelLoadError("tokenizer " + path.string() + " is not a JSON object");

  std::vector<NormalizationForm> normalizer =
      read_normalizer(r, j.contains("normalizer") ? j.at("normalizer") : json(), "normalizer");
  PreTokenizer pre_tokenizer;
  read_pre_tokenizer(r, j.contains("pre_tokenizer") ? j.at("pre_tokenizer") : json(), "pre_tokenizer",
                     pre_tokenizer);
  if (!pre_tokenizer.has_byte_level()) {
    r.fail("pre_tokenizer",
           "has no ByteLevel step: only byte-level BPE tokenizers (Llama 3, Qwen2, GPT-2) are "
           "supported from tokenizer.json; for a SentencePiece model put its tokenizer.model in "
           "the directory");
  }
  const json& decoder = r.member(j, "tokenizer.json", "decoder");
  if (decoder.is_null() || r.type(decoder, "decoder") != "ByteLevel")
    r.fail("decoder", "must be {\"type\": \"ByteLevel\"}, as byte-level BPE tokenizers have");
  ByteLevelBpe model = read_model(r, r.member(j, "tokenizer.json", "model"));
  std::vector<AddedToken> added =
      read_added_tokens(r, j.contains("added_tokens") ? j.at("added_tokens") : json());
  Template post;
  read_post_processor(r, j.contains("post_processor") ? j.at("post_processor") : json(), "post_processor",
                      post);

  // The ids index a table of what each decodes to: a stray huge one must be an error, not gigabytes.
  size_t defined = model.vocab().size();
  TokenId max_id = -1;
  std::string max_field = "model.vocab";
  for (const auto& [text, id] : model.vocab())
    max_id = std::max(max_id, id);
  for (size_t i = 0; i < added.size(); ++i) {
    const std::string field = "added_tokens[" + std::to_string(i) + "].id";
    const auto in_vocab = model.vocab().find(added[i].content);
    if (in_vocab != model.vocab().end() && in_vocab->second != added[i].id) {
      r.fail(field, "is " + std::to_string(added[i].id) + " but model.vocab gives '" + added[i].content +
                        "' the id " + std::to_string(in_vocab->second));
    }
    if (in_vocab == model.vocab().end()) ++defined;
    if (added[i].id > max_id) {
      max_id = added[i].id;
      max_field = field;
    }
  }
  for (TokenId id : post.before)
    max_id = std::max(max_id, id);
  for (TokenId id : post.after)
    max_id = std::max(max_id, id);
  if (static_cast<size_t>(max_id) + 1 > 2 * defined + 1024) {
    r.fail(max_field, "reaches id " + std::to_string(max_id) + " with only " + std::to_string(defined) +
                          " tokens defined: these ids are not a vocabulary's (a damaged file?)");
  }
  return std::make_unique<HfTokenizer>(std::move(normalizer), std::move(pre_tokenizer), std::move(model),
                                       added, std::move(post), max_id + 1);
}

}  // namespace kvserve
