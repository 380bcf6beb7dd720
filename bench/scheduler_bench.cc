// Host overhead of one engine step with no model in it, at two levels:
//   BM_DecodeStep: Scheduler::schedule(), BatchBuilder::build() and Scheduler::complete_step();
//   BM_EngineStep: the whole Engine::step() around a backend that costs nothing, so that also the
//     sampling tasks, the per-request outputs and (optionally) incremental detokenization count.
//   BM_ProposeNgramDraft: speculative decoding's prompt lookup for one sequence, which a step with
//     --num-speculative-tokens runs for every decode (random tokens: no match, the whole context read).
// At 256 running sequences with 4k-token contexts this must stay far below a GPU decode step
// (milliseconds) so the host never starves the device. See docs/benchmarks.md.
#include <benchmark/benchmark.h>

#include <memory>
#include <random>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "engine/ngram_drafter.h"
#include "engine/scheduler.h"
#include "engine/step_batch.h"
#include "engine/tokenizer.h"

namespace kvserve {
namespace {

constexpr int kBlockSize = 16;

// Room for num_seqs sequences of context + headroom_tokens tokens each.
SchedulerConfig decode_config(int num_seqs, int context, int headroom_tokens) {
  SchedulerConfig cfg;
  cfg.block_size = kBlockSize;
  cfg.max_num_seqs = num_seqs;
  cfg.max_model_len = context + headroom_tokens + 1;
  cfg.num_blocks = num_seqs * ((context + headroom_tokens) / kBlockSize + 1);
  return cfg;
}

// Requests "r0".. with random prompts of `context` ids in [first_id, last_id] that generate
// max_tokens tokens each whatever they are.
std::vector<Request> random_requests(int num_seqs, int context, int max_tokens, TokenId first_id,
                                     TokenId last_id) {
  std::mt19937 rng(1);
  std::uniform_int_distribution<TokenId> tok(first_id, last_id);
  std::vector<Request> requests(num_seqs);
  for (int i = 0; i < num_seqs; ++i) {
    Request& r = requests[i];
    r.id = "r" + std::to_string(i);
    r.prompt.resize(context);
    for (TokenId& t : r.prompt)
      t = tok(rng);
    r.stop.max_tokens = max_tokens;
    r.stop.ignore_eos = true;
  }
  return requests;
}

std::unique_ptr<Scheduler> steady_state(int num_seqs, int context, bool prefix_caching, int headroom_tokens) {
  SchedulerConfig cfg = decode_config(num_seqs, context, headroom_tokens);
  cfg.enable_prefix_caching = prefix_caching;
  auto sched = std::make_unique<Scheduler>(cfg);
  const std::vector<TokenId> eos{2};
  for (Request& r : random_requests(num_seqs, context, headroom_tokens, 1, 32000))
    sched->add(std::make_unique<Sequence>(std::move(r), kBlockSize, eos));
  // Prefill everything so that the measured steps are pure decode.
  std::vector<TokenId> sampled;
  while (sched->stats().num_waiting > 0 ||
         sched->find("r" + std::to_string(num_seqs - 1))->num_output_tokens() == 0) {
    const StepPlan plan = sched->schedule();
    sampled.assign(plan.seqs.size(), 5);
    sched->complete_step(plan, sampled);
  }
  return sched;
}

void BM_DecodeStep(benchmark::State& state) {
  const int num_seqs = static_cast<int>(state.range(0));
  const int context = static_cast<int>(state.range(1));
  const bool prefix_caching = state.range(2) != 0;
  const int steps = 2000;
  // Early sequences decode while later ones prefill: leave room so that none finishes mid-run.
  auto sched = steady_state(num_seqs, context, prefix_caching, steps + num_seqs * context / 2048 + 64);
  BatchBuilder builder;
  std::vector<TokenId> sampled(num_seqs, 5);
  for (auto _ : state) {
    const StepPlan plan = sched->schedule();
    if (static_cast<int>(plan.seqs.size()) != num_seqs) {
      state.SkipWithError("a sequence finished or was preempted: the setup is wrong");
      break;
    }
    const StepBatch& batch = builder.build(plan, kBlockSize);
    benchmark::DoNotOptimize(batch.block_tables.data());
    sched->complete_step(plan, sampled);
  }
  state.counters["seqs"] = num_seqs;
  state.counters["context"] = context;
}
BENCHMARK(BM_DecodeStep)
    ->ArgNames({"seqs", "context", "prefix_cache"})
    ->Args({256, 4096, 1})
    ->Args({256, 4096, 0})
    ->Args({64, 4096, 1})
    ->Args({16, 512, 1})
    ->Iterations(2000)
    ->Unit(benchmark::kMicrosecond);

// A model that answers instantly: every sampled sequence gets the next token of a fixed cycle
// through ordinary (non-control) ids, so a detokenizer has real text to produce. It validates each
// batch as the CPU and CUDA backends do (validate_step_batch), unless told not to, to show that cost.
class InstantBackend : public Backend {
 public:
  InstantBackend(int vocab_size, int num_blocks, bool validate)
      : vocab_size_(vocab_size), num_blocks_(num_blocks), validate_(validate) {}
  std::string name() const override { return "instant"; }
  int vocab_size() const override { return vocab_size_; }
  std::span<const float> forward(const StepBatch&) override {
    throw std::logic_error("InstantBackend samples in forward_and_sample only");
  }
  void forward_and_sample(const StepBatch& batch, std::span<const SamplingTask> tasks,
                          std::span<SampledToken> out) override {
    if (validate_) validate_step_batch(batch, num_blocks_, kBlockSize, vocab_size_);
    for (size_t i = 0; i < tasks.size(); ++i) {
      next_ = next_ + 1 < vocab_size_ ? next_ + 1 : kFirstOrdinaryId;
      out[i].token = next_;
      out[i].logprob = -1.0f;
    }
  }

