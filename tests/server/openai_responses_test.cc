// The Responses API's translation, both ways: request bodies into the chat request they stand for
// (every field, every refusal naming the Responses field), and gRPC messages into a response
// object and the Responses stream's events. Expected values are written from OpenAI's API
// reference for /v1/responses, not from the code's output.
#include "server/openai_responses.h"
#include "tests/server/reply_messages.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <memory>
#include <string>
#include <vector>

namespace kvserve::openai {
namespace {

using Json = nlohmann::json;

constexpr const char* kModel = "my-model";
const ServedApi kServed{.model = kModel};
const ServedApi kServedHermes{.model = kModel, .tool_call_format = ToolCallFormat::kHermes};

struct Parsed {
  ParsedRequest request;
  nlohmann::ordered_json echo;
  ResponsesTurn turn;
};

// `find_stored` empty: a server that stores no responses.
Parsed parse_ok(const std::string& body, const ServedApi& served = kServed,
                const FindStoredResponse& find_stored = {}) {
  Parsed out;
  const Status s = parse_responses_request(body, served, find_stored, &out.request, &out.echo, &out.turn);
  EXPECT_TRUE(s.ok()) << body << " -> " << s.message();
  return out;
}

// The message of a refused body; fails the test if it was accepted.
std::string refusal(const std::string& body, StatusCode code = StatusCode::kInvalidArgument,
                    const FindStoredResponse& find_stored = {}) {
  Parsed out;
  const Status s = parse_responses_request(body, kServed, find_stored, &out.request, &out.echo, &out.turn);
  EXPECT_FALSE(s.ok()) << body << " was accepted";
  EXPECT_EQ(s.code(), code) << body << " -> " << s.message();
  return s.message();
}

TEST(ResponsesRequest, InstructionsAndATextInputAreASystemAndAUserMessage) {
  const Parsed p = parse_ok(R"({"model": "my-model", "instructions": "Be brief.", "input": "Hi",
      "max_output_tokens": 5, "temperature": 0.5, "top_p": 0.9, "metadata": {"k": "v"}, "store": true,
      "user": "ann", "truncation": "disabled", "include": [], "reasoning": null})");
  const ParsedRequest& r = p.request;
  EXPECT_EQ(r.endpoint, Endpoint::kChatCompletions);
  const v1::Chat& chat = r.generate.chat();
  ASSERT_EQ(chat.messages_size(), 2);
  EXPECT_EQ(chat.messages(0).role(), "system");
  EXPECT_EQ(chat.messages(0).content(), "Be brief.");
  EXPECT_EQ(chat.messages(1).role(), "user");
  EXPECT_EQ(chat.messages(1).content(), "Hi");
  EXPECT_EQ(r.generate.stop().max_tokens(), 5u);
  EXPECT_FLOAT_EQ(r.generate.sampling().temperature(), 0.5f);
  EXPECT_FLOAT_EQ(r.generate.sampling().top_p(), 0.9f);
  EXPECT_FALSE(r.stream);
  EXPECT_EQ(r.model, kModel);
  // What a response object repeats of its request.
  EXPECT_EQ(Json::parse(p.echo.dump()), Json::parse(R"({"instructions": "Be brief.", "max_output_tokens": 5,
      "metadata": {"k": "v"}, "temperature": 0.5, "top_p": 0.9, "user": "ann"})"));
  // OpenAI's default temperature is 1 here too; stream goes through.
  const Parsed defaults = parse_ok(R"({"input": "Hi", "stream": true})");
  EXPECT_FLOAT_EQ(defaults.request.generate.sampling().temperature(), 1.0f);
  EXPECT_TRUE(defaults.request.stream);
  EXPECT_EQ(defaults.request.generate.stop().max_tokens(), 0u);  // the server's default
}

TEST(ResponsesRequest, InputItemsBecomeChatTurns) {
  // A conversation with a function call and its output: the assistant's text and its call are one
  // chat turn; a developer message is a system one; reasoning items are left out.
  const Parsed p = parse_ok(R"({"input": [
      {"role": "developer", "content": "Use tools."},
      {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "one"},
                                                      {"type": "input_text", "text": "two"}]},
      {"type": "reasoning", "id": "rs_1", "summary": []},
      {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Let me look."}]},
      {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{\"a\": 1}"},
      {"type": "function_call", "call_id": "call_2", "name": "g", "arguments": "{}"},
      {"type": "function_call_output", "call_id": "call_1", "output": "42"},
      {"type": "function_call_output", "call_id": "call_2", "output": [{"type": "input_text", "text": "ok"}]}]})");
  const v1::Chat& chat = p.request.generate.chat();
  ASSERT_EQ(chat.messages_size(), 5);
  EXPECT_EQ(chat.messages(0).role(), "system");
  EXPECT_EQ(chat.messages(0).content(), "Use tools.");
  EXPECT_EQ(chat.messages(1).role(), "user");
  EXPECT_EQ(chat.messages(1).content(), "one\ntwo");
  EXPECT_EQ(chat.messages(2).role(), "assistant");
  EXPECT_EQ(chat.messages(2).content(), "Let me look.");
  // The calls reach the template as chat's tool_calls, arguments as objects (as templates read them).
  EXPECT_EQ(Json::parse(chat.messages(2).extra_json()), Json::parse(R"({"tool_calls": [
      {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": {"a": 1}}},
      {"id": "call_2", "type": "function", "function": {"name": "g", "arguments": {}}}]})"));
  EXPECT_EQ(chat.messages(3).role(), "tool");
  EXPECT_EQ(chat.messages(3).content(), "42");
  EXPECT_EQ(Json::parse(chat.messages(3).extra_json()), Json::parse(R"({"tool_call_id": "call_1"})"));
  EXPECT_EQ(chat.messages(4).content(), "ok");
  // A call with no text before it is an assistant turn of its own, with null content.
  const Parsed alone = parse_ok(R"({"input": [{"role": "user", "content": "x"},
      {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"}]})");
  ASSERT_EQ(alone.request.generate.chat().messages_size(), 2);
  EXPECT_EQ(Json::parse(alone.request.generate.chat().messages(1).extra_json())["content"], nullptr);
}

