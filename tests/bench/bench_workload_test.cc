#include "bench/bench_workload.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace kvserve::bench {
namespace {

BenchOptions token_options() {
  BenchOptions options;
  options.vocab = 500;
  options.min_token_id = 10;
  options.prompt_len = LengthDistribution::fixed(40);
  options.output_len = LengthDistribution::fixed(12);
  options.seed = 11;
  return options;
}

std::vector<uint32_t> ids_of(const PlannedRequest& planned) {
  const auto& ids = planned.request.token_ids().ids();
  return {ids.begin(), ids.end()};
}

TEST(Workload, RequestsAskForExactLengthsWithEosIgnored) {
  const Workload workload(token_options());
  for (uint64_t index = 0; index < 50; ++index) {
    const auto planned = workload.make(index);
    ASSERT_TRUE(planned.request.has_token_ids());
    EXPECT_EQ(planned.request.token_ids().ids_size(), 40);
    EXPECT_EQ(planned.prompt_tokens, 40u);
    EXPECT_EQ(planned.output_tokens, 12u);
    EXPECT_EQ(planned.request.stop().max_tokens(), 12u);
    EXPECT_TRUE(planned.request.stop().ignore_eos());
    EXPECT_EQ(planned.request.sampling().seed(), 11u + index);
    EXPECT_EQ(planned.request.priority(), 0);
    for (const uint32_t id : planned.request.token_ids().ids()) {
      ASSERT_GE(id, 10u);
      ASSERT_LT(id, 500u);
    }
  }
}

TEST(Workload, RequestsNameTheLoraAdaptersInTurn) {
  BenchOptions options = token_options();
  EXPECT_EQ(Workload(options).make(3).request.lora_adapter(), "") << "none asked for";
  options.lora_adapters = {"", "sql", "chat"};
  const Workload workload(options);
  for (uint64_t index = 0; index < 9; ++index)
    EXPECT_EQ(workload.make(index).request.lora_adapter(), options.lora_adapters[index % 3]) << index;
}

TEST(Workload, SameIndexSameRequestWhateverTheOrder) {
  const Workload first(token_options());
  const Workload second(token_options());
  const auto late = second.make(37);
  EXPECT_EQ(ids_of(first.make(37)), ids_of(late));
  EXPECT_NE(ids_of(first.make(37)), ids_of(first.make(38)));
  auto other_seed = token_options();
  other_seed.seed = 12;
  EXPECT_NE(ids_of(Workload(other_seed).make(37)), ids_of(late));
}

TEST(Workload, SharedPrefixGoesToTheRequestedFraction) {
  auto options = token_options();
  options.shared_prefix_frac = 0.3;
  options.shared_prefix_len = 16;
  const Workload workload(options);
  // Which prefix is shared is found from the requests themselves: the most common first 16 ids.
  std::map<std::vector<uint32_t>, int> prefixes;
  const int requests = 4000;
  for (int index = 0; index < requests; ++index) {
    const auto ids = ids_of(workload.make(static_cast<uint64_t>(index)));
    ASSERT_EQ(ids.size(), 40u);
    ++prefixes[std::vector<uint32_t>(ids.begin(), ids.begin() + 16)];
  }
  const auto most_common = std::max_element(prefixes.begin(), prefixes.end(),
                                            [](const auto& a, const auto& b) { return a.second < b.second; });
  // Binomial(4000, 0.3): mean 1200, standard deviation 29.
  EXPECT_NEAR(most_common->second, 1200, 150);
  // Random 16-id prefixes from 490 ids never collide by chance.
  EXPECT_EQ(prefixes.size(), static_cast<size_t>(requests - most_common->second + 1));
}

TEST(Workload, PromptShorterThanThePrefixIsACutOfIt) {
  auto options = token_options();
  options.shared_prefix_frac = 1.0;
  options.shared_prefix_len = 32;
  std::string error;
  options.prompt_len = *LengthDistribution::parse("uniform:1:64", &error);
  const Workload workload(options);
  std::vector<std::vector<uint32_t>> prompts;
  for (uint64_t index = 0; index < 200; ++index)
    prompts.push_back(ids_of(workload.make(index)));
  const auto full =
      std::find_if(prompts.begin(), prompts.end(), [](const auto& ids) { return ids.size() >= 32; });
  ASSERT_NE(full, prompts.end());
  const std::vector<uint32_t> prefix(full->begin(), full->begin() + 32);
  size_t shorter = 0;
  for (const auto& ids : prompts) {
    const auto shared = static_cast<long>(std::min<size_t>(ids.size(), 32));
    if (ids.size() < 32) ++shorter;
    EXPECT_TRUE(std::equal(ids.begin(), ids.begin() + shared, prefix.begin()));
  }
  EXPECT_GT(shorter, 0u);
}

TEST(Workload, TextModeSendsOneWordPerPromptToken) {
  auto options = token_options();
  options.text = true;
  options.vocab = 0;
  const Workload workload(options);
  const auto planned = workload.make(3);
  ASSERT_EQ(planned.request.input_case(), kvserve::v1::GenerateRequest::kText);
  std::istringstream words(planned.request.text());
  std::string word;
  int count = 0;
  const auto& known = Workload::words();
  while (words >> word) {
    ++count;
    EXPECT_NE(std::find(known.begin(), known.end(), word), known.end()) << word;
  }
  EXPECT_EQ(count, 40);
  EXPECT_EQ(planned.prompt_tokens, 40u);
}

}  // namespace
}  // namespace kvserve::bench
