#include "engine/chat_template.h"

#include <cctype>
#include <charconv>
#include <ctime>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "engine/jinja.h"
#include "engine/jinja_text.h"
#include "engine/json_limits.h"
#include "engine/model.h"

namespace kvserve {
namespace {

std::string read_text(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw ModelLoadError("cannot read the chat template file " + file.string());
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) throw ModelLoadError("cannot read the chat template file " + file.string());
  return text.str();
}

// tokenizer_config.json's special tokens are a string or an AddedToken object {"content": ...}.
std::string token_string(const nlohmann::json& config, const char* key, const std::string& fallback) {
  const auto it = config.find(key);
  if (it == config.end() || it->is_null()) return fallback;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string())
    return (*it)["content"].get<std::string>();
  return fallback;
}

std::optional<nlohmann::json> read_tokenizer_config(const std::filesystem::path& dir) {
  const std::filesystem::path file = dir / "tokenizer_config.json";
  if (dir.empty() || !std::filesystem::exists(file)) return std::nullopt;
  try {
    nlohmann::json config = nlohmann::json::parse(read_text(file));
    if (!config.is_object()) throw ModelLoadError(file.string() + " is not a JSON object");
    return config;
  } catch (const nlohmann::json::exception& e) {
    throw ModelLoadError(file.string() + " is not valid JSON: " + e.what());
  }
}

ExtraSpecialTokens extra_tokens(const std::optional<nlohmann::json>& config) {
  ExtraSpecialTokens extra;
  if (!config) return extra;
  for (const char* key : {"unk_token", "sep_token", "pad_token", "cls_token", "mask_token"}) {
    if (config->contains(key) && !(*config)[key].is_null())
      extra.named.emplace_back(key, token_string(*config, key, ""));
  }
  if (const auto it = config->find("additional_special_tokens"); it != config->end() && it->is_array()) {
    extra.has_additional = true;
    for (const auto& token : *it) {
      if (token.is_string())
        extra.additional.push_back(token.get<std::string>());
      else if (token.is_object() && token.contains("content") && token["content"].is_string())
        extra.additional.push_back(token["content"].get<std::string>());
    }
  }
  return extra;
}

ChatTemplate parse_or_throw(const std::string& source, const std::string& where, std::string bos,
                            std::string eos, const std::optional<nlohmann::json>& config) {
  try {
    return ChatTemplate(source, std::move(bos), std::move(eos), extra_tokens(config));
  } catch (const ChatTemplateError& e) {
    throw ModelLoadError("the chat template in " + where + " cannot be used: " + e.what());
  }
}

}  // namespace

ChatTemplate::ChatTemplate(const std::string& source, std::string bos_token, std::string eos_token,
                           ExtraSpecialTokens extra)
    : source_(source),
      bos_token_(std::move(bos_token)),
      eos_token_(std::move(eos_token)),
      extra_(std::move(extra)) {
  try {
    template_ = std::make_unique<jinja::Template>(source);
  } catch (const jinja::Error& e) {
    throw ChatTemplateError(e.what());
  }
}

ChatTemplate::~ChatTemplate() = default;
ChatTemplate::ChatTemplate(ChatTemplate&&) noexcept = default;
ChatTemplate& ChatTemplate::operator=(ChatTemplate&&) noexcept = default;