TEST(ResponsesRequest, FunctionToolsToolChoiceAndTextFormatAreChatsOwn) {
  const std::string tools =
      R"("tools": [{"type": "function", "name": "get_weather", "description": "Weather.",
      "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
      "strict": true}])";
  const Parsed p = parse_ok(R"({"input": "Oslo?", )" + tools + "}", kServedHermes);
  EXPECT_EQ(Json::parse(p.request.generate.chat().tools_json()), Json::parse(R"([{"type": "function",
      "function": {"name": "get_weather", "description": "Weather.", "parameters": {"type": "object",
      "properties": {"city": {"type": "string"}}, "required": ["city"]}, "strict": true}}])"));
  ASSERT_TRUE(p.request.tool_calls.has_value());  // "auto": the model's own format is read
  EXPECT_EQ(Json::parse(p.echo.dump())["tools"][0]["name"], "get_weather");  // echoed as sent

  // A named function: the reply is constrained to its arguments, as chat's named tool_choice.
  const Parsed named = parse_ok(R"({"input": "x", )" + tools +
                                R"(, "tool_choice": {"type": "function", "name": "get_weather"}})");
  ASSERT_TRUE(named.request.tool_calls.has_value());
  EXPECT_TRUE(named.request.generate.has_response_format());
  EXPECT_FALSE(named.request.tool_calls->calls_end_the_turn());  // "stop", as OpenAI's named calls
  EXPECT_FALSE(parse_ok(R"({"input": "x", )" + tools + R"(, "tool_choice": "none"})").request.tool_calls);

  // text.format: a JSON schema or any JSON object constrains the reply; plain text does not.
  const Parsed schema = parse_ok(R"({"input": "x", "text": {"format": {"type": "json_schema", "name": "w",
      "schema": {"type": "object", "properties": {"t": {"type": "integer"}}, "required": ["t"]}, "strict": true}}})");
  EXPECT_TRUE(schema.request.generate.has_response_format());
  EXPECT_TRUE(parse_ok(R"({"input": "x", "text": {"format": {"type": "json_object"}}})")
                  .request.generate.has_response_format());
  EXPECT_FALSE(parse_ok(R"({"input": "x", "text": {"format": {"type": "text"}}})")
                   .request.generate.has_response_format());
}

