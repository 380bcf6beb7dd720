// Reasoning read out of chat replies (server/reasoning.h): the reader on its own, fed the way tokens
// arrive, and the chat and Responses replies built on it. Expected values are written out from the
// rule (a reply that opens with <think> has reasoning up to </think>; tags and the whitespace after
// them are layout), not from the code's output.
#include "server/reasoning.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <string>
#include <vector>

#include "server/chat_prompt.h"
#include "server/openai_request.h"
#include "server/openai_response.h"
#include "server/openai_responses.h"
#include "tests/server/reply_messages.h"

namespace kvserve {
namespace {

using Json = nlohmann::json;

// The reply fed in `pieces`, then finished: all its reasoning and all its content.
ReasoningReader::Output read(const std::vector<std::string>& pieces) {
  ReasoningReader reader;
  ReasoningReader::Output all;
  for (const std::string& piece : pieces) {
    const ReasoningReader::Output out = reader.feed(piece);
    all.reasoning += out.reasoning;
    all.content += out.content;
  }
  const ReasoningReader::Output rest = reader.finish();
  all.reasoning += rest.reasoning;
  all.content += rest.content;
  return all;
}

TEST(ReasoningReader, AThinkBlockIsReasoningAndTheRestTheAnswer) {
  const ReasoningReader::Output whole = read({"<think>\nLet me see.\n</think>\n\nIt is 4."});
  EXPECT_EQ(whole.reasoning, "Let me see.\n");
  EXPECT_EQ(whole.content, "It is 4.");
  // The same split wherever the pieces break, tags split across tokens included.
  const std::string reply = "  <think>\nLet me see.\n</think>\n\nIt is 4.";
  for (size_t a = 0; a <= reply.size(); ++a) {
    for (size_t b = a; b <= reply.size(); b += 3) {
      const ReasoningReader::Output split =
          read({reply.substr(0, a), reply.substr(a, b - a), reply.substr(b)});
      EXPECT_EQ(split.reasoning, "Let me see.\n") << a << " " << b;
      EXPECT_EQ(split.content, "It is 4.") << a << " " << b;
    }
  }
}

TEST(ReasoningReader, WhatGoesOutAsItComes) {
  ReasoningReader reader;
  EXPECT_EQ(reader.feed("<thi").reasoning, "");  // may be the tag: wait
  ReasoningReader::Output out = reader.feed("nk>\nStep one");
  EXPECT_EQ(out.reasoning, "Step one");
  EXPECT_EQ(out.content, "");
  out = reader.feed(" done</th");  // the end tag may be coming: it waits
  EXPECT_EQ(out.reasoning, " done");
  out = reader.feed("ink>\n\nAnswer");
  EXPECT_EQ(out.reasoning, "");
  EXPECT_EQ(out.content, "Answer");
  EXPECT_EQ(reader.feed(" more").content, " more");
}

TEST(ReasoningReader, AReplyWithoutTheOpeningTagIsAllAnswer) {
  EXPECT_EQ(read({"Plain answer."}).content, "Plain answer.");
  EXPECT_EQ(read({"Plain answer."}).reasoning, "");
  // Whitespace first waits to see, then stays the answer's; a tag later in the text is text.
  EXPECT_EQ(read({"\n", " x <think>y</think>"}).content, "\n x <think>y</think>");
  EXPECT_EQ(read({"<thin", "g>"}).content, "<thing>");
  EXPECT_EQ(read({"  "}).content, "  ");
  EXPECT_EQ(read({}).content, "");
}

TEST(ReasoningReader, CutOffWhileThinkingIsAllReasoning) {
  const ReasoningReader::Output out = read({"<think>\nStill going </thi"});
  EXPECT_EQ(out.reasoning, "Still going </thi");
  EXPECT_EQ(out.content, "");
  EXPECT_EQ(read({"<think>"}).reasoning, "");
}

ChatPrompt prompt_of(std::string text) {
  ChatPrompt prompt;
  prompt.text = std::move(text);
  return prompt;
}

TEST(ReasoningReader, APromptThatOpenedTheBlockStartsTheReplyInIt) {
  // DeepSeek-R1's and QwQ's templates end the prompt with "<think>\n": the reply is reasoning up
  // to its </think>, with no opening tag of its own.
  ReasoningReader reader(/*started=*/true);
  ReasoningReader::Output out = reader.feed("\nPondering");
  EXPECT_EQ(out.reasoning, "Pondering");
  out = reader.feed(".\n</th");
  EXPECT_EQ(out.reasoning, ".\n");
  out = reader.feed("ink>\n\nIt is 4.");
  EXPECT_EQ(out.content, "It is 4.");
  const ReasoningReader::Output rest = reader.finish();
  EXPECT_EQ(rest.reasoning + rest.content, "");
  // The same wherever the pieces break.
  const std::string reply = "\nPondering.\n</think>\n\nIt is 4.";
  for (size_t a = 0; a <= reply.size(); ++a) {
    ReasoningReader split(true);
    ReasoningReader::Output first = split.feed(reply.substr(0, a)), second = split.feed(reply.substr(a)),
                            last = split.finish();
    EXPECT_EQ(first.reasoning + second.reasoning + last.reasoning, "Pondering.\n") << a;
    EXPECT_EQ(first.content + second.content + last.content, "It is 4.") << a;
  }
  // Cut off before </think>: all reasoning.
  ReasoningReader cut(true);
  EXPECT_EQ(cut.feed("still").reasoning, "still");
  EXPECT_EQ(cut.finish().content, "");

  EXPECT_TRUE(prompt_of("<|Assistant|><think>\n").reasoning_started());
  EXPECT_TRUE(prompt_of("assistant\n<think>").reasoning_started());
  EXPECT_FALSE(prompt_of("assistant\n<think>\n\n</think>\n\n").reasoning_started());
  EXPECT_FALSE(prompt_of("user: what is <think>?<|im_end|>\n<|im_start|>assistant\n").reasoning_started());
  EXPECT_FALSE(prompt_of("").reasoning_started());
}

TEST(ReasoningReader, TemplatesThatTeachTheTagsTurnItOn) {
  EXPECT_TRUE(template_teaches_thinking("{{ '<think>\\n\\n</think>\\n\\n' if not enable_thinking }}"));
  EXPECT_FALSE(template_teaches_thinking("<|im_start|>{{ m.role }}"));
  EXPECT_FALSE(template_teaches_thinking("<think> without an end"));
}

namespace openai_replies {

using openai::ParsedRequest;

const openai::ServedApi kServedReasoning{
    .model = "m", .tool_call_format = ToolCallFormat::kHermes, .reasoning = true};

using testing::reply_message;

// The reply's messages as tokens bring them: thinking that mentions a call, the answer, a call.
const std::vector<v1::GenerateResponse> kReply = {
    reply_message("<think>\nThe user wants <tool_call> maybe"), reply_message(".\n</think>\n\nChecking."),
    reply_message("\n<tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call>",
                  v1::FINISH_REASON_STOP)};

TEST(ReasoningReplies, ChatReturnsReasoningContentApartAndReadsCallsOnlyInTheAnswer) {
  const std::string body = R"({"messages": [{"role": "user", "content": "x"}],
      "tools": [{"type": "function", "function": {"name": "f"}}]})";
  ParsedRequest request;
  ASSERT_TRUE(
      openai::parse_request(openai::Endpoint::kChatCompletions, body, kServedReasoning, &request).ok());
  EXPECT_TRUE(request.reasoning);
  openai::ReplyBuilder whole(request, 1, nullptr);
  for (const v1::GenerateResponse& m : kReply)
    whole.add(m);
  const Json reply = Json::parse(whole.body());
  const Json& msg = reply["choices"][0]["message"];
  EXPECT_EQ(msg["reasoning_content"], "The user wants <tool_call> maybe.\n");
  EXPECT_EQ(msg["content"], "Checking.");
  ASSERT_EQ(msg["tool_calls"].size(), 1u);  // the one in the answer, not the one in the thinking
  EXPECT_EQ(msg["tool_calls"][0]["function"]["name"], "f");
  EXPECT_EQ(reply["choices"][0]["finish_reason"], "tool_calls");

