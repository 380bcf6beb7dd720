// Where one token's K (or V) vector lives in the GPU KV pool.
//
// Per layer, K and V are separate arrays of bf16, each [num_blocks][num_kv_heads][block_size][head_dim]:
// one block holds, for each KV head, block_size consecutive token rows of head_dim elements. Why this
// order: the attention kernels work one (sequence, KV head) at a time, so the rows they stream for one
// block are one contiguous run of block_size * head_dim * 2 bytes (4 KiB at block 16, head_dim 128),
// read with 16-byte vector loads that coalesce perfectly; and the tile of a block is what the prefill
// kernel stages in shared memory as it is. The write path scatters each new token's head_dim-long rows
// (one per KV head) to their slots: 256 contiguous bytes per head, also coalesced.
//
// slot = block * block_size + offset, as StepBatch::slot_mapping numbers them (the CPU backend
// uses the same slot numbers with a different in-memory order).
#pragma once

#include <cstdint>

#ifndef KVSERVE_HOST_DEVICE  // also defined by engine/sample_uniform.h
#ifdef __CUDACC__
#define KVSERVE_HOST_DEVICE __host__ __device__
#else
#define KVSERVE_HOST_DEVICE
#endif
#endif

namespace kvserve::cuda {

struct KvCacheLayout {
  int num_blocks = 0;
  int block_size = 0;
  int num_kv_heads = 0;
  int head_dim = 0;

  // Elements of one layer's K (or V) array.
  KVSERVE_HOST_DEVICE int64_t layer_elements() const {
    return static_cast<int64_t>(num_blocks) * num_kv_heads * block_size * head_dim;
  }
  // Elements between the starts of consecutive blocks.
  KVSERVE_HOST_DEVICE int64_t block_stride() const {
    return static_cast<int64_t>(num_kv_heads) * block_size * head_dim;
  }
  // Index of element 0 of the row of (block, kv_head, offset within the block).
  KVSERVE_HOST_DEVICE int64_t row(int64_t block, int kv_head, int offset) const {
    return block * block_stride() + (static_cast<int64_t>(kv_head) * block_size + offset) * head_dim;
  }
  // Index of element 0 of the row of a pool slot (block * block_size + offset) for `kv_head`.
  KVSERVE_HOST_DEVICE int64_t slot_row(int64_t slot, int kv_head) const {
    return row(slot / block_size, kv_head, static_cast<int>(slot % block_size));
  }
};

}  // namespace kvserve::cuda
