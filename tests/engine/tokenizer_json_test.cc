// The tokenizer.json reader (engine/hf_tokenizer.h) against Hugging Face's tokenizers library: the
// committed fixtures under tests/data/tokenizer/bytelevel/ hold tokenizers in the shapes Llama 3,
// Qwen2 and GPT-2 ship, one with the rarer options, one with the pattern constructs PCRE2 had to be
// made to read as Oniguruma does, and for each the ids and text that the library (tokenizers
// 0.22.2, the Rust crate) gave for 212 texts and 120 id lists
// (scripts/make_bytelevel_tokenizers.js). Ids are integers: every one must be equal, no tolerance.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/detokenizer.h"
#include "engine/hf_tokenizer.h"
#include "engine/model.h"
#include "engine/tokenizer.h"

namespace kvserve {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

const fs::path kDir = fs::path(KVSERVE_TEST_DATA) / "tokenizer" / "bytelevel";

const json& expected() {
  static const json j = [] {
    std::ifstream in(kDir / "expected.json");
    return json::parse(in);
  }();
  return j;
}

std::string printable(const std::string& s) {
  return json(s).dump();  // escapes control characters, shows the rest as UTF-8
}

class TokenizerJsonStyle : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override { tok_ = Tokenizer::load(kDir / GetParam() / "tokenizer.json"); }
  const json& cases() const { return expected().at("styles").at(GetParam()); }
  std::unique_ptr<Tokenizer> tok_;
};

TEST_P(TokenizerJsonStyle, EncodesEveryTextAsTheReferenceLibraryDoes) {
  int checked = 0;
  for (const json& c : cases().at("encode")) {
    const std::string text = c.at("text");
    EXPECT_EQ(tok_->encode(text, /*add_bos=*/false), c.at("ids").get<std::vector<TokenId>>())
        << GetParam() << " text " << printable(text);
    EXPECT_EQ(tok_->encode(text, /*add_bos=*/true), c.at("ids_with_special").get<std::vector<TokenId>>())
        << GetParam() << " text " << printable(text) << " with special tokens";
    ++checked;
  }
  EXPECT_EQ(checked, 212);
}

TEST_P(TokenizerJsonStyle, DecodesAsTheReferenceLibraryDoesSkippingSpecialTokens) {
  for (const json& c : cases().at("encode")) {
    EXPECT_EQ(tok_->decode(c.at("ids").get<std::vector<TokenId>>()), c.at("decoded").get<std::string>())
        << GetParam() << " ids of " << printable(c.at("text"));
  }
  // Random ids: byte tokens that cut characters apart (U+FFFD where the library puts one), added
  // tokens special and not.
  for (const json& c : cases().at("decode")) {
    const auto ids = c.at("ids").get<std::vector<TokenId>>();
    EXPECT_EQ(tok_->decode(ids), c.at("text").get<std::string>())
        << GetParam() << " ids " << c.at("ids").dump();
  }
}

// Every delta the incremental detokenizer sends for `ids`, one token at a time, then its finish().
std::string streamed(const Tokenizer& tok, const std::vector<TokenId>& ids) {
  IncrementalDetokenizer detok(tok, /*prompt=*/{}, /*stop=*/{});
  std::string text;
  for (TokenId id : ids)
    text += detok.push(id).text;
  return text + detok.finish();
}