TEST(ResponsesRequest, WhatCannotBeHonouredIsRefusedNamingTheField) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"({"input": "x", "previous_response_id": "resp_1"})",
       "previous_response_id: this server stores no responses (it runs with --responses-store-mb 0)"},
      {R"({"input": "x", "conversation": "conv_1"})", "conversation: kvserve keeps no conversation objects"},
      {R"({"input": "x", "store": "yes"})", "store: expected true or false"},
      {R"({"input": "x", "background": true})", "background: not supported"},
      {R"({"input": "x", "include": ["message.output_text.logprobs"]})",
       "include: \"message.output_text.logprobs\": kvserve adds nothing"},
      {R"({"input": "x", "max_tokens": 5})",
       "max_tokens: that is /v1/chat/completions' field; send max_output_tokens"},
      {R"({"messages": [{"role": "user", "content": "x"}]})",
       "messages: that is /v1/chat/completions' field"},
      {R"({"input": "x", "response_format": {"type": "json_object"}})", "response_format: that is"},
      {R"({"input": "x", "n": 2})", "n: one output per response"},
      // The chat parser's own checks, named as this request named the fields.
      {R"({"input": "x", "tools": [{"type": "function", "name": ""}]})", "tools[0].name: "},
      {R"({"input": "x", "tools": [{"type": "function", "name": "f", "parameters": 7}]})",
       "tools[0].parameters: "},
      {R"({"input": "x", "tools": [{"type": "function", "name": "f"}], "tool_choice": {"type": "function",
          "name": "g"}})",
       "tool_choice.name: "},
      {R"({"input": "x", "text": {"format": {"type": "json_schema", "name": "n"}}})", "text.format"},
      {R"({"input": "x", "truncation": "auto"})", "truncation: only \"disabled\""},
      {R"({"input": "x", "top_logprobs": 3})", "top_logprobs: logprobs are not returned"},
      {R"({"input": "x", "max_tool_calls": 2})", "max_tool_calls: not supported"},
      {R"({"input": "x", "max_output_tokens": 0})", "max_output_tokens: expected a positive integer"},
      {R"({"input": "x", "tools": [{"type": "web_search"}]})", "tools[0].type: only \"function\" tools"},
      {R"({"input": "x", "tools": [{"type": "function"}]})", "tools[0].name: expected the function's name"},
      {R"({"input": "x", "tool_choice": {"type": "file_search"}})", "tool_choice: expected \"none\""},
      {R"({"input": "x", "text": {"format": {"type": "xml"}}})", "text.format.type: expected \"text\""},
      {R"({})", "input: expected a string or a list of input items"},
      {R"({"input": []})", "input: holds no message"},
      {R"({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "u"}]}]})",
       "input[0].content[0].type: only text parts"},
      {R"({"input": [{"role": "critic", "content": "x"}]})", "input[0].role: \"critic\" is not a role"},
      {R"({"input": [{"type": "item_reference", "id": "msg_1"}]})",
       "input[0].type: \"item_reference\" items"},
      {R"({"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "[1]"}]})",
       "input[0].arguments: expected the JSON text of an object"},
      {R"({"input": [{"type": "function_call", "name": "f", "arguments": "{}"}]})",
       "input[0].call_id: expected a string"},
      {R"({"input": [{"type": "function_call_output", "call_id": "c"}]})", "input[0].output: expected"},
      {R"([1])", "request body: expected a JSON object"},
  };
  for (const auto& [body, message] : cases)
    EXPECT_EQ(refusal(body).rfind(message, 0), 0u) << body << " -> " << refusal(body);
  EXPECT_NE(refusal(R"({"input": "x", "model": "other"})", StatusCode::kNotFound).find("other"),
            std::string::npos);
}

TEST(ResponsesRequest, WhatClientsSendAlwaysIsTakenAsMeaningNothing) {
  // Clients that replay encrypted reasoning ask for it; "auto" (or "none") without tools; a call
  // with no arguments written as "" (as the chat endpoint reads it).
  EXPECT_EQ(parse_ok(R"({"input": "x", "include": ["reasoning.encrypted_content"], "tool_choice": "auto",
      "tools": [], "store": true, "reasoning": {"effort": "low"}, "text": {"verbosity": "low"},
      "service_tier": "auto", "safety_identifier": "s", "prompt_cache_key": "k"})")
                .request.generate.chat()
                .messages_size(),
            1);
  EXPECT_FALSE(parse_ok(R"({"input": "x", "tool_choice": "none"})").request.tool_calls);
  const Parsed empty_arguments = parse_ok(R"({"input": [{"role": "user", "content": "x"},
      {"type": "function_call", "call_id": "c", "name": "f", "arguments": ""}]})");
  EXPECT_EQ(
      Json::parse(empty_arguments.request.generate.chat().messages(1).extra_json())["tool_calls"][0]
                                                                                   ["function"]["arguments"],
      Json::object());
}

