#include "engine/block_pool.h"

#include <gtest/gtest.h>

#include <vector>

namespace kvserve {
namespace {

std::vector<TokenId> toks(std::initializer_list<TokenId> t) {
  return t;
}

TEST(BlockPool, AllocatesEveryBlockOnceThenRunsOut) {
  BlockPool pool(4, 16);
  EXPECT_EQ(pool.num_free_blocks(), 4);
  EXPECT_EQ(pool.allocate(), 0);
  EXPECT_EQ(pool.allocate(), 1);
  std::vector<BlockId> out;
  EXPECT_FALSE(pool.allocate(3, out));  // all or nothing
  EXPECT_TRUE(out.empty());
  EXPECT_TRUE(pool.allocate(2, out));
  EXPECT_EQ(out, (std::vector<BlockId>{2, 3}));
  EXPECT_EQ(pool.allocate(), std::nullopt);
  EXPECT_EQ(pool.num_free_blocks(), 0);
  for (BlockId id = 0; id < 4; ++id)
    EXPECT_EQ(pool.ref_count(id), 1);
}

TEST(BlockPool, ReleaseReturnsBlockInTheSameCallAndRespectsSharing) {
  BlockPool pool(2, 4);
  const BlockId a = *pool.allocate();
  pool.acquire(a);  // a second table shares it
  EXPECT_EQ(pool.ref_count(a), 2);
  pool.release(a);
  EXPECT_FALSE(pool.is_free(a));
  EXPECT_EQ(pool.num_free_blocks(), 1);
  pool.release(a);
  EXPECT_TRUE(pool.is_free(a));
  EXPECT_EQ(pool.num_free_blocks(), 2);
  EXPECT_THROW(pool.release(a), std::logic_error);
}

TEST(BlockPool, UnhashedFreedBlocksAreReusedBeforeCachedOnesInLruOrder) {
  BlockPool pool(4, 2);
  std::vector<BlockId> table;
  ASSERT_TRUE(pool.allocate(4, table));
  const BlockHash h0 = hash_block_tokens(kRootBlockHash, toks({1, 2}));
  const BlockHash h1 = hash_block_tokens(h0, toks({3, 4}));
  pool.register_full_block(0, h0, kRootBlockHash, toks({1, 2}));
  pool.register_full_block(1, h1, h0, toks({3, 4}));
  EXPECT_EQ(pool.num_cached_blocks(), 2);
  EXPECT_EQ(pool.num_free_cached_blocks(), 0);  // registered, but still referenced
  // Released last to first: 3 and 2 (no hash) go to the head, 1 then 0 (hashed) to the tail.
  pool.release_all(table);
  EXPECT_EQ(pool.num_free_cached_blocks(), 2);
  EXPECT_EQ(pool.allocate(), 2);
  EXPECT_EQ(pool.allocate(), 3);
  EXPECT_EQ(pool.lookup(h1, h0, toks({3, 4})), 1);
  EXPECT_EQ(pool.allocate(), 1);  // evicts the tail block's prefix first
  EXPECT_EQ(pool.lookup(h1, h0, toks({3, 4})), std::nullopt);
  EXPECT_EQ(pool.block_hash(1), std::nullopt);
  EXPECT_EQ(pool.lookup(h0, kRootBlockHash, toks({1, 2})), 0);
  EXPECT_EQ(pool.num_cached_blocks(), 1);
  EXPECT_EQ(pool.num_free_cached_blocks(), 1);
}

TEST(BlockPool, AcquiringACachedFreeBlockTakesItOutOfTheFreeQueue) {
  BlockPool pool(3, 2);
  const BlockId a = *pool.allocate();
  const BlockHash h = hash_block_tokens(kRootBlockHash, toks({7, 8}));
  pool.register_full_block(a, h, kRootBlockHash, toks({7, 8}));
  pool.release(a);
  EXPECT_EQ(pool.num_free_blocks(), 3);
  const auto hit = pool.lookup(h, kRootBlockHash, toks({7, 8}));
  ASSERT_EQ(hit, a);
  pool.acquire(*hit);
  EXPECT_EQ(pool.num_free_blocks(), 2);
  EXPECT_EQ(pool.ref_count(a), 1);
  // The remaining two allocations never hand out the acquired block.
  EXPECT_NE(pool.allocate(), a);
  EXPECT_NE(pool.allocate(), a);
  EXPECT_EQ(pool.allocate(), std::nullopt);
}

TEST(BlockPool, LookupComparesContentSoAHashCollisionIsNeverAHit) {
  BlockPool pool(2, 2);
  const BlockId a = *pool.allocate();
  const BlockHash forged = 42;
  pool.register_full_block(a, forged, kRootBlockHash, toks({1, 2}));
  EXPECT_EQ(pool.lookup(forged, kRootBlockHash, toks({1, 2})), a);
  EXPECT_EQ(pool.lookup(forged, kRootBlockHash, toks({1, 3})), std::nullopt);
  EXPECT_EQ(pool.lookup(forged, /*parent=*/123, toks({1, 2})), std::nullopt);
  EXPECT_EQ(pool.lookup(forged, kRootBlockHash, toks({1})), std::nullopt);  // not a full block
}

TEST(BlockPool, SecondBlockWithTheSamePrefixIsNotRegistered) {
  BlockPool pool(2, 2);
  const BlockId a = *pool.allocate();
  const BlockId b = *pool.allocate();
  const BlockHash h = hash_block_tokens(kRootBlockHash, toks({5, 6}));
  pool.register_full_block(a, h, kRootBlockHash, toks({5, 6}));
  pool.register_full_block(b, h, kRootBlockHash, toks({5, 6}));
  EXPECT_EQ(pool.block_hash(a), h);
  EXPECT_EQ(pool.block_hash(b), std::nullopt);
  EXPECT_EQ(pool.num_cached_blocks(), 1);
}

TEST(BlockPool, DisabledPrefixCachingNeverHits) {
  BlockPool pool(2, 2, /*enable_prefix_caching=*/false);
  const BlockId a = *pool.allocate();
  const BlockHash h = hash_block_tokens(kRootBlockHash, toks({5, 6}));
  pool.register_full_block(a, h, kRootBlockHash, toks({5, 6}));
  EXPECT_EQ(pool.lookup(h, kRootBlockHash, toks({5, 6})), std::nullopt);
  EXPECT_EQ(pool.num_cached_blocks(), 0);
}

TEST(BlockHash, DependsOnParentTokensAndTheirOrder) {
  const BlockHash base = hash_block_tokens(kRootBlockHash, toks({1, 2, 3}));
  EXPECT_EQ(base, hash_block_tokens(kRootBlockHash, toks({1, 2, 3})));
  EXPECT_NE(base, hash_block_tokens(kRootBlockHash, toks({3, 2, 1})));
  EXPECT_NE(base, hash_block_tokens(base, toks({1, 2, 3})));
  EXPECT_NE(base, hash_block_tokens(kRootBlockHash, toks({1, 2, 4})));
}

TEST(BlockPool, RejectsNonPositiveSizes) {
  EXPECT_THROW(BlockPool(0, 16), std::invalid_argument);
  EXPECT_THROW(BlockPool(4, 0), std::invalid_argument);
}

}  // namespace
}  // namespace kvserve