  // Streamed: reasoning_content deltas, then content, joining to the same.
  request.stream = true;
  openai::ReplyBuilder stream(request, 1, nullptr);
  std::string reasoning, content;
  for (const v1::GenerateResponse& m : kReply) {
    const std::string event = stream.event(m);
    if (event.empty()) continue;
    const Json delta = Json::parse(event.substr(6))["choices"][0]["delta"];
    reasoning += delta.value("reasoning_content", "");
    content += delta.value("content", "");
  }
  EXPECT_EQ(reasoning, msg["reasoning_content"]);
  EXPECT_EQ(content, msg["content"]);

  // A prompt that opened the block (GenerateResponse.reasoning_started): the reply has no tag of
  // its own.
  openai::ReplyBuilder started(request, 1, nullptr);
  v1::GenerateResponse opened = reply_message("Hmm.\n</think>\n\nFour.", v1::FINISH_REASON_STOP);
  opened.set_reasoning_started(true);
  const std::string opened_event = started.event(opened);
  const Json opened_delta = Json::parse(opened_event.substr(6))["choices"][0]["delta"];
  EXPECT_EQ(opened_delta["reasoning_content"], "Hmm.\n");
  EXPECT_EQ(opened_delta["reasoning"], "Hmm.\n");  // vLLM's name for it, the same text
  EXPECT_EQ(opened_delta["content"], "Four.");
  EXPECT_EQ(msg["reasoning"], msg["reasoning_content"]);

