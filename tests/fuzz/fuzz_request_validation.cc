// A Generate request off the wire: translation (GenerationService::to_engine_request) and the
// engine's admission checks (Engine::validate), exactly the path a client's bytes take before
// anything is queued. A Status error is the expected outcome for bad requests; crashes and
// sanitizer reports are bugs, and a request both accept must really be admissible.
//
// The engine is the checksum stand-in (vocabulary 512, like the tiny model's tokenizer), so
// building it costs nothing; no request is ever submitted, so it never generates. Chat input is
// rendered with the tiny model's chat template (tokenizer_config.json), as kvserve serves it.
#include <cstddef>
#include <cstdint>
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
#include "server/engine_runner.h"
#include "server/generation_service.h"

namespace {

constexpr const char* kModelDir = KVSERVE_TEST_DATA "/models/tiny-llama";

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz_request_validation: property violated: %s\n", what);
    std::abort();
  }
}

struct Fixture {
  kvserve::ModelConfig model;
  std::shared_ptr<const kvserve::Tokenizer> tokenizer;
  std::unique_ptr<kvserve::EngineRunner> runner;
  std::unique_ptr<kvserve::GenerationService> service;

  Fixture() {
    // Parse failures (invalid UTF-8 in a string field) are expected here; logging each one would
    // slow the fuzzer down and bury a real report.
    google::protobuf::SetLogHandler(nullptr);
    model = kvserve::load_model_config(std::string(kModelDir) + "/config.json");
    tokenizer = kvserve::Tokenizer::load(std::string(kModelDir) + "/tokenizer.model");
    kvserve::EngineConfig cfg;
    cfg.scheduler.block_size = 16;
    cfg.scheduler.num_blocks = 32;  // fewer tokens than max_model_len: the pool check can fail too
    cfg.scheduler.max_model_len = kvserve::max_supported_len(model);
    cfg.eos_token_ids = model.eos_token_ids;
    cfg.tokenizer = tokenizer;
    auto engine = std::make_unique<kvserve::Engine>(
        cfg, std::make_unique<kvserve::ChecksumBackend>(cfg.scheduler.num_blocks, cfg.scheduler.block_size,
                                                        model.vocab_size));
    runner = std::make_unique<kvserve::EngineRunner>(std::move(engine), kvserve::EngineRunnerOptions{});
    kvserve::ServiceOptions options;
    options.max_request_bytes = 4096;  // small, so that the limit itself is reachable
    options.max_stop_strings = 4;
    options.max_stop_string_bytes = 32;
    options.chat_template = kvserve::ChatTemplate::load_from_model_dir(kModelDir, "<s>", "</s>");
    service = std::make_unique<kvserve::GenerationService>(*runner, model, tokenizer, options);
  }
};

// Deliberately leaked: the runner's thread must not be joined during static destruction, and
// LeakSanitizer does not report memory still reachable from a global.
Fixture* const fixture = new Fixture;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  kvserve::v1::GenerateRequest wire;
  if (!wire.ParseFromArray(data, static_cast<int>(size))) return -1;

  // KVSERVE_FUZZ_VERBOSE=1 says why each request was refused: for reading a reproducer or a seed.
  static const bool verbose = std::getenv("KVSERVE_FUZZ_VERBOSE") != nullptr;
  kvserve::Request request;
  if (kvserve::Status s = fixture->service->to_engine_request(wire, &request); !s.ok()) {
    if (verbose) std::fprintf(stderr, "to_engine_request: %s\n", s.message().c_str());
    return 0;
  }
  const kvserve::Engine& engine = fixture->runner->engine();
  if (kvserve::Status s = engine.validate(request); !s.ok()) {
    if (verbose) std::fprintf(stderr, "Engine::validate: %s\n", s.message().c_str());
    return 0;
  }
  if (verbose) std::fprintf(stderr, "admitted: %zu prompt tokens\n", request.prompt.size());

  // Admitted: everything the engine loop relies on must hold.
  const int vocab = fixture->model.vocab_size;
  check(!request.prompt.empty(), "an admitted prompt is not empty");
  for (kvserve::TokenId t : request.prompt)
    check(t >= 0 && t < vocab, "admitted prompt ids are in the vocabulary");
  for (kvserve::TokenId t : request.stop.stop_token_ids)
    check(t >= 0 && t < vocab, "admitted stop ids are in the vocabulary");
  check(request.stop.max_tokens >= 1 && request.stop.min_tokens >= 0 &&
            request.stop.min_tokens <= request.stop.max_tokens,
        "admitted max_tokens/min_tokens are consistent");
  check(static_cast<long long>(request.prompt.size()) + request.stop.max_tokens <=
            engine.scheduler().config().max_model_len,
        "an admitted request fits the model length");
  check(request.sampling.top_logprobs >= 0 && request.sampling.top_logprobs <= kvserve::kMaxTopLogprobs,
        "admitted top_logprobs is in range");

  // What add_request builds next for an admitted request; building it touches the prompt and the
  // stop strings the same way the engine loop will.
  kvserve::IncrementalDetokenizer detokenizer(*fixture->tokenizer, request.prompt, request.stop.stop,
                                              request.stop.min_tokens);
  (void)detokenizer.finish();
  return 0;
}