// A stored response's items come before the request's input, its instructions do not (OpenAI's
// rule: instructions are the request's own); what the request would store is those items and its
// input, each with an id.
TEST(ResponsesRequest, APreviousResponsesItemsComeBeforeTheInput) {
  const auto stored = std::make_shared<const ResponseStore::Stored>(
      ResponseStore::Stored{.response = {},
                            .items = nlohmann::ordered_json::parse(R"([
          {"id": "msg_1", "type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]},
          {"id": "rs_1", "type": "reasoning", "summary": [], "content": [{"type": "reasoning_text", "text": "t"}]},
          {"id": "msg_2", "type": "message", "role": "assistant", "status": "completed",
           "content": [{"type": "output_text", "text": "Let me look.", "annotations": []}]},
          {"id": "fc_1", "type": "function_call", "status": "completed", "call_id": "call_1", "name": "f",
           "arguments": "{}"}])"),
                            .input_items = 1});
  std::vector<std::string> asked;
  const FindStoredResponse find = [&](const std::string& id) {
    asked.push_back(id);
    return id == "resp_1" ? stored : nullptr;
  };
  const Parsed p = parse_ok(R"({"previous_response_id": "resp_1", "instructions": "Be brief.",
      "input": [{"type": "function_call_output", "call_id": "call_1", "output": "42"},
                {"role": "user", "content": "and?", "id": "msg_mine"}]})",
                            kServed, find);
  EXPECT_EQ(asked, std::vector<std::string>{"resp_1"});
  const v1::Chat& chat = p.request.generate.chat();
  ASSERT_EQ(chat.messages_size(), 5);
  EXPECT_EQ(chat.messages(0).role(), "system");
  EXPECT_EQ(chat.messages(0).content(), "Be brief.");
  EXPECT_EQ(chat.messages(1).role(), "user");
  EXPECT_EQ(chat.messages(1).content(), "Hi");
  EXPECT_EQ(chat.messages(2).role(), "assistant");
  EXPECT_EQ(chat.messages(2).content(), "Let me look.");
  EXPECT_EQ(Json::parse(chat.messages(2).extra_json())["tool_calls"][0]["id"], "call_1");
  EXPECT_EQ(chat.messages(3).role(), "tool");
  EXPECT_EQ(chat.messages(4).content(), "and?");
  EXPECT_EQ(p.echo["previous_response_id"], "resp_1");
  EXPECT_TRUE(p.turn.store);
  // To store: the previous items as they were, then the input's, given an id where they had none.
  ASSERT_EQ(p.turn.input_items.size(), 6u);
  for (size_t i = 0; i < 4; ++i)
    EXPECT_EQ(p.turn.input_items[i], stored->items[i]) << i;
  EXPECT_EQ(p.turn.input_items[4]["type"], "function_call_output");
  EXPECT_EQ(p.turn.input_items[4]["id"].get<std::string>().rfind("fco_", 0), 0u) << p.turn.input_items[4];
  EXPECT_EQ(
      Json::parse(p.turn.input_items[5].dump()),
      Json::parse(R"({"role": "user", "content": [{"type": "input_text", "text": "and?"}], "id": "msg_mine",
                "type": "message"})"));

  // A string input is stored as the user message it stands for; store false is the request's.
  const Parsed text = parse_ok(R"({"input": "Hello", "store": false})", kServed, find);
  EXPECT_FALSE(text.turn.store);
  ASSERT_EQ(text.turn.input_items.size(), 1u);
  Json item = Json::parse(text.turn.input_items[0].dump());
  EXPECT_EQ(item["id"].get<std::string>().rfind("msg_", 0), 0u) << item;
  item.erase("id");
  EXPECT_EQ(item, Json::parse(R"({"type": "message", "role": "user",
      "content": [{"type": "input_text", "text": "Hello"}]})"));

  // A reasoning item of the input is not kept (templates take none); an assistant's text is output text.
  const Parsed reasoned = parse_ok(R"({"input": [{"role": "user", "content": "x"},
      {"type": "reasoning", "id": "rs_2", "summary": []}, {"role": "assistant", "content": "y"}]})");
  ASSERT_EQ(reasoned.turn.input_items.size(), 2u);
  EXPECT_EQ(reasoned.turn.input_items[1]["content"][0]["type"], "output_text");

  // A response that is not stored (for this key) is refused naming the field and what to do.
  const std::string missing =
      refusal(R"({"previous_response_id": "resp_2", "input": "x"})", StatusCode::kInvalidArgument, find);
  EXPECT_EQ(missing.rfind("previous_response_id: no response \"resp_2\" is stored for this API key", 0), 0u)
      << missing;
  EXPECT_NE(missing.find("send the whole conversation in input"), std::string::npos) << missing;
  EXPECT_EQ(refusal(R"({"previous_response_id": 7, "input": "x"})", StatusCode::kInvalidArgument, find),
            "previous_response_id: expected a string (a response's id)");
}

