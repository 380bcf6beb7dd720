#include "server/openai_request.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <limits>
#include <optional>
#include <set>
#include <utility>

#include "engine/json_limits.h"
#include "engine/json_schema_regex.h"
#include "engine/sampler.h"
#include "server/request_fields.h"

namespace kvserve::openai {
namespace {

// Ordered: the body's key order is kept where it is passed on (a schema's properties, the tools a
// template renders), as the client wrote it.
using Json = nlohmann::ordered_json;

// The bounds of engine/json_limits.h on the body, checked before it is parsed.
constexpr int kMaxJsonDepth = kMaxRequestJsonDepth;
constexpr size_t kMaxJsonMembers = kMaxRequestJsonMembers;
static_assert(kMaxJsonMembers >= static_cast<size_t>(kMaxLogitBias), "a full logit_bias must fit");
// Choices of all prompts in one /v1/completions request (prompts times n): each prompt is a call of
// its own, holding places in the queue.
constexpr size_t kMaxPromptChoices = 256;
// Alternatives per token, as the gRPC API allows (OpenAI's own limits are 5 and 20).
constexpr int64_t kMaxTopLogprobs = 20;

using request_fields::invalid;

Status wrong_type(const std::string& field, const char* expected, const Json& value) {
  return invalid(field, std::string("expected ") + expected + ", got " + value.type_name());
}

// The fields of one JSON object; a null value reads as absent, as OpenAI's clients send null for
// "not set".
class Fields {
 public:
  explicit Fields(const Json& object) : object_(object) {}

  const Json* find(const char* key) const {
    auto it = object_.find(key);
    return it == object_.end() || it->is_null() ? nullptr : &*it;
  }

  Status number(const char* key, std::optional<double>* out) const {
    const Json* v = find(key);
    if (!v) return Status::Ok();
    if (!v->is_number()) return wrong_type(key, "a number", *v);
    *out = v->get<double>();
    return Status::Ok();
  }

  // An integer in [lo, hi].
  Status integer(const char* key, int64_t lo, int64_t hi, std::optional<int64_t>* out) const {
    const Json* v = find(key);
    if (!v) return Status::Ok();
    if (!v->is_number_integer()) return wrong_type(key, "an integer", *v);
    const std::string range = " is outside [" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
    if (v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(hi))
      return invalid(key, std::to_string(v->get<uint64_t>()) + range);
    const int64_t x = v->get<int64_t>();
    if (x < lo || x > hi) return invalid(key, std::to_string(x) + range);
    *out = x;
    return Status::Ok();
  }

  Status boolean(const char* key, bool* out) const {
    const Json* v = find(key);
    if (!v) return Status::Ok();
    if (!v->is_boolean()) return wrong_type(key, "true or false", *v);
    *out = v->get<bool>();
    return Status::Ok();
  }

  Status string(const char* key, std::optional<std::string>* out) const {
    const Json* v = find(key);
    if (!v) return Status::Ok();
    if (!v->is_string()) return wrong_type(key, "a string", *v);
    *out = v->get<std::string>();
    return Status::Ok();
  }

