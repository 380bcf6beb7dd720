// The tokenizer on the committed tokenizer.model, fed a client's text and a client's token ids
// (prompts and Detokenize calls carry raw ids, out-of-range and control ids included), and the
// incremental detokenizer with stop strings, checked against properties that must always hold.
//
// Input layout: byte 0 = flags, byte 1 = n, the next n bytes = stop strings separated by '\n',
// and the rest = text. Flags: bit 0 encode with BOS; bit 1 the ids are the text's bytes taken
// two at a time (so anything in [-8, vocab + 8)) instead of encode(text); bits 2-3 give the
// detokenizer a prompt of that many leading ids; bits 4-7 its min_tokens.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "engine/detokenizer.h"
#include "engine/sentencepiece_model.h"
#include "engine/tokenizer.h"

namespace {

using kvserve::TokenId;

constexpr const char* kModelPath = KVSERVE_TEST_DATA "/tokenizer/tokenizer.model";
constexpr std::string_view kSpaceSymbol = "\xE2\x96\x81";
constexpr std::string_view kReplacement = "\xEF\xBF\xBD";

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz_tokenizer: property violated: %s\n", what);
    std::abort();
  }
}

// Written from the Unicode definition (table 3-7), independently of the tokenizer's own reader:
// the length of the well-formed sequence at s[i], or 0.
size_t well_formed_at(std::string_view s, size_t i) {
  const auto at = [&](size_t k) { return i + k < s.size() ? static_cast<unsigned char>(s[i + k]) : 0x100u; };
  const auto in = [](unsigned v, unsigned lo, unsigned hi) { return v >= lo && v <= hi; };
  const unsigned b0 = at(0);
  if (b0 <= 0x7F) return 1;
  if (in(b0, 0xC2, 0xDF)) return in(at(1), 0x80, 0xBF) ? 2 : 0;
  unsigned lo = 0x80, hi = 0xBF;
  if (b0 == 0xE0) lo = 0xA0;
  if (b0 == 0xED) hi = 0x9F;
  if (b0 == 0xF0) lo = 0x90;
  if (b0 == 0xF4) hi = 0x8F;
  if (in(b0, 0xE0, 0xEF)) return in(at(1), lo, hi) && in(at(2), 0x80, 0xBF) ? 3 : 0;
  if (in(b0, 0xF0, 0xF4)) return in(at(1), lo, hi) && in(at(2), 0x80, 0xBF) && in(at(3), 0x80, 0xBF) ? 4 : 0;
  return 0;
}

bool valid_utf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const size_t n = well_formed_at(s, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

// Each byte outside a well-formed sequence replaced by U+FFFD.
std::string repaired(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size();) {
    const size_t n = well_formed_at(s, i);
    if (n == 0) {
      out += kReplacement;
      ++i;
    } else {
      out += s.substr(i, n);
      i += n;
    }
  }
  return out;
}

// Whether a stop string occurs in `text` starting at a character boundary.
bool contains_stop(const std::string& text, const std::vector<std::string>& stops) {
  for (const std::string& s : stops) {
    for (size_t pos = text.find(s); pos != std::string::npos; pos = text.find(s, pos + 1)) {
      if ((static_cast<unsigned char>(text[pos]) & 0xC0) != 0x80) return true;
    }
  }
  return false;
}

struct Fixture {
  std::unique_ptr<kvserve::Tokenizer> tokenizer = kvserve::Tokenizer::load(kModelPath);
  // SentencePiece's lossless round trip holds only for these settings (no whitespace squeezing,
  // escaped spaces, every character representable); if the committed model changes, the check
  // switches itself off instead of failing on a different contract.
  bool lossless = [] {
    const kvserve::SentencePieceModel m = kvserve::read_sentencepiece_model(kModelPath);
    bool ok = m.byte_fallback && m.add_dummy_prefix && m.escape_whitespaces && !m.remove_extra_whitespaces;
    for (const auto& p : m.pieces) {
      using Type = kvserve::SentencePieceModel::PieceType;
      ok = ok && p.type != Type::kUserDefined && p.type != Type::kUnused;
    }
    return ok;
  }();
};

const Fixture& fixture() {
  static const Fixture* const f = new Fixture;  // leaked on purpose: no destruction-order worries
  return *f;
}

struct Detokenized {
  std::string text;
  bool stopped = false;
};

