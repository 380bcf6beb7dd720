// Anthropic's Messages API's translation, both ways: request bodies into the chat request they
// stand for (every field, every refusal naming the Messages field), and gRPC messages into a
// message object and the Messages stream's events. Expected values are written from Anthropic's
// API reference for /v1/messages, not from the code's output.
#include "server/anthropic_messages.h"
#include "tests/server/reply_messages.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace kvserve::anthropic {
namespace {

using Json = nlohmann::json;
using openai::ParsedRequest;
using openai::ParsedTokenize;
using openai::ServedApi;
using testing::events_of;
using testing::Replies;
using testing::reply_message;
using testing::types_of;

constexpr const char* kModel = "my-model";
const ServedApi kServed{.model = kModel};
const ServedApi kServedHermes{.model = kModel, .tool_call_format = ToolCallFormat::kHermes};

ParsedRequest parse_ok(const std::string& body, const ServedApi& served = kServed) {
  ParsedRequest out;
  const Status s = parse_messages_request(body, served, &out);
  EXPECT_TRUE(s.ok()) << body << " -> " << s.message();
  return out;
}

// The message of a refused body; fails the test if it was accepted.
std::string refusal(const std::string& body, StatusCode code = StatusCode::kInvalidArgument) {
  ParsedRequest out;
  const Status s = parse_messages_request(body, kServed, &out);
  EXPECT_FALSE(s.ok()) << body << " was accepted";
  EXPECT_EQ(s.code(), code) << body << " -> " << s.message();
  return s.message();
}

TEST(MessagesRequest, TheSystemPromptMessagesAndSamplingAreTheChatRequests) {
  const ParsedRequest r = parse_ok(R"({"model": "my-model", "max_tokens": 64, "system": "Be brief.",
      "messages": [{"role": "user", "content": "Hi"}], "temperature": 0.5, "top_p": 0.9, "top_k": 40,
      "stop_sequences": ["END", "\n\n"], "metadata": {"user_id": "u1"}, "service_tier": "auto"})");
  EXPECT_EQ(r.endpoint, openai::Endpoint::kChatCompletions);
  const v1::Chat& chat = r.generate.chat();
  ASSERT_EQ(chat.messages_size(), 2);
  EXPECT_EQ(chat.messages(0).role(), "system");
  EXPECT_EQ(chat.messages(0).content(), "Be brief.");
  EXPECT_EQ(chat.messages(1).role(), "user");
  EXPECT_EQ(chat.messages(1).content(), "Hi");
  EXPECT_FALSE(chat.continue_final_message());
  EXPECT_EQ(r.generate.stop().max_tokens(), 64u);
  ASSERT_EQ(r.generate.stop().stop_size(), 2);
  EXPECT_EQ(r.generate.stop().stop(0), "END");
  EXPECT_EQ(r.generate.stop().stop(1), "\n\n");
  EXPECT_FLOAT_EQ(r.generate.sampling().temperature(), 0.5f);
  EXPECT_FLOAT_EQ(r.generate.sampling().top_p(), 0.9f);
  EXPECT_EQ(r.generate.sampling().top_k(), 40);
  EXPECT_FALSE(r.stream);
  EXPECT_EQ(r.model, kModel);
  // Anthropic's default temperature is 1, as chat's; stream goes through.
  const ParsedRequest defaults =
      parse_ok(R"({"max_tokens": 5, "stream": true, "messages": [{"role": "user", "content": "Hi"}]})");
  EXPECT_FLOAT_EQ(defaults.generate.sampling().temperature(), 1.0f);
  EXPECT_TRUE(defaults.stream);
  // A system prompt as text blocks (with cache_control, which the automatic prefix cache makes moot).
  const ParsedRequest blocks = parse_ok(R"({"max_tokens": 5, "system": [{"type": "text", "text": "A."},
      {"type": "text", "text": "B.", "cache_control": {"type": "ephemeral"}}],
      "messages": [{"role": "user", "content": "Hi"}]})");
  EXPECT_EQ(blocks.generate.chat().messages(0).content(), "A.\nB.");
}

