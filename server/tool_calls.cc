#include "server/tool_calls.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cctype>
#include <span>
#include <utility>

#include "engine/json_limits.h"
#include "server/text_markers.h"

namespace kvserve {
namespace {

using Json = nlohmann::ordered_json;

constexpr std::string_view kHermesOpen = "<tool_call>";
constexpr std::string_view kHermesClose = "</tool_call>";
constexpr std::string_view kPythonTag = "<|python_tag|>";
// What Llama 3.2's template (which has no <|python_tag|>) and 3.1's ask of the model.
constexpr std::string_view kLlama3JsonInstruction = "\"parameters\": dictionary of argument name";
// Qwen3-Coder's calls are XML inside the same marker (<tool_call><function=f><parameter=...>),
// which the hermes reader would not read.
constexpr std::string_view kXmlFunction = "<function=";
constexpr std::string_view kMistralCalls = "[TOOL_CALLS]";
constexpr std::string_view kMistralArgs = "[ARGS]";
constexpr std::string_view kMistralCallId = "[CALL_ID]";
constexpr std::string_view kGraniteToken = "<|tool_call|>";  // Granite 3.x (vLLM also takes kHermesOpen)
constexpr int kMaxCallDepth = 64;
constexpr size_t kMaxCallMembers = 1024;

// The model's text read as JSON; nullopt when it is not JSON, or nests or spreads more than a
// call's arguments need (the parser and dump() recurse: a reply of "[[[[..." must not reach them).
std::optional<Json> parse_json(std::string_view text) {
  if (!json_over_limits(text, kMaxCallDepth, kMaxCallMembers).empty()) return std::nullopt;
  Json json = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded()) return std::nullopt;
  return json;
}

std::string dump(const Json& json) {
  return json.dump(-1, ' ', false, Json::error_handler_t::replace);
}

struct Call {
  std::string name;
  std::string arguments;  // JSON text of an object
};

// {"name": "f", "<arguments_key>": {...}}, the arguments under `arguments` or `parameters`.
std::optional<Call> read_call(const Json& json) {
  if (!json.is_object()) return std::nullopt;
  auto name = json.find("name");
  if (name == json.end() || !name->is_string() || name->get<std::string>().empty()) return std::nullopt;
  auto arguments = json.find("arguments");
  if (arguments == json.end()) arguments = json.find("parameters");
  if (arguments == json.end() || !arguments->is_object()) return std::nullopt;
  return Call{name->get<std::string>(), dump(*arguments)};
}

// Where the JSON object beginning at text[start] ('{') ends (one past its '}'), or npos when it
// does not end in `text`.
size_t object_end(std::string_view text, size_t start) {
  int depth = 0;
  const size_t end = scan_json_structure(text, start, [&](char c, size_t) {
    if (c == '{' || c == '[') ++depth;
    if (c == '}' || c == ']') --depth;
    return depth > 0;
  });
  return end < text.size() ? end + 1 : std::string_view::npos;
}

// Llama 3 JSON calls: [<|python_tag|>]{...}[; {...}]..., with optional whitespace.
std::optional<std::vector<Call>> read_llama3_calls(std::string_view text) {
  size_t at = skip_layout_space(text, 0);
  if (text.substr(at, kPythonTag.size()) == kPythonTag) at = skip_layout_space(text, at + kPythonTag.size());
  std::vector<Call> calls;
  while (true) {
    if (at >= text.size() || text[at] != '{') return std::nullopt;
    const size_t end = object_end(text, at);
    if (end == std::string_view::npos) return std::nullopt;
    std::optional<Json> json = parse_json(text.substr(at, end - at));
    std::optional<Call> call = json ? read_call(*json) : std::nullopt;
    if (!call) return std::nullopt;
    calls.push_back(std::move(*call));
    at = skip_layout_space(text, end);
    if (at == text.size()) return calls;
    if (text[at] != ';') return std::nullopt;
    at = skip_layout_space(text, at + 1);
    if (at == text.size()) return calls;  // a trailing ';'
  }
}

// A function name as Mistral's models write one after [TOOL_CALLS]: anything else there is text.
bool is_function_name(std::string_view name) {
  return !name.empty() && name.size() <= 256 && std::all_of(name.begin(), name.end(), [](unsigned char c) {
    return std::isalnum(c) || c == '_' || c == '-' || c == '.';
  });
}

// A Mistral call's arguments: an object, or (as some of the models write them) a JSON string that
// holds one; none at all are {}.
std::optional<std::string> mistral_arguments(const Json* arguments) {
  if (!arguments) return "{}";
  if (arguments->is_object()) return dump(*arguments);
  if (!arguments->is_string()) return std::nullopt;
  std::optional<Json> inner = parse_json(arguments->get<std::string>());
  if (!inner || !inner->is_object()) return std::nullopt;
  return dump(*inner);
}

// Mistral's calls, the text after the first [TOOL_CALLS]: a JSON array of calls, or
// name[CALL_ID]id[ARGS]{...} (the id optional) with each further call after its own [TOOL_CALLS].
// Text after the calls is `rest` (models sometimes go on writing).
struct MistralCalls {
  std::vector<Call> calls;
  std::string_view rest;
};
std::optional<MistralCalls> read_mistral_calls(std::string_view text) {
  MistralCalls out;
  size_t at = skip_layout_space(text, 0);
  if (at < text.size() && text[at] == '[') {
    const size_t end = object_end(text, at);
    if (end == std::string_view::npos) return std::nullopt;
    std::optional<Json> json = parse_json(text.substr(at, end - at));
    if (!json || !json->is_array() || json->empty()) return std::nullopt;
    for (const Json& item : *json) {
      if (!item.is_object()) return std::nullopt;
      const auto name = item.find("name");
      if (name == item.end() || !name->is_string() || !is_function_name(name->get<std::string>()))
        return std::nullopt;
      const auto arguments = item.find("arguments");
      std::optional<std::string> args = mistral_arguments(arguments == item.end() ? nullptr : &*arguments);
      if (!args) return std::nullopt;
      out.calls.push_back(Call{name->get<std::string>(), std::move(*args)});
    }
    out.rest = text.substr(end);
    return out;
  }
  while (true) {
    const size_t args = text.find(kMistralArgs, at);
    if (args == std::string_view::npos) return std::nullopt;
    std::string_view name = text.substr(at, args - at);
    name = name.substr(0, name.find(kMistralCallId));  // the id the model gave: the reply's are its own
    while (!name.empty() && is_layout_space(name.back()))
      name.remove_suffix(1);
    if (!is_function_name(name)) return std::nullopt;
    const size_t open = skip_layout_space(text, args + kMistralArgs.size());
    if (open >= text.size() || text[open] != '{') return std::nullopt;
    const size_t end = object_end(text, open);
    if (end == std::string_view::npos) return std::nullopt;
    std::optional<Json> arguments = parse_json(text.substr(open, end - open));
    if (!arguments || !arguments->is_object()) return std::nullopt;
    out.calls.push_back(Call{std::string(name), dump(*arguments)});
    at = skip_layout_space(text, end);
    if (text.substr(at, kMistralCalls.size()) != kMistralCalls) {
      out.rest = text.substr(end);
      return out;
    }
    at = skip_layout_space(text, at + kMistralCalls.size());
  }
}

// tool_choice "required": a non-empty JSON array of calls.
std::optional<std::vector<Call>> read_call_array(std::string_view text) {
  std::optional<Json> json = parse_json(text);
  if (!json || !json->is_array() || json->empty()) return std::nullopt;
  std::vector<Call> calls;
  for (const Json& item : *json) {
    std::optional<Call> call = read_call(item);
    if (!call) return std::nullopt;
    calls.push_back(std::move(*call));
  }
  return calls;
}

// Granite's: the whole reply is [{"name": "f", "arguments": {...}}, ...], after an optional
// <|tool_call|> and then an optional <tool_call> (the 3.0 and 3.1 markers).
std::optional<std::vector<Call>> read_granite_calls(std::string_view text) {
  size_t at = skip_layout_space(text, 0);
  for (const std::string_view marker : {kGraniteToken, kHermesOpen})
    if (text.substr(at, marker.size()) == marker) at = skip_layout_space(text, at + marker.size());
  if (at >= text.size() || text[at] != '[') return std::nullopt;
  return read_call_array(text.substr(at));
}

}  // namespace

