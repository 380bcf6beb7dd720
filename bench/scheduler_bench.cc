// Host overhead of one engine step with no model in it: Scheduler::schedule(), BatchBuilder::build()
// and Scheduler::complete_step(). At 256 running sequences with 4k-token contexts this must stay far
// below a GPU decode step (milliseconds) so the host never starves the device. See docs/benchmarks.md.
#include <benchmark/benchmark.h>

#include <memory>
#include <random>
#include <string>
#include <vector>

#include "engine/scheduler.h"
#include "engine/step_batch.h"

namespace kvserve {
namespace {

constexpr int kBlockSize = 16;

std::unique_ptr<Scheduler> steady_state(int num_seqs, int context, bool prefix_caching, int headroom_tokens) {
  SchedulerConfig cfg;
  cfg.block_size = kBlockSize;
  cfg.max_num_seqs = num_seqs;
  cfg.max_model_len = context + headroom_tokens + 1;
  cfg.num_blocks = num_seqs * ((context + headroom_tokens) / kBlockSize + 1);
  cfg.enable_prefix_caching = prefix_caching;
  auto sched = std::make_unique<Scheduler>(cfg);
  std::mt19937 rng(1);
  std::uniform_int_distribution<TokenId> tok(1, 32000);
  const std::vector<TokenId> eos{2};
  for (int i = 0; i < num_seqs; ++i) {
    Request r;
    r.id = "r" + std::to_string(i);
    r.prompt.resize(context);
    for (TokenId& t : r.prompt)
      t = tok(rng);
    r.stop.max_tokens = headroom_tokens;
    r.stop.ignore_eos = true;
    sched->add(std::make_unique<Sequence>(std::move(r), kBlockSize, eos));
  }
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

}  // namespace
}  // namespace kvserve

BENCHMARK_MAIN();