TEST(MessagesRequest, ContentBlocksBecomeChatTurns) {
  // The assistant's text and tool_use blocks are one turn with calls, its thinking the turn's
  // reasoning_content; a user's tool_result blocks are tool messages, in order, and its text after
  // them a user turn.
  const ParsedRequest r = parse_ok(R"({"max_tokens": 9, "messages": [
      {"role": "user", "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]},
      {"role": "assistant", "content": [
          {"type": "thinking", "thinking": "hmm", "signature": "s"},
          {"type": "text", "text": "Let me look."},
          {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": 1}},
          {"type": "tool_use", "id": "toolu_2", "name": "g", "input": {}}]},
      {"role": "user", "content": [
          {"type": "tool_result", "tool_use_id": "toolu_1", "content": "42"},
          {"type": "tool_result", "tool_use_id": "toolu_2", "content": [{"type": "text", "text": "ok"}],
           "is_error": true},
          {"type": "text", "text": "Go on."}]}]})");
  const v1::Chat& chat = r.generate.chat();
  ASSERT_EQ(chat.messages_size(), 5);
  EXPECT_EQ(chat.messages(0).role(), "user");
  EXPECT_EQ(chat.messages(0).content(), "one\ntwo");
  EXPECT_EQ(chat.messages(1).role(), "assistant");
  EXPECT_EQ(chat.messages(1).content(), "Let me look.");
  EXPECT_EQ(Json::parse(chat.messages(1).extra_json()), Json::parse(R"({"tool_calls": [
      {"id": "toolu_1", "type": "function", "function": {"name": "f", "arguments": {"a": 1}}},
      {"id": "toolu_2", "type": "function", "function": {"name": "g", "arguments": {}}}],
      "reasoning_content": "hmm"})"));
  EXPECT_EQ(chat.messages(2).role(), "tool");
  EXPECT_EQ(chat.messages(2).content(), "42");
  EXPECT_EQ(Json::parse(chat.messages(2).extra_json()), Json::parse(R"({"tool_call_id": "toolu_1"})"));
  EXPECT_EQ(chat.messages(3).role(), "tool");
  EXPECT_EQ(chat.messages(3).content(), "ok");
  EXPECT_EQ(chat.messages(4).role(), "user");
  EXPECT_EQ(chat.messages(4).content(), "Go on.");

  // A tool_use alone is a turn with null content; a tool_result without content an empty result.
  const ParsedRequest alone = parse_ok(R"({"max_tokens": 9, "messages": [{"role": "user", "content": "x"},
      {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]},
      {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t"}]}]})");
  ASSERT_EQ(alone.generate.chat().messages_size(), 3);
  EXPECT_EQ(Json::parse(alone.generate.chat().messages(1).extra_json())["content"], nullptr);
  EXPECT_EQ(alone.generate.chat().messages(2).content(), "");

  // Consecutive turns of one role are one turn, as Anthropic's API joins them.
  const ParsedRequest joined = parse_ok(R"({"max_tokens": 9, "messages": [{"role": "user", "content": "a"},
      {"role": "user", "content": [{"type": "text", "text": "b"}]}, {"role": "assistant", "content": "c"},
      {"role": "assistant", "content": "d"}, {"role": "user", "content": "e"}]})");
  ASSERT_EQ(joined.generate.chat().messages_size(), 3);
  EXPECT_EQ(joined.generate.chat().messages(0).content(), "a\nb");
  EXPECT_EQ(joined.generate.chat().messages(1).content(), "c\nd");
  EXPECT_EQ(joined.generate.chat().messages(2).content(), "e");

  // A tool_result after text is refused, as Anthropic's API refuses it: results come first.
  EXPECT_EQ(
      refusal(R"({"max_tokens": 9, "messages": [{"role": "user", "content": "x"}, {"role": "assistant",
      "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]}, {"role": "user", "content": [
      {"type": "text", "text": "Here:"}, {"type": "tool_result", "tool_use_id": "t", "content": "1"}]}]})"),
      "messages[2].content[1]: a tool_result block after text: send a message's tool_result blocks first");
  // So is a message with no content, but for a final assistant one (no prefill then).
  EXPECT_EQ(refusal(R"({"max_tokens": 9, "messages": [{"role": "user", "content": []}]})"),
            "messages[0].content: is empty: every message needs content, but for a final assistant message "
            "(then no prefill)");
  refusal(R"({"max_tokens": 9, "messages": [{"role": "user", "content": "x"}, {"role": "assistant",
      "content": ""}, {"role": "user", "content": "y"}]})");
}

