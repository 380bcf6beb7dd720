// BlockTable: one sequence's map from logical KV block (token index / block_size) to the physical
// block that holds it in the pool.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "engine/block_pool.h"

namespace kvserve {

class BlockTable {
 public:
  explicit BlockTable(int block_size) : block_size_(block_size) {}

  int block_size() const { return block_size_; }
  int num_blocks() const { return static_cast<int>(blocks_.size()); }
  // Tokens the table can hold without another block.
  int capacity() const { return num_blocks() * block_size_; }
  std::span<const BlockId> blocks() const { return blocks_; }
  BlockId operator[](int logical) const { return blocks_[logical]; }

  // Where token `pos` of the sequence lives in the flat pool of num_blocks * block_size slots.
  int64_t slot(int pos) const {
    return static_cast<int64_t>(blocks_[pos / block_size_]) * block_size_ + pos % block_size_;
  }
  // Blocks needed to hold `num_tokens` tokens beyond those already in the table.
  int blocks_needed(int num_tokens) const {
    const int total = (num_tokens + block_size_ - 1) / block_size_;
    return total > num_blocks() ? total - num_blocks() : 0;
  }

  void append(BlockId id) { blocks_.push_back(id); }
  std::vector<BlockId>& mutable_blocks() { return blocks_; }
  void clear() { blocks_.clear(); }

 private:
  int block_size_;
  std::vector<BlockId> blocks_;
};

}  // namespace kvserve
