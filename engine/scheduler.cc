#include "engine/scheduler.h"

#include <algorithm>
#include <stdexcept>
#include <string>
#include <utility>

namespace kvserve {
namespace {

SchedulerConfig validated(const SchedulerConfig& config) {
  if (Status s = config.validate(); !s.ok()) throw std::invalid_argument(s.message());
  return config;
}

std::string str(long long v) {
  return std::to_string(v);
}

}  // namespace

Status SchedulerConfig::validate() const {
  if (block_size <= 0) return Status::InvalidArgument("block_size must be positive, got " + str(block_size));
  if (num_blocks <= 0) return Status::InvalidArgument("num_blocks must be positive, got " + str(num_blocks));
  if (max_num_batched_tokens <= 0)
    return Status::InvalidArgument("max_num_batched_tokens must be positive, got " +
                                   str(max_num_batched_tokens));
  if (max_num_seqs <= 0)
    return Status::InvalidArgument("max_num_seqs must be positive, got " + str(max_num_seqs));
  if (max_model_len <= 1)
    return Status::InvalidArgument("max_model_len must be at least 2, got " + str(max_model_len));
  if (max_waiting < 0)
    return Status::InvalidArgument("max_waiting must be >= 0 (0 = unlimited), got " + str(max_waiting));
  if (speculative.max_draft_tokens < 0 || speculative.max_draft_tokens > kMaxDraftTokens)
    return Status::InvalidArgument("num_speculative_tokens must be between 0 (off) and " +
                                   str(kMaxDraftTokens) + ", got " + str(speculative.max_draft_tokens));
  if (speculative.max_draft_tokens > 0 &&
      (speculative.min_ngram < 1 || speculative.min_ngram > speculative.max_ngram ||
       speculative.max_ngram > kMaxNgram))
    return Status::InvalidArgument(
        "prompt_lookup_min and prompt_lookup_max must satisfy 1 <= min <= max <= " + str(kMaxNgram) +
        ", got " + str(speculative.min_ngram) + " and " + str(speculative.max_ngram));
  if (max_priority_wait.count() < 0)
    return Status::InvalidArgument("max_priority_wait must be >= 0 (0 = no bound), got " +
                                   str(max_priority_wait.count()) + " ms");
  return Status::Ok();
}

Scheduler::Scheduler(const SchedulerConfig& config)
    : config_(validated(config)), pool_(config.num_blocks, config.block_size, config.enable_prefix_caching) {}

Status Scheduler::check_fits(int prompt, const StopCriteria& stop) const {
  if (prompt == 0) return Status::InvalidArgument("the prompt is empty: send at least one token");
  if (stop.max_tokens < 1)
    return Status::InvalidArgument("max_tokens must be at least 1, got " + str(stop.max_tokens));
  if (stop.min_tokens < 0 || stop.min_tokens > stop.max_tokens)
    return Status::InvalidArgument("min_tokens must be between 0 and max_tokens (" + str(stop.max_tokens) +
                                   "), got " + str(stop.min_tokens));
  const long long total = static_cast<long long>(prompt) + stop.max_tokens;
  if (total > config_.max_model_len)
    return Status::InvalidArgument("prompt (" + str(prompt) + " tokens) + max_tokens (" +
                                   str(stop.max_tokens) + ") = " + str(total) +
                                   " exceeds the maximum model length of " + str(config_.max_model_len) +
                                   " tokens; shorten the prompt or lower max_tokens");
  // The last generated token is never fed back, so the cache holds at most total - 1 tokens.
  const long long blocks = (total - 1 + config_.block_size - 1) / config_.block_size;
  if (blocks > config_.num_blocks)
    return Status::InvalidArgument("prompt + max_tokens needs " + str(blocks) + " KV blocks of " +
                                   str(config_.block_size) + " tokens but the pool holds only " +
                                   str(config_.num_blocks) + "; shorten the prompt or lower max_tokens");
  return Status::Ok();
}

Status Scheduler::check_priority(int priority) const {
  if (config_.policy == SchedulingPolicy::kFcfs && priority != 0)
    return Status::InvalidArgument(
        "priority: this server schedules first come, first served; send priority 0 "
        "(or start the server with --scheduling-policy priority)");
  return Status::Ok();
}

Status Scheduler::add(std::unique_ptr<Sequence> seq) {
  if (!seq) return Status::Internal("Scheduler::add: null sequence");
  if (Status s = check_fits(seq->num_prompt_tokens(), seq->stop()); !s.ok()) return s;
  if (Status s = check_priority(seq->priority()); !s.ok()) return s;
  if (seqs_.contains(seq->id()))
    return Status::InvalidArgument("request id '" + seq->id() + "' is already in use; send a unique id");
  if (config_.max_waiting > 0 && static_cast<int>(waiting_.size()) >= config_.max_waiting)
    return Status::ResourceExhausted("the waiting queue is full (" + str(config_.max_waiting) +
                                     " requests); retry later");
  seq->set_status(SequenceStatus::kWaiting);
  seq->set_arrival(num_added_++);
  if (waits_bounded()) seq->start_waiting(now());
  enqueue(seq.get());
  const RequestId id = seq->id();
  seqs_.emplace(id, std::move(seq));
  return Status::Ok();
}

Status Scheduler::finish(const RequestId& id, FinishReason reason) {
  auto it = seqs_.find(id);
  if (it == seqs_.end()) return Status::NotFound("no running or waiting request with id '" + id + "'");
  Sequence* seq = it->second.get();
  if (seq->status() == SequenceStatus::kWaiting) {
    waiting_.erase(std::find(waiting_.begin(), waiting_.end(), seq));
  } else {
    release_blocks(*seq);
    remove_running(seq);
  }
  seq->finish(reason);
  seqs_.erase(it);
  return Status::Ok();
}

void Scheduler::release_blocks(Sequence& seq) {
  pool_.release_all(seq.block_table().blocks());
  seq.block_table().clear();
  seq.set_num_computed_tokens(0);
  seq.set_num_registered_blocks(0);
}

void Scheduler::remove_running(Sequence* seq) {
  running_.erase(std::find(running_.begin(), running_.end(), seq));
}

int Scheduler::reserve(Sequence& seq, int want, bool allow_partial) {
  BlockTable& table = seq.block_table();
  const int room =
      table.capacity() - seq.num_computed_tokens() + pool_.num_free_blocks() * table.block_size();
  const int n = allow_partial ? std::min(want, room) : (want <= room ? want : 0);
  if (n <= 0) return 0;
  pool_.allocate(table.blocks_needed(seq.num_computed_tokens() + n), table.mutable_blocks());
  return n;
}

void Scheduler::preempt(Sequence& victim, StepPlan& plan, int& budget) {
  auto planned = std::find_if(plan.seqs.begin(), plan.seqs.end(),
                              [&](const ScheduledSequence& s) { return s.seq == &victim; });
  if (planned != plan.seqs.end()) {
    budget += planned->num_new_tokens;
    plan.num_batched_tokens -= planned->num_new_tokens;
    plan.seqs.erase(planned);
  }
  release_blocks(victim);
  remove_running(&victim);
  victim.set_status(SequenceStatus::kWaiting);
  if (waits_bounded()) victim.start_waiting(now());
  victim.count_preemption();
  enqueue(&victim);
  plan.preempted.push_back(victim.id());
  ++num_preemptions_;
}

Scheduler::Admission Scheduler::plan_admission(Sequence& seq, int budget) const {
  const int block_size = config_.block_size;
  Admission a;
  if (pool_.prefix_caching_enabled()) {
    // At least one token must be computed to get logits, so the last token is never a hit; nor is
    // a prompt position still to be scored for prompt logprobs.
    int max_hit_blocks = (seq.num_tokens() - 1) / block_size;
    if (seq.scoring_prompt())
      max_hit_blocks = std::min(max_hit_blocks, seq.next_position_to_score() / block_size);
    const auto tokens = seq.tokens();
    const auto hashes = seq.block_hashes();
    for (int i = 0; i < max_hit_blocks; ++i) {
      const auto id = pool_.lookup(hashes[i], seq.parent_hash(i), tokens.subspan(i * block_size, block_size),
                                   seq.lora_adapter());
      if (!id) break;
      a.hits.push_back(*id);
    }
  }
  const int cached = static_cast<int>(a.hits.size()) * block_size;
  a.want = std::min(seq.num_tokens() - cached, budget);
  a.fresh = (cached + a.want + block_size - 1) / block_size - static_cast<int>(a.hits.size());
  // A hit that sits free in the pool leaves the free list when taken.
  a.free_blocks_needed =
      a.fresh + static_cast<int>(std::count_if(a.hits.begin(), a.hits.end(),
                                               [&](BlockId id) { return pool_.is_free(id); }));
  return a;
}

int Scheduler::admit_with_prefix_cache(Sequence& seq, int budget) {
  const Admission a = plan_admission(seq, budget);
  if (a.free_blocks_needed > pool_.num_free_blocks()) return 0;
  BlockTable& table = seq.block_table();
  for (BlockId id : a.hits) {
    pool_.acquire(id);
    table.append(id);
  }
  pool_.allocate(a.fresh, table.mutable_blocks());
  const int cached = static_cast<int>(a.hits.size()) * config_.block_size;
  seq.set_num_computed_tokens(cached);
  seq.set_num_registered_blocks(static_cast<int>(a.hits.size()));
  if (!seq.ever_scheduled()) {
    seq.set_num_cached_prompt_tokens(cached);
    seq.mark_scheduled();
  }
  return a.want;
}

void Scheduler::register_full_blocks(Sequence& seq, int num_tokens_after_step) {
  const int full = num_tokens_after_step / config_.block_size;
  if (!pool_.prefix_caching_enabled() || full <= seq.num_registered_blocks()) return;
  const int block_size = config_.block_size;
  const auto tokens = seq.tokens();
  const auto hashes = seq.block_hashes();
  for (int b = seq.num_registered_blocks(); b < full; ++b)
    pool_.register_full_block(seq.block_table()[b], hashes[b], seq.parent_hash(b),
                              tokens.subspan(static_cast<size_t>(b) * block_size, block_size),
                              seq.lora_adapter());
  seq.set_num_registered_blocks(full);
}

StepPlan Scheduler::schedule() {
  StepPlan plan;
  int budget = config_.max_num_batched_tokens;
  mark_overdue();
  bool head_can_fit = true;
  const std::vector<Sequence*> evicted = make_room_for_better_priority(plan, budget, head_can_fit);

  // Running sequences: decodes first so that a long prefill never stalls them, then prefill chunks;
  // each group in priority order, oldest first. Those of worse priority than the head of the queue
  // (none under FCFS) wait until it is admitted, and take what is left; unless the head cannot fit
  // this step whatever they do: held back without a way to preempt, they could stall for good.
  const Sequence* head = waiting_.empty() || !head_can_fit ? nullptr : waiting_.front();
  const auto worse_than_head = [&](const Sequence* s) {
    return head && s->scheduling_priority() > head->scheduling_priority();
  };
  std::vector<Sequence*> order, deferred;
  order.reserve(running_.size());
  for (const bool decodes : {true, false}) {
    for (Sequence* s : running_)
      if ((s->num_uncomputed_tokens() == 1) == decodes) (worse_than_head(s) ? deferred : order).push_back(s);
  }
  // Stable: decodes stay before prefills, and each group keeps its admission order within a priority.
  const auto by_priority = [](const Sequence* a, const Sequence* b) {
    return a->scheduling_priority() < b->scheduling_priority();
  };
  const auto sort_groups = [&](std::vector<Sequence*>& v) {
    const auto prefills =
        std::find_if(v.begin(), v.end(), [](const Sequence* s) { return s->num_uncomputed_tokens() > 1; });
    std::stable_sort(v.begin(), prefills, by_priority);
    std::stable_sort(prefills, v.end(), by_priority);
  };
  sort_groups(order);
  sort_groups(deferred);

  bool preempted_any = false;
  for (Sequence* seq : order) {
    if (budget == 0) break;
    if (seq->status() != SequenceStatus::kRunning) continue;  // preempted earlier in this loop
    const int want = std::min(seq->num_uncomputed_tokens(), budget);
    int n = reserve(*seq, want, /*allow_partial=*/true);
    while (n == 0) {
      Sequence* victim = preemption_victim();
      preempt(*victim, plan, budget);
      preempted_any = true;
      if (victim == seq) break;
      n = reserve(*seq, want, /*allow_partial=*/true);
    }
    if (n == 0) continue;
    plan_chunk(plan, *seq, n, budget);
  }

  // No preemption can happen past this point, so the blocks this step fills are final: register them
  // now, and requests admitted below (in this very step) already share them. Not the blocks that
  // only drafts fill: a draft token may be wrong.
  for (const ScheduledSequence& e : plan.seqs)
    register_full_blocks(*e.seq, e.end_of_tokens());

  // New and preempted sequences, in queue order. None while this step had to preempt: the pool is
  // short and admitting would only preempt again; nor one this step preempted to make room.
  // Why admission stops tells the server whether free seats will take the queue soon.
  admission_short_of_blocks_ = preempted_any || !evicted.empty();
  while (!preempted_any && !waiting_.empty() && budget > 0 &&
         static_cast<int>(running_.size()) < config_.max_num_seqs) {
    Sequence* seq = waiting_.front();
    if (std::find(evicted.begin(), evicted.end(), seq) != evicted.end()) break;
    const int n = admit_with_prefix_cache(*seq, budget);
    if (n == 0) {
      admission_short_of_blocks_ = true;
      break;
    }
    waiting_.pop_front();
    if (waits_bounded()) seq->stop_waiting(now());
    seq->set_status(SequenceStatus::kRunning);
    running_.push_back(seq);
    plan_chunk(plan, *seq, n, budget);
    register_full_blocks(*seq, seq->num_computed_tokens() + n);
  }

  // The running sequences of worse priority than the queue's head, with what is left. No
  // preemption here (blocks registered above must be written this step): one that lacks a block
  // waits a step.
  bool planned_deferred = false;
  for (Sequence* seq : deferred) {
    if (budget == 0) break;
    if (seq->status() != SequenceStatus::kRunning) continue;
    const int n = reserve(*seq, std::min(seq->num_uncomputed_tokens(), budget), /*allow_partial=*/true);
    if (n == 0) continue;
    plan_chunk(plan, *seq, n, budget);
    register_full_blocks(*seq, seq->num_computed_tokens() + n);
    planned_deferred = true;
  }

  // Drafts last, with what every real token (running, admitted, deferred) left of the budget and
  // the blocks: speculation never delays a request.
  if (config_.speculative.max_draft_tokens > 0) add_drafts(plan, budget);

  // Single-token decodes first: deferred ones, and those behind a decode with a draft, come after
  // the chunks above.
  if (planned_deferred || plan.num_draft_tokens > 0)
    std::stable_partition(plan.seqs.begin(), plan.seqs.end(),
                          [](const ScheduledSequence& e) { return e.num_new_tokens == 1; });
  while (plan.num_decodes < static_cast<int>(plan.seqs.size()) &&
         plan.seqs[plan.num_decodes].num_new_tokens == 1)
    ++plan.num_decodes;
  return plan;
}

void Scheduler::add_drafts(StepPlan& plan, int& budget) {
  for (ScheduledSequence& e : plan.seqs) {
    if (budget == 0) return;
    Sequence& seq = *e.seq;
    if (!e.emits_token || e.num_new_tokens != 1 || seq.status() != SequenceStatus::kRunning) continue;
    // Every draft token may become an output token: none may take the output past max_tokens (nor,
    // so, the sequence past max_model_len, which add() checked prompt + max_tokens against).
    const int output_left = seq.stop().max_tokens - seq.num_output_tokens() - 1;
    const int max_draft = std::min({config_.speculative.max_draft_tokens, budget, output_left});
    if (max_draft <= 0) continue;
    propose_ngram_draft(seq.tokens(), config_.speculative, max_draft, draft_scratch_);
    int drafted = seq.set_draft(draft_scratch_, max_draft);
    if (drafted == 0) continue;
    // The real token's slot is reserved already. Beyond the table's own room, a draft takes only
    // free blocks that hold no cached prefix (those come first off the free queue): a guess does
    // not evict what a later prompt could reuse.
    const int room = seq.block_table().capacity() - seq.num_computed_tokens() - 1 +
                     (pool_.num_free_blocks() - pool_.num_free_cached_blocks()) * config_.block_size;
    if (room < drafted) drafted = seq.set_draft(draft_scratch_, room);
    if (drafted == 0) continue;
    pool_.allocate(seq.block_table().blocks_needed(seq.num_computed_tokens() + 1 + drafted),
                   seq.block_table().mutable_blocks());
    e.num_new_tokens += drafted;
    e.num_draft_tokens = drafted;
    plan.num_batched_tokens += drafted;
    plan.num_draft_tokens += drafted;
    budget -= drafted;
  }
}

void Scheduler::plan_chunk(StepPlan& plan, Sequence& seq, int n, int& budget) {
  plan.seqs.push_back(
      {&seq, seq.num_computed_tokens(), n, seq.num_computed_tokens() + n == seq.num_tokens()});
  plan.num_batched_tokens += n;
  budget -= n;
}

std::vector<SequenceEvent> Scheduler::complete_step(const StepPlan& plan, std::span<const TokenId> sampled) {
  const size_t expected = plan.seqs.size() + static_cast<size_t>(plan.num_draft_tokens);
  if (sampled.size() != expected)
    throw std::invalid_argument("complete_step: " + str(sampled.size()) + " sampled tokens for " +
                                str(plan.seqs.size()) + " scheduled sequences and " +
                                str(plan.num_draft_tokens) + " draft tokens");
  std::vector<SequenceEvent> events;
  std::vector<std::pair<RequestId, FinishReason>> finished;
  size_t first = 0;  // of plan.seqs[i]'s run in `sampled`
  for (size_t i = 0; i < plan.seqs.size(); ++i) {
    const ScheduledSequence& s = plan.seqs[i];
    const std::span<const TokenId> drawn =
        sampled.subspan(first, 1 + static_cast<size_t>(s.num_draft_tokens));
    first += drawn.size();
    Sequence& seq = *s.seq;
    if (seq.status() != SequenceStatus::kRunning) continue;
    if (!s.emits_token) {
      seq.set_num_computed_tokens(s.start_pos + s.num_new_tokens);
      continue;
    }
    // Drawn token j was drawn after draft token j, so it counts only if draft token j is the token
    // drawn before it: the run of matches decides how many tokens this step produced.
    const std::span<const TokenId> draft = seq.draft();
    size_t produced = 1;
    while (produced < drawn.size() && draft[produced - 1] == drawn[produced - 1])
      ++produced;
    num_draft_tokens_ += draft.size();
    num_accepted_draft_tokens_ += produced - 1;
    // The cache holds valid K/V for the inputs up to the last matching draft token; the last
    // produced token is the next step's input.
    seq.set_num_computed_tokens(s.end_of_tokens() + static_cast<int>(produced) - 1);
    seq.clear_draft();
    for (size_t j = 0; j < produced; ++j) {
      const FinishReason reason = seq.append_token(drawn[j]);
      events.push_back({seq.id(), i, first - drawn.size() + j, drawn[j], reason, seq.num_prompt_tokens(),
                        seq.num_output_tokens(), seq.num_cached_prompt_tokens()});
      if (reason == FinishReason::kNone) continue;
      finished.emplace_back(seq.id(), reason);
      break;
    }
    if (s.num_draft_tokens == 0) continue;
    // Blocks that accepted draft tokens filled hold real K/V now: into the prefix cache with them,
    // as if those tokens had been decoded one by one (a request that ends or is preempted next
    // would otherwise leave them out). Blocks that only wrong draft tokens reached go back to the
    // pool, so that a wrong guess holds no block a real token could need.
    register_full_blocks(seq, std::min(seq.num_computed_tokens(), seq.num_tokens()));
    std::vector<BlockId>& blocks = seq.block_table().mutable_blocks();
    // The next step writes the last produced token at position num_computed_tokens.
    const auto needed =
        static_cast<size_t>((seq.num_computed_tokens() + config_.block_size) / config_.block_size);
    if (blocks.size() > needed) {
      pool_.release_all(std::span<const BlockId>(blocks).subspan(needed));
      blocks.resize(needed);
    }
  }
  // After the loop: finishing destroys the sequence, which plan entries still point to.
  for (const auto& [id, reason] : finished)
    finish(id, reason);
  return events;
}

const Sequence* Scheduler::find(const RequestId& id) const {
  auto it = seqs_.find(id);
  return it == seqs_.end() ? nullptr : it->second.get();
}

SchedulerStats Scheduler::stats() const {
  SchedulerStats s;
  s.num_running = static_cast<int>(running_.size());
  s.num_waiting = static_cast<int>(waiting_.size());
  s.num_free_blocks = pool_.num_free_blocks();
  s.num_cached_blocks = pool_.num_cached_blocks();
  s.num_free_cached_blocks = pool_.num_free_cached_blocks();
  s.num_total_blocks = pool_.num_blocks();
  s.num_preemptions = num_preemptions_;
  s.admission_short_of_blocks = admission_short_of_blocks_ && !waiting_.empty();
  s.num_draft_tokens = num_draft_tokens_;
  s.num_accepted_draft_tokens = num_accepted_draft_tokens_;
  for (const Sequence* seq : running_)
    s.num_unfilled_slots += seq->block_table().capacity() - seq->num_computed_tokens();
  return s;
}

}  // namespace kvserve
