#include "engine/tokenizer.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "engine/model.h"
#include "tests/engine/tokenizer_spm_test_util.h"

namespace kvserve {
namespace {

const std::string kReplacement = "\xEF\xBF\xBD";  // U+FFFD

// The test model's byte-fallback pieces <0x00>..<0xFF> follow unk, bos and eos.
TokenId byte_id(unsigned char b) {
  return 3 + b;
}

std::vector<TokenId> byte_ids(const std::string& s) {
  std::vector<TokenId> ids;
  for (unsigned char c : s)
    ids.push_back(byte_id(c));
  return ids;
}

class TokenizerTest : public ::testing::Test {
 protected:
  static const Tokenizer& tok() { return tokenizer_test::committed_tokenizer(); }
};

TEST_F(TokenizerTest, ReportsTheModelsVocabularyAndSpecialIds) {
  EXPECT_EQ(tok().vocab_size(), 512);
  EXPECT_EQ(tok().bos_id(), 1);
  EXPECT_EQ(tok().eos_id(), 2);
}

TEST_F(TokenizerTest, EncodeMatchesTheSpmEncodeCli) {
  // Expected ids from `spm_encode --output_format=id` on the same model: the reference is
  // SentencePiece's own command-line tool, not this wrapper.
  const std::vector<TokenId> expected{356, 433, 357, 366, 276, 286, 315, 366, 368, 350,
                                      374, 445, 356, 505, 506, 356, 243, 162, 155, 131};
  const std::string text = "Hello world caf\xC3\xA9 \xE6\x97\xA5\xE6\x9C\xAC \xF0\x9F\x98\x80";
  EXPECT_EQ(tok().encode(text, /*add_bos=*/false), expected);
  std::vector<TokenId> with_bos{1};
  with_bos.insert(with_bos.end(), expected.begin(), expected.end());
  EXPECT_EQ(tok().encode(text, /*add_bos=*/true), with_bos);
}

TEST_F(TokenizerTest, CharactersOutsideTheVocabularyFallBackToTheirUtf8Bytes) {
  const std::string emoji = "\xF0\x9F\x98\x80";  // U+1F600, not in the training corpus
  const std::vector<TokenId> ids = tok().encode(emoji, false);
  ASSERT_EQ(ids.size(), 5u);
  EXPECT_EQ(ids[0], 356);  // the dummy-prefix "▁"
  EXPECT_EQ(std::vector<TokenId>(ids.begin() + 1, ids.end()), byte_ids(emoji));
}

TEST_F(TokenizerTest, EmptyTextEncodesToNothingOrJustBos) {
  EXPECT_TRUE(tok().encode("", false).empty());
  EXPECT_EQ(tok().encode("", true), std::vector<TokenId>{1});
}

TEST_F(TokenizerTest, DecodeInvertsEncode) {
  const std::vector<std::string> texts{
      "Hello world",
      "  two leading spaces, trailing too  ",
      "line one\nline two\ttab",
      "digits 1234567890 and symbols !@#$%^&*()[]{}",
      "caf\xC3\xA9 na\xC3\xAFve \xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E \xF0\x9F\x98\x80\xF0\x9F\x8E\x89",
      "\xD0\x9F\xD1\x80\xD0\xB8\xD0\xB2\xD0\xB5\xD1\x82",  // Cyrillic
      "x",
  };
  for (const auto& text : texts) {
    SCOPED_TRACE(text);
    EXPECT_EQ(tok().decode(tok().encode(text, false)), text);
    EXPECT_EQ(tok().decode(tok().encode(text, true)), text);
  }
}

TEST_F(TokenizerTest, DecodeDropsControlTokens) {
  const std::vector<TokenId> hello = tok().encode("Hello", false);
  std::vector<TokenId> ids{1};
  ids.insert(ids.end(), hello.begin(), hello.end());
  ids.push_back(2);
  EXPECT_EQ(tok().decode(ids), "Hello");
  EXPECT_EQ(tok().decode({1, 2, 1}), "");
  // A control token inside a byte-fallback character is dropped before decoding, so the character
  // survives instead of turning into two U+FFFD.
  EXPECT_EQ(tok().decode({byte_id(0xC3), 2, byte_id(0xA9)}), "\xC3\xA9");
}

TEST_F(TokenizerTest, DecodeSkipsIdsOutsideTheVocabulary) {
  const std::vector<TokenId> ab = byte_ids("ab");
  EXPECT_EQ(tok().decode({-1, ab[0], 512, 1 << 30, ab[1], -7}), "ab");
  EXPECT_EQ(tok().decode({512}), "");
}

TEST_F(TokenizerTest, DecodeJoinsByteFallbackTokensIntoCharacters) {
  EXPECT_EQ(tok().decode(byte_ids("\xC3\xA9")), "\xC3\xA9");
  EXPECT_EQ(tok().decode(byte_ids("\xF0\x9F\x98\x80")), "\xF0\x9F\x98\x80");
}

TEST_F(TokenizerTest, TrailingIncompleteCharacterDecodesAsReplacementCharacters) {
  EXPECT_EQ(tok().decode({byte_id(0xC3)}), kReplacement);
  // SentencePiece replaces each byte of an incomplete or invalid sequence.
  EXPECT_EQ(tok().decode(byte_ids("\xF0\x9F\x98")), kReplacement + kReplacement + kReplacement);
  EXPECT_EQ(tok().decode(byte_ids("a\xE6\x97")), "a" + kReplacement + kReplacement);
  EXPECT_EQ(tok().decode(byte_ids("\x80z")), kReplacement + "z");
}

TEST_F(TokenizerTest, LeadingSpaceOfTheFirstPieceIsDropped) {
  // "▁w" + "or" + "l" + "d": the dummy prefix SentencePiece added when encoding is removed again.
  const std::vector<TokenId> world = tok().encode("world", false);
  EXPECT_EQ(tok().decode(world), "world");
  const std::vector<TokenId> hello = tok().encode("Hello", false);
  std::vector<TokenId> both = hello;
  both.insert(both.end(), world.begin(), world.end());
  EXPECT_EQ(tok().decode(both), "Hello world");
}

TEST_F(TokenizerTest, ControlTokensAreBosEosOnly) {
  EXPECT_TRUE(tok().is_control(1));
  EXPECT_TRUE(tok().is_control(2));
  EXPECT_FALSE(tok().is_control(0));  // <unk> is UNKNOWN, not CONTROL: it decodes as " ⁇ "
  EXPECT_FALSE(tok().is_control(byte_id(0x41)));
  EXPECT_FALSE(tok().is_control(356));
  EXPECT_FALSE(tok().is_control(511));
  EXPECT_FALSE(tok().is_control(-1));
  EXPECT_FALSE(tok().is_control(512));
  EXPECT_NE(tok().decode({0}), "");
}

std::string load_error(const std::string& path) {
  try {
    Tokenizer::load(path);
  } catch (const ModelLoadError& e) {
    return e.what();
  }
  return "(no exception)";
}

TEST(TokenizerLoad, MissingFileThrowsModelLoadErrorNamingThePath) {
  const std::string path = std::string(KVSERVE_TEST_DATA) + "/tokenizer/no_such_tokenizer.model";
  const std::string msg = load_error(path);
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find("does not exist"), std::string::npos) << msg;
}

TEST(TokenizerLoad, DirectoryThrowsModelLoadError) {
  const std::string path = std::string(KVSERVE_TEST_DATA) + "/tokenizer";
  const std::string msg = load_error(path);
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
}

TEST(TokenizerLoad, InvalidFileThrowsModelLoadErrorNamingThePath) {
  // The training corpus is a plain text file, not a serialized model.
  const std::string path = std::string(KVSERVE_TEST_DATA) + "/tokenizer/corpus.txt";
  const std::string msg = load_error(path);
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find("not a valid SentencePiece model"), std::string::npos) << msg;
}

}  // namespace
}  // namespace kvserve
