#include "server/anthropic_messages.h"

#include <algorithm>
#include <cctype>
#include <optional>
#include <utility>
#include <vector>

#include "server/request_fields.h"

namespace kvserve::anthropic {
namespace {

using Json = nlohmann::ordered_json;
using request_fields::find;
using request_fields::invalid;

// A text block's text, as a chat text part; anything else refused (this server reads text only).
Status text_part(const Json& block, const std::string& field, Json* part) {
  const Json* type = block.is_object() ? find(block, "type") : nullptr;
  if (!type || *type != "text")
    return invalid(field + ".type", "expected a \"text\" block (this server reads text only)");
  const Json* text = find(block, "text");
  if (!text || !text->is_string()) return invalid(field + ".text", "expected a string");
  *part = Json{{"type", "text"}, {"text", *text}};
  return Status::Ok();
}

// A content that is a string or a list of text blocks (a system prompt, a tool result's), as chat
// content: the string, or the blocks as text parts (which the chat endpoint joins by newlines).
Status text_content(const Json& content, const std::string& field, Json* out) {
  if (content.is_string()) {
    *out = content;
    return Status::Ok();
  }
  if (!content.is_array()) return invalid(field, "expected a string or a list of text blocks");
  *out = Json::array();
  for (size_t i = 0; i < content.size(); ++i) {
    Json part;
    if (Status s = text_part(content[i], field + "[" + std::to_string(i) + "]", &part); !s.ok()) return s;
    out->push_back(std::move(part));
  }
  return Status::Ok();
}

// The chat conversation a request's system prompt and messages stand for, with, for each chat
// message, the Messages field it came from (the chat parser's errors are renamed with it).
struct Conversation {
  Json messages = Json::array();
  std::vector<std::string> origins;
  bool prefill = false;  // it ends with the assistant's message, which the reply continues