// What a stored conversation keeps of a response's output: what a next turn can take.
TEST(ResponsesRequest, AConversationKeepsTheOutputItemsANextTurnCanTake) {
  const nlohmann::ordered_json input = nlohmann::ordered_json::parse(
      R"([{"id": "msg_1", "type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]}])");
  const nlohmann::ordered_json output = nlohmann::ordered_json::parse(R"([
      {"id": "rs_1", "type": "reasoning", "summary": [], "content": [{"type": "reasoning_text", "text": "t"}]},
      {"id": "msg_2", "type": "message", "role": "assistant", "status": "completed",
       "content": [{"type": "output_text", "text": "Let me look.", "annotations": []}]},
      {"id": "fc_1", "type": "function_call", "status": "completed", "call_id": "call_1", "name": "f",
       "arguments": "{\"city\": \"Oslo\"}"},
      {"id": "fc_2", "type": "function_call", "status": "incomplete", "call_id": "call_2", "name": "f",
       "arguments": "{\"city\": \"Os"}])");
  const nlohmann::ordered_json items = conversation_items(input, output);
  ASSERT_EQ(items.size(), 3u) << items.dump();
  EXPECT_EQ(items[0], input[0]);
  EXPECT_EQ(items[1], output[1]);
  EXPECT_EQ(items[2], output[2]);  // the reasoning and the call cut off are left out
}

TEST(ResponsesRequest, InstructionsAndLeadingDeveloperMessagesAreOneSystemMessage) {
  // Many chat templates take one system message, first: instructions and the system or developer
  // messages that lead the input are joined; a later one stays where it is.
  const Parsed p = parse_ok(R"({"instructions": "Be brief.", "input": [
      {"role": "developer", "content": "Use tools."},
      {"role": "system", "content": [{"type": "input_text", "text": "a"}, {"type": "input_text", "text": "b"}]},
      {"role": "user", "content": "x"}, {"role": "developer", "content": "Later."}]})");
  const v1::Chat& chat = p.request.generate.chat();
  ASSERT_EQ(chat.messages_size(), 3);
  EXPECT_EQ(chat.messages(0).role(), "system");
  EXPECT_EQ(chat.messages(0).content(), "Be brief.\n\nUse tools.\n\na\nb");
  EXPECT_EQ(chat.messages(1).role(), "user");
  EXPECT_EQ(chat.messages(2).role(), "system");
  EXPECT_EQ(chat.messages(2).content(), "Later.");
}

using testing::events_of;
using testing::Replies;
using testing::reply_message;
using testing::types_of;

// The reply to `messages` both ways: the whole body, and the stream's events.
Replies replies(const std::string& body, const ServedApi& served,
                const std::vector<v1::GenerateResponse>& messages) {
  const Parsed whole = parse_ok(body, served);
  Parsed streamed = parse_ok(body, served);
  streamed.request.stream = true;
  ResponsesReply whole_reply(whole.request, whole.echo, 1700000000, nullptr);
  ResponsesReply streamed_reply(streamed.request, streamed.echo, 1700000000, nullptr);
  return testing::replies_both_ways(whole_reply, streamed_reply, messages);
}

// The ids of output items are random: `item` without its id, which must have `prefix`.
Json without_id(Json item, const std::string& prefix) {
  EXPECT_EQ(item["id"].get<std::string>().rfind(prefix, 0), 0u) << item;
  EXPECT_EQ(item["id"].get<std::string>().size(), prefix.size() + 24) << item;
  item.erase("id");
  return item;
}