// A last message of the assistant's is a prefill: the prompt ends in it, and the reply continues
// it (transformers' continue_final_message).
TEST(MessagesRequest, AFinalAssistantMessageIsContinued) {
  const ParsedRequest r = parse_ok(R"({"max_tokens": 9, "messages": [{"role": "user", "content": "JSON?"},
      {"role": "assistant", "content": "{\"a\":"}]})");
  EXPECT_TRUE(r.generate.chat().continue_final_message());
  EXPECT_FALSE(r.generate.chat().add_generation_prompt());
  EXPECT_EQ(r.generate.chat().messages(1).content(), "{\"a\":");
  // One with no text (empty, blank, or thinking alone) is no prefill: it is left out, and the
  // reply is a new turn.
  for (const std::string content :
       {R"("")", R"(" \n")", R"([])", R"([{"type": "thinking", "thinking": "t"}])"}) {
    SCOPED_TRACE(content);
    const ParsedRequest none = parse_ok(R"({"max_tokens": 9, "messages": [{"role": "user", "content": "x"},
        {"role": "assistant", "content": )" +
                                        content + "}]}");
    ASSERT_EQ(none.generate.chat().messages_size(), 1);
    EXPECT_FALSE(none.generate.chat().continue_final_message());
  }
  // After an assistant turn, an empty one leaves that turn the prefill (the two are one turn).
  const ParsedRequest joined = parse_ok(R"({"max_tokens": 9, "messages": [{"role": "user", "content": "x"},
      {"role": "assistant", "content": "Sure:"}, {"role": "assistant", "content": ""}]})");
  ASSERT_EQ(joined.generate.chat().messages_size(), 2);
  EXPECT_TRUE(joined.generate.chat().continue_final_message());
  // One that ends in a call cannot be continued, joined to the turn before or not: its result is
  // what comes next.
  const std::string ends_in_call =
      "the conversation ends with the assistant's tool_use blocks: send their "
      "tool_result blocks in a user message after them";
  EXPECT_EQ(refusal(R"({"max_tokens": 9, "messages": [{"role": "user", "content": "x"}, {"role": "assistant",
      "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]}]})"),
            "messages[1]: " + ends_in_call);
  EXPECT_EQ(refusal(R"({"max_tokens": 9, "messages": [{"role": "user", "content": "x"}, {"role": "assistant",
      "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]}, {"role": "assistant",
      "content": "More."}]})"),
            "messages[2]: " + ends_in_call);
}

TEST(MessagesRequest, ToolsToolChoiceThinkingAndOutputFormatAreChatsOwn) {
  const std::string tools = R"("tools": [{"name": "get_weather", "description": "Weather.",
      "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
      "cache_control": {"type": "ephemeral"}}, {"type": "custom", "name": "now"}])";
  const std::string head = R"({"max_tokens": 9, "messages": [{"role": "user", "content": "Oslo?"}], )";
  const ParsedRequest r = parse_ok(head + tools + "}", kServedHermes);
  EXPECT_EQ(Json::parse(r.generate.chat().tools_json()), Json::parse(R"([{"type": "function",
      "function": {"name": "get_weather", "description": "Weather.", "parameters": {"type": "object",
      "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
      {"type": "function", "function": {"name": "now"}}])"));
  ASSERT_TRUE(r.tool_calls.has_value());  // auto: the model's own format is read
  EXPECT_FALSE(r.generate.has_response_format());

  // any: the reply is constrained to calls, as chat's "required"; tool: to the named one's.
  const ParsedRequest any = parse_ok(head + tools + R"(, "tool_choice": {"type": "any"}})");
  ASSERT_TRUE(any.tool_calls.has_value());
  EXPECT_TRUE(any.generate.has_response_format());
  const ParsedRequest named = parse_ok(head + tools + R"(, "tool_choice": {"type": "tool", "name": "now",
      "disable_parallel_tool_use": true}})");
  ASSERT_TRUE(named.tool_calls.has_value());
  EXPECT_TRUE(named.generate.has_response_format());
  EXPECT_FALSE(parse_ok(head + tools + R"(, "tool_choice": {"type": "none"}})").tool_calls);
  // At most one call with disable_parallel_tool_use: "any" then allows one item.
  const ParsedRequest one =
      parse_ok(head + tools + R"(, "tool_choice": {"type": "any", "disable_parallel_tool_use": true}})");
  EXPECT_NE(one.generate.response_format().json_schema().find("\"maxItems\":1"), std::string::npos);
  // auto without tools asks for nothing.
  EXPECT_FALSE(parse_ok(head + R"("tool_choice": {"type": "auto"}})").tool_calls);

  // thinking: the template's enable_thinking (unless the client set it itself).
  EXPECT_EQ(Json::parse(parse_ok(head + R"("thinking": {"type": "enabled", "budget_tokens": 1024}})")
                            .generate.chat()
                            .template_kwargs_json()),
            Json::parse(R"({"enable_thinking": true})"));
  EXPECT_EQ(
      Json::parse(
          parse_ok(head + R"("thinking": {"type": "disabled"}})").generate.chat().template_kwargs_json()),
      Json::parse(R"({"enable_thinking": false})"));
  for (const std::string type : {"adaptive", "between_tools"})  // the model decides when: it may think
    EXPECT_EQ(Json::parse(parse_ok(head + R"("thinking": {"type": ")" + type + R"("}})")
                              .generate.chat()
                              .template_kwargs_json()),
              Json::parse(R"({"enable_thinking": true})"))
        << type;
  EXPECT_EQ(Json::parse(parse_ok(head + R"("thinking": {"type": "disabled"},
      "chat_template_kwargs": {"enable_thinking": true, "x": 1}})")
                            .generate.chat()
                            .template_kwargs_json()),
            Json::parse(R"({"enable_thinking": true, "x": 1})"));

  // output_format, or output_config.format (structured outputs): a JSON schema constrains the reply.
  const ParsedRequest config = parse_ok(head + R"("output_config": {"effort": "low", "format": {"type":
      "json_schema", "schema": {"type": "object"}}}})");
  EXPECT_TRUE(config.generate.has_response_format());
  EXPECT_FALSE(parse_ok(head + R"("output_config": {"effort": "low"}})").generate.has_response_format());
  // vLLM's extensions of the chat endpoint go through.
  const ParsedRequest extensions =
      parse_ok(head + R"("stop_token_ids": [7], "include_stop_str_in_output": true,
      "min_tokens": 2, "seed": 9})");
  EXPECT_EQ(extensions.generate.stop().stop_token_ids_size(), 1);
  EXPECT_TRUE(extensions.generate.stop().include_stop_str_in_output());
  EXPECT_EQ(extensions.generate.stop().min_tokens(), 2u);
  EXPECT_TRUE(parse_ok(head + R"("output_format": {"type": "json_schema", "schema": {"type": "object",
      "properties": {"t": {"type": "integer"}}, "required": ["t"]}}})")
                  .generate.has_response_format());
}

