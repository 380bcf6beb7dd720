// An OpenAI-compatible API request body off the wire (server/openai_request.h): byte 0 picks the
// endpoint (even: POST /v1/completions, odd: POST /v1/chat/completions) and the served model's
// tool-call format ((byte >> 1) % 3: none, hermes, llama3_json), the rest is the JSON body.
// parse_request reads it for a server that serves "tiny"; a non-OK Status (INVALID_ARGUMENT, or
// NOT_FOUND for another model's name) is the expected outcome for a bad body. An accepted body's
// GenerateRequest then takes the gRPC request's path (request_fixture.h: to_engine_request,
// Engine::validate and the admitted-request checks, shared with fuzz_request_validation), and the
// reply builder (server/openai_response.h) writes two made-up response messages for it, streamed
// or whole as the body asks, each document of which must be JSON. A refusal at either stage is
// written as the HTTP server writes it (error_body, error_events), which must be JSON too. The same
// body is also read as POST /tokenize and /detokenize, as POST /v1/responses (check_responses), and
// as Anthropic's POST /v1/messages and /v1/messages/count_tokens (check_messages).
#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <google/protobuf/util/message_differencer.h>
#include <nlohmann/json.hpp>

#include "server/anthropic_messages.h"
#include "server/openai_request.h"
#include "server/openai_response.h"
#include "server/openai_responses.h"
#include "tests/fuzz/request_fixture.h"

const char* const kvserve::fuzz::kTargetName = "fuzz_openai_request";