TEST(ResponsesReply, TextIsAMessageItemWithTheUsageInResponsesTerms) {
  const Replies r =
      replies(R"({"input": "x", "instructions": "Be brief.", "max_output_tokens": 3})", kServed,
              {reply_message("Hel"), reply_message(""), reply_message("lo", v1::FINISH_REASON_STOP)});
  Json whole = r.whole;
  ASSERT_EQ(whole["output"].size(), 1u);
  EXPECT_EQ(without_id(whole["output"][0], "msg_"), Json::parse(R"({"type": "message", "status": "completed",
      "role": "assistant", "content": [{"type": "output_text", "text": "Hello", "annotations": [], "logprobs": []}]})"));
  whole.erase("output");
  EXPECT_EQ(whole, Json::parse(R"({"id": "resp_r7", "object": "response", "created_at": 1700000000,
      "status": "completed", "background": false, "error": null, "incomplete_details": null,
      "instructions": "Be brief.", "max_output_tokens": 3, "model": "my-model", "parallel_tool_calls": true,
      "previous_response_id": null, "reasoning": {"effort": null, "summary": null}, "store": false,
      "temperature": 1.0, "text": {"format": {"type": "text"}}, "tool_choice": "auto", "tools": [],
      "top_p": 1.0, "truncation": "disabled",
      "usage": {"input_tokens": 12, "input_tokens_details": {"cached_tokens": 8}, "output_tokens": 3,
                "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 15},
      "user": null, "metadata": {}})"));

  // Streamed: the Responses events in order, numbered from 0; the deltas join to the text, and the
  // last event's response is the whole reply.
  EXPECT_EQ(types_of(r.events),
            (std::vector<std::string>{"response.created", "response.in_progress",
                                      "response.output_item.added", "response.content_part.added",
                                      "response.output_text.delta", "response.output_text.delta",
                                      "response.output_text.done", "response.content_part.done",
                                      "response.output_item.done", "response.completed"}));
  std::string text;
  for (size_t i = 0; i < r.events.size(); ++i) {
    EXPECT_EQ(r.events[i]["sequence_number"], i);
    if (r.events[i]["type"] == "response.output_text.delta") text += r.events[i]["delta"].get<std::string>();
  }
  EXPECT_EQ(text, "Hello");
  EXPECT_EQ(r.events[0]["response"]["status"], "in_progress");
  EXPECT_EQ(r.events[0]["response"]["output"], Json::array());
  EXPECT_EQ(r.events[0]["response"]["usage"], nullptr);
  const std::string item_id = r.events[2]["item"]["id"];
  for (size_t i = 3; i < 8; ++i)
    EXPECT_EQ(r.events[i]["item_id"], item_id) << r.events[i];
  EXPECT_EQ(r.events[6]["text"], "Hello");
  Json completed = r.events.back()["response"];
  EXPECT_EQ(completed["output"][0]["id"], item_id);
  completed["output"][0].erase("id");
  whole = r.whole;
  whole["output"][0].erase("id");
  EXPECT_EQ(completed, whole);
}

TEST(ResponsesReply, OutputCutAtMaxOutputTokensIsIncomplete) {
  const Replies r = replies(R"({"input": "x", "max_output_tokens": 3})", kServed,
                            {reply_message("abc", v1::FINISH_REASON_LENGTH)});
  EXPECT_EQ(r.whole["status"], "incomplete");
  EXPECT_EQ(r.whole["incomplete_details"], Json::parse(R"({"reason": "max_output_tokens"})"));
  EXPECT_EQ(r.whole["output"][0]["status"], "incomplete");
  EXPECT_EQ(r.events.back()["type"], "response.incomplete");
  EXPECT_EQ(r.events.back()["response"]["status"], "incomplete");
  EXPECT_EQ(r.events[r.events.size() - 2]["item"]["status"], "incomplete");
}

TEST(ResponsesReply, ToolCallsAreFunctionCallItemsAfterTheText) {
  const std::string body = R"({"input": "Oslo?", "tools": [{"type": "function", "name": "get_weather",
      "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]})";
  const Replies r =
      replies(body, kServedHermes,
              {reply_message("Checking.\n<tool"), reply_message("_call>\n{\"name\": \"get_weather\", "),
               reply_message("\"arguments\": {\"city\": \"Oslo\"}}\n</tool_call>", v1::FINISH_REASON_STOP)});
  ASSERT_EQ(r.whole["output"].size(), 2u);
  EXPECT_EQ(r.whole["status"], "completed");  // a turn that ends in calls is complete
  EXPECT_EQ(r.whole["output"][0]["content"][0]["text"], "Checking.");
  Json call = without_id(r.whole["output"][1], "fc_");
  const std::string call_id = call["call_id"];
  EXPECT_EQ(call_id.rfind("call_", 0), 0u);  // what the client answers with function_call_output
  call.erase("call_id");
  EXPECT_EQ(call, Json::parse(R"({"type": "function_call", "status": "completed",
      "arguments": "{\"city\":\"Oslo\"}", "name": "get_weather"})"));

  EXPECT_EQ(types_of(r.events),
            (std::vector<std::string>{
                "response.created", "response.in_progress", "response.output_item.added",
                "response.content_part.added", "response.output_text.delta", "response.output_text.done",
                "response.content_part.done", "response.output_item.done", "response.output_item.added",
                "response.function_call_arguments.delta", "response.function_call_arguments.done",
                "response.output_item.done", "response.completed"}));
  const Json& added = r.events[8];
  EXPECT_EQ(added["output_index"], 1);
  EXPECT_EQ(added["item"]["type"], "function_call");
  EXPECT_EQ(added["item"]["name"], "get_weather");
  EXPECT_EQ(added["item"]["arguments"], "");
  EXPECT_EQ(added["item"]["status"], "in_progress");
  EXPECT_EQ(r.events[9]["item_id"], added["item"]["id"]);
  EXPECT_EQ(r.events[9]["delta"], "{\"city\":\"Oslo\"}");
  EXPECT_EQ(r.events[10]["arguments"], "{\"city\":\"Oslo\"}");
  EXPECT_EQ(r.events[11]["item"]["status"], "completed");
}

// A named function: the reply is the call's arguments, streamed as they come, and nothing else
// (no empty message item before the call).
TEST(ResponsesReply, ANamedFunctionsArgumentsStreamAsTheyCome) {
  const std::string body = R"({"input": "Oslo?", "tools": [{"type": "function", "name": "get_weather",
      "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}],
      "tool_choice": {"type": "function", "name": "get_weather"}})";
  const Replies r = replies(
      body, kServed, {reply_message("{\"city\": "), reply_message("\"Oslo\"}", v1::FINISH_REASON_STOP)});
  ASSERT_EQ(r.whole["output"].size(), 1u) << r.whole;
  EXPECT_EQ(r.whole["output"][0]["type"], "function_call");
  EXPECT_EQ(r.whole["output"][0]["arguments"], "{\"city\": \"Oslo\"}");
  EXPECT_EQ(r.whole["status"], "completed");
  EXPECT_EQ(types_of(r.events),
            (std::vector<std::string>{
                "response.created", "response.in_progress", "response.output_item.added",
                "response.function_call_arguments.delta", "response.function_call_arguments.delta",
                "response.function_call_arguments.done", "response.output_item.done", "response.completed"}));
  EXPECT_EQ(r.events[3]["delta"], "{\"city\": ");
  EXPECT_EQ(r.events[4]["delta"], "\"Oslo\"}");
}