TEST_P(TokenizerJsonStyle, IncrementalDetokenizationStreamsTheWholeDecodedText) {
  for (const json& c : cases().at("encode")) {
    const auto ids = c.at("ids").get<std::vector<TokenId>>();
    EXPECT_EQ(streamed(*tok_, ids), tok_->decode(ids)) << GetParam() << " ids of " << printable(c.at("text"));
  }
  // Ids that cut characters apart: held back while a later byte may complete them, then U+FFFD.
  for (const json& c : cases().at("decode")) {
    EXPECT_EQ(streamed(*tok_, c.at("ids").get<std::vector<TokenId>>()), c.at("text").get<std::string>())
        << GetParam() << " ids " << c.at("ids").dump();
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, TokenizerJsonStyle,
                         ::testing::Values("llama3", "qwen2", "gpt2", "edge", "anchors"));

std::unique_ptr<Tokenizer> load_style(const std::string& style) {
  return Tokenizer::load(kDir / style / "tokenizer.json");
}

TEST(TokenizerJson, ReportsVocabularySpecialTokensAndBos) {
  const auto llama3 = load_style("llama3");
  EXPECT_EQ(llama3->vocab_size(), 512);
  EXPECT_EQ(llama3->bos_id(), 500);           // <|begin_of_text|>, from the post-processor's template
  EXPECT_EQ(llama3->eos_id(), std::nullopt);  // the model's config.json names its EOS ids
  EXPECT_TRUE(llama3->is_control(507));       // <|eot_id|>
  EXPECT_FALSE(llama3->is_control(72));

  const auto qwen2 = load_style("qwen2");
  EXPECT_EQ(qwen2->bos_id(), std::nullopt);  // Qwen2 adds nothing around a text
  EXPECT_TRUE(qwen2->is_control(502));       // <|im_end|>
  EXPECT_FALSE(qwen2->is_control(503));      // <tool_call> is an added token, not a special one
  EXPECT_EQ(qwen2->decode({503}), "<tool_call>");
  EXPECT_EQ(qwen2->decode({502}), "");

  EXPECT_EQ(load_style("gpt2")->vocab_size(), 501);
}

TEST(TokenizerJson, RoundTripsWellFormedTextThatHasNoAddedTokens) {
  // Byte-level BPE loses nothing: without a normalizer or added-token strings, decode(encode(x)) == x.
  const auto tok = load_style("llama3");
  for (const json& c : expected().at("styles").at("llama3").at("encode")) {
    const std::string text = c.at("text");
    if (text.find("<|") != std::string::npos) continue;
    EXPECT_EQ(tok->decode(tok->encode(text, false)), text) << printable(text);
  }
}

TEST(TokenizerJson, IllFormedUtf8IsRepairedAsTheLibraryWouldReceiveIt) {
  // One U+FFFD per maximal ill-formed subsequence: a lone continuation byte, a cut 4-byte
  // character (one), an overlong lead (each byte).
  const auto tok = load_style("llama3");
  EXPECT_EQ(tok->encode("a\x80z \xF0\x9F\x98 \xC0\xAF", false),
            tok->encode("a\xEF\xBF\xBDz \xEF\xBF\xBD \xEF\xBF\xBD\xEF\xBF\xBD", false));
}

TEST(TokenizerJson, LongRunsOfOneCharacterClassEncodeAndRoundTrip) {
  // The pre-tokenizer's patterns backtrack over whitespace runs: a mebibyte (the server's default
  // --max-request-bytes) of one class must not hit a matching limit (the server would refuse the
  // request rather than crash, but it would still be wrong).
  const auto tok = load_style("llama3");
  const auto repeat = [](const std::string& unit) {
    std::string s;
    while (s.size() < (1u << 20))
      s += unit;
    return s;
  };
  for (const std::string& text :
       {repeat(" "), repeat("a"), repeat("7"), repeat("\n") + "x", repeat("!"), repeat(" \r\n\t"),
        repeat("'s"), repeat(" a"), repeat("\xE6\x97\xA5"), repeat("  \n")}) {
    const auto ids = tok->encode(text, false);
    EXPECT_FALSE(ids.empty());
    EXPECT_EQ(tok->decode(ids), text)
        << "a run of " << text.size() << " bytes starting " << printable(text.substr(0, 4));
  }
}

// A temporary directory holding one tokenizer.json built from the llama3 fixture with one change.
class BrokenTokenizerJson : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("kvserve_tokenizer_json_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
    std::ifstream in(kDir / "llama3" / "tokenizer.json");
    base_ = json::parse(in);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // The error loading `j` gives; fails the test if it loads.
  std::string load_error(const json& j) {
    const fs::path path = dir_ / "tokenizer.json";
    std::ofstream(path) << j.dump();
    try {
      Tokenizer::load(path);
    } catch (const ModelLoadError& e) {
      const std::string message = e.what();
      EXPECT_NE(message.find(path.string()), std::string::npos) << "names the file: " << message;
      return message;
    }
    ADD_FAILURE() << "loaded: " << j.dump().substr(0, 200);
    return {};
  }

  fs::path dir_;
  json base_;
};

TEST_F(BrokenTokenizerJson, UnsupportedOrMalformedPartsAreErrorsNamingTheField) {
  const auto expect_error = [&](json j, const std::string& field, const std::string& hint) {
    const std::string message = load_error(j);
    EXPECT_NE(message.find(field), std::string::npos) << message;
    EXPECT_NE(message.find(hint), std::string::npos) << message;
  };
  json j = base_;
  j["model"]["type"] = "Unigram";
  expect_error(j, "model.type", "only BPE");

  j = base_;  // Llama 2's tokenizer.json: Metaspace pre-tokenization, byte fallback
  j["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", "\u2581"}};
  expect_error(j, "pre_tokenizer.type", "'Metaspace' is not supported");
  j = base_;
  j["model"]["byte_fallback"] = true;
  expect_error(j, "model.byte_fallback", "tokenizer.model");

  j = base_;
  j["pre_tokenizer"] = nullptr;
  expect_error(j, "pre_tokenizer", "no ByteLevel step");
  j = base_;
  j["decoder"] = {{"type", "Fuse"}};
  expect_error(j, "decoder", "ByteLevel");
  j = base_;
  j["normalizer"] = {{"type", "Lowercase"}};
  expect_error(j, "normalizer.type", "'Lowercase' is not supported");
  j = base_;
  j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(unclosed";
  expect_error(j, "pre_tokenizer.pretokenizers[0].pattern.Regex", "does not compile");
  // What Oniguruma (the reference's engine) and PCRE2 read differently is refused, not guessed.
  for (const char* pattern : {"\\w+", "a\\b", "\\h", "[a[b]]", "[a-z&&[^aeiou]]", "(?x) a # b", "(?W:\\s)"}) {
    j = base_;
    j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = pattern;
    expect_error(j, "pre_tokenizer.pretokenizers[0].pattern.Regex",
                 "Oniguruma and PCRE2 read it differently");
  }
  j = base_;
  j["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "Sideways";
  expect_error(j, "pre_tokenizer.pretokenizers[0].behavior", "'Sideways'");
  j = base_;
  j["model"]["merges"].push_back("zz qq");
  expect_error(j, "model.merges[244] ('zz' + 'qq')", "not in the vocabulary");
  j = base_;
  j["model"]["merges"][0] = "nospace";
  expect_error(j, "model.merges[0]", "two tokens");
  j = base_;
  j["model"]["vocab"]["a"] = "seven";
  expect_error(j, "model.vocab['a']", "token id");
  j = base_;
  j["model"]["vocab"]["zz"] = 72;  // 'H' has 72
  expect_error(j, "model.vocab[", "has id 72");
  j = base_;
  j["model"]["vocab"] = json::object();
  expect_error(j, "model.vocab", "non-empty");
  j = base_;
  j["added_tokens"][0]["content"] = "";
  expect_error(j, "added_tokens[0].content", "non-empty");
  j = base_;
  j["added_tokens"][0]["content"] = "H";  // in the vocabulary with id 72
  expect_error(j, "added_tokens[0].id", "model.vocab gives 'H' the id 72");
  j = base_;
  j["added_tokens"][11]["id"] = 1 << 29;  // a stray id must not become a half-gigabyte table
  expect_error(j, "added_tokens[11].id", "not a vocabulary's");
  j = base_;
  j["post_processor"] = {{"type", "RobertaProcessing"}};
  expect_error(j, "post_processor.type", "'RobertaProcessing'");
  j = base_;
  j["post_processor"]["processors"].push_back(j["post_processor"]["processors"][1]);
  expect_error(j, "post_processor.processors[2]", "second TemplateProcessing");
  j = base_;
  j["post_processor"]["processors"][1]["special_tokens"] = json::object();
  expect_error(j, "post_processor.processors[1].special_tokens", "'<|begin_of_text|>'");

  const fs::path path = dir_ / "tokenizer.json";
  std::ofstream(path) << "{ not json";
  EXPECT_THROW(Tokenizer::load(path), ModelLoadError);
  EXPECT_THROW(Tokenizer::load(dir_ / "absent.json"), ModelLoadError);
}

TEST_F(BrokenTokenizerJson, AModelDirectoryPrefersTokenizerModelAndNamesBothWhenNeitherIsThere) {
  try {
    Tokenizer::load_from_model_dir(dir_);
    ADD_FAILURE() << "loaded a tokenizer from an empty directory";
  } catch (const ModelLoadError& e) {
    EXPECT_NE(std::string(e.what()).find("tokenizer.model"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("tokenizer.json"), std::string::npos) << e.what();
  }
  fs::copy_file(kDir / "llama3" / "tokenizer.json", dir_ / "tokenizer.json");
  EXPECT_EQ(Tokenizer::load_from_model_dir(dir_)->bos_id(), 500);  // the tokenizer.json
  // A tokenizer.model that is not SentencePiece's (Llama 3's tiktoken file, say) gives way to it.
  std::ofstream(dir_ / "tokenizer.model") << "IQ== 0\nIg== 1\n";
  EXPECT_EQ(Tokenizer::load_from_model_dir(dir_)->bos_id(), 500);
  fs::remove(dir_ / "tokenizer.model");
  fs::copy_file(fs::path(KVSERVE_TEST_DATA) / "tokenizer" / "tokenizer.model", dir_ / "tokenizer.model");
  EXPECT_EQ(Tokenizer::load_from_model_dir(dir_)->bos_id(), 1);  // the SentencePiece model's <s>
}

}  // namespace
}  // namespace kvserve