std::unique_ptr<ChatTemplate> ChatTemplate::load_from_model_dir(const std::filesystem::path& dir,
                                                                const std::string& fallback_bos,
                                                                const std::string& fallback_eos,
                                                                std::string* source) {
  std::string unused;
  std::string& from = source ? *source : unused;
  const std::optional<nlohmann::json> config = read_tokenizer_config(dir);
  const std::string bos = config ? token_string(*config, "bos_token", fallback_bos) : fallback_bos;
  const std::string eos = config ? token_string(*config, "eos_token", fallback_eos) : fallback_eos;
  // Newer transformers save the template as its own file; it wins over the config's copy.
  const std::filesystem::path jinja_file = dir / "chat_template.jinja";
  from = "chat_template.jinja";
  if (std::filesystem::exists(jinja_file))
    return std::make_unique<ChatTemplate>(
        parse_or_throw(read_text(jinja_file), jinja_file.string(), bos, eos, config));
  if (!config || !config->contains("chat_template") || (*config)["chat_template"].is_null()) {
    // Multimodal repositories (Gemma 3, Mistral 3.x) may keep it only in their processor's file.
    const std::filesystem::path processor_file = dir / "chat_template.json";
    from = "chat_template.json";
    if (!std::filesystem::exists(processor_file)) return nullptr;
    nlohmann::json processor;
    try {
      processor = nlohmann::json::parse(read_text(processor_file));
    } catch (const nlohmann::json::exception& e) {
      throw ModelLoadError(processor_file.string() + " is not valid JSON: " + e.what());
    }
    if (!processor.is_object() || !processor.contains("chat_template") ||
        !processor["chat_template"].is_string())
      throw ModelLoadError(processor_file.string() + " must be an object with a \"chat_template\" string");
    return std::make_unique<ChatTemplate>(parse_or_throw(processor["chat_template"].get<std::string>(),
                                                         processor_file.string(), bos, eos, config));
  }
  const std::string where = (dir / "tokenizer_config.json").string();
  from = "tokenizer_config.json";
  const nlohmann::json& field = (*config)["chat_template"];
  if (field.is_string())
    return std::make_unique<ChatTemplate>(parse_or_throw(field.get<std::string>(), where, bos, eos, config));
  if (field.is_array()) {
    // Several named templates (e.g. "default", "tool_use", "rag"): chat input uses the default.
    std::string names;
    for (const auto& entry : field) {
      if (!entry.is_object() || !entry.contains("name") || !entry.contains("template") ||
          !entry["name"].is_string() || !entry["template"].is_string())
        throw ModelLoadError(where + ": chat_template entries must be {\"name\": ..., \"template\": ...}");
      if (entry["name"] == "default")
        return std::make_unique<ChatTemplate>(parse_or_throw(
            entry["template"].get<std::string>(), where + " (template \"default\")", bos, eos, config));
      names += (names.empty() ? "" : ", ") + entry["name"].get<std::string>();
    }
    throw ModelLoadError(where + " has chat templates named " + names +
                         " but none named \"default\"; pass one with --chat-template FILE");
  }
  throw ModelLoadError(where + ": chat_template must be a string or a list of named templates");
}

ChatTemplate ChatTemplate::load_file(const std::filesystem::path& file,
                                     const std::filesystem::path& model_dir, const std::string& fallback_bos,
                                     const std::string& fallback_eos) {
  const std::optional<nlohmann::json> config = read_tokenizer_config(model_dir);
  return parse_or_throw(read_text(file), file.string(),
                        config ? token_string(*config, "bos_token", fallback_bos) : fallback_bos,
                        config ? token_string(*config, "eos_token", fallback_eos) : fallback_eos, config);
}

std::string ChatTemplate::render(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const {
  ChatInput input;
  input.messages = messages;
  input.add_generation_prompt = add_generation_prompt;
  return render(input);
}

namespace {

// Python reads a JSON integer of any size; nlohmann turns one past 64 bits into a double, which
// would print differently. Such integers are refused instead: found in the text, outside strings.
void refuse_huge_integers(const std::string& text, const std::string& field) {
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '"') {
      for (++i; i < text.size() && text[i] != '"'; ++i)
        if (text[i] == '\\') ++i;
      continue;
    }
    if (c != '-' && !std::isdigit(static_cast<unsigned char>(c))) continue;
    size_t end = i + 1;
    bool integral = true;
    while (end < text.size() &&
           (std::isdigit(static_cast<unsigned char>(text[end])) || text[end] == '.' || text[end] == 'e' ||
            text[end] == 'E' || text[end] == '+' || text[end] == '-')) {
      integral = integral && std::isdigit(static_cast<unsigned char>(text[end]));
      ++end;
    }
    int64_t value = 0;
    if (integral &&
        std::from_chars(text.data() + i, text.data() + end, value).ec == std::errc::result_out_of_range)
      throw ChatInputError(field + ": the integer " + text.substr(i, end - i) + " is past 64 bits");
    i = end - 1;
  }
}

// `text` as JSON, or a ChatInputError naming `field`.
nlohmann::ordered_json parse_field(const std::string& text, const std::string& field) {
  refuse_huge_integers(text, field);
  if (std::string over = json_over_limits(text, kMaxRequestJsonDepth, kMaxRequestJsonMembers); !over.empty())
    throw ChatInputError(field + ": " + over);
  try {
    return nlohmann::ordered_json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw ChatInputError(field + ": not valid JSON (" + e.what() + ")");
  }
}

jinja::Value from_json_field(const nlohmann::ordered_json& j, const std::string& field) {
  try {
    return jinja::Value::from_json(j);
  } catch (const jinja::Error& e) {
    throw ChatInputError(field + ": " + e.what());
  }
}

// The final message's content as text, for continue_final_message: its content field, or what
// extra_json puts there (a string, or a list of content blocks of which the last with a "text").
std::string final_content(const ChatMessage& m) {
  if (m.extra_json.empty()) return m.content;
  const auto extra = nlohmann::json::parse(m.extra_json, nullptr, /*allow_exceptions=*/false);
  const auto it = extra.is_object() ? extra.find("content") : extra.end();
  if (it == extra.end()) return m.content;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_array())
    for (auto block = it->rbegin(); block != it->rend(); ++block)
      if (block->is_object() && block->contains("text") && (*block)["text"].is_string())
        return (*block)["text"].get<std::string>();
  throw ChatInputError(
      "chat.continue_final_message: the final message's content must be text (or content blocks with a "
      "\"text\"), to know where to cut the prompt");
}