std::optional<ToolCallFormat> tool_call_format_from_name(std::string_view name) {
  if (name == "none") return ToolCallFormat::kNone;
  if (name == "hermes") return ToolCallFormat::kHermes;
  if (name == "llama3_json") return ToolCallFormat::kLlama3Json;
  if (name == "mistral") return ToolCallFormat::kMistral;
  if (name == "granite") return ToolCallFormat::kGranite;
  return std::nullopt;
}

const char* tool_call_format_name(ToolCallFormat format) {
  switch (format) {
    case ToolCallFormat::kHermes:
      return "hermes";
    case ToolCallFormat::kLlama3Json:
      return "llama3_json";
    case ToolCallFormat::kMistral:
      return "mistral";
    case ToolCallFormat::kGranite:
      return "granite";
    default:
      return "none";
  }
}

ToolCallFormat detect_tool_call_format(std::string_view chat_template_source) {
  const auto has = [&](std::string_view text) {
    return chat_template_source.find(text) != std::string_view::npos;
  };
  if (has(kGraniteToken)) return ToolCallFormat::kGranite;
  if (has(kHermesOpen)) return has(kXmlFunction) ? ToolCallFormat::kNone : ToolCallFormat::kHermes;
  if (has(kMistralCalls)) return ToolCallFormat::kMistral;
  if (has(kPythonTag) || has(kLlama3JsonInstruction)) return ToolCallFormat::kLlama3Json;
  return ToolCallFormat::kNone;
}

