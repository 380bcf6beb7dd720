// BlockPool: the bookkeeping for the paged KV cache. It owns no memory for keys and values (the
// backend does); it decides which fixed-size block of the backend's pool holds which tokens.
//
// Every block is either referenced (ref_count > 0, held by one or more block tables) or sits in the
// free queue. The free queue doubles as the prefix cache's LRU: a freed block that still holds a full,
// hashed run of tokens keeps its hash until allocation evicts it, so a later request whose prompt
// starts with the same tokens can take it back instead of recomputing it. Allocation pops the head of
// the queue; freed blocks without a hash go to the head (nothing to lose), hashed ones to the tail
// (least recently used is evicted first). All operations are O(1) except the batch helpers, which are
// O(number of blocks touched).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <unordered_map>
#include <vector>

namespace kvserve {

using BlockId = int32_t;
using TokenId = int32_t;
using BlockHash = uint64_t;

// Hash that identifies a full block by its whole prefix: (hash of the parent block, this block's
// tokens). The first block of a sequence uses kRootBlockHash as its parent.
inline constexpr BlockHash kRootBlockHash = 0x6b7673657276650bULL;
BlockHash hash_block_tokens(BlockHash parent, std::span<const TokenId> tokens);

class BlockPool {
 public:
  BlockPool(int num_blocks, int block_size, bool enable_prefix_caching = true);

  int num_blocks() const { return num_blocks_; }
  int block_size() const { return block_size_; }
  bool prefix_caching_enabled() const { return enable_prefix_caching_; }
  // Blocks in the free queue: never used, or freed (some still holding cached prefixes).
  int num_free_blocks() const { return num_free_; }
  // Blocks that carry a prefix-cache hash, whether referenced or free.
  int num_cached_blocks() const { return static_cast<int>(cached_.size()); }
  // Free blocks that still hold a reusable prefix (evicted only when the pool needs them).
  int num_free_cached_blocks() const { return num_free_cached_; }
  int ref_count(BlockId id) const { return blocks_[id].ref_count; }
  bool is_free(BlockId id) const { return blocks_[id].ref_count == 0; }
  std::optional<BlockHash> block_hash(BlockId id) const;

  // Takes the head of the free queue (evicting its cached prefix if it has one) with ref_count 1.
  std::optional<BlockId> allocate();
  // All or nothing: appends n fresh blocks to out and returns true, or changes nothing.
  bool allocate(int n, std::vector<BlockId>& out);

  // Drops one reference; at zero the block returns to the free queue in this same call.
  void release(BlockId id);
  // Releases a sequence's blocks last-to-first, so that its tail (the part least likely to be
  // shared) is evicted before its head.
  void release_all(std::span<const BlockId> ids);

  // Prefix cache. lookup() finds a block holding exactly (parent, tokens) computed under the LoRA
  // adapter `lora_adapter` (0: the base model; Request::lora_adapter) without taking it; acquire()
  // adds a reference (taking the block out of the free queue if it was there).
  std::optional<BlockId> lookup(BlockHash hash, BlockHash parent, std::span<const TokenId> tokens,
                                int lora_adapter = 0) const;
  void acquire(BlockId id);
  // Marks a referenced, full block as holding (parent, tokens) under `lora_adapter`, with the given
  // hash. If another block already holds that content the call does nothing: one block per prefix
  // keeps lookups exact.
  void register_full_block(BlockId id, BlockHash hash, BlockHash parent, std::span<const TokenId> tokens,
                           int lora_adapter = 0);

 private:
  static constexpr BlockId kNone = -1;
  struct Block {
    int ref_count = 0;
    bool has_hash = false;
    BlockHash hash = 0;
    BlockHash parent = 0;
    int lora_adapter = 0;  // whose K/V the block holds: another adapter's never match
    BlockId prev = kNone;  // free-queue links, valid only while ref_count == 0
    BlockId next = kNone;
  };

  void push_front(BlockId id);
  void push_back(BlockId id);
  void unlink(BlockId id);
  void evict_hash(BlockId id);

  int num_blocks_;
  int block_size_;
  bool enable_prefix_caching_;
  std::vector<Block> blocks_;
  // The tokens of each hashed block, compared on lookup so that a 64-bit hash collision can never
  // hand one request another's KV cache.
  std::vector<TokenId> block_tokens_;
  std::unordered_map<BlockHash, BlockId> cached_;
  BlockId head_ = kNone;
  BlockId tail_ = kNone;
  int num_free_ = 0;
  int num_free_cached_ = 0;
};

}  // namespace kvserve
