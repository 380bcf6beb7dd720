// Scheduler: continuous batching over the paged KV cache.
//
// Each step it fills a token budget: running decodes first (one token each, oldest first), then
// running prefills (chunked), then new or preempted sequences from the FCFS waiting queue. When a
// running sequence needs a block and none is free, the most recently admitted running sequence is
// preempted: its blocks are released and it waits at the front of the queue to be recomputed (its
// full blocks usually survive in the prefix cache, so recompute is cheap). Requests that could never
// fit are rejected by add() with a reason.
//
// Under the priority policy, every "oldest" and "first" above is "best priority (lowest value),
// then oldest": the queue is ordered by (priority, arrival), running sequences are served in
// priority order, the victim is the worst-priority running sequence (the most recently admitted of
// those), and a waiting request of better priority than a running one takes that one's place (its
// seat, or the blocks its first chunk needs) at the start of a step. With every priority equal (as
// first-come-first-served requires), this is exactly the FCFS behaviour. So that no priority waits
// forever, a request that has waited in the queue longer than max_priority_wait (in all) is overdue:
// from the next step on it is scheduled ahead of every request that is not (overdue ones by
// arrival), is not preempted for a better priority, and is preempted for want of KV blocks only
// after every request that is not overdue.
//
// Blocks enter the prefix cache when the step that fills them is planned, so requests admitted in
// the same step share them; this relies on the Backend contract that every K/V write of a step lands
// before any attention read of that step.
//
// The scheduler is owned by the engine loop thread: no locks. Call order per step:
// schedule() -> (backend, sampler) -> complete_step(); add() and finish() only between steps.
#pragma once

#include <chrono>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "engine/block_pool.h"
#include "engine/ngram_drafter.h"
#include "engine/sequence.h"
#include "engine/status.h"
#include "engine/step_batch.h"

namespace kvserve {

enum class SchedulingPolicy { kFcfs, kPriority };

// Limits of SchedulerConfig::speculative: more draft tokens than this are nearly never all right,
// and a longer n-gram than this is nearly never found.
inline constexpr int kMaxDraftTokens = 16;
inline constexpr int kMaxNgram = 32;

struct SchedulerConfig {
  int block_size = 16;
  int num_blocks = 1024;
  int max_num_batched_tokens = 2048;  // token budget per step
  int max_num_seqs = 256;             // running sequences at most
  int max_model_len = 4096;           // prompt + generated tokens at most
  int max_waiting = 0;                // queue limit for add(); 0 = unlimited
  bool enable_prefix_caching = true;
  // kFcfs: every request's priority must be 0 (clients cannot jump the queue); kPriority: requests
  // say their own (Request::priority).
  SchedulingPolicy policy = SchedulingPolicy::kFcfs;
  // kPriority: how long a request waits in the queue (in all, over preemptions) before it becomes
  // overdue and goes ahead of every request that is not, whatever their priorities; 0 = never
  // (strict priority). Time running does not count.
  std::chrono::milliseconds max_priority_wait{0};
  // Speculative decoding (off while max_draft_tokens is 0): each decode may carry a draft of up to
  // max_draft_tokens tokens found by prompt lookup, with the token budget and free blocks that the
  // step's real tokens leave; a draft never preempts a sequence or holds one back.
  NgramDraftConfig speculative;
  // The clock max_priority_wait is measured by (tests set their own); steady_clock when empty.
  std::function<std::chrono::steady_clock::time_point()> clock;

  Status validate() const;
};

// What one step did to one sequence, copied out so it outlives the sequence.
struct SequenceEvent {
  RequestId id;
  size_t plan_index;    // position of the sequence in the step's plan
  size_t sample_index;  // the index in complete_step's `sampled` of the token
  TokenId token;        // a token generated this step (a sequence with a draft may have several)
  FinishReason finish;  // kNone while the sequence goes on
  int num_prompt_tokens;
  int num_output_tokens;
  int num_cached_prompt_tokens;
};

struct SchedulerStats {
  int num_running = 0;
  int num_waiting = 0;
  int num_free_blocks = 0;
  int num_cached_blocks = 0;       // hold a prefix-cache hash, referenced or free
  int num_free_cached_blocks = 0;  // free, but still holding a reusable prefix
  int num_total_blocks = 0;
  uint64_t num_preemptions = 0;
  // Slots of blocks held by running sequences that hold no token yet: the tails of their last,
  // partly filled blocks (shared prefix blocks are always full). Paging's whole waste.
  int64_t num_unfilled_slots = 0;
  // The last step left requests waiting because the pool was short of blocks (it could not admit
  // the queue's head, or it preempted): seats it left free will not take them soon. False when
  // only the step's token budget or the seats held the queue back.
  bool admission_short_of_blocks = false;
  // Speculative decoding so far: draft tokens fed to the model, and those that became output
  // tokens (each one a decode step saved).
  uint64_t num_draft_tokens = 0;
  uint64_t num_accepted_draft_tokens = 0;
};

class Scheduler {
 public:
  explicit Scheduler(const SchedulerConfig& config);

