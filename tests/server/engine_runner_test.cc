// EngineRunner on the checksum model: every request's channel hears each token once and exactly
// one final output, aborts free blocks, the queue limit and draining refuse with the right codes,
// stop() ends what is left, and a failing engine step ends every request and refuses new ones.
#include "server/engine_runner.h"

#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "engine/checksum_backend.h"
#include "server/backend_factory.h"
#include "server/metrics.h"

namespace kvserve {
namespace {

using namespace std::chrono_literals;

constexpr int kVocab = 500;

class RecordingChannel : public OutputChannel {
 public:
  void on_output(StepOutput output) override {
    std::lock_guard lock(mu_);
    if (output.token >= 0) tokens_.push_back(output.token);
    if (output.finish != FinishReason::kNone) {
      finals_.push_back(output.finish);
      cached_prompt_tokens_ = output.num_cached_prompt_tokens;
    }
  }
  std::vector<TokenId> tokens() {
    std::lock_guard lock(mu_);
    return tokens_;
  }
  std::vector<FinishReason> finals() {
    std::lock_guard lock(mu_);
    return finals_;
  }
  int cached_prompt_tokens() {  // as the final output reported it
    std::lock_guard lock(mu_);
    return cached_prompt_tokens_;
  }

 private:
  std::mutex mu_;
  std::vector<TokenId> tokens_;
  std::vector<FinishReason> finals_;
  int cached_prompt_tokens_ = -1;
};

std::unique_ptr<EngineRunner> make_runner(int max_waiting, std::chrono::milliseconds delay = 0ms,
                                          Metrics* metrics = nullptr) {
  EngineConfig cfg;
  cfg.scheduler.block_size = 4;
  cfg.scheduler.num_blocks = 64;
  cfg.scheduler.max_num_seqs = 2;
  cfg.scheduler.max_waiting = 0;
  auto engine = std::make_unique<Engine>(cfg, std::make_unique<ChecksumBackend>(64, 4, kVocab));
  return std::make_unique<EngineRunner>(
      std::move(engine),
      EngineRunnerOptions{
          .max_waiting = max_waiting, .metrics = metrics, .step_delay = delay, .on_engine_failure = nullptr});
}

Request request(const std::string& id, int max_tokens) {
  Request r;
  r.id = id;
  r.prompt = {5, 6, 7};
  r.stop.max_tokens = max_tokens;
  r.stop.ignore_eos = true;
  return r;
}

std::vector<TokenId> reference(std::vector<TokenId> context, int n) {
  std::vector<TokenId> out;
  for (int i = 0; i < n; ++i) {
    out.push_back(ChecksumBackend::reference_next_token(context, kVocab));
    context.push_back(out.back());
  }
  return out;
}

TEST(EngineRunner, EveryRequestGetsItsTokensAndExactlyOneFinalOutput) {
  auto runner = make_runner(0);
  std::vector<std::shared_ptr<RecordingChannel>> channels;
  for (int i = 0; i < 8; ++i) {
    channels.push_back(std::make_shared<RecordingChannel>());
    ASSERT_TRUE(runner->submit(request("same-client-id", 5 + i), channels.back(), nullptr).ok());
  }
  ASSERT_TRUE(runner->wait_idle(10s));
  runner->stop();  // must not end anything a second time
  for (int i = 0; i < 8; ++i) {
    EXPECT_EQ(channels[i]->tokens(), reference({5, 6, 7}, 5 + i)) << i;
    EXPECT_EQ(channels[i]->finals(), std::vector<FinishReason>{FinishReason::kLength}) << i;
  }
  const EngineStatus s = runner->status();
  EXPECT_EQ(s.requests_served, 8u);
  EXPECT_EQ(s.kv_blocks_free, s.kv_blocks_total);
}

TEST(EngineRunner, AbortEndsTheRequestAndFreesItsBlocks) {
  auto runner = make_runner(0, 2ms);
  auto channel = std::make_shared<RecordingChannel>();
  RequestId id;
  ASSERT_TRUE(runner->submit(request("long", 200), channel, &id).ok());
  while (channel->tokens().size() < 3)
    std::this_thread::sleep_for(1ms);
  runner->abort(id);
  ASSERT_TRUE(runner->wait_idle(5s));
  EXPECT_EQ(channel->finals(), std::vector<FinishReason>{FinishReason::kAborted});
  const EngineStatus s = runner->status();
  EXPECT_EQ(s.kv_blocks_free, s.kv_blocks_total);
  EXPECT_EQ(s.num_running, 0);
  runner->abort(id);  // finished ids are ignored
}

TEST(EngineRunner, QueueLimitDrainAndValidationRefuseWithTheRightCodes) {
  auto runner = make_runner(/*max_waiting=*/2, 5ms);
  std::vector<std::shared_ptr<RecordingChannel>> channels;
  std::vector<bool> accepted;
  int exhausted = 0;
  for (int i = 0; i < 8; ++i) {
    channels.push_back(std::make_shared<RecordingChannel>());
    const Status s = runner->submit(request("q" + std::to_string(i), 50), channels.back(), nullptr);
    accepted.push_back(s.ok());
    if (s.code() == StatusCode::kResourceExhausted) ++exhausted;
  }
  // At most max_num_seqs (2) running plus a queue of 2 can hold the 8 submitted at once.
  EXPECT_GE(exhausted, 4);
  Request bad = request("bad", 5);
  bad.prompt = {kVocab};
  EXPECT_EQ(runner->submit(bad, std::make_shared<RecordingChannel>(), nullptr).code(),
            StatusCode::kInvalidArgument);
  runner->start_draining();
  EXPECT_EQ(runner->submit(request("late", 5), std::make_shared<RecordingChannel>(), nullptr).code(),
            StatusCode::kUnavailable);
  EXPECT_TRUE(runner->status().draining);
  runner->stop();  // aborts what is left
  for (size_t i = 0; i < channels.size(); ++i) {
    EXPECT_EQ(channels[i]->finals().size(), accepted[i] ? 1u : 0u) << i;
  }
  const EngineStatus s = runner->status();
  EXPECT_EQ(s.kv_blocks_free, s.kv_blocks_total);
}

// The server holds max_num_seqs running and max_waiting queued, also when they arrive together
// before the engine has seated any: whenever its thread looks, the first three fit and the fourth
// does not.
TEST(EngineRunner, ABurstFillsTheFreeSeatsBeforeItCountsAsQueued) {
  auto runner = make_runner(/*max_waiting=*/1, 5ms);
  std::vector<Status> results;
  for (int i = 0; i < 4; ++i)
    results.push_back(runner->submit(request("burst" + std::to_string(i), 200),
                                     std::make_shared<RecordingChannel>(), nullptr));
  for (int i = 0; i < 3; ++i)
    EXPECT_TRUE(results[i].ok()) << i << ": " << results[i].message();
  EXPECT_EQ(results[3].code(), StatusCode::kResourceExhausted);
  runner->stop();
}

// A seat left free for lack of KV blocks is no place in the queue: with one of the two seats taken
// and the pool too small for a second long prompt, one request waiting fills a queue of one.
TEST(EngineRunner, SeatsWithoutKvBlocksDoNotLengthenTheQueue) {
  auto runner = make_runner(/*max_waiting=*/1, 5ms);
  auto long_prompt = [](const std::string& id) {
    Request r = request(id, 100);
    r.prompt.assign(140, 5);  // 35 of the pool's 64 blocks: two never fit at once
    return r;
  };
  // Together, so that the step which seats the first is the one that leaves the second waiting.
  ASSERT_TRUE(runner
                  ->submit_all({long_prompt("first"), long_prompt("second")},
                               {std::make_shared<RecordingChannel>(), std::make_shared<RecordingChannel>()},
                               nullptr)
                  .ok());
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  // Until a step has left the second request waiting beside the first.
  for (EngineStatus s = runner->status(); s.num_running != 1 || s.num_waiting != 1; s = runner->status()) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline)
        << "running " << s.num_running << ", waiting " << s.num_waiting;
    std::this_thread::sleep_for(1ms);
  }
  const Status third = runner->submit(request("third", 5), std::make_shared<RecordingChannel>(), nullptr);
  EXPECT_EQ(third.code(), StatusCode::kResourceExhausted) << third.message();
  runner->stop();
  const EngineStatus s = runner->status();
  EXPECT_EQ(s.kv_blocks_free, s.kv_blocks_total);
}

