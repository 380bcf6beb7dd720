#include "server/openai_response.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <utility>

namespace kvserve::openai {
namespace {

using Json = nlohmann::ordered_json;

// Token spellings may hold part of a UTF-8 character (a byte-fallback token): JSON text must be
// UTF-8, so such bytes are written as U+FFFD (the `bytes` arrays keep them exactly).
std::string dump(const Json& json) {
  return json.dump(-1, ' ', false, Json::error_handler_t::replace);
}

std::string sse(const Json& json) {
  return "data: " + dump(json) + "\n\n";
}

Json finish_reason(v1::FinishReason reason) {
  switch (reason) {
    case v1::FINISH_REASON_STOP:
      return "stop";
    case v1::FINISH_REASON_LENGTH:
      return "length";
    case v1::FINISH_REASON_ABORTED:
      return "abort";  // as vLLM names it; the call then fails with 503 (see http_status)
    default:
      return nullptr;
  }
}

// A token's text as the reply writes it: bytes that are not UTF-8 (part of a character, split
// across tokens) become U+FFFD as dump() writes them, so that offsets count what the client sees.
std::string as_written(const std::string& bytes) {
  return Json::parse(Json(bytes).dump(-1, ' ', false, Json::error_handler_t::replace)).get<std::string>();
}

// Characters of UTF-8 text (bytes that do not continue a character).
int64_t utf8_length(const std::string& text) {
  int64_t n = 0;
  for (const char c : text)
    n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  return n;
}

// A logprob as JSON can hold it: JSON has no infinity (nor NaN), which nlohmann writes as null, and
// a client summing logprobs (lm-evaluation-harness) fails on null. An impossible token (logit -inf,
// a broken model's NaN) is written as -9999, as vLLM writes it.
float written(float logprob) {
  return std::isfinite(logprob) ? logprob : -9999.0f;
}

Json bytes_of(const std::string& text) {
  Json bytes = Json::array();
  for (const char c : text)
    bytes.push_back(static_cast<unsigned char>(c));
  return bytes;
}

}  // namespace

ReplyBuilder::ReplyBuilder(const ParsedRequest& request, int64_t created, const Tokenizer* tokenizer)
    : request_(request), created_(created), tokenizer_(tokenizer) {}

std::string ReplyBuilder::token_text(uint32_t id) const {
  if (!tokenizer_) return {};
  const auto token = static_cast<TokenId>(id);
  std::string bytes = tokenizer_->token_bytes(token);
  // Control tokens (EOS, ...) have no text; their spelling says which one ended the output.
  return bytes.empty() ? tokenizer_->token_spelling(token) : bytes;
}

Json ReplyBuilder::head(const char* object) const {
  return Json{{"id", id_}, {"object", object}, {"created", created_}, {"model", request_.model}};
}

ToolCallOutput ReplyBuilder::read_text(const v1::GenerateResponse& message, Choice& choice,
                                       std::string* reasoning) {
  const bool finished = message.finish_reason() != v1::FINISH_REASON_UNSPECIFIED;
  // The <think> block first: only the answer after it is content, and read for calls.
  std::string text = message.text();
  if (request_.reasoning) {
    // A constrained reply (a response format, required or named calls) follows its format from
    // the first token: it begins as an answer even where the prompt opened a <think> block.
    if (!choice.reasoning_reader)
      choice.reasoning_reader.emplace(message.reasoning_started() &&
                                      !request_.generate.has_response_format());
    ReasoningReader::Output read = choice.reasoning_reader->feed(text);
    if (finished) {
      ReasoningReader::Output rest = choice.reasoning_reader->finish();
      read.reasoning += rest.reasoning;
      read.content += rest.content;
    }
    *reasoning = std::move(read.reasoning);
    text = std::move(read.content);
  }
  ToolCallOutput out;
  if (!request_.tool_calls) {
    out.content = std::move(text);
    return out;
  }
  if (!choice.tool_reader) choice.tool_reader = *request_.tool_calls;
  out = choice.tool_reader->feed(text);
  if (finished) {
    ToolCallOutput rest = choice.tool_reader->finish();
    out.content += rest.content;
    out.calls.insert(out.calls.end(), rest.calls.begin(), rest.calls.end());
  }
  // Each call gets an id, as OpenAI's do ("call_" and 24 letters and digits), for the client to
  // answer it with a tool message; 9 letters and digits where the model's template accepts no other
  // (Mistral's).
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  const bool short_ids = choice.tool_reader->nine_character_call_ids();
  for (const ToolCallDelta& call : out.calls) {
    if (call.index < static_cast<int>(choice.call_ids.size())) continue;
    std::string id = short_ids ? "" : "call_";
    for (int i = 0; i < (short_ids ? 9 : 24); ++i)
      id += kAlphabet[std::uniform_int_distribution<size_t>(0, sizeof(kAlphabet) - 2)(call_id_rng_)];
    choice.call_ids.push_back(std::move(id));
  }
  return out;
}

Json ReplyBuilder::call_deltas(const std::vector<ToolCallDelta>& calls, const Choice& choice) const {
  Json deltas = Json::array();
  for (const ToolCallDelta& call : calls) {
    Json delta{{"index", call.index}};
    Json function = Json::object();
    if (!call.name.empty()) {
      delta["id"] = choice.call_ids[call.index];
      delta["type"] = "function";
      function["name"] = call.name;
    }
    function["arguments"] = call.arguments;
    delta["function"] = std::move(function);
    deltas.push_back(std::move(delta));
  }
  return deltas;
}

Json ReplyBuilder::finish_reason_of(const Choice& choice) {
  if (choice.finish_reason.empty()) return nullptr;
  // As OpenAI's: a reply that ends in calls waits for their results; one the client forced by
  // naming the function ends as any other.
  if (choice.finish_reason == "stop" && !choice.call_ids.empty() && choice.tool_reader->calls_end_the_turn())
    return "tool_calls";
  return choice.finish_reason;
}

Json ReplyBuilder::logprobs_of(const v1::GenerateResponse& message, Choice& choice) const {
  if (!request_.logprobs) return nullptr;
  if (request_.endpoint == Endpoint::kChatCompletions) {
    auto entry = [&](uint32_t id, float logprob) {
      const std::string bytes = token_text(id);
      return Json{{"token", as_written(bytes)}, {"logprob", logprob}, {"bytes", bytes_of(bytes)}};
    };
    Json content = Json::array();
    for (const v1::TokenLogprob& lp : message.logprobs()) {
      Json e = entry(lp.token_id(), written(lp.logprob()));
      Json top = Json::array();
      for (const v1::TopLogprob& t : lp.top())
        top.push_back(entry(t.token_id(), written(t.logprob())));
      e["top_logprobs"] = std::move(top);
      choice.content.push_back(e);
      content.push_back(std::move(e));
    }
    return Json{{"content", std::move(content)}, {"refusal", nullptr}};
  }
  // Completions: four parallel arrays; top_logprobs maps each token's alternatives and the token
  // itself (as OpenAI's does: up to logprobs + 1 entries) to their logprobs.
  Json tokens = Json::array(), token_logprobs = Json::array(), top = Json::array(), offsets = Json::array();
  for (const v1::TokenLogprob& lp : message.logprobs()) {
    const std::string text = as_written(token_text(lp.token_id()));
    Json alternatives = Json::object();
    // Alternatives come likeliest first; where two share a spelling (byte tokens all read U+FFFD),
    // the object keeps the likelier, which a later one must not overwrite.
    for (const v1::TopLogprob& t : lp.top())
      alternatives.emplace(as_written(token_text(t.token_id())), written(t.logprob()));
    alternatives.emplace(text, written(lp.logprob()));
    tokens.push_back(text);
    token_logprobs.push_back(written(lp.logprob()));
    offsets.push_back(choice.next_offset);
    choice.tokens.push_back(text);
    choice.token_logprobs.push_back(written(lp.logprob()));
    choice.text_offset.push_back(choice.next_offset);
    top.push_back(alternatives);
    choice.top_logprobs.push_back(std::move(alternatives));
    choice.next_offset += utf8_length(text);
  }
  return Json{{"tokens", std::move(tokens)},
              {"token_logprobs", std::move(token_logprobs)},
              {"top_logprobs", std::move(top)},
              {"text_offset", std::move(offsets)}};
}

uint32_t ReplyBuilder::prompt_of(uint32_t choice_index) const {
  return choice_index / std::max<uint32_t>(request_.generate.n(), 1);
}

std::string ReplyBuilder::echo_text(uint32_t prompt) const {
  const v1::GenerateRequest& request = prompt == 0 ? request_.generate : request_.more_prompts.at(prompt - 1);
  if (!request.has_token_ids()) return request.text();
  if (!tokenizer_) return {};
  const auto& ids = request.token_ids().ids();
  return tokenizer_->decode(std::vector<TokenId>(ids.begin(), ids.end()));
}

Json ReplyBuilder::echo_logprobs(uint32_t prompt, int64_t* text_length) const {
  Json tokens = Json::array(), token_logprobs = Json::array(), top = Json::array(), offsets = Json::array();
  const auto it = prompt_scores_.find(prompt);
  if (it == prompt_scores_.end()) {
    *text_length = utf8_length(as_written(echo_text(prompt)));
    return Json{{"tokens", tokens},
                {"token_logprobs", token_logprobs},
                {"top_logprobs", top},
                {"text_offset", offsets}};
  }
  const PromptScores& scores = it->second;
  const int alternatives = static_cast<int>(request_.generate.top_logprobs());
  int64_t offset = 0;
  for (size_t i = 0; i < scores.ids.size(); ++i) {
    const std::string text = as_written(token_text(scores.ids[i]));
    tokens.push_back(text);
    offsets.push_back(offset);
    // Offsets index the returned text, where a control token (BOS) has no characters.
    if (tokenizer_ && !tokenizer_->token_bytes(static_cast<TokenId>(scores.ids[i])).empty())
      offset += utf8_length(text);
    if (i == 0 || i > scores.logprobs.size()) {  // the first token is not scored
      token_logprobs.push_back(nullptr);
      top.push_back(nullptr);
      continue;
    }
    const v1::TokenLogprob& lp = scores.logprobs[i - 1];
    Json choices = Json::object();
    for (int k = 0; k < std::min(alternatives, lp.top_size()); ++k)
      choices.emplace(as_written(token_text(lp.top(k).token_id())), written(lp.top(k).logprob()));
    choices.emplace(text, written(lp.logprob()));
    token_logprobs.push_back(written(lp.logprob()));
    top.push_back(std::move(choices));
  }
  // The tokens' texts, not the echoed text: SentencePiece's decode drops the space its first token
  // begins with, and the offsets must not go backwards.
  *text_length = offset;
  return Json{{"tokens", std::move(tokens)},
              {"token_logprobs", std::move(token_logprobs)},
              {"top_logprobs", std::move(top)},
              {"text_offset", std::move(offsets)}};
}

Json ReplyBuilder::vllm_prompt_logprobs(uint32_t prompt) const {
  Json out = Json::array();
  const auto it = prompt_scores_.find(prompt);
  if (it == prompt_scores_.end() || it->second.ids.empty()) return out;
  out.push_back(nullptr);
  const int alternatives = request_.prompt_logprobs.value_or(0);
  for (const v1::TokenLogprob& lp : it->second.logprobs) {
    Json entry = Json::object();
    auto add = [&](uint32_t id, float logprob) {
      entry.emplace(std::to_string(id),
                    Json{{"logprob", logprob}, {"decoded_token", as_written(token_text(id))}});
    };
    add(lp.token_id(), written(lp.logprob()));
    for (int k = 0; k < std::min(alternatives, lp.top_size()); ++k)
      add(lp.top(k).token_id(), written(lp.top(k).logprob()));
    out.push_back(std::move(entry));
  }
  return out;
}

void ReplyBuilder::note_usage(const v1::GenerateResponse& message, Choice& choice) {
  if (id_.empty())
    id_ = (request_.endpoint == Endpoint::kChatCompletions ? "chatcmpl-" : "cmpl-") + message.request_id();
  if (message.prompt_token_ids_size() > 0) {
    PromptScores& scores = prompt_scores_[prompt_of(message.index())];
    scores.ids.assign(message.prompt_token_ids().begin(), message.prompt_token_ids().end());
    scores.logprobs.assign(message.prompt_logprobs().begin(), message.prompt_logprobs().end());
  }
  if (message.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) {
    const Json reason = finish_reason(message.finish_reason());
    choice.finish_reason = reason.is_string() ? reason.get<std::string>() : std::string();
    // The prompt alone ends at max_tokens 0, whatever the token left out was.
    if (request_.prompt_only && choice.finish_reason != "abort") choice.finish_reason = "length";
    const auto& stop_token_ids = request_.generate.stop().stop_token_ids();
    if (request_.prompt_only) {
      choice.stop_reason = nullptr;
    } else if (!message.stop_string().empty()) {
      choice.stop_reason = message.stop_string();
    } else if (message.finish_reason() == v1::FINISH_REASON_STOP && message.token_ids_size() > 0 &&
               std::find(stop_token_ids.begin(), stop_token_ids.end(),
                         message.token_ids(message.token_ids_size() - 1)) != stop_token_ids.end()) {
      choice.stop_reason = message.token_ids(message.token_ids_size() - 1);
    }
  }
  if (!message.has_usage()) return;
  // A prompt's choices all run it; its first choice's cached count is what its call found cached
  // (later choices share the first one's blocks). With several prompts, each counts once.
  const uint32_t prompt = prompt_of(message.index());
  prompt_tokens_[prompt] = message.usage().prompt_tokens();
  if (message.index() % std::max<uint32_t>(request_.generate.n(), 1) == 0)
    cached_prompt_tokens_[prompt] = message.usage().cached_prompt_tokens();
  choice.completion_tokens = request_.prompt_only ? 0 : message.usage().completion_tokens();
}

Json ReplyBuilder::usage() const {
  uint32_t prompt = 0, cached = 0, completion = 0;
  for (const auto& [index, tokens] : prompt_tokens_)
    prompt += tokens;
  for (const auto& [index, tokens] : cached_prompt_tokens_)
    cached += tokens;
  for (const auto& [index, choice] : choices_)
    completion += choice.completion_tokens;
  return Json{{"prompt_tokens", prompt},
              {"completion_tokens", completion},
              {"total_tokens", prompt + completion},
              {"prompt_tokens_details", Json{{"cached_tokens", cached}}}};
}

std::string ReplyBuilder::event(const v1::GenerateResponse& message) {
  const std::optional<Json> json = chunk(message);
  return json ? sse(*json) : std::string();
}

std::optional<Json> ReplyBuilder::chunk(const v1::GenerateResponse& message) {
  Choice& choice = choices_[message.index()];
  note_usage(message, choice);
  const bool finished = message.finish_reason() != v1::FINISH_REASON_UNSPECIFIED;
  // With prompt_only, the generated token is left out (echo's prompt is all there is to show).
  const bool new_tokens = request_.logprobs && message.logprobs_size() > 0 && !request_.prompt_only;
  std::string reasoning;
  const ToolCallOutput text =
      request_.prompt_only ? ToolCallOutput{} : read_text(message, choice, &reasoning);
  Json chunk;
  Json out{{"index", message.index()}};
  if (request_.endpoint == Endpoint::kChatCompletions) {
    Json delta = Json::object();
    if (!choice.role_sent) delta["role"] = "assistant";
    // Under both names clients read: DeepSeek's API's reasoning_content and vLLM's reasoning.
    if (!reasoning.empty()) {
      delta["reasoning_content"] = reasoning;
      delta["reasoning"] = reasoning;
    }
    if (!text.content.empty() || !choice.role_sent) delta["content"] = text.content;
    if (!text.calls.empty()) delta["tool_calls"] = call_deltas(text.calls, choice);
    choice.role_sent = true;
    if (delta.empty() && !finished && !new_tokens) return std::nullopt;
    chunk = head("chat.completion.chunk");
    out["delta"] = std::move(delta);
  } else {
    std::string content = std::move(text.content);
    if (request_.echo && !choice.echoed) {  // (not with logprobs: parse_request refuses that)
      content = echo_text(prompt_of(message.index())) + content;
      choice.echoed = true;
    }
    if (content.empty() && !finished && !new_tokens) return std::nullopt;
    chunk = head("text_completion");
    out["text"] = std::move(content);
  }
  out["logprobs"] = request_.prompt_only ? Json(nullptr) : logprobs_of(message, choice);
  out["finish_reason"] = finished ? finish_reason_of(choice) : Json(nullptr);
  out["stop_reason"] = finished ? choice.stop_reason : Json(nullptr);
  chunk["choices"] = Json::array({std::move(out)});
  // With usage asked for, every chunk says it has none: the last one, after the choices, has it.
  if (request_.include_usage) chunk["usage"] = nullptr;
  return chunk;
}

std::string ReplyBuilder::closing_events() {
  std::string events;
  if (request_.include_usage) {
    Json chunk =
        head(request_.endpoint == Endpoint::kChatCompletions ? "chat.completion.chunk" : "text_completion");
    chunk["choices"] = Json::array();
    chunk["usage"] = usage();
    events = sse(chunk);
  }
  return events + "data: [DONE]\n\n";
}

void ReplyBuilder::add(const v1::GenerateResponse& message) {
  Choice& choice = choices_[message.index()];
  note_usage(message, choice);
  if (request_.prompt_only) return;  // the generated token is left out
  std::string reasoning;
  ToolCallOutput text = read_text(message, choice, &reasoning);
  choice.reasoning += reasoning;
  choice.text += text.content;
  for (ToolCallDelta& call : text.calls) {
    if (call.index > static_cast<int>(choice.calls.size())) continue;  // the reader never skips one
    if (call.index == static_cast<int>(choice.calls.size())) {
      choice.calls.push_back(Json{{"id", choice.call_ids[call.index]},
                                  {"type", "function"},
                                  {"function", Json{{"name", std::move(call.name)}, {"arguments", ""}}}});
    }
    Json& arguments = choice.calls[call.index]["function"]["arguments"];
    arguments = arguments.get<std::string>() + call.arguments;
  }
  logprobs_of(message, choice);
}

std::string ReplyBuilder::failure_events(int http_status, const std::string& message,
                                         const std::string& code) {
  return error_events(http_status, message, code);
}

std::string ReplyBuilder::body() {
  return dump(whole());
}

Json ReplyBuilder::whole() const {
  const bool chat = request_.endpoint == Endpoint::kChatCompletions;
  Json reply = head(chat ? "chat.completion" : "text_completion");
  Json choices = Json::array();
  for (const auto& [index, choice] : choices_) {
    Json out{{"index", index}};
    if (chat) {
      // A reply of calls alone has no content (null, as OpenAI's).
      out["message"] =
          Json{{"role", "assistant"},
               {"content", choice.calls.empty() || !choice.text.empty() ? Json(choice.text) : Json()}};
      // As vLLM's and DeepSeek's API: null when the reply had no <think> block.
      if (request_.reasoning) {
        out["message"]["reasoning_content"] = choice.reasoning.empty() ? Json() : Json(choice.reasoning);
        out["message"]["reasoning"] = out["message"]["reasoning_content"];
      }
      if (!choice.calls.empty()) out["message"]["tool_calls"] = choice.calls;
    } else {
      out["text"] = request_.echo ? echo_text(prompt_of(index)) + choice.text : choice.text;
    }
    if (!request_.logprobs) {
      out["logprobs"] = nullptr;
    } else if (chat) {
      out["logprobs"] = Json{{"content", choice.content}, {"refusal", nullptr}};
    } else {
      // The choice's own offsets follow the echoed prompt's.
      int64_t shift = 0;
      Json logprobs = request_.echo ? echo_logprobs(prompt_of(index), &shift)
                                    : Json{{"tokens", Json::array()},
                                           {"token_logprobs", Json::array()},
                                           {"top_logprobs", Json::array()},
                                           {"text_offset", Json::array()}};
      for (size_t i = 0; i < choice.tokens.size(); ++i) {
        logprobs["tokens"].push_back(choice.tokens[i]);
        logprobs["token_logprobs"].push_back(choice.token_logprobs[i]);
        logprobs["top_logprobs"].push_back(choice.top_logprobs[i]);
        logprobs["text_offset"].push_back(choice.text_offset[i] + shift);
      }
      out["logprobs"] = std::move(logprobs);
    }
    if (!chat && request_.prompt_logprobs) out["prompt_logprobs"] = vllm_prompt_logprobs(prompt_of(index));
    out["finish_reason"] = finish_reason_of(choice);
    out["stop_reason"] = choice.stop_reason;
    choices.push_back(std::move(out));
  }
  reply["choices"] = std::move(choices);
  // Chat's is the conversation's, beside the choices (as vLLM's).
  if (chat && request_.prompt_logprobs) reply["prompt_logprobs"] = vllm_prompt_logprobs(0);
  reply["usage"] = usage();
  return reply;
}

int http_status(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
      return 200;
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::FAILED_PRECONDITION:
    case grpc::StatusCode::OUT_OF_RANGE:
      return 400;
    case grpc::StatusCode::UNAUTHENTICATED:
      return 401;
    case grpc::StatusCode::PERMISSION_DENIED:
      return 403;
    case grpc::StatusCode::NOT_FOUND:
      return 404;
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return 429;
    case grpc::StatusCode::UNIMPLEMENTED:
      return 501;
    case grpc::StatusCode::CANCELLED:  // the server cut the call off (shutting down), or the client left
    case grpc::StatusCode::UNAVAILABLE:
      return 503;
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return 504;
    default:
      return 500;
  }
}

std::string code_name(grpc::StatusCode code) {
  static const char* const kNames[] = {
      "ok",        "cancelled",      "unknown",           "invalid_argument",   "deadline_exceeded",
      "not_found", "already_exists", "permission_denied", "resource_exhausted", "failed_precondition",
      "aborted",   "out_of_range",   "unimplemented",     "internal",           "unavailable",
      "data_loss", "unauthenticated"};
  const auto i = static_cast<size_t>(code);
  return i < std::size(kNames) ? kNames[i] : "unknown";
}

std::string error_body(int http_status, const std::string& message, const std::string& code) {
  // OpenAI's types; `code` says more.
  const char* type = http_status == 429  ? "rate_limit_error"
                     : http_status < 500 ? "invalid_request_error"
                                         : "server_error";
  return dump(
      Json{{"error", Json{{"message", message}, {"type", type}, {"param", nullptr}, {"code", code}}}});
}

std::string error_events(int http_status, const std::string& message, const std::string& code) {
  return "data: " + error_body(http_status, message, code) + "\n\ndata: [DONE]\n\n";
}

}  // namespace kvserve::openai
