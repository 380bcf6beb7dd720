// Differential tests of the tokenizer against SentencePiece's own command-line tools (spm_encode,
// spm_decode, spm_train) on seeded random text and on models trained or crafted for the purpose.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "engine/model.h"
#include "engine/tokenizer.h"
#include "tests/engine/tokenizer_spm_test_util.h"

namespace kvserve {
namespace {

using namespace tokenizer_test;

std::string utf8(uint32_t cp) {
  if (cp < 0x80) return std::string(1, static_cast<char>(cp));
  static constexpr unsigned char kLead[] = {0, 0, 0xC0, 0xE0, 0xF0};
  const size_t n = cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
  std::string s(n, '\0');
  for (size_t i = n - 1; i > 0; --i, cp >>= 6)
    s[i] = static_cast<char>(0x80 | (cp & 0x3F));
  s[0] = static_cast<char>(kLead[n] | cp);
  return s;
}

// One random line of text (spm_encode reads one sentence per line: no '\n', and no '\r' or NUL that a
// line reader might treat specially). Mixes every kind of input a prompt can hold, whitespace runs
// at both ends included, and now and then malformed UTF-8.
std::string random_text(std::mt19937_64& rng, const std::string& corpus,
                        const std::vector<std::string>& extra) {
  const auto pick = [&](uint64_t n) { return static_cast<size_t>(rng() % n); };
  const auto chars = [&](uint32_t lo, uint32_t hi, size_t n) {
    std::string s;
    for (size_t i = 0; i < n; ++i)
      s += utf8(lo + static_cast<uint32_t>(pick(hi - lo + 1)));
    return s;
  };
  static const std::vector<std::string> kLatin{"caf\xC3\xA9",
                                               "na\xC3\xAFve",
                                               "\xC3\xA9",
                                               "\xC3\xA0",
                                               "\xC3\xB1",
                                               "stra\xC3\x9F"
                                               "e",
                                               "\xC3\x85",
                                               "\xC3\xB8"};
  static const std::vector<std::string> kWords{"the",   "kv",    "cache",    "block", "Hello",
                                               "world", "serve", "request",  "token", "GPU",
                                               "a",     "I",     "tokenizer"};
  static const std::vector<std::string> kBroken{"\xC3",         "\x80",     "\xFF",     "\xED\xA0\x80",
                                                "\xF0\x9F\x98", "\xE6\x97", "\xC0\xAF", "\xF4\x90\x80\x80"};
  std::string s;
  if (pick(4) == 0) s.append(1 + pick(4), ' ');
  for (size_t parts = 1 + pick(10); parts > 0; --parts) {
    switch (pick(16)) {
      case 0:
      case 1: {
        std::string w = kWords[pick(kWords.size())];
        if (pick(3) == 0) w = chars('a', 'z', 1 + pick(9));
        if (pick(4) == 0) w[0] = static_cast<char>(w[0] & ~0x20);
        s += w;
        break;
      }
      case 2:
      case 3:
        s.append(1 + pick(pick(3) == 0 ? 6 : 2), ' ');
        break;
      case 4:
        s += pick(2) ? "\t" : (pick(2) ? " \t " : "\x0B");
        break;
      case 5:
        s += chars('0', '9', 1 + pick(8));
        break;
      case 6:
        s += chars('!', '/', 1 + pick(3)) + chars(':', '@', pick(2)) + chars('[', '`', pick(2));
        break;
      case 7:
        s += kLatin[pick(kLatin.size())];
        break;
      case 8:
        s += pick(3) ? chars(0x4E00, 0x9FFF, 1 + pick(4)) : "\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E";
        break;
      case 9:
        s += chars(0x0410, 0x044F, 1 + pick(7));
        break;
      case 10:
        s += pick(3) ? chars(0x1F300, 0x1FAFF, 1 + pick(3)) : "\xF0\x9F\x99\x82\xF0\x9F\x9A\x80";
        break;
      case 11:
      case 12: {  // the training text, cut anywhere (even inside a character)
        const size_t at = pick(corpus.size());
        s += corpus.substr(at, 1 + pick(80));
        break;
      }
      case 13:
        s += "\xE2\x96\x81";  // a literal "▁"
        break;
      case 14:
        s += pick(2) ? kBroken[pick(kBroken.size())] : chars(0x20, 0xD7FF, 1);
        break;
      default:
        if (!extra.empty()) s += extra[pick(extra.size())];
        break;
    }
  }
  if (pick(4) == 0) s.append(1 + pick(4), ' ');
  for (char& c : s) {
    if (c == '\n' || c == '\r' || c == '\0') c = ' ';
  }
  return s;
}

// Runs `tool` over `lines` (one per line) and returns its output lines.
std::vector<std::string> run_spm(const TempDir& dir, const std::string& tool,
                                 const std::vector<std::string>& lines) {
  std::string input;
  for (const auto& l : lines)
    input += l + "\n";
  const fs::path in = dir.path() / "in.txt";
  const fs::path out = dir.path() / "out.txt";
  write_file(in, input);
  const std::string cmd = tool + " < " + shell_quote(in) + " > " + shell_quote(out) + " 2>/dev/null";
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
  std::vector<std::string> result;
  std::istringstream s(read_file(out));
  for (std::string line; std::getline(s, line);)
    result.push_back(line);
  return result;
}

std::vector<TokenId> parse_ids(const std::string& line) {
  std::vector<TokenId> ids;
  std::istringstream s(line);
  for (TokenId id; s >> id;)
    ids.push_back(id);
  return ids;
}

// The ids of the byte pieces <0x00>..<0xFF> (empty when the model has none), from spm_export_vocab:
// the vocabulary as SentencePiece lists it, one piece a line in id order.
std::vector<TokenId> byte_pieces(const fs::path& model) {
  const fs::path out = fs::temp_directory_path() / ("kvserve_vocab_" + std::to_string(::getpid()) + ".txt");
  const std::string cmd =
      "spm_export_vocab --model=" + shell_quote(model) + " > " + shell_quote(out) + " 2>/dev/null";
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
  std::istringstream s(read_file(out));
  fs::remove(out);
  std::vector<TokenId> ids(256, -1);
  size_t found = 0;
  TokenId id = 0;
  for (std::string line; std::getline(s, line); ++id) {
    const std::string piece = line.substr(0, line.find('\t'));
    if (piece.size() == 6 && piece.rfind("<0x", 0) == 0 && piece[5] == '>') {
      ids[std::stoul(piece.substr(3, 2), nullptr, 16)] = id;
      ++found;
    }
  }
  if (found != 256) ids.clear();
  return ids;
}

class TokenizerSpmTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!have_spm_tools()) return;
    dir_ = new TempDir();
    corpus_ = read_file(kDataDir + "/corpus.txt");
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  void SetUp() override {
    if (dir_ == nullptr) {
      GTEST_SKIP() << "the SentencePiece command-line tools (spm_encode, spm_decode, spm_train) are not "
                      "installed: apt-get install sentencepiece to run the differential tests";
    }
  }

