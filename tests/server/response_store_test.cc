// The Responses API's store: found only with the key that stored a response, bounded in bytes with
// the least recently used evicted first, and shared by the HTTP server's worker threads.
#include "server/response_store.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace kvserve {
namespace {

using Json = nlohmann::ordered_json;

// A stored response whose JSON text is about `bytes` long.
ResponseStore::Stored response_of(size_t bytes, const std::string& tag = "") {
  ResponseStore::Stored stored;
  stored.response = Json{{"tag", tag}, {"text", std::string(bytes, 'x')}};
  stored.items = Json::array({Json{{"type", "message"}, {"role", "user"}, {"content", tag}}});
  stored.input_items = 1;
  return stored;
}

TEST(ResponseStore, AResponseIsFoundOnlyWithTheKeyThatStoredIt) {
  ResponseStore store(1 << 20);
  ASSERT_TRUE(store.put("resp_a", "Bearer one", response_of(10, "a")));
  ASSERT_NE(store.find("resp_a", "Bearer one"), nullptr);
  EXPECT_EQ(store.find("resp_a", "Bearer one")->response["tag"], "a");
  EXPECT_EQ(store.find("resp_a", "Bearer two"), nullptr);
  EXPECT_EQ(store.find("resp_a", ""), nullptr);
  EXPECT_EQ(store.find("resp_b", "Bearer one"), nullptr);
  EXPECT_FALSE(store.erase("resp_a", "Bearer two"));
  EXPECT_NE(store.find("resp_a", "Bearer one"), nullptr);
  EXPECT_TRUE(store.erase("resp_a", "Bearer one"));
  EXPECT_EQ(store.find("resp_a", "Bearer one"), nullptr);
  EXPECT_FALSE(store.erase("resp_a", "Bearer one"));
  EXPECT_EQ(store.size(), 0u);
  EXPECT_EQ(store.bytes(), 0u);
}

TEST(ResponseStore, TheLeastRecentlyUsedGoFirstAndTheBytesStayWithinTheCapacity) {
  // Room for three responses of about 1000 bytes, not four.
  ResponseStore store(3500);
  for (const char* id : {"r1", "r2", "r3"})
    ASSERT_TRUE(store.put(id, "", response_of(1000, id)));
  EXPECT_EQ(store.size(), 3u);
  ASSERT_NE(store.find("r1", ""), nullptr);  // r1 is now the most recently used, r2 the least
  ASSERT_TRUE(store.put("r4", "", response_of(1000, "r4")));
  EXPECT_EQ(store.find("r2", ""), nullptr);
  for (const char* id : {"r1", "r3", "r4"})
    EXPECT_NE(store.find(id, ""), nullptr) << id;
  EXPECT_LE(store.bytes(), store.capacity_bytes());
  // One larger response evicts as many as it needs.
  ASSERT_TRUE(store.put("big", "", response_of(2000, "big")));
  EXPECT_EQ(store.size(), 2u);
  EXPECT_NE(store.find("big", ""), nullptr);
  EXPECT_NE(store.find("r4", ""), nullptr);  // the most recently used before it
  EXPECT_LE(store.bytes(), store.capacity_bytes());
  // One over the whole capacity is not stored, and evicts nothing.
  EXPECT_FALSE(store.put("huge", "", response_of(4000)));
  EXPECT_EQ(store.find("huge", ""), nullptr);
  EXPECT_EQ(store.size(), 2u);
}

// What the metrics report: the usage after each change, in order.
TEST(ResponseStore, EachChangeReportsTheUsage) {
  std::vector<std::pair<size_t, size_t>> seen;
  ResponseStore store(1500,
                      [&](ResponseStore::Usage usage) { seen.emplace_back(usage.responses, usage.bytes); });
  ASSERT_TRUE(store.put("r1", "", response_of(600, "r1")));
  const size_t one = store.bytes();
  ASSERT_TRUE(store.put("r2", "", response_of(600, "r2")));
  ASSERT_TRUE(store.put("r3", "", response_of(600, "r3")));  // evicts r1
  EXPECT_TRUE(store.erase("r2", ""));
  EXPECT_FALSE(store.erase("r2", ""));  // no change, no report
  ASSERT_EQ(seen.size(), 4u);
  EXPECT_EQ(seen[0], std::make_pair(size_t{1}, one));
  EXPECT_EQ(seen[1].first, 2u);
  EXPECT_EQ(seen[2].first, 2u);
  EXPECT_EQ(seen[3], std::make_pair(size_t{1}, store.bytes()));
}

TEST(ResponseStore, AFoundResponseOutlivesItsEviction) {
  ResponseStore store(1500);
  ASSERT_TRUE(store.put("r1", "", response_of(1000, "r1")));
  const std::shared_ptr<const ResponseStore::Stored> held = store.find("r1", "");
  ASSERT_TRUE(store.put("r2", "", response_of(1000, "r2")));
  EXPECT_EQ(store.find("r1", ""), nullptr);
  EXPECT_EQ(held->response["tag"], "r1");  // a request that read it before goes on with it
}

// Worker threads store, read and delete at once (ThreadSanitizer runs this suite).
TEST(ResponseStore, ThreadsShareIt) {
  ResponseStore store(64 * 1024);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&store, t] {
      const std::string key = "Bearer " + std::to_string(t);
      for (int i = 0; i < 300; ++i) {
        const std::string id = "resp_" + std::to_string(t) + "_" + std::to_string(i);
        store.put(id, key, response_of(200, id));
        if (const auto found = store.find(id, key)) EXPECT_EQ(found->response["tag"], id);
        if (i % 3 == 0) store.erase(id, key);
        EXPECT_EQ(store.find(id, "Bearer other"), nullptr);
      }
    });
  for (std::thread& thread : threads)
    thread.join();
  EXPECT_LE(store.bytes(), store.capacity_bytes());
  EXPECT_GT(store.size(), 0u);
}

}  // namespace
}  // namespace kvserve
