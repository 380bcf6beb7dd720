#include "engine/detokenizer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

namespace kvserve {
namespace {

const std::string kReplacement = "\xEF\xBF\xBD";  // U+FFFD

TokenId byte_id(unsigned char b) {
  return 3 + b;
}  // <0x00> follows unk, bos, eos

std::vector<TokenId> byte_ids(const std::string& s) {
  std::vector<TokenId> ids;
  for (unsigned char c : s)
    ids.push_back(byte_id(c));
  return ids;
}

// Strict UTF-8 check, written here so the test does not trust the tokenizer's notion of valid:
// shortest form only, no surrogates, nothing above U+10FFFF, no truncated sequence at the end.
bool valid_utf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto b = static_cast<unsigned char>(s[i]);
    size_t len = 0;
    uint32_t cp = 0;
    if (b < 0x80) {
      len = 1, cp = b;
    } else if ((b & 0xE0) == 0xC0) {
      len = 2, cp = b & 0x1F;
    } else if ((b & 0xF0) == 0xE0) {
      len = 3, cp = b & 0x0F;
    } else if ((b & 0xF8) == 0xF0) {
      len = 4, cp = b & 0x07;
    } else {
      return false;
    }
    if (i + len > s.size()) return false;
    for (size_t k = 1; k < len; ++k) {
      const auto c = static_cast<unsigned char>(s[i + k]);
      if ((c & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (c & 0x3F);
    }
    static constexpr uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMin[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += len;
  }
  return true;
}

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

struct Stream {
  std::vector<IncrementalDetokenizer::Delta> deltas;  // one per pushed token
  std::string finish;
  std::string all;      // every delta and finish(), concatenated
  int stopped_at = -1;  // index of the first delta with stopped=true
};

class DetokenizerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    tok_ = Tokenizer::load(std::string(KVSERVE_TEST_DATA) + "/tokenizer/tokenizer.model").release();
  }
  static void TearDownTestSuite() {
    delete tok_;
    tok_ = nullptr;
  }
  static const Tokenizer& tok() { return *tok_; }

  static Stream run(const std::vector<TokenId>& prompt, const std::vector<TokenId>& output,
                    std::vector<std::string> stop = {}, int min_tokens = 0, bool include_stop = false) {
    IncrementalDetokenizer detok(tok(), prompt, std::move(stop), min_tokens, /*continuation=*/false,
                                 include_stop);
    Stream r;
    for (TokenId t : output) {
      r.deltas.push_back(detok.push(t));
      r.all += r.deltas.back().text;
      if (r.deltas.back().stopped && r.stopped_at < 0) r.stopped_at = static_cast<int>(r.deltas.size()) - 1;
    }
    r.finish = detok.finish();
    r.all += r.finish;
    EXPECT_EQ(detok.text(), r.all);
    return r;
  }

  // Random output mixing everything a model can emit: learned pieces, whole characters spelled in
  // byte-fallback tokens, broken byte sequences, control tokens, <unk> and out-of-range ids.
  static std::vector<TokenId> random_tokens(std::mt19937_64& rng, size_t items) {
    std::vector<TokenId> ids;
    auto pick = [&](uint64_t n) { return static_cast<uint32_t>(rng() % n); };
    for (size_t i = 0; i < items; ++i) {
      const uint32_t kind = pick(20);
      if (kind < 9) {
        ids.push_back(static_cast<TokenId>(259 + pick(512 - 259)));
      } else if (kind < 15) {
        static constexpr uint32_t kLo[] = {0x20, 0x80, 0x800, 0x10000};
        static constexpr uint32_t kHi[] = {0x7F, 0x800, 0xD800, 0x110000};
        const uint32_t width = pick(4);
        const auto b = byte_ids(utf8(kLo[width] + pick(kHi[width] - kLo[width])));
        ids.insert(ids.end(), b.begin(), b.end());
      } else if (kind < 17) {
        auto b = byte_ids(utf8(0x800 + pick(0xD800 - 0x800)));  // then cut short
        b.resize(1 + pick(2));
        ids.insert(ids.end(), b.begin(), b.end());
      } else if (kind == 17) {
        ids.push_back(byte_id(static_cast<unsigned char>(0x80 + pick(0x40))));  // lone continuation
      } else if (kind == 18) {
        ids.push_back(static_cast<TokenId>(pick(3)));  // unk, bos, eos
      } else {
        ids.push_back(pick(2) ? -1 : 512 + static_cast<TokenId>(pick(1000)));
      }
    }
    return ids;
  }

