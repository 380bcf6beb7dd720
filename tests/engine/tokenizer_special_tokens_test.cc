// encode_with_special_tokens and token_spelling, what chat prompts are tokenized with: in a rendered
// template the spelling of a special token stands for that token and no BOS is added, as Hugging
// Face tokenizes with add_special_tokens=False. The references are SentencePiece's spm_encode (ids
// in tokenizer_test.cc), the tokenizers library (tests/data/tokenizer/bytelevel/expected.json) and
// the vocabulary files read here directly.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/model.h"
#include "engine/tokenizer.h"
#include "tests/engine/tokenizer_spm_test_util.h"

namespace kvserve {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace tokenizer_test;

const fs::path kByteLevel = fs::path(KVSERVE_TEST_DATA) / "tokenizer" / "bytelevel";

std::vector<TokenId> concat(std::initializer_list<std::vector<TokenId>> parts) {
  std::vector<TokenId> out;
  for (const auto& p : parts)
    out.insert(out.end(), p.begin(), p.end());
  return out;
}

class SpmSpecialTokens : public ::testing::Test {
 protected:
  static const Tokenizer& tok() { return committed_tokenizer(); }
};

TEST_F(SpmSpecialTokens, BosAndEosSpellingsBecomeTheirIdsAroundTheSpmEncodedText) {
  // The ids between them are spm_encode's for the text (tokenizer_test.cc): unk 0, bos 1, eos 2.
  const std::vector<TokenId> text{356, 433, 357, 366, 276, 286, 315, 366, 368, 350,
                                  374, 445, 356, 505, 506, 356, 243, 162, 155, 131};
  const std::string body = "Hello world caf\xC3\xA9 \xE6\x97\xA5\xE6\x9C\xAC \xF0\x9F\x98\x80";
  EXPECT_EQ(tok().encode_with_special_tokens("<s>" + body + "</s>"), concat({{1}, text, {2}}));
  EXPECT_EQ(tok().encode_with_special_tokens("<s>hello</s>"),
            concat({{1}, tok().encode("hello", false), {2}}));
  EXPECT_EQ(tok().encode_with_special_tokens("</s><s><unk>"), (std::vector<TokenId>{2, 1, 0}));
  EXPECT_EQ(tok().encode_with_special_tokens("<s>"), std::vector<TokenId>{1});
}

TEST_F(SpmSpecialTokens, EachStretchBetweenSpecialTokensGetsItsOwnDummyPrefix) {
  // As the legacy Llama / Mistral fast tokenizers do: "<s>[INST]" gives <s> "▁[" ..., and the text
  // after </s> starts a word again.
  EXPECT_EQ(
      tok().encode_with_special_tokens("<s>[INST] hi [/INST] ok </s><s>[INST] again"),
      concat(
          {{1}, tok().encode("[INST] hi [/INST] ok ", false), {2, 1}, tok().encode("[INST] again", false)}));
}

TEST_F(SpmSpecialTokens, TextWithoutSpecialSpellingsEncodesAsEncodeWithoutBos) {
  for (const std::string text :
       {"", " ", "Hello world", "<s", "s>", "< s>", "<S>", "</ s>", "<unk", "<0x41>", "a<<s",
        "  two  spaces  ", "line\nbreak", "caf\xC3\xA9", "\xF0\x9F\x98\x80", "\xFF\xFE not UTF-8"}) {
    SCOPED_TRACE(escaped(text));
    EXPECT_EQ(tok().encode_with_special_tokens(text), tok().encode(text, false));
  }
}

TEST_F(SpmSpecialTokens, SpellingsAreTheVocabularysPieces) {
  EXPECT_EQ(tok().token_spelling(0), "<unk>");
  EXPECT_EQ(tok().token_spelling(1), "<s>");
  EXPECT_EQ(tok().token_spelling(2), "</s>");
  EXPECT_EQ(tok().token_spelling(3 + 0x41), "<0x41>");   // byte pieces follow unk, bos and eos
  EXPECT_EQ(tok().token_spelling(356), "\xE2\x96\x81");  // "▁", the dummy prefix
  EXPECT_EQ(tok().token_spelling(-1), "");
  EXPECT_EQ(tok().token_spelling(512), "");
}

TEST(SpmSpecialTokensCrafted, TheLongestSpellingWinsWhereTwoStartTogether) {
  // A crafted model: control pieces "<s>" and "<s>>" overlap; UNKNOWN "<unk>" is special too, a
  // user-defined "<u>" is matched by the model itself, a NORMAL "<n>" is only text.
  TempDir dir;
  const std::string sp = "\xE2\x96\x81";
  std::string m;
  m += bytes_field(1, piece("<unk>", 0, 2)) + bytes_field(1, piece("<s>", 0, 3)) +
       bytes_field(1, piece("<s>>", 0, 3)) + bytes_field(1, piece("</s>", 0, 3));
  m += bytes_field(1, piece(sp, -1, 1)) + bytes_field(1, piece("a", -2, 1)) +
       bytes_field(1, piece(sp + "a", -3, 1)) + bytes_field(1, piece("<u>", 0, 4));
  m += bytes_field(2, varint_field(3, 2)) + bytes_field(3, bytes_field(1, "identity") + varint_field(4, 0));
  const fs::path model = dir.path() / "overlap.model";
  write_file(model, m);
  const auto tok = Tokenizer::load(model);
  // Ids: <unk> 0, <s> 1, <s>> 2, </s> 3, ▁ 4, a 5, ▁a 6, <u> 7.
  EXPECT_EQ(tok->encode_with_special_tokens("<s>>a"), (std::vector<TokenId>{2, 6}));
  EXPECT_EQ(tok->encode_with_special_tokens("<s>a"), (std::vector<TokenId>{1, 6}));
  // ">" is outside this vocabulary (and there is no byte fallback): <unk>.
  EXPECT_EQ(tok->encode_with_special_tokens("a<s>>>a</s>"), (std::vector<TokenId>{6, 2, 4, 0, 5, 3}));
  EXPECT_EQ(tok->encode_with_special_tokens("<unk><u>"), (std::vector<TokenId>{0, 4, 7}));
}

// The ids the tokenizers library gave without special tokens added, which still match the added
// tokens written in the text (<|eot_id|>, <|im_start|>, ...), for every fixture and text.
class ByteLevelSpecialTokens : public ::testing::TestWithParam<std::string> {
 protected:
  static const json& expected() {
    static const json j = json::parse(std::ifstream(kByteLevel / "expected.json"));
    return j;
  }
};

TEST_P(ByteLevelSpecialTokens, EncodeWithSpecialTokensGivesTheLibrarysIdsWithoutAddedSpecials) {
  const auto tok = Tokenizer::load(kByteLevel / GetParam() / "tokenizer.json");
  int with_added = 0;
  for (const json& c : expected().at("styles").at(GetParam()).at("encode")) {
    const std::string text = c.at("text");
    SCOPED_TRACE(json(text).dump());
    EXPECT_EQ(tok->encode_with_special_tokens(text), c.at("ids").get<std::vector<TokenId>>());
    if (text.find("<|") != std::string::npos) ++with_added;
  }
  EXPECT_GT(with_added, 0) << "the fixture's texts must spell some special tokens";
}

TEST_P(ByteLevelSpecialTokens, SpellingsAreTheFilesVocabularyAndAddedTokens) {
  const fs::path path = kByteLevel / GetParam() / "tokenizer.json";
  const auto tok = Tokenizer::load(path);
  const json file = json::parse(std::ifstream(path));
  for (const auto& [text, id] : file.at("model").at("vocab").items())
    EXPECT_EQ(tok->token_spelling(id.get<TokenId>()), text) << id;
  for (const json& t : file.at("added_tokens"))
    EXPECT_EQ(tok->token_spelling(t.at("id").get<TokenId>()), t.at("content").get<std::string>());
  EXPECT_EQ(tok->token_spelling(-1), "");
  EXPECT_EQ(tok->token_spelling(tok->vocab_size()), "");
}

INSTANTIATE_TEST_SUITE_P(Fixtures, ByteLevelSpecialTokens,
                         ::testing::Values("llama3", "qwen2", "gpt2", "edge", "anchors"));

TEST(ByteLevelSpecialTokensLlama3, AHeaderOfTheLlama3ChatFormatIsItsSpecialIds) {
  const auto tok = Tokenizer::load(kByteLevel / "llama3" / "tokenizer.json");
  EXPECT_EQ(tok->token_spelling(*tok->bos_id()), "<|begin_of_text|>");
  // <|begin_of_text|> 500, <|start_header_id|> 504, <|end_header_id|> 505, <|eot_id|> 507.
  EXPECT_EQ(tok->encode_with_special_tokens("<|begin_of_text|><|start_header_id|>user<|end_header_id|>"),
            concat({{500, 504}, tok->encode("user", false), {505}}));
  EXPECT_EQ(tok->encode_with_special_tokens("<|begin_of_text|>Hello<|eot_id|>"),
            (std::vector<TokenId>{500, 72, 369, 274, 507}));  // expected.json's reference ids
}

}  // namespace
}  // namespace kvserve