TEST(MessagesRequest, WhatCannotBeHonouredIsRefusedNamingTheField) {
  const std::string messages = R"("messages": [{"role": "user", "content": "x"}])";
  EXPECT_EQ(refusal("{" + messages + "}"),
            "max_tokens: required: the most tokens the reply may have (a positive integer)");
  EXPECT_EQ(refusal(R"({"max_tokens": 0, )" + messages + "}"), "max_tokens: expected a positive integer");
  EXPECT_EQ(refusal(R"({"max_tokens": 5})"),
            "messages: expected a non-empty array of {\"role\", \"content\"}");
  EXPECT_EQ(refusal(R"({"max_tokens": 5, "messages": [{"role": "system", "content": "x"}]})"),
            "messages[0].role: expected \"user\" or \"assistant\" (the system prompt is the request's "
            "\"system\")");
  // Another model's name is NOT_FOUND (404), as on every endpoint.
  refusal(R"({"model": "claude-x", "max_tokens": 5, )" + messages + "}", StatusCode::kNotFound);

  const auto refused = [&](const std::string& fields, const std::string& field) {
    const std::string message = refusal(R"({"max_tokens": 5, )" + fields + "}");
    EXPECT_EQ(message.rfind(field + ": ", 0), 0u) << fields << " -> " << message;
  };
  // Content this server cannot read: images and documents, server tools' blocks.
  refused(R"("messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}])",
          "messages[0].content[0].type");
  refused(R"("messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": [{"type":
      "server_tool_use", "id": "s", "name": "web_search", "input": {}}]}])",
          "messages[1].content[0].type");
  refused(R"("messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t",
      "content": [{"type": "image"}]}]}])",
          "messages[0].content[0].content[0].type");
  refused(R"("messages": [{"role": "user", "content": [{"type": "tool_result", "content": "x"}]}])",
          "messages[0].content[0].tool_use_id");
  refused(R"("messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": [{"type":
      "tool_use", "id": "t", "name": "f", "input": "{}"}]}, {"role": "user", "content": "y"}])",
          "messages[1].content[0].input");
  refused(R"("messages": [{"role": "user", "content": 7}])", "messages[0].content");
  refused(R"("system": 7, )" + messages, "system");
  // Tools kvserve does not run, and wrong shapes; the chat parser's findings under these names.
  refused(messages + R"(, "tools": [{"type": "web_search_20250305", "name": "web_search"}])",
          "tools[0].type");
  refused(messages + R"(, "tools": [{"name": "f", "input_schema": 7}])", "tools[0].input_schema");
  refused(messages + R"(, "tools": [{"description": "no name"}])", "tools[0].name");
  refused(messages + R"(, "tools": [{"name": "f"}], "tool_choice": {"type": "tool", "name": "g"})",
          "tool_choice.name");
  refused(messages + R"(, "tools": [{"name": "f"}], "tool_choice": "auto")", "tool_choice");
  refused(messages + R"(, "tools": [{"name": "f"}], "tool_choice": {"type": "sometimes"})",
          "tool_choice.type");
  refused(messages + R"(, "stop_sequences": "END")", "stop_sequences");
  refused(messages + R"(, "stop_sequences": ["END", 7])", "stop_sequences[1]");
  refused(messages + R"(, "thinking": {"type": "sometimes"})", "thinking.type");
  refused(messages + R"(, "output_format": {"type": "json_object"})", "output_format");
  refused(messages + R"(, "output_config": {"format": {"type": "json_object"}})", "output_config.format");
  refused(messages + R"(, "output_config": 1)", "output_config");
  refused(messages + R"(, "output_format": {"type": "json_schema", "schema": {}}, "output_config": {"format":
      {"type": "json_schema", "schema": {}}})",
          "output_config.format");
  // A template variable that is not an object; with thinking, which sets one of them, too.
  refused(messages + R"(, "chat_template_kwargs": 1)", "chat_template_kwargs");
  refused(messages + R"(, "chat_template_kwargs": [], "thinking": {"type": "enabled"})",
          "chat_template_kwargs");
  // Chat's hint for a model with no tool-call format, in this request's terms.
  const std::string no_format =
      refusal(R"({"max_tokens": 5, )" + messages + R"(, "tools": [{"name": "f"}]})");
  EXPECT_NE(no_format.find(R"(send tool_choice {"type": "any"} or {"type": "tool", "name": ...})"),
            std::string::npos)
      << no_format;
  EXPECT_NE(no_format.find(R"(or {"type": "none"};)"), std::string::npos) << no_format;
  refused(messages + R"(, "temperature": "hot")", "temperature");
  // What kvserve cannot do, and the OpenAI API's names a ported client would lose without a word.
  refused(messages + R"(, "mcp_servers": [{"type": "url", "url": "https://x"}])", "mcp_servers");
  refused(messages + R"(, "container": "c")", "container");
  refused(messages + R"(, "stop": ["x"])", "stop");
  refused(messages + R"(, "response_format": {"type": "json_object"})", "response_format");
  refused(messages + R"(, "n": 2)", "n");
}

