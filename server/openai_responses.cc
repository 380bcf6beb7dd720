#include "server/openai_responses.h"

#include <openssl/rand.h>

#include <algorithm>
#include <optional>
#include <stdexcept>
#include <utility>
#include <vector>

#include "engine/json_limits.h"
#include "server/request_fields.h"

namespace kvserve::openai {
namespace {

using Json = nlohmann::ordered_json;
using request_fields::find;
using request_fields::invalid;

// The text of a message's or a tool output's content: a string, or a list of text parts (joined
// by newlines, as the chat endpoint joins its parts).
Status content_text(const Json& content, const std::string& field, Json* text) {
  if (content.is_string()) {
    *text = content;
    return Status::Ok();
  }
  if (!content.is_array()) return invalid(field, "expected a string or a list of text parts");
  Json parts = Json::array();
  for (size_t j = 0; j < content.size(); ++j) {
    const Json& part = content[j];
    const std::string part_field = field + "[" + std::to_string(j) + "]";
    const Json* type = part.is_object() ? find(part, "type") : nullptr;
    const Json* part_text = part.is_object() ? find(part, "text") : nullptr;
    if (!type || !type->is_string() || (*type != "input_text" && *type != "output_text" && *type != "text"))
      return invalid(
          part_field + ".type",
          "only text parts (\"input_text\", \"output_text\") are supported: this server takes text only");
    if (!part_text || !part_text->is_string()) return invalid(part_field + ".text", "expected a string");
    parts.push_back(Json{{"type", "text"}, {"text", *part_text}});
  }
  *text = std::move(parts);
  return Status::Ok();
}

// One input item as chat messages: a message, a function call the model made (joined to the
// assistant's turn it belongs to) or a function's output (a tool message). Reasoning items are
// left out: chat templates take no such turn.
Status add_input_item(const Json& item, const std::string& field, Json& messages) {
  if (!item.is_object()) return invalid(field, "expected an object (an input item)");
  const Json* type_value = find(item, "type");
  if (type_value && !type_value->is_string()) return invalid(field + ".type", "expected a string");
  const std::string type = type_value ? type_value->get<std::string>() : "message";
  const auto string_field = [&](const char* key, std::string* out) -> Status {
    const Json* value = find(item, key);
    if (!value || !value->is_string()) return invalid(field + "." + key, "expected a string");
    *out = value->get<std::string>();
    return Status::Ok();
  };
  if (type == "message") {
    std::string role;
    if (Status s = string_field("role", &role); !s.ok()) return s;
    if (role != "user" && role != "assistant" && role != "system" && role != "developer")
      return invalid(field + ".role",
                     "\"" + role + "\" is not a role: send user, assistant, system or developer");
    const Json* content = find(item, "content");
    if (!content) return invalid(field + ".content", "expected a string or a list of text parts");
    Json text;
    if (Status s = content_text(*content, field + ".content", &text); !s.ok()) return s;
    // Chat templates know the system role; a developer message is one.
    messages.push_back(Json{{"role", role == "developer" ? "system" : role}, {"content", std::move(text)}});
    return Status::Ok();
  }
  if (type == "function_call") {
    std::string call_id, name, arguments;
    for (auto [key, out] : {std::pair{"call_id", &call_id}, {"name", &name}, {"arguments", &arguments}})
      if (Status s = string_field(key, out); !s.ok()) return s;
    // Checked here to name the Responses field (the chat parser would name its own).
    if (std::string over = json_over_limits(arguments, kMaxRequestJsonDepth, kMaxRequestJsonMembers);
        !over.empty())
      return invalid(field + ".arguments", over);
    if (arguments.empty()) arguments = "{}";  // as the chat endpoint reads it (a call with no arguments)
    if (!Json::parse(arguments, nullptr, /*allow_exceptions=*/false).is_object())
      return invalid(field + ".arguments", "expected the JSON text of an object");
    Json call{
        {"id", call_id}, {"type", "function"}, {"function", Json{{"name", name}, {"arguments", arguments}}}};
    if (messages.empty() || messages.back()["role"] != "assistant")
      messages.push_back(Json{{"role", "assistant"}, {"content", nullptr}});
    Json& turn = messages.back();
    if (!turn.contains("tool_calls")) turn["tool_calls"] = Json::array();
    turn["tool_calls"].push_back(std::move(call));
    return Status::Ok();
  }
  if (type == "function_call_output") {
    std::string call_id;
    if (Status s = string_field("call_id", &call_id); !s.ok()) return s;
    const Json* output = find(item, "output");
    if (!output) return invalid(field + ".output", "expected a string or a list of text parts");
    Json text;
    if (Status s = content_text(*output, field + ".output", &text); !s.ok()) return s;
    messages.push_back(Json{{"role", "tool"}, {"tool_call_id", call_id}, {"content", std::move(text)}});
    return Status::Ok();
  }
  if (type == "reasoning") return Status::Ok();
  return invalid(field + ".type", "\"" + type +
                                      "\" items are not supported: send message, function_call and "
                                      "function_call_output items (item_reference is not: send the item "
                                      "itself, or previous_response_id)");
}

// `length` random letters and digits after `prefix`.
std::string random_id(const char* prefix, int length, std::mt19937_64& rng) {
  static constexpr char kAlphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789";
  std::string id = prefix;
  for (int i = 0; i < length; ++i)
    id += kAlphabet[std::uniform_int_distribution<size_t>(0, sizeof(kAlphabet) - 2)(rng)];
  return id;
}

// An input item (add_input_item took it) as its conversation keeps it, as OpenAI's API lists them:
// its type and an id made explicit (GET .../input_items lists them by id), a message's text content
// as a list of parts. Reasoning items are not kept (templates take none): nullopt.
std::optional<Json> stored_input_item(Json item, std::mt19937_64& rng) {
  if (!item.contains("type")) item["type"] = "message";
  const std::string type = item["type"].get<std::string>();
  if (type == "reasoning") return std::nullopt;
  if (!item.contains("id") || !item["id"].is_string())
    item["id"] = random_id(type == "function_call"          ? "fc_"
                           : type == "function_call_output" ? "fco_"
                                                            : "msg_",
                           24, rng);
  if (type == "message" && item["content"].is_string())
    item["content"] = Json::array({Json{{"type", item["role"] == "assistant" ? "output_text" : "input_text"},
                                        {"text", std::move(item["content"])}}});
  return item;
}

// Responses' function tools ({"type": "function", "name", "parameters", ...}) as chat's ({"type":
// "function", "function": {...}}).
Status chat_tools(const Json& tools, Json* out) {
  if (!tools.is_array()) return invalid("tools", "expected an array of function tools");
  *out = Json::array();
  for (size_t i = 0; i < tools.size(); ++i) {
    const Json& tool = tools[i];
    const std::string field = "tools[" + std::to_string(i) + "]";
    if (!tool.is_object()) return invalid(field, "expected an object");
    const Json* type = find(tool, "type");
    if (!type || *type != "function")
      return invalid(field + ".type", "only \"function\" tools are supported (kvserve runs no hosted tools)");
    // The function's fields in the client's order, as the chat template renders them.
    Json function = Json::object();
    for (const auto& [key, value] : tool.items())
      if (key != "type" && !value.is_null()) function[key] = value;
    if (!function.contains("name")) return invalid(field + ".name", "expected the function's name");
    out->push_back(Json{{"type", "function"}, {"function", std::move(function)}});
  }
  return Status::Ok();
}

Status chat_tool_choice(const Json& choice, Json* out) {
  if (choice.is_string()) {
    *out = choice;
    return Status::Ok();
  }
  const Json* type = choice.is_object() ? find(choice, "type") : nullptr;
  const Json* name = choice.is_object() ? find(choice, "name") : nullptr;
  if (!type || *type != "function" || !name || !name->is_string())
    return invalid("tool_choice",
                   "expected \"none\", \"auto\", \"required\" or {\"type\": \"function\", \"name\": ...}");
  *out = Json{{"type", "function"}, {"function", Json{{"name", *name}}}};
  return Status::Ok();
}

// text.format as chat's response_format (nothing for plain text).
Status chat_response_format(const Json& text, Json& chat) {
  if (!text.is_object()) return invalid("text", "expected an object with a \"format\"");
  const Json* format = find(text, "format");
  if (!format) return Status::Ok();
  const Json* type = format->is_object() ? find(*format, "type") : nullptr;
  if (type && *type == "text") return Status::Ok();
  if (type && *type == "json_object") {
    chat["response_format"] = Json{{"type", "json_object"}};
    return Status::Ok();
  }
  if (type && *type == "json_schema") {
    Json schema = Json::object();
    for (const char* key : {"name", "description", "schema", "strict"})
      if (const Json* value = find(*format, key)) schema[key] = *value;
    chat["response_format"] = Json{{"type", "json_schema"}, {"json_schema", std::move(schema)}};
    return Status::Ok();
  }
  return invalid("text.format.type", "expected \"text\", \"json_object\" or \"json_schema\"");
}

// Two system messages' contents (strings, or lists of text parts) as one, a blank line between.
Json join_texts(const Json& first, const Json& second) {
  const auto text = [](const Json& content) {
    if (content.is_string()) return content.get<std::string>();
    std::string joined;
    for (const Json& part : content)
      joined += (joined.empty() ? "" : "\n") + part["text"].get<std::string>();
    return joined;
  };
  return text(first) + "\n\n" + text(second);
}

// A message of the chat parser's, which names the chat request's fields, with the names this
// request used for them (the messages it checks are built from this request's fields).
std::string responses_field_names(std::string message) {
  const auto replace_prefix = [&](std::string_view chat, std::string_view responses) {
    if (message.starts_with(chat)) message.replace(0, chat.size(), responses);
  };
  // tools[i].function.x -> tools[i].x
  if (message.starts_with("tools[")) {
    if (const size_t at = message.find("].function."); at != std::string::npos && at < message.find(':'))
      message.erase(at + 1, std::string_view(".function").size());
  }
  replace_prefix("tool_choice.function.name", "tool_choice.name");
  replace_prefix("response_format.json_schema.", "text.format.");
  replace_prefix("response_format", "text.format");
  replace_prefix("max_tokens", "max_output_tokens");
  return message;
}

// What the Responses API cannot do here, each with what to send instead.
Status refuse_unsupported(const Json& body) {
  struct Refusal {
    const char* field;
    const char* why;
  };
  static constexpr Refusal kRefused[] = {
      {"conversation",
       "kvserve keeps no conversation objects: continue a stored response with previous_response_id, "
       "or send the whole conversation in input"},
      {"prompt", "kvserve stores no prompt templates: send the instructions and input themselves"},
      {"max_tool_calls", "not supported; leave it out (parallel_tool_calls false allows one call)"},
  };
  for (const Refusal& r : kRefused)
    if (find(body, r.field)) return invalid(r.field, r.why);
  // The chat endpoint's names, which this endpoint would otherwise ignore (a client ported from
  // chat would lose its token limit or its format without a word).
  static constexpr Refusal kChatNames[] = {
      {"messages", "that is /v1/chat/completions' field; send the conversation as input (and instructions)"},
      {"max_tokens", "that is /v1/chat/completions' field; send max_output_tokens"},
      {"max_completion_tokens", "that is /v1/chat/completions' field; send max_output_tokens"},
      {"response_format", "that is /v1/chat/completions' field; send text.format"},
      {"n", "one output per response; send one request per sample"},
      {"logprobs", "logprobs are not returned by /v1/responses here; use /v1/chat/completions"},
  };
  for (const Refusal& r : kChatNames)
    if (find(body, r.field)) return invalid(r.field, r.why);
  if (const Json* background = find(body, "background"); background && *background != false)
    return invalid("background", "not supported: kvserve answers in the foreground; leave it out");
  // Encrypted reasoning is asked for by clients that replay it; kvserve's reasoning items are plain
  // text, with no encrypted copy to add. Anything else would need output kvserve does not make.
  if (const Json* include = find(body, "include")) {
    if (!include->is_array()) return invalid("include", "expected an array");
    for (const Json& value : *include)
      if (value != "reasoning.encrypted_content")
        return invalid("include",
                       (value.is_string() ? "\"" + value.get<std::string>() + "\"" : value.dump()) +
                           ": kvserve adds nothing to a response's output (no logprobs, sources or "
                           "images); leave it out");
  }
  if (const Json* truncation = find(body, "truncation"); truncation && *truncation != "disabled")
    return invalid("truncation",
                   "only \"disabled\": a conversation longer than the context is refused, "
                   "not cut; send a shorter one");
  if (const Json* top_logprobs = find(body, "top_logprobs"); top_logprobs && *top_logprobs != 0)
    return invalid("top_logprobs",
                   "logprobs are not returned by /v1/responses here; use /v1/chat/completions");
  return Status::Ok();
}

}  // namespace

Status parse_responses_request(std::string_view body, const ServedApi& served,
                               const FindStoredResponse& find_stored, ParsedRequest* out, Json* echo,
                               ResponsesTurn* turn) {
  Json json;
  if (Status s = read_request_body(body, &json); !s.ok()) return s;
  if (Status s = refuse_unsupported(json); !s.ok()) return s;
  *turn = ResponsesTurn{};
  if (const Json* store = find(json, "store")) {
    if (!store->is_boolean()) return invalid("store", "expected true or false");
    turn->store = store->get<bool>();
  }
  Json chat = Json::object();
  Json messages = Json::array();
  // The instructions are this request's own: a previous response's are not carried over (as
  // OpenAI's API has it), its conversation's items are.
  if (const Json* instructions = find(json, "instructions")) {
    if (!instructions->is_string()) return invalid("instructions", "expected a string");
    messages.push_back(Json{{"role", "system"}, {"content", *instructions}});
  }
  const Json* previous_id = find(json, "previous_response_id");
  if (previous_id) {
    if (!previous_id->is_string())
      return invalid("previous_response_id", "expected a string (a response's id)");
    if (!find_stored)
      return invalid("previous_response_id",
                     "this server stores no responses (it runs with --responses-store-mb 0): send the whole "
                     "conversation in input");
    const std::string id = previous_id->get<std::string>();
    const std::shared_ptr<const ResponseStore::Stored> previous = find_stored(id);
    if (!previous)
      return invalid("previous_response_id",
                     "no response \"" + id +
                         "\" is stored for this API key: it was sent with store false, deleted, or "
                         "evicted for newer ones (--responses-store-mb), or another replica or an earlier "
                         "run of the server stored it; send the whole conversation in input");
    for (size_t i = 0; i < previous->items.size(); ++i) {
      // Checked when they were stored (conversation_items); a failure here names where they came from.
      if (Status s = add_input_item(previous->items[i],
                                    "previous_response_id's items[" + std::to_string(i) + "]", messages);
          !s.ok())
        return s;
      turn->input_items.push_back(previous->items[i]);
    }
  }
  thread_local std::mt19937_64 id_rng{std::random_device{}()};
  const Json* input = find(json, "input");
  if (input && input->is_string()) {
    messages.push_back(Json{{"role", "user"}, {"content", *input}});
    turn->input_items.push_back(
        *stored_input_item(Json{{"type", "message"}, {"role", "user"}, {"content", *input}}, id_rng));
  } else if (input && input->is_array()) {
    for (size_t i = 0; i < input->size(); ++i) {
      if (Status s = add_input_item((*input)[i], "input[" + std::to_string(i) + "]", messages); !s.ok())
        return s;
      if (std::optional<Json> item = stored_input_item((*input)[i], id_rng))
        turn->input_items.push_back(std::move(*item));
    }
  } else {
    return invalid("input", "expected a string or a list of input items");
  }
  if (messages.empty()) return invalid("input", "holds no message; send at least one");
  // Instructions and the system (developer) messages that lead the input are one system message:
  // many chat templates take only one, and only first.
  while (messages.size() > 1 && messages[0]["role"] == "system" && messages[1]["role"] == "system") {
    Json first = std::move(messages[0]["content"]), second = std::move(messages[1]["content"]);
    messages.erase(messages.begin());
    messages[0]["content"] = join_texts(first, second);
  }
  chat["messages"] = std::move(messages);
  if (const Json* max_output_tokens = find(json, "max_output_tokens")) {
    if (!max_output_tokens->is_number_integer() || max_output_tokens->get<int64_t>() < 1)
      return invalid("max_output_tokens", "expected a positive integer");
    chat["max_tokens"] = *max_output_tokens;
  }
  if (const Json* tools = find(json, "tools"))
    if (Status s = chat_tools(*tools, &chat["tools"]); !s.ok()) return s;
  if (const Json* tool_choice = find(json, "tool_choice")) {
    // "auto" and "none" without tools ask for nothing (clients send "auto" always); chat refuses a
    // tool choice without tools.
    const bool no_tools = !chat.contains("tools") || chat["tools"].empty();
    if (!(no_tools && (*tool_choice == "auto" || *tool_choice == "none")))
      if (Status s = chat_tool_choice(*tool_choice, &chat["tool_choice"]); !s.ok()) return s;
  }
  if (const Json* text = find(json, "text"))
    if (Status s = chat_response_format(*text, chat); !s.ok()) return s;
  // Fields of the same name and meaning, OpenAI's and the sampling extensions vLLM also takes here.
  for (const char* key : {"model", "stream", "temperature", "top_p", "parallel_tool_calls", "seed", "top_k",
                          "min_p", "repetition_penalty", "presence_penalty", "frequency_penalty", "stop",
                          "priority", "ignore_eos", "min_tokens", "logit_bias", "chat_template_kwargs"})
    if (const Json* value = find(json, key)) chat[key] = *value;
  if (Status s = parse_request(Endpoint::kChatCompletions, chat.dump(), served, out); !s.ok()) {
    std::string message = responses_field_names(s.message());
    return s.code() == StatusCode::kNotFound ? Status::NotFound(std::move(message))
                                             : Status::InvalidArgument(std::move(message));
  }

  *echo = Json::object();
  for (const char* key :
       {"instructions", "max_output_tokens", "metadata", "parallel_tool_calls", "previous_response_id",
        "temperature", "text", "tool_choice", "tools", "top_p", "user"})
    if (const Json* value = find(json, key)) (*echo)[key] = *value;
  return Status::Ok();
}

Json conversation_items(Json input_items, const Json& output) {
  for (const Json& item : output) {
    if (item.value("type", "") == "reasoning") continue;
    // A call cut off by max_output_tokens before its arguments were whole is one no template can
    // take: the turn would be refused, not continued.
    Json scratch = Json::array();
    if (add_input_item(item, "output", scratch).ok()) input_items.push_back(item);
  }
  return input_items;
}

std::string new_stored_response_id() {
  // From OpenSSL's generator, not a seeded std::mt19937: a Mersenne twister's state can be worked
  // out from enough of its outputs, and ids of other clients' responses with it.
  static constexpr char kAlphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789";
  unsigned char bytes[32];
  if (RAND_bytes(bytes, sizeof bytes) != 1) throw std::runtime_error("OpenSSL's RAND_bytes failed");
  std::string id = "resp_";
  for (const unsigned char byte : bytes)
    id += kAlphabet[byte % (sizeof(kAlphabet) - 1)];  // 5.2 bits a character, 166 in all
  return id;
}

ResponsesReply::ResponsesReply(const ParsedRequest& request, Json echo, int64_t created,
                               const Tokenizer* tokenizer, std::string id, OnComplete on_complete)
    : chat_(request, created, tokenizer),
      echo_(std::move(echo)),
      streaming_(request.stream),
      created_(created),
      model_(request.model),
      id_(std::move(id)),
      on_complete_(std::move(on_complete)) {}

std::string ResponsesReply::new_id(const char* prefix) {
  return random_id(prefix, 24, id_rng_);
}

std::string ResponsesReply::emit(const char* type, Json fields) {
  if (!streaming_) return {};
  Json event{{"type", type}, {"sequence_number", sequence_++}};
  for (auto& [key, value] : fields.items())
    event[key] = std::move(value);
  return std::string("event: ") + type +
         "\ndata: " + event.dump(-1, ' ', false, Json::error_handler_t::replace) + "\n\n";
}

Json ResponsesReply::response(const char* status) const {
  const auto echoed = [&](const char* key, Json fallback) {
    auto it = echo_.find(key);
    return it == echo_.end() ? fallback : *it;
  };
  const bool done = std::string_view(status) == "completed" || std::string_view(status) == "incomplete";
  Json usage = nullptr;
  if (done) {
    const Json chat_usage = chat_.usage();
    usage = Json{{"input_tokens", chat_usage["prompt_tokens"]},
                 {"input_tokens_details",
                  Json{{"cached_tokens", chat_usage["prompt_tokens_details"]["cached_tokens"]}}},
                 {"output_tokens", chat_usage["completion_tokens"]},
                 {"output_tokens_details", Json{{"reasoning_tokens", 0}}},
                 {"total_tokens", chat_usage["total_tokens"]}};
  }
  return Json{{"id", id_},
              {"object", "response"},
              {"created_at", created_},
              {"status", status},
              {"background", false},
              {"error", nullptr},
              {"incomplete_details",
               std::string_view(status) == "incomplete" ? Json{{"reason", "max_output_tokens"}} : Json()},
              {"instructions", echoed("instructions", nullptr)},
              {"max_output_tokens", echoed("max_output_tokens", nullptr)},
              {"model", model_},
              {"output", output_},
              {"parallel_tool_calls", echoed("parallel_tool_calls", true)},
              {"previous_response_id", echoed("previous_response_id", nullptr)},
              {"reasoning", Json{{"effort", nullptr}, {"summary", nullptr}}},
              {"store", echoed("store", false)},
              {"temperature", echoed("temperature", 1.0)},
              {"text", echoed("text", Json{{"format", Json{{"type", "text"}}}})},
              {"tool_choice", echoed("tool_choice", "auto")},
              {"tools", echoed("tools", Json::array())},
              {"top_p", echoed("top_p", 1.0)},
              {"truncation", "disabled"},
              {"usage", std::move(usage)},
              {"user", echoed("user", nullptr)},
              {"metadata", echoed("metadata", Json::object())}};
}

std::string ResponsesReply::open_message() {
  std::string events = close_item("completed");
  output_.push_back(Json{{"id", new_id("msg_")},
                         {"type", "message"},
                         {"status", "in_progress"},
                         {"role", "assistant"},
                         {"content", Json::array()}});
  item_open_ = true;
  Json item = output_.back();
  const Json part{
      {"type", "output_text"}, {"text", ""}, {"annotations", Json::array()}, {"logprobs", Json::array()}};
  output_.back()["content"].push_back(part);
  events += emit("response.output_item.added",
                 Json{{"output_index", output_.size() - 1}, {"item", std::move(item)}});
  events += emit("response.content_part.added", Json{{"item_id", output_.back()["id"]},
                                                     {"output_index", output_.size() - 1},
                                                     {"content_index", 0},
                                                     {"part", part}});
  return events;
}

std::string ResponsesReply::add_text(const std::string& text) {
  std::string events;
  if (!item_open_ || output_.back()["type"] != "message") events += open_message();
  Json& part = output_.back()["content"][0];
  part["text"] = part["text"].get<std::string>() + text;
  events += emit("response.output_text.delta", Json{{"item_id", output_.back()["id"]},
                                                    {"output_index", output_.size() - 1},
                                                    {"content_index", 0},
                                                    {"delta", text},
                                                    {"logprobs", Json::array()}});
  return events;
}

std::string ResponsesReply::add_reasoning(const std::string& text) {
  std::string events;
  if (!item_open_ || output_.back()["type"] != "reasoning") {
    events += close_item("completed");
    output_.push_back(Json{{"id", new_id("rs_")},
                           {"type", "reasoning"},
                           {"status", "in_progress"},
                           {"summary", Json::array()},
                           {"content", Json::array()}});
    item_open_ = true;
    Json item = output_.back();
    output_.back()["content"].push_back(Json{{"type", "reasoning_text"}, {"text", ""}});
    events += emit("response.output_item.added",
                   Json{{"output_index", output_.size() - 1}, {"item", std::move(item)}});
  }
  Json& part = output_.back()["content"][0];
  part["text"] = part["text"].get<std::string>() + text;
  events += emit("response.reasoning_text.delta", Json{{"item_id", output_.back()["id"]},
                                                       {"output_index", output_.size() - 1},
                                                       {"content_index", 0},
                                                       {"delta", text}});
  return events;
}

std::string ResponsesReply::finish_output() {
  const char* status = incomplete() ? "incomplete" : "completed";
  // A reply with neither text nor calls is still a message, an empty one (as OpenAI's): clients
  // look for the assistant's message or a call in every response.
  const bool answered = std::any_of(output_.begin(), output_.end(),
                                    [](const Json& item) { return item["type"] != "reasoning"; });
  if (answered) return close_item(status);
  // (Reasoning cut off at the limit is incomplete too.)
  std::string events = close_item(status);
  events += open_message();
  return events + close_item(status);
}

std::string ResponsesReply::start_call(int chat_index, const Json& call) {
  std::string events = close_item("completed");
  output_.push_back(Json{{"id", new_id("fc_")},
                         {"type", "function_call"},
                         {"status", "in_progress"},
                         {"arguments", ""},
                         {"call_id", call["id"]},
                         {"name", call["function"]["name"]}});
  item_open_ = true;
  call_item_[chat_index] = output_.size() - 1;
  events += emit("response.output_item.added",
                 Json{{"output_index", output_.size() - 1}, {"item", output_.back()}});
  return events + add_arguments(chat_index, call["function"].value("arguments", ""));
}

std::string ResponsesReply::add_arguments(int chat_index, const std::string& arguments) {
  auto it = call_item_.find(chat_index);
  if (it == call_item_.end() || arguments.empty()) return {};
  Json& item = output_[it->second];
  item["arguments"] = item["arguments"].get<std::string>() + arguments;
  return emit("response.function_call_arguments.delta",
              Json{{"item_id", item["id"]}, {"output_index", it->second}, {"delta", arguments}});
}

std::string ResponsesReply::close_item(const char* status) {
  if (!item_open_) return {};
  item_open_ = false;
  const size_t index = output_.size() - 1;
  Json& item = output_.back();
  item["status"] = status;
  std::string events;
  if (item["type"] == "reasoning") {
    events += emit("response.reasoning_text.done", Json{{"item_id", item["id"]},
                                                        {"output_index", index},
                                                        {"content_index", 0},
                                                        {"text", item["content"][0]["text"]}});
  } else if (item["type"] == "message") {
    const Json& part = item["content"][0];
    events += emit("response.output_text.done", Json{{"item_id", item["id"]},
                                                     {"output_index", index},
                                                     {"content_index", 0},
                                                     {"text", part["text"]},
                                                     {"logprobs", Json::array()}});
    events +=
        emit("response.content_part.done",
             Json{{"item_id", item["id"]}, {"output_index", index}, {"content_index", 0}, {"part", part}});
  } else {
    events += emit("response.function_call_arguments.done", Json{{"item_id", item["id"]},
                                                                 {"output_index", index},
                                                                 {"name", item["name"]},
                                                                 {"arguments", item["arguments"]}});
  }
  return events + emit("response.output_item.done", Json{{"output_index", index}, {"item", item}});
}

std::string ResponsesReply::consume(const Json& chunk) {
  // A chat chunk's content comes before its calls: text the model wrote after a call, arriving in
  // the call's own chunk (as at the end of a reply), joins the message before the call. Chat's
  // delta shape cannot say otherwise, and the text is all there.
  std::string events;
  for (const Json& choice : chunk["choices"]) {
    const Json& delta = choice["delta"];
    if (auto reasoning = delta.find("reasoning_content"); reasoning != delta.end() && reasoning->is_string())
      events += add_reasoning(reasoning->get<std::string>());
    // (A JSON string is never empty() to nlohmann: that counts elements.)
    if (auto content = delta.find("content"); content != delta.end() && content->is_string()) {
      const std::string& text = content->get_ref<const std::string&>();
      if (!text.empty()) events += add_text(text);
    }
    if (auto calls = delta.find("tool_calls"); calls != delta.end()) {
      for (const Json& call : *calls) {
        const int index = call["index"].get<int>();
        events += call.contains("id") ? start_call(index, call)
                                      : add_arguments(index, call["function"].value("arguments", ""));
      }
    }
    if (!choice["finish_reason"].is_null()) finish_reason_ = choice["finish_reason"].get<std::string>();
  }
  return events;
}

std::string ResponsesReply::event(const v1::GenerateResponse& message) {
  std::string events;
  if (sequence_ == 0) {  // the first message
    if (id_.empty()) id_ = "resp_" + message.request_id();
    events += emit("response.created", Json{{"response", response("in_progress")}});
    events += emit("response.in_progress", Json{{"response", response("in_progress")}});
  }
  if (const std::optional<Json> chunk = chat_.chunk(message)) events += consume(*chunk);
  return events;
}

void ResponsesReply::add(const v1::GenerateResponse& message) {
  if (id_.empty()) id_ = "resp_" + message.request_id();
  if (const std::optional<Json> chunk = chat_.chunk(message)) consume(*chunk);
}

std::string ResponsesReply::closing_events() {
  std::string events = finish_output();
  Json whole = response(incomplete() ? "incomplete" : "completed");
  if (on_complete_) on_complete_(whole);
  return events + emit(incomplete() ? "response.incomplete" : "response.completed",
                       Json{{"response", std::move(whole)}});
}

std::string ResponsesReply::failure_events(int http_status, const std::string& message,
                                           const std::string& code) {
  // OpenAI's codes where a client decides on them (whether to retry), the gRPC one's name else.
  const std::string error_code = http_status == 429   ? "rate_limit_exceeded"
                                 : http_status >= 500 ? "server_error"
                                                      : code;
  Json failed = response("failed");
  failed["error"] = Json{{"code", error_code}, {"message", message}};
  std::string events = emit("error", Json{{"code", error_code}, {"message", message}, {"param", nullptr}});
  return events + emit("response.failed", Json{{"response", std::move(failed)}});
}

std::string ResponsesReply::body() {
  finish_output();
  const Json whole = response(incomplete() ? "incomplete" : "completed");
  if (on_complete_) on_complete_(whole);
  return whole.dump(-1, ' ', false, Json::error_handler_t::replace);
}

}  // namespace kvserve::openai
