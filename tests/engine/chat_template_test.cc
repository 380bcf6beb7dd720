// ChatTemplate: where a model directory keeps its template and special tokens, and rendering a
// conversation. The interpreter itself is checked against jinja2 in jinja_test.cc; here the
// expected prompts are jinja2's renderings from tests/data/chat_templates/cases.json.
#include "engine/chat_template.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "engine/model.h"

namespace kvserve {
namespace {

namespace fs = std::filesystem;

const std::string kDir = std::string(KVSERVE_TEST_DATA) + "/chat_templates/";

std::string read(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

void write(const fs::path& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "kvserve-chat-XXXXXX").string();
    path_ = mkdtemp(tmpl.data());
  }
  ~TempDir() { fs::remove_all(path_); }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

// Every fixture conversation of a template without strftime_now (whose clock the fixtures fix).
TEST(ChatTemplate, RendersConversationsAsJinja2Does) {
  const auto fixture = nlohmann::ordered_json::parse(read(kDir + "cases.json"));
  int checked = 0;
  for (const char* file : {"llama3.jinja", "chatml.jinja", "mistral.jinja", "gemma.jinja", "llama2.jinja"}) {
    for (const auto& c : fixture["cases"]) {
      if (c.value("template_file", "") != file) continue;
      const auto& ctx = c["context"];
      SCOPED_TRACE(c["name"].get<std::string>());
      std::vector<ChatMessage> messages;
      for (const auto& m : ctx["messages"])
        messages.push_back({m["role"], m["content"]});
      const ChatTemplate t(read(kDir + file), ctx["bos_token"], ctx["eos_token"]);
      if (c.contains("output")) {
        EXPECT_EQ(t.render(messages, ctx["add_generation_prompt"]), c["output"].get<std::string>());
      } else {
        try {
          t.render(messages, ctx["add_generation_prompt"]);
          ADD_FAILURE() << "jinja2 raised " << c["error"];
        } catch (const ChatTemplateError& e) {
          EXPECT_EQ(std::string(e.what()), c["error"].get<std::string>());  // the template's own words
        }
      }
      ++checked;
    }
  }
  EXPECT_EQ(checked, 5 * 25);
}

// Conversations ending in a partial assistant answer, cut after it as transformers cuts them
// (scripts/make_chat_fixtures.py applies its documented rule to jinja2's renderings).
TEST(ChatTemplate, ContinuesTheFinalMessageAsTransformersCutsIt) {
  const auto fixture = nlohmann::ordered_json::parse(read(kDir + "continue_final_message.json"));
  int checked = 0, cut_before_trailing_space = 0;
  for (const auto& c : fixture["cases"]) {
    const auto& ctx = c["context"];
    SCOPED_TRACE(c["name"].get<std::string>());
    ChatInput input;
    for (const auto& m : ctx["messages"])
      input.messages.push_back({m["role"], m["content"]});
    input.add_generation_prompt = false;
    input.continue_final_message = true;
    const ChatTemplate t(read(kDir + c["template_file"].get<std::string>()), ctx["bos_token"],
                         ctx["eos_token"]);
    if (c.contains("output")) {
      const std::string want = c["output"];
      EXPECT_EQ(t.render(input), want);
      const std::string& answer = input.messages.back().content;
      if (!answer.empty() && answer.back() == ' ' && want.back() != ' ') ++cut_before_trailing_space;
    } else {
      EXPECT_THROW(t.render(input), ChatTemplateError) << c["error"];
    }
    ++checked;
  }
  EXPECT_EQ(checked, 6 * 11);
  EXPECT_GT(cut_before_trailing_space, 0) << "the fixtures should exercise the stripped cut";
}

TEST(ChatTemplate, ContinueFinalMessageRefusesWhatItCannotCut) {
  const ChatTemplate plain("{% for m in messages %}<{{ m.role }}>{{ m.content }}</{{ m.role }}>{% endfor %}",
                           "", "");
  ChatInput input;
  input.messages = {{"user", "Name a colour."}, {"assistant", "  Blue, or "}};
  input.continue_final_message = true;
  input.add_generation_prompt = true;
  EXPECT_THROW(plain.render(input), ChatInputError);  // the two exclude each other
  input.add_generation_prompt = false;
  // Leading whitespace in the content: the cut ends at the stripped text, as in transformers.
  EXPECT_EQ(plain.render(input), "<user>Name a colour.</user><assistant>  Blue, or");
  input.messages.back().content = "Blue, or ";
  EXPECT_EQ(plain.render(input), "<user>Name a colour.</user><assistant>Blue, or ");
  // Content blocks from extra_json: the last one with a text is the final content.
  input.messages.back().extra_json = R"({"content": [{"type": "text", "text": "Red"}, {"type": "image"}]})";
  const ChatTemplate blocks(
      "{% for m in messages %}[{{ m.content[0].text if m.content is not string "
      "else m.content }}]{% endfor %}",
      "", "");
  EXPECT_EQ(blocks.render(input), "[Name a colour.][Red");
  input.messages.back().extra_json = R"({"content": null})";  // no text to find
  EXPECT_THROW(plain.render(input), ChatInputError);
  input.messages.back().extra_json.clear();
  // A template that does not write the content out leaves nowhere to cut.
  const ChatTemplate upper("{% for m in messages %}{{ m.content | upper }}{% endfor %}", "", "");
  input.messages.back().content = "blue";
  EXPECT_THROW(upper.render(input), ChatTemplateError);
  input.messages.clear();
  EXPECT_THROW(plain.render(input), ChatInputError);
}

// The tool-calling template's fixture conversations as a request carries them: tools as JSON,
// each message's tool_calls / name (and a null content) as its extra JSON fields.
TEST(ChatTemplate, RendersToolsAndMessageFieldsAsJinja2Does) {
  const auto fixture = nlohmann::ordered_json::parse(read(kDir + "cases.json"));
  const std::string source = read(kDir + "tools.jinja");
  int checked = 0;
  for (const auto& c : fixture["cases"]) {
    if (c.value("template_file", "") != "tools.jinja") continue;
    const auto& ctx = c["context"];
    SCOPED_TRACE(c["name"].get<std::string>());
    ChatInput input;
    bool representable = true;
    for (const auto& m : ctx["messages"]) {
      ChatMessage message{m["role"], "", ""};
      nlohmann::ordered_json extra = nlohmann::ordered_json::object();
      for (const auto& [key, value] : m.items()) {
        if (key == "role") continue;
        if (key == "content" && value.is_string())
          message.content = value.get<std::string>();
        else
          extra[key] = value;
      }
      representable = representable && m.contains("content");  // a missing content has no field
      if (!extra.empty()) message.extra_json = extra.dump();
      input.messages.push_back(message);
    }
    if (!representable) continue;
    input.add_generation_prompt = ctx["add_generation_prompt"];
    if (ctx.contains("tools")) input.tools_json = ctx["tools"].dump();
    const ChatTemplate t(source, ctx["bos_token"], ctx["eos_token"]);
    if (c.contains("output")) {
      EXPECT_EQ(t.render(input), c["output"].get<std::string>());
    } else {
      EXPECT_THROW(t.render(input), ChatTemplateError);
    }
    ++checked;
  }
  EXPECT_GE(checked, 20);
}

TEST(ChatTemplate, TemplateKwargsAndBadJsonFields) {
  const ChatTemplate t("{{ bos_token }}|{{ enable_thinking }}|{{ tools is none }}|{{ messages[0].name }}",
                       "<s>", "");
  ChatInput input;
  input.messages = {{"user", "hi", R"({"name": "ann"})"}};
  input.template_kwargs_json = R"({"enable_thinking": false, "bos_token": "<B>"})";
  EXPECT_EQ(t.render(input), "<B>|False|True|ann");
  const auto error_for = [&](ChatInput in) {
    try {
      t.render(in);
    } catch (const ChatInputError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  ChatInput bad = input;
  bad.template_kwargs_json = R"({"messages": []})";
  EXPECT_NE(error_for(bad).find("chat.template_kwargs_json: 'messages'"), std::string::npos)
      << error_for(bad);
  bad.template_kwargs_json = "[1]";
  EXPECT_NE(error_for(bad).find("chat.template_kwargs_json"), std::string::npos);
  bad = input;
  bad.tools_json = "{\"a\": 1}";
  EXPECT_NE(error_for(bad).find("chat.tools_json"), std::string::npos);
  bad.tools_json = "[1,";
  EXPECT_NE(error_for(bad).find("chat.tools_json: not valid JSON"), std::string::npos);
  bad = input;
  bad.messages[0].extra_json = "7";
  EXPECT_NE(error_for(bad).find("chat.messages[0].extra_json"), std::string::npos);
  bad.messages[0].extra_json = std::string(100000, '[') + std::string(100000, ']');  // deep, not a crash
  EXPECT_NE(error_for(bad).find("chat.messages[0].extra_json: nested deeper than 256"), std::string::npos);
  // An object of more members than any request needs is refused before the ordered parser, whose
  // cost is quadratic in them (engine/json_limits.h).
  std::string wide = "[{";
  for (int i = 0; i < 1025; ++i)
    wide += (i ? ",\"k" : "\"k") + std::to_string(i) + "\": 1";
  bad = input;
  bad.tools_json = wide + "}]";
  EXPECT_EQ(error_for(bad), "chat.tools_json: an object with more than 1024 members");
  bad = input;
  // Past int64: refused, not silently a float as the JSON reader would make it.
  for (const char* json : {R"({"n": 18446744073709551615})", R"({"n": 99999999999999999999})",
                           R"({"n": [-9223372036854775809]})"}) {
    bad.messages[0].extra_json = json;
    EXPECT_NE(error_for(bad).find("past 64 bits"), std::string::npos) << json;
  }
  bad.messages[0].extra_json = R"({"n": 9223372036854775807, "s": "99999999999999999999", "f": 1e300})";
  EXPECT_EQ(error_for(bad), "no error");
}

TEST(ChatTemplate, RenderErrorsAreChatTemplateErrors) {
  const ChatTemplate t("{{ messages[0].content.nosuch() }}", "", "");
  EXPECT_THROW(t.render({{"user", "hi"}}, true), ChatTemplateError);
  EXPECT_THROW(ChatTemplate("{% if %}", "", ""), ChatTemplateError);
}

TEST(ChatTemplate, ReadsTheTokenizerConfig) {
  TempDir dir;
  write(dir.path() / "tokenizer_config.json",
        R"({"bos_token": {"content": "<B>", "lstrip": false}, "eos_token": "<E>",
            "chat_template": "{{ bos_token }}{% for m in messages %}{{ m.role }}:{{ m.content }}{{ eos_token }}{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}"})");
  const auto t = ChatTemplate::load_from_model_dir(dir.path(), "<fb>", "<fe>");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->bos_token(), "<B>");
  EXPECT_EQ(t->eos_token(), "<E>");
  EXPECT_EQ(t->render({{"system", "s"}, {"user", "u"}}, true), "<B>system:s<E>user:u<E>assistant:");
  EXPECT_EQ(t->render({{"user", "u"}}, false), "<B>user:u<E>");
}

TEST(ChatTemplate, ChatTemplateJinjaFileWinsAndTokensFallBack) {
  TempDir dir;
  write(dir.path() / "tokenizer_config.json", R"({"chat_template": "from config", "eos_token": null})");
  write(dir.path() / "chat_template.jinja", "{{ bos_token }}|{{ eos_token }}|file\n");
  const auto t = ChatTemplate::load_from_model_dir(dir.path(), "<fb>", "<fe>");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->render({{"user", "u"}}, true), "<fb>|<fe>|file");  // jinja drops one trailing newline
}

// Multimodal repositories may keep the template only in their processor's chat_template.json; the
// tokenizer's own template wins where both are, as AutoTokenizer reads it.
TEST(ChatTemplate, AProcessorsChatTemplateJsonIsTheLastResort) {
  TempDir dir;
  write(dir.path() / "tokenizer_config.json", R"({"bos_token": "<B>"})");
  write(dir.path() / "chat_template.json", R"({"chat_template": "{{ bos_token }}processor"})");
  std::string source;
  const auto render = [&](const std::string& bos) {
    return ChatTemplate::load_from_model_dir(dir.path(), bos, "", &source)->render({{"user", "u"}}, true);
  };
  EXPECT_EQ(render("<fb>"), "<B>processor");
  EXPECT_EQ(source, "chat_template.json");
  fs::remove(dir.path() / "tokenizer_config.json");  // bos from the fallback then
  EXPECT_EQ(render("<fb>"), "<fb>processor");
  write(dir.path() / "tokenizer_config.json", R"({"chat_template": "tokenizer"})");
  EXPECT_EQ(render(""), "tokenizer");
  EXPECT_EQ(source, "tokenizer_config.json");
  write(dir.path() / "chat_template.jinja", "jinja");
  EXPECT_EQ(render(""), "jinja");
  EXPECT_EQ(source, "chat_template.jinja");
  fs::remove(dir.path() / "chat_template.jinja");
  fs::remove(dir.path() / "tokenizer_config.json");
  for (const char* bad :
       {"{not json", R"(["x"])", R"({"chat_template": 3})", R"({"chat_template": "{% for %}"})"}) {
    SCOPED_TRACE(bad);
    write(dir.path() / "chat_template.json", bad);
    try {
      ChatTemplate::load_from_model_dir(dir.path(), "", "");
      ADD_FAILURE() << "loaded";
    } catch (const ModelLoadError& e) {
      EXPECT_NE(std::string(e.what()).find("chat_template.json"), std::string::npos) << e.what();
    }
  }
}

TEST(ChatTemplate, NamedTemplatesUseDefault) {
  TempDir dir;
  write(
      dir.path() / "tokenizer_config.json",
      R"({"chat_template": [{"name": "tool_use", "template": "tools"}, {"name": "default", "template": "plain"}]})");
  EXPECT_EQ(ChatTemplate::load_from_model_dir(dir.path(), "", "")->render({{"user", "u"}}, true), "plain");
  write(dir.path() / "tokenizer_config.json", R"({"chat_template": [{"name": "rag", "template": "x"}]})");
  try {
    ChatTemplate::load_from_model_dir(dir.path(), "", "");
    FAIL() << "loaded";
  } catch (const ModelLoadError& e) {
    EXPECT_NE(std::string(e.what()).find("rag"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("--chat-template"), std::string::npos) << e.what();
  }
}

TEST(ChatTemplate, NoTemplateIsNullAndBrokenOnesNameTheFile) {
  TempDir dir;
  EXPECT_EQ(ChatTemplate::load_from_model_dir(dir.path(), "", ""), nullptr);  // no tokenizer_config.json
  write(dir.path() / "tokenizer_config.json", R"({"bos_token": "<s>"})");
  EXPECT_EQ(ChatTemplate::load_from_model_dir(dir.path(), "", ""), nullptr);  // no chat_template
  const auto expect_error_naming = [&](const std::string& file) {
    try {
      ChatTemplate::load_from_model_dir(dir.path(), "", "");
      ADD_FAILURE() << "loaded";
    } catch (const ModelLoadError& e) {
      EXPECT_NE(std::string(e.what()).find(file), std::string::npos) << e.what();
    }
  };
  write(dir.path() / "tokenizer_config.json", R"({"chat_template": "{% for %}"})");
  expect_error_naming("tokenizer_config.json");
  write(dir.path() / "tokenizer_config.json", R"({"chat_template": 7})");
  expect_error_naming("tokenizer_config.json");
  write(dir.path() / "tokenizer_config.json", "{not json");
  expect_error_naming("tokenizer_config.json");
  fs::remove(dir.path() / "tokenizer_config.json");
  write(dir.path() / "chat_template.jinja", "{{ unclosed");
  expect_error_naming("chat_template.jinja");
}

TEST(ChatTemplate, LoadFileTakesTokensFromTheModel) {
  TempDir dir;
  write(dir.path() / "tokenizer_config.json", R"({"bos_token": "<B>"})");
  write(dir.path() / "mine.jinja", "{{ bos_token }}{{ messages[0].content }}{{ eos_token }}");
  const ChatTemplate t = ChatTemplate::load_file(dir.path() / "mine.jinja", dir.path(), "<fb>", "<fe>");
  EXPECT_EQ(t.render({{"user", "hi"}}, true), "<B>hi<fe>");
  EXPECT_THROW(ChatTemplate::load_file(dir.path() / "missing.jinja", dir.path(), "", ""), ModelLoadError);
  const ChatTemplate no_model = ChatTemplate::load_file(dir.path() / "mine.jinja", "", "<fb>", "<fe>");
  EXPECT_EQ(no_model.render({{"user", "hi"}}, true), "<fb>hi<fe>");
}

}  // namespace
}  // namespace kvserve
