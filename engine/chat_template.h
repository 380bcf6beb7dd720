// Chat templates: a conversation (role, content messages) turned into the prompt text a chat model
// was trained on, by the Jinja template that ships with the model (tokenizer_config.json's
// "chat_template", a chat_template.jinja file beside it, or a processor's chat_template.json),
// rendered as Hugging Face transformers
// renders it (engine/jinja.h: trim_blocks, lstrip_blocks, loop controls, raise_exception,
// strftime_now, HF's tojson). The prompt is then tokenized with special-token spellings standing for
// their tokens and no BOS added (the template writes bos_token itself).
#pragma once

#include <filesystem>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace kvserve {

namespace jinja {
class Template;
}

struct ChatMessage {
  ChatMessage() = default;
  ChatMessage(std::string r, std::string c, std::string extra = {})
      : role(std::move(r)), content(std::move(c)), extra_json(std::move(extra)) {}

  std::string role;  // "system", "user", "assistant", or whatever else the template accepts
  std::string content;
  // Further fields of the message as a JSON object (tool_calls, tool_call_id, name, ...: what
  // tool-calling templates read), set after role and content, so {"content": null} replaces it.
  std::string extra_json;
};

// A conversation with everything transformers' apply_chat_template can pass a template.
struct ChatInput {
  std::vector<ChatMessage> messages;
  bool add_generation_prompt = true;
  // The prompt ends inside the final message (an assistant's answer begun by the client, "prefill"),
  // cut after its content as transformers' apply_chat_template(continue_final_message=True) cuts
  // it, so that the model continues that message rather than starting a new turn. Not with
  // add_generation_prompt.
  bool continue_final_message = false;
  std::string tools_json;            // a JSON array of tool specifications; empty: tools is none
  std::string template_kwargs_json;  // a JSON object of further variables (enable_thinking, ...)
};

// A field of a ChatInput that is not what it must be (JSON that does not parse, a kwarg named like
// one of the template's own variables): the message names the field as the gRPC API spells it.
class ChatInputError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

// A conversation the template refuses (its raise_exception, e.g. roles that do not alternate) or
// cannot render (a type error inside the template): the message says which.
class ChatTemplateError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The rest of transformers' special_tokens_map, which it passes to templates beside bos_token and
// eos_token: unk_token, pad_token, sep_token, cls_token, mask_token where tokenizer_config.json sets
// them, and additional_special_tokens.
struct ExtraSpecialTokens {
  std::vector<std::pair<std::string, std::string>> named;
  std::vector<std::string> additional;
  bool has_additional = false;
};

class ChatTemplate {
 public:
  // Parses `source`; throws ChatTemplateError ("line N: ...") for syntax errors and for Jinja the
  // interpreter does not support. bos_token / eos_token (and `extra`) are the strings the template sees.
  ChatTemplate(const std::string& source, std::string bos_token, std::string eos_token,
               ExtraSpecialTokens extra = {});
  ~ChatTemplate();
  ChatTemplate(ChatTemplate&&) noexcept;
  ChatTemplate& operator=(ChatTemplate&&) noexcept;

  // The template of a model directory: chat_template.jinja when present, else tokenizer_config.json's
  // "chat_template" (a string, or a list of {name, template} of which "default" is taken), else the
  // "chat_template" of chat_template.json (a multimodal processor's file), with
  // bos_token / eos_token from tokenizer_config.json (a string or an {"content": ...} object) or,
  // where it has none, `fallback_bos` / `fallback_eos`. nullptr when the directory has no template.
  // Throws ModelLoadError (engine/model.h) naming the file when one is there but does not read or parse.
  // `source`, when given, gets the name of the file the template came from.
  static std::unique_ptr<ChatTemplate> load_from_model_dir(const std::filesystem::path& dir,
                                                           const std::string& fallback_bos,
                                                           const std::string& fallback_eos,
                                                           std::string* source = nullptr);
  // A template file given by the operator (--chat-template); bos/eos as for load_from_model_dir of
  // `model_dir` (which may be empty). Throws ModelLoadError naming the file.
  static ChatTemplate load_file(const std::filesystem::path& file, const std::filesystem::path& model_dir,
                                const std::string& fallback_bos, const std::string& fallback_eos);

  // The prompt for the conversation; with add_generation_prompt the template opens the assistant's
  // turn, with continue_final_message the prompt stops after the final message's content. The template sees
  // what transformers passes: messages, tools (none without), documents (none), add_generation_prompt, the
  // special tokens, and the request's template kwargs. Throws ChatInputError for a field that does not read,
  // ChatTemplateError when the template refuses the conversation or fails on it.
  std::string render(const ChatInput& input) const;
  std::string render(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const;

  // The template's text (the server reads from it which tool-call format it teaches).
  const std::string& source() const { return source_; }
  const std::string& bos_token() const { return bos_token_; }
  const std::string& eos_token() const { return eos_token_; }

 private:
  std::unique_ptr<jinja::Template> template_;
  std::string source_;
  std::string bos_token_;
  std::string eos_token_;
  ExtraSpecialTokens extra_;
};

}  // namespace kvserve
