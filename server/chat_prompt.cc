#include "server/chat_prompt.h"

#include <exception>
#include <string_view>
#include <utility>

#include "server/text_markers.h"

namespace kvserve {

Status render_chat(const v1::Chat& chat, const ChatTemplate* chat_template, const Tokenizer* tokenizer,
                   ChatPrompt* out) {
  if (!tokenizer) return Status::InvalidArgument("chat: this model has no tokenizer; send token_ids instead");
  if (!chat_template)
    return Status::FailedPrecondition(
        "this model has no chat template; start kvserve with --chat-template FILE, or send text");
  if (chat.messages().empty())
    return Status::InvalidArgument("chat.messages: empty; send at least one message");
  ChatInput input;
  input.messages.reserve(static_cast<size_t>(chat.messages_size()));
  for (int i = 0; i < chat.messages_size(); ++i) {
    const v1::ChatMessage& m = chat.messages(i);
    if (m.role().empty())
      return Status::InvalidArgument(
          "chat.messages[" + std::to_string(i) +
          "].role: empty; say who speaks (\"system\", \"user\", \"assistant\", ...)");
    input.messages.emplace_back(m.role(), m.content(), m.extra_json());
  }
  // proto3 `optional`: unset means the usual case, a prompt that opens the assistant's turn (unless
  // the final message is to be continued, which excludes that).
  input.continue_final_message = chat.continue_final_message();
  input.add_generation_prompt =
      chat.has_add_generation_prompt() ? chat.add_generation_prompt() : !chat.continue_final_message();
  input.tools_json = chat.tools_json();
  input.template_kwargs_json = chat.template_kwargs_json();
  try {
    out->text = chat_template->render(input);
  } catch (const ChatInputError& e) {
    return Status::InvalidArgument(e.what());  // names the field
  } catch (const ChatTemplateError& e) {
    return Status::InvalidArgument(std::string("chat: the model's chat template refused the conversation: ") +
                                   e.what());
  } catch (const std::exception& e) {
    // Not a refusal the template wrote: a fault in rendering, which must fail this request only.
    return Status::Internal(std::string("chat: rendering the chat template failed (") + e.what() + ")");
  }
  if (out->text.empty())
    return Status::InvalidArgument(
        "chat: the model's chat template rendered an empty prompt for this conversation; send a message "
        "the template writes out (a user message, say)");
  // As encode_text in generation_service.cc: a tokenizer that throws fails this request only.
  try {
    out->ids = tokenizer->encode_with_special_tokens(out->text);
  } catch (const std::exception& e) {
    return Status::InvalidArgument(std::string("chat: the rendered prompt could not be tokenized (") +
                                   e.what() + "); send token_ids instead");
  }
  if (out->ids.empty())
    return Status::InvalidArgument("chat: the rendered prompt tokenizes to no tokens; send more text");
  return Status::Ok();
}

bool ChatPrompt::reasoning_started() const {
  constexpr std::string_view kOpen = "<think>";
  size_t end = text.size();
  while (end > 0 && is_layout_space(text[end - 1]))
    --end;
  return std::string_view(text).substr(0, end).ends_with(kOpen);
}

}  // namespace kvserve