// From the moment submit() accepts it, a request counts as waiting or running, whatever the engine
// thread has done with it yet: a caller who sees neither knows nothing is about to start.
TEST(EngineRunner, AnAcceptedRequestCountsAsWaitingOrRunningAtOnce) {
  auto runner = make_runner(0, 5ms);
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(
        runner->submit(request("r" + std::to_string(i), 200), std::make_shared<RecordingChannel>(), nullptr)
            .ok());
    const EngineStatus s = runner->status();
    EXPECT_EQ(s.num_waiting + s.num_running, i + 1) << "after submitting request " << i;
  }
  runner->stop();
}

// The choices of one Generate call go in together or not at all.
TEST(EngineRunner, SubmitAllQueuesEveryRequestOrNone) {
  auto runner = make_runner(/*max_waiting=*/5, 20ms);
  auto group = [](int count, const std::string& prefix, int max_tokens) {
    std::vector<Request> requests;
    std::vector<std::shared_ptr<OutputChannel>> channels;
    for (int i = 0; i < count; ++i) {
      requests.push_back(request(prefix + std::to_string(i), max_tokens));
      channels.push_back(std::make_shared<RecordingChannel>());
    }
    return std::make_pair(requests, channels);
  };
  std::vector<RequestId> ids;
  auto [eight, eight_channels] = group(8, "eight", 5);
  const Status too_many = runner->submit_all(eight, eight_channels, &ids);
  EXPECT_EQ(too_many.code(), StatusCode::kInvalidArgument);  // more than 2 seats and 5 queued: never
  EXPECT_NE(too_many.message().find("--max-queue"), std::string::npos) << too_many.message();
  EXPECT_TRUE(ids.empty());

  auto [bad, bad_channels] = group(3, "bad", 5);
  bad[2].prompt = {kVocab};  // one invalid request refuses the whole group
  EXPECT_EQ(runner->submit_all(bad, bad_channels, &ids).code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(ids.empty());
  EXPECT_EQ(runner->status().num_waiting, 0);

  // Five long requests: two run (max_num_seqs) and three wait, so three more do not fit in a queue
  // of five whether or not the engine thread has taken the first five from its inbox yet.
  auto [five, five_channels] = group(5, "five", 200);
  ASSERT_TRUE(runner->submit_all(five, five_channels, &ids).ok());
  ASSERT_EQ(ids.size(), 5u);
  std::vector<RequestId> more_ids;
  auto [three, three_channels] = group(3, "three", 5);
  const Status full = runner->submit_all(three, three_channels, &more_ids);
  EXPECT_EQ(full.code(), StatusCode::kResourceExhausted);
  EXPECT_NE(full.message().find("3 more asked for"), std::string::npos) << full.message();
  EXPECT_TRUE(more_ids.empty());
  runner->stop();  // aborts the five
  for (auto& channel : three_channels)
    EXPECT_TRUE(static_cast<RecordingChannel&>(*channel).finals().empty()) << "a refused request ran";
  for (auto& channel : five_channels)
    EXPECT_EQ(static_cast<RecordingChannel&>(*channel).finals().size(), 1u);
  const EngineStatus s = runner->status();
  EXPECT_EQ(s.kv_blocks_free, s.kv_blocks_total);
}

// Choices share their prompt: every one after the first finds the prompt's full blocks (all but
// the one holding the last token, which must be computed for logits) in the prefix cache.
TEST(EngineRunner, RequestsSubmittedTogetherShareTheirPromptBlocks) {
  auto runner = make_runner(0);
  std::vector<Request> requests;
  std::vector<std::shared_ptr<OutputChannel>> channels;
  std::vector<std::shared_ptr<RecordingChannel>> recorders;
  const std::vector<TokenId> prompt = {9, 8, 7, 6, 5, 4, 3, 2, 1};  // 9 tokens, block size 4
  for (int i = 0; i < 3; ++i) {
    requests.push_back(request("choice", 6));
    requests.back().prompt = prompt;
    recorders.push_back(std::make_shared<RecordingChannel>());
    channels.push_back(recorders.back());
  }
  std::vector<RequestId> ids;
  ASSERT_TRUE(runner->submit_all(requests, channels, &ids).ok());
  ASSERT_EQ(ids.size(), 3u);
  EXPECT_NE(ids[0], ids[1]);
  ASSERT_TRUE(runner->wait_idle(10s));
  runner->stop();
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(recorders[i]->tokens(), reference(prompt, 6)) << i;
    EXPECT_EQ(recorders[i]->cached_prompt_tokens(), i == 0 ? 0 : 8) << i;
  }
}