  // Trains a small BPE model on the test corpus with `flags`; returns its path.
  static fs::path train(const std::string& name, const std::string& flags) {
    const fs::path prefix = dir_->path() / name;
    const std::string cmd = "spm_train --input=" + shell_quote(kDataDir + "/corpus.txt") +
                            " --model_prefix=" + shell_quote(prefix) + " --num_threads=1 --minloglevel=2 " +
                            flags + " >/dev/null 2>&1";
    EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
    return prefix.string() + ".model";
  }

  // Our encode of each of `texts` against spm_encode's.
  static void expect_encode_matches(const Tokenizer& tok, const fs::path& model,
                                    const std::vector<std::string>& texts) {
    const auto expected =
        run_spm(*dir_, "spm_encode --output_format=id --model=" + shell_quote(model), texts);
    ASSERT_EQ(expected.size(), texts.size());
    size_t mismatches = 0;
    for (size_t i = 0; i < texts.size(); ++i) {
      const auto ours = tok.encode(texts[i], false);
      if (ours != parse_ids(expected[i]) && ++mismatches <= 5) {
        ADD_FAILURE() << "encode differs on line " << i << ": \"" << escaped(texts[i])
                      << "\"\n  ours: " << join(ours) << "\n  spm:  " << expected[i];
      }
    }
    EXPECT_EQ(mismatches, 0u) << "of " << texts.size() << " lines";
  }