TEST(MessagesRequest, CountTokensRendersThePromptTheMessagesEndpointWouldRun) {
  ParsedTokenize out;
  ASSERT_TRUE(parse_count_tokens_request(R"({"model": "my-model", "system": "S.", "messages": [
      {"role": "user", "content": "x"}, {"role": "assistant", "content": "Sure:"}],
      "tools": [{"name": "f", "input_schema": {"type": "object"}}], "thinking": {"type": "disabled"}})",
                                         kServed, &out)
                  .ok());
  const v1::Chat& chat = out.tokenize.chat();
  ASSERT_EQ(chat.messages_size(), 3);
  EXPECT_EQ(chat.messages(0).role(), "system");
  EXPECT_TRUE(chat.continue_final_message());
  EXPECT_EQ(Json::parse(chat.tools_json())[0]["function"]["name"], "f");
  EXPECT_EQ(Json::parse(chat.template_kwargs_json()), Json::parse(R"({"enable_thinking": false})"));
  // No max_tokens needed; another model is NOT_FOUND; a bad block is named as for /v1/messages.
  const Status other = parse_count_tokens_request(
      R"({"model": "claude-x", "messages": [{"role": "user", "content": "x"}]})", kServed, &out);
  EXPECT_EQ(other.code(), StatusCode::kNotFound);
  const Status image = parse_count_tokens_request(
      R"({"messages": [{"role": "user", "content": [{"type": "image"}]}]})", kServed, &out);
  EXPECT_EQ(image.message().rfind("messages[0].content[0].type: ", 0), 0u) << image.message();
}

// The reply to `messages` both ways: the whole body, and the stream's events.
Replies replies(const std::string& body, const ServedApi& served,
                const std::vector<v1::GenerateResponse>& messages) {
  const ParsedRequest whole = parse_ok(body, served);
  ParsedRequest streamed = parse_ok(body, served);
  streamed.stream = true;
  MessagesReply whole_reply(whole, nullptr);
  MessagesReply streamed_reply(streamed, nullptr);
  return testing::replies_both_ways(whole_reply, streamed_reply, messages);
}