std::string tool_call_markers_hidden(ToolCallFormat format, const Tokenizer& tokenizer) {
  if (format != ToolCallFormat::kHermes) return {};  // llama3_json's <|python_tag|> is skipped anyway
  for (const std::string_view marker : {kHermesOpen, kHermesClose}) {
    const std::vector<TokenId> ids = tokenizer.encode_with_special_tokens(marker);
    if (ids.size() == 1 && tokenizer.is_control(ids[0]))
      return "the tokenizer makes " + std::string(marker) +
             " a special token, which decoded replies leave out, so no call could be read";
  }
  return {};
}

std::vector<std::string> tool_call_control_markers(ToolCallFormat format, const Tokenizer& tokenizer) {
  std::vector<std::string> markers;
  if (format != ToolCallFormat::kMistral) return markers;
  for (const std::string_view marker : {kMistralCalls, kMistralArgs, kMistralCallId}) {
    const std::vector<TokenId> ids = tokenizer.encode_with_special_tokens(marker);
    if (ids.size() == 1 && tokenizer.is_control(ids[0])) markers.emplace_back(marker);
  }
  return markers;
}

ToolCallReader ToolCallReader::for_format(ToolCallFormat format) {
  switch (format) {
    case ToolCallFormat::kHermes:
      return ToolCallReader(Mode::kHermes);
    case ToolCallFormat::kLlama3Json:
      return ToolCallReader(Mode::kLlama3Json);
    case ToolCallFormat::kGranite:
      return ToolCallReader(Mode::kGranite);
    case ToolCallFormat::kMistral: {
      ToolCallReader reader(Mode::kMistral);
      reader.use_nine_character_call_ids();
      return reader;
    }
    default:
      return ToolCallReader(Mode::kText);
  }
}

ToolCallReader ToolCallReader::required() {
  ToolCallReader reader(Mode::kRequired);
  reader.in_call_ = true;
  return reader;
}

bool ToolCallReader::calls_end_the_turn() const {
  return mode_ != Mode::kNamed;
}

ToolCallReader ToolCallReader::named(std::string function_name) {
  ToolCallReader reader(Mode::kNamed);
  reader.function_name_ = std::move(function_name);
  return reader;
}

void ToolCallReader::add_call(ToolCallOutput& out, std::string name, std::string arguments) {
  if (calls_ >= max_calls_) return;
  out.calls.push_back(ToolCallDelta{calls_++, std::move(name), std::move(arguments)});
}

void ToolCallReader::add_content(ToolCallOutput& out, std::string_view text) {
  out.content += held_space_;
  held_space_.clear();
  out.content += text;
}

ToolCallOutput ToolCallReader::feed(std::string_view text) {
  ToolCallOutput out;
  switch (mode_) {
    case Mode::kText:
      out.content = text;
      return out;
    case Mode::kNamed:
      // The constraint makes the whole reply the arguments: each piece goes out as it comes.
      if (text.empty()) return out;
      if (calls_ == 0)
        add_call(out, function_name_, std::string(text));
      else
        out.calls.push_back(ToolCallDelta{0, {}, std::string(text)});
      return out;
    case Mode::kHermes:
      buffer_ += text;
      return feed_hermes(false);
    case Mode::kMistral:
      buffer_ += text;
      return feed_mistral(false);
    case Mode::kLlama3Json:
    case Mode::kGranite:
    case Mode::kRequired:
      buffer_ += text;
      return feed_whole_reply(false);
  }
  return out;
}

ToolCallOutput ToolCallReader::finish() {
  ToolCallOutput out;
  switch (mode_) {
    case Mode::kText:
      return out;
    case Mode::kNamed:
      if (calls_ == 0) add_call(out, function_name_, "");  // no text at all: the call, cut off
      return out;
    case Mode::kHermes:
      out = feed_hermes(true);
      break;
    case Mode::kMistral:
      out = feed_mistral(true);
      break;
    case Mode::kLlama3Json:
    case Mode::kGranite:
    case Mode::kRequired:
      out = feed_whole_reply(true);
      break;
  }
  // Whitespace at the very end is the reply's own when it is all text, layout after calls.
  if (calls_ == 0) out.content += held_space_;
  held_space_.clear();
  return out;
}