  // Our encode of many random lines against spm_encode's, and our decode of random id sequences
  // against spm_decode's. Failures say which line, with the seed.
  static void compare_with_spm(const fs::path& model, uint64_t seed, size_t lines,
                               const std::vector<std::string>& extra = {}) {
    SCOPED_TRACE("model " + model.string() + ", seed " + std::to_string(seed));
    const auto tok = Tokenizer::load(model);
    std::mt19937_64 rng(seed);

    std::vector<std::string> texts;
    for (size_t i = 0; i < lines; ++i)
      texts.push_back(random_text(rng, corpus_, extra));
    expect_encode_matches(*tok, model, texts);

    // Random ids over the whole vocabulary, whole and broken characters spelled in byte pieces,
    // control and out-of-range ids. spm_decode gets them without the control and out-of-range ids,
    // which decode() must drop. Byte pieces for '\n' and '\r' would split spm_decode's output lines,
    // so they stay out.
    const int vocab = tok->vocab_size();
    const std::vector<TokenId> bytes = byte_pieces(model);
    const auto byte_id = [&](unsigned char b) { return bytes[b == '\n' || b == '\r' ? ' ' : b]; };
    const auto usable = [&](TokenId id) { return bytes.empty() || (id != bytes['\n'] && id != bytes['\r']); };
    std::vector<std::vector<TokenId>> seqs;
    std::vector<std::string> filtered_lines;
    for (size_t i = 0; i < lines; ++i) {
      std::vector<TokenId> ids;
      for (size_t n = rng() % 16; n > 0; --n) {
        const uint64_t kind = rng() % 10;
        if (kind < 5 || bytes.empty()) {
          const auto id = static_cast<TokenId>(rng() % static_cast<uint64_t>(vocab));
          if (usable(id)) ids.push_back(id);
        } else if (kind < 8) {
          static constexpr uint32_t kLo[] = {0x20, 0x80, 0x800, 0x10000};
          static constexpr uint32_t kHi[] = {0x7E, 0x7FF, 0xD7FF, 0x10FFFF};
          const uint64_t width = rng() % 4;
          std::string c = utf8(kLo[width] + static_cast<uint32_t>(rng() % (kHi[width] - kLo[width] + 1)));
          if (kind == 7) c.resize(1 + rng() % c.size());  // often cut short
          for (unsigned char b : c)
            ids.push_back(byte_id(b));
        } else if (kind == 8) {
          ids.push_back(static_cast<TokenId>(rng() % 3));  // unk / bos / eos in the usual layout
        } else {
          ids.push_back(rng() % 2 ? -1 - static_cast<TokenId>(rng() % 5)
                                  : vocab + static_cast<TokenId>(rng() % 5));
        }
      }
      std::vector<TokenId> filtered;
      for (TokenId id : ids) {
        if (id >= 0 && id < vocab && !tok->is_control(id)) filtered.push_back(id);
      }
      seqs.push_back(ids);
      filtered_lines.push_back(join(filtered));
    }
    const auto decoded =
        run_spm(*dir_, "spm_decode --input_format=id --model=" + shell_quote(model), filtered_lines);
    ASSERT_EQ(decoded.size(), seqs.size());
    size_t mismatches = 0;
    for (size_t i = 0; i < seqs.size(); ++i) {
      const std::string ours = tok->decode(seqs[i]);
      if (ours != decoded[i] && ++mismatches <= 5) {
        ADD_FAILURE() << "decode differs on [" << join(seqs[i]) << "]\n  ours: \"" << escaped(ours)
                      << "\"\n  spm:  \"" << escaped(decoded[i]) << "\"";
      }
    }
    EXPECT_EQ(mismatches, 0u) << "of " << seqs.size() << " id sequences";
  }

  static TempDir* dir_;
  static std::string corpus_;
};
TempDir* TokenizerSpmTest::dir_ = nullptr;
std::string TokenizerSpmTest::corpus_;

TEST_F(TokenizerSpmTest, CommittedModelMatchesSpmEncodeAndDecode) {
  // Llama-style: byte fallback, dummy prefix, whitespace kept as is.
  compare_with_spm(kModelPath, 20240601, 4000);
}

TEST_F(TokenizerSpmTest, ModelWithoutByteFallbackWithUserDefinedPiecesMatchesSpm) {
  // Unknown characters become <unk> (one per run), extra whitespace is removed, and user-defined
  // pieces are atomic.
  const auto model =
      train("plain",
            "--model_type=bpe --vocab_size=400 --byte_fallback=false --remove_extra_whitespaces=true "
            "--normalization_rule_name=identity --user_defined_symbols='<|im_start|>,<|im_end|>,ab,"
            "kvserve'");
  compare_with_spm(model, 7, 2500,
                   {"<|im_start|>", "<|im_end|>", "ab", "kvserve", "<|im_", "aab", "kvservekv"});
  const auto tok = Tokenizer::load(model);
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
}