  // Below this the test tokenizer keeps its control and byte-fallback ids.
  static constexpr TokenId kFirstOrdinaryId = 300;

 private:
  int vocab_size_;
  int num_blocks_;
  bool validate_;
  TokenId next_ = kFirstOrdinaryId;
};

void BM_EngineStep(benchmark::State& state) {
  const int num_seqs = static_cast<int>(state.range(0));
  const int context = static_cast<int>(state.range(1));
  const bool detokenize = state.range(2) != 0;
  const bool validate = state.range(3) != 0;
  // Early sequences decode while later ones prefill (8192 tokens a step), and then for the 2000
  // measured steps: leave room so that none finishes mid-run.
  const int headroom = 2000 + num_seqs * context / 4096 + 64;

  EngineConfig cfg;
  cfg.scheduler = decode_config(num_seqs, context, headroom);
  cfg.scheduler.max_num_batched_tokens = 8192;
  cfg.eos_token_ids = {2};
  int vocab = 32000;
  if (detokenize) {
    cfg.tokenizer = Tokenizer::load(KVSERVE_TEST_DATA "/tokenizer/tokenizer.model");
    vocab = cfg.tokenizer->vocab_size();
  }
  Engine engine(cfg, std::make_unique<InstantBackend>(vocab, cfg.scheduler.num_blocks, validate));
  for (Request& r :
       random_requests(num_seqs, context, headroom, InstantBackend::kFirstOrdinaryId, vocab - 1)) {
    if (!engine.add_request(std::move(r)).ok()) {
      state.SkipWithError("the engine refused a request: the setup is wrong");
      return;
    }
  }
  // Prefill everything so that the measured steps are pure decode: every sequence emits a token.
  while (engine.step().size() < static_cast<size_t>(num_seqs)) {
  }

  for (auto _ : state) {
    const std::vector<StepOutput> outputs = engine.step();
    if (static_cast<int>(outputs.size()) != num_seqs) {
      state.SkipWithError("a sequence finished or was preempted: the setup is wrong");
      break;
    }
    benchmark::DoNotOptimize(outputs.data());
  }
  state.counters["seqs"] = num_seqs;
  state.counters["context"] = context;
}
BENCHMARK(BM_EngineStep)
    ->ArgNames({"seqs", "context", "detokenize", "validate"})
    ->Args({256, 4096, 0, 1})
    ->Args({256, 4096, 0, 0})
    ->Args({256, 4096, 1, 1})
    ->Args({64, 4096, 0, 1})
    ->Args({16, 512, 0, 1})
    ->Iterations(2000)
    ->Unit(benchmark::kMicrosecond);

void BM_ProposeNgramDraft(benchmark::State& state) {
  const int context = static_cast<int>(state.range(0));
  std::mt19937 rng(7);
  std::uniform_int_distribution<TokenId> token(0, 128255);  // a Llama 3 vocabulary
  std::vector<TokenId> tokens(static_cast<size_t>(context));
  for (TokenId& t : tokens)
    t = token(rng);
  const NgramDraftConfig config{.max_draft_tokens = 4, .min_ngram = 2, .max_ngram = 4};
  std::vector<TokenId> draft;
  for (auto _ : state) {
    propose_ngram_draft(tokens, config, 4, draft);
    benchmark::DoNotOptimize(draft.data());
  }
  state.counters["context"] = context;
}
BENCHMARK(BM_ProposeNgramDraft)->Arg(512)->Arg(4096)->Arg(16384)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace kvserve

BENCHMARK_MAIN();
