// What the request targets share (fuzz_request_validation, fuzz_openai_request): the server's
// GenerationService over a checksum engine, and the path a client's GenerateRequest takes before
// anything is queued — translation (GenerationService::to_engine_request), the engine's admission
// checks (Engine::validate) — with the properties every admitted request must have.
//
// The engine is the checksum stand-in (vocabulary 512, like the tiny model's tokenizer), so
// building it costs nothing; no request is ever submitted, so it never generates. Chat input is
// rendered with the tiny model's chat template (tokenizer_config.json), as kvserve serves it.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include <google/protobuf/stubs/logging.h>

#include "engine/chat_template.h"
#include "engine/checksum_backend.h"
#include "engine/detokenizer.h"
#include "engine/engine.h"
#include "engine/model.h"
#include "engine/tokenizer.h"
#include "kvserve/v1/kvserve.pb.h"
#include "server/engine_runner.h"
#include "server/generation_service.h"

namespace kvserve::fuzz {

// The target's name, for its reports; each target defines it.
extern const char* const kTargetName;

inline constexpr const char* kModelDir = KVSERVE_TEST_DATA "/models/tiny-llama";

inline void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "%s: property violated: %s\n", kTargetName, what);
    std::abort();
  }
}

// KVSERVE_FUZZ_VERBOSE=1 says why each input was refused: for reading a reproducer or a seed.
inline bool verbose() {
  static const bool on = std::getenv("KVSERVE_FUZZ_VERBOSE") != nullptr;
  return on;
}

struct RequestFixture {
  ModelConfig model;
  std::shared_ptr<const Tokenizer> tokenizer;
  std::unique_ptr<EngineRunner> runner;
  std::unique_ptr<GenerationService> service;

  RequestFixture() {
    // Parse failures (invalid UTF-8 in a string field) are expected here; logging each one would
    // slow the fuzzer down and bury a real report.
    google::protobuf::SetLogHandler(nullptr);
    model = load_model_config(std::string(kModelDir) + "/config.json");
    tokenizer = Tokenizer::load(std::string(kModelDir) + "/tokenizer.model");
    EngineConfig cfg;
    cfg.scheduler.block_size = 16;
    cfg.scheduler.num_blocks = 32;  // fewer tokens than max_model_len: the pool check can fail too
    cfg.scheduler.max_model_len = max_supported_len(model);
    cfg.eos_token_ids = model.eos_token_ids;
    cfg.tokenizer = tokenizer;
    auto engine = std::make_unique<Engine>(
        cfg, std::make_unique<ChecksumBackend>(cfg.scheduler.num_blocks, cfg.scheduler.block_size,
                                               model.vocab_size));
    runner = std::make_unique<EngineRunner>(std::move(engine), EngineRunnerOptions{});
    ServiceOptions options;
    options.max_request_bytes = 4096;  // small, so that the limit itself is reachable
    options.max_stop_strings = 4;
    options.max_stop_string_bytes = 32;
    options.chat_template = ChatTemplate::load_from_model_dir(kModelDir, "<s>", "</s>");
    service = std::make_unique<GenerationService>(*runner, model, tokenizer, options);
  }
};

// Runs `wire` through to_engine_request and Engine::validate, as GenerationService::Generate does,
// and returns the refusal: a non-OK Status is the expected outcome for a bad request. An admitted
// request (OK) must have everything the engine loop relies on (checked, aborting otherwise).
inline Status admit_and_check(const RequestFixture& fixture, const v1::GenerateRequest& wire) {
  Request request;
  if (Status s = fixture.service->to_engine_request(wire, &request); !s.ok()) {
    if (verbose()) std::fprintf(stderr, "to_engine_request: %s\n", s.message().c_str());
    return s;
  }
  const Engine& engine = fixture.runner->engine();
  if (Status s = engine.validate(request); !s.ok()) {
    if (verbose()) std::fprintf(stderr, "Engine::validate: %s\n", s.message().c_str());
    return s;
  }
  if (verbose()) std::fprintf(stderr, "admitted: %zu prompt tokens\n", request.prompt.size());

  // Admitted: everything the engine loop relies on must hold.
  const int vocab = fixture.model.vocab_size;
  check(!request.prompt.empty(), "an admitted prompt is not empty");
  for (TokenId t : request.prompt)
    check(t >= 0 && t < vocab, "admitted prompt ids are in the vocabulary");
  for (TokenId t : request.stop.stop_token_ids)
    check(t >= 0 && t < vocab, "admitted stop ids are in the vocabulary");
  check(request.stop.max_tokens >= 1 && request.stop.min_tokens >= 0 &&
            request.stop.min_tokens <= request.stop.max_tokens,
        "admitted max_tokens/min_tokens are consistent");
  check(static_cast<long long>(request.prompt.size()) + request.stop.max_tokens <=
            engine.scheduler().config().max_model_len,
        "an admitted request fits the model length");
  check(request.sampling.top_logprobs >= 0 && request.sampling.top_logprobs <= kMaxTopLogprobs,
        "admitted top_logprobs is in range");
  check(request.sampling.prompt_logprobs >= -1 && request.sampling.prompt_logprobs <= kMaxTopLogprobs,
        "admitted prompt_logprobs is off (-1) or in range");

  // What add_request builds next for an admitted request; building it touches the prompt and the
  // stop strings the same way the engine loop will.
  IncrementalDetokenizer detokenizer(*fixture.tokenizer, request.prompt, request.stop.stop,
                                     request.stop.min_tokens, request.constraint != nullptr,
                                     request.stop.include_stop_str_in_output);
  (void)detokenizer.finish();
  return Status::Ok();
}

}  // namespace kvserve::fuzz
