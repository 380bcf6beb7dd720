// OpenAI's Responses API (POST /v1/responses), which OpenAI's newer clients and agent SDKs speak,
// served on top of the chat endpoint: the request's instructions and input items become a chat
// conversation, its function tools and text format the chat request's tools and response_format,
// so it runs through the same parser, chat template, tool-call reader and limits. The reply is the
// chat reply's chunks rewritten as a response object's output items: whole, or as the Responses
// stream's typed events (response.created, response.output_text.delta, ..., response.completed).
//
// A response is stored (server/response_store.h) unless the request says `store: false` or the
// server keeps none: a later request continues it by previous_response_id, its conversation's
// items put before the request's own input. Function tools only.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <string_view>

#include "engine/status.h"
#include "engine/tokenizer.h"
#include "server/openai_request.h"
#include "server/openai_response.h"
#include "server/response_store.h"

namespace kvserve::openai {

// The stored response a previous_response_id names (for the caller's API key), or null.
using FindStoredResponse = std::function<std::shared_ptr<const ResponseStore::Stored>(const std::string& id)>;

// What a Responses request adds to its conversation, for storing its response.
struct ResponsesTurn {
  // The items the request's input stands for: the previous response's items, then its own input
  // items (a string input as a user message), each with an `id` (assigned where it had none), a
  // message's text as a list of parts; reasoning items are not kept.
  nlohmann::ordered_json input_items = nlohmann::ordered_json::array();
  bool store = true;  // the request's `store`
};

// Reads a Responses request into the chat request it stands for (out->endpoint is chat). `echo`
// receives the request's settings that a response object repeats (instructions, tools,
// previous_response_id, ...), `turn` its conversation. `find_stored` looks up previous_response_id;
// empty when the server stores no responses. A request for another model is NOT_FOUND; anything
// else wrong (a previous_response_id that names nothing stored too) is INVALID_ARGUMENT naming the
// Responses field.
Status parse_responses_request(std::string_view body, const ServedApi& served,
                               const FindStoredResponse& find_stored, ParsedRequest* out,
                               nlohmann::ordered_json* echo, ResponsesTurn* turn);

// What a stored response's conversation keeps: `input_items` (its turn's), then the items of its
// `output` that a next turn can take: reasoning items and a call cut off by max_output_tokens before
// its arguments were whole are left out (templates take neither).
nlohmann::ordered_json conversation_items(nlohmann::ordered_json input_items,
                                          const nlohmann::ordered_json& output);

// A response id no one can guess ("resp_" and 32 random letters and digits): a stored response is
// read back, continued and deleted by its id alone (and the API key).
std::string new_stored_response_id();

// The reply to one Responses call, built from the chat reply's chunks (`request` is the chat
// request parse_responses_request made), so that streamed and whole replies hold the same items.
class ResponsesReply final : public Reply {
 public:
  // Called once with the whole response object when the reply completes (status completed or
  // incomplete; not when it fails): where a stored response is stored.
  using OnComplete = std::function<void(const nlohmann::ordered_json& response)>;

  // `id` is the response's ("resp_" and the request id when empty); `echo` may set "store".
  ResponsesReply(const ParsedRequest& request, nlohmann::ordered_json echo, int64_t created,
                 const Tokenizer* tokenizer, std::string id = {}, OnComplete on_complete = {});

  // The first message's events begin with response.created and response.in_progress.
  std::string event(const v1::GenerateResponse& message) override;
  // The open item's done events, then response.completed (response.incomplete when the output
  // reached max_output_tokens).
  std::string closing_events() override;
  // An error event, then response.failed.
  std::string failure_events(int http_status, const std::string& message, const std::string& code) override;
  void add(const v1::GenerateResponse& message) override;
  std::string body() override;

 private:
  // Folds one chat chunk into the output items; the events for it (streaming) or "" (whole).
  std::string consume(const nlohmann::ordered_json& chunk);
  // A new message item (its item and part added events), the open item closed first.
  std::string open_message();
  std::string add_text(const std::string& text);
  std::string add_reasoning(const std::string& text);
  // At the end: the last item closed, as completed or incomplete (an empty message when there
  // is neither text nor a call).
  std::string finish_output();
  std::string start_call(int chat_index, const nlohmann::ordered_json& call);
  std::string add_arguments(int chat_index, const std::string& arguments);
  // Marks the last item done (status "completed" or "incomplete"): its done events.
  std::string close_item(const char* status);
  // One server-sent event: "event: <type>" and its data, numbered. "" when not streaming.
  std::string emit(const char* type, nlohmann::ordered_json fields);
  // The response object in `status`, with the output so far.
  nlohmann::ordered_json response(const char* status) const;
  bool incomplete() const { return finish_reason_ == "length"; }
  std::string new_id(const char* prefix);

  ReplyBuilder chat_;
  nlohmann::ordered_json echo_;
  const bool streaming_;
  const int64_t created_;
  const std::string model_;
  std::string id_;  // given, or "resp_" and the request id from the first message
  OnComplete on_complete_;
  nlohmann::ordered_json output_ = nlohmann::ordered_json::array();
  bool item_open_ = false;           // the last output item is still being written
  std::map<int, size_t> call_item_;  // a chat tool call's index -> its output item
  std::string finish_reason_;        // the chat choice's
  int64_t sequence_ = 0;             // the next event's sequence_number
  std::mt19937_64 id_rng_{std::random_device{}()};
};

}  // namespace kvserve::openai