// transformers' rule: find the stripped content's last occurrence; keep the content's trailing
// whitespace only when the template reproduced the content exactly (no leading whitespace lost).
std::string cut_after_final_message(const std::string& rendered, const std::string& content) {
  const std::string stripped = jinja::text::strip(content, nullptr, true, true);
  const size_t at = rendered.rfind(stripped);
  if (at == std::string::npos)
    throw ChatTemplateError(
        "chat.continue_final_message: the final message's content does not appear in the prompt the chat "
        "template rendered (the template changes it), so there is nowhere to continue from");
  const size_t kept = jinja::text::strip(content, nullptr, true, false).size();
  if (rendered.compare(at, kept, content) == 0) return rendered.substr(0, at + kept);
  return rendered.substr(0, at + stripped.size());
}

}  // namespace

std::string ChatTemplate::render(const ChatInput& input) const {
  if (input.continue_final_message) {
    if (input.add_generation_prompt)
      throw ChatInputError(
          "chat: continue_final_message and add_generation_prompt exclude each other: continue the final "
          "message, or open a new assistant turn after it");
    if (input.messages.empty())
      throw ChatInputError("chat.continue_final_message: there are no messages, so no final one to continue");
  }
  jinja::List list;
  list.reserve(input.messages.size());
  for (size_t i = 0; i < input.messages.size(); ++i) {
    const ChatMessage& m = input.messages[i];
    jinja::Dict d;
    d.set("role", jinja::Value(m.role));
    d.set("content", jinja::Value(m.content));
    if (!m.extra_json.empty()) {
      const std::string field = "chat.messages[" + std::to_string(i) + "].extra_json";
      const auto extra = parse_field(m.extra_json, field);
      if (!extra.is_object())
        throw ChatInputError(field + ": must be a JSON object of the message's further fields");
      for (const auto& [key, value] : extra.items())
        d.set(key, from_json_field(value, field));
    }
    list.emplace_back(std::move(d));
  }
  jinja::Dict vars;
  vars.set("messages", jinja::Value(std::move(list)));
  vars.set("add_generation_prompt", jinja::Value(input.add_generation_prompt));
  vars.set("bos_token", jinja::Value(bos_token_));
  vars.set("eos_token", jinja::Value(eos_token_));
  for (const auto& [key, value] : extra_.named)
    vars.set(key, jinja::Value(value));
  if (extra_.has_additional) {
    jinja::List additional;
    for (const std::string& token : extra_.additional)
      additional.emplace_back(token);
    vars.set("additional_special_tokens", jinja::Value(std::move(additional)));
  }
  // transformers passes tools and documents on every call: none when the request has none.
  jinja::Value tools = jinja::Value::none();
  if (!input.tools_json.empty()) {
    const auto parsed = parse_field(input.tools_json, "chat.tools_json");
    if (!parsed.is_array() && !parsed.is_null())
      throw ChatInputError("chat.tools_json: must be a JSON array of tool specifications");
    tools = from_json_field(parsed, "chat.tools_json");
  }
  vars.set("tools", tools);
  vars.set("documents", jinja::Value::none());
  if (!input.template_kwargs_json.empty()) {
    const auto kwargs = parse_field(input.template_kwargs_json, "chat.template_kwargs_json");
    if (!kwargs.is_object())
      throw ChatInputError("chat.template_kwargs_json: must be a JSON object of variables");
    for (const auto& [key, value] : kwargs.items()) {
      if (key == "messages" || key == "tools" || key == "documents" || key == "add_generation_prompt")
        throw ChatInputError("chat.template_kwargs_json: '" + key + "' has a field of its own; set it there");
      vars.set(key, from_json_field(value, "chat.template_kwargs_json"));  // may replace a special token
    }
  }
  jinja::RenderOptions options;
  const std::time_t now = std::time(nullptr);
  localtime_r(&now, &options.now);  // strftime_now() is the server's local time, as in transformers
  try {
    std::string prompt = template_->render(jinja::Value(std::move(vars)), options);
    if (!input.continue_final_message) return prompt;
    return cut_after_final_message(prompt, final_content(input.messages.back()));
  } catch (const jinja::RaisedError& e) {
    throw ChatTemplateError(e.what());
  } catch (const jinja::Error& e) {
    throw ChatTemplateError(std::string("the chat template failed on this conversation: ") + e.what());
  }
}

}  // namespace kvserve