// A ChatML fine-tune of a SentencePiece model keeps its new tokens past the vocabulary in
// tokenizer_config.json (and older ones in added_tokens.json): they must be single tokens in any
// text, and the text between them SentencePiece's own encoding of it.
namespace kvserve {
namespace {

class SpmAddedTokens : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (fs::temp_directory_path() / "kvserve-added-XXXXXX").string();
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
    fs::copy_file(tokenizer_test::kModelPath, dir_ / "tokenizer.model");
    base_ = Tokenizer::load(tokenizer_test::kModelPath);
    ASSERT_EQ(base_->vocab_size(), 512);
  }
  void TearDown() override { fs::remove_all(dir_); }
  void write(const std::string& name, const std::string& text) { std::ofstream(dir_ / name) << text; }

  fs::path dir_;
  std::unique_ptr<Tokenizer> base_;
};

TEST_F(SpmAddedTokens, ConfigTokensAreSingleTokensInAnyText) {
  write("tokenizer_config.json", R"({"added_tokens_decoder": {
      "0": {"content": "<unk>", "special": true},
      "512": {"content": "<|im_start|>", "special": true},
      "513": {"content": "<|im_end|>", "special": true},
      "514": {"content": "<think>", "special": false}}})");
  const auto tok = Tokenizer::load_from_model_dir(dir_);
  EXPECT_EQ(tok->vocab_size(), 515);
  const auto user = base_->encode("user hi", false);
  EXPECT_EQ(tok->encode("<|im_start|>user hi<|im_end|>", false), concat({{512}, user, {513}}));
  EXPECT_EQ(tok->encode("<|im_start|>user hi", true), concat({{1, 512}, user}));
  EXPECT_EQ(tok->encode_with_special_tokens("<s><|im_start|>user hi</s>"), concat({{1, 512}, user, {2}}));
  EXPECT_EQ(tok->encode("plain text", false), base_->encode("plain text", false));
  const auto hi = base_->encode("hi", false);
  EXPECT_EQ(tok->decode(concat({{512}, hi, {513, 514}})), base_->decode(hi) + "<think>");
  // After an added token a piece's "▁" is a space, not a dummy prefix to strip.
  const auto world = base_->encode("world", false);
  EXPECT_EQ(tok->decode(concat({hi, {514}, world})), base_->decode(hi) + "<think> " + base_->decode(world));
  EXPECT_TRUE(tok->is_control(512));
  EXPECT_FALSE(tok->is_control(514));
  EXPECT_TRUE(tok->is_control(1));
  EXPECT_EQ(tok->token_spelling(513), "<|im_end|>");
  EXPECT_EQ(tok->token_spelling(1), "<s>");
}

