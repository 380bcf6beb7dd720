#include "server/tool_calls.h"

#include <nlohmann/json.hpp>

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

// Mistral's calls, the text after the first [TOOL_CALLS]: a JSON array of calls, or
// name[ARGS]{...} with each further call after its own [TOOL_CALLS].
std::optional<std::vector<Call>> read_mistral_calls(std::string_view text) {
  const size_t first = skip_layout_space(text, 0);
  if (first < text.size() && text[first] == '[' && text.substr(first, kMistralArgs.size()) != kMistralArgs) {
    std::optional<Json> json = parse_json(text.substr(first));
    if (!json || !json->is_array() || json->empty()) return std::nullopt;
    std::vector<Call> calls;
    for (const Json& item : *json) {
      std::optional<Call> call = read_call(item);
      if (!call) return std::nullopt;
      calls.push_back(std::move(*call));
    }
    return calls;
  }
  std::vector<Call> calls;
  while (true) {
    const size_t next = text.find(kMistralCalls);
    const std::string_view one = text.substr(0, next);
    const size_t args = one.find(kMistralArgs);
    if (args == std::string_view::npos) return std::nullopt;
    std::string_view name = one.substr(0, args);
    const size_t name_start = skip_layout_space(name, 0);
    size_t name_end = name.size();
    while (name_end > name_start && is_layout_space(name[name_end - 1]))
      --name_end;
    name = name.substr(name_start, name_end - name_start);
    std::optional<Json> arguments = parse_json(one.substr(args + kMistralArgs.size()));
    if (name.empty() || !arguments || !arguments->is_object()) return std::nullopt;
    calls.push_back(Call{std::string(name), dump(*arguments)});
    if (next == std::string_view::npos) return calls;
    text.remove_prefix(next + kMistralCalls.size());
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

}  // namespace

std::optional<ToolCallFormat> tool_call_format_from_name(std::string_view name) {
  if (name == "none") return ToolCallFormat::kNone;
  if (name == "hermes") return ToolCallFormat::kHermes;
  if (name == "llama3_json") return ToolCallFormat::kLlama3Json;
  if (name == "mistral") return ToolCallFormat::kMistral;
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
    default:
      return "none";
  }
}

ToolCallFormat detect_tool_call_format(std::string_view chat_template_source) {
  const auto has = [&](std::string_view text) {
    return chat_template_source.find(text) != std::string_view::npos;
  };
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
  for (const std::string_view marker : {kMistralCalls, kMistralArgs}) {
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
    case ToolCallFormat::kMistral:
      return ToolCallReader(Mode::kMistral);
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
    const size_t open = buffer_.find(kHermesOpen);
    // Text that may still become a marker waits for the next piece.
    const size_t ready = open != std::string::npos ? open
                         : final                   ? buffer_.size()
                                 : buffer_.size() - partial_marker_at_end(buffer_, kHermesOpen);
    const std::string_view text(buffer_.data(), ready);
    size_t text_end = text.size();
    while (text_end > 0 && is_layout_space(text[text_end - 1]))
      --text_end;
    if (text_end > 0) add_content(out, text.substr(0, text_end));
    held_space_ += text.substr(text_end);
    buffer_.erase(0, ready);
    if (open == std::string::npos) return out;
    // Whitespace before a call is layout, unless what follows turns out not to be a call.
    space_before_call_ = std::move(held_space_);
    held_space_.clear();
    buffer_.erase(0, kHermesOpen.size());
    in_call_ = true;
  }
}

ToolCallOutput ToolCallReader::feed_mistral(bool final) {
  ToolCallOutput out;
  if (!in_call_) {
    const size_t open = buffer_.find(kMistralCalls);
    // Text that may still become the marker waits for the next piece.
    const size_t ready = open != std::string::npos ? open
                         : final                   ? buffer_.size()
                                 : buffer_.size() - partial_marker_at_end(buffer_, kMistralCalls);
    const std::string_view text(buffer_.data(), ready);
    size_t text_end = text.size();
    while (text_end > 0 && is_layout_space(text[text_end - 1]))
      --text_end;
    if (text_end > 0) add_content(out, text.substr(0, text_end));
    held_space_ += text.substr(text_end);
    buffer_.erase(0, ready);
    if (open == std::string::npos) return out;
    // Whitespace before the calls is layout, unless what follows turns out not to be calls.
    space_before_call_ = std::move(held_space_);
    held_space_.clear();
    buffer_.erase(0, kMistralCalls.size());
    in_call_ = true;
  }
  if (!final) return out;  // the calls are read whole, at the end
  if (std::optional<std::vector<Call>> calls = read_mistral_calls(buffer_)) {
    for (Call& call : *calls)
      add_call(out, std::move(call.name), std::move(call.arguments));
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
  if (mode_ == Mode::kLlama3Json && !started_) {
    // The reply is calls when it starts as one; leading whitespace waits to see which.
    const size_t first = skip_layout_space(buffer_, 0);
    if (first == buffer_.size() && !final) return out;
    const std::string_view rest = std::string_view(buffer_).substr(first);
    if (!final && rest.size() < kPythonTag.size() && kPythonTag.starts_with(rest)) return out;
    started_ = true;
    in_call_ = !rest.empty() && (rest.front() == '{' || rest.starts_with(kPythonTag));
  }
  if (!in_call_) {
    out.content = std::move(buffer_);
    buffer_.clear();
    return out;
  }
  if (!final) return out;
  std::optional<std::vector<Call>> calls =
      mode_ == Mode::kRequired ? read_call_array(buffer_) : read_llama3_calls(buffer_);
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