  // Consecutive turns of one role are one turn, as Anthropic's API takes them (chat templates
  // often insist that roles alternate): `message` joins the last one where both are the same
  // role's (user or assistant, not tool results).
  void add(Json message, const std::string& origin) {
    if (!messages.empty() && messages.back()["role"] == message["role"] && message["role"] != "tool" &&
        messages.back()["role"] != "system") {
      Json& last = messages.back();
      const auto parts = [](Json content) {
        if (content.is_null()) return Json::array();
        if (content.is_string()) return Json::array({Json{{"type", "text"}, {"text", std::move(content)}}});
        return content;
      };
      Json joined = parts(std::move(last["content"]));
      for (Json& part : parts(std::move(message["content"])))
        joined.push_back(std::move(part));
      last["content"] = joined.empty() ? Json(nullptr) : std::move(joined);
      if (message.contains("tool_calls")) {
        if (!last.contains("tool_calls")) last["tool_calls"] = Json::array();
        for (Json& call : message["tool_calls"])
          last["tool_calls"].push_back(std::move(call));
      }
      if (message.contains("reasoning_content")) {
        std::string reasoning = last.value("reasoning_content", "");
        reasoning += (reasoning.empty() ? "" : "\n") + message["reasoning_content"].get<std::string>();
        last["reasoning_content"] = std::move(reasoning);
      }
      return;
    }
    messages.push_back(std::move(message));
    origins.push_back(origin);
  }
};

// A user message's blocks: each tool_result a tool message, in the order given, then its text as
// the user's turn. The results come first, as Anthropic's API has them: chat templates expect a
// call's results right after it.
Status add_user_blocks(const Json& content, const std::string& field, Conversation& conversation) {
  Json parts = Json::array();
  for (size_t j = 0; j < content.size(); ++j) {
    const Json& block = content[j];
    const std::string block_field = field + ".content[" + std::to_string(j) + "]";
    if (!block.is_object()) return invalid(block_field, "expected a content block (an object)");
    const Json* type = find(block, "type");
    if (type && *type == "tool_result") {
      const Json* id = find(block, "tool_use_id");
      if (!id || !id->is_string() || id->get_ref<const std::string&>().empty())
        return invalid(block_field + ".tool_use_id", "expected the id of the tool_use block it answers");
      Json text = "";  // a result with no content is an empty one
      if (const Json* result = find(block, "content"))
        if (Status s = text_content(*result, block_field + ".content", &text); !s.ok()) return s;
      if (const Json* is_error = find(block, "is_error"); is_error && !is_error->is_boolean())
        return invalid(block_field + ".is_error", "expected true or false");
      if (!parts.empty())
        return invalid(block_field,
                       "a tool_result block after text: send a message's tool_result blocks first");
      conversation.add(Json{{"role", "tool"}, {"tool_call_id", *id}, {"content", std::move(text)}},
                       block_field);
      continue;
    }
    if (type && *type == "text") {
      Json part;
      if (Status s = text_part(block, block_field, &part); !s.ok()) return s;
      parts.push_back(std::move(part));
      continue;
    }
    return invalid(block_field + ".type",
                   (type && type->is_string() ? "\"" + type->get<std::string>() + "\" blocks are"
                                              : std::string("a block without a type is")) +
                       " not supported in a user message: send text and tool_result blocks (this "
                       "server reads text only)");
  }
  if (!parts.empty()) conversation.add(Json{{"role", "user"}, {"content", std::move(parts)}}, field);
  return Status::Ok();
}

// An assistant message's blocks as one assistant turn: its text, its tool_use blocks as the turn's
// calls, and its thinking as the turn's reasoning_content, which the templates of thinking models
// (Qwen3's, ...) render for the turns of the current tool loop: the prompt is then the one the
// model wrote, and its cached blocks are found again.
Status assistant_turn(const Json& content, const std::string& field, Json* turn) {
  Json parts = Json::array();
  Json calls = Json::array();
  std::string thinking;
  for (size_t j = 0; j < content.size(); ++j) {
    const Json& block = content[j];
    const std::string block_field = field + ".content[" + std::to_string(j) + "]";
    if (!block.is_object()) return invalid(block_field, "expected a content block (an object)");
    const Json* type = find(block, "type");
    if (type && *type == "thinking") {
      const Json* text = find(block, "thinking");
      if (!text || !text->is_string()) return invalid(block_field + ".thinking", "expected a string");
      thinking += (thinking.empty() ? "" : "\n") + text->get<std::string>();
      continue;
    }
    if (type && *type == "redacted_thinking") continue;  // (encrypted by another server: unreadable)
    if (type && *type == "text") {
      Json part;
      if (Status s = text_part(block, block_field, &part); !s.ok()) return s;
      parts.push_back(std::move(part));
      continue;
    }
    if (type && *type == "tool_use") {
      const Json* id = find(block, "id");
      const Json* name = find(block, "name");
      const Json* input = find(block, "input");
      if (!id || !id->is_string() || id->get_ref<const std::string&>().empty())
        return invalid(block_field + ".id", "expected the call's id (a non-empty string)");
      if (!name || !name->is_string() || name->get_ref<const std::string&>().empty())
        return invalid(block_field + ".name", "expected the tool's name");
      if (!input || !input->is_object()) return invalid(block_field + ".input", "expected an object");
      calls.push_back(Json{
          {"id", *id}, {"type", "function"}, {"function", Json{{"name", *name}, {"arguments", *input}}}});
      continue;
    }
    return invalid(block_field + ".type",
                   (type && type->is_string() ? "\"" + type->get<std::string>() + "\" blocks are"
                                              : std::string("a block without a type is")) +
                       " not supported in an assistant message: send text, tool_use and thinking "
                       "blocks (kvserve runs no server tools)");
  }
  // (No text: null beside calls, as chat has it; "" for a turn of thinking alone.)
  Json text = parts.empty() ? (calls.empty() ? Json("") : Json(nullptr)) : std::move(parts);
  *turn = Json{{"role", "assistant"}, {"content", std::move(text)}};
  if (!calls.empty()) (*turn)["tool_calls"] = std::move(calls);
  if (!thinking.empty()) (*turn)["reasoning_content"] = std::move(thinking);
  return Status::Ok();
}

// Whether a chat turn's content holds nothing but whitespace (or nothing).
bool blank(const Json& content) {
  const auto blank_text = [](const std::string& text) {
    return std::all_of(text.begin(), text.end(), [](unsigned char c) { return std::isspace(c); });
  };
  if (content.is_string()) return blank_text(content.get_ref<const std::string&>());
  if (content.is_array())
    return std::all_of(content.begin(), content.end(), [&](const Json& part) {
      return blank_text(part.at("text").get_ref<const std::string&>());
    });
  return true;
}

Status read_conversation(const Json& body, Conversation* conversation) {
  if (const Json* system = find(body, "system")) {
    Json text;
    if (Status s = text_content(*system, "system", &text); !s.ok()) return s;
    conversation->add(Json{{"role", "system"}, {"content", std::move(text)}}, "system");
  }
  const Json* messages = find(body, "messages");
  if (!messages || !messages->is_array() || messages->empty())
    return invalid("messages", "expected a non-empty array of {\"role\", \"content\"}");
  for (size_t i = 0; i < messages->size(); ++i) {
    const Json& message = (*messages)[i];
    const std::string field = "messages[" + std::to_string(i) + "]";
    if (!message.is_object()) return invalid(field, "expected an object with \"role\" and \"content\"");
    const Json* role = find(message, "role");
    if (!role || (*role != "user" && *role != "assistant"))
      return invalid(field + ".role",
                     "expected \"user\" or \"assistant\" (the system prompt is the request's \"system\")");
    const Json* content = find(message, "content");
    if (!content || !(content->is_string() || content->is_array()))
      return invalid(field + ".content", "expected a string or a list of content blocks");
    const bool last = i + 1 == messages->size();
    // (A JSON string is never empty() to nlohmann: that counts elements.)
    const bool empty =
        content->is_string() ? content->get_ref<const std::string&>().empty() : content->empty();
    if (empty && !(last && *role == "assistant"))
      return invalid(field + ".content",
                     "is empty: every message needs content, but for a final assistant message (then no "
                     "prefill)");
    if (*role == "user") {
      if (content->is_string())
        conversation->add(Json{{"role", "user"}, {"content", *content}}, field);
      else if (Status s = add_user_blocks(*content, field, *conversation); !s.ok())
        return s;
      continue;
    }
    Json turn{{"role", "assistant"}, {"content", *content}};
    if (content->is_array())
      if (Status s = assistant_turn(*content, field, &turn); !s.ok()) return s;
    if (!last) {
      conversation->add(std::move(turn), field);
      continue;
    }
    // A last message of the assistant's is a prefill: the reply continues it (joined to the turn
    // before it, if that was the assistant's too). One with no text is none, and is left out (an
    // empty turn closed in the prompt would leave the model nothing to continue).
    if (turn.contains("tool_calls") || !blank(turn["content"])) conversation->add(std::move(turn), field);
    Json& final_turn = conversation->messages.back();
    if (final_turn["role"] != "assistant") continue;
    if (final_turn.contains("tool_calls"))
      return invalid(field,
                     "the conversation ends with the assistant's tool_use blocks: send their tool_result "
                     "blocks in a user message after them");
    conversation->prefill = true;
  }
  return Status::Ok();
}

// Messages' custom tools ({"name", "description", "input_schema"}) as chat's function tools.
Status chat_tools(const Json& tools, Json* out) {
  if (!tools.is_array()) return invalid("tools", "expected an array of tools");
  *out = Json::array();
  for (size_t i = 0; i < tools.size(); ++i) {
    const Json& tool = tools[i];
    const std::string field = "tools[" + std::to_string(i) + "]";
    if (!tool.is_object()) return invalid(field, "expected an object");
    if (const Json* type = find(tool, "type"); type && *type != "custom")
      return invalid(field + ".type",
                     (type->is_string() ? "\"" + type->get<std::string>() + "\"" : type->dump()) +
                         ": kvserve runs no Anthropic-defined or server tools; describe the tool as a "
                         "custom one (name, description, input_schema)");
    // The function's fields in the client's order, as the chat template renders them; the input
    // schema is chat's parameters, cache_control (the automatic prefix cache makes it moot) dropped.
    Json function = Json::object();
    for (const auto& [key, value] : tool.items())
      if (key != "type" && key != "cache_control" && !value.is_null())
        function[key == "input_schema" ? "parameters" : key] = value;
    out->push_back(Json{{"type", "function"}, {"function", std::move(function)}});
  }
  return Status::Ok();
}

// tool_choice ({"type": "auto" | "any" | "tool" | "none", "name", "disable_parallel_tool_use"})
// into the chat request's tool_choice and parallel_tool_calls.
Status chat_tool_choice(const Json& choice, Json& chat) {
  const Json* type = choice.is_object() ? find(choice, "type") : nullptr;
  if (!type || !type->is_string())
    return invalid("tool_choice",
                   "expected {\"type\": \"auto\"}, {\"type\": \"any\"}, {\"type\": \"tool\", "
                   "\"name\": ...} or {\"type\": \"none\"}");
  if (const Json* serial = find(choice, "disable_parallel_tool_use")) {
    if (!serial->is_boolean())
      return invalid("tool_choice.disable_parallel_tool_use", "expected true or false");
    chat["parallel_tool_calls"] = !serial->get<bool>();
  }
  // "auto" and "none" without tools ask for nothing; chat refuses a tool choice without tools.
  const bool no_tools = !chat.contains("tools") || chat["tools"].empty();
  if (*type == "auto" || *type == "none") {
    if (!no_tools) chat["tool_choice"] = *type;
    return Status::Ok();
  }
  if (*type == "any") {
    chat["tool_choice"] = "required";
    return Status::Ok();
  }
  if (*type == "tool") {
    const Json* name = find(choice, "name");
    if (!name || !name->is_string())
      return invalid("tool_choice.name", "expected the name of one of the tools");
    chat["tool_choice"] = Json{{"type", "function"}, {"function", Json{{"name", *name}}}};
    return Status::Ok();
  }
  return invalid("tool_choice.type", "expected \"auto\", \"any\", \"tool\" or \"none\"");
}

// thinking ({"type": "enabled", "budget_tokens"}, "adaptive", "between_tools" or "disabled") as the
// chat template's enable_thinking, which templates of models that think on request read (Qwen3's,
// ...); others ignore it. The budget is not enforced: max_tokens bounds the whole reply, thinking
// included; "adaptive" and "between_tools" (when to think is left to the model) are thinking
// enabled, the model then deciding.
Status chat_thinking(const Json& thinking, Json& chat) {
  const Json* type = thinking.is_object() ? find(thinking, "type") : nullptr;
  if (!type || (*type != "enabled" && *type != "adaptive" && *type != "between_tools" && *type != "disabled"))
    return invalid("thinking.type", "expected \"enabled\", \"adaptive\", \"between_tools\" or \"disabled\"");
  if (const Json* budget = find(thinking, "budget_tokens"); budget && !budget->is_number_integer())
    return invalid("thinking.budget_tokens", "expected an integer");
  if (!chat.contains("chat_template_kwargs")) chat["chat_template_kwargs"] = Json::object();
  if (!chat["chat_template_kwargs"].contains("enable_thinking"))
    chat["chat_template_kwargs"]["enable_thinking"] = *type != "disabled";
  return Status::Ok();
}

// output_format, or output_config.format ({"type": "json_schema", "schema"}: Anthropic's
// structured outputs, under the beta's name and the later one), as chat's response_format.
Status chat_output_format(const Json& format, const std::string& field, Json& chat) {
  const Json* type = format.is_object() ? find(format, "type") : nullptr;
  const Json* schema = type && *type == "json_schema" ? find(format, "schema") : nullptr;
  if (!schema) return invalid(field, "expected {\"type\": \"json_schema\", \"schema\": {...}}");
  chat["response_format"] =
      Json{{"type", "json_schema"}, {"json_schema", Json{{"name", "output"}, {"schema", *schema}}}};
  return Status::Ok();
}

// What a Messages request cannot do here, each with what to send instead; and the chat endpoint's
// names, which this endpoint would otherwise ignore (a client ported from chat would lose its stop
// strings or its format without a word).
Status refuse_unsupported(const Json& body) {
  struct Refusal {
    const char* field;
    const char* why;
  };
  static constexpr Refusal kRefused[] = {
      {"mcp_servers", "kvserve connects to no MCP servers: run the tools in the client, as custom tools"},
      {"container", "kvserve runs no code execution containers; leave it out"},
      {"stop", "that is the OpenAI API's field; send stop_sequences"},
      {"max_completion_tokens", "that is the OpenAI API's field; send max_tokens"},
      {"response_format", "that is the OpenAI API's field; send output_format"},
      {"n", "one reply per message; send one request per sample"},
  };
  for (const Refusal& r : kRefused)
    if (find(body, r.field)) return invalid(r.field, r.why);
  return Status::Ok();
}

// The chat request (or, for count_tokens, the chat fields the prompt depends on) a Messages body
// stands for.
Status to_chat(const Json& body, bool count_tokens, Json* chat, Conversation* conversation) {
  if (Status s = refuse_unsupported(body); !s.ok()) return s;
  *chat = Json::object();
  if (Status s = read_conversation(body, conversation); !s.ok()) return s;
  (*chat)["messages"] = conversation->messages;
  if (conversation->prefill) {
    (*chat)["add_generation_prompt"] = false;
    (*chat)["continue_final_message"] = true;
  }
  if (!count_tokens) {
    const Json* max_tokens = find(body, "max_tokens");
    if (!max_tokens)
      return invalid("max_tokens", "required: the most tokens the reply may have (a positive integer)");
    if (!max_tokens->is_number_integer() || max_tokens->get<int64_t>() < 1)
      return invalid("max_tokens", "expected a positive integer");
    (*chat)["max_tokens"] = *max_tokens;
    if (const Json* stop_sequences = find(body, "stop_sequences")) {
      if (!stop_sequences->is_array()) return invalid("stop_sequences", "expected an array of strings");
      (*chat)["stop"] = *stop_sequences;
    }
  }
  if (const Json* tools = find(body, "tools"))
    if (Status s = chat_tools(*tools, &(*chat)["tools"]); !s.ok()) return s;
  if (const Json* kwargs = find(body, "chat_template_kwargs")) {
    if (!kwargs->is_object()) return invalid("chat_template_kwargs", "expected an object");
    (*chat)["chat_template_kwargs"] = *kwargs;
  }
  if (const Json* thinking = find(body, "thinking"))
    if (Status s = chat_thinking(*thinking, *chat); !s.ok()) return s;
  if (count_tokens) {
    if (const Json* model = find(body, "model")) (*chat)["model"] = *model;
    return Status::Ok();
  }
  if (const Json* choice = find(body, "tool_choice"))
    if (Status s = chat_tool_choice(*choice, *chat); !s.ok()) return s;
  if (const Json* format = find(body, "output_format"))
    if (Status s = chat_output_format(*format, "output_format", *chat); !s.ok()) return s;
  if (const Json* config = find(body, "output_config")) {
    if (!config->is_object()) return invalid("output_config", "expected an object");
    // (Its effort, how hard the model thinks, has no setting here: ignored.)
    if (const Json* format = find(*config, "format")) {
      if (chat->contains("response_format"))
        return invalid("output_config.format", "send output_format or output_config.format, not both");
      if (Status s = chat_output_format(*format, "output_config.format", *chat); !s.ok()) return s;
    }
  }
  // Fields of the same name and meaning: Anthropic's, and the sampling extensions vLLM also takes.
  for (const char* key : {"model",
                          "stream",
                          "temperature",
                          "top_p",
                          "top_k",
                          "seed",
                          "min_p",
                          "repetition_penalty",
                          "presence_penalty",
                          "frequency_penalty",
                          "priority",
                          "ignore_eos",
                          "min_tokens",
                          "logit_bias",
                          "stop_token_ids",
                          "include_stop_str_in_output",
                          "skip_special_tokens",
                          "guided_json",
                          "guided_regex",
                          "guided_choice"})
    if (const Json* value = find(body, key)) (*chat)[key] = *value;
  return Status::Ok();
}

// A message of the chat parser's, which names the chat request's fields, with the names of this
// request's fields they were made from.
std::string messages_field_names(std::string message, const Conversation& conversation) {
  const auto replace_prefix = [&](std::string_view chat, std::string_view messages) {
    if (message.starts_with(chat)) {
      message.replace(0, chat.size(), messages);
      return true;
    }
    return false;
  };
  // messages[k]... -> the field chat message k came from (system, messages[i].content[j], ...)
  if (message.starts_with("messages[")) {
    const size_t close = message.find(']');
    if (close == std::string::npos) return message;
    size_t k = 0;
    for (size_t i = 9; i < close; ++i)
      k = k * 10 + static_cast<size_t>(message[i] - '0');
    if (k < conversation.origins.size()) message.replace(0, close + 1, conversation.origins[k]);
    return message;
  }
  // tools[i].function.parameters -> tools[i].input_schema, tools[i].function.x -> tools[i].x
  if (message.starts_with("tools[")) {
    if (const size_t at = message.find("].function.parameters");
        at != std::string::npos && at < message.find(':'))
      message.replace(at + 1, std::string_view(".function.parameters").size(), ".input_schema");
    else if (const size_t at = message.find("].function."); at != std::string::npos && at < message.find(':'))
      message.erase(at + 1, std::string_view(".function").size());
    return message;
  }
  // Chat's tool_choice values in the hints, as this request spells them.
  for (const auto& [chat, messages] :
       {std::pair<std::string_view, std::string_view>{
            "tool_choice \"required\" or a named function",
            "tool_choice {\"type\": \"any\"} or {\"type\": \"tool\", \"name\": ...}"},
        {"or \"none\";", "or {\"type\": \"none\"};"}})
    if (const size_t at = message.find(chat); at != std::string::npos)
      message.replace(at, chat.size(), messages);
  if (replace_prefix("tool_choice.function.name", "tool_choice.name")) return message;
  if (replace_prefix("parallel_tool_calls", "tool_choice.disable_parallel_tool_use")) return message;
  if (replace_prefix("response_format.json_schema.schema", "output_format.schema")) return message;
  if (replace_prefix("response_format", "output_format")) return message;
  if (message.starts_with("stop:") || message.starts_with("stop[")) replace_prefix("stop", "stop_sequences");
  return message;
}

Status renamed(const Status& status, const Conversation& conversation) {
  std::string message = messages_field_names(status.message(), conversation);
  return status.code() == StatusCode::kNotFound ? Status::NotFound(std::move(message))
                                                : Status::InvalidArgument(std::move(message));
}

const char* error_type(int http_status) {
  switch (http_status) {
    case 401:
      return "authentication_error";
    case 403:
      return "permission_error";
    case 404:
      return "not_found_error";
    case 413:
      return "request_too_large";
    case 429:
      return "rate_limit_error";
    case 503:  // (draining, or the engine stopped): a client retries elsewhere or later
      return "overloaded_error";
    case 504:
      return "timeout_error";
    default:
      return http_status >= 500 ? "api_error" : "invalid_request_error";
  }
}

Json error_object(int http_status, const std::string& message) {
  return Json{{"type", "error"}, {"error", Json{{"type", error_type(http_status)}, {"message", message}}}};
}

}  // namespace

Status parse_messages_request(std::string_view body, const openai::ServedApi& served,
                              openai::ParsedRequest* out) {
  Json json;
  if (Status s = openai::read_request_body(body, &json); !s.ok()) return s;
  Json chat;
  Conversation conversation;
  if (Status s = to_chat(json, /*count_tokens=*/false, &chat, &conversation); !s.ok()) return s;
  if (Status s = openai::parse_request(openai::Endpoint::kChatCompletions, chat.dump(), served, out); !s.ok())
    return renamed(s, conversation);
  return Status::Ok();
}

Status parse_count_tokens_request(std::string_view body, const openai::ServedApi& served,
                                  openai::ParsedTokenize* out) {
  Json json;
  if (Status s = openai::read_request_body(body, &json); !s.ok()) return s;
  Json chat;
  Conversation conversation;
  if (Status s = to_chat(json, /*count_tokens=*/true, &chat, &conversation); !s.ok()) return s;
  if (Status s = openai::parse_tokenize_request(chat.dump(), served, out); !s.ok())
    return renamed(s, conversation);
  return Status::Ok();
}

std::string error_body(int http_status, const std::string& message) {
  return error_object(http_status, message).dump(-1, ' ', false, Json::error_handler_t::replace);
}

MessagesReply::MessagesReply(const openai::ParsedRequest& request, const Tokenizer* tokenizer)
    : chat_(request, /*created=*/0, tokenizer), streaming_(request.stream), model_(request.model) {}

std::string MessagesReply::emit(const char* type, Json fields) {
  if (!streaming_) return {};
  Json event{{"type", type}};
  for (auto& [key, value] : fields.items())
    event[key] = std::move(value);
  return std::string("event: ") + type +
         "\ndata: " + event.dump(-1, ' ', false, Json::error_handler_t::replace) + "\n\n";
}

Json MessagesReply::usage() const {
  // Anthropic counts prompt tokens read from its cache apart from the others: a prompt's tokens are
  // input_tokens + cache_read_input_tokens (+ cache_creation_input_tokens, which kvserve's
  // automatic prefix cache never bills: 0).
  const Json chat_usage = chat_.usage();
  const uint32_t prompt = chat_usage.at("prompt_tokens").get<uint32_t>();
  const uint32_t cached = chat_usage.at("prompt_tokens_details").at("cached_tokens").get<uint32_t>();
  return Json{{"input_tokens", prompt - std::min(cached, prompt)},
              {"cache_creation_input_tokens", 0},
              {"cache_read_input_tokens", cached},
              {"output_tokens", chat_usage.at("completion_tokens")}};
}

Json MessagesReply::stop_reason() const {
  // Chat's finish reasons in Messages' terms: the token limit is max_tokens, a stop string a stop
  // sequence, a turn that made calls tool_use (whether the model chose to or tool_choice made it),
  // anything else (EOS, a stop token) the turn's end.
  if (finish_reason_.empty()) return nullptr;
  if (finish_reason_ == "length") return "max_tokens";
  if (!stop_sequence_.is_null()) return "stop_sequence";
  if (std::any_of(content_.begin(), content_.end(),
                  [](const Json& block) { return block.at("type") == "tool_use"; }))
    return "tool_use";
  return "end_turn";
}

Json MessagesReply::message() const {
  return Json{{"id", id_},
              {"type", "message"},
              {"role", "assistant"},
              {"model", model_},
              {"content", content_},
              {"stop_reason", stop_reason()},
              {"stop_sequence", stop_sequence_},
              {"usage", usage()}};
}

void MessagesReply::start(const v1::GenerateResponse& message) {
  id_ = "msg_" + message.request_id();
  started_ = true;
}

std::string MessagesReply::add_text(const char* type, const std::string& text) {
  std::string events;
  const bool thinking = std::string_view(type) == "thinking";
  if (!block_open_ || content_.back()["type"] != type) {
    events += close_block();
    // A thinking block's signature is empty: kvserve's reasoning is plain text, signed by no one
    // (and read back by no one: thinking blocks sent in a conversation are left out).
    content_.push_back(thinking ? Json{{"type", "thinking"}, {"thinking", ""}, {"signature", ""}}
                                : Json{{"type", "text"}, {"text", ""}});
    block_open_ = true;
    events +=
        emit("content_block_start", Json{{"index", content_.size() - 1}, {"content_block", content_.back()}});
  }
  Json& field = content_.back()[type];
  field = field.get<std::string>() + text;
  events += emit("content_block_delta",
                 Json{{"index", content_.size() - 1},
                      {"delta", Json{{"type", thinking ? "thinking_delta" : "text_delta"}, {type, text}}}});
  return events;
}

std::string MessagesReply::start_tool_use(int chat_index, const Json& call) {
  std::string events = close_block();
  content_.push_back(Json{{"type", "tool_use"},
                          {"id", call.at("id")},
                          {"name", call.at("function").at("name")},
                          {"input", Json::object()}});
  block_open_ = true;
  tool_block_[chat_index] = content_.size() - 1;
  events +=
      emit("content_block_start", Json{{"index", content_.size() - 1}, {"content_block", content_.back()}});
  return events + add_input_json(chat_index, call.at("function").value("arguments", ""));
}

std::string MessagesReply::add_input_json(int chat_index, const std::string& partial_json) {
  auto it = tool_block_.find(chat_index);
  if (it == tool_block_.end() || partial_json.empty()) return {};
  tool_arguments_[it->second] += partial_json;
  return emit("content_block_delta",
              Json{{"index", it->second},
                   {"delta", Json{{"type", "input_json_delta"}, {"partial_json", partial_json}}}});
}

std::string MessagesReply::close_block() {
  if (!block_open_) return {};
  block_open_ = false;
  const size_t index = content_.size() - 1;
  if (content_.back()["type"] == "tool_use") {
    // The input as an object: a call max_tokens cut off before its arguments were whole has
    // none ({}), and the message's stop_reason, max_tokens, says why. (A stream has sent its
    // partial JSON already.)
    const Json input = Json::parse(tool_arguments_[index], nullptr, /*allow_exceptions=*/false);
    content_.back()["input"] = input.is_object() ? input : Json::object();
  }
  return emit("content_block_stop", Json{{"index", index}});
}

std::string MessagesReply::consume(const Json& chunk) {
  std::string events;
  for (const Json& choice : chunk.at("choices")) {
    const Json& delta = choice.at("delta");
    if (auto reasoning = delta.find("reasoning_content"); reasoning != delta.end() && reasoning->is_string())
      events += add_text("thinking", reasoning->get<std::string>());
    if (auto content = delta.find("content"); content != delta.end() && content->is_string()) {
      const std::string& text = content->get_ref<const std::string&>();
      if (!text.empty()) events += add_text("text", text);
    }
    if (auto calls = delta.find("tool_calls"); calls != delta.end()) {
      for (const Json& call : *calls) {
        const int index = call.at("index").get<int>();
        events += call.contains("id") ? start_tool_use(index, call)
                                      : add_input_json(index, call.at("function").value("arguments", ""));
      }
    }
    if (const Json& finish = choice.at("finish_reason"); finish.is_string()) {
      finish_reason_ = finish.get<std::string>();
      const Json& stop = choice.at("stop_reason");  // the stop string (or stop token) that ended it
      stop_sequence_ = stop.is_string() ? stop : Json(nullptr);
    }
  }
  return events;
}

std::string MessagesReply::event(const v1::GenerateResponse& message) {
  // The chunk first: the first message's usage (the prompt's counts) goes into message_start.
  const std::optional<Json> chunk = chat_.chunk(message);
  std::string events;
  if (!started_) {
    start(message);
    events += emit("message_start", Json{{"message", this->message()}});
  }
  if (chunk) events += consume(*chunk);
  return events;
}

void MessagesReply::add(const v1::GenerateResponse& message) {
  if (!started_) start(message);
  if (const std::optional<Json> chunk = chat_.chunk(message)) consume(*chunk);
}

std::string MessagesReply::closing_events() {
  std::string events = close_block();
  // The usage is cumulative here, as Anthropic's: the whole reply's counts, the prompt's included
  // (message_start has the first message's).
  events += emit("message_delta",
                 Json{{"delta", Json{{"stop_reason", stop_reason()}, {"stop_sequence", stop_sequence_}}},
                      {"usage", usage()}});
  return events + emit("message_stop", Json::object());
}

std::string MessagesReply::failure_events(int http_status, const std::string& message, const std::string&) {
  const Json error = error_object(http_status, message);
  return emit("error", Json{{"error", error["error"]}});
}

std::string MessagesReply::body() {
  close_block();
  return message().dump(-1, ' ', false, Json::error_handler_t::replace);
}

}  // namespace kvserve::anthropic