TEST_F(TokenizerSpmTest, ModelWithoutDummyPrefixMatchesSpm) {
  const auto model = train("nodummy",
                           "--model_type=bpe --vocab_size=600 --byte_fallback=true --character_coverage=0.98 "
                           "--add_dummy_prefix=false --remove_extra_whitespaces=false "
                           "--normalization_rule_name=identity --unk_id=3 --bos_id=0 --eos_id=-1");
  compare_with_spm(model, 8, 2500);
  const auto tok = Tokenizer::load(model);
  EXPECT_EQ(tok->bos_id(), 0);
  EXPECT_EQ(tok->eos_id(), std::nullopt);
  EXPECT_TRUE(tok->is_control(0));
  EXPECT_FALSE(tok->is_control(3));
}

TEST_F(TokenizerSpmTest, ModelRemovingWhitespaceWithoutDummyPrefixMatchesSpm) {
  // Decoding still drops a leading "▁" here: SentencePiece does when either option is on.
  const auto model = train("nodummy_strip",
                           "--model_type=bpe --vocab_size=600 --byte_fallback=true --character_coverage=0.98 "
                           "--add_dummy_prefix=false --remove_extra_whitespaces=true "
                           "--normalization_rule_name=identity");
  compare_with_spm(model, 9, 2500);
}

std::string load_error(const fs::path& path) {
  try {
    Tokenizer::load(path);
  } catch (const ModelLoadError& e) {
    return e.what();
  }
  return "(no exception)";
}

TEST_F(TokenizerSpmTest, UnigramAndNormalizingModelsAreRefused) {
  const auto unigram =
      train("unigram", "--model_type=unigram --vocab_size=300 --normalization_rule_name=identity");
  std::string msg = load_error(unigram);
  EXPECT_NE(msg.find(unigram.string()), std::string::npos) << msg;
  EXPECT_NE(msg.find("unigram"), std::string::npos) << msg;
  EXPECT_NE(msg.find("only BPE"), std::string::npos) << msg;

  const auto nfkc = train("nfkc", "--model_type=bpe --vocab_size=300");  // default rule: nmt_nfkc
  msg = load_error(nfkc);
  EXPECT_NE(msg.find(nfkc.string()), std::string::npos) << msg;
  EXPECT_NE(msg.find("nmt_nfkc"), std::string::npos) << msg;
}

TEST_F(TokenizerSpmTest, UnusedPiecesAreMergedThroughAndSplitBackAsSpmDoes) {
  // spm_train never writes UNUSED pieces, so the model is crafted: "ab" is UNUSED but scores best,
  // so "ab" merges first and is split back at the end, unless "abc" absorbs it.
  const std::string sp = "\xE2\x96\x81";
  std::string m;
  m += bytes_field(1, piece("<unk>", 0, 2)) + bytes_field(1, piece("<s>", 0, 3)) +
       bytes_field(1, piece("</s>", 0, 3));
  m += bytes_field(1, piece(sp, -1, 1)) + bytes_field(1, piece("a", -2, 1)) +
       bytes_field(1, piece("b", -3, 1));
  m += bytes_field(1, piece("c", -3, 1)) + bytes_field(1, piece("ab", 0, 5)) +
       bytes_field(1, piece("abc", -1, 1));
  m += bytes_field(1, piece(sp + "a", -5, 1)) + bytes_field(1, piece("<x>", 0, 4));
  m += bytes_field(2, varint_field(3, 2)) + bytes_field(3, bytes_field(1, "identity") + varint_field(4, 0));
  const fs::path model = dir_->path() / "unused.model";
  write_file(model, m);
  const auto tok = Tokenizer::load(model);
  EXPECT_EQ(tok->encode("ab", false), (std::vector<TokenId>{3, 4, 5}));
  EXPECT_EQ(tok->encode("abc", false), (std::vector<TokenId>{3, 8}));
  std::mt19937_64 rng(11);
  static const std::vector<std::string> kParts{"a", "b", "c", "ab", "abc", " ", "  ", "<x>", "d", sp};
  std::vector<std::string> texts;
  for (int i = 0; i < 3000; ++i) {
    std::string t;
    for (size_t n = rng() % 12; n > 0; --n)
      t += kParts[rng() % kParts.size()];
    texts.push_back(t);
  }
  expect_encode_matches(*tok, model, texts);
}

}  // namespace
}  // namespace kvserve