// The value of an unlabelled sample in a Prometheus exposition (-1 when absent).
double sample(const std::string& text, const std::string& name) {
  const std::size_t at = text.find("\n" + name + " ");
  return at == std::string::npos ? -1.0 : std::stod(text.substr(at + name.size() + 2));
}

// The gap counter holds the host time between steps while work is left, and nothing of the time
// the engine sits idle. The step delay (a sleep after each step) is host time between steps, so
// it gives the gap a known lower bound: one delay per step that had a successor.
TEST(EngineRunner, GapBetweenStepsCountsOnlyWhileRequestsAreUnfinished) {
  Metrics metrics;
  constexpr auto kDelay = 5ms;
  auto runner = make_runner(0, kDelay, &metrics);
  for (int round = 0; round < 2; ++round) {
    ASSERT_TRUE(
        runner
            ->submit(request("g" + std::to_string(round), 10), std::make_shared<RecordingChannel>(), nullptr)
            .ok());
    ASSERT_TRUE(runner->wait_idle(10s));
    if (round == 0) std::this_thread::sleep_for(3s);  // idle: must not count
  }
  runner->stop();
  const std::string text = metrics.render();
  const double steps = sample(text, "kvserve_engine_steps_total");
  const double gap = sample(text, "kvserve_engine_gap_seconds_total");
  // One request of 10 tokens alone: 10 steps, each but the last followed by another while it runs.
  EXPECT_EQ(steps, 20);
  EXPECT_GE(gap, 18 * std::chrono::duration<double>(kDelay).count());
  // The 18 busy gaps take 90 ms, or a few hundred on a loaded machine; the idle 3 s never count.
  EXPECT_LT(gap, 2.0) << "the idle seconds between the requests were counted";
}

