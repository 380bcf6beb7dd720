// Tool calls: the function calls a chat model writes into its reply, read out of the generated text
// so that the OpenAI-compatible API can return them as `tool_calls` instead of as text.
//
// Each model family writes calls in the format its chat template teaches it (the template renders
// the request's tools and tells the model how to call them), so the reader follows the model:
//   hermes       Qwen2.5 / Qwen3, Hermes 2 and 3, and other ChatML-style templates: each call is
//                <tool_call>\n{"name": "f", "arguments": {...}}\n</tool_call>, after optional text.
//   llama3_json  Llama 3.1 / 3.2 / 3.3 JSON tool calling: the whole reply is {"name": "f",
//                "parameters": {...}}, several joined by ';' (a leading <|python_tag|> is skipped).
//   mistral      Mistral's models: after optional text, [TOOL_CALLS] and then either a JSON array
//                [{"name": "f", "arguments": {...}}, ...] (Mistral 7B v0.3, Nemo, Small 2409/2501,
//                Large 2407) or f[ARGS]{...}, each call after its own [TOOL_CALLS] (Small 3.1/3.2,
//                Devstral, Magistral; name[CALL_ID]id[ARGS]{...} where the model writes an id).
//                Text after the calls is content. [TOOL_CALLS], [ARGS] and [CALL_ID] are control tokens in
//                Mistral's tokenizers: the server keeps their spellings in the reply's text for this reader
//                (GenerateRequest.keep_control_tokens). Its calls carry 9-character ids, as
//                Mistral's chat templates require.
//   granite      IBM Granite 3.x: the whole reply is a JSON array [{"name": "f", "arguments": {...}}, ...],
//                after an optional <|tool_call|> (a special token, which decoded text usually drops)
//                and an optional <tool_call> (which vLLM's reader also takes). Granite 4 writes hermes.
// Two more readers serve tool_choice, where a constraint (structured output) fixes the reply's
// shape and the template's format no longer matters:
//   required     the reply is a JSON array of {"name": "f", "parameters": {...}}, at least one;
//   named        the reply is the named function's arguments object itself.
//
// The reader takes the text as it streams and returns what can already be sent: plain text (the
// reply's content) and calls. Streaming and whole replies use the same reader, so a client that
// joins the stream's deltas gets exactly the whole reply. Nothing is dropped: text in a call's
// markers that does not read as a call (bad JSON, no name, cut off by max_tokens) is returned as
// content, markers included. Only layout is dropped: whitespace just before a call, and at the end
// of a reply that made calls.
#pragma once

#include <cstddef>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "engine/tokenizer.h"

namespace kvserve {

// The tool-call format of the served model (server flag --tool-call-parser).
enum class ToolCallFormat { kNone, kHermes, kLlama3Json, kMistral, kGranite };

// "none", "hermes", "llama3_json", "mistral", "granite"; nullopt for any other name.
std::optional<ToolCallFormat> tool_call_format_from_name(std::string_view name);
const char* tool_call_format_name(ToolCallFormat format);
// The format a chat template teaches, from what it writes: "<tool_call>" -> hermes (unless the
// calls inside are XML, "<function=", as Qwen3-Coder's: kNone); "<|python_tag|>" or Llama 3's
// instruction '"parameters": dictionary of argument name' -> llama3_json; "[TOOL_CALLS]" ->
// mistral; "<|tool_call|>" -> granite (Granite 3.x's templates); kNone otherwise.
ToolCallFormat detect_tool_call_format(std::string_view chat_template_source);

// Why replies decoded by `tokenizer` can never show `format`'s markers, or "" when they can: a
// marker that is one control token (special in tokenizer.json, as some Hermes models mark
// <tool_call>) is left out of decoded text, so no call would ever be read.
std::string tool_call_markers_hidden(ToolCallFormat format, const Tokenizer& tokenizer);
// The format's markers that `tokenizer` makes control tokens, which a request must ask the engine
// to keep in the reply's text (mistral's [TOOL_CALLS] and [ARGS]); empty for the other formats.
std::vector<std::string> tool_call_control_markers(ToolCallFormat format, const Tokenizer& tokenizer);

// What a reader has for the client after some text: content, then calls or parts of calls.
struct ToolCallDelta {
  int index = 0;          // which call of the reply (0, 1, ...)
  std::string name;       // set in a call's first delta only
  std::string arguments;  // the next piece of the arguments' JSON text (often all of it)
};
struct ToolCallOutput {
  std::string content;
  std::vector<ToolCallDelta> calls;
  bool empty() const { return content.empty() && calls.empty(); }
};

class ToolCallReader {
 public:
  static ToolCallReader for_format(ToolCallFormat format);  // kNone: all text is content
  static ToolCallReader required();
  static ToolCallReader named(std::string function_name);

  // Calls past the first `calls` are left out, their text with them (parallel_tool_calls false).
  void keep_at_most(int calls) { max_calls_ = calls; }

  // The next text of the reply.
  ToolCallOutput feed(std::string_view text);
  // The reply has ended: whatever was held back.
  ToolCallOutput finish();
  // Calls returned so far.
  int calls() const { return calls_; }
  // Whether a reply that made calls finishes with "tool_calls" (auto, required) rather than "stop"
  // (a named function: OpenAI's API gives "stop" there, the caller having chosen the call).
  bool calls_end_the_turn() const;
  // Mistral's chat templates accept only tool-call ids of 9 letters and digits: the calls of a
  // reply to a Mistral model get such ids, whichever reader reads them.
  bool nine_character_call_ids() const { return nine_character_call_ids_; }
  void use_nine_character_call_ids() { nine_character_call_ids_ = true; }

 private:
  enum class Mode { kText, kHermes, kLlama3Json, kMistral, kGranite, kRequired, kNamed };
  explicit ToolCallReader(Mode mode) : mode_(mode) {}

  ToolCallOutput feed_hermes(bool final);
  ToolCallOutput feed_whole_reply(bool final);  // llama3_json, granite and required: read at the end
  ToolCallOutput feed_mistral(bool final);      // text, then calls read at the end
  // Returns the text before `marker` as content (whitespace just before it held as layout), and
  // whether the marker came, in which case it is consumed; without it, a possible start of it
  // waits for more text (unless final).
  bool take_text_before(std::string_view marker, bool final, ToolCallOutput& out);
  // Appends a call with arguments `arguments` (JSON text).
  void add_call(ToolCallOutput& out, std::string name, std::string arguments);
  // Appends content, releasing held whitespace before it.
  void add_content(ToolCallOutput& out, std::string_view text);

  Mode mode_;
  std::string function_name_;      // kNamed
  std::string buffer_;             // text received and not yet returned
  std::string held_space_;         // whitespace between content and what follows it
  std::string space_before_call_;  // kHermes, in a call: the whitespace before its marker
  bool in_call_ = false;           // kHermes: inside <tool_call>; kMistral: past [TOOL_CALLS]; others: the
                                   // reply is read as calls
  size_t close_searched_ = 0;      // kHermes, in a call: buffer_ before this holds no </tool_call>
  bool started_ = false;           // kLlama3Json, kGranite: the reply's start tells text from calls
  int calls_ = 0;
  int max_calls_ = std::numeric_limits<int>::max();
  bool nine_character_call_ids_ = false;
};

}  // namespace kvserve
