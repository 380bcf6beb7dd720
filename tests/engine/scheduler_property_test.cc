// Seeded random simulation of the scheduler, block pool and batch builder over thousands of steps,
// with random arrivals, shared prefixes, output lengths, stop tokens, aborts, priorities (half the
// seeds, some with a bound on the wait), speculative decoding (a third of the seeds: drafts found by
// prompt lookup in this small vocabulary are often wrong, so most are cut short and their K/V
// overwritten later) and a deliberately small pool. The checksum backend reads every
// sequence's context back through the paged cache, and each finished output is compared with the model's
// cache-free reference, so a bookkeeping error shows up either as a broken invariant or as a wrong token.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <random>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "engine/checksum_backend.h"
#include "engine/scheduler.h"
#include "tests/engine/test_util.h"

namespace kvserve {
namespace {

constexpr int kVocab = 64;  // small, so that EOS and stop tokens come up often
constexpr TokenId kEos = 0;

struct Tracked {
  Request request;
  std::vector<TokenId> output;
  FinishReason finish = FinishReason::kNone;
  bool rejected = false;
};

struct Reference {
  std::vector<TokenId> output;
  FinishReason finish = FinishReason::kLength;
};

Reference reference_output(const Request& r) {
  Reference ref;
  std::vector<TokenId> context = r.prompt;
  std::vector<TokenId>& out = ref.output;
  while (static_cast<int>(out.size()) < r.stop.max_tokens) {
    const TokenId t = ChecksumBackend::reference_next_token(context, kVocab);
    out.push_back(t);
    context.push_back(t);
    const bool stop_token = (!r.stop.ignore_eos && t == kEos) ||
                            std::find(r.stop.stop_token_ids.begin(), r.stop.stop_token_ids.end(), t) !=
                                r.stop.stop_token_ids.end();
    if (stop_token && static_cast<int>(out.size()) >= r.stop.min_tokens) {
      ref.finish = FinishReason::kStop;
      break;
    }
  }
  return ref;
}

void check_pool_invariants(const Scheduler& s) {
  const BlockPool& pool = s.pool();
  std::vector<int> holders(pool.num_blocks(), 0);
  s.for_each_sequence([&](const Sequence& seq) {
    const BlockTable& t = seq.block_table();
    if (seq.status() == SequenceStatus::kWaiting) {
      EXPECT_EQ(t.num_blocks(), 0) << seq.id();
    }
    EXPECT_GE(t.capacity(), seq.num_computed_tokens()) << seq.id();
    // Between steps a sequence holds no block beyond the one its next input goes to: blocks that
    // only wrong draft tokens reached went back to the pool.
    EXPECT_LE(t.num_blocks(), (seq.num_computed_tokens() + t.block_size()) / t.block_size()) << seq.id();
    for (BlockId b : t.blocks())
      ++holders[b];
  });
  int free = 0, free_cached = 0;
  for (BlockId b = 0; b < pool.num_blocks(); ++b) {
    ASSERT_EQ(pool.ref_count(b), holders[b]) << "block " << b;
    ASSERT_EQ(pool.is_free(b), holders[b] == 0) << "block " << b;
    free += holders[b] == 0;
    free_cached += holders[b] == 0 && pool.block_hash(b).has_value();
  }
  ASSERT_EQ(pool.num_free_blocks(), free);
  ASSERT_EQ(pool.num_free_cached_blocks(), free_cached);
}

void check_plan(const Scheduler& s, const StepPlan& plan) {
  const SchedulerConfig& cfg = s.config();
  int tokens = 0, drafted = 0;
  std::vector<const Sequence*> seen;
  for (const ScheduledSequence& e : plan.seqs) {
    ASSERT_EQ(std::count(seen.begin(), seen.end(), e.seq), 0) << "scheduled twice: " << e.seq->id();
    seen.push_back(e.seq);
    ASSERT_EQ(e.start_pos, e.seq->num_computed_tokens());
    ASSERT_GE(e.num_new_tokens, 1);
    ASSERT_LE(e.end_of_tokens(), e.seq->num_tokens());
    ASSERT_EQ(e.emits_token, e.end_of_tokens() == e.seq->num_tokens());
    ASSERT_GE(e.seq->block_table().capacity(), e.start_pos + e.num_new_tokens);
    ASSERT_EQ(static_cast<int>(e.seq->draft().size()), e.num_draft_tokens);
    if (e.num_draft_tokens > 0) {
      // Only decodes carry drafts, within the config and what max_tokens leaves.
      ASSERT_TRUE(e.emits_token);
      ASSERT_EQ(e.num_new_tokens, 1 + e.num_draft_tokens);
      ASSERT_LE(e.num_draft_tokens, cfg.speculative.max_draft_tokens);
      ASSERT_LE(e.seq->num_output_tokens() + 1 + e.num_draft_tokens, e.seq->stop().max_tokens);
    }
    tokens += e.num_new_tokens;
    drafted += e.num_draft_tokens;
  }
  ASSERT_EQ(tokens, plan.num_batched_tokens);
  ASSERT_EQ(drafted, plan.num_draft_tokens);
  ASSERT_LE(plan.num_batched_tokens, cfg.max_num_batched_tokens);
  ASSERT_LE(static_cast<int>(plan.seqs.size()), cfg.max_num_seqs);
  ASSERT_LE(s.stats().num_running, cfg.max_num_seqs);
  // The queue stays in (scheduling priority, arrival) order, overdue requests first.
  const auto& queue = s.waiting_queue();
  for (size_t i = 1; i < queue.size(); ++i) {
    const Sequence& a = *queue[i - 1];
    const Sequence& b = *queue[i];
    ASSERT_TRUE(a.scheduling_priority() < b.scheduling_priority() ||
                (a.scheduling_priority() == b.scheduling_priority() && a.arrival() < b.arrival()))
        << "waiting queue out of order at " << i << ": " << a.id() << " before " << b.id();
  }
}

struct SimTotals {
  uint64_t preemptions = 0;
  long long cached_prompt_tokens = 0;
  int finished = 0, aborted = 0, rejected = 0;
  int overdue = 0;  // requests that became overdue (max_priority_wait) before they finished
  uint64_t draft_tokens = 0, accepted_draft_tokens = 0;
};

// The greedy token at every logits row a step computes, as complete_step takes them: per sequence,
// the rows that check its draft (after the sequences' rows, in batch order), then its own row.
std::vector<TokenId> greedy_runs(const StepPlan& plan, std::span<const float> logits) {
  const auto argmax = [&](size_t row) {
    const float* r = logits.data() + row * kVocab;
    return static_cast<TokenId>(std::max_element(r, r + kVocab) - r);
  };
  std::vector<TokenId> runs;
  size_t draft_row = plan.seqs.size();
  for (size_t i = 0; i < plan.seqs.size(); ++i) {
    for (int j = 0; j < plan.seqs[i].num_draft_tokens; ++j)
      runs.push_back(argmax(draft_row++));
    runs.push_back(argmax(i));
  }
  return runs;
}

void simulate(uint64_t seed, SimTotals& totals) {
  std::mt19937_64 rng(seed);
  auto uniform = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  auto chance = [&](double p) { return std::bernoulli_distribution(p)(rng); };

  SchedulerConfig cfg;
  cfg.block_size = std::vector<int>{4, 8, 16}[uniform(0, 2)];
  cfg.max_model_len = 256;
  cfg.num_blocks = uniform(cfg.max_model_len / cfg.block_size, 3 * cfg.max_model_len / cfg.block_size);
  cfg.max_num_batched_tokens = std::vector<int>{16, 64, 256}[uniform(0, 2)];
  cfg.max_num_seqs = std::vector<int>{4, 16, 64}[uniform(0, 2)];
  cfg.enable_prefix_caching = !chance(0.25);
  // Odd seeds schedule by priority: requests of better priority overtake and preempt others, and
  // every request must still finish with the reference's output.
  if (seed % 2 == 1) cfg.policy = SchedulingPolicy::kPriority;
  // Each step takes 1 ms of the scheduler's clock; some priority runs bound the wait, so that
  // requests become overdue (and overtake, and keep their seats) while others come and go.
  std::chrono::steady_clock::time_point clock{};
  cfg.clock = [&clock] { return clock; };
  cfg.max_priority_wait = std::chrono::milliseconds(std::vector<int>{0, 5, 50}[uniform(0, 2)]);
  if (seed % 3 == 0) {
    cfg.speculative.max_draft_tokens = uniform(1, 6);
    cfg.speculative.min_ngram = uniform(1, 2);
    cfg.speculative.max_ngram = uniform(cfg.speculative.min_ngram, 4);
  }
  Scheduler sched(cfg);
  BatchBuilder builder;
  ChecksumBackend backend(cfg.num_blocks, cfg.block_size, kVocab);

  std::vector<std::vector<TokenId>> prefixes(4);
  for (auto& p : prefixes) {
    p.resize(uniform(0, 96));
    for (TokenId& t : p)
      t = uniform(1, kVocab - 1);
  }

  std::map<RequestId, Tracked> requests;
  std::set<RequestId> overdue;
  std::vector<RequestId> live;
  const int arrival_steps = 1500, max_steps = 40000;
  int step = 0, next_id = 0;
  for (; step < max_steps; ++step) {
    if (step >= arrival_steps && !sched.has_unfinished()) break;
    if (step < arrival_steps && chance(0.3)) {
      for (int n = uniform(1, 3); n > 0; --n) {
        Tracked t;
        Request& r = t.request;
        r.id = "s" + std::to_string(seed) + "-" + std::to_string(next_id++);
        r.prompt = prefixes[uniform(0, 3)];
        for (int k = uniform(1, 80); k > 0; --k)
          r.prompt.push_back(uniform(1, kVocab - 1));
        r.stop.max_tokens = chance(0.05) ? cfg.max_model_len : uniform(1, 64);  // some can never fit
        r.stop.min_tokens = chance(0.2) ? uniform(0, r.stop.max_tokens) : 0;
        r.stop.ignore_eos = chance(0.3);
        if (chance(0.3)) r.stop.stop_token_ids = {static_cast<TokenId>(uniform(1, kVocab - 1))};
        if (cfg.policy == SchedulingPolicy::kPriority) r.priority = uniform(-2, 2);
        const std::vector<TokenId> eos{kEos};
        const Status st = sched.add(std::make_unique<Sequence>(r, cfg.block_size, eos));
        const bool fits = static_cast<int>(r.prompt.size()) + r.stop.max_tokens <= cfg.max_model_len;
        ASSERT_EQ(st.ok(), fits) << r.id << ": " << st.message();
        t.rejected = !st.ok();
        if (!st.ok()) {
          ASSERT_FALSE(st.message().empty());
          ++totals.rejected;
        } else {
          live.push_back(r.id);
        }
        requests.emplace(r.id, std::move(t));
      }
    }
    if (!live.empty() && chance(0.03)) {
      const size_t k = uniform(0, static_cast<int>(live.size()) - 1);
      ASSERT_TRUE(sched.finish(live[k], FinishReason::kAborted).ok());
      requests[live[k]].finish = FinishReason::kAborted;
      live.erase(live.begin() + static_cast<ptrdiff_t>(k));
      ++totals.aborted;
    }

    clock += std::chrono::milliseconds(1);
    const StepPlan plan = sched.schedule();
    ASSERT_NO_FATAL_FAILURE(check_plan(sched, plan));
    sched.for_each_sequence([&](const Sequence& seq) {
      if (seq.overdue()) overdue.insert(seq.id());
    });
    ASSERT_EQ(plan.empty(), !sched.has_unfinished()) << "work pending but nothing scheduled at step " << step;
    if (plan.empty()) {
      ASSERT_NO_FATAL_FAILURE(check_pool_invariants(sched));
      continue;
    }
    const StepBatch& batch = builder.build(plan, cfg.block_size);
    ASSERT_NO_THROW(validate_step_batch(batch, cfg.num_blocks, cfg.block_size, kVocab)) << "step " << step;
    const auto logits = backend.forward(batch);
    ASSERT_EQ(logits.size(), (plan.seqs.size() + static_cast<size_t>(plan.num_draft_tokens)) * kVocab);
    for (const SequenceEvent& e : sched.complete_step(plan, greedy_runs(plan, logits))) {
      Tracked& t = requests.at(e.id);
      t.output.push_back(e.token);
      ASSERT_EQ(static_cast<int>(t.output.size()), e.num_output_tokens);
      if (e.finish != FinishReason::kNone) {
        t.finish = e.finish;
        live.erase(std::find(live.begin(), live.end(), e.id));
        totals.cached_prompt_tokens += e.num_cached_prompt_tokens;
        ++totals.finished;
      }
    }
    ASSERT_NO_FATAL_FAILURE(check_pool_invariants(sched));
  }
  ASSERT_LT(step, max_steps) << "requests still unfinished after " << max_steps << " steps";

  EXPECT_EQ(sched.pool().num_free_blocks(), cfg.num_blocks) << "blocks leaked";
  EXPECT_TRUE(live.empty());
  totals.preemptions += sched.stats().num_preemptions;
  totals.draft_tokens += sched.stats().num_draft_tokens;
  totals.accepted_draft_tokens += sched.stats().num_accepted_draft_tokens;
  totals.overdue += static_cast<int>(overdue.size());
  for (const auto& [id, t] : requests) {
    if (t.rejected) continue;
    const Reference ref = reference_output(t.request);
    if (t.finish == FinishReason::kAborted) {
      ASSERT_LE(t.output.size(), ref.output.size()) << id;
      ASSERT_TRUE(std::equal(t.output.begin(), t.output.end(), ref.output.begin()))
          << id << " diverged before abort";
    } else {
      ASSERT_EQ(t.output, ref.output) << id;
      ASSERT_EQ(t.finish, ref.finish) << id;
    }
  }
}

TEST(SchedulerProperty, RandomWorkloadsKeepEveryInvariantAndEveryOutputCorrect) {
  SimTotals totals;
  for (uint64_t seed = 1; seed <= 48; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed) + " (rerun with this seed to reproduce)");
    simulate(seed, totals);
    if (::testing::Test::HasFatalFailure()) return;
  }
  // The workload must actually exercise what it claims to.
  EXPECT_GT(totals.preemptions, 0u);
  EXPECT_GT(totals.cached_prompt_tokens, 0);
  EXPECT_GT(totals.aborted, 0);
  EXPECT_GT(totals.rejected, 0);
  EXPECT_GT(totals.finished, 1000);
  EXPECT_GT(totals.overdue, 0);
  // Drafts both right and wrong, so that both the kept K/V and the overwritten K/V are exercised.
  EXPECT_GT(totals.accepted_draft_tokens, 100u);
  EXPECT_GT(totals.draft_tokens, 2 * totals.accepted_draft_tokens);
  std::printf(
      "property: finished=%d aborted=%d rejected=%d preemptions=%llu cached_prompt_tokens=%lld overdue=%d "
      "draft_tokens=%llu accepted=%llu\n",
      totals.finished, totals.aborted, totals.rejected, static_cast<unsigned long long>(totals.preemptions),
      totals.cached_prompt_tokens, totals.overdue, static_cast<unsigned long long>(totals.draft_tokens),
      static_cast<unsigned long long>(totals.accepted_draft_tokens));
}

}  // namespace
}  // namespace kvserve