ToolCallOutput ToolCallReader::feed_hermes(bool final) {
  ToolCallOutput out;
  while (true) {
    if (in_call_) {
      // Searched from where the last search stopped: a long call is scanned once, not per token.
      const size_t close = buffer_.find(kHermesClose, close_searched_);
      if (close == std::string::npos && !final) {
        close_searched_ = buffer_.size() - std::min(buffer_.size(), kHermesClose.size() - 1);
        return out;
      }
      close_searched_ = 0;
      // A call ends at its closing marker, or (cut off or closed by EOS) at the end of the reply.
      const bool closed = close != std::string::npos;
      const std::string body = buffer_.substr(0, closed ? close : std::string::npos);
      buffer_.erase(0, closed ? close + kHermesClose.size() : std::string::npos);
      in_call_ = false;
      std::optional<Json> json = parse_json(body);
      if (std::optional<Call> call = json ? read_call(*json) : std::nullopt) {
        add_call(out, std::move(call->name), std::move(call->arguments));  // the space before it was layout
      } else {
        held_space_ = std::move(space_before_call_) + held_space_;
        add_content(out, std::string(kHermesOpen) + body + (closed ? std::string(kHermesClose) : ""));
      }
      space_before_call_.clear();
      continue;
    }
    if (!take_text_before(kHermesOpen, final, out)) return out;
    in_call_ = true;
  }
}

bool ToolCallReader::take_text_before(std::string_view marker, bool final, ToolCallOutput& out) {
  const size_t open = buffer_.find(marker);
  // Text that may still become the marker waits for the next piece.
  const size_t ready = open != std::string::npos ? open
                       : final                   ? buffer_.size()
                                                 : buffer_.size() - partial_marker_at_end(buffer_, marker);
  const std::string_view text(buffer_.data(), ready);
  size_t text_end = text.size();
  while (text_end > 0 && is_layout_space(text[text_end - 1]))
    --text_end;
  if (text_end > 0) add_content(out, text.substr(0, text_end));
  held_space_ += text.substr(text_end);
  buffer_.erase(0, ready);
  if (open == std::string::npos) return false;
  // Whitespace before a call is layout, unless what follows turns out not to be a call.
  space_before_call_ = std::move(held_space_);
  held_space_.clear();
  buffer_.erase(0, marker.size());
  return true;
}

ToolCallOutput ToolCallReader::feed_mistral(bool final) {
  ToolCallOutput out;
  if (!in_call_) {
    if (!take_text_before(kMistralCalls, final, out)) return out;
    in_call_ = true;
  }
  if (!final) return out;  // the calls are read whole, at the end
  if (std::optional<MistralCalls> calls = read_mistral_calls(buffer_)) {
    for (Call& call : calls->calls)
      add_call(out, std::move(call.name), std::move(call.arguments));
    // What the model wrote after its calls is content (trailing layout aside, as after any call).
    std::string_view rest = calls->rest;
    while (!rest.empty() && is_layout_space(rest.back()))
      rest.remove_suffix(1);
    if (!rest.empty()) add_content(out, rest);
  } else {
    held_space_ = std::move(space_before_call_) + held_space_;
    add_content(out, std::string(kMistralCalls) + buffer_);
  }
  space_before_call_.clear();
  buffer_.clear();
  return out;
}

ToolCallOutput ToolCallReader::feed_whole_reply(bool final) {
  ToolCallOutput out;
  if ((mode_ == Mode::kLlama3Json || mode_ == Mode::kGranite) && !started_) {
    // The reply is calls when it starts as one; leading whitespace, or what may still become a
    // marker, waits to see which.
    const size_t first = skip_layout_space(buffer_, 0);
    if (first == buffer_.size() && !final) return out;
    const std::string_view rest = std::string_view(buffer_).substr(first);
    const bool granite = mode_ == Mode::kGranite;
    static constexpr std::array kGraniteMarkers{kGraniteToken, kHermesOpen};
    static constexpr std::array kLlama3Markers{kPythonTag};
    const std::span<const std::string_view> markers = granite
                                                          ? std::span<const std::string_view>(kGraniteMarkers)
                                                          : std::span<const std::string_view>(kLlama3Markers);
    for (const std::string_view marker : markers)
      if (!final && rest.size() < marker.size() && marker.starts_with(rest)) return out;
    started_ = true;
    in_call_ = !rest.empty() && rest.front() == (granite ? '[' : '{');
    for (const std::string_view marker : markers)
      in_call_ = in_call_ || rest.starts_with(marker);
  }
  if (!in_call_) {
    out.content = std::move(buffer_);
    buffer_.clear();
    return out;
  }
  if (!final) return out;
  std::optional<std::vector<Call>> calls = mode_ == Mode::kRequired  ? read_call_array(buffer_)
                                           : mode_ == Mode::kGranite ? read_granite_calls(buffer_)
                                                                     : read_llama3_calls(buffer_);
  if (calls) {
    for (Call& call : *calls)
      add_call(out, std::move(call.name), std::move(call.arguments));
  } else {
    out.content = std::move(buffer_);
  }
  buffer_.clear();
  return out;
}

}  // namespace kvserve
