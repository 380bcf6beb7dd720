// Anthropic's Messages API (POST /v1/messages and /v1/messages/count_tokens), which Anthropic's SDKs
// and the coding agents built on them speak, served on top of the chat endpoint as the Responses API
// is (server/openai_responses.h): the request's system prompt, messages and their content blocks
// become a chat conversation (tool_use blocks an assistant turn's calls, tool_result blocks tool
// messages), its custom tools and tool_choice chat's, a final assistant message a prefill the reply
// continues. The reply is the chat reply's chunks rewritten as a message's content blocks (thinking,
// text, tool_use): whole, or as the Messages stream's events (message_start,
// content_block_start/delta/stop, message_delta, message_stop). Errors have Anthropic's shape.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <string>
#include <string_view>

#include "engine/status.h"
#include "engine/tokenizer.h"
#include "server/openai_request.h"
#include "server/openai_response.h"

namespace kvserve::anthropic {

// Reads a Messages request into the chat request it stands for (out->endpoint is chat). A request
// for another model is NOT_FOUND; anything else wrong is INVALID_ARGUMENT naming the Messages field
// (messages[i].content[j].input, stop_sequences, ...) and what to send instead.
Status parse_messages_request(std::string_view body, const openai::ServedApi& served,
                              openai::ParsedRequest* out);

// Reads a count_tokens request (a Messages request without max_tokens) into the Tokenize request
// for the prompt the Messages endpoint would run, tools rendered as there.
Status parse_count_tokens_request(std::string_view body, const openai::ServedApi& served,
                                  openai::ParsedTokenize* out);

// Anthropic's error object, {"type": "error", "error": {"type", "message"}}, its type the one
// Anthropic's API gives that HTTP status (invalid_request_error for 400, overloaded_error for
// 503, ...).
std::string error_body(int http_status, const std::string& message);

// The reply to one Messages call, built from the chat reply's chunks (`request` is the chat request
// parse_messages_request made), so that streamed and whole replies hold the same content blocks.
class MessagesReply final : public openai::Reply {
 public:
  // `tokenizer` may be null (as for the chat reply).
  MessagesReply(const openai::ParsedRequest& request, const Tokenizer* tokenizer);

  // The first message's events begin with message_start.
  std::string event(const v1::GenerateResponse& message) override;
  // The open block's content_block_stop, message_delta (stop_reason and usage), message_stop.
  std::string closing_events() override;
  // An error event (Anthropic's error object).
  std::string failure_events(int http_status, const std::string& message, const std::string& code) override;
  void add(const v1::GenerateResponse& message) override;
  std::string body() override;

 private:
  // Folds one chat chunk into the content blocks; the events for it (streaming) or "" (whole).
  std::string consume(const nlohmann::ordered_json& chunk);
  // Appends to the last block if it is open and of `type` ("text" or "thinking"), else opens one.
  std::string add_text(const char* type, const std::string& text);
  std::string start_tool_use(int chat_index, const nlohmann::ordered_json& call);
  std::string add_input_json(int chat_index, const std::string& partial_json);
  std::string close_block();
  // One server-sent event: "event: <type>" and its data. "" when not streaming.
  std::string emit(const char* type, nlohmann::ordered_json fields);
  nlohmann::ordered_json message() const;  // the message object, content so far
  nlohmann::ordered_json usage() const;
  nlohmann::ordered_json stop_reason() const;  // null until the reply ends
  void start(const v1::GenerateResponse& message);

  openai::ReplyBuilder chat_;
  const bool streaming_;
  const std::string model_;
  std::string id_;  // "msg_" and the request id, from the first message
  bool started_ = false;
  nlohmann::ordered_json content_ = nlohmann::ordered_json::array();
  bool block_open_ = false;                       // the last content block is still being written
  std::map<int, size_t> tool_block_;              // a chat tool call's index -> its content block
  std::map<size_t, std::string> tool_arguments_;  // a tool_use block's input JSON text so far
  std::string finish_reason_;                     // the chat choice's; empty until it ends
  nlohmann::ordered_json stop_sequence_;          // the stop string that ended it, or null
};

}  // namespace kvserve::anthropic
