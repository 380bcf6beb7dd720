#include "engine/block_pool.h"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace kvserve {
namespace {

// splitmix64's finalizer: a cheap full-avalanche mix, so nearby token ids give unrelated hashes.
uint64_t mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

}  // namespace

BlockHash hash_block_tokens(BlockHash parent, std::span<const TokenId> tokens) {
  uint64_t h = mix64(parent ^ 0x9e3779b97f4a7c15ULL);
  for (TokenId t : tokens)
    h = mix64(h ^ static_cast<uint32_t>(t)) + 0x632be59bd9b4e019ULL;
  return mix64(h ^ tokens.size());
}

BlockPool::BlockPool(int num_blocks, int block_size, bool enable_prefix_caching)
    : num_blocks_(num_blocks), block_size_(block_size), enable_prefix_caching_(enable_prefix_caching) {
  if (num_blocks <= 0) throw std::invalid_argument("BlockPool: num_blocks must be positive");
  if (block_size <= 0) throw std::invalid_argument("BlockPool: block_size must be positive");
  blocks_.resize(num_blocks);
  if (enable_prefix_caching_) block_tokens_.resize(static_cast<size_t>(num_blocks) * block_size);
  for (BlockId id = 0; id < num_blocks; ++id)
    push_back(id);
}

std::optional<BlockHash> BlockPool::block_hash(BlockId id) const {
  const Block& b = blocks_[id];
  if (!b.has_hash) return std::nullopt;
  return b.hash;
}

void BlockPool::push_front(BlockId id) {
  Block& b = blocks_[id];
  b.prev = kNone;
  b.next = head_;
  if (head_ != kNone) blocks_[head_].prev = id;
  head_ = id;
  if (tail_ == kNone) tail_ = id;
  ++num_free_;
  num_free_cached_ += b.has_hash;
}

void BlockPool::push_back(BlockId id) {
  Block& b = blocks_[id];
  b.next = kNone;
  b.prev = tail_;
  if (tail_ != kNone) blocks_[tail_].next = id;
  tail_ = id;
  if (head_ == kNone) head_ = id;
  ++num_free_;
  num_free_cached_ += b.has_hash;
}

void BlockPool::unlink(BlockId id) {
  Block& b = blocks_[id];
  if (b.prev != kNone)
    blocks_[b.prev].next = b.next;
  else
    head_ = b.next;
  if (b.next != kNone)
    blocks_[b.next].prev = b.prev;
  else
    tail_ = b.prev;
  b.prev = b.next = kNone;
  --num_free_;
  num_free_cached_ -= b.has_hash;
}

void BlockPool::evict_hash(BlockId id) {
  Block& b = blocks_[id];
  if (!b.has_hash) return;
  auto it = cached_.find(b.hash);
  if (it != cached_.end() && it->second == id) cached_.erase(it);
  b.has_hash = false;
}

std::optional<BlockId> BlockPool::allocate() {
  if (head_ == kNone) return std::nullopt;
  BlockId id = head_;
  unlink(id);
  evict_hash(id);
  blocks_[id].ref_count = 1;
  return id;
}

bool BlockPool::allocate(int n, std::vector<BlockId>& out) {
  if (n > num_free_) return false;
  for (int i = 0; i < n; ++i)
    out.push_back(*allocate());
  return true;
}

void BlockPool::release(BlockId id) {
  Block& b = blocks_[id];
  if (b.ref_count <= 0) throw std::logic_error("BlockPool: release of free block " + std::to_string(id));
  if (--b.ref_count > 0) return;
  if (b.has_hash)
    push_back(id);
  else
    push_front(id);
}

void BlockPool::release_all(std::span<const BlockId> ids) {
  for (auto it = ids.rbegin(); it != ids.rend(); ++it)
    release(*it);
}

std::optional<BlockId> BlockPool::lookup(BlockHash hash, BlockHash parent, std::span<const TokenId> tokens,
                                         int lora_adapter) const {
  if (!enable_prefix_caching_ || static_cast<int>(tokens.size()) != block_size_) return std::nullopt;
  auto it = cached_.find(hash);
  if (it == cached_.end()) return std::nullopt;
  const BlockId id = it->second;
  const Block& b = blocks_[id];
  if (b.parent != parent || b.lora_adapter != lora_adapter) return std::nullopt;
  const TokenId* stored = &block_tokens_[static_cast<size_t>(id) * block_size_];
  if (!std::equal(tokens.begin(), tokens.end(), stored)) return std::nullopt;
  return id;
}

void BlockPool::acquire(BlockId id) {
  Block& b = blocks_[id];
  if (b.ref_count == 0) unlink(id);
  ++b.ref_count;
}

void BlockPool::register_full_block(BlockId id, BlockHash hash, BlockHash parent,
                                    std::span<const TokenId> tokens, int lora_adapter) {
  if (!enable_prefix_caching_) return;
  Block& b = blocks_[id];
  if (b.has_hash || static_cast<int>(tokens.size()) != block_size_) return;
  if (!cached_.emplace(hash, id).second) return;  // that prefix already lives in another block
  b.has_hash = true;
  b.hash = hash;
  b.parent = parent;
  b.lora_adapter = lora_adapter;
  std::copy(tokens.begin(), tokens.end(), &block_tokens_[static_cast<size_t>(id) * block_size_]);
}

}  // namespace kvserve