// Text, a call, more text: three items in order, each closed before the next is added; then two
// calls in one message ("required"), each an item of its own.
TEST(ResponsesReply, ItemsFollowTheReplyTextCallText) {
  const std::string body = R"({"input": "Oslo?", "tools": [{"type": "function", "name": "get_weather",
      "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]})";
  const Replies r = replies(
      body, kServedHermes,
      {reply_message("First.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {}}\n</tool_call>"),
       reply_message("\nThen more."), reply_message("", v1::FINISH_REASON_STOP)});
  ASSERT_EQ(r.whole["output"].size(), 3u) << r.whole;
  EXPECT_EQ(r.whole["output"][0]["content"][0]["text"], "First.");
  EXPECT_EQ(r.whole["output"][1]["type"], "function_call");
  EXPECT_EQ(r.whole["output"][2]["content"][0]["text"], "\nThen more.");
  for (const Json& item : r.whole["output"])
    EXPECT_EQ(item["status"], "completed") << item;
  // Streamed: each item's added and done events, in output order, none interleaved.
  std::vector<std::pair<std::string, int>> lifecycle;
  for (const Json& e : r.events)
    if (e["type"] == "response.output_item.added" || e["type"] == "response.output_item.done")
      lifecycle.emplace_back(e["type"], e["output_index"]);
  EXPECT_EQ(lifecycle, (std::vector<std::pair<std::string, int>>{{"response.output_item.added", 0},
                                                                 {"response.output_item.done", 0},
                                                                 {"response.output_item.added", 1},
                                                                 {"response.output_item.done", 1},
                                                                 {"response.output_item.added", 2},
                                                                 {"response.output_item.done", 2}}));

  const Replies required = replies(R"({"input": "x", "tool_choice": "required", "tools": [{"type": "function",
      "name": "f", "parameters": {"type": "object"}}, {"type": "function", "name": "g"}]})",
                                   kServed,
                                   {reply_message(R"([{"name": "f", "parameters": {"a": 1}}, {"name": "g", )"
                                                  R"("parameters": {}}])",
                                                  v1::FINISH_REASON_STOP)});
  ASSERT_EQ(required.whole["output"].size(), 2u) << required.whole;
  EXPECT_EQ(required.whole["output"][0]["name"], "f");
  EXPECT_EQ(required.whole["output"][0]["arguments"], "{\"a\":1}");
  EXPECT_EQ(required.whole["output"][1]["name"], "g");
  EXPECT_NE(required.whole["output"][0]["call_id"], required.whole["output"][1]["call_id"]);
  std::vector<std::string> done_names;
  for (const Json& e : required.events)
    if (e["type"] == "response.function_call_arguments.done") done_names.push_back(e["name"]);
  EXPECT_EQ(done_names, (std::vector<std::string>{"f", "g"}));
}

// A reply with no text and no call (EOS at once) is an empty message, as OpenAI's.
TEST(ResponsesReply, AnEmptyReplyIsAnEmptyMessage) {
  const Replies r = replies(R"({"input": "x"})", kServed, {reply_message("", v1::FINISH_REASON_STOP)});
  ASSERT_EQ(r.whole["output"].size(), 1u) << r.whole;
  EXPECT_EQ(r.whole["output"][0]["type"], "message");
  EXPECT_EQ(r.whole["output"][0]["content"][0]["text"], "");
  EXPECT_EQ(types_of(r.events),
            (std::vector<std::string>{"response.created", "response.in_progress",
                                      "response.output_item.added", "response.content_part.added",
                                      "response.output_text.done", "response.content_part.done",
                                      "response.output_item.done", "response.completed"}));
}

