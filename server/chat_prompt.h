// Chat input: a client's conversation (v1::Chat) rendered into the prompt by the model's chat
// template (engine/chat_template.h) and tokenized with the template's special-token spellings as
// their ids, the same for Generate and Tokenize, on the gRPC handler thread.
#pragma once

#include <string>
#include <vector>

#include "engine/block_pool.h"
#include "engine/chat_template.h"
#include "engine/status.h"
#include "engine/tokenizer.h"
#include "kvserve/v1/kvserve.pb.h"

namespace kvserve {

struct ChatPrompt {
  std::string text;  // what the template rendered
  std::vector<TokenId> ids;
  // The text ends inside an open <think> block (the tag, then only whitespace): the template began
  // the model's reasoning for it.
  bool reasoning_started() const;
};

// The prompt for `chat`, or why not: INVALID_ARGUMENT for a conversation that cannot be served as
// sent (no messages, an empty role, one the template refuses) and without a tokenizer;
// FAILED_PRECONDITION when the server has no template (`chat_template` null).
Status render_chat(const v1::Chat& chat, const ChatTemplate* chat_template, const Tokenizer* tokenizer,
                   ChatPrompt* out);

}  // namespace kvserve