  const SchedulerConfig& config() const { return config_; }
  const BlockPool& pool() const { return pool_; }

  // Admits a request to the waiting queue, or says why it can never be (or cannot now be) served.
  Status add(std::unique_ptr<Sequence> seq);
  // The part of add()'s checks that depends only on the configuration: whether a request of this
  // shape could ever run. Safe to call from any thread.
  Status check_fits(int num_prompt_tokens, const StopCriteria& stop) const;
  // Whether the policy takes a request of this priority (FCFS: only 0). Safe from any thread.
  Status check_priority(int priority) const;
  // Ends a request now (abort, stop string): its blocks return to the pool in this call.
  Status finish(const RequestId& id, FinishReason reason);

  StepPlan schedule();
  // `sampled` holds a run of tokens per plan.seqs[i], in plan order: the token drawn at its last
  // input (ignored where !emits_token); for a sequence with a draft of m tokens, the m + 1 tokens
  // drawn at its last m + 1 inputs (after its own tokens, then after each draft token). The first
  // drawn token is appended, then each next one while the draft token it was drawn after equals the
  // token appended before it. Stop rules apply to each appended token in turn (nothing is appended
  // after one that finishes the sequence), finished sequences are freed, and drafts are cleared.
  std::vector<SequenceEvent> complete_step(const StepPlan& plan, std::span<const TokenId> sampled);

  bool has_unfinished() const { return !running_.empty() || !waiting_.empty(); }
  const Sequence* find(const RequestId& id) const;
  SchedulerStats stats() const;
  // Test hook: visits every live sequence.
  template <typename F>
  void for_each_sequence(F&& f) const {
    for (const auto& [id, seq] : seqs_)
      f(*seq);
  }
  // Test hook: the waiting queue, in order.
  const std::deque<Sequence*>& waiting_queue() const { return waiting_; }

 private:
  // Tries to give seq room for `want` more tokens: returns how many it can schedule now (<= want),
  // allocating blocks for them. Running sequences may take fewer than wanted (a shorter chunk).
  int reserve(Sequence& seq, int want, bool allow_partial);
  void preempt(Sequence& victim, StepPlan& plan, int& budget);
  // What admitting `seq` with `budget` tokens takes: its prefix-cache hits, the tokens it computes,
  // the new blocks, and the free blocks it needs in all (new ones, and hits that sit free).
  struct Admission {
    std::vector<BlockId> hits;
    int want = 0;
    int fresh = 0;
    int free_blocks_needed = 0;
  };
  Admission plan_admission(Sequence& seq, int budget) const;
  int admit_with_prefix_cache(Sequence& seq, int budget);
  // Adds n tokens of seq to the plan.
  static void plan_chunk(StepPlan& plan, Sequence& seq, int n, int& budget);
  // Queues a waiting sequence at its place in (priority, arrival) order.
  void enqueue(Sequence* seq);
  // Whether waits are bounded (kPriority with a max_priority_wait): only then is the clock read.
  bool waits_bounded() const;
  std::chrono::steady_clock::time_point now() const;
  // Before a step: marks the waiting sequences that have become overdue, and requeues them.
  void mark_overdue();
  // The running sequence to preempt first: the worst priority, of those the most recently admitted.
  Sequence* preemption_victim() const;
  // Before a step: preempts running sequences of worse priority than the head of the queue while it
  // lacks a seat or the blocks for its first chunk (unless even all of them would not free enough).
  // Returns them, so that this step does not admit them again. `head_can_fit`: whether the head
  // fits once they are gone (false: no point holding worse running sequences back for it).
  std::vector<Sequence*> make_room_for_better_priority(StepPlan& plan, int& budget, bool& head_can_fit);
  // Gives the step's decodes their drafts (SchedulerConfig::speculative), with what is left of the
  // budget and the free blocks.
  void add_drafts(StepPlan& plan, int& budget);
  // Enters the blocks that will be full once this step runs into the prefix cache.
  void register_full_blocks(Sequence& seq, int num_tokens_after_step);
  void release_blocks(Sequence& seq);
  void remove_running(Sequence* seq);

  SchedulerConfig config_;
  BlockPool pool_;
  std::unordered_map<RequestId, std::unique_ptr<Sequence>> seqs_;
  std::deque<Sequence*> waiting_;
  std::vector<Sequence*> running_;  // in admission order (preemption_victim picks from the back)
  uint64_t num_preemptions_ = 0;
  uint64_t num_added_ = 0;                  // arrivals so far
  bool admission_short_of_blocks_ = false;  // SchedulerStats::admission_short_of_blocks
  uint64_t num_draft_tokens_ = 0;
  uint64_t num_accepted_draft_tokens_ = 0;
  std::vector<TokenId> draft_scratch_;
};

}  // namespace kvserve