  // A constrained reply follows its format from the first token: an answer, even where the prompt
  // opened the block.
  ParsedRequest required;
  ASSERT_TRUE(
      openai::parse_request(openai::Endpoint::kChatCompletions,
                            R"({"messages": [{"role": "user", "content": "x"}], "tool_choice": "required",
                                        "tools": [{"type": "function", "function": {"name": "f"}}]})",
                            kServedReasoning, &required)
          .ok());
  openai::ReplyBuilder forced(required, 1, nullptr);
  v1::GenerateResponse call = reply_message(R"([{"name": "f", "parameters": {}}])", v1::FINISH_REASON_STOP);
  call.set_reasoning_started(true);
  forced.add(call);
  const Json forced_msg = Json::parse(forced.body())["choices"][0]["message"];
  EXPECT_TRUE(forced_msg["reasoning_content"].is_null()) << forced_msg;
  ASSERT_EQ(forced_msg["tool_calls"].size(), 1u) << forced_msg;
  EXPECT_EQ(forced_msg["tool_calls"][0]["function"]["name"], "f");

  // A reply with no <think> block: null reasoning_content, all content.
  request.stream = false;
  openai::ReplyBuilder plain_whole(request, 1, nullptr);
  plain_whole.add(reply_message("Just this.", v1::FINISH_REASON_STOP));
  const Json plain_msg = Json::parse(plain_whole.body())["choices"][0]["message"];
  EXPECT_TRUE(plain_msg["reasoning_content"].is_null());
  EXPECT_EQ(plain_msg["content"], "Just this.");
}

TEST(ReasoningReplies, CompletionsAndServersWithoutTheParserLeaveTheTextAlone) {
  ParsedRequest completion;
  ASSERT_TRUE(openai::parse_request(openai::Endpoint::kCompletions, R"({"prompt": "x"})", kServedReasoning,
                                    &completion)
                  .ok());
  EXPECT_FALSE(completion.reasoning);
  ParsedRequest chat;
  ASSERT_TRUE(openai::parse_request(openai::Endpoint::kChatCompletions,
                                    R"({"messages": [{"role": "user", "content": "x"}]})",
                                    openai::ServedApi{.model = "m"}, &chat)
                  .ok());
  openai::ReplyBuilder whole(chat, 1, nullptr);
  whole.add(reply_message("<think>a</think>b", v1::FINISH_REASON_STOP));
  const Json msg = Json::parse(whole.body())["choices"][0]["message"];
  EXPECT_EQ(msg["content"], "<think>a</think>b");
  EXPECT_FALSE(msg.contains("reasoning_content"));
}

