// The tokenizers on the committed tokenizer.model and on two committed tokenizer.json files (Llama
// 3's shape, and Qwen2's with NFC and every added-token option), fed a client's text and a
// client's token ids (prompts and Detokenize calls carry raw ids, out-of-range and control ids
// included), and the incremental detokenizer with stop strings over each, checked against
// properties that must always hold.
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
constexpr const char* kJsonDir = KVSERVE_TEST_DATA "/tokenizer/bytelevel";
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

// Each byte outside a well-formed sequence replaced by U+FFFD: how SentencePiece repairs text.
std::string repaired_per_byte(std::string_view s) {
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

// Each maximal ill-formed subsequence replaced by one U+FFFD (Unicode's "maximal subparts"): how
// the tokenizers library repairs bytes. A maximal subpart is the longest prefix of some well-formed
// sequence, at least one byte: found by trying the longest candidate first.
std::string repaired_by_subparts(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size();) {
    if (const size_t n = well_formed_at(s, i)) {
      out += s.substr(i, n);
      i += n;
      continue;
    }
    size_t len = 1;
    for (size_t k = std::min<size_t>(3, s.size() - i); k > 1; --k) {
      // s[i, i+k) is a prefix of a well-formed sequence iff completing it with suitable
      // continuation bytes makes one: try the smallest continuation, 0x80, and the largest, 0xBF.
      bool prefix = false;
      for (const char fill : {'\x80', '\xBF'}) {
        std::string probe(s.substr(i, k));
        probe.append(4 - k, fill);
        const size_t n = well_formed_at(probe, 0);
        prefix = prefix || n > k;
      }
      if (prefix) {
        len = k;
        break;
      }
    }
    out += kReplacement;
    i += len;
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

// One tokenizer under test and the contracts that hold for it.
struct Subject {
  std::unique_ptr<kvserve::Tokenizer> tokenizer;
  // Whether text can name control tokens (tokenizer.json added tokens such as "<|eot_id|>" can).
  bool text_names_controls = false;
  // Whether decode(encode(s)) gives s back with ill-formed bytes repaired, and how they are.
  bool lossless = false;
  std::string (*repaired)(std::string_view) = nullptr;
  std::string_view unless_text_contains;  // ...for texts without this
};

std::vector<Subject> make_subjects() {
  std::vector<Subject> subjects;
  // SentencePiece's lossless round trip holds only for these settings (no whitespace squeezing,
  // escaped spaces, every character representable); if the committed model changes, the check
  // switches itself off instead of failing on a different contract.
  const kvserve::SentencePieceModel m = kvserve::read_sentencepiece_model(kModelPath);
  bool lossless =
      m.byte_fallback && m.add_dummy_prefix && m.escape_whitespaces && !m.remove_extra_whitespaces;
  for (const auto& p : m.pieces) {
    using Type = kvserve::SentencePieceModel::PieceType;
    lossless = lossless && p.type != Type::kUserDefined && p.type != Type::kUnused;
  }
  subjects.push_back(
      {kvserve::Tokenizer::load(kModelPath), false, lossless, repaired_per_byte, kSpaceSymbol});
  // Byte-level BPE without a normalizer loses nothing but the special tokens text names ("<|").
  subjects.push_back({kvserve::Tokenizer::load(std::string(kJsonDir) + "/llama3/tokenizer.json"), true, true,
                      repaired_by_subparts, "<|"});
  subjects.push_back(
      {kvserve::Tokenizer::load(std::string(kJsonDir) + "/qwen2/tokenizer.json"), true, false, nullptr, {}});
  return subjects;
}

const std::vector<Subject>& subjects() {
  static const auto* const s = new std::vector<Subject>(make_subjects());  // leaked: no destruction order
  return *s;
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

void check_subject(const Subject& subject, uint8_t flags, std::string_view text,
                   const std::vector<std::string>& stops) {
  const kvserve::Tokenizer& tok = *subject.tokenizer;
  const int vocab = tok.vocab_size();
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
    if (i >= first_text_token && !subject.text_names_controls)
      check(!tok.is_control(encoded[i]), "text never encodes to a control token");
  }
  check(text.empty() == (encoded.size() == first_text_token), "only empty text encodes to nothing");
  const std::string round_trip = tok.decode(encoded);
  check(valid_utf8(round_trip), "decode is valid UTF-8");
  if (subject.lossless && text.find(subject.unless_text_contains) == std::string_view::npos) {
    check(round_trip == subject.repaired(text),
          "decode(encode(text)) is the text, malformed bytes as U+FFFD");
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
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return -1;
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

  for (const Subject& subject : subjects())
    check_subject(subject, flags, text, stops);
  return 0;
}