// The message a stream's events describe, put together as Anthropic's SDKs accumulate it: the
// blocks from content_block_start, their deltas appended (a tool_use's partial JSON parsed at its
// stop), stop_reason and usage from message_delta.
Json accumulated(const std::vector<Json>& events) {
  Json message;
  std::vector<std::string> partial_json;
  for (const Json& e : events) {
    if (e["type"] == "message_start") {
      message = e["message"];
    } else if (e["type"] == "content_block_start") {
      EXPECT_EQ(e["index"], message["content"].size()) << e;
      message["content"].push_back(e["content_block"]);
      partial_json.emplace_back();
    } else if (e["type"] == "content_block_delta") {
      Json& block = message["content"][e["index"].get<size_t>()];
      const Json& delta = e["delta"];
      if (delta["type"] == "text_delta")
        block["text"] = block["text"].get<std::string>() + delta["text"].get<std::string>();
      else if (delta["type"] == "thinking_delta")
        block["thinking"] = block["thinking"].get<std::string>() + delta["thinking"].get<std::string>();
      else if (delta["type"] == "input_json_delta")
        partial_json[e["index"].get<size_t>()] += delta["partial_json"].get<std::string>();
      else
        ADD_FAILURE() << e;
    } else if (e["type"] == "content_block_stop") {
      const size_t index = e["index"];
      if (message["content"][index]["type"] == "tool_use" && !partial_json[index].empty())
        message["content"][index]["input"] = Json::parse(partial_json[index]);
    } else if (e["type"] == "message_delta") {
      message["stop_reason"] = e["delta"]["stop_reason"];
      message["stop_sequence"] = e["delta"]["stop_sequence"];
      message["usage"] = e["usage"];
    }
  }
  return message;
}

TEST(MessagesReply, TextIsATextBlockWithTheUsageInMessagesTerms) {
  const Replies r =
      replies(R"({"max_tokens": 3, "messages": [{"role": "user", "content": "x"}]})", kServed,
              {reply_message("Hel"), reply_message(""), reply_message("lo", v1::FINISH_REASON_STOP)});
  // 12 prompt tokens, 8 of them found cached: Anthropic counts the cached ones apart.
  EXPECT_EQ(r.whole, Json::parse(R"({"id": "msg_r7", "type": "message", "role": "assistant",
      "model": "my-model", "content": [{"type": "text", "text": "Hello"}], "stop_reason": "end_turn",
      "stop_sequence": null, "usage": {"input_tokens": 4, "cache_creation_input_tokens": 0,
      "cache_read_input_tokens": 8, "output_tokens": 3}})"));

  EXPECT_EQ(types_of(r.events),
            (std::vector<std::string>{"message_start", "content_block_start", "content_block_delta",
                                      "content_block_delta", "content_block_stop", "message_delta",
                                      "message_stop"}));
  EXPECT_EQ(r.events[0],
            Json::parse(R"({"type": "message_start", "message": {"id": "msg_r7", "type": "message",
      "role": "assistant", "model": "my-model", "content": [], "stop_reason": null, "stop_sequence": null,
      "usage": {"input_tokens": 0, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
      "output_tokens": 0}}})"));
  EXPECT_EQ(r.events[1], Json::parse(R"({"type": "content_block_start", "index": 0,
      "content_block": {"type": "text", "text": ""}})"));
  EXPECT_EQ(r.events[2], Json::parse(R"({"type": "content_block_delta", "index": 0,
      "delta": {"type": "text_delta", "text": "Hel"}})"));
  EXPECT_EQ(r.events[4], Json::parse(R"({"type": "content_block_stop", "index": 0})"));
  EXPECT_EQ(r.events[5], Json::parse(R"({"type": "message_delta", "delta": {"stop_reason": "end_turn",
      "stop_sequence": null}, "usage": {"input_tokens": 4, "cache_creation_input_tokens": 0,
      "cache_read_input_tokens": 8, "output_tokens": 3}})"));
  EXPECT_EQ(r.events[6], Json::parse(R"({"type": "message_stop"})"));
  EXPECT_EQ(accumulated(r.events), r.whole);
}

// The server's first message of a choice carries the prompt's counts: message_start says them.
TEST(MessagesReply, MessageStartHasThePromptsCountsFromTheFirstMessage) {
  ParsedRequest p =
      parse_ok(R"({"max_tokens": 5, "stream": true, "messages": [{"role": "user", "content": "x"}]})");
  MessagesReply reply(p, nullptr);
  v1::GenerateResponse first = reply_message("a");
  first.mutable_usage()->set_prompt_tokens(20);
  first.mutable_usage()->set_cached_prompt_tokens(16);
  first.mutable_usage()->set_completion_tokens(1);
  const std::vector<Json> events = events_of(reply.event(first));
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events[0]["message"]["usage"],
            Json::parse(R"({"input_tokens": 4, "cache_creation_input_tokens": 0,
      "cache_read_input_tokens": 16, "output_tokens": 1})"));
  EXPECT_EQ(events[0]["message"]["stop_reason"], nullptr);
  EXPECT_EQ(events[0]["message"]["content"], Json::array());
}

