// SentencePiece BPE tokenization without libsentencepiece: that library bundles and exports its own
// protobuf-lite, which collides with the server's libprotobuf during static initialisation. The
// behaviour follows the library's (spm_encode / spm_decode are the references in the tests).
#include "engine/tokenizer.h"

#include <algorithm>
#include <array>
#include <cstdint>
#include <queue>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "engine/added_tokens.h"
#include "engine/config_added_tokens.h"
#include "engine/hf_tokenizer.h"
#include "engine/model.h"
#include "engine/sentencepiece_model.h"
#include "engine/utf8.h"

namespace kvserve {
namespace {

using PieceType = SentencePieceModel::PieceType;

constexpr std::string_view kSpaceSymbol = "\xE2\x96\x81";  // U+2581 "▁"

// Appends `bytes` as UTF-8, each byte that does not belong to a well-formed character becoming one
// U+FFFD, as SentencePiece decodes a run of byte-fallback pieces.
void append_repaired_utf8(std::string_view bytes, std::string& out) {
  while (!bytes.empty()) {
    const size_t len = utf8_char_len(bytes);
    if (len == 0) {
      out += kReplacementCharacter;
      bytes.remove_prefix(1);
    } else {
      out += bytes.substr(0, len);
      bytes.remove_prefix(len);
    }
  }
}

// "<0xAB>" -> 0xAB, in the exact spelling SentencePiece writes; -1 for anything else.
int byte_piece_value(std::string_view piece) {
  const auto hex = [](char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  if (piece.size() != 6 || piece.substr(0, 3) != "<0x" || piece[5] != '>') return -1;
  const int hi = hex(piece[3]);
  const int lo = hex(piece[4]);
  return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

const char* model_type_name(SentencePieceModel::ModelType type) {
  switch (type) {
    case SentencePieceModel::ModelType::kUnigram:
      return "unigram";
    case SentencePieceModel::ModelType::kBpe:
      return "BPE";
    case SentencePieceModel::ModelType::kWord:
      return "word";
    case SentencePieceModel::ModelType::kChar:
      return "char";
  }
  return "unknown";
}

class BpeTokenizer final : public StretchTokenizer {
 public:
  BpeTokenizer(const std::filesystem::path& path, SentencePieceModel model) : m_(std::move(model)) {
    const auto fail = [&](const std::string& why) {
      throw ModelLoadError("tokenizer model " + path.string() + " " + why);
    };
    if (m_.pieces.empty()) fail("is not a valid SentencePiece model (it has no pieces)");
    if (m_.model_type != SentencePieceModel::ModelType::kBpe) {
      fail(std::string("is a ") + model_type_name(m_.model_type) +
           " SentencePiece model; only BPE models (as Llama 2 and Mistral use) are supported");
    }
    // Only identity normalization is implemented: refusing beats silently tokenizing differently.
    if (!m_.precompiled_charsmap.empty() || !m_.denormalizer_charsmap.empty()) {
      fail("uses the normalization rule '" + m_.normalizer_name +
           "'; only models without normalization ('identity', as Llama 2 and Mistral use) are supported");
    }
    if (m_.treat_whitespace_as_suffix) fail("sets treat_whitespace_as_suffix, which is not supported");

    vocab_size_ = static_cast<int>(m_.pieces.size());
    byte_ids_.fill(-1);
    ids_.reserve(m_.pieces.size());
    // Views into m_.pieces: m_ is never moved or resized after this point.
    for (TokenId id = 0; id < vocab_size_; ++id) {
      const auto& p = m_.pieces[static_cast<size_t>(id)];
      if (p.text.empty())
        fail("is not a valid SentencePiece model (piece " + std::to_string(id) + " is empty)");
      if (!ids_.emplace(p.text, id).second) {
        fail("is not a valid SentencePiece model (piece '" + p.text + "' is defined twice)");
      }
      if (p.type == PieceType::kUnknown) {
        if (unk_id_ >= 0) fail("is not a valid SentencePiece model (more than one unknown piece)");
        unk_id_ = id;
      } else if (p.type == PieceType::kByte) {
        const int b = byte_piece_value(p.text);
        if (b < 0) fail("is not a valid SentencePiece model (bad byte piece '" + p.text + "')");
        if (!m_.byte_fallback) fail("has byte pieces but byte_fallback is off");
        byte_ids_[static_cast<size_t>(b)] = id;
      } else if (p.type == PieceType::kUserDefined) {
        user_defined_.insert(p.text);
        max_user_defined_len_ = std::max(max_user_defined_len_, p.text.size());
      }
    }
    if (unk_id_ < 0) fail("is not a valid SentencePiece model (it has no unknown piece)");
    specials_ = special_spellings();
    if (m_.byte_fallback) {
      for (TokenId id : byte_ids_) {
        if (id < 0)
          fail("is not a valid SentencePiece model (byte_fallback is on but byte pieces are missing)");
      }
    }
    bos_id_ = control_piece(m_.bos_piece);
    eos_id_ = control_piece(m_.eos_piece);
  }

  int vocab_size() const override { return vocab_size_; }
  std::optional<TokenId> bos_id() const override { return bos_id_; }
  std::optional<TokenId> eos_id() const override { return eos_id_; }

  // Hugging Face's Llama and Mistral tokenizers hold the control and unknown pieces as special
  // added tokens and encode each stretch of text between two as a text of its own, with the dummy
  // prefix where prefix_rule_ says: Llama 2's on every stretch ("<s>[INST]" -> <s> "▁[" "INST" "]"),
  // Mistral v0.3's only at the text's start.
  std::vector<TokenId> encode_stretch(std::string_view text, bool at_text_start,
                                      bool with_special_tokens) const override {
    std::vector<TokenId> out;
    const auto encode_text = [&](std::string_view part) {
      const bool starts = at_text_start && part.data() == text.data();
      using Where = DummyPrefixRule::Where;
      bool prefix =
          prefix_rule_.where == Where::kEveryStretch || (prefix_rule_.where == Where::kTextStart && starts);
      if (prefix_rule_.unless_space && part.starts_with(' ')) prefix = false;
      const std::string normalized = normalize(part, prefix);
      if (!normalized.empty()) bpe(normalized, out);
    };
    if (!with_special_tokens) {
      encode_text(text);
      return out;
    }
    for (const auto& piece : specials_.split(text)) {
      if (piece.id)
        out.push_back(*piece.id);
      else
        encode_text(piece.text);
    }
    return out;
  }

  // Where transformers puts the dummy prefix for this model (engine/config_added_tokens.h).
  void set_prefix_rule(DummyPrefixRule rule) { prefix_rule_ = rule; }

  std::string token_spelling(TokenId id) const override {
    return id >= 0 && id < vocab_size_ ? m_.pieces[static_cast<size_t>(id)].text : std::string();
  }

  std::string decode(const std::vector<TokenId>& ids) const override {
    std::string text;
    std::string bytes;  // the current run of byte-fallback pieces
    bool first = true;  // whether a leading "▁" is the dummy prefix, to be stripped
    for (TokenId id : ids) {
      // Control tokens are dropped here rather than inside the run logic: one between two byte
      // tokens must not split a character (the incremental detokenizer never sees them).
      if (id < 0 || id >= vocab_size_ || is_control(id)) continue;
      const auto& p = m_.pieces[static_cast<size_t>(id)];
      if (p.type == PieceType::kByte) {
        bytes += static_cast<char>(byte_piece_value(p.text));
        first = false;
        continue;
      }
      append_repaired_utf8(bytes, text);
      bytes.clear();
      if (p.type == PieceType::kUnknown) {
        text += m_.unk_surface;
      } else {
        std::string_view piece = p.text;
        if (first && (m_.add_dummy_prefix || m_.remove_extra_whitespaces) &&
            piece.starts_with(kSpaceSymbol)) {
          piece.remove_prefix(kSpaceSymbol.size());
        }
        append_unescaped(piece, text);
      }
      // Removing extra whitespace, SentencePiece keeps stripping until some text has come out.
      first = m_.remove_extra_whitespaces && text.empty();
    }
    append_repaired_utf8(bytes, text);
    return text;
  }

  bool is_control(TokenId id) const override {
    return id >= 0 && id < vocab_size_ && m_.pieces[static_cast<size_t>(id)].type == PieceType::kControl;
  }

  std::string token_bytes(TokenId id) const override {
    if (id < 0 || id >= vocab_size_ || is_control(id)) return {};
    const auto& p = m_.pieces[static_cast<size_t>(id)];
    if (p.type == PieceType::kByte) return std::string(1, static_cast<char>(byte_piece_value(p.text)));
    if (p.type == PieceType::kUnknown) return m_.unk_surface;
    std::string bytes;
    append_unescaped(p.text, bytes);
    return bytes;
  }

 private:
  // A run of the normalized text, [begin, begin + size), in a doubly linked list of symbols.
  struct Symbol {
    uint32_t begin;
    uint32_t size;
    int prev;
    int next;
    bool frozen;  // a user-defined piece: never merged with its neighbours
  };
  struct Candidate {
    float score;
    int left;
    int right;
    uint32_t size;  // left.size + right.size when pushed: a mismatch later means it is stale
  };
  struct Worse {
    bool operator()(const Candidate& a, const Candidate& b) const {
      if (a.score != b.score) return a.score < b.score;
      return a.left > b.left;  // equal scores: the leftmost pair first
    }
  };

  // Control and unknown pieces, matched by their spelling (longest first where two overlap).
  AddedTokenMatcher special_spellings() const {
    std::vector<AddedToken> specials;
    for (TokenId id = 0; id < vocab_size_; ++id) {
      const auto& p = m_.pieces[static_cast<size_t>(id)];
      if (p.type == PieceType::kControl || p.type == PieceType::kUnknown)
        specials.push_back({.content = p.text, .id = id, .special = true});
    }
    return AddedTokenMatcher(specials);
  }

  std::optional<TokenId> control_piece(const std::string& piece) const {
    const auto it = ids_.find(piece);
    if (it == ids_.end() || !is_control(it->second)) return std::nullopt;
    return it->second;
  }

  size_t user_defined_match(std::string_view s) const {
    for (size_t len = std::min(max_user_defined_len_, s.size()); len > 0; --len) {
      if (user_defined_.count(s.substr(0, len))) return len;
    }
    return 0;
  }

  // The text SentencePiece's model sees: identity normalization, with its whitespace handling.
  std::string normalize(std::string_view text, bool dummy_prefix = true) const {
    // One unit at a time: a user-defined piece, a character, or a malformed byte (read as U+FFFD).
    const auto next_unit = [&](std::string_view s) -> std::pair<std::string_view, size_t> {
      if (const size_t n = user_defined_match(s)) return {s.substr(0, n), n};
      if (const size_t n = utf8_char_len(s)) return {s.substr(0, n), n};
      return {kReplacementCharacter, 1};
    };
    if (m_.remove_extra_whitespaces) {
      while (!text.empty()) {
        const auto [unit, consumed] = next_unit(text);
        if (unit != " ") break;
        text.remove_prefix(consumed);
      }
    }
    std::string out;
    if (text.empty()) return out;
    const std::string_view space = m_.escape_whitespaces ? kSpaceSymbol : std::string_view(" ");
    out.reserve(text.size() * 3 / 2 + space.size());
    if (m_.add_dummy_prefix && dummy_prefix) out += space;
    bool prev_space = m_.remove_extra_whitespaces;
    while (!text.empty()) {
      auto [unit, consumed] = next_unit(text);
      text.remove_prefix(consumed);
      if (prev_space) {
        while (unit.starts_with(' '))
          unit.remove_prefix(1);
      }
      if (!unit.empty()) {
        for (char c : unit) {
          if (c == ' ') {
            out += space;
          } else {
            out += c;
          }
        }
        prev_space = unit.ends_with(' ');
      }
      if (!m_.remove_extra_whitespaces) prev_space = false;
    }
    if (m_.remove_extra_whitespaces) {
      while (out.ends_with(space))
        out.resize(out.size() - space.size());
    }
    return out;
  }

  void bpe(const std::string& text, std::vector<TokenId>& out) const {
    const std::string_view all = text;
    std::vector<Symbol> symbols;
    for (size_t pos = 0; pos < all.size();) {
      size_t len = user_defined_match(all.substr(pos));
      const bool frozen = len > 0;
      if (!frozen) len = std::max<size_t>(1, utf8_char_len(all.substr(pos)));  // normalized: well-formed
      const int index = static_cast<int>(symbols.size());
      symbols.push_back({static_cast<uint32_t>(pos), static_cast<uint32_t>(len), index - 1, -1, frozen});
      if (index > 0) symbols[static_cast<size_t>(index) - 1].next = index;
      pos += len;
    }
    const auto view = [&](const Symbol& s) { return all.substr(s.begin, s.size); };

    std::priority_queue<Candidate, std::vector<Candidate>, Worse> agenda;
    // Pieces of an unused piece that a merge formed: it is split back into them at the end.
    std::unordered_map<std::string_view, std::pair<std::string_view, std::string_view>> unmerge;
    const auto consider = [&](int left, int right) {
      if (left < 0 || right < 0) return;
      const Symbol& l = symbols[static_cast<size_t>(left)];
      const Symbol& r = symbols[static_cast<size_t>(right)];
      if (l.frozen || r.frozen) return;
      const std::string_view joined = all.substr(l.begin, l.size + r.size);
      const auto it = ids_.find(joined);
      if (it == ids_.end()) return;
      const auto& piece = m_.pieces[static_cast<size_t>(it->second)];
      if (piece.type != PieceType::kNormal && piece.type != PieceType::kUserDefined &&
          piece.type != PieceType::kUnused) {
        return;
      }
      agenda.push({piece.score, left, right, l.size + r.size});
      if (piece.type == PieceType::kUnused) unmerge[joined] = {view(l), view(r)};
    };
    for (size_t i = 1; i < symbols.size(); ++i)
      consider(static_cast<int>(i) - 1, static_cast<int>(i));

    while (!agenda.empty()) {
      const Candidate top = agenda.top();
      agenda.pop();
      Symbol& l = symbols[static_cast<size_t>(top.left)];
      Symbol& r = symbols[static_cast<size_t>(top.right)];
      if (l.size == 0 || r.size == 0 || l.size + r.size != top.size) continue;
      l.size += r.size;
      r.size = 0;
      l.next = r.next;
      if (r.next >= 0) symbols[static_cast<size_t>(r.next)].prev = top.left;
      consider(l.prev, top.left);
      consider(top.left, l.next);
    }

    bool prev_unknown = false;
    for (int i = 0; i >= 0 && !symbols.empty(); i = symbols[static_cast<size_t>(i)].next) {
      emit(view(symbols[static_cast<size_t>(i)]), unmerge, prev_unknown, out);
    }
  }

  void emit(
      std::string_view piece,
      const std::unordered_map<std::string_view, std::pair<std::string_view, std::string_view>>& unmerge,
      bool& prev_unknown, std::vector<TokenId>& out) const {
    const auto it = ids_.find(piece);
    const TokenId id = it == ids_.end() ? unk_id_ : it->second;
    const PieceType type = m_.pieces[static_cast<size_t>(id)].type;
    if (type == PieceType::kUnused) {
      if (const auto split = unmerge.find(piece); split != unmerge.end()) {
        emit(split->second.first, unmerge, prev_unknown, out);
        emit(split->second.second, unmerge, prev_unknown, out);
        return;
      }
    }
    const bool unknown = type == PieceType::kUnknown;
    if (unknown && m_.byte_fallback) {
      for (char c : piece)
        out.push_back(byte_ids_[static_cast<unsigned char>(c)]);
    } else if (!(unknown && prev_unknown)) {
      // SentencePiece gives a run of unknown characters one <unk>, not one each.
      out.push_back(id);
    }
    prev_unknown = unknown;
  }

  static void append_unescaped(std::string_view piece, std::string& out) {
    for (size_t at; (at = piece.find(kSpaceSymbol)) != std::string_view::npos;) {
      out += piece.substr(0, at);
      out += ' ';
      piece.remove_prefix(at + kSpaceSymbol.size());
    }
    out += piece;
  }

  const SentencePieceModel m_;
  int vocab_size_ = 0;
  TokenId unk_id_ = -1;
  std::optional<TokenId> bos_id_;
  std::optional<TokenId> eos_id_;
  std::unordered_map<std::string_view, TokenId> ids_;  // every piece's text -> its id
  std::array<TokenId, 256> byte_ids_{};
  std::unordered_set<std::string_view> user_defined_;
  size_t max_user_defined_len_ = 0;
  AddedTokenMatcher specials_{{}};
  DummyPrefixRule prefix_rule_;  // SentencePiece's own: every stretch
};

}  // namespace

std::unique_ptr<Tokenizer> Tokenizer::load(const std::filesystem::path& file) {
  if (file.extension() == ".json") return load_hf_tokenizer(file);
  return std::make_unique<BpeTokenizer>(file, read_sentencepiece_model(file));
}

std::unique_ptr<Tokenizer> Tokenizer::load_from_model_dir(const std::filesystem::path& dir) {
  const std::filesystem::path model = dir / "tokenizer.model";
  const std::filesystem::path json = dir / "tokenizer.json";
  std::error_code ec;
  const bool have_json = std::filesystem::exists(json, ec);
  if (std::filesystem::exists(model, ec)) {
    std::unique_ptr<BpeTokenizer> spm;
    try {
      spm = std::make_unique<BpeTokenizer>(model, read_sentencepiece_model(model));
    } catch (const ModelLoadError& e) {
      // Not a SentencePiece model (Llama 3's tiktoken file copied in, say): the tokenizer.json is.
      if (!have_json) throw;
      try {
        return load(json);
      } catch (const ModelLoadError& e2) {
        throw ModelLoadError(std::string(e.what()) + "; and " + e2.what());
      }
    }
    // How transformers reads the model: legacy or not, and the tokens a fine-tune added past the
    // SentencePiece vocabulary, live in its own files.
    spm->set_prefix_rule(sentencepiece_prefix_rule(dir));
    const TokenId first_added = spm->vocab_size();
    return with_added_tokens(std::move(spm), read_config_added_tokens(dir, first_added));
  }
  if (have_json) return load(json);
  throw ModelLoadError(dir.string() +
                       " has neither tokenizer.model nor tokenizer.json: add the tokenizer file that "
                       "ships with the model");
}

}  // namespace kvserve
