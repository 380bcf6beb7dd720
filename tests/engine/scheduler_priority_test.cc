// Priority scheduling (SchedulingPolicy::kPriority): the queue's order, preemption for a better
// priority, the step budget in priority order, and the bound on waiting (max_priority_wait), under
// which an overdue request goes ahead of every request that is not.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/scheduler.h"
#include "tests/engine/test_util.h"

namespace kvserve {
namespace {

using namespace std::chrono_literals;
using testing::chunk_sizes;
using testing::complete;
using testing::iota_prompt;
using testing::small_config;

std::unique_ptr<Sequence> with_priority(std::string id, std::vector<TokenId> prompt, int max_tokens,
                                        int priority, int block_size) {
  Request r = testing::make_request(std::move(id), std::move(prompt), max_tokens);
  r.priority = priority;
  return std::make_unique<Sequence>(std::move(r), block_size, std::vector<TokenId>{testing::kTestEos});
}

SchedulerConfig priority_config(int block_size, int num_blocks) {
  SchedulerConfig cfg = small_config(block_size, num_blocks);
  cfg.policy = SchedulingPolicy::kPriority;
  return cfg;
}

// The ids a step schedules, in plan order.
std::vector<std::string> ids_of(const StepPlan& plan) {
  std::vector<std::string> ids;
  for (const auto& e : plan.seqs)
    ids.push_back(e.seq->id());
  return ids;
}

TEST(SchedulerPriority, TheQueueGoesByPriorityThenArrival) {
  SchedulerConfig cfg = priority_config(4, 16);
  cfg.max_num_seqs = 1;  // one at a time: the order of service is the queue's
  Scheduler s(cfg);
  const std::pair<const char*, int> arrivals[] = {{"a", 5}, {"b", 1}, {"c", 1}, {"d", -3}, {"e", 5}};
  for (const auto& [id, priority] : arrivals)
    ASSERT_TRUE(s.add(with_priority(id, iota_prompt(3), 1, priority, 4)).ok());
  std::vector<std::string> served;
  while (s.has_unfinished()) {
    const StepPlan plan = s.schedule();
    for (const std::string& id : ids_of(plan))
      served.push_back(id);
    complete(s, plan);
  }
  EXPECT_EQ(served, (std::vector<std::string>{"d", "b", "c", "a", "e"}));
}

TEST(SchedulerPriority, ABetterRequestTakesTheSeatOfTheWorstRunningOne) {
  SchedulerConfig cfg = priority_config(4, 16);
  cfg.max_num_seqs = 2;
  Scheduler s(cfg);
  ASSERT_TRUE(s.add(with_priority("low", iota_prompt(3, 100), 8, 5, 4)).ok());
  ASSERT_TRUE(s.add(with_priority("mid", iota_prompt(3, 200), 8, 3, 4)).ok());
  complete(s, s.schedule());
  ASSERT_TRUE(s.add(with_priority("urgent", iota_prompt(3, 300), 8, 0, 4)).ok());
  const StepPlan p = s.schedule();
  EXPECT_EQ(p.preempted, (std::vector<std::string>{"low"}));
  EXPECT_EQ(ids_of(p), (std::vector<std::string>{"mid", "urgent"}));
  complete(s, p);
  // "low" waits for a seat, then resumes from where it was (its output is kept).
  EXPECT_EQ(s.find("low")->status(), SequenceStatus::kWaiting);
  EXPECT_EQ(s.find("low")->num_output_tokens(), 1);
  while (s.find("mid") != nullptr) {
    const StepPlan q = s.schedule();
    for (const std::string& id : ids_of(q))
      EXPECT_NE(id, "low") << "no seat for it while both better ones run";
    complete(s, q);
  }
  const std::vector<std::string> next = ids_of(s.schedule());
  EXPECT_EQ(next.back(), "low") << "the seat \"mid\" left";
}

TEST(SchedulerPriority, ABetterRequestTakesTheBlocksItsFirstChunkNeeds) {
  // 4 blocks of 4 tokens, all held by two running requests of priority 2 (6-token prompts, 3
  // tokens each: their decodes stay within their second blocks).
  Scheduler s(priority_config(4, 4));
  ASSERT_TRUE(s.add(with_priority("a", iota_prompt(6, 100), 3, 2, 4)).ok());
  ASSERT_TRUE(s.add(with_priority("b", iota_prompt(6, 200), 3, 2, 4)).ok());
  complete(s, s.schedule());
  ASSERT_EQ(s.pool().num_free_blocks(), 0);
  // Equal priority: it waits its turn.
  ASSERT_TRUE(s.add(with_priority("same", iota_prompt(5, 300), 2, 2, 4)).ok());
  const StepPlan waited = s.schedule();
  EXPECT_TRUE(waited.preempted.empty());
  EXPECT_EQ(ids_of(waited), (std::vector<std::string>{"a", "b"}));
  complete(s, waited);
  ASSERT_TRUE(s.finish("same", FinishReason::kAborted).ok());
  // Better: the most recently admitted of the worst priority gives up its blocks.
  ASSERT_TRUE(s.add(with_priority("urgent", iota_prompt(5, 400), 2, 1, 4)).ok());
  const StepPlan p = s.schedule();
  EXPECT_EQ(p.preempted, (std::vector<std::string>{"b"}));
  EXPECT_EQ(ids_of(p), (std::vector<std::string>{"a", "urgent"}));
}

TEST(SchedulerPriority, TheWorstPriorityIsPreemptedWhenARunningRequestNeedsABlock) {
  // As PreemptsTheMostRecentlyAdmittedWhenBlocksRunOut, but b has the worst priority: b goes, not c.
  Scheduler s(priority_config(4, 4));
  ASSERT_TRUE(s.add(with_priority("a", iota_prompt(3, 100), 10, 0, 4)).ok());
  ASSERT_TRUE(s.add(with_priority("b", iota_prompt(3, 200), 10, 9, 4)).ok());
  ASSERT_TRUE(s.add(with_priority("c", iota_prompt(3, 300), 10, 0, 4)).ok());
  complete(s, s.schedule());
  complete(s, s.schedule());
  const StepPlan p = s.schedule();
  EXPECT_EQ(p.preempted, (std::vector<std::string>{"b"}));
  EXPECT_EQ(ids_of(p), (std::vector<std::string>{"a", "c"}));
}

TEST(SchedulerPriority, AWorsePrefillWaitsForTheBudgetUntilABetterRequestIsAdmitted) {
  SchedulerConfig cfg = priority_config(4, 64);
  cfg.max_num_batched_tokens = 8;
  Scheduler s(cfg);
  ASSERT_TRUE(s.add(with_priority("long", iota_prompt(40, 100), 4, 5, 4)).ok());
  complete(s, s.schedule());  // "long" prefills 8 of its 40 tokens a step
  ASSERT_TRUE(s.add(with_priority("urgent", iota_prompt(3, 300), 4, 0, 4)).ok());
  const StepPlan p = s.schedule();
  EXPECT_TRUE(p.preempted.empty()) << "seat and blocks are free: nothing to preempt";
  EXPECT_EQ(ids_of(p), (std::vector<std::string>{"urgent", "long"}));
  EXPECT_EQ(chunk_sizes(p), (std::vector<int>{3, 5}));  // "long" takes what is left
}

TEST(SchedulerPriority, RunningRequestsShareTheBudgetInPriorityOrder) {
  SchedulerConfig cfg = priority_config(4, 64);
  cfg.max_num_batched_tokens = 2;  // two decodes a step
  Scheduler s(cfg);
  ASSERT_TRUE(s.add(with_priority("a", iota_prompt(1, 100), 8, 2, 4)).ok());
  complete(s, s.schedule());
  ASSERT_TRUE(s.add(with_priority("b", iota_prompt(1, 200), 8, 0, 4)).ok());
  ASSERT_TRUE(s.add(with_priority("c", iota_prompt(1, 300), 8, 1, 4)).ok());
  complete(s, s.schedule());  // admits b and c ("a" waits: worse than the queue's head)
  // All three decode now, admitted a, b, c: the budget goes to b and c, the better two.
  EXPECT_EQ(ids_of(s.schedule()), (std::vector<std::string>{"b", "c"}));
}

TEST(SchedulerPriority, NobodyIsPreemptedForAHeadThatWouldStillNotFit) {
  // 10 blocks of 4, all held: "better" (priority 0) 5, "worse" (priority 5) 5, four of them a
  // 16-token prefix. The head (priority 1) starts with that prefix: 4 hits and 3 new blocks. Were
  // "worse" preempted, its prefix would sit free and the head would need those 4 blocks too, 7 of
  // the 5 freed: so "worse" keeps running.
  SchedulerConfig cfg = priority_config(4, 10);
  cfg.max_num_seqs = 3;
  Scheduler s(cfg);
  std::vector<TokenId> prefix = iota_prompt(16, 100);
  std::vector<TokenId> worse = prefix, head = prefix;
  for (TokenId t : iota_prompt(3, 300))
    worse.push_back(t);
  for (TokenId t : iota_prompt(12, 400))
    head.push_back(t);
  ASSERT_TRUE(s.add(with_priority("better", iota_prompt(19, 200), 2, 0, 4)).ok());
  ASSERT_TRUE(s.add(with_priority("worse", worse, 2, 5, 4)).ok());
  complete(s, s.schedule());
  ASSERT_EQ(s.pool().num_free_blocks(), 0);
  ASSERT_TRUE(s.add(with_priority("head", head, 2, 1, 4)).ok());
  const StepPlan p = s.schedule();
  EXPECT_TRUE(p.preempted.empty());
  EXPECT_EQ(ids_of(p), (std::vector<std::string>{"better", "worse"}));
}

TEST(SchedulerPriority, FirstComeFirstServedTakesOnlyPriorityZero) {
  Scheduler s(small_config(4, 16));
  const Status st = s.add(with_priority("p", iota_prompt(3), 1, -1, 4));
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("--scheduling-policy priority"), std::string::npos) << st.message();
  EXPECT_TRUE(s.add(with_priority("zero", iota_prompt(3), 1, 0, 4)).ok());
}

// ---- The bound on waiting (max_priority_wait) ----

// A clock the test moves by hand.
struct ManualClock {
  std::chrono::steady_clock::time_point now{};
  void advance(std::chrono::milliseconds d) { now += d; }
};

SchedulerConfig bounded_config(ManualClock& clock, std::chrono::milliseconds bound) {
  SchedulerConfig cfg = priority_config(4, 64);
  cfg.max_num_seqs = 1;  // one seat: who holds it is the order of service
  cfg.max_priority_wait = bound;
  cfg.clock = [&clock] { return clock.now; };
  return cfg;
}

// Steps of 10 ms while a new better request arrives every step, each wanting two tokens: "batch",
// of a worse priority, is served only once it is overdue. Returns the step that first schedules
// it, or -1 within 100 steps.
int first_step_of_batch(std::chrono::milliseconds bound) {
  ManualClock clock;
  Scheduler s(bounded_config(clock, bound));
  EXPECT_TRUE(s.add(with_priority("batch", iota_prompt(3, 100), 4, 1, 4)).ok());
  for (int step = 0; step < 100; ++step) {
    EXPECT_TRUE(s.add(with_priority("chat" + std::to_string(step), iota_prompt(3, 200), 2, 0, 4)).ok());
    const StepPlan plan = s.schedule();
    const std::vector<std::string> ids = ids_of(plan);
    if (std::find(ids.begin(), ids.end(), "batch") != ids.end()) return step;
    complete(s, plan);
    clock.advance(10ms);
  }
  return -1;
}

TEST(SchedulerPriority, WithoutABoundAWorsePriorityWaitsWhileBetterOnesKeepComing) {
  EXPECT_EQ(first_step_of_batch(0ms), -1);
}

TEST(SchedulerPriority, AnOverdueRequestTakesTheSeatFromABetterPriority) {
  // Overdue after 100 ms, at the 11th step's start: it preempts the better request seated then.
  EXPECT_EQ(first_step_of_batch(100ms), 10);
}

TEST(SchedulerPriority, OverdueRequestsGoFirstInTheirOrderOfArrival) {
  ManualClock clock;
  Scheduler s(bounded_config(clock, 50ms));
  ASSERT_TRUE(s.add(with_priority("worst", iota_prompt(3, 100), 1, 9, 4)).ok());
  clock.advance(1ms);
  ASSERT_TRUE(s.add(with_priority("worse", iota_prompt(3, 200), 1, 5, 4)).ok());
  clock.advance(49ms);  // "worst" is overdue, "worse" not yet
  ASSERT_TRUE(s.add(with_priority("best", iota_prompt(3, 300), 1, -9, 4)).ok());
  std::vector<std::string> served;
  while (s.has_unfinished()) {
    const StepPlan plan = s.schedule();
    for (const std::string& id : ids_of(plan))
      served.push_back(id);
    complete(s, plan);
    clock.advance(1ms);  // "worse" is overdue from the second step
  }
  EXPECT_EQ(served, (std::vector<std::string>{"worst", "worse", "best"}));
}

TEST(SchedulerPriority, AnOverdueRequestKeepsItsSeatOnceAdmitted) {
  ManualClock clock;
  Scheduler s(bounded_config(clock, 50ms));
  ASSERT_TRUE(s.add(with_priority("chat", iota_prompt(3, 100), 8, 0, 4)).ok());
  ASSERT_TRUE(s.add(with_priority("batch", iota_prompt(3, 200), 8, 5, 4)).ok());
  complete(s, s.schedule());  // "chat" runs, "batch" waits
  clock.advance(50ms);
  const StepPlan taken = s.schedule();  // overdue: it takes the seat
  EXPECT_EQ(taken.preempted, (std::vector<std::string>{"chat"}));
  EXPECT_EQ(ids_of(taken), (std::vector<std::string>{"batch"}));
  complete(s, taken);
  ASSERT_TRUE(s.add(with_priority("urgent", iota_prompt(3, 300), 8, -1, 4)).ok());
  const StepPlan kept = s.schedule();
  EXPECT_TRUE(kept.preempted.empty());
  EXPECT_EQ(ids_of(kept), (std::vector<std::string>{"batch"}));
}

TEST(SchedulerPriority, TimeRunningDoesNotMakeARequestOverdue) {
  // Only the wait in the queue counts: a request that never waited is preempted for a better one
  // however long it has run.
  ManualClock clock;
  Scheduler s(bounded_config(clock, 50ms));
  ASSERT_TRUE(s.add(with_priority("batch", iota_prompt(3, 100), 8, 5, 4)).ok());
  complete(s, s.schedule());
  clock.advance(500ms);
  complete(s, s.schedule());
  ASSERT_TRUE(s.add(with_priority("urgent", iota_prompt(3, 200), 8, 0, 4)).ok());
  const StepPlan p = s.schedule();
  EXPECT_EQ(p.preempted, (std::vector<std::string>{"batch"}));
  EXPECT_EQ(ids_of(p), (std::vector<std::string>{"urgent"}));
  EXPECT_FALSE(s.find("batch")->overdue()) << "its wait starts again now";
}

TEST(SchedulerPriority, WantingBlocksTheOverdueArePreemptedLast) {
  // "old" (priority 5) waited past the bound; then it runs beside "new" (priority 0) and the pool
  // runs short: "new" goes, although it is the better priority.
  ManualClock clock;
  SchedulerConfig cfg = bounded_config(clock, 50ms);
  cfg.max_num_seqs = 2;
  cfg.num_blocks = 4;
  Scheduler s(cfg);
  ASSERT_TRUE(s.add(with_priority("first", iota_prompt(3, 100), 1, 0, 4)).ok());
  ASSERT_TRUE(s.add(with_priority("second", iota_prompt(3, 200), 1, 0, 4)).ok());
  ASSERT_TRUE(s.add(with_priority("old", iota_prompt(3, 300), 10, 5, 4)).ok());
  complete(s, s.schedule());  // "first" and "second" run one token and finish; "old" waits
  clock.advance(50ms);
  complete(s, s.schedule());  // "old", overdue, runs
  ASSERT_TRUE(s.find("old")->overdue());
  ASSERT_TRUE(s.add(with_priority("new", iota_prompt(3, 400), 10, 0, 4)).ok());
  // 13 tokens each at most, 4 blocks of 4 in the pool: one of them must give way.
  std::vector<std::string> preempted;
  for (int step = 0; step < 20 && preempted.empty(); ++step) {
    const StepPlan plan = s.schedule();
    preempted = plan.preempted;
    complete(s, plan);
  }
  EXPECT_EQ(preempted, (std::vector<std::string>{"new"}));
}

TEST(SchedulerPriority, AnOverdueHeadThatCannotFitDoesNotStallTheRunningRequests) {
  // Two running requests share a 36-token prefix (9 blocks) and hold 11 of the 16 blocks; the
  // overdue head needs 8 for its first chunk. Preempting both frees the shared blocks too, so the
  // head is admitted; before the shared blocks counted, nothing was preempted, both were held back
  // for the head without a way to preempt, and the plan stayed empty for good.
  ManualClock clock;
  SchedulerConfig cfg = bounded_config(clock, 50ms);
  cfg.max_num_seqs = 4;
  cfg.num_blocks = 16;
  Scheduler s(cfg);
  ASSERT_TRUE(s.add(with_priority("head", iota_prompt(32, 1000), 1, 1, 4)).ok());
  clock.advance(10ms);
  std::vector<TokenId> b = iota_prompt(36, 100), c = iota_prompt(36, 100);
  for (TokenId t : iota_prompt(4, 200))
    b.push_back(t);
  for (TokenId t : iota_prompt(4, 300))
    c.push_back(t);
  ASSERT_TRUE(s.add(with_priority("b", b, 20, 0, 4)).ok());
  ASSERT_TRUE(s.add(with_priority("c", c, 20, 0, 4)).ok());
  complete(s, s.schedule());
  ASSERT_EQ(s.find("head")->status(), SequenceStatus::kWaiting);
  clock.advance(50ms);
  for (int step = 0; step < 60 && s.has_unfinished(); ++step) {
    const StepPlan plan = s.schedule();
    ASSERT_FALSE(plan.empty()) << "nothing scheduled at step " << step;
    complete(s, plan);
  }
  EXPECT_FALSE(s.has_unfinished());
}

TEST(SchedulerPriority, TheBoundMustNotBeNegative) {
  SchedulerConfig cfg = priority_config(4, 16);
  cfg.max_priority_wait = -1ms;
  EXPECT_NE(cfg.validate().message().find("max_priority_wait"), std::string::npos);
}

}  // namespace
}  // namespace kvserve