// TTFT splits into the wait for a first step and the prefill from that step's start: the runner
// takes all three from the same instants, so per request queue + prefill = TTFT, and the sums
// agree up to rounding. With 2 seats, the third of three 10-token requests waits for one of the
// first two to finish.
TEST(EngineRunner, TimeToFirstTokenIsTheQueueTimePlusThePrefillTime) {
  Metrics metrics;
  constexpr auto kDelay = 5ms;
  auto runner = make_runner(0, kDelay, &metrics);
  std::vector<RequestId> ids(3);
  for (int i = 0; i < 3; ++i)
    ASSERT_TRUE(
        runner->submit(request("t" + std::to_string(i), 10), std::make_shared<RecordingChannel>(), &ids[i])
            .ok());
  ASSERT_TRUE(runner->wait_idle(10s));
  std::string text = metrics.render();
  EXPECT_EQ(sample(text, "kvserve_request_queue_time_seconds_count"), 3);
  EXPECT_EQ(sample(text, "kvserve_request_prefill_time_seconds_count"), 3);
  const double queue = sample(text, "kvserve_request_queue_time_seconds_sum");
  // At least 8 of those steps (9 if t1 and t2 came a step after t0), each followed by the delay.
  EXPECT_GE(queue, 8 * std::chrono::duration<double>(kDelay).count());
  EXPECT_NEAR(queue + sample(text, "kvserve_request_prefill_time_seconds_sum"),
              sample(text, "kvserve_time_to_first_token_seconds_sum"), 1e-9);

  // A request aborted while it waits counts its whole life as queue time, and has no prefill.
  ASSERT_TRUE(runner->submit(request("long0", 200), std::make_shared<RecordingChannel>(), nullptr).ok());
  ASSERT_TRUE(runner->submit(request("long1", 200), std::make_shared<RecordingChannel>(), nullptr).ok());
  auto waiting = std::make_shared<RecordingChannel>();
  RequestId waiting_id;
  ASSERT_TRUE(runner->submit(request("waits", 10), waiting, &waiting_id).ok());
  std::this_thread::sleep_for(50ms);
  runner->abort(waiting_id);
  for (int i = 0; i < 10000 && waiting->finals().empty(); ++i)
    std::this_thread::sleep_for(1ms);
  ASSERT_EQ(waiting->finals(), std::vector<FinishReason>{FinishReason::kAborted});
  EXPECT_TRUE(waiting->tokens().empty());
  runner->stop();
  text = metrics.render();
  EXPECT_EQ(sample(text, "kvserve_request_queue_time_seconds_count"), 6);
  EXPECT_EQ(sample(text, "kvserve_request_prefill_time_seconds_count"), 5);
  EXPECT_GE(sample(text, "kvserve_request_queue_time_seconds_sum") - queue, 0.05);
}