namespace {

namespace openai = kvserve::openai;
using kvserve::fuzz::check;
using Json = nlohmann::json;

constexpr const char* kServedModel = "tiny";
constexpr uint32_t kVocab = 512;  // tiny-llama's

// Deliberately leaked: the runner's thread must not be joined during static destruction, and
// LeakSanitizer does not report memory still reachable from a global.
const kvserve::fuzz::RequestFixture* const fixture = new kvserve::fuzz::RequestFixture;

// A JSON document the reply code wrote: it must parse (invalid UTF-8 in a text, a token's spelling
// or an error message is replaced).
Json parse_document(const std::string& text) {
  try {
    return Json::parse(text);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fuzz_openai_request: not JSON (%s): %s\n", e.what(), text.c_str());
    check(false, "every document the reply code writes is JSON");
  }
  return {};
}

// A reply document: an object naming the served model.
void check_document(const std::string& text) {
  const Json json = parse_document(text);
  check(json.is_object() && json.value("model", "") == kServedModel,
        "every reply document is an object naming the served model");
  // A streamed chunk's calls: an index each, and the arguments' next piece.
  for (const Json& choice : json.value("choices", Json::array())) {
    if (!choice.is_object() || !choice.contains("delta") || !choice["delta"].contains("tool_calls")) continue;
    for (const Json& call : choice["delta"]["tool_calls"])
      check(call["index"].is_number_unsigned() && call["function"]["arguments"].is_string() &&
                (!call.contains("id") || call["function"]["name"].is_string()),
            "a streamed call has an index and an arguments piece, and its first delta a name");
  }
}

// The HTTP server's reply to a refused request: the error object, whole or as the last events of a
// stream. The message may hold bytes of the body (not UTF-8 where the body is not JSON).
void check_error_reply(int http_status, const std::string& message, const char* code) {
  const std::string body = openai::error_body(http_status, message, code);
  const Json json = parse_document(body);
  check(json.is_object() && json.contains("error") && json["error"].is_object() &&
            json["error"].value("message", Json()).is_string() && json["error"].value("code", "") == code,
        "an error body is {\"error\": {\"message\": ..., \"code\": ...}}");
  check(openai::error_events(http_status, message, code) == "data: " + body + "\n\ndata: [DONE]\n\n",
        "error events are the error body, then [DONE]");
}

// A stream of server-sent events: "data: {json}\n\n" each, the last one "data: [DONE]\n\n".
void check_events(const std::string& events, bool closing) {
  size_t pos = 0;
  bool done = false;
  while (pos < events.size()) {
    check(!done, "nothing follows data: [DONE]");
    check(events.compare(pos, 6, "data: ") == 0, "every event starts with \"data: \"");
    const size_t end = events.find("\n\n", pos);
    check(end != std::string::npos, "every event ends with a blank line");
    const std::string data = events.substr(pos + 6, end - pos - 6);
    if (data == "[DONE]")
      done = true;
    else
      check_document(data);
    pos = end + 2;
  }
  check(done == closing, "data: [DONE] closes the stream, and only the closing events have it");
}

bool chat_reply(const Json& reply) {
  return reply.value("object", "") == "chat.completion";
}

// Two response messages as the service would send them for this request, made from the input:
// token ids within the vocabulary (byte-fallback pieces, control tokens and all) with logprobs and
// one alternative each, text that is a slice of the input (perhaps not UTF-8), and a finish reason
// and usage on the second; the second belongs to choice 1 when the request asks for several.
void check_replies(const openai::ParsedRequest& parsed, std::string_view bytes) {
  const auto byte = [&](size_t i) -> uint32_t {
    return bytes.empty() ? 0 : static_cast<unsigned char>(bytes[i % bytes.size()]);
  };
  kvserve::v1::GenerateResponse messages[2];
  for (int m = 0; m < 2; ++m) {
    kvserve::v1::GenerateResponse& message = messages[m];
    message.set_request_id("fuzz-1");
    message.set_index(m == 1 && parsed.generate.n() > 1 ? 1 : 0);
    const size_t half = bytes.size() / 2;
    message.set_text(std::string(bytes.substr(m * half, 48)));
    const int tokens = 1 + static_cast<int>(byte(m) % 3);
    for (int t = 0; t < tokens; ++t) {
      const uint32_t id = (byte(7 * m + 2 * t) | byte(7 * m + 2 * t + 1) << 8) % kVocab;
      message.add_token_ids(id);
      kvserve::v1::TokenLogprob* lp = message.add_logprobs();
      lp->set_token_id(id);
      lp->set_logprob(-0.25f * static_cast<float>(t + 1));
      kvserve::v1::TopLogprob* top = lp->add_top();
      top->set_token_id((id * 31 + 3) % kVocab);
      top->set_logprob(-0.125f);
    }
  }
  // A scored prompt: its ids and each one's score after the first, in choice 0's first message.
  size_t num_prompt_ids = 0;
  if (parsed.generate.has_prompt_logprobs()) {
    num_prompt_ids = 1 + byte(5) % 6;
    for (size_t i = 0; i < num_prompt_ids; ++i) {
      const uint32_t id = (byte(11 + i) * 37 + byte(i)) % kVocab;
      messages[0].add_prompt_token_ids(id);
      if (i == 0) continue;
      kvserve::v1::TokenLogprob* lp = messages[0].add_prompt_logprobs();
      lp->set_token_id(id);
      lp->set_logprob(-1.0f);
      kvserve::v1::TopLogprob* top = lp->add_top();
      top->set_token_id((id * 17 + 1) % kVocab);
      top->set_logprob(-0.5f);
    }
  }
  kvserve::v1::GenerateResponse& last = messages[1];
  static constexpr kvserve::v1::FinishReason kReasons[] = {
      kvserve::v1::FINISH_REASON_STOP, kvserve::v1::FINISH_REASON_LENGTH, kvserve::v1::FINISH_REASON_ABORTED};
  last.set_finish_reason(kReasons[byte(3) % 3]);
  last.mutable_usage()->set_prompt_tokens(byte(4));
  last.mutable_usage()->set_completion_tokens(static_cast<uint32_t>(last.token_ids_size()));
  last.mutable_usage()->set_cached_prompt_tokens(byte(4) / 2);

  openai::ReplyBuilder reply(parsed, 1700000000, fixture->tokenizer.get());
  if (parsed.stream) {
    for (const kvserve::v1::GenerateResponse& message : messages)
      check_events(reply.event(message), false);
    check_events(reply.closing_events(), true);
  } else {
    for (const kvserve::v1::GenerateResponse& message : messages)
      reply.add(message);
    check_document(reply.body());
    const Json whole = parse_document(reply.body());
    // Prompt scores: vLLM's list (null first) and echo's arrays, one entry per prompt token.
    const auto check_prompt_logprobs = [&](const Json& list) {
      check(list.is_array() && list.size() == num_prompt_ids && (list.empty() || list[0].is_null()),
            "prompt_logprobs has one entry per prompt token, the first null");
    };
    if (parsed.prompt_logprobs && chat_reply(whole)) check_prompt_logprobs(whole["prompt_logprobs"]);
    check(!parsed.prompt_only || whole["usage"]["completion_tokens"] == 0,
          "echo with max_tokens 0 reports no completion tokens");
    for (const Json& choice : whole["choices"]) {
      if (parsed.prompt_logprobs && !chat_reply(whole)) check_prompt_logprobs(choice["prompt_logprobs"]);
      if (chat_reply(whole) || !parsed.logprobs) continue;
      const Json& lp = choice["logprobs"];
      const size_t n = lp["tokens"].size();
      check(
          lp["token_logprobs"].size() == n && lp["top_logprobs"].size() == n && lp["text_offset"].size() == n,
          "completions' four logprobs arrays are parallel");
      check(
          !parsed.echo || (n >= num_prompt_ids && (num_prompt_ids == 0 || lp["token_logprobs"][0].is_null())),
          "echo's logprobs begin with the prompt's tokens, the first unscored");
    }
    // Calls read out of the text are OpenAI's shape, and come with the reason that says so.
    for (const Json& choice : whole["choices"]) {
      const Json& message = choice.value("message", Json::object());
      if (!message.contains("tool_calls")) continue;
      check(parsed.tool_calls.has_value(), "tool_calls only for a request with tools");
      for (const Json& call : message["tool_calls"])
        check(call["id"].is_string() && call["id"].get<std::string>().starts_with("call_") &&
                  call["type"] == "function" && call["function"]["name"].is_string() &&
                  call["function"]["arguments"].is_string(),
              "a call has an id, the type \"function\", a name and its arguments' text");
      check(choice["finish_reason"] != "stop", "a reply that made calls does not finish with \"stop\"");
    }
  }
}

// Two messages for a chat reply in another API's shape (Responses, Messages): text from the body's
// halves, the second finishing (at the length or not, by the body's size).
std::array<kvserve::v1::GenerateResponse, 2> two_messages(std::string_view body) {
  std::array<kvserve::v1::GenerateResponse, 2> messages;
  for (int m = 0; m < 2; ++m) {
    messages[m].set_request_id("fuzz-1");
    messages[m].set_text(std::string(body.substr(m * body.size() / 2, 48)));
    messages[m].add_token_ids(static_cast<uint32_t>(m));
  }
  messages[1].set_finish_reason(body.size() % 2 ? kvserve::v1::FINISH_REASON_LENGTH
                                                : kvserve::v1::FINISH_REASON_STOP);
  return messages;
}

// The same body read as POST /v1/responses: refused with INVALID_ARGUMENT or NOT_FOUND, or read
// into a chat request whose reply to two made-up messages (text from the input, the second
// finishing) is a response object whole, and streamed typed events ("event: T" and JSON data of
// type T, numbered from 0) ending in response.completed or response.incomplete.
void check_responses(std::string_view body, const openai::ServedApi& served) {
  // One stored response to continue, "resp_1": a question, text and a call (a stored conversation
  // keeps no reasoning items: conversation_items).
  static const auto kStored = std::make_shared<const kvserve::ResponseStore::Stored>(
      kvserve::ResponseStore::Stored{.response = {},
                                     .items = nlohmann::ordered_json::parse(R"([
          {"id": "msg_1", "type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]},
          {"id": "msg_2", "type": "message", "role": "assistant", "status": "completed",
           "content": [{"type": "output_text", "text": "Hello", "annotations": []}]},
          {"id": "fc_1", "type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{}"}])"),
                                     .input_items = 1});
  const openai::FindStoredResponse find_stored = [](const std::string& id) {
    return id == "resp_1" ? kStored : nullptr;
  };
  openai::ParsedRequest parsed;
  nlohmann::ordered_json echo;
  openai::ResponsesTurn turn;
  const kvserve::Status status =
      openai::parse_responses_request(body, served, find_stored, &parsed, &echo, &turn);
  if (!status.ok()) {
    check(status.code() == kvserve::StatusCode::kInvalidArgument ||
              status.code() == kvserve::StatusCode::kNotFound,
          "a refused /v1/responses body gets INVALID_ARGUMENT or NOT_FOUND");
    return;
  }
  check(parsed.endpoint == openai::Endpoint::kChatCompletions && parsed.generate.has_chat() &&
            parsed.more_prompts.empty() && parsed.generate.n() <= 1,
        "a Responses request is one chat request of one choice");
  check(std::all_of(turn.input_items.begin(), turn.input_items.end(),
                    [](const nlohmann::ordered_json& item) {
                      return item.is_object() && item.contains("type") && item.contains("id") &&
                             item.at("id").is_string() && item.at("type") != "reasoning";
                    }),
        "a Responses request's input items, as stored, each have a type and an id, and none is reasoning");
  std::array<kvserve::v1::GenerateResponse, 2> messages = two_messages(body);
  messages[1].mutable_usage()->set_prompt_tokens(7);
  messages[1].mutable_usage()->set_completion_tokens(2);
  for (const bool stream : {false, true}) {
    parsed.stream = stream;
    // As a stored response: its given id, and the whole response handed over once, finished.
    int completions = 0;
    openai::ResponsesReply reply(
        parsed, echo, 1700000000, nullptr, "resp_stored",
        [&completions](const nlohmann::ordered_json& response) {
          ++completions;
          check(response["id"] == "resp_stored" &&
                    (response["status"] == "completed" || response["status"] == "incomplete"),
                "a stored response is handed over finished, under its id");
        });
    if (!stream) {
      for (const kvserve::v1::GenerateResponse& message : messages)
        reply.add(message);
      const Json whole = parse_document(reply.body());
      check(whole.value("object", "") == "response" && whole["output"].is_array() &&
                whole.value("model", "") == kServedModel,
            "a whole Responses reply is a response object with its output items");
      check(completions == 1, "a whole Responses reply is stored once");
      continue;
    }
    // One call a statement: the operands of + are evaluated in no set order.
    std::string events = reply.event(messages[0]);
    events += reply.event(messages[1]);
    events += reply.closing_events();
    size_t pos = 0;
    int64_t sequence = 0;
    std::string last;
    while (pos < events.size()) {
      const size_t data = events.find("\ndata: ", pos);
      const size_t end = events.find("\n\n", pos);
      check(events.compare(pos, 7, "event: ") == 0 && data != std::string::npos && end != std::string::npos &&
                data < end,
            "every Responses event is an event line and a data line, then a blank line");
      last = events.substr(pos + 7, data - pos - 7);
      const Json event = parse_document(events.substr(data + 7, end - data - 7));
      check(event.value("type", "") == last && event.value("sequence_number", -1) == sequence++,
            "a Responses event's data has its type and the next sequence number");
      pos = end + 2;
    }
    check(last == "response.completed" || last == "response.incomplete",
          "a Responses stream ends with response.completed or response.incomplete");
    check(completions == 1, "a streamed Responses reply is stored once");
  }
}

// The same body read as Anthropic's POST /v1/messages: refused with INVALID_ARGUMENT or NOT_FOUND
// (its error body Anthropic's object), or read into a chat request whose reply to two made-up
// messages is a message object whole, and streamed Messages events ("event: T" and JSON data of
// type T) from message_start to message_stop, each block's deltas between its start and stop.
// count_tokens reads it too.
void check_messages(std::string_view body, const openai::ServedApi& served) {
  openai::ParsedTokenize count;
  if (const kvserve::Status s = kvserve::anthropic::parse_count_tokens_request(body, served, &count); !s.ok())
    check(s.code() == kvserve::StatusCode::kInvalidArgument || s.code() == kvserve::StatusCode::kNotFound,
          "a refused count_tokens body gets INVALID_ARGUMENT or NOT_FOUND");
  else
    check(count.tokenize.has_chat(), "count_tokens counts a conversation");
  openai::ParsedRequest parsed;
  const kvserve::Status status = kvserve::anthropic::parse_messages_request(body, served, &parsed);
  if (!status.ok()) {
    check(status.code() == kvserve::StatusCode::kInvalidArgument ||
              status.code() == kvserve::StatusCode::kNotFound,
          "a refused /v1/messages body gets INVALID_ARGUMENT or NOT_FOUND");
    const Json error = parse_document(kvserve::anthropic::error_body(400, status.message()));
    check(error.value("type", "") == "error" && error["error"].value("type", "") == "invalid_request_error" &&
              error["error"].value("message", Json()).is_string(),
          "an Anthropic error body is {\"type\": \"error\", \"error\": {\"type\", \"message\"}}");
    return;
  }
  check(parsed.endpoint == openai::Endpoint::kChatCompletions && parsed.generate.has_chat() &&
            parsed.more_prompts.empty() && parsed.generate.n() <= 1 &&
            parsed.generate.stop().max_tokens() >= 1,
        "a Messages request is one chat request of one choice, with its max_tokens");
  std::array<kvserve::v1::GenerateResponse, 2> messages = two_messages(body);
  if (body.size() % 3 == 0 && parsed.generate.stop().stop_size() > 0)
    messages[1].set_stop_string(parsed.generate.stop().stop(0));
  messages[1].mutable_usage()->set_prompt_tokens(7);
  messages[1].mutable_usage()->set_cached_prompt_tokens(body.size() % 9);  // may exceed the prompt
  messages[1].mutable_usage()->set_completion_tokens(2);
  const auto check_blocks = [](const Json& content) {
    for (const Json& block : content)
      check(block.is_object() && (block["type"] == "text" || block["type"] == "thinking" ||
                                  (block["type"] == "tool_use" && block["input"].is_object() &&
                                   block["id"].is_string() && block["name"].is_string())),
            "a content block is text, thinking, or a tool_use with an id, a name and an input object");
  };
  for (const bool stream : {false, true}) {
    parsed.stream = stream;
    kvserve::anthropic::MessagesReply reply(parsed, nullptr);
    if (!stream) {
      for (const kvserve::v1::GenerateResponse& message : messages)
        reply.add(message);
      const Json whole = parse_document(reply.body());
      check(whole.value("type", "") == "message" && whole["content"].is_array() &&
                whole.value("model", "") == kServedModel && whole["stop_reason"].is_string() &&
                whole["usage"]["input_tokens"].is_number_unsigned(),
            "a whole Messages reply is a message object with content blocks, a stop reason and usage");
      check_blocks(whole["content"]);
      continue;
    }
    std::string events = reply.event(messages[0]);
    events += reply.event(messages[1]);
    events += reply.closing_events();
    size_t pos = 0;
    std::vector<std::string> types;
    int64_t open_block = -1, blocks = 0;
    while (pos < events.size()) {
      const size_t data = events.find("\ndata: ", pos);
      const size_t end = events.find("\n\n", pos);
      check(events.compare(pos, 7, "event: ") == 0 && data != std::string::npos && end != std::string::npos &&
                data < end,
            "every Messages event is an event line and a data line, then a blank line");
      types.push_back(events.substr(pos + 7, data - pos - 7));
      const Json event = parse_document(events.substr(data + 7, end - data - 7));
      check(event.value("type", "") == types.back(), "a Messages event's data has its type");
      if (types.back() == "content_block_start") {
        check(open_block == -1 && event["index"] == blocks,
              "a block starts after the last one stopped, numbered");
        check_blocks(Json::array({event["content_block"]}));
        open_block = blocks++;
      } else if (types.back() == "content_block_delta") {
        check(event["index"] == open_block, "a delta is the open block's");
      } else if (types.back() == "content_block_stop") {
        check(event["index"] == open_block, "the open block stops");
        open_block = -1;
      }
      pos = end + 2;
    }
    check(!types.empty() && types.front() == "message_start" && types.back() == "message_stop" &&
              types.size() >= 3 && types[types.size() - 2] == "message_delta" && open_block == -1,
          "a Messages stream runs from message_start, through message_delta, to message_stop, every block "
          "stopped");
  }
}

// The body's own JSON where parse_request took it (so it is JSON and not too deep), to check
// fields whose proto zero means "not set" against what the client sent.
Json body_json(std::string_view body) {
  return Json::parse(body, nullptr, /*allow_exceptions=*/false);
}

bool sent_number(const Json& body, const char* key) {
  auto it = body.find(key);
  return it != body.end() && it->is_number();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return -1;
  const openai::Endpoint endpoint =
      data[0] % 2 ? openai::Endpoint::kChatCompletions : openai::Endpoint::kCompletions;
  const std::string_view body(reinterpret_cast<const char*>(data) + 1, size - 1);

  static constexpr kvserve::ToolCallFormat kFormats[] = {
      kvserve::ToolCallFormat::kNone, kvserve::ToolCallFormat::kHermes, kvserve::ToolCallFormat::kLlama3Json,
      kvserve::ToolCallFormat::kMistral};
  const kvserve::ToolCallFormat format = kFormats[(data[0] >> 1) % 4];
  openai::ServedApi served{.model = kServedModel, .tool_call_format = format};
  if (format == kvserve::ToolCallFormat::kMistral)
    served.tool_call_control_markers = {"[TOOL_CALLS]", "[ARGS]"};

  // The same body read as /tokenize and /detokenize: refused or not, never anything but a Status.
  openai::ParsedTokenize tokenize;
  if (const kvserve::Status s = openai::parse_tokenize_request(body, served, &tokenize); !s.ok())
    check(s.code() == kvserve::StatusCode::kInvalidArgument || s.code() == kvserve::StatusCode::kNotFound,
          "a refused /tokenize body gets INVALID_ARGUMENT or NOT_FOUND");
  else
    check(!(tokenize.tokenize.has_chat() && !tokenize.tokenize.text().empty()),
          "a /tokenize body is a prompt or a conversation, not both");
  kvserve::v1::DetokenizeRequest detokenize;
  if (const kvserve::Status s = openai::parse_detokenize_request(body, served, &detokenize); !s.ok())
    check(s.code() == kvserve::StatusCode::kInvalidArgument || s.code() == kvserve::StatusCode::kNotFound,
          "a refused /detokenize body gets INVALID_ARGUMENT or NOT_FOUND");

  check_responses(body, served);
  check_messages(body, served);

  openai::ParsedRequest parsed;
  const kvserve::Status status = openai::parse_request(endpoint, body, served, &parsed);
  if (!status.ok()) {
    if (kvserve::fuzz::verbose()) std::fprintf(stderr, "parse_request: %s\n", status.message().c_str());
    check(status.code() == kvserve::StatusCode::kInvalidArgument ||
              status.code() == kvserve::StatusCode::kNotFound,
          "a refused body gets INVALID_ARGUMENT or NOT_FOUND");
    const bool unknown_model = status.code() == kvserve::StatusCode::kNotFound;
    if (unknown_model) {
      const Json json = body_json(body);
      check(json.is_object() && json.contains("model") && json["model"].is_string() &&
                !json["model"].get<std::string>().empty() && json["model"] != kServedModel,
            "NOT_FOUND only for a body naming another model");
    }
    check_error_reply(unknown_model ? 404 : 400, status.message(),
                      unknown_model ? "model_not_found" : "invalid_argument");
    return 0;
  }

  // Accepted: what the reply and the gRPC service rely on.
  const kvserve::v1::GenerateRequest& generate = parsed.generate;
  const bool chat = endpoint == openai::Endpoint::kChatCompletions;
  check(parsed.endpoint == endpoint, "the parsed request keeps its endpoint");
  check(generate.input_case() != kvserve::v1::GenerateRequest::INPUT_NOT_SET,
        "an accepted body has an input");
  check((generate.input_case() == kvserve::v1::GenerateRequest::kChat) == chat,
        "the input is a chat exactly for the chat endpoint");
  const kvserve::v1::SamplingParams& sampling = generate.sampling();
  check(sampling.top_p() == 0.0f || (sampling.top_p() > 0.0f && sampling.top_p() <= 1.0f),
        "top_p is unset (0) or in (0, 1]");
  check(sampling.repetition_penalty() == 0.0f || sampling.repetition_penalty() > 0.0f,
        "repetition_penalty is unset (0) or over 0");
  check(generate.stop().max_tokens() == 0 || generate.stop().max_tokens() >= 1,
        "max_tokens is unset (0) or at least 1");
  check(generate.top_logprobs() <= 20, "top_logprobs is at most 20");
  check(parsed.model == kServedModel, "the reply names the served model");
  // The HTTP server sends the request over gRPC's in-process channel, which serializes it: proto3
  // strings must be valid UTF-8 for the service to parse it back.
  std::string wire;
  kvserve::v1::GenerateRequest round_trip;
  check(generate.SerializeToString(&wire) && round_trip.ParseFromString(wire),
        "the request survives the in-process channel's serialization");
  for (const kvserve::v1::GenerateRequest& more : parsed.more_prompts) {
    check(!chat && more.input_case() != kvserve::v1::GenerateRequest::INPUT_NOT_SET &&
              google::protobuf::util::MessageDifferencer::Equals(more.sampling(), sampling) &&
              more.SerializeToString(&wire) && round_trip.ParseFromString(wire),
          "each further prompt is a completions request of its own with the first one's sampling");
  }
  check(!generate.has_response_format() ||
            generate.response_format().format_case() != kvserve::v1::ResponseFormat::FORMAT_NOT_SET,
        "a response_format that is set says what the output must be");
  check(!parsed.tool_calls || (chat && !generate.chat().tools_json().empty()),
        "replies are read for tool calls only in a chat whose tools the template renders");
  // A value the client sent must not become the proto's "not set", which means something else.
  const Json json = body_json(body);
  check(json.is_object(), "an accepted body is a JSON object");
  check(!sent_number(json, "top_p") || sampling.top_p() > 0.0f,
        "a top_p the body sends is not read as unset");
  check(!sent_number(json, "repetition_penalty") || sampling.repetition_penalty() > 0.0f,
        "a repetition_penalty the body sends is not read as unset");
  check(!sent_number(json, "n") || generate.n() >= 1, "an n the body sends is not read as unset");
  check(!(sent_number(json, "max_tokens") || (chat && sent_number(json, "max_completion_tokens"))) ||
            generate.stop().max_tokens() >= 1,
        "a max_tokens the body sends is not read as unset");

  check_replies(parsed, body);
  if (kvserve::fuzz::verbose())
    std::fprintf(stderr, "parse_request: accepted (%s)\n", chat ? "chat" : "completions");
  if (const kvserve::Status s = kvserve::fuzz::admit_and_check(*fixture, generate); !s.ok())
    check_error_reply(400, s.message(), "invalid_argument");
  return 0;
}