 private:
  const Json& object_;
};

#define KVSERVE_RETURN_IF_ERROR(expr)   \
  do {                                  \
    if (Status s_ = (expr); !s_.ok()) { \
      return s_;                        \
    }                                   \
  } while (0)

constexpr int64_t kU32Max = std::numeric_limits<uint32_t>::max();

// A positive value for a float field whose 0 means "not set": one below float's range (1e-50)
// would round to that 0 and read as unset (top_p 1, no penalty), so it becomes the least normal
// float instead (for top_p, as for 1e-50: the most likely token alone).
float positive_float(double x) {
  return std::max(static_cast<float>(x), std::numeric_limits<float>::min());
}

Status parse_sampling(const Fields& f, v1::SamplingParams* sampling) {
  // OpenAI's default temperature is 1 (sampling); the gRPC API's unset value 0 means greedy.
  std::optional<double> temperature, top_p, min_p, repetition_penalty, presence, frequency;
  KVSERVE_RETURN_IF_ERROR(f.number("temperature", &temperature));
  sampling->set_temperature(static_cast<float>(temperature.value_or(1.0)));
  KVSERVE_RETURN_IF_ERROR(f.number("top_p", &top_p));
  if (top_p) {
    // The proto's 0 means "unset" (= 1), so a 0 here must not pass through as that.
    if (!(*top_p > 0.0 && *top_p <= 1.0)) return invalid("top_p", "must be in (0, 1]");
    sampling->set_top_p(positive_float(*top_p));
  }
  std::optional<int64_t> top_k;
  KVSERVE_RETURN_IF_ERROR(f.integer("top_k", -1, std::numeric_limits<int32_t>::max(), &top_k));
  if (top_k) sampling->set_top_k(*top_k < 0 ? 0 : static_cast<int32_t>(*top_k));  // -1: off, as vLLM
  KVSERVE_RETURN_IF_ERROR(f.number("min_p", &min_p));
  if (min_p) sampling->set_min_p(static_cast<float>(*min_p));
  KVSERVE_RETURN_IF_ERROR(f.number("repetition_penalty", &repetition_penalty));
  if (repetition_penalty) {
    if (!(*repetition_penalty > 0.0)) return invalid("repetition_penalty", "must be over 0 (1 = off)");
    sampling->set_repetition_penalty(positive_float(*repetition_penalty));
  }
  KVSERVE_RETURN_IF_ERROR(f.number("presence_penalty", &presence));
  if (presence) sampling->set_presence_penalty(static_cast<float>(*presence));
  KVSERVE_RETURN_IF_ERROR(f.number("frequency_penalty", &frequency));
  if (frequency) sampling->set_frequency_penalty(static_cast<float>(*frequency));
  if (const Json* seed = f.find("seed")) {
    if (!seed->is_number_integer()) return wrong_type("seed", "an integer", *seed);
    // Negative seeds are as good as any: their two's complement is the seed.
    sampling->set_seed(seed->is_number_unsigned() ? seed->get<uint64_t>()
                                                  : static_cast<uint64_t>(seed->get<int64_t>()));
  }
  if (const Json* bias = f.find("logit_bias")) {
    if (!bias->is_object()) return wrong_type("logit_bias", "an object of token id -> bias", *bias);
    for (const auto& [key, value] : bias->items()) {
      uint64_t id = 0;
      const bool digits =
          !key.empty() && key.size() <= 10 && key.find_first_not_of("0123456789") == std::string::npos;
      if (digits) id = std::stoull(key);
      if (!digits || id > static_cast<uint64_t>(kU32Max))
        return invalid("logit_bias",
                       "key \"" + key + "\" is not a token id; keys are token ids written as strings");
      if (!value.is_number()) return wrong_type("logit_bias[\"" + key + "\"]", "a number", value);
      (*sampling->mutable_logit_bias())[static_cast<uint32_t>(id)] = value.get<float>();
    }
  }
  return Status::Ok();
}

Status parse_stop(const Fields& f, v1::StopCriteria* stop) {
  if (const Json* s = f.find("stop")) {
    if (s->is_string()) {
      stop->add_stop(s->get<std::string>());
    } else if (s->is_array()) {
      for (size_t i = 0; i < s->size(); ++i) {
        if (!(*s)[i].is_string()) return wrong_type("stop[" + std::to_string(i) + "]", "a string", (*s)[i]);
        stop->add_stop((*s)[i].get<std::string>());
      }
    } else {
      return wrong_type("stop", "a string or an array of strings", *s);
    }
  }
  if (const Json* ids = f.find("stop_token_ids")) {
    if (!ids->is_array()) return wrong_type("stop_token_ids", "an array of token ids", *ids);
    for (size_t i = 0; i < ids->size(); ++i) {
      const Json& id = (*ids)[i];
      if (!id.is_number_unsigned() || id.get<uint64_t>() > static_cast<uint64_t>(kU32Max))
        return invalid("stop_token_ids[" + std::to_string(i) + "]",
                       "expected a token id (an integer from 0)");
      stop->add_stop_token_ids(id.get<uint32_t>());
    }
  }
  bool ignore_eos = false, include_stop = false;
  KVSERVE_RETURN_IF_ERROR(f.boolean("ignore_eos", &ignore_eos));
  stop->set_ignore_eos(ignore_eos);
  KVSERVE_RETURN_IF_ERROR(f.boolean("include_stop_str_in_output", &include_stop));
  stop->set_include_stop_str_in_output(include_stop);
  std::optional<int64_t> min_tokens;
  KVSERVE_RETURN_IF_ERROR(f.integer("min_tokens", 0, kU32Max, &min_tokens));
  if (min_tokens) stop->set_min_tokens(static_cast<uint32_t>(*min_tokens));
  return Status::Ok();
}

// response_format: OpenAI's "text", "json_object" and "json_schema", and kvserve's "regex" and
// "choice" (the gRPC API's other two forms).
Status parse_response_format(const Fields& f, v1::ResponseFormat* format) {
  const Json* rf = f.find("response_format");
  if (!rf) return Status::Ok();
  if (!rf->is_object()) return wrong_type("response_format", "an object with a \"type\"", *rf);
  const Fields rff(*rf);
  std::optional<std::string> type;
  if (Status s = rff.string("type", &type); !s.ok()) return invalid("response_format", s.message());
  const std::string kinds = "send \"text\", \"json_object\", \"json_schema\", \"regex\" or \"choice\"";
  if (!type) return invalid("response_format.type", "missing; " + kinds);
  if (*type == "text") return Status::Ok();
  if (*type == "json_object") {
    // Any JSON object: the schema converter's form for an object with no properties named.
    format->set_json_schema(R"({"type":"object"})");
    return Status::Ok();
  }
  if (*type == "json_schema") {
    const Json* js = rff.find("json_schema");
    if (!js || !js->is_object())
      return invalid("response_format.json_schema", "expected an object with the schema under \"schema\"");
    auto schema = js->find("schema");
    if (schema == js->end() || !schema->is_object())
      return invalid("response_format.json_schema.schema", "expected the JSON schema (an object)");
    format->set_json_schema(schema->dump());
    return Status::Ok();
  }
  if (*type == "regex") {
    std::optional<std::string> regex;
    if (Status s = rff.string("regex", &regex); !s.ok()) return invalid("response_format", s.message());
    if (!regex) return invalid("response_format.regex", "missing; send the pattern the output must match");
    format->set_regex(*regex);
    return Status::Ok();
  }
  if (*type == "choice") {
    const Json* values = rff.find("choice");
    if (!values || !values->is_array())
      return invalid("response_format.choice", "expected an array of the strings the output may be");
    format->mutable_choice();  // set even when empty, for the service to refuse an empty list
    for (size_t i = 0; i < values->size(); ++i) {
      if (!(*values)[i].is_string())
        return wrong_type("response_format.choice[" + std::to_string(i) + "]", "a string", (*values)[i]);
      format->mutable_choice()->add_values((*values)[i].get<std::string>());
    }
    return Status::Ok();
  }
  return invalid("response_format.type", "\"" + *type + "\" is not supported; " + kinds);
}

// vLLM's guided_json / guided_regex / guided_choice: the same constraints as response_format's.
Status parse_guided(const Fields& f, v1::ResponseFormat* format) {
  const Json* json = f.find("guided_json");
  const Json* regex = f.find("guided_regex");
  const Json* choice = f.find("guided_choice");
  if (!json && !regex && !choice) return Status::Ok();
  if ((json != nullptr) + (regex != nullptr) + (choice != nullptr) > 1 ||
      format->format_case() != v1::ResponseFormat::FORMAT_NOT_SET)
    return invalid("guided_json",
                   "send one constraint: one of guided_json, guided_regex, guided_choice and "
                   "response_format");
  if (json) {
    if (!json->is_object() && !json->is_string())
      return wrong_type("guided_json", "a JSON schema (an object, or its text)", *json);
    format->set_json_schema(json->is_string() ? json->get<std::string>() : json->dump());
  } else if (regex) {
    if (!regex->is_string()) return wrong_type("guided_regex", "a string", *regex);
    format->set_regex(regex->get<std::string>());
  } else {
    if (!choice->is_array()) return wrong_type("guided_choice", "an array of strings", *choice);
    format->mutable_choice();  // set even when empty, for the service to refuse an empty list
    for (size_t i = 0; i < choice->size(); ++i) {
      if (!(*choice)[i].is_string())
        return wrong_type("guided_choice[" + std::to_string(i) + "]", "a string", (*choice)[i]);
      format->mutable_choice()->add_values((*choice)[i].get<std::string>());
    }
  }
  return Status::Ok();
}

Status refuse_if_set(const Fields& f, const char* key, const char* why) {
  const Json* v = f.find(key);
  if (!v || (v->is_boolean() && !v->get<bool>()) || (v->is_string() && v->get<std::string>().empty()))
    return Status::Ok();
  return invalid(key, why);
}

// vLLM's extensions that kvserve knows but does not do: refused when set to anything but their
// default, rather than silently ignored.
Status refuse_unhonoured_extensions(const Fields& f) {
  KVSERVE_RETURN_IF_ERROR(refuse_if_set(f, "guided_grammar",
                                        "not supported; send guided_json, guided_regex, "
                                        "guided_choice or response_format"));
  KVSERVE_RETURN_IF_ERROR(refuse_if_set(f, "use_beam_search", "not supported; leave it false"));
  if (const Json* skip = f.find("skip_special_tokens"); skip && *skip != true)
    return invalid("skip_special_tokens", "only true is supported (the text never holds control tokens)");
  return Status::Ok();
}

// What both endpoints share: the model, choices, streaming, sampling, stop rules and format.
// `model`: absent, empty, the served one or a served LoRA adapter (its name in *lora_adapter, if
// asked for); another is NOT_FOUND.
Status check_model(const Fields& f, const ServedApi& served, std::string* lora_adapter = nullptr) {
  std::optional<std::string> model;
  KVSERVE_RETURN_IF_ERROR(f.string("model", &model));
  if (!model || model->empty() || *model == served.model) return Status::Ok();
  if (std::find(served.lora_adapters.begin(), served.lora_adapters.end(), *model) !=
      served.lora_adapters.end()) {
    if (lora_adapter) *lora_adapter = *model;
    return Status::Ok();
  }
  std::string adapters;
  for (const std::string& a : served.lora_adapters)
    adapters += ", \"" + a + "\"";
  return Status::NotFound(
      "model \"" + model->substr(0, 200) + "\" is not served here; this server serves \"" + served.model +
      "\"" + (adapters.empty() ? "" : " and the LoRA adapters" + adapters.substr(1)) + " (GET /v1/models)");
}

Status parse_common(const Fields& f, const ServedApi& served, ParsedRequest* out) {
  std::string lora_adapter;
  KVSERVE_RETURN_IF_ERROR(check_model(f, served, &lora_adapter));
  out->model = lora_adapter.empty() ? served.model : lora_adapter;
  out->generate.set_lora_adapter(lora_adapter);

  std::optional<int64_t> n, best_of;
  KVSERVE_RETURN_IF_ERROR(f.integer("n", 1, kU32Max, &n));
  if (n) out->generate.set_n(static_cast<uint32_t>(*n));
  KVSERVE_RETURN_IF_ERROR(f.integer("best_of", 1, kU32Max, &best_of));
  if (best_of && *best_of != n.value_or(1))
    return invalid("best_of", "only best_of = n is supported (every choice is returned); send n alone");

  KVSERVE_RETURN_IF_ERROR(f.boolean("stream", &out->stream));
  if (const Json* options = f.find("stream_options")) {
    if (!options->is_object()) return wrong_type("stream_options", "an object", *options);
    if (Status s = Fields(*options).boolean("include_usage", &out->include_usage); !s.ok())
      return invalid("stream_options", s.message());
  }

  KVSERVE_RETURN_IF_ERROR(parse_sampling(f, out->generate.mutable_sampling()));
  KVSERVE_RETURN_IF_ERROR(parse_stop(f, out->generate.mutable_stop()));
  v1::ResponseFormat format;
  KVSERVE_RETURN_IF_ERROR(parse_response_format(f, &format));
  KVSERVE_RETURN_IF_ERROR(parse_guided(f, &format));
  if (format.format_case() != v1::ResponseFormat::FORMAT_NOT_SET)
    *out->generate.mutable_response_format() = format;

  // vLLM's priority (the server's --scheduling-policy decides whether it may be other than 0).
  std::optional<int64_t> priority;
  KVSERVE_RETURN_IF_ERROR(f.integer("priority", std::numeric_limits<int32_t>::min(),
                                    std::numeric_limits<int32_t>::max(), &priority));
  if (priority) out->generate.set_priority(static_cast<int32_t>(*priority));

  // vLLM's prompt_logprobs: a whole reply's worth of data, so not streamed (as vLLM's chat refuses it).
  std::optional<int64_t> prompt_logprobs;
  KVSERVE_RETURN_IF_ERROR(f.integer("prompt_logprobs", 0, kMaxTopLogprobs, &prompt_logprobs));
  if (prompt_logprobs) {
    if (out->stream) return invalid("prompt_logprobs", "not available when streaming; set stream to false");
    out->prompt_logprobs = static_cast<int>(*prompt_logprobs);
    out->generate.set_prompt_logprobs(static_cast<uint32_t>(*prompt_logprobs));
  }
  return refuse_unhonoured_extensions(f);
}

// max_tokens (both) or max_completion_tokens (chat, preferred): absent = the server's default.
// /v1/completions without max_tokens generates 16 tokens, as OpenAI's API documents.
constexpr uint32_t kCompletionsDefaultMaxTokens = 16;
Status parse_max_tokens(const Fields& f, const char* key, v1::StopCriteria* stop) {
  std::optional<int64_t> max_tokens;
  KVSERVE_RETURN_IF_ERROR(f.integer(key, 1, kU32Max, &max_tokens));
  if (max_tokens) stop->set_max_tokens(static_cast<uint32_t>(*max_tokens));
  return Status::Ok();
}

// One prompt: a string, or an array of token ids.
Status read_prompt(const Json& p, const std::string& field, v1::GenerateRequest* out) {
  if (p.is_string()) {
    out->set_text(p.get<std::string>());
    return Status::Ok();
  }
  if (!p.is_array()) return wrong_type(field, "a string or an array of token ids", p);
  v1::TokenIds* ids = out->mutable_token_ids();
  for (size_t i = 0; i < p.size(); ++i) {
    const Json& id = p[i];
    if (!id.is_number_unsigned() || id.get<uint64_t>() > static_cast<uint64_t>(kU32Max))
      return invalid(field + "[" + std::to_string(i) + "]", "expected a token id (an integer from 0)");
    ids->add_ids(id.get<uint32_t>());
  }
  if (ids->ids().empty()) return invalid(field, "empty; send the text (or token ids) to continue");
  return Status::Ok();
}

// prompt: one prompt (a string or an array of token ids), or an array of prompts, each run as a
// request of its own. The first goes into `first`, the others' inputs into `rest`.
Status parse_prompts(const Json* prompt, v1::GenerateRequest* first, std::vector<v1::GenerateRequest>* rest) {
  if (!prompt) return invalid("prompt", "missing; send the text (or token ids) to continue");
  const bool list =
      prompt->is_array() && !prompt->empty() && (prompt->front().is_string() || prompt->front().is_array());
  if (!list) return read_prompt(*prompt, "prompt", first);
  if (prompt->size() > kMaxPromptChoices)
    return invalid("prompt", std::to_string(prompt->size()) + " prompts in one request, at most " +
                                 std::to_string(kMaxPromptChoices) + "; split them over several requests");
  for (size_t i = 0; i < prompt->size(); ++i) {
    v1::GenerateRequest* out = i == 0 ? first : &rest->emplace_back();
    KVSERVE_RETURN_IF_ERROR(read_prompt((*prompt)[i], "prompt[" + std::to_string(i) + "]", out));
  }
  return Status::Ok();
}

Status parse_completions(const Fields& f, const ServedApi& served, ParsedRequest* out) {
  std::vector<v1::GenerateRequest> more_inputs;
  KVSERVE_RETURN_IF_ERROR(parse_prompts(f.find("prompt"), &out->generate, &more_inputs));
  KVSERVE_RETURN_IF_ERROR(f.boolean("echo", &out->echo));
  if (const Json* max_tokens = f.find("max_tokens"); out->echo && max_tokens && *max_tokens == 0) {
    // The prompt alone, as OpenAI's API returns it: the engine generates one token (it always
    // does), which the reply leaves out.
    out->prompt_only = true;
    out->generate.mutable_stop()->set_max_tokens(1);
  } else {
    KVSERVE_RETURN_IF_ERROR(parse_max_tokens(f, "max_tokens", out->generate.mutable_stop()));
    // OpenAI's completions default, which vLLM keeps (chat's is all that fits: the server's).
    if (out->generate.stop().max_tokens() == 0)
      out->generate.mutable_stop()->set_max_tokens(kCompletionsDefaultMaxTokens);
  }
  std::optional<int64_t> logprobs;
  KVSERVE_RETURN_IF_ERROR(f.integer("logprobs", 0, kMaxTopLogprobs, &logprobs));
  if (logprobs) {
    out->logprobs = true;
    out->generate.set_top_logprobs(static_cast<uint32_t>(*logprobs));
  }
  bool add_special_tokens = true;
  KVSERVE_RETURN_IF_ERROR(f.boolean("add_special_tokens", &add_special_tokens));
  out->generate.set_no_bos(!add_special_tokens);
  if (out->echo && out->logprobs) {
    // The prompt's tokens are scored too (lm-evaluation-harness's loglikelihood requests).
    if (out->stream)
      return invalid("echo", "with logprobs is not available when streaming; set stream to false");
    out->generate.set_prompt_logprobs(
        std::max(out->generate.prompt_logprobs(), static_cast<uint32_t>(out->generate.top_logprobs())));
  }
  KVSERVE_RETURN_IF_ERROR(refuse_if_set(f, "suffix", "not supported (no fill-in-the-middle); leave it out"));
  if (more_inputs.empty()) return Status::Ok();
  // Every further prompt is the same request with its own input: bounded in choices and in bytes
  // (a large schema copied to each prompt), as one request would be.
  const size_t prompts = more_inputs.size() + 1;
  const size_t choices = prompts * std::max<size_t>(out->generate.n(), 1);
  if (choices > kMaxPromptChoices)
    return invalid("prompt", std::to_string(prompts) +
                                 " prompts of n = " + std::to_string(out->generate.n()) +
                                 " choices each make " + std::to_string(choices) + ", at most " +
                                 std::to_string(kMaxPromptChoices) + "; send fewer prompts per request");
  // Each prompt's request is the shared fields plus its input.
  const auto input_bytes = [](const v1::GenerateRequest& r) {
    return r.has_token_ids() ? r.token_ids().ByteSizeLong() : r.text().size();
  };
  const size_t shared = out->generate.ByteSizeLong() - input_bytes(out->generate);
  size_t bytes = out->generate.ByteSizeLong();
  for (const v1::GenerateRequest& input : more_inputs)
    bytes += shared + input_bytes(input);
  if (bytes > served.max_request_bytes)
    return invalid("prompt", "the " + std::to_string(prompts) +
                                 " prompts' requests, each with the request's other "
                                 "fields, come to about " +
                                 std::to_string(bytes) + " bytes, over --max-request-bytes (" +
                                 std::to_string(served.max_request_bytes) +
                                 "); send fewer prompts per request");
  for (v1::GenerateRequest& input : more_inputs) {
    v1::GenerateRequest& request = out->more_prompts.emplace_back(out->generate);
    if (input.has_token_ids())
      *request.mutable_token_ids() = std::move(*input.mutable_token_ids());
    else
      request.set_text(std::move(*input.mutable_text()));
  }
  return Status::Ok();
}

// One message's content: a string, null, or an array of text parts (joined by newlines, as vLLM
// joins them for a text-only template).
Status parse_content(const Json& message, const std::string& field, v1::ChatMessage* out, Json* extra) {
  auto content = message.find("content");
  if (content == message.end()) return Status::Ok();
  if (content->is_null()) {
    (*extra)["content"] = nullptr;  // the template sees None, as transformers passes it
    return Status::Ok();
  }
  if (content->is_string()) {
    out->set_content(content->get<std::string>());
    return Status::Ok();
  }
  if (!content->is_array())
    return wrong_type(field + ".content", "a string or an array of text parts", *content);
  std::string text;
  for (size_t j = 0; j < content->size(); ++j) {
    const Json& part = (*content)[j];
    const std::string part_field = field + ".content[" + std::to_string(j) + "]";
    if (!part.is_object()) return wrong_type(part_field, "an object", part);
    auto type = part.find("type");
    if (type == part.end() || !type->is_string() || type->get<std::string>() != "text")
      return invalid(part_field, "only parts of type \"text\" are supported (this server takes text only)");
    auto part_text = part.find("text");
    if (part_text == part.end() || !part_text->is_string())
      return invalid(part_field + ".text", "expected a string");
    if (j > 0) text += '\n';
    text += part_text->get<std::string>();
  }
  out->set_content(std::move(text));
  return Status::Ok();
}

// The calls of an assistant message in the history. OpenAI's clients send each call's arguments
// as JSON text; templates expect the object (transformers' convention: Llama 3.1's writes
// arguments | tojson, which would quote the text again), so the text is read into the object.
Status parse_history_calls(const std::string& field, Json& calls) {
  if (!calls.is_array()) return wrong_type(field, "an array of calls", calls);
  for (size_t j = 0; j < calls.size(); ++j) {
    const std::string call_field = field + "[" + std::to_string(j) + "]";
    Json& call = calls[j];
    if (!call.is_object()) return wrong_type(call_field, "an object", call);
    auto function = call.find("function");
    if (function == call.end() || !function->is_object())
      return invalid(call_field + ".function", "expected an object with the function's name and arguments");
    auto arguments = function->find("arguments");
    if (arguments == function->end() || arguments->is_null() || arguments->is_object()) continue;
    const std::string expected = "expected the JSON text of an object (the arguments the call was made with)";
    if (!arguments->is_string()) return invalid(call_field + ".function.arguments", expected);
    const std::string text = arguments->get<std::string>();
    // The text's own nesting: the body's check skipped it, being inside a string.
    if (std::string over = json_over_limits(text, kMaxJsonDepth, kMaxJsonMembers); !over.empty())
      return invalid(call_field + ".function.arguments", over);
    Json object = text.empty() ? Json::object() : Json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (!object.is_object()) return invalid(call_field + ".function.arguments", expected);
    *arguments = std::move(object);
  }
  return Status::Ok();
}

Status parse_messages(const Json* messages, v1::Chat* chat) {
  if (!messages || !messages->is_array() || messages->empty())
    return invalid("messages", "expected a non-empty array of {\"role\", \"content\"}");
  for (size_t i = 0; i < messages->size(); ++i) {
    const Json& m = (*messages)[i];
    const std::string field = "messages[" + std::to_string(i) + "]";
    if (!m.is_object()) return wrong_type(field, "an object", m);
    auto role = m.find("role");
    if (role == m.end() || !role->is_string())
      return invalid(field + ".role", "expected a string (\"system\", \"user\", \"assistant\", \"tool\")");
    v1::ChatMessage* out = chat->add_messages();
    out->set_role(role->get<std::string>());
    Json extra = Json::object();
    KVSERVE_RETURN_IF_ERROR(parse_content(m, field, out, &extra));
    for (const auto& [key, value] : m.items())
      if (key != "role" && key != "content") extra[key] = value;  // name, tool_calls, tool_call_id, ...
    if (auto calls = extra.find("tool_calls"); calls != extra.end() && !calls->is_null())
      KVSERVE_RETURN_IF_ERROR(parse_history_calls(field + ".tool_calls", *calls));
    if (!extra.empty()) out->set_extra_json(extra.dump());
  }
  return Status::Ok();
}

// The tools a request offers: function name -> its parameters schema (null when it has none).
using Functions = std::vector<std::pair<std::string, const Json*>>;

Status parse_tool_list(const Json& tools, Functions* functions) {
  if (!tools.is_array()) return wrong_type("tools", "an array of tool specifications", tools);
  std::set<std::string> names;
  for (size_t i = 0; i < tools.size(); ++i) {
    const std::string field = "tools[" + std::to_string(i) + "]";
    const Json& tool = tools[i];
    if (!tool.is_object()) return wrong_type(field, "an object", tool);
    if (auto type = tool.find("type"); type != tool.end() && *type != "function")
      return invalid(field + ".type", "only \"function\" tools are supported");
    auto function = tool.find("function");
    if (function == tool.end() || !function->is_object())
      return invalid(field + ".function", "expected an object with the function's \"name\"");
    auto name = function->find("name");
    if (name == function->end() || !name->is_string() || name->get<std::string>().empty())
      return invalid(field + ".function.name", "expected the function's name (a non-empty string)");
    if (!names.insert(name->get<std::string>()).second)
      return invalid(field + ".function.name",
                     "\"" + name->get<std::string>() + "\" names two tools; give each its own name");
    const Json* parameters = nullptr;
    if (auto p = function->find("parameters"); p != function->end() && !p->is_null()) {
      if (!p->is_object()) return wrong_type(field + ".function.parameters", "a JSON schema (an object)", *p);
      parameters = &*p;
    }
    functions->emplace_back(name->get<std::string>(), parameters);
  }
  return Status::Ok();
}

// A function's arguments schema, for the constraint of tool_choice "required" or a named function
// (any object where the tool has no parameters), checked here so that an unsupported keyword is
// reported against the tool that has it.
Status arguments_schema(const Functions& functions, size_t i, Json* schema) {
  *schema = functions[i].second ? *functions[i].second : Json{{"type", "object"}};
  std::string regex;
  if (Status s = json_schema_to_regex(*schema, &regex); !s.ok())
    return invalid("tools[" + std::to_string(i) + "].function.parameters",
                   s.message() +
                       " (tool_choice \"required\" and a named function constrain the reply to "
                       "the parameters' schema)");
  return Status::Ok();
}

// tools, tool_choice and parallel_tool_calls. The template renders the tools whatever the
// choice, as OpenAI's model sees them. "none" (the default without tools) reads the reply as text.
// "auto" (the default with tools) reads it for calls in the template's format. "required" and a
// named function constrain the reply to calls (a JSON array of {"name", "parameters"}, or the
// named function's arguments), which needs no format. Without parallel calls, one at most.
Status parse_tools(const Fields& f, const ServedApi& served, ParsedRequest* out) {
  Functions functions;
  const Json* tools = f.find("tools");
  if (tools) KVSERVE_RETURN_IF_ERROR(parse_tool_list(*tools, &functions));
  std::string choice = functions.empty() ? "none" : "auto";
  std::optional<std::string> named;
  const std::string choices =
      "send \"none\", \"auto\", \"required\" or {\"type\": \"function\", \"function\": {\"name\": ...}}";
  if (const Json* c = f.find("tool_choice")) {
    if (c->is_string()) {
      choice = c->get<std::string>();
      if (choice != "none" && choice != "auto" && choice != "required")
        return invalid("tool_choice", "\"" + choice + "\" is not a choice; " + choices);
    } else if (c->is_object()) {
      if (const Json* type = Fields(*c).find("type"); type && *type != "function")
        return invalid("tool_choice.type", "only \"function\" is supported");
      const Json* function = Fields(*c).find("function");
      const Json* name = function && function->is_object() ? Fields(*function).find("name") : nullptr;
      if (!name || !name->is_string())
        return invalid("tool_choice", "expected {\"type\": \"function\", \"function\": {\"name\": ...}}");
      named = name->get<std::string>();
      choice = "named";
    } else {
      return wrong_type("tool_choice",
                        "\"none\", \"auto\", \"required\" or a {\"type\": \"function\", ...} object", *c);
    }
  }
  bool parallel = true;
  KVSERVE_RETURN_IF_ERROR(f.boolean("parallel_tool_calls", &parallel));
  KVSERVE_RETURN_IF_ERROR(
      refuse_if_set(f, "functions", "the legacy functions field is not supported; send tools"));
  if (functions.empty()) {
    if (choice == "none") return Status::Ok();
    return invalid("tool_choice", "a tool choice needs tools; send them in \"tools\"");
  }
  v1::GenerateRequest& generate = out->generate;
  generate.mutable_chat()->set_tools_json(tools->dump());
  if (choice == "none") return Status::Ok();

  if (choice == "auto") {
    if (served.tool_call_format == ToolCallFormat::kNone)
      return invalid(
          "tools",
          "this model's chat template teaches no tool-call format the server reads, so calls could "
          "not be returned as tool_calls; send tool_choice \"required\" or a named function "
          "(the reply is then constrained to calls), or \"none\"; an operator whose model writes "
          "hermes, llama3_json, mistral or granite calls can start kvserve with --tool-call-parser");
    out->tool_calls = ToolCallReader::for_format(served.tool_call_format);
    // The format's markers that are control tokens stay in the reply's text for the reader.
    for (const std::string& marker : served.tool_call_control_markers)
      generate.add_keep_control_tokens(marker);
    // The model decides how many calls it writes: past the first, they are left out.
    if (!parallel) out->tool_calls->keep_at_most(1);
    return Status::Ok();
  }
  if (generate.has_response_format())
    return invalid("tool_choice", "\"" + choice +
                                      "\" constrains the reply to calls itself; leave response_format and "
                                      "guided_* out");
  Json schema;
  if (named) {
    auto it =
        std::find_if(functions.begin(), functions.end(), [&](const auto& fn) { return fn.first == *named; });
    if (it == functions.end())
      return invalid("tool_choice.function.name",
                     "no tool is named \"" + *named + "\"; name one of \"tools\"");
    KVSERVE_RETURN_IF_ERROR(arguments_schema(functions, it - functions.begin(), &schema));
    out->tool_calls = ToolCallReader::named(*named);
  } else {
    Json alternatives = Json::array();
    for (size_t i = 0; i < functions.size(); ++i) {
      Json arguments;
      KVSERVE_RETURN_IF_ERROR(arguments_schema(functions, i, &arguments));
      alternatives.push_back(Json{{"type", "object"},
                                  {"properties", Json{{"name", Json{{"const", functions[i].first}}},
                                                      {"parameters", std::move(arguments)}}},
                                  {"required", Json::array({"name", "parameters"})}});
    }
    schema = Json{{"type", "array"}, {"minItems", 1}, {"items", Json{{"anyOf", std::move(alternatives)}}}};
    if (!parallel) schema["maxItems"] = 1;
    std::string regex;
    if (Status s = json_schema_to_regex(schema, &regex); !s.ok())
      return invalid("tools", "the tools together are too large a constraint for tool_choice \"required\" (" +
                                  s.message() + "); offer fewer tools or name one in tool_choice");
    out->tool_calls = ToolCallReader::required();
  }
  if (served.tool_call_format == ToolCallFormat::kMistral) out->tool_calls->use_nine_character_call_ids();
  generate.mutable_response_format()->set_json_schema(schema.dump());
  return Status::Ok();
}

// How the conversation is rendered: chat_template_kwargs, add_generation_prompt,
// continue_final_message.
Status parse_template_options(const Fields& f, v1::Chat* chat) {
  if (const Json* kwargs = f.find("chat_template_kwargs")) {
    if (!kwargs->is_object()) return wrong_type("chat_template_kwargs", "an object", *kwargs);
    chat->set_template_kwargs_json(kwargs->dump());
  }
  if (const Json* add = f.find("add_generation_prompt")) {
    if (!add->is_boolean()) return wrong_type("add_generation_prompt", "true or false", *add);
    chat->set_add_generation_prompt(add->get<bool>());
  }
  bool continue_final = false;
  KVSERVE_RETURN_IF_ERROR(f.boolean("continue_final_message", &continue_final));
  chat->set_continue_final_message(continue_final);
  return Status::Ok();
}

Status parse_chat(const Fields& f, const ServedApi& served, ParsedRequest* out) {
  out->reasoning = served.reasoning;
  v1::Chat* chat = out->generate.mutable_chat();
  KVSERVE_RETURN_IF_ERROR(parse_messages(f.find("messages"), chat));
  v1::StopCriteria* stop = out->generate.mutable_stop();
  KVSERVE_RETURN_IF_ERROR(parse_max_tokens(f, "max_tokens", stop));
  KVSERVE_RETURN_IF_ERROR(parse_max_tokens(f, "max_completion_tokens", stop));

  KVSERVE_RETURN_IF_ERROR(f.boolean("logprobs", &out->logprobs));
  std::optional<int64_t> top_logprobs;
  KVSERVE_RETURN_IF_ERROR(f.integer("top_logprobs", 0, kMaxTopLogprobs, &top_logprobs));
  if (top_logprobs && *top_logprobs > 0 && !out->logprobs)
    return invalid("top_logprobs", "needs \"logprobs\": true");
  if (top_logprobs) out->generate.set_top_logprobs(static_cast<uint32_t>(*top_logprobs));

  KVSERVE_RETURN_IF_ERROR(parse_tools(f, served, out));
  KVSERVE_RETURN_IF_ERROR(refuse_if_set(f, "echo", "not supported for chat; leave it false"));
  KVSERVE_RETURN_IF_ERROR(parse_template_options(f, chat));
  if (const Json* modalities = f.find("modalities")) {
    if (!modalities->is_array()) return wrong_type("modalities", "an array", *modalities);
    for (const Json& m : *modalities)
      if (m != "text") return invalid("modalities", "only \"text\" is supported");
  }
  return refuse_if_set(f, "audio", "not supported (this server produces text only)");
}

}  // namespace

Status read_request_body(std::string_view body, Json* json) {
  if (std::string over = json_over_limits(body, kMaxJsonDepth, kMaxJsonMembers); !over.empty())
    return Status::InvalidArgument("request body: " + over);
  try {
    *json = Json::parse(body);
  } catch (const Json::exception& e) {
    return Status::InvalidArgument(std::string("request body: not valid JSON (") + e.what() + ")");
  }
  if (!json->is_object())
    return Status::InvalidArgument(std::string("request body: expected a JSON object, got ") +
                                   json->type_name());
  return Status::Ok();
}

Status parse_request(Endpoint endpoint, std::string_view body, const ServedApi& served, ParsedRequest* out) {
  *out = ParsedRequest{};
  out->endpoint = endpoint;
  Json json;
  KVSERVE_RETURN_IF_ERROR(read_request_body(body, &json));
  const Fields fields(json);
  KVSERVE_RETURN_IF_ERROR(parse_common(fields, served, out));
  return endpoint == Endpoint::kCompletions ? parse_completions(fields, served, out)
                                            : parse_chat(fields, served, out);
}

Status parse_tokenize_request(std::string_view body, const ServedApi& served, ParsedTokenize* out) {
  *out = ParsedTokenize{};
  Json json;
  KVSERVE_RETURN_IF_ERROR(read_request_body(body, &json));
  const Fields f(json);
  KVSERVE_RETURN_IF_ERROR(check_model(f, served));
  KVSERVE_RETURN_IF_ERROR(f.boolean("return_token_strs", &out->return_token_strs));
  const Json* prompt = f.find("prompt");
  const Json* messages = f.find("messages");
  if ((prompt != nullptr) == (messages != nullptr))
    return invalid("prompt",
                   "send either \"prompt\" (text) or \"messages\" (a conversation), not both or neither");
  if (prompt) {
    if (!prompt->is_string()) return wrong_type("prompt", "a string", *prompt);
    out->tokenize.set_text(prompt->get<std::string>());
    bool add_special_tokens = true;
    KVSERVE_RETURN_IF_ERROR(f.boolean("add_special_tokens", &add_special_tokens));
    out->tokenize.set_add_bos(add_special_tokens);
    return Status::Ok();
  }
  // A conversation: the prompt the chat endpoint would run, tools rendered as there.
  v1::Chat* chat = out->tokenize.mutable_chat();
  KVSERVE_RETURN_IF_ERROR(parse_messages(messages, chat));
  KVSERVE_RETURN_IF_ERROR(parse_template_options(f, chat));
  if (const Json* tools = f.find("tools")) {
    Functions functions;
    KVSERVE_RETURN_IF_ERROR(parse_tool_list(*tools, &functions));
    if (!functions.empty()) chat->set_tools_json(tools->dump());
  }
  // The template writes the special tokens itself: asking for more would double them.
  return refuse_if_set(f, "add_special_tokens",
                       "not for messages (the chat template writes the special tokens); leave it out");
}

Status parse_detokenize_request(std::string_view body, const ServedApi& served, v1::DetokenizeRequest* out) {
  *out = v1::DetokenizeRequest{};
  Json json;
  KVSERVE_RETURN_IF_ERROR(read_request_body(body, &json));
  const Fields f(json);
  KVSERVE_RETURN_IF_ERROR(check_model(f, served));
  const Json* tokens = f.find("tokens");
  if (!tokens || !tokens->is_array()) return invalid("tokens", "expected an array of token ids");
  for (size_t i = 0; i < tokens->size(); ++i) {
    const Json& id = (*tokens)[i];
    if (!id.is_number_unsigned() || id.get<uint64_t>() > static_cast<uint64_t>(kU32Max))
      return invalid("tokens[" + std::to_string(i) + "]", "expected a token id (an integer from 0)");
    out->add_token_ids(id.get<uint32_t>());
  }
  return Status::Ok();
}

Status parse_embeddings_request(std::string_view body, const ServedApi& served, ParsedEmbeddings* out) {
  *out = ParsedEmbeddings{};
  Json json;
  KVSERVE_RETURN_IF_ERROR(read_request_body(body, &json));
  const Fields f(json);
  std::string lora_adapter;
  KVSERVE_RETURN_IF_ERROR(check_model(f, served, &lora_adapter));
  out->embed.set_lora_adapter(lora_adapter);
  out->model = lora_adapter.empty() ? served.model : lora_adapter;
  const Json* input = f.find("input");
  if (!input) return invalid("input", "missing; send the text (or token ids) to embed");
  // A list of inputs is an array of strings or of arrays; anything else is one input.
  const bool list =
      input->is_array() && !input->empty() && (input->front().is_string() || input->front().is_array());
  const size_t count = list ? input->size() : 1;
  for (size_t i = 0; i < count; ++i) {
    const Json& one = list ? (*input)[i] : *input;
    const std::string field = list ? "input[" + std::to_string(i) + "]" : "input";
    v1::GenerateRequest read;  // read_prompt's reader, shared with /v1/completions
    KVSERVE_RETURN_IF_ERROR(read_prompt(one, field, &read));
    if (read.has_token_ids()) {
      *out->embed.add_inputs()->mutable_token_ids() = std::move(*read.mutable_token_ids());
    } else {
      if (read.text().empty()) return invalid(field, "empty; send at least one character");
      out->embed.add_inputs()->set_text(std::move(*read.mutable_text()));
    }
  }
  std::optional<std::string> format;
  KVSERVE_RETURN_IF_ERROR(f.string("encoding_format", &format));
  if (format && *format != "float" && *format != "base64")
    return invalid("encoding_format", "\"" + *format + "\" is not one of \"float\", \"base64\"");
  out->base64 = format && *format == "base64";
  std::optional<int64_t> dimensions;
  KVSERVE_RETURN_IF_ERROR(f.integer("dimensions", 1, kU32Max, &dimensions));
  if (dimensions) out->embed.set_dimensions(static_cast<uint32_t>(*dimensions));
  bool normalize = true, add_special_tokens = true;
  KVSERVE_RETURN_IF_ERROR(f.boolean("normalize", &normalize));
  KVSERVE_RETURN_IF_ERROR(f.boolean("add_special_tokens", &add_special_tokens));
  out->embed.set_no_normalize(!normalize);
  out->embed.set_no_bos(!add_special_tokens);
  return Status::Ok();
}

}  // namespace kvserve::openai