TEST(ReasoningReplies, TheResponsesApiGivesAReasoningItemBeforeTheMessageAndCall) {
  const std::string body = R"({"input": "x", "tools": [{"type": "function", "name": "f"}]})";
  for (const bool stream : {false, true}) {
    ParsedRequest request;
    nlohmann::ordered_json echo;
    openai::ResponsesTurn turn;
    ASSERT_TRUE(openai::parse_responses_request(body, kServedReasoning, {}, &request, &echo, &turn).ok());
    request.stream = stream;
    openai::ResponsesReply reply(request, echo, 1, nullptr);
    std::string events;
    for (const v1::GenerateResponse& m : kReply) {
      if (stream)
        events += reply.event(m);
      else
        reply.add(m);
    }
    Json response;
    std::vector<std::string> types;
    std::string reasoning_deltas;
    if (!stream) {
      response = Json::parse(reply.body());
    } else {
      events += reply.closing_events();
      for (size_t at = 0; (at = events.find("data: ", at)) != std::string::npos;) {
        const size_t end = events.find("\n\n", at);
        const Json event = Json::parse(events.substr(at + 6, end - at - 6));
        types.push_back(event["type"]);
        if (event["type"] == "response.reasoning_text.delta")
          reasoning_deltas += event["delta"].get<std::string>();
        if (event["type"] == "response.completed") response = event["response"];
        at = end;
      }
    }
    SCOPED_TRACE(stream ? "streamed" : "whole");
    const Json& output = response["output"];
    ASSERT_EQ(output.size(), 3u) << response;
    EXPECT_EQ(output[0]["type"], "reasoning");
    EXPECT_EQ(output[0]["id"].get<std::string>().rfind("rs_", 0), 0u);
    EXPECT_EQ(output[0]["summary"], Json::array());
    EXPECT_EQ(output[0]["content"],
              Json::parse(R"([{"type": "reasoning_text", "text": "The user wants <tool_call> maybe.\n"}])"));
    EXPECT_EQ(output[1]["content"][0]["text"], "Checking.");
    EXPECT_EQ(output[2]["type"], "function_call");
    if (stream) {
      EXPECT_EQ(reasoning_deltas, "The user wants <tool_call> maybe.\n");
      EXPECT_EQ(std::vector<std::string>(types.begin() + 2, types.begin() + 5),
                (std::vector<std::string>{"response.output_item.added", "response.reasoning_text.delta",
                                          "response.reasoning_text.delta"}));
      EXPECT_NE(std::find(types.begin(), types.end(), "response.reasoning_text.done"), types.end());
    }
  }
  // Reasoning alone, with no answer: an empty message follows it, as every response has one.
  ParsedRequest request;
  nlohmann::ordered_json echo;
  openai::ResponsesTurn turn;
  ASSERT_TRUE(
      openai::parse_responses_request(R"({"input": "x"})", kServedReasoning, {}, &request, &echo, &turn)
          .ok());
  openai::ResponsesReply cut(request, echo, 1, nullptr);
  cut.add(reply_message("<think>\nhmm", v1::FINISH_REASON_LENGTH));
  const Json response = Json::parse(cut.body());
  ASSERT_EQ(response["output"].size(), 2u) << response;
  EXPECT_EQ(response["output"][0]["type"], "reasoning");
  EXPECT_EQ(response["output"][0]["status"], "incomplete");  // cut off while thinking
  EXPECT_EQ(response["output"][1]["type"], "message");
  EXPECT_EQ(response["status"], "incomplete");
}

}  // namespace openai_replies
}  // namespace
}  // namespace kvserve