Detokenized detokenize(const kvserve::Tokenizer& tok, const std::vector<TokenId>& prompt,
                       const std::vector<TokenId>& output, const std::vector<std::string>& stops,
                       int min_tokens) {
  kvserve::IncrementalDetokenizer detok(tok, prompt, stops, min_tokens);
  Detokenized out;
  for (TokenId id : output) {
    const kvserve::IncrementalDetokenizer::Delta d = detok.push(id);
    check(valid_utf8(d.text), "every delta is valid UTF-8");
    out.text += d.text;
    if (d.stopped) {
      out.stopped = true;
      check(detok.push(id).text.empty() && detok.finish().empty(), "nothing comes after a stop");
      break;
    }
  }
  if (!out.stopped) {
    const std::string rest = detok.finish();
    check(valid_utf8(rest), "finish() is valid UTF-8");
    out.text += rest;
  }
  check(detok.text() == out.text, "text() is the concatenation of the deltas");
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return -1;
  const Fixture& fx = fixture();
  const kvserve::Tokenizer& tok = *fx.tokenizer;
  const int vocab = tok.vocab_size();
  const uint8_t flags = data[0];
  const std::string_view rest(reinterpret_cast<const char*>(data) + 2, size - 2);
  const std::string_view stop_spec = rest.substr(0, data[1]);
  const std::string_view text = rest.substr(stop_spec.size());

  std::vector<std::string> stops;
  for (size_t begin = 0; begin <= stop_spec.size() && stops.size() < 4;) {
    const size_t end = std::min(stop_spec.find('\n', begin), stop_spec.size());
    if (end > begin) stops.emplace_back(stop_spec.substr(begin, end - begin));
    begin = end + 1;
  }

  // encode
  const bool add_bos = flags & 1;
  const std::vector<TokenId> encoded = tok.encode(text, add_bos);
  size_t first_text_token = 0;
  if (add_bos && tok.bos_id()) {
    check(!encoded.empty() && encoded[0] == *tok.bos_id(), "BOS comes first when asked for");
    first_text_token = 1;
  }
  for (size_t i = 0; i < encoded.size(); ++i) {
    check(encoded[i] >= 0 && encoded[i] < vocab, "encode yields ids in the vocabulary");
    if (i >= first_text_token) check(!tok.is_control(encoded[i]), "text never encodes to a control token");
  }
  check(text.empty() == (encoded.size() == first_text_token), "only empty text encodes to nothing");
  const std::string round_trip = tok.decode(encoded);
  check(valid_utf8(round_trip), "decode is valid UTF-8");
  if (fx.lossless && text.find(kSpaceSymbol) == std::string_view::npos) {
    check(round_trip == repaired(text), "decode(encode(text)) is the text, malformed bytes as U+FFFD");
  }

  // decode of arbitrary ids
  std::vector<TokenId> ids = encoded;
  if (flags & 2) {
    ids.clear();
    for (size_t i = 0; i + 1 < text.size(); i += 2) {
      const unsigned v = static_cast<unsigned char>(text[i]) |
                         static_cast<unsigned>(static_cast<unsigned char>(text[i + 1])) << 8;
      ids.push_back(static_cast<TokenId>(v % static_cast<unsigned>(vocab + 16)) - 8);
    }
  }
  const std::string decoded = tok.decode(ids);
  check(valid_utf8(decoded), "decode of any ids is valid UTF-8");

  // Streaming with no prompt and no min_tokens: the stream is decode(ids), cut at the first stop.
  const Detokenized plain = detokenize(tok, {}, ids, {}, 0);
  check(!plain.stopped && plain.text == decoded, "without stop strings the stream is decode(ids)");
  if (!stops.empty()) {
    const Detokenized cut = detokenize(tok, {}, ids, stops, 0);
    check(decoded.compare(0, cut.text.size(), cut.text) == 0,
          "the stopped stream is a prefix of decode(ids)");
    check(!contains_stop(cut.text, stops), "no stop string is ever sent");
    if (cut.text.size() < decoded.size() || cut.stopped) {
      bool at_stop = false;
      for (const std::string& s : stops)
        at_stop = at_stop || decoded.compare(cut.text.size(), s.size(), s) == 0;
      check(at_stop, "the stream ends where a stop string begins");
    } else {
      check(!contains_stop(decoded, stops), "a stream that never stopped contains no stop string");
    }
  }

  // With a prompt and min_tokens: no property beyond valid deltas (checked inside), but every path runs.
  const size_t prompt_len = std::min<size_t>((flags >> 2) & 3, ids.size());
  const std::vector<TokenId> prompt(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(prompt_len));
  const std::vector<TokenId> output(ids.begin() + static_cast<std::ptrdiff_t>(prompt_len), ids.end());
  detokenize(tok, prompt, output, stops, flags >> 4);
  return 0;
}
