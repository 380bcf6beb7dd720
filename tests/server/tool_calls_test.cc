// ToolCallReader: calls read out of a chat model's reply in each format, the same whether the text
// comes whole or in pieces, and nothing but layout whitespace lost when the text is not a call.
#include "server/tool_calls.h"

#include <gtest/gtest.h>

#include <unistd.h>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <ostream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace kvserve {
namespace {

// A reply as a client assembles it: content joined, each call's name and arguments joined.
struct Reply {
  std::string content;
  std::vector<std::pair<std::string, std::string>> calls;  // name, arguments

  void add(const ToolCallOutput& out) {
    content += out.content;
    for (const ToolCallDelta& d : out.calls) {
      ASSERT_LE(d.index, static_cast<int>(calls.size())) << "a call index skips one";
      if (d.index == static_cast<int>(calls.size())) {
        ASSERT_FALSE(d.name.empty()) << "a call's first delta names the function";
        calls.emplace_back(d.name, "");
      } else {
        EXPECT_TRUE(d.name.empty()) << "only the first delta of a call names it";
      }
      calls[d.index].second += d.arguments;
    }
  }
  bool operator==(const Reply&) const = default;
};

void PrintTo(const Reply& reply, std::ostream* os) {
  *os << "content \"" << reply.content << "\", calls [";
  for (const auto& [name, arguments] : reply.calls)
    *os << " " << name << " " << arguments;
  *os << " ]";
}

Reply read_whole(ToolCallReader reader, const std::string& text) {
  Reply reply;
  reply.add(reader.feed(text));
  reply.add(reader.finish());
  return reply;
}

// The text fed in random pieces (seeded), as tokens stream: 1-4 bytes each.
Reply read_in_pieces(ToolCallReader reader, const std::string& text, uint32_t seed) {
  std::mt19937 rng(seed);
  Reply reply;
  for (size_t at = 0; at < text.size();) {
    const size_t n = std::uniform_int_distribution<size_t>(1, 4)(rng);
    reply.add(reader.feed(std::string_view(text).substr(at, n)));
    at += n;
  }
  reply.add(reader.finish());
  return reply;
}

// Every case is also read in pieces at many seeds and must come out the same: a streamed reply
// joined by the client equals the whole reply.
Reply read(const ToolCallReader& reader, const std::string& text) {
  const Reply whole = read_whole(reader, text);
  for (uint32_t seed = 1; seed <= 40; ++seed)
    EXPECT_EQ(read_in_pieces(reader, text, seed), whole) << "seed " << seed << ", text: " << text;
  return whole;
}

using Calls = std::vector<std::pair<std::string, std::string>>;
const ToolCallReader kHermes = ToolCallReader::for_format(ToolCallFormat::kHermes);
const ToolCallReader kLlama3 = ToolCallReader::for_format(ToolCallFormat::kLlama3Json);

TEST(ToolCallFormat, NamesAndDetection) {
  EXPECT_EQ(tool_call_format_from_name("hermes"), ToolCallFormat::kHermes);
  EXPECT_EQ(tool_call_format_from_name("llama3_json"), ToolCallFormat::kLlama3Json);
  EXPECT_EQ(tool_call_format_from_name("none"), ToolCallFormat::kNone);
  EXPECT_EQ(tool_call_format_from_name("mistral"), ToolCallFormat::kMistral);
  EXPECT_EQ(tool_call_format_from_name("granite"), ToolCallFormat::kGranite);
  EXPECT_EQ(tool_call_format_from_name("Hermes"), std::nullopt);
  for (ToolCallFormat f : {ToolCallFormat::kNone, ToolCallFormat::kHermes, ToolCallFormat::kLlama3Json,
                           ToolCallFormat::kMistral, ToolCallFormat::kGranite})
    EXPECT_EQ(tool_call_format_from_name(tool_call_format_name(f)), f);
  EXPECT_EQ(detect_tool_call_format("{{- '[TOOL_CALLS] [' }}{{ tool_calls | tojson }}"),
            ToolCallFormat::kMistral);

  EXPECT_EQ(detect_tool_call_format("{{- '<tool_call>\\n' + call | tojson + '\\n</tool_call>' }}"),
            ToolCallFormat::kHermes);
  EXPECT_EQ(detect_tool_call_format("{%- if builtin %}{{- '<|python_tag|>' }}{% endif %}"),
            ToolCallFormat::kLlama3Json);
  EXPECT_EQ(detect_tool_call_format("{{ messages[0].content }}"), ToolCallFormat::kNone);
  // Granite 3.0 writes its calls after its own <|tool_call|> token.
  EXPECT_EQ(detect_tool_call_format("{{- '<|start_of_role|>assistant<|end_of_role|><|tool_call|>' + "
                                    "message.tool_calls | tojson }}"),
            ToolCallFormat::kGranite);
  // Llama 3.2's template asks for JSON calls without <|python_tag|>.
  EXPECT_EQ(
      detect_tool_call_format(R"(Respond in the format {"name": function name, "parameters": dictionary of )"
                              R"(argument name and its value}.)"),
      ToolCallFormat::kLlama3Json);
  // XML calls inside the hermes marker (Qwen3-Coder's) are not the hermes format.
  EXPECT_EQ(detect_tool_call_format("<tool_call>\n<function={{ name }}>\n<parameter=x>"),
            ToolCallFormat::kNone);
}

TEST(ToolCallFormat, DetectsTheTestTemplates) {
  // The hermes-style template written for the e2e tests teaches <tool_call>; the repo's other
  // templates (tools.jinja writes <tool_call id="..."> for history only) teach no format.
  auto detect_file = [](const std::string& name) {
    std::ifstream in(std::string(KVSERVE_TEST_DATA) + "/chat_templates/" + name);
    std::stringstream text;
    text << in.rdbuf();
    EXPECT_FALSE(text.str().empty()) << name;
    return detect_tool_call_format(text.str());
  };
  EXPECT_EQ(detect_file("hermes_tools.jinja"), ToolCallFormat::kHermes);
  EXPECT_EQ(detect_file("llama31.jinja"), ToolCallFormat::kNone);
  EXPECT_EQ(detect_file("chatml.jinja"), ToolCallFormat::kNone);
}

TEST(ToolCallFormat, MarkersThatAreSpecialTokensCannotBeRead) {
  // The Qwen2-style test tokenizer has <tool_call> as an added token that is not special, as
  // Qwen's own: replies show it.
  const std::string qwen2 = std::string(KVSERVE_TEST_DATA) + "/tokenizer/bytelevel/qwen2/tokenizer.json";
  const auto tokenizer = Tokenizer::load(qwen2);
  EXPECT_EQ(tool_call_markers_hidden(ToolCallFormat::kHermes, *tokenizer), "");
  // The same with <tool_call> marked special (as some Hermes models mark it): decoded text leaves
  // it out, so the hermes reader could never see a call.
  std::ifstream in(qwen2);
  nlohmann::json json = nlohmann::json::parse(in);
  for (auto& token : json["added_tokens"])
    if (token["content"] == "<tool_call>") token["special"] = true;
  const auto dir = std::filesystem::temp_directory_path() / ("tool_calls_test_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "tokenizer.json") << json.dump();
  const auto special = Tokenizer::load(dir / "tokenizer.json");
  std::filesystem::remove_all(dir);
  EXPECT_NE(tool_call_markers_hidden(ToolCallFormat::kHermes, *special).find("<tool_call> a special token"),
            std::string::npos);
  EXPECT_EQ(tool_call_markers_hidden(ToolCallFormat::kLlama3Json, *special), "");
}

TEST(ToolCallFormat, MistralMarkersThatAreControlTokensAreKeptInTheText) {
  const std::string qwen2 = std::string(KVSERVE_TEST_DATA) + "/tokenizer/bytelevel/qwen2/tokenizer.json";
  // Plain text in this tokenizer: nothing to keep, the text shows the markers anyway.
  EXPECT_TRUE(tool_call_control_markers(ToolCallFormat::kMistral, *Tokenizer::load(qwen2)).empty());
  // As Mistral's tokenizers have them: control tokens, which the reply's text must be asked to keep.
  std::ifstream in(qwen2);
  nlohmann::json json = nlohmann::json::parse(in);
  int next_id = 0;
  for (const auto& token : json["added_tokens"])
    next_id = std::max(next_id, token["id"].get<int>() + 1);
  for (const char* marker : {"[TOOL_CALLS]", "[ARGS]", "[CALL_ID]"})
    json["added_tokens"].push_back({{"id", next_id++},
                                    {"content", marker},
                                    {"special", true},
                                    {"single_word", false},
                                    {"lstrip", false},
                                    {"rstrip", false},
                                    {"normalized", false}});
  const auto dir =
      std::filesystem::temp_directory_path() / ("tool_calls_mistral_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "tokenizer.json") << json.dump();
  const auto mistral = Tokenizer::load(dir / "tokenizer.json");
  std::filesystem::remove_all(dir);
  EXPECT_EQ(tool_call_control_markers(ToolCallFormat::kMistral, *mistral),
            (std::vector<std::string>{"[TOOL_CALLS]", "[ARGS]", "[CALL_ID]"}));
  EXPECT_TRUE(tool_call_control_markers(ToolCallFormat::kHermes, *mistral).empty());
  EXPECT_EQ(tool_call_markers_hidden(ToolCallFormat::kMistral, *mistral), "") << "kept, not hidden";
}

TEST(ToolCallReader, NoFormatIsAllText) {
  const std::string text = "<tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call>  ";
  EXPECT_EQ(read(ToolCallReader::for_format(ToolCallFormat::kNone), text), (Reply{text, {}}));
}

TEST(ToolCallReader, HermesOneCall) {
  EXPECT_EQ(
      read(kHermes,
           "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>"),
      (Reply{"", Calls{{"get_weather", R"({"city":"Paris"})"}}}));
}

TEST(ToolCallReader, HermesTextThenCallsKeepsTheTextAndDropsLayout) {
  const std::string text =
      "Let me look both up.\n\n<tool_call>\n{\"name\": \"a\", \"arguments\": {\"x\": 1}}\n</tool_call>\n"
      "<tool_call>\n{\"arguments\": {\"y\": [1, {\"z\": \"}\"}]}, \"name\": \"b\"}\n</tool_call>\n";
  EXPECT_EQ(read(kHermes, text),
            (Reply{"Let me look both up.", Calls{{"a", R"({"x":1})"}, {"b", R"({"y":[1,{"z":"}"}]})"}}}));
}

TEST(ToolCallReader, HermesTextAfterACallIsContent) {
  EXPECT_EQ(read(kHermes, "<tool_call>{\"name\": \"a\", \"arguments\": {}}</tool_call>\n\nThen done.\n"),
            (Reply{"\n\nThen done.", Calls{{"a", "{}"}}}));
}

TEST(ToolCallReader, HermesPlainTextIsKeptWhole) {
  // Whitespace and marker look-alikes included: with no call, the reply is exactly the text.
  for (const std::string text : {"  Hello <b>world</b> <tool_ <tool_cal\n", "\n\n", "<", "a <tool_call", ""})
    EXPECT_EQ(read(kHermes, text), (Reply{text, {}})) << text;
}

TEST(ToolCallReader, HermesBadCallsAreContentWithTheirMarkers) {
  // Not JSON; no name; arguments not an object; a name that is not a string.
  for (const std::string body :
       {"{\"name\": \"a\", \"arguments\": {", "{\"arguments\": {}}",
        "{\"name\": \"a\", \"arguments\": \"x=1\"}", "{\"name\": 3, \"arguments\": {}}", "[1, 2]"}) {
    const std::string call = "<tool_call>" + body + "</tool_call>";
    EXPECT_EQ(read(kHermes, "Hi\n" + call + " bye"), (Reply{"Hi\n" + call + " bye", {}})) << body;
  }
}

TEST(ToolCallReader, CallsNestedTooDeepAreContent) {
  // The parser and dump() recurse: a reply of brackets must be refused before them, as text.
  const std::string deep = "<tool_call>{\"name\": \"f\", \"arguments\": {\"a\": " + std::string(100000, '[') +
                           std::string(100000, ']') + "}}</tool_call>";
  EXPECT_EQ(read_whole(kHermes, deep), (Reply{deep, {}}));
  const std::string deep_llama3 = "{\"name\": \"f\", \"parameters\": " + std::string(100000, '{') + "}";
  EXPECT_EQ(read_whole(kLlama3, deep_llama3), (Reply{deep_llama3, {}}));
}

TEST(ToolCallReader, HermesGoodAndBadCallsTogether) {
  const std::string bad = "<tool_call>{oops}</tool_call>";
  EXPECT_EQ(read(kHermes, "<tool_call>{\"name\": \"a\", \"arguments\": {}}</tool_call>\n" + bad),
            (Reply{"\n" + bad, Calls{{"a", "{}"}}}));
}

TEST(ToolCallReader, HermesCallWithoutItsClosingMarker) {
  // A model that ends its turn (EOS) right after the JSON still made the call ...
  EXPECT_EQ(read(kHermes, "<tool_call>\n{\"name\": \"a\", \"arguments\": {\"k\": \"v\"}}\n"),
            (Reply{"", Calls{{"a", R"({"k":"v"})"}}}));
  // ... one cut off by max_tokens did not: its text comes back as it was.
  EXPECT_EQ(read(kHermes, "ok <tool_call>\n{\"name\": \"a\", \"argu"),
            (Reply{"ok <tool_call>\n{\"name\": \"a\", \"argu", {}}));
}

TEST(ToolCallReader, HermesStreamsTextBeforeTheCallAsItComes) {
  ToolCallReader reader = kHermes;
  EXPECT_EQ(reader.feed("Checking").content, "Checking");
  EXPECT_EQ(reader.feed(" now. <tool").content, " now.");  // " <tool" may begin a call
  ToolCallOutput out = reader.feed("_call>{\"name\": \"f\", \"arguments\": {}}");
  EXPECT_TRUE(out.empty()) << "the call is not complete yet";
  out = reader.feed("</tool_call>");
  ASSERT_EQ(out.calls.size(), 1u);
  EXPECT_EQ(out.calls[0].name, "f");
  EXPECT_EQ(reader.calls(), 1);
  EXPECT_TRUE(reader.finish().empty());
}

TEST(ToolCallReader, KeepsAtMostTheCallsItIsToldTo) {
  ToolCallReader one = kHermes;
  one.keep_at_most(1);
  EXPECT_EQ(read(one,
                 "ok <tool_call>{\"name\": \"a\", \"arguments\": {}}</tool_call> <tool_call>"
                 "{\"name\": \"b\", \"arguments\": {}}</tool_call> done"),
            (Reply{"ok done", Calls{{"a", "{}"}}}));
  ToolCallReader llama3 = kLlama3;
  llama3.keep_at_most(1);
  EXPECT_EQ(read(llama3, "{\"name\": \"a\", \"parameters\": {}}; {\"name\": \"b\", \"parameters\": {}}"),
            (Reply{"", Calls{{"a", "{}"}}}));
}

TEST(ToolCallReader, Llama3OneCallAndSeveral) {
  EXPECT_EQ(read(kLlama3, "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\", \"days\": 2}}"),
            (Reply{"", Calls{{"get_weather", R"({"city":"Oslo","days":2})"}}}));
  EXPECT_EQ(read(kLlama3,
                 "\n<|python_tag|>{\"name\": \"a\", \"parameters\": {}}; {\"name\": \"b\", "
                 "\"arguments\": {\"s\": \"; {\"}};\n"),
            (Reply{"", Calls{{"a", "{}"}, {"b", R"({"s":"; {"})"}}}));
}

TEST(ToolCallReader, Llama3TextAndNonCallJsonAreContent) {
  for (const std::string text :
       {"  The answer is {42}.", "{\"answer\": 42}", "{\"name\": \"a\", \"parameters\": {}} and more",
        "{\"name\": \"a\", \"parameters\": {}}; oops", "{\"name\": \"a\", \"param", " \n ", ""})
    EXPECT_EQ(read(kLlama3, text), (Reply{text, {}})) << text;
}

TEST(ToolCallReader, Llama3StreamsTextAtOnceAndHoldsCallsToTheEnd) {
  ToolCallReader text_reply = kLlama3;
  EXPECT_EQ(text_reply.feed("  ").content, "");  // could still be a call
  EXPECT_EQ(text_reply.feed("Hi").content, "  Hi");
  EXPECT_EQ(text_reply.feed(" there").content, " there");

  ToolCallReader call_reply = kLlama3;
  EXPECT_TRUE(call_reply.feed("{\"name\": \"f\", ").empty());
  EXPECT_TRUE(call_reply.feed("\"parameters\": {}}").empty());
  EXPECT_EQ(call_reply.finish().calls.size(), 1u);
}

const ToolCallReader kGranite = ToolCallReader::for_format(ToolCallFormat::kGranite);

// Granite 3.x: the whole reply is a JSON array of calls, after <|tool_call|> (3.0), <tool_call>
// (3.1 and later), both, or nothing (a tokenizer that drops the 3.0 token from decoded text).
TEST(ToolCallReader, GraniteArrayOfCallsAfterEitherMarker) {
  const Calls two{{"get_weather", R"({"city":"Oslo"})"}, {"get_time", R"({"zone":"CET"})"}};
  const std::string array =
      R"([{"name": "get_weather", "arguments": {"city": "Oslo"}}, {"name": "get_time", "arguments": {"zone": "CET"}}])";
  for (const std::string prefix : {"", "<|tool_call|>", "<tool_call>", " <|tool_call|> <tool_call>\n", "\n"})
    EXPECT_EQ(read(kGranite, prefix + array + "\n"), (Reply{"", two})) << prefix;
  EXPECT_EQ(read(kGranite, R"(<|tool_call|>[{"name": "f", "parameters": {}}])"),
            (Reply{"", Calls{{"f", "{}"}}}));
}

TEST(ToolCallReader, GraniteTextAndArraysThatAreNotCallsAreContent) {
  for (const std::string text : {"The weather in Oslo is mild.", "[1, 2, 3]", "[]", R"([{"name": "f"}])",
                                 R"(<|tool_call|>[{"name": "f", "arguments": "x"}])",
                                 R"(<tool_call>[{"name": "f", "arguments": {}}] and more)",
                                 R"(<|tool_call|>[{"name": "f", "argu)", "<tool_call>", "<|tool", " \n ", ""})
    EXPECT_EQ(read(kGranite, text), (Reply{text, {}})) << text;
}

TEST(ToolCallReader, GraniteStreamsTextAtOnceAndHoldsCallsToTheEnd) {
  ToolCallReader text_reply = kGranite;
  EXPECT_EQ(text_reply.feed(" <").content, "");  // could still be a marker
  EXPECT_EQ(text_reply.feed("b>").content, " <b>");
  EXPECT_EQ(text_reply.feed(" bold").content, " bold");

  ToolCallReader call_reply = kGranite;
  EXPECT_TRUE(call_reply.feed("<|tool_call|>[{\"name\": \"f\", ").empty());
  EXPECT_TRUE(call_reply.feed("\"arguments\": {}}]").empty());
  EXPECT_EQ(call_reply.finish().calls.size(), 1u);

  ToolCallReader limited = kGranite;
  limited.keep_at_most(1);
  EXPECT_EQ(read(limited, R"([{"name": "a", "arguments": {}}, {"name": "b", "arguments": {}}])"),
            (Reply{"", Calls{{"a", "{}"}}}));
}

const ToolCallReader kMistral = ToolCallReader::for_format(ToolCallFormat::kMistral);

TEST(ToolCallReader, MistralArrayOfCalls) {
  // Mistral 7B v0.3, Nemo, Small 2409/2501: one marker, then a JSON array.
  EXPECT_EQ(read(kMistral,
                 "[TOOL_CALLS] [{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}, "
                 "{\"name\": \"now\", \"arguments\": {}, \"id\": \"a1b2c3d4e\"}]"),
            (Reply{"", Calls{{"get_weather", R"({"city":"Paris"})"}, {"now", "{}"}}}));
  EXPECT_EQ(
      read(kMistral, "Let me look.\n\n[TOOL_CALLS][{\"name\": \"f\", \"arguments\": {\"x\": [1, 2]}}]\n"),
      (Reply{"Let me look.", Calls{{"f", R"({"x":[1,2]})"}}}));
  EXPECT_TRUE(kMistral.nine_character_call_ids());
  EXPECT_FALSE(kHermes.nine_character_call_ids());
}

TEST(ToolCallReader, MistralNameArgsCalls) {
  // Mistral Small 3.x, Devstral, Magistral: name[ARGS]{...} after each marker, the model's own id
  // between them where it writes one ([CALL_ID], left out: the reply gives its calls their ids).
  EXPECT_EQ(read(kMistral, "[TOOL_CALLS]get_weather[ARGS]{\"city\": \"Paris\"}\n[TOOL_CALLS]now[ARGS]{}"),
            (Reply{"", Calls{{"get_weather", R"({"city":"Paris"})"}, {"now", "{}"}}}));
  EXPECT_EQ(read(kMistral, "[TOOL_CALLS]get_weather[CALL_ID]a1b2c3d4e[ARGS]{\"city\": \"Paris\"}"),
            (Reply{"", Calls{{"get_weather", R"({"city":"Paris"})"}}}));
}

TEST(ToolCallReader, MistralTextAfterTheCallsIsContentAndLooseArgumentsAreRead) {
  EXPECT_EQ(read(kMistral, "[TOOL_CALLS]grep[ARGS]{\"pattern\": \"TODO\"}\n\nLet me search for that.\n"),
            (Reply{"\n\nLet me search for that.", Calls{{"grep", R"({"pattern":"TODO"})"}}}));
  EXPECT_EQ(read(kMistral, "[TOOL_CALLS] [{\"name\": \"f\", \"arguments\": {}}] Done."),
            (Reply{" Done.", Calls{{"f", "{}"}}}));
  // Arguments as a JSON string holding an object, or none at all.
  EXPECT_EQ(read(kMistral,
                 "[TOOL_CALLS] [{\"name\": \"f\", \"arguments\": \"{\\\"x\\\": 1}\"}, {\"name\": \"g\"}]"),
            (Reply{"", Calls{{"f", R"({"x":1})"}, {"g", "{}"}}}));
}

TEST(ToolCallReader, MistralTextWithoutCallsAndBadCallsAreContent) {
  EXPECT_EQ(read(kMistral, "Plain [TOOL answer, [brackets] too.  "),
            (Reply{"Plain [TOOL answer, [brackets] too.  ", {}}));
  for (const std::string bad : {"[TOOL_CALLS] not json", "[TOOL_CALLS] [{\"name\": \"f\", \"arguments\": 3}]",
                                "[TOOL_CALLS]f[ARGS]{\"cut\": ", "[TOOL_CALLS][ARGS]{}", "[TOOL_CALLS]f{}",
                                "[TOOL_CALLS]two words[ARGS]{}", "[TOOL_CALLS]f[ARGS]\"x\""})
    EXPECT_EQ(read(kMistral, "Hi " + bad), (Reply{"Hi " + bad, {}})) << bad;
  // Calls past the first are left out when told.
  ToolCallReader one = kMistral;
  one.keep_at_most(1);
  EXPECT_EQ(read(one, "[TOOL_CALLS]a[ARGS]{}[TOOL_CALLS]b[ARGS]{}"), (Reply{"", Calls{{"a", "{}"}}}));
}

TEST(ToolCallReader, RequiredReadsTheArray) {
  const ToolCallReader required = ToolCallReader::required();
  EXPECT_EQ(read(required, R"([{"name": "a", "parameters": {"x": 1}}, {"name": "b", "parameters": {}}])"),
            (Reply{"", Calls{{"a", R"({"x":1})"}, {"b", "{}"}}}));
  // Cut off by max_tokens, or (impossible under the constraint, but) not calls: the text.
  for (const std::string text : {R"([{"name": "a", "param)", "[]", R"([{"name": "a"}])", "{}"})
    EXPECT_EQ(read(required, text), (Reply{text, {}})) << text;
}

TEST(ToolCallReader, NamedStreamsTheArgumentsOfOneCall) {
  const ToolCallReader named = ToolCallReader::named("lookup");
  EXPECT_EQ(read(named, R"({"q": "kv cache"})"), (Reply{"", Calls{{"lookup", R"({"q": "kv cache"})"}}}));
  EXPECT_EQ(read(named, ""), (Reply{"", Calls{{"lookup", ""}}}));

  ToolCallReader reader = named;
  ToolCallOutput first = reader.feed("{\"q\"");
  ASSERT_EQ(first.calls.size(), 1u);
  EXPECT_EQ(first.calls[0].name, "lookup");
  EXPECT_EQ(first.calls[0].arguments, "{\"q\"");
  ToolCallOutput next = reader.feed(": 1}");
  ASSERT_EQ(next.calls.size(), 1u);
  EXPECT_EQ(next.calls[0].index, 0);
  EXPECT_EQ(next.calls[0].name, "");
  EXPECT_EQ(next.calls[0].arguments, ": 1}");
  EXPECT_TRUE(reader.finish().empty());
}

TEST(ToolCallReader, RandomHermesRepliesReadTheSameInPieces) {
  // Seeded random mixes of text, whitespace, good calls, bad calls and marker fragments: pieces
  // and whole agree (read() checks); text without calls comes back exactly.
  const std::vector<std::string> parts = {
      "Sure",
      " ",
      "\n",
      "<",
      "<tool",
      "tool_call>",
      "</tool_call>",
      "<tool_call>{\"name\": \"f\", \"arguments\": {\"a\": \"<tool_call>\"}}</tool_call>",
      "<tool_call>{bad}</tool_call>",
      "{\"name\": \"g\"}",
      "x"};
  std::mt19937 rng(7);
  for (int i = 0; i < 200; ++i) {
    std::string text;
    const int n = std::uniform_int_distribution<int>(0, 8)(rng);
    for (int j = 0; j < n; ++j)
      text += parts[std::uniform_int_distribution<size_t>(0, parts.size() - 1)(rng)];
    const Reply reply = read(kHermes, text);
    if (reply.calls.empty()) {
      EXPECT_EQ(reply.content, text);
      continue;
    }
    // Joined parts can form markers of their own ("<" + "tool_call>"), but never a call that is
    // not one of the good parts.
    size_t good = 0;
    for (size_t at = text.find(parts[7]); at != std::string::npos; at = text.find(parts[7], at + 1))
      ++good;
    EXPECT_LE(reply.calls.size(), good) << text;
    for (const auto& [name, arguments] : reply.calls) {
      EXPECT_EQ(name, "f");
      EXPECT_EQ(arguments, R"({"a":"<tool_call>"})");
    }
  }
}

}  // namespace
}  // namespace kvserve