TEST_F(SpmAddedTokens, AddedTokensJsonAndNoneAtAll) {
  EXPECT_EQ(Tokenizer::load_from_model_dir(dir_)->vocab_size(), 512);
  write("added_tokens.json", R"({"<|im_end|>": 512, "<s>": 1})");
  const auto tok = Tokenizer::load_from_model_dir(dir_);
  EXPECT_EQ(tok->vocab_size(), 513);
  EXPECT_EQ(tok->encode("a<|im_end|>", false), concat({base_->encode("a", false), {512}}));
  EXPECT_FALSE(tok->is_control(512));  // added_tokens.json does not say special
}

// Where transformers puts the dummy prefix: " hello" after <s> is "▁▁hello" (what " hello" alone
// encodes to) where every stretch is prefixed, "▁hello" (what "hello" encodes to) where only the
// text's start is or where Metaspace skips a stretch that starts with a space.
TEST_F(SpmAddedTokens, DummyPrefixWhereTransformersPutsIt) {
  const auto spaced = concat({{1}, base_->encode(" hello", false)});
  const auto plain = concat({{1}, base_->encode("hello", false)});
  const auto check = [&](const std::vector<TokenId>& space_after_bos,
                         const std::vector<TokenId>& word_after_bos, const char* what,
                         bool start_prefixed = true) {
    SCOPED_TRACE(what);
    const auto tok = Tokenizer::load_from_model_dir(dir_);
    EXPECT_EQ(tok->encode_with_special_tokens("<s> hello"), space_after_bos);
    EXPECT_EQ(tok->encode_with_special_tokens("<s>hello"), word_after_bos);
    if (start_prefixed) {
      EXPECT_EQ(tok->encode_with_special_tokens("hello<s>"), concat({base_->encode("hello", false), {1}}));
    }
  };
  check(spaced, plain, "SentencePiece's own: every stretch");
  write("tokenizer_config.json", R"({"legacy": false})");
  const auto no_prefix_word = [&] {
    const auto tok = Tokenizer::load_from_model_dir(dir_);
    return tok->encode_with_special_tokens("<s>hello");
  }();
  check(plain, no_prefix_word, "slow tokenizer, legacy false: the text's start only");
  EXPECT_NE(no_prefix_word, plain);
  // The fast tokenizer decides, whatever the config says.
  write("tokenizer.json",
        R"({"normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "\u2581"},
      {"type": "Replace"}]}, "pre_tokenizer": null})");
  check(spaced, plain, "Llama 2's tokenizer.json: Prepend, every stretch");
  write("tokenizer.json",
        R"({"pre_tokenizer": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first"}})");
  check(plain, no_prefix_word, "Metaspace first: the text's start");
  write("tokenizer.json",
        R"({"pre_tokenizer": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always"}})");
  check(plain, plain, "Metaspace always: every stretch, unless it starts with a space");
  write("tokenizer.json",
        R"({"pre_tokenizer": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "never"}})");
  check(plain, no_prefix_word, "Metaspace never", /*start_prefixed=*/false);
  EXPECT_EQ(Tokenizer::load_from_model_dir(dir_)->encode("hello", false),
            std::vector<TokenId>(no_prefix_word.begin() + 1, no_prefix_word.end()));
}

TEST_F(SpmAddedTokens, BrokenFilesNameThemselves) {
  write("tokenizer_config.json", R"({"added_tokens_decoder": {"x": {"content": "<a>"}}})");
  try {
    Tokenizer::load_from_model_dir(dir_);
    FAIL() << "loaded";
  } catch (const ModelLoadError& e) {
    EXPECT_NE(std::string(e.what()).find("added_tokens_decoder"), std::string::npos) << e.what();
  }
  write("tokenizer_config.json", "{}");
  write("added_tokens.json", "[1]");
  EXPECT_THROW(Tokenizer::load_from_model_dir(dir_), ModelLoadError);
}

}  // namespace
}  // namespace kvserve