TEST(MessagesReply, StopReasonSaysWhatEndedTheReply) {
  const std::string body = R"({"max_tokens": 3, "stop_sequences": ["END"], "messages": [{"role": "user",
      "content": "x"}]})";
  const Replies length = replies(body, kServed, {reply_message("abc", v1::FINISH_REASON_LENGTH)});
  EXPECT_EQ(length.whole["stop_reason"], "max_tokens");
  EXPECT_EQ(length.whole["stop_sequence"], nullptr);
  EXPECT_EQ(length.events[length.events.size() - 2]["delta"]["stop_reason"], "max_tokens");

  v1::GenerateResponse stopped = reply_message("ab", v1::FINISH_REASON_STOP);
  stopped.set_stop_string("END");
  const Replies sequence = replies(body, kServed, {stopped});
  EXPECT_EQ(sequence.whole["stop_reason"], "stop_sequence");
  EXPECT_EQ(sequence.whole["stop_sequence"], "END");
  EXPECT_EQ(sequence.events[sequence.events.size() - 2]["delta"],
            Json::parse(R"({"stop_reason": "stop_sequence", "stop_sequence": "END"})"));

  // Nothing written (EOS at once): no content blocks at all, as Anthropic's API may answer.
  const Replies empty = replies(body, kServed, {reply_message("", v1::FINISH_REASON_STOP)});
  EXPECT_EQ(empty.whole["content"], Json::array());
  EXPECT_EQ(empty.whole["stop_reason"], "end_turn");
  EXPECT_EQ(types_of(empty.events),
            (std::vector<std::string>{"message_start", "message_delta", "message_stop"}));
}

TEST(MessagesReply, ToolCallsAreToolUseBlocksAfterTheText) {
  const std::string body = R"({"max_tokens": 99, "messages": [{"role": "user", "content": "Oslo?"}],
      "tools": [{"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type":
      "string"}}}}]})";
  const Replies r =
      replies(body, kServedHermes,
              {reply_message("Checking.\n<tool"), reply_message("_call>\n{\"name\": \"get_weather\", "),
               reply_message("\"arguments\": {\"city\": \"Oslo\"}}\n</tool_call>", v1::FINISH_REASON_STOP)});
  ASSERT_EQ(r.whole["content"].size(), 2u) << r.whole;
  EXPECT_EQ(r.whole["content"][0], Json::parse(R"({"type": "text", "text": "Checking."})"));
  Json call = r.whole["content"][1];
  const std::string id = call["id"];
  EXPECT_FALSE(id.empty());  // what the client's tool_result names
  call.erase("id");
  EXPECT_EQ(call, Json::parse(R"({"type": "tool_use", "name": "get_weather", "input": {"city": "Oslo"}})"));
  EXPECT_EQ(r.whole["stop_reason"], "tool_use");

  EXPECT_EQ(types_of(r.events),
            (std::vector<std::string>{"message_start", "content_block_start", "content_block_delta",
                                      "content_block_stop", "content_block_start", "content_block_delta",
                                      "content_block_stop", "message_delta", "message_stop"}));
  EXPECT_EQ(r.events[4]["content_block"]["input"], Json::object());  // filled by the deltas
  EXPECT_EQ(r.events[5]["delta"]["type"], "input_json_delta");
  // The stream's blocks have ids of their own (each reply makes its own): the rest is the same.
  Json streamed = accumulated(r.events);
  Json whole = r.whole;
  streamed["content"][1].erase("id");
  whole["content"][1].erase("id");
  EXPECT_EQ(streamed, whole);

  // A named tool: its arguments stream as they come, and the turn ends in tool_use (as Anthropic's
  // forced tool use does), not end_turn.
  const Replies named = replies(
      body.substr(0, body.size() - 1) + R"(, "tool_choice": {"type": "tool", "name": "get_weather"}})",
      kServed, {reply_message("{\"city\": "), reply_message("\"Oslo\"}", v1::FINISH_REASON_STOP)});
  ASSERT_EQ(named.whole["content"].size(), 1u) << named.whole;
  EXPECT_EQ(named.whole["content"][0]["input"], Json::parse(R"({"city": "Oslo"})"));
  EXPECT_EQ(named.whole["stop_reason"], "tool_use");
  EXPECT_EQ(types_of(named.events),
            (std::vector<std::string>{"message_start", "content_block_start", "content_block_delta",
                                      "content_block_delta", "content_block_stop", "message_delta",
                                      "message_stop"}));
  EXPECT_EQ(named.events[2]["delta"]["partial_json"], "{\"city\": ");

  // Cut off by max_tokens before its arguments were whole: no input ({}), and stop_reason says why.
  const Replies cut = replies(
      body.substr(0, body.size() - 1) + R"(, "tool_choice": {"type": "tool", "name": "get_weather"}})",
      kServed, {reply_message("{\"city\": \"Os", v1::FINISH_REASON_LENGTH)});
  ASSERT_EQ(cut.whole["content"].size(), 1u) << cut.whole;
  EXPECT_EQ(cut.whole["content"][0]["input"], Json::object());
  EXPECT_EQ(cut.whole["stop_reason"], "max_tokens");
}