 private:
  static Tokenizer* tok_;
};
Tokenizer* DetokenizerTest::tok_ = nullptr;

void expect_valid_deltas(const Stream& r) {
  for (size_t i = 0; i < r.deltas.size(); ++i) {
    EXPECT_TRUE(valid_utf8(r.deltas[i].text)) << "delta " << i << " splits a character";
  }
  EXPECT_TRUE(valid_utf8(r.finish));
}

TEST_F(DetokenizerTest, DeltasConcatenateToTheFullDecodeForRandomTokens) {
  for (uint64_t seed = 1; seed <= 400; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937_64 rng(seed);
    const auto output = random_tokens(rng, 1 + rng() % 80);
    // An empty prompt and a BOS-only prompt both leave the first token at the start of the text.
    for (const std::vector<TokenId>& prompt : {std::vector<TokenId>{}, std::vector<TokenId>{1}}) {
      const Stream r = run(prompt, output);
      ASSERT_EQ(r.all, tok().decode(output));
      expect_valid_deltas(r);
    }
    // After a real prompt the output's text is what the prompt's text grows by.
    auto prompt = random_tokens(rng, rng() % 12);
    prompt.push_back(static_cast<TokenId>(259 + rng() % 253));  // end on a whole character
    std::vector<TokenId> joined = prompt;
    joined.insert(joined.end(), output.begin(), output.end());
    const std::string before = tok().decode(prompt);
    const std::string after = tok().decode(joined);
    ASSERT_EQ(after.compare(0, before.size(), before), 0);
    const Stream r = run(prompt, output);
    ASSERT_EQ(r.all, after.substr(before.size()));
    expect_valid_deltas(r);
  }
}

TEST_F(DetokenizerTest, LongRunsOfBrokenBytesStayExact) {
  // Hundreds of tokens whose text keeps ending in U+FFFD, and literal U+FFFD spelled as bytes:
  // the decode window must be cut back while text is unsettled without losing or repeating any.
  std::vector<TokenId> output;
  for (int i = 0; i < 200; ++i)
    output.push_back(byte_id(0x80 + i % 0x40));
  for (int i = 0; i < 60; ++i) {
    const auto b = byte_ids(kReplacement);
    output.insert(output.end(), b.begin(), b.end());
  }
  for (int i = 0; i < 50; ++i) {
    const auto b = byte_ids("\xF0\x9F\x98");  // truncated emoji, again and again
    output.insert(output.end(), b.begin(), b.end());
  }
  const auto tail = byte_ids("\xF0\x9F\x98\x80");
  output.insert(output.end(), tail.begin(), tail.end());
  const Stream r = run({}, output);
  EXPECT_EQ(r.all, tok().decode(output));
  expect_valid_deltas(r);
}

TEST_F(DetokenizerTest, SplitCharacterIsHeldUntilComplete) {
  const auto ids = byte_ids("a\xF0\x9F\x98\x80z");
  const Stream r = run({}, ids);
  ASSERT_EQ(r.deltas.size(), 6u);
  EXPECT_EQ(r.deltas[0].text, "a");
  EXPECT_EQ(r.deltas[1].text, "");
  EXPECT_EQ(r.deltas[2].text, "");
  EXPECT_EQ(r.deltas[3].text, "");
  EXPECT_EQ(r.deltas[4].text, "\xF0\x9F\x98\x80");
  EXPECT_EQ(r.deltas[5].text, "z");
  EXPECT_EQ(r.finish, "");
}

TEST_F(DetokenizerTest, IncompleteCharacterAtTheEndIsReleasedByFinish) {
  const Stream r = run({}, byte_ids("ok\xE6\x97"));
  EXPECT_EQ(r.deltas[0].text + r.deltas[1].text, "ok");
  EXPECT_EQ(r.finish, kReplacement + kReplacement);  // what tokenizer.decode gives
}

TEST_F(DetokenizerTest, FirstGeneratedTokenKeepsItsLeadingSpaceAfterAPrompt) {
  const std::vector<TokenId> prompt = tok().encode("Hello", /*add_bos=*/true);
  const std::vector<TokenId> full = tok().encode("Hello world", /*add_bos=*/true);
  ASSERT_TRUE(std::equal(prompt.begin(), prompt.end(), full.begin()));
  const std::vector<TokenId> output(full.begin() + static_cast<std::ptrdiff_t>(prompt.size()), full.end());
  const Stream r = run(prompt, output);
  EXPECT_EQ(r.deltas.front().text, " w");
  EXPECT_EQ(r.all, " world");
  // Without context the same tokens start the text, whose leading space SentencePiece drops.
  EXPECT_EQ(run({}, output).all, "world");
  EXPECT_EQ(run({1}, output).all, "world");
}

TEST_F(DetokenizerTest, PromptEndingInsideACharacterDoesNotLeakIntoTheOutput) {
  std::vector<TokenId> prompt = tok().encode("abc", true);
  const auto head = byte_ids("\xF0\x9F");
  prompt.insert(prompt.end(), head.begin(), head.end());
  const auto output = byte_ids("\x98\x80!");
  EXPECT_EQ(run(prompt, output).all, tok().decode(output));
}

TEST_F(DetokenizerTest, ControlAndOutOfRangeTokensProduceNoText) {
  IncrementalDetokenizer detok(tok(), {}, {});
  EXPECT_EQ(detok.push(byte_id('x')).text, "x");
  for (TokenId t : {1, 2, -1, 512, 100000}) {
    const auto d = detok.push(t);
    EXPECT_EQ(d.text, "");
    EXPECT_FALSE(d.stopped);
  }
  EXPECT_EQ(detok.finish(), "");
  EXPECT_EQ(detok.text(), "x");
}

TEST_F(DetokenizerTest, KeptControlTokensAreSpelledWhereTheyStand) {
  // A tool-call marker that is a control token ("</s>" stands for one here) stays in the text,
  // and the text around it is as it would be without it; other control tokens still add nothing.
  const std::vector<TokenId> prompt = tok().encode("Hello", /*add_bos=*/true);
  const std::vector<TokenId> words = tok().encode("Hello big world", /*add_bos=*/true);
  std::vector<TokenId> output(words.begin() + static_cast<std::ptrdiff_t>(prompt.size()), words.end());
  ASSERT_GE(output.size(), 2u);
  output.insert(output.begin() + 1, 2);  // </s> after the first piece
  output.push_back(1);                   // <s>: not kept
  IncrementalDetokenizer detok(tok(), prompt, {}, 0, false, false, /*kept_control_tokens=*/{2});
  std::string text;
  for (TokenId t : output)
    text += detok.push(t).text;
  text += detok.finish();
  const std::string first =
      tok().decode({words.begin(), words.begin() + static_cast<std::ptrdiff_t>(prompt.size()) + 1});
  const std::string rest = tok().decode(words).substr(first.size());
  EXPECT_EQ(text, first.substr(tok().decode(prompt).size()) + "</s>" + rest);
  // A stop string may match across the kept token's spelling.
  IncrementalDetokenizer stopping(tok(), prompt, {"</s>"}, 0, false, false, {2});
  for (TokenId t : output)
    if (stopping.push(t).stopped) break;
  EXPECT_EQ(stopping.text(), first.substr(tok().decode(prompt).size()));
}

// --- Stop strings. Byte tokens spell ASCII one character per token, so each case controls
// exactly where token boundaries fall.

TEST_F(DetokenizerTest, StopSpanningSeveralTokensEndsWithTheTextBeforeIt) {
  const Stream r = run({}, byte_ids("say hello world now"), {"lo wor"});
  EXPECT_EQ(r.all, "say hel");
  ASSERT_EQ(r.stopped_at, 12);  // the 'r' completes the match
  EXPECT_EQ(r.deltas[12].text, "");
  for (size_t i = 0; i < r.deltas.size(); ++i) {
    EXPECT_EQ(r.deltas[i].text.find("lo wor"), std::string::npos);
  }
}

TEST_F(DetokenizerTest, IncludedStopEndsTheOutputAndNothingAfterItGoesOut) {
  const Stream r = run({}, byte_ids("say hello world now"), {"lo wor"}, 0, /*include_stop=*/true);
  EXPECT_EQ(r.all, "say hello wor");
  EXPECT_EQ(r.stopped_at, 12);
  EXPECT_EQ(r.finish, "");
  // The first match to complete wins.
  EXPECT_EQ(run({}, byte_ids("xabcd"), {"bc", "ab"}, 0, true).all, "xab");
  EXPECT_EQ(run({}, byte_ids("xabcd"), {"abc", "ab"}, 0, true).all, "xab");
  EXPECT_EQ(run({}, byte_ids("xabc"), {"bc", "abc"}, 0, true).all, "xabc");
  EXPECT_EQ(run({}, byte_ids("xab!"), {"ab", "a"}, 0, true).all, "xa");
  // One token completing two matches: the one that ends first, so that no stop string is followed
  // by more text (cut, the one that starts first).
  TokenId piece = -1;
  for (TokenId id = 259; id < 512 && piece < 0; ++id) {
    const std::string b = tok().token_bytes(id);
    if (b.size() >= 4 && std::all_of(b.begin(), b.end(), [](char c) { return c > 0x20 && c < 0x7f; }))
      piece = id;
  }
  ASSERT_GE(piece, 0) << "the test tokenizer has a learned piece of four letters";
  const std::string p = tok().token_bytes(piece);
  const std::vector<std::string> stops = {p.substr(0, 4), p.substr(1, 2)};  // the second ends first
  EXPECT_EQ(run({}, {piece}, stops, 0, true).all, p.substr(0, 3));
  EXPECT_EQ(run({}, {piece}, stops, 0, false).all, "");
}

TEST_F(DetokenizerTest, StopSpanningLearnedPieces) {
  const std::string text = "the quick brown fox jumps over the lazy dog";
  const auto ids = tok().encode(text, false);
  ASSERT_EQ(tok().decode(ids), text);
  const Stream r = run({}, ids, {"fox jumps"});
  EXPECT_EQ(r.all, "the quick brown ");
  // Independent reference for where it stops: the first token whose prefix decode contains it.
  int expected = -1;
  for (size_t i = 0; i < ids.size() && expected < 0; ++i) {
    const std::vector<TokenId> prefix(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(i) + 1);
    if (tok().decode(prefix).find("fox jumps") != std::string::npos) expected = static_cast<int>(i);
  }
  EXPECT_EQ(r.stopped_at, expected);
}

TEST_F(DetokenizerTest, StopAtTheVeryStart) {
  const Stream r = run({}, byte_ids("stop right there"), {"stop"});
  EXPECT_EQ(r.all, "");
  EXPECT_EQ(r.stopped_at, 3);
  const Stream one = run({}, byte_ids("xy"), {"x"});
  EXPECT_EQ(one.all, "");
  EXPECT_EQ(one.stopped_at, 0);
}

TEST_F(DetokenizerTest, OverlappingCandidatesStopAtTheFirstCompletedMatch) {
  EXPECT_EQ(run({}, byte_ids("xabcd"), {"ab", "bc"}).all, "x");
  EXPECT_EQ(run({}, byte_ids("xabcd"), {"bc", "ab"}).all, "x");
  EXPECT_EQ(run({}, byte_ids("xbcd"), {"ab", "bc"}).all, "x");
  // "bc" completes before "abcd" could, so it wins even though "abcd" would start earlier.
  const Stream r = run({}, byte_ids("abcde"), {"abcd", "bc"});
  EXPECT_EQ(r.all, "a");
  EXPECT_EQ(r.stopped_at, 2);
  EXPECT_EQ(r.deltas[2].stop, "bc");  // the delta that stops names the stop string that matched
  // Both complete on the same token: the earlier start wins.
  const Stream both = run({}, byte_ids("xabc"), {"bc", "abc"});
  EXPECT_EQ(both.all, "x");
  EXPECT_EQ(both.deltas.back().stop, "abc");
  for (const auto& d : both.deltas)
    EXPECT_EQ(d.stop.empty(), !d.stopped);
}

TEST_F(DetokenizerTest, PossibleStopPrefixIsHeldThenReleased) {
  const Stream r = run({}, byte_ids("hello worlds"), {"world!"});
  EXPECT_EQ(r.stopped_at, -1);
  EXPECT_EQ(r.deltas[5].text, " ");        // "hello " goes out as it comes
  EXPECT_EQ(r.deltas[6].text, "");         // "w" could start "world!"
  EXPECT_EQ(r.deltas[10].text, "");        // "world" still could
  EXPECT_EQ(r.deltas[11].text, "worlds");  // "worlds" cannot: released at once
  EXPECT_EQ(r.all, "hello worlds");

  const Stream held = run({}, byte_ids("hello world"), {"world!"});
  EXPECT_EQ(held.all.substr(0, held.all.size() - held.finish.size()), "hello ");
  EXPECT_EQ(held.finish, "world");  // finish() releases what never completed
}

TEST_F(DetokenizerTest, HoldBackReleasesOnlyWhatCanNoLongerMatch) {
  // "abab" could still become "ababc": only the part before the last "ab" is safe.
  const Stream r = run({}, byte_ids("xababab!"), {"ababc"});
  const std::vector<std::string> expected{"x", "", "", "", "", "ab", "", "abab!"};
  ASSERT_EQ(r.deltas.size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i)
    EXPECT_EQ(r.deltas[i].text, expected[i]) << "token " << i;
  EXPECT_EQ(r.all, "xababab!");
}

TEST_F(DetokenizerTest, NothingAfterAStopIsEverEmitted) {
  IncrementalDetokenizer detok(tok(), {}, {"END"});
  std::string all;
  bool stopped = false;
  for (TokenId t : byte_ids("abcENDdef")) {
    const auto d = detok.push(t);
    all += d.text;
    stopped = stopped || d.stopped;
  }
  EXPECT_TRUE(stopped);
  for (TokenId t : byte_ids("more text END"))
    EXPECT_EQ(detok.push(t).text, "");
  all += detok.finish();
  EXPECT_EQ(all, "abc");
  EXPECT_EQ(detok.text(), "abc");
}

TEST_F(DetokenizerTest, MultiByteStopsAndHeldCharactersCombine) {
  // The stop string's first character arrives as two byte tokens: nothing of it may leak.
  const Stream r = run({}, byte_ids("a\xC3\xA9t\xC3\xA9!"), {"\xC3\xA9!"});
  EXPECT_EQ(r.all, "a\xC3\xA9t");
  expect_valid_deltas(r);
  const Stream no = run({}, byte_ids("\xC3\xA9x"), {"\xC3\xA9y"});
  EXPECT_EQ(no.deltas[1].text, "");
  EXPECT_EQ(no.deltas[2].text, "\xC3\xA9x");
  EXPECT_EQ(run({}, byte_ids("a\xE6\x97\xA5\xE6\x9C\xAC"), {"\xE6\x9C\xAC"}).all, "a\xE6\x97\xA5");
}

TEST_F(DetokenizerTest, EmptyStopStringsAreIgnored) {
  const Stream r = run({}, byte_ids("abc"), {"", ""});
  EXPECT_EQ(r.stopped_at, -1);
  EXPECT_EQ(r.deltas[0].text, "a");
  EXPECT_EQ(r.all, "abc");
}

TEST_F(DetokenizerTest, StopsApplyOnlyToTextArrivingOnceMinTokensExist) {
  // The first "a" is token 1 of min 3: streamed at once, neither matched nor held back.
  Stream r = run({}, byte_ids("abcabc"), {"a"}, 3);
  EXPECT_EQ(r.deltas[0].text, "a");
  EXPECT_EQ(r.stopped_at, 3);
  EXPECT_EQ(r.all, "abc");
  // A match that would start in text already streamed cannot be taken back, so it is not one.
  r = run({}, byte_ids("xaby"), {"ab"}, 3);
  EXPECT_EQ(r.stopped_at, -1);
  EXPECT_EQ(r.all, "xaby");
  // Control tokens count as tokens; from the min_tokens-th token on, stops apply in full.
  IncrementalDetokenizer detok(tok(), {}, {"ab"}, 3);
  EXPECT_EQ(detok.push(2).text, "");
  EXPECT_EQ(detok.push(byte_id('x')).text, "x");
  EXPECT_EQ(detok.push(byte_id('a')).text, "");  // third token: held, could start "ab"
  const auto d = detok.push(byte_id('b'));
  EXPECT_TRUE(d.stopped);
  EXPECT_EQ(detok.text(), "x");
}

TEST_F(DetokenizerTest, RandomStopsMatchAReferenceOnPrefixDecodes) {
  for (uint64_t seed = 1; seed <= 300; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937_64 rng(seed);
    std::vector<TokenId> output;
    for (size_t i = 1 + rng() % 40; i > 0; --i)
      output.push_back(static_cast<TokenId>(259 + rng() % 253));
    const std::string full = tok().decode(output);
    std::vector<std::string> stops;
    for (size_t i = 1 + rng() % 3; i > 0; --i) {
      // A substring on character boundaries (stop strings are valid UTF-8), or one that never occurs.
      size_t at = rng() % (full.size() + 1);
      size_t end = std::min(full.size(), at + 1 + rng() % 6);
      while (at > 0 && (full[at] & 0xC0) == 0x80)
        --at;
      while (end < full.size() && (full[end] & 0xC0) == 0x80)
        ++end;
      stops.push_back(rng() % 4 == 0 ? std::string("#~") : full.substr(at, end - at));
    }
    // Reference: stop at the first token whose prefix decode contains a stop string, cutting at the
    // earliest start of a match in that text (with include_stop, at the earliest end).
    for (const bool include : {false, true}) {
      SCOPED_TRACE(include ? "stop included" : "stop cut");
      std::string expected = full;
      int expected_at = -1;
      for (size_t i = 0; i < output.size() && expected_at < 0; ++i) {
        const std::string text = tok().decode(
            std::vector<TokenId>(output.begin(), output.begin() + static_cast<std::ptrdiff_t>(i) + 1));
        size_t cut = std::string::npos, end = std::string::npos;
        for (const auto& s : stops) {
          const size_t at = s.empty() ? std::string::npos : text.find(s);
          if (at == std::string::npos) continue;
          cut = std::min(cut, at);
          end = std::min(end, at + s.size());
        }
        if (cut != std::string::npos)
          expected = text.substr(0, include ? end : cut), expected_at = static_cast<int>(i);
      }
      const Stream r = run({}, output, stops, 0, include);
      ASSERT_EQ(r.all, expected);
      ASSERT_EQ(r.stopped_at, expected_at);
      if (expected_at >= 0) {
        // The stop string it names is one of the request's, and is where the output was cut.
        const std::string& named = r.deltas[static_cast<size_t>(expected_at)].stop;
        ASSERT_NE(std::find(stops.begin(), stops.end(), named), stops.end()) << named;
        const std::string text = tok().decode(std::vector<TokenId>(
            output.begin(), output.begin() + static_cast<std::ptrdiff_t>(expected_at) + 1));
        ASSERT_EQ(
            text.compare(include ? expected.size() - named.size() : expected.size(), named.size(), named), 0)
            << "\"" << named << "\" is not where the output ends";
      }
      std::string so_far;
      for (const auto& d : r.deltas) {
        so_far += d.text;
        ASSERT_EQ(full.compare(0, so_far.size(), so_far), 0) << "emitted text the full decode does not have";
      }
    }
  }
}

}  // namespace
}  // namespace kvserve