TEST(EngineRunner, AnEngineFailureEndsEveryRequestRefusesNewOnesAndIsReportedOnce) {
  EngineConfig cfg;
  cfg.scheduler.block_size = 4;
  cfg.scheduler.num_blocks = 64;
  cfg.scheduler.max_num_seqs = 2;  // of the 4 requests, 2 run and 2 wait when the step fails
  cfg.scheduler.max_waiting = 0;
  std::mutex mu;
  std::vector<std::string> reported;
  auto runner = std::make_unique<EngineRunner>(
      std::make_unique<Engine>(cfg, fail_after_steps(std::make_unique<ChecksumBackend>(64, 4, kVocab),
                                                     /*healthy_steps=*/5)),
      EngineRunnerOptions{.step_delay = 1ms, .on_engine_failure = [&](const std::string& what) {
                            std::lock_guard lock(mu);
                            reported.push_back(what);
                          }});
  std::vector<std::shared_ptr<RecordingChannel>> channels;
  for (int i = 0; i < 4; ++i) {
    channels.push_back(std::make_shared<RecordingChannel>());
    ASSERT_TRUE(runner->submit(request("f" + std::to_string(i), 50), channels.back(), nullptr).ok());
  }
  ASSERT_TRUE(runner->wait_idle(10s)) << "a request was left hanging";
  size_t tokens = 0;
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(channels[i]->finals(), std::vector<FinishReason>{FinishReason::kAborted}) << i;
    // What came before the failure is correct; when each request was admitted depends on timing.
    const std::vector<TokenId> got = channels[i]->tokens();
    EXPECT_LE(got.size(), 5u) << i;
    EXPECT_EQ(got, reference({5, 6, 7}, static_cast<int>(got.size()))) << i;
    tokens += got.size();
  }
  EXPECT_GT(tokens, 0u) << "the 5 healthy steps produced nothing";
  // The callback runs on the engine thread just after the last request ended.
  for (int waited_ms = 0; waited_ms < 5000; ++waited_ms) {
    std::lock_guard lock(mu);
    if (!reported.empty()) break;
    std::this_thread::sleep_for(1ms);
  }
  EXPECT_NE(runner->failure().find("injected failure"), std::string::npos) << runner->failure();
  const Status late = runner->submit(request("late", 5), std::make_shared<RecordingChannel>(), nullptr);
  EXPECT_EQ(late.code(), StatusCode::kUnavailable);
  EXPECT_NE(late.message().find("engine failed"), std::string::npos) << late.message();
  EXPECT_NE(late.message().find("injected failure"), std::string::npos) << late.message();
  const EngineStatus s = runner->status();
  EXPECT_TRUE(s.draining);
  EXPECT_EQ(s.kv_blocks_free, s.kv_blocks_total) << "the failed step's blocks leaked";
  EXPECT_EQ(s.num_running, 0);
  EXPECT_EQ(s.requests_served, 4u);
  runner->stop();
  std::lock_guard lock(mu);
  ASSERT_EQ(reported.size(), 1u);
  EXPECT_EQ(reported[0], runner->failure());
}

}  // namespace
}  // namespace kvserve