// tool_choice any with two calls in one reply: a tool_use block each, numbered in order, each
// closed before the next starts.
TEST(MessagesReply, ParallelCallsAreToolUseBlocksOfTheirOwn) {
  const Replies r = replies(R"({"max_tokens": 99, "messages": [{"role": "user", "content": "x"}], "tools": [
      {"name": "f", "input_schema": {"type": "object"}}, {"name": "g"}], "tool_choice": {"type": "any"}})",
                            kServed,
                            {reply_message(R"([{"name": "f", "parameters": {"a": 1}}, {"name": "g", )"
                                           R"("parameters": {}}])",
                                           v1::FINISH_REASON_STOP)});
  ASSERT_EQ(r.whole["content"].size(), 2u) << r.whole;
  EXPECT_EQ(r.whole["content"][0]["name"], "f");
  EXPECT_EQ(r.whole["content"][0]["input"], Json::parse(R"({"a": 1})"));
  EXPECT_EQ(r.whole["content"][1]["name"], "g");
  EXPECT_EQ(r.whole["content"][1]["input"], Json::object());
  EXPECT_NE(r.whole["content"][0]["id"], r.whole["content"][1]["id"]);
  EXPECT_EQ(r.whole["stop_reason"], "tool_use");
  EXPECT_EQ(types_of(r.events),
            (std::vector<std::string>{"message_start", "content_block_start", "content_block_delta",
                                      "content_block_stop", "content_block_start", "content_block_delta",
                                      "content_block_stop", "message_delta", "message_stop"}));
  EXPECT_EQ(r.events[4]["index"], 1);
  EXPECT_EQ(r.events[5]["delta"]["partial_json"], "{}");
  Json streamed = accumulated(r.events), whole = r.whole;
  for (Json* message : {&streamed, &whole})
    for (Json& block : (*message)["content"])
      block.erase("id");
  EXPECT_EQ(streamed, whole);
}

TEST(MessagesReply, ReasoningIsAThinkingBlockBeforeTheText) {
  const ServedApi reasoning{.model = kModel, .reasoning = true};
  const Replies r =
      replies(R"({"max_tokens": 50, "messages": [{"role": "user", "content": "x"}]})", reasoning,
              {reply_message("<think>Let me"), reply_message(" see.</think>"),
               reply_message("Four.", v1::FINISH_REASON_STOP)});
  ASSERT_EQ(r.whole["content"].size(), 2u) << r.whole;
  EXPECT_EQ(r.whole["content"][0],
            Json::parse(R"({"type": "thinking", "thinking": "Let me see.", "signature": ""})"));
  EXPECT_EQ(r.whole["content"][1], Json::parse(R"({"type": "text", "text": "Four."})"));
  EXPECT_EQ(r.events[1]["content_block"],
            Json::parse(R"({"type": "thinking", "thinking": "", "signature": ""})"));
  EXPECT_EQ(r.events[2]["delta"], Json::parse(R"({"type": "thinking_delta", "thinking": "Let me"})"));
  EXPECT_EQ(accumulated(r.events), r.whole);
}

TEST(MessagesReply, AFailureAfterTheStreamBeganIsAnErrorEvent) {
  ParsedRequest p =
      parse_ok(R"({"max_tokens": 5, "stream": true, "messages": [{"role": "user", "content": "x"}]})");
  MessagesReply reply(p, nullptr);
  EXPECT_EQ(types_of(events_of(reply.event(reply_message("a")))),
            (std::vector<std::string>{"message_start", "content_block_start", "content_block_delta"}));
  EXPECT_EQ(events_of(reply.failure_events(503, "the server is shutting down", "unavailable")),
            std::vector<Json>{Json::parse(R"({"type": "error", "error": {"type": "overloaded_error",
                "message": "the server is shutting down"}})")});
}

// Anthropic's error types by HTTP status, which its SDKs raise as their own exception classes.
TEST(MessagesReply, ErrorsHaveAnthropicsShapeAndTypes) {
  EXPECT_EQ(Json::parse(error_body(400, "max_tokens: required")),
            Json::parse(R"({"type": "error", "error": {"type": "invalid_request_error",
                "message": "max_tokens: required"}})"));
  const std::vector<std::pair<int, std::string>> types = {
      {401, "authentication_error"}, {403, "permission_error"}, {404, "not_found_error"},
      {413, "request_too_large"},    {429, "rate_limit_error"}, {500, "api_error"},
      {503, "overloaded_error"},     {504, "timeout_error"},    {411, "invalid_request_error"}};
  for (const auto& [status, type] : types)
    EXPECT_EQ(Json::parse(error_body(status, "m"))["error"]["type"], type) << status;
}

}  // namespace
}  // namespace kvserve::anthropic