// A stored response: its id is the one given, it says store true, and it is handed over once,
// whole, when it completes (whole or streamed), never when it fails.
TEST(ResponsesReply, AStoredResponseIsHandedOverOnceWhenItCompletes) {
  for (const bool stream : {false, true}) {
    SCOPED_TRACE(stream ? "streamed" : "whole");
    Parsed p = parse_ok(R"({"input": "x", "previous_response_id": "resp_0"})", kServed,
                        [](const std::string&) { return std::make_shared<const ResponseStore::Stored>(); });
    p.request.stream = stream;
    p.echo["store"] = true;
    std::vector<Json> stored;
    ResponsesReply reply(
        p.request, p.echo, 1, nullptr, "resp_abc",
        [&](const nlohmann::ordered_json& response) { stored.push_back(Json::parse(response.dump())); });
    Json last;
    if (stream) {
      std::string events = reply.event(reply_message("He"));  // (one call a statement: in order)
      events += reply.event(reply_message("y", v1::FINISH_REASON_STOP));
      events += reply.closing_events();
      last = events_of(events).back()["response"];
      EXPECT_EQ(events_of(events).front()["response"]["id"], "resp_abc");
    } else {
      reply.add(reply_message("He"));
      reply.add(reply_message("y", v1::FINISH_REASON_STOP));
      last = Json::parse(reply.body());
    }
    ASSERT_EQ(stored.size(), 1u);
    EXPECT_EQ(stored[0], last);
    EXPECT_EQ(last["id"], "resp_abc");
    EXPECT_EQ(last["store"], true);
    EXPECT_EQ(last["previous_response_id"], "resp_0");
    EXPECT_EQ(last["output"][0]["content"][0]["text"], "Hey");
  }
  Parsed p = parse_ok(R"({"input": "x", "stream": true})");
  int stored = 0;
  ResponsesReply failing(p.request, p.echo, 1, nullptr, "resp_f",
                         [&](const nlohmann::ordered_json&) { ++stored; });
  failing.event(reply_message("a"));
  failing.failure_events(503, "the server is shutting down", "unavailable");
  EXPECT_EQ(stored, 0);
}

TEST(ResponsesReply, StoredResponseIdsAreLongAndRandom) {
  const std::string a = new_stored_response_id(), b = new_stored_response_id();
  EXPECT_NE(a, b);
  for (const std::string& id : {a, b}) {
    ASSERT_EQ(id.size(), 5u + 32u) << id;
    EXPECT_EQ(id.rfind("resp_", 0), 0u) << id;
    EXPECT_EQ(id.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789", 5), std::string::npos) << id;
  }
}

TEST(ResponsesReply, AFailureAfterTheStreamBeganIsAnErrorThenResponseFailed) {
  Parsed p = parse_ok(R"({"input": "x", "stream": true})");
  ResponsesReply reply(p.request, p.echo, 1, nullptr);
  EXPECT_EQ(events_of(reply.event(reply_message("a"))).size(),
            5u);  // created, in_progress, item, part, delta
  const std::vector<Json> failed =
      events_of(reply.failure_events(503, "the server is shutting down", "unavailable"));
  ASSERT_EQ(failed.size(), 2u);
  // OpenAI's codes, which clients retry on: server_error for 5xx, rate_limit_exceeded for 429.
  EXPECT_EQ(failed[0], Json::parse(R"({"type": "error", "sequence_number": 5, "code": "server_error",
      "message": "the server is shutting down", "param": null})"));
  EXPECT_EQ(failed[1]["type"], "response.failed");
  EXPECT_EQ(failed[1]["response"]["status"], "failed");
  EXPECT_EQ(failed[1]["response"]["error"],
            Json::parse(R"({"code": "server_error", "message": "the server is shutting down"})"));
  ResponsesReply limited(p.request, p.echo, 1, nullptr);
  limited.event(reply_message("a"));
  EXPECT_EQ(events_of(limited.failure_events(429, "queue full", "resource_exhausted"))[0]["code"],
            "rate_limit_exceeded");
  ResponsesReply refused(p.request, p.echo, 1, nullptr);
  refused.event(reply_message("a"));
  EXPECT_EQ(events_of(refused.failure_events(400, "bad", "invalid_argument"))[0]["code"], "invalid_argument");
}

}  // namespace
}  // namespace kvserve::openai
