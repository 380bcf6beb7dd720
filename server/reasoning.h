// Reasoning ("thinking") that a model writes before its answer, between <think> and </think>
// (Qwen3, QwQ and other models whose chat template teaches the tags), read out of the reply so
// that the OpenAI-compatible API returns it apart from the answer: chat's `reasoning_content` (as
// vLLM and DeepSeek's API name it), the Responses API's reasoning item.
//
// A reply has reasoning when it begins with <think> (after optional whitespace), or when the prompt
// ended inside an open <think> block (the template began the reasoning, as DeepSeek-R1's and QwQ's
// do); any other reply is all answer, so a model told not to think (Qwen3's enable_thinking false
// renders the empty think block into the prompt) or one that never does loses nothing. Streaming and whole
// replies use the same reader, so joined deltas give exactly the whole reply. Only layout is dropped: the
// tags, and the whitespace after each.
#pragma once

#include <string>
#include <string_view>

namespace kvserve {

// Whether a chat template teaches <think> tags: the default of --reasoning-parser auto.
bool template_teaches_thinking(std::string_view chat_template_source);

class ReasoningReader {
 public:
  // `started`: the prompt ended inside an open <think> block (GenerateResponse.reasoning_started),
  // so the reply begins as reasoning, up to its </think>.
  explicit ReasoningReader(bool started = false)
      : state_(started ? State::kReasoning : State::kStart), skip_space_(started) {}

  struct Output {
    std::string reasoning;
    std::string content;
  };

  // The next text of the reply: what can already be told apart. Text that may still be a tag
  // waits for the next piece.
  Output feed(std::string_view text);
  // The reply has ended: whatever was held back (cut off inside the reasoning, it is reasoning).
  Output finish();

 private:
  enum class State { kStart, kReasoning, kAnswer };
  Output step(bool final);

  State state_ = State::kStart;
  std::string buffer_;       // text received and not yet returned
  bool skip_space_ = false;  // drop whitespace before the next text (after a tag)
};

}  // namespace kvserve
