#include "server/generation_service.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <exception>
#include <limits>
#include <utility>

#include "engine/chat_template.h"
#include "engine/response_format.h"
#include "engine/sampler.h"
#include "engine/token_constraint.h"
#include "server/chat_prompt.h"
#include "server/embed_call.h"
#include "server/generate_stream.h"
#include "server/metrics.h"

namespace kvserve {

namespace {

// Choices per call: enough for best-of-n and RL rollouts, few enough that one call cannot flood
// the queue (each choice also takes a place in it).
constexpr uint32_t kMaxChoices = 128;

const char* code_name(StatusCode code) {
  switch (code) {
    case StatusCode::kOk:
      return "OK";
    case StatusCode::kInvalidArgument:
      return "INVALID_ARGUMENT";
    case StatusCode::kNotFound:
      return "NOT_FOUND";
    case StatusCode::kResourceExhausted:
      return "RESOURCE_EXHAUSTED";
    case StatusCode::kUnavailable:
      return "UNAVAILABLE";
    case StatusCode::kFailedPrecondition:
      return "FAILED_PRECONDITION";
    case StatusCode::kInternal:
      return "INTERNAL";
  }
  return "UNKNOWN";
}

}  // namespace

// The tokenizers are fuzzed and do not throw on any text; should one still (a pattern engine's
// backtracking limit, say), that request fails with a message and the server goes on serving
// everyone else.
Status encode_text(const Tokenizer& tokenizer, const std::string& text, bool add_bos,
                   std::vector<TokenId>* ids) {
  try {
    *ids = tokenizer.encode(text, add_bos);
    return Status::Ok();
  } catch (const std::exception& e) {
    return Status::InvalidArgument(std::string("text: could not be tokenized (") + e.what() +
                                   "); send token_ids instead");
  }
}

grpc::Status to_grpc_status(const Status& s) {
  switch (s.code()) {
    case StatusCode::kOk:
      return grpc::Status::OK;
    case StatusCode::kInvalidArgument:
      return {grpc::StatusCode::INVALID_ARGUMENT, s.message()};
    case StatusCode::kNotFound:
      return {grpc::StatusCode::NOT_FOUND, s.message()};
    case StatusCode::kResourceExhausted:
      return {grpc::StatusCode::RESOURCE_EXHAUSTED, s.message()};
    case StatusCode::kUnavailable:
      return {grpc::StatusCode::UNAVAILABLE, s.message()};
    case StatusCode::kFailedPrecondition:
      return {grpc::StatusCode::FAILED_PRECONDITION, s.message()};
    case StatusCode::kInternal:
      return {grpc::StatusCode::INTERNAL, s.message()};
  }
  return {grpc::StatusCode::UNKNOWN, s.message()};
}

GenerationService::GenerationService(EngineRunner& runner, const ModelConfig& model,
                                     std::shared_ptr<const Tokenizer> tokenizer, ServiceOptions options)
    : runner_(runner),
      model_(model),
      tokenizer_(std::move(tokenizer)),
      options_(std::move(options)),
      writer_(std::make_unique<StreamWriter>()) {
  if (tokenizer_)
    constraints_ = std::make_unique<ConstraintCache>(
        TokenVocabulary::from_tokenizer(*tokenizer_, model_.vocab_size, model_.eos_token_ids),
        ConstraintLimits{});
}

GenerationService::~GenerationService() = default;

grpc::Status GenerationService::reject(const Status& status) const {
  if (options_.metrics) options_.metrics->request_rejected(code_name(status.code()));
  return to_grpc_status(status);
}

grpc::Status GenerationService::check_auth(const grpc::CallbackServerContext& context) const {
  if (options_.auth_token.empty()) return grpc::Status::OK;
  const std::string expected = "Bearer " + options_.auth_token;
  const auto& metadata = context.client_metadata();
  const auto it = metadata.find("authorization");
  bool match = false;
  if (it != metadata.end() && it->second.size() == expected.size()) {
    // Constant time: how long the comparison takes says nothing about how much of a guess was right.
    unsigned char diff = 0;
    const char* got = it->second.data();
    for (size_t i = 0; i < expected.size(); ++i)
      diff |= static_cast<unsigned char>(got[i] ^ expected[i]);
    match = diff == 0;
  }
  if (match) return grpc::Status::OK;
  if (options_.metrics) options_.metrics->request_rejected("UNAUTHENTICATED");
  return {grpc::StatusCode::UNAUTHENTICATED,
          "missing or wrong bearer token: send the metadata 'authorization: Bearer <token>'"};
}

grpc::Status GenerationService::check_tokenizer_call(const grpc::CallbackServerContext& context,
                                                     size_t request_bytes) const {
  if (grpc::Status auth = check_auth(context); !auth.ok()) return auth;
  if (!tokenizer_) return reject(Status::InvalidArgument("this model has no tokenizer"));
  if (request_bytes > options_.max_request_bytes)
    return reject(Status::InvalidArgument(
        "the request is " + std::to_string(request_bytes) + " bytes, over this server's limit of " +
        std::to_string(options_.max_request_bytes) + " (--max-request-bytes)"));
  return grpc::Status::OK;
}

Status resolve_lora_adapter(const std::vector<std::string>& served, const std::string& name, int* index) {
  *index = 0;
  if (name.empty()) return Status::Ok();
  const auto it = std::find(served.begin(), served.end(), name);
  if (it != served.end()) {
    *index = static_cast<int>(it - served.begin()) + 1;
    return Status::Ok();
  }
  std::string listed;
  for (const std::string& s : served)
    listed += (listed.empty() ? "\"" : ", \"") + s + "\"";
  return Status::NotFound("lora_adapter \"" + name.substr(0, 200) + "\" is not served here; " +
                          (served.empty() ? std::string("this server serves no LoRA adapter (--lora-modules)")
                                          : "it serves " + listed + " (GetModelInfo.lora_adapters)") +
                          ", or leave it empty for the base model");
}

Status GenerationService::to_engine_request(const v1::GenerateRequest& in, Request* out,
                                            bool* reasoning_started) const {
  if (reasoning_started) *reasoning_started = false;
  if (model_.embedding_only)
    return Status::FailedPrecondition(
        "this model is an embedding model (its checkpoint has no LM head) and generates no text; call Embed "
        "(or POST /v1/embeddings) instead");
  const size_t bytes = in.ByteSizeLong();
  if (bytes > options_.max_request_bytes)
    return Status::InvalidArgument("the request is " + std::to_string(bytes) +
                                   " bytes, over this server's limit of " +
                                   std::to_string(options_.max_request_bytes) + " (--max-request-bytes)");
  if (in.request_id().size() > kMaxRequestIdBytes)
    return Status::InvalidArgument("request_id is " + std::to_string(in.request_id().size()) +
                                   " bytes, at most " + std::to_string(kMaxRequestIdBytes) + " allowed");
  out->id = in.request_id();
  if (in.n() > kMaxChoices)
    return Status::InvalidArgument("n must be at most " + std::to_string(kMaxChoices) + " choices, got " +
                                   std::to_string(in.n()));
  switch (in.input_case()) {
    case v1::GenerateRequest::kText:
      if (in.text().empty())
        return Status::InvalidArgument("text: the prompt is empty; send at least one character");
      if (!tokenizer_)
        return Status::InvalidArgument("text: this model has no tokenizer; send token_ids instead");
      if (Status s = encode_text(*tokenizer_, in.text(), /*add_bos=*/!in.no_bos(), &out->prompt); !s.ok())
        return s;
      break;
    case v1::GenerateRequest::kTokenIds:
      if (in.token_ids().ids().empty())
        return Status::InvalidArgument("token_ids.ids: the prompt is empty; send at least one token id");
      out->prompt.reserve(in.token_ids().ids_size());
      for (int i = 0; i < in.token_ids().ids_size(); ++i) {
        const uint32_t id = in.token_ids().ids(i);
        if (id >= static_cast<uint32_t>(model_.vocab_size))
          return Status::InvalidArgument("token_ids.ids[" + std::to_string(i) + "] = " + std::to_string(id) +
                                         " is outside the vocabulary [0, " +
                                         std::to_string(model_.vocab_size) + ")");
        out->prompt.push_back(static_cast<TokenId>(id));
      }
      break;
    case v1::GenerateRequest::kChat: {
      ChatPrompt prompt;
      if (Status s = render_chat(in.chat(), options_.chat_template.get(), tokenizer_.get(), &prompt); !s.ok())
        return s;
      if (reasoning_started) *reasoning_started = prompt.reasoning_started();
      out->prompt = std::move(prompt.ids);
      break;
    }
    case v1::GenerateRequest::INPUT_NOT_SET:
      return Status::InvalidArgument("input: set one of text, token_ids or chat");
  }

  const v1::SamplingParams& sp = in.sampling();
  out->sampling.temperature = sp.temperature();
  out->sampling.top_k = sp.top_k();
  out->sampling.top_p = sp.top_p() == 0.0f ? 1.0f : sp.top_p();  // proto3 zero = not set
  out->sampling.min_p = sp.min_p();
  out->sampling.repetition_penalty = sp.repetition_penalty() == 0.0f ? 1.0f : sp.repetition_penalty();
  out->sampling.presence_penalty = sp.presence_penalty();
  out->sampling.frequency_penalty = sp.frequency_penalty();
  if (sp.has_seed()) out->sampling.seed = sp.seed();
  for (const auto& [id, bias] : sp.logit_bias()) {
    if (id >= static_cast<uint32_t>(model_.vocab_size))
      return Status::InvalidArgument("sampling.logit_bias: token id " + std::to_string(id) +
                                     " is outside the vocabulary [0, " + std::to_string(model_.vocab_size) +
                                     ")");
    out->sampling.logit_bias.emplace_back(static_cast<TokenId>(id), bias);
  }
  // The wire map has no order; the engine's list gets one, so equal requests are equal.
  std::sort(out->sampling.logit_bias.begin(), out->sampling.logit_bias.end());
  if (in.top_logprobs() > static_cast<uint32_t>(kMaxTopLogprobs))
    return Status::InvalidArgument("top_logprobs must be at most " + std::to_string(kMaxTopLogprobs) +
                                   ", got " + std::to_string(in.top_logprobs()));
  out->sampling.top_logprobs = static_cast<int>(in.top_logprobs());
  out->priority = in.priority();
  if (Status s = resolve_lora_adapter(options_.lora_adapters, in.lora_adapter(), &out->lora_adapter); !s.ok())
    return s;
  constexpr int kMaxKeptControlTokens = 16;
  if (in.keep_control_tokens_size() > kMaxKeptControlTokens)
    return Status::InvalidArgument("keep_control_tokens holds " +
                                   std::to_string(in.keep_control_tokens_size()) + " spellings, at most " +
                                   std::to_string(kMaxKeptControlTokens) + " allowed");
  for (int i = 0; i < in.keep_control_tokens_size(); ++i) {
    const std::string& spelling = in.keep_control_tokens(i);
    const std::string field = "keep_control_tokens[" + std::to_string(i) + "]";
    if (!tokenizer_) return Status::InvalidArgument(field + ": this model has no tokenizer");
    const std::vector<TokenId> ids =
        spelling.size() <= 256 ? tokenizer_->encode_with_special_tokens(spelling) : std::vector<TokenId>{};
    if (ids.size() != 1 || !tokenizer_->is_control(ids[0]))
      return Status::InvalidArgument(field +
                                     " is not one of this tokenizer's control tokens; send a control token's "
                                     "exact spelling, or leave it out");
    if (std::find(out->kept_control_tokens.begin(), out->kept_control_tokens.end(), ids[0]) ==
        out->kept_control_tokens.end())
      out->kept_control_tokens.push_back(ids[0]);
  }
  if (in.has_prompt_logprobs()) {
    if (in.prompt_logprobs() > static_cast<uint32_t>(kMaxTopLogprobs))
      return Status::InvalidArgument("prompt_logprobs must be at most " + std::to_string(kMaxTopLogprobs) +
                                     ", got " + std::to_string(in.prompt_logprobs()));
    out->sampling.prompt_logprobs = static_cast<int>(in.prompt_logprobs());
  }

  const v1::StopCriteria& stop = in.stop();
  const uint32_t int_max = static_cast<uint32_t>(std::numeric_limits<int>::max());
  if (stop.max_tokens() > int_max || stop.min_tokens() > int_max)
    return Status::InvalidArgument("stop.max_tokens and stop.min_tokens must fit in 31 bits");
  if (stop.max_tokens() == 0) {
    // As many tokens as one sequence has room for after the prompt, within the model's length and
    // the KV pool (which holds all but the last token), as vLLM and OpenAI's API default; at most
    // --default-max-tokens where the server sets one.
    const SchedulerConfig& limits = runner_.engine().scheduler().config();
    const long long longest = std::min<long long>(
        limits.max_model_len, static_cast<long long>(limits.num_blocks) * limits.block_size + 1);
    const int room =
        static_cast<int>(std::max<long long>(1, longest - static_cast<long long>(out->prompt.size())));
    out->stop.max_tokens =
        options_.default_max_tokens > 0 ? std::min(options_.default_max_tokens, room) : room;
    if (stop.min_tokens() > static_cast<uint32_t>(out->stop.max_tokens))
      return Status::InvalidArgument(
          "stop.min_tokens (" + std::to_string(stop.min_tokens()) + ") is more than the " +
          std::to_string(out->stop.max_tokens) +
          " tokens a request without max_tokens gets here (what the model's "
          "length and the KV pool leave after the prompt, or --default-max-tokens): "
          "lower min_tokens");
  } else {
    out->stop.max_tokens = static_cast<int>(stop.max_tokens());
  }
  out->stop.min_tokens = static_cast<int>(stop.min_tokens());
  out->stop.ignore_eos = stop.ignore_eos();
  out->stop.include_stop_str_in_output = stop.include_stop_str_in_output();
  if (stop.stop_size() > options_.max_stop_strings)
    return Status::InvalidArgument("stop: " + std::to_string(stop.stop_size()) + " stop strings, at most " +
                                   std::to_string(options_.max_stop_strings) + " allowed");
  for (int i = 0; i < stop.stop_size(); ++i) {
    if (stop.stop(i).size() > options_.max_stop_string_bytes)
      return Status::InvalidArgument("stop[" + std::to_string(i) + "] is " +
                                     std::to_string(stop.stop(i).size()) + " bytes, at most " +
                                     std::to_string(options_.max_stop_string_bytes) + " allowed");
    out->stop.stop.push_back(stop.stop(i));
  }
  for (uint32_t id : stop.stop_token_ids()) {
    if (id >= static_cast<uint32_t>(model_.vocab_size))
      return Status::InvalidArgument("stop.stop_token_ids: " + std::to_string(id) +
                                     " is outside the vocabulary [0, " + std::to_string(model_.vocab_size) +
                                     ")");
    out->stop.stop_token_ids.push_back(static_cast<TokenId>(id));
  }
  if (in.has_response_format()) {
    // The cheap refusal first: compiling a large pattern can take a while.
    if (Status s = check_stop_criteria_for_response_format(out->stop); !s.ok()) return s;
    return compile_response_format(in.response_format(), &out->constraint);
  }
  return Status::Ok();
}

Status GenerationService::compile_response_format(const v1::ResponseFormat& format,
                                                  std::shared_ptr<const TokenConstraint>* out) const {
  if (!constraints_)
    return Status::FailedPrecondition("response_format needs the model's tokenizer, and this model has none");
  ResponseFormat f;
  switch (format.format_case()) {
    case v1::ResponseFormat::kRegex:
      f.kind = ResponseFormat::Kind::kRegex;
      f.text = format.regex();
      break;
    case v1::ResponseFormat::kJsonSchema:
      f.kind = ResponseFormat::Kind::kJsonSchema;
      f.text = format.json_schema();
      break;
    case v1::ResponseFormat::kChoice:
      f.kind = ResponseFormat::Kind::kChoice;
      f.choices.assign(format.choice().values().begin(), format.choice().values().end());
      break;
    case v1::ResponseFormat::FORMAT_NOT_SET:
      return Status::InvalidArgument("response_format: set one of regex, json_schema or choice");
  }
  std::string regex;
  if (Status s = response_format_regex(f, &regex); !s.ok()) return s;
  return constraints_->get(regex, out);
}

grpc::ServerWriteReactor<v1::GenerateResponse>* GenerationService::Generate(
    grpc::CallbackServerContext* context, const v1::GenerateRequest* request) {
  std::string client_id = request->request_id();
  if (client_id.empty()) client_id = "req-" + std::to_string(next_request_number_++);
  auto* reactor = new GenerateReactor(runner_, *writer_, client_id);
  if (grpc::Status auth = check_auth(*context); !auth.ok()) {
    reactor->reject(auth);
    return reactor;
  }
  Request engine_request;
  bool reasoning_started = false;
  Status translated;
  try {
    translated = to_engine_request(*request, &engine_request, &reasoning_started);
  } catch (const std::exception& e) {
    // Every bad input has its own clear error; this is the net under them, so that a case they
    // missed still answers the call (and frees the reactor) rather than escaping into gRPC.
    translated = Status::Internal(std::string("could not read the request: ") + e.what());
  }
  if (!translated.ok()) {
    reactor->reject(reject(translated));
    return reactor;
  }
  engine_request.id = client_id;
  if (Status s = reactor->start(expand_choices(std::move(engine_request), request->n()), reasoning_started);
      !s.ok())
    reactor->reject(reject(s));
  return reactor;
}

grpc::ServerUnaryReactor* GenerationService::Embed(grpc::CallbackServerContext* context,
                                                   const v1::EmbedRequest* request,
                                                   v1::EmbedResponse* response) {
  auto* reactor = new EmbedReactor(runner_, response);
  std::string client_id = request->request_id();
  if (client_id.empty()) client_id = "embed-" + std::to_string(next_request_number_++);
  std::vector<Request> requests;
  Status translated;
  if (grpc::Status auth = check_auth(*context); !auth.ok()) {
    reactor->reject(auth);
    return reactor;
  }
  if (const size_t bytes = request->ByteSizeLong(); bytes > options_.max_request_bytes)
    translated = Status::InvalidArgument(
        "the request is " + std::to_string(bytes) + " bytes, over this server's limit of " +
        std::to_string(options_.max_request_bytes) + " (--max-request-bytes)");
  else if (request->request_id().size() > kMaxRequestIdBytes)
    translated =
        Status::InvalidArgument("request_id is " + std::to_string(request->request_id().size()) +
                                " bytes, at most " + std::to_string(kMaxRequestIdBytes) + " allowed");
  else
    try {
      int adapter = 0;
      translated = resolve_lora_adapter(options_.lora_adapters, request->lora_adapter(), &adapter);
      if (translated.ok())
        translated =
            to_embed_requests(*request, model_, tokenizer_.get(),
                              runner_.engine().scheduler().config().max_model_len, client_id, &requests);
      for (Request& r : requests)
        r.lora_adapter = adapter;
    } catch (const std::exception& e) {  // the net under the checks, as Generate's
      translated = Status::Internal(std::string("could not read the request: ") + e.what());
    }
  // Before start(): the engine thread may finish the call before start() returns.
  response->set_request_id(client_id);
  if (translated.ok()) translated = reactor->start(std::move(requests));
  if (!translated.ok()) reactor->reject(reject(translated));
  return reactor;
}

grpc::ServerUnaryReactor* GenerationService::Tokenize(grpc::CallbackServerContext* context,
                                                      const v1::TokenizeRequest* request,
                                                      v1::TokenizeResponse* response) {
  auto* reactor = context->DefaultReactor();
  if (grpc::Status s = check_tokenizer_call(*context, request->ByteSizeLong()); !s.ok()) {
    reactor->Finish(s);
    return reactor;
  }
  std::vector<TokenId> ids;
  if (request->has_chat()) {
    // The prompt a chat Generate would get, and its text: how a template is debugged.
    ChatPrompt prompt;
    Status s = request->text().empty()
                   ? render_chat(request->chat(), options_.chat_template.get(), tokenizer_.get(), &prompt)
                   : Status::InvalidArgument("text: must be empty when chat is set; send one or the other");
    if (!s.ok()) {
      reactor->Finish(reject(s));
      return reactor;
    }
    response->set_prompt(std::move(prompt.text));
    ids = std::move(prompt.ids);
  } else if (Status s = encode_text(*tokenizer_, request->text(), request->add_bos(), &ids); !s.ok()) {
    reactor->Finish(reject(s));
    return reactor;
  }
  for (TokenId id : ids)
    response->add_token_ids(static_cast<uint32_t>(id));
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* GenerationService::Detokenize(grpc::CallbackServerContext* context,
                                                        const v1::DetokenizeRequest* request,
                                                        v1::DetokenizeResponse* response) {
  auto* reactor = context->DefaultReactor();
  if (grpc::Status s = check_tokenizer_call(*context, request->ByteSizeLong()); !s.ok()) {
    reactor->Finish(s);
    return reactor;
  }
  std::vector<TokenId> ids;
  for (int i = 0; i < request->token_ids_size(); ++i) {
    const uint32_t id = request->token_ids(i);
    if (id >= static_cast<uint32_t>(model_.vocab_size)) {
      reactor->Finish(reject(Status::InvalidArgument(
          "token_ids[" + std::to_string(i) + "] = " + std::to_string(id) + " is outside the vocabulary [0, " +
          std::to_string(model_.vocab_size) + ")")));
      return reactor;
    }
    ids.push_back(static_cast<TokenId>(id));
  }
  response->set_text(tokenizer_->decode(ids));
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* GenerationService::GetModelInfo(grpc::CallbackServerContext* context,
                                                          const v1::GetModelInfoRequest*,
                                                          v1::ModelInfo* info) {
  if (grpc::Status auth = check_auth(*context); !auth.ok()) {
    auto* reactor = context->DefaultReactor();
    reactor->Finish(auth);
    return reactor;
  }
  const SchedulerConfig& sc = runner_.engine().scheduler().config();
  info->set_model(options_.model_name);
  info->set_architecture(model_.architecture);
  info->set_vocab_size(static_cast<uint32_t>(model_.vocab_size));
  info->set_hidden_size(static_cast<uint32_t>(model_.hidden_size));
  info->set_num_layers(static_cast<uint32_t>(model_.num_layers));
  info->set_num_heads(static_cast<uint32_t>(model_.num_heads));
  info->set_num_kv_heads(static_cast<uint32_t>(model_.num_kv_heads));
  info->set_head_dim(static_cast<uint32_t>(model_.head_dim));
  info->set_max_model_len(static_cast<uint32_t>(sc.max_model_len));
  info->set_block_size(static_cast<uint32_t>(sc.block_size));
  info->set_num_kv_blocks(static_cast<uint32_t>(sc.num_blocks));
  info->set_dtype(model_.dtype);
  info->set_backend(runner_.engine().backend().name());
  info->set_device(options_.device);
  info->set_max_num_seqs(static_cast<uint32_t>(sc.max_num_seqs));
  info->set_max_num_batched_tokens(static_cast<uint32_t>(sc.max_num_batched_tokens));
  info->set_chat_template(options_.chat_template != nullptr && tokenizer_ != nullptr);
  info->set_embedding_only(model_.embedding_only);
  info->set_quantization(quantization_summary(model_));
  if (model_.moe) {
    info->set_num_experts(static_cast<uint32_t>(model_.moe->num_experts));
    info->set_experts_per_token(static_cast<uint32_t>(model_.moe->experts_per_token));
  }
  for (const std::string& name : options_.lora_adapters)
    info->add_lora_adapters(name);
  info->set_scheduling_policy(sc.policy == SchedulingPolicy::kPriority ? "priority" : "fcfs");
  if (sc.policy == SchedulingPolicy::kPriority)
    info->set_max_priority_wait_seconds(std::chrono::duration<double>(sc.max_priority_wait).count());
  info->set_num_speculative_tokens(static_cast<uint32_t>(sc.speculative.max_draft_tokens));
  auto* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* GenerationService::GetServerStatus(grpc::CallbackServerContext* context,
                                                             const v1::GetServerStatusRequest*,
                                                             v1::ServerStatus* response) {
  if (grpc::Status auth = check_auth(*context); !auth.ok()) {
    auto* reactor = context->DefaultReactor();
    reactor->Finish(auth);
    return reactor;
  }
  const EngineStatus s = runner_.status();
  response->set_num_running(static_cast<uint32_t>(s.num_running));
  response->set_num_waiting(static_cast<uint32_t>(s.num_waiting));
  response->set_kv_blocks_total(static_cast<uint32_t>(s.kv_blocks_total));
  response->set_kv_blocks_free(static_cast<uint32_t>(s.kv_blocks_free));
  response->set_kv_blocks_cached(static_cast<uint32_t>(s.kv_blocks_cached));
  response->set_requests_served(s.requests_served);
  response->set_draining(s.draining);
  response->set_preemptions(s.preemptions);
  response->set_draft_tokens(s.draft_tokens);
  response->set_accepted_draft_tokens(s.accepted_draft_tokens);
  response->set_kv_slots_unfilled(static_cast<uint64_t>(s.kv_slots_unfilled));
  auto* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace kvserve
