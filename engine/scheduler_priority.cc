// The scheduler's priority machinery (engine/scheduler.h describes the policy): the waiting queue's
// (priority, arrival) order, overdue requests, the choice of a preemption victim, and preempting
// worse priorities to seat a better one. Under FCFS every priority is 0 and each of these reduces
// to the first-come-first-served rule.
#include <algorithm>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "engine/scheduler.h"

namespace kvserve {
namespace {

// The waiting queue's order: (scheduling priority, arrival).
bool queued_before(const Sequence* a, const Sequence* b) {
  if (a->scheduling_priority() != b->scheduling_priority())
    return a->scheduling_priority() < b->scheduling_priority();
  return a->arrival() < b->arrival();
}

}  // namespace

void Scheduler::enqueue(Sequence* seq) {
  waiting_.insert(std::upper_bound(waiting_.begin(), waiting_.end(), seq, queued_before), seq);
}

bool Scheduler::waits_bounded() const {
  return config_.policy == SchedulingPolicy::kPriority && config_.max_priority_wait.count() > 0;
}

std::chrono::steady_clock::time_point Scheduler::now() const {
  return config_.clock ? config_.clock() : std::chrono::steady_clock::now();
}

void Scheduler::mark_overdue() {
  if (!waits_bounded()) return;
  const auto t = now();
  bool requeue = false;
  for (Sequence* s : waiting_) {
    if (s->overdue() || s->waited(t) < config_.max_priority_wait) continue;
    s->mark_overdue();
    requeue = true;
  }
  if (requeue) std::stable_sort(waiting_.begin(), waiting_.end(), queued_before);
}

Sequence* Scheduler::preemption_victim() const {
  Sequence* victim = running_.back();
  for (auto it = running_.rbegin(); it != running_.rend(); ++it)
    if ((*it)->scheduling_priority() > victim->scheduling_priority()) victim = *it;
  return victim;
}

std::vector<Sequence*> Scheduler::make_room_for_better_priority(StepPlan& plan, int& budget,
                                                                bool& head_can_fit) {
  std::vector<Sequence*> evicted;
  head_can_fit = true;
  if (waiting_.empty()) return evicted;
  Sequence& head = *waiting_.front();
  // Blocks that preempting every worse-priority sequence would free: those held by none but them
  // (a prefix they share among themselves counts). When even that would not make room for the
  // head's first chunk, nobody is preempted for nothing. Only shared blocks and the head's own
  // prefix-cache hits need their holders counted: the rest are one sequence's alone (cheap, as
  // this runs every step with a queue).
  const Admission admission = plan_admission(head, config_.max_num_batched_tokens);
  const std::unordered_set<BlockId> hits(admission.hits.begin(), admission.hits.end());
  std::unordered_map<BlockId, int> holders;  // of shared blocks and hits
  int reclaimable = pool_.num_free_blocks();
  for (const Sequence* s : running_) {
    if (s->scheduling_priority() <= head.scheduling_priority()) continue;
    for (BlockId b : s->block_table().blocks()) {
      if (pool_.ref_count(b) > 1 || (!hits.empty() && hits.contains(b)))
        ++holders[b];
      else
        ++reclaimable;
    }
  }
  // What the head would need once they all went: its hits that only they hold would sit free
  // then, and taking a free hit takes a free block.
  int need_if_all_go = admission.free_blocks_needed;
  for (const auto& [block, count] : holders) {
    const bool freed = count == pool_.ref_count(block);
    reclaimable += freed;
    need_if_all_go += freed && hits.contains(block);
  }
  head_can_fit = need_if_all_go <= reclaimable;
  if (!head_can_fit) return evicted;  // preempting would only empty seats that it cannot take
  while (!running_.empty()) {
    Sequence* victim = preemption_victim();
    if (victim->scheduling_priority() <= head.scheduling_priority()) break;
    const int need = plan_admission(head, config_.max_num_batched_tokens).free_blocks_needed;
    const bool seated = static_cast<int>(running_.size()) < config_.max_num_seqs;
    if (seated && need <= pool_.num_free_blocks()) break;
    preempt(*victim, plan, budget);
    evicted.push_back(victim);
  }
  return evicted;
}

}  // namespace kvserve
