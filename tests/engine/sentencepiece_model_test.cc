// The tokenizer's model-file reader on crafted, truncated and garbage files: needs no SentencePiece tool.
#include <gtest/gtest.h>

#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "engine/model.h"
#include "engine/tokenizer.h"
#include "tests/engine/tokenizer_spm_test_util.h"

namespace kvserve {
namespace {

using namespace tokenizer_test;

class TokenizerModelFileTest : public ::testing::Test {
 protected:
  fs::path write(const std::string& name, const std::string& bytes) {
    const fs::path p = dir_.path() / name;
    write_file(p, bytes);
    return p;
  }
  TempDir dir_;
};

TEST_F(TokenizerModelFileTest, CraftedBpeModelEncodesAndDecodesAsWorkedOutByHand) {
  const std::string sp = "\xE2\x96\x81";
  std::string m;
  m += bytes_field(1, piece("<unk>", 0, 2));     // 0
  m += bytes_field(1, piece("<s>", 0, 3));       // 1
  m += bytes_field(1, piece("</s>", 0, 3));      // 2
  m += bytes_field(1, piece(sp, -1, 1));         // 3
  m += bytes_field(1, piece("a", -2, 1));        // 4
  m += bytes_field(1, piece("b", -3, 1));        // 5
  m += bytes_field(1, piece("ab", -0.5f, 1));    // 6
  m += bytes_field(1, piece(sp + "ab", -4, 1));  // 7: lower score than "ab", so merged after it
  m += bytes_field(1, piece("<x>", 0, 4));       // 8: user-defined
  // Unknown fields of every wire type are skipped; pad_id -1 is a 10-byte varint.
  const std::string trainer = varint_field(3, 2) + varint_field(43, -1) + key(99, 1) +
                              std::string(8, '\x7F') + float_field(98, 1.5f) + bytes_field(97, "zzz");
  m += bytes_field(2, trainer);
  m += key(200, 0) + varint(12345);
  // No normalizer_spec: the proto's defaults (dummy prefix on, extra whitespace removed).
  const auto tok = Tokenizer::load(write("crafted.model", m));
  EXPECT_EQ(tok->vocab_size(), 9);
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
  // "  ab   ab<x>b c " -> "▁ab▁ab<x>b▁c": ▁ a b | ▁ a b | <x> | b | ▁ c
  //  -> ab merges first (-0.5), then ▁ab (-4); <x> never merges; c is unknown.
  EXPECT_EQ(tok->encode("  ab   ab<x>b c ", false), (std::vector<TokenId>{7, 7, 8, 5, 3, 0}));
  EXPECT_EQ(tok->encode("cc", true), (std::vector<TokenId>{1, 3, 0}));  // one <unk> for the run
  EXPECT_EQ(tok->decode({7, 0, 8, 3, 4}), "ab \xE2\x81\x87 <x> a");
}

TEST_F(TokenizerModelFileTest, BosAndEosAreTheControlPiecesTheTrainerSpecNames) {
  // As SentencePiece (checked with spm_encode --extra_options=bos:eos): the *_piece fields decide,
  // not the *_id fields, and a piece that is missing or not CONTROL means there is none.
  std::string m = bytes_field(1, piece("<unk>", 0, 2)) + bytes_field(1, piece("<s>", 0, 3)) +
                  bytes_field(1, piece("</s>", 0, 1)) + bytes_field(1, piece("<B>", 0, 3));
  m +=
      bytes_field(2, varint_field(3, 2) + varint_field(41, 1) + varint_field(42, 2) + bytes_field(46, "<B>"));
  const auto tok = Tokenizer::load(write("special.model", m));
  EXPECT_EQ(tok->bos_id(), 3);
  EXPECT_EQ(tok->eos_id(), std::nullopt);  // "</s>" is a NORMAL piece here
  EXPECT_EQ(tok->encode("", true), std::vector<TokenId>{3});
  EXPECT_TRUE(tok->is_control(1));
  EXPECT_FALSE(tok->is_control(2));
}

TEST_F(TokenizerModelFileTest, MissingAndEmptyFilesAreModelLoadErrorsNamingThePath) {
  const fs::path missing = dir_.path() / "none.model";
  std::string msg = load_error(missing);
  EXPECT_NE(msg.find(missing.string()), std::string::npos) << msg;
  EXPECT_NE(msg.find("does not exist"), std::string::npos) << msg;
  const fs::path empty = write("empty.model", "");
  msg = load_error(empty);
  EXPECT_NE(msg.find(empty.string()), std::string::npos) << msg;
  EXPECT_NE(msg.find("no pieces"), std::string::npos) << msg;
}

TEST_F(TokenizerModelFileTest, EveryTruncationOfTheCommittedModelIsAnErrorNotACrash) {
  const std::string full = read_file(kModelPath);
  ASSERT_GT(full.size(), 1000u);
  const fs::path path = dir_.path() / "cut.model";
  size_t loaded = 0;
  for (size_t len = 0; len < full.size(); ++len) {
    write_file(path, full.substr(0, len));
    try {
      Tokenizer::load(path);
      ++loaded;  // a cut exactly between two top-level fields can leave a complete model
    } catch (const ModelLoadError& e) {
      ASSERT_NE(std::string(e.what()).find(path.string()), std::string::npos)
          << "cut at " << len << ": " << e.what();
    }
  }
  // Only the cut right before normalizer_spec leaves a loadable (BPE, all pieces) model.
  EXPECT_LE(loaded, 1u);
  write_file(path, full.substr(0, full.size() / 2));
  const std::string msg = load_error(path);
  EXPECT_NE(msg.find("not a valid SentencePiece model"), std::string::npos) << msg;
}

TEST_F(TokenizerModelFileTest, GarbageBytesAreModelLoadErrorsNamingThePath) {
  for (uint64_t seed = 1; seed <= 300; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937_64 rng(seed);
    std::string bytes(1 + rng() % 2048, '\0');
    for (char& c : bytes)
      c = static_cast<char>(rng());
    const fs::path path = write("garbage.model", bytes);
    const std::string msg = load_error(path);
    ASSERT_NE(msg.find(path.string()), std::string::npos) << msg;
  }
  // Structurally fine but lying about a length, or a varint that never ends.
  for (const std::string& bad :
       {bytes_field(1, piece("a", 0, 1)).substr(0, 5), key(1, 2) + varint(1000) + "ab",
        std::string(12, '\xFF'), key(1, 3) + "x", key(0, 0) + varint(1)}) {
    const fs::path path = write("bad.model", bad);
    const std::string msg = load_error(path);
    EXPECT_NE(msg.find("not a valid SentencePiece model"), std::string::npos) << escaped(bad) << ": " << msg;
  }
}

TEST_F(TokenizerModelFileTest, CraftedUnsupportedModelsAreRefusedClearly) {
  const std::string unk = bytes_field(1, piece("<unk>", 0, 2)) + bytes_field(1, piece("a", 0, 1));
  std::string msg = load_error(write("unigram.model", unk + bytes_field(2, varint_field(3, 1))));
  EXPECT_NE(msg.find("unigram"), std::string::npos) << msg;
  msg = load_error(write("default.model", unk));  // the proto's default model type is UNIGRAM
  EXPECT_NE(msg.find("unigram"), std::string::npos) << msg;
  msg = load_error(write("word.model", unk + bytes_field(2, varint_field(3, 3))));
  EXPECT_NE(msg.find("word"), std::string::npos) << msg;
  const std::string bpe = bytes_field(2, varint_field(3, 2));
  msg = load_error(
      write("nfkc.model", unk + bpe + bytes_field(3, bytes_field(1, "nmt_nfkc") + bytes_field(2, "map"))));
  EXPECT_NE(msg.find("nmt_nfkc"), std::string::npos) << msg;
  msg = load_error(write("nounk.model", bytes_field(1, piece("a", 0, 1)) + bpe));
  EXPECT_NE(msg.find("no unknown piece"), std::string::npos) << msg;
  msg = load_error(write("dup.model", unk + bytes_field(1, piece("a", 0, 1)) + bpe));
  EXPECT_NE(msg.find("defined twice"), std::string::npos) << msg;
  const std::string fallback = bytes_field(2, varint_field(3, 2) + varint_field(35, 1));
  msg = load_error(write("bytes.model", unk + bytes_field(1, piece("<0x00>", 0, 6)) + fallback));
  EXPECT_NE(msg.find("byte pieces are missing"), std::string::npos) << msg;
}

}  // namespace
}  // namespace kvserve
