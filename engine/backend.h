// Backend: the only seam between host logic and the code that runs the model (CPU or CUDA).
// A backend owns the KV pool's memory (num_blocks * block_size slots per layer) and runs one forward
// pass per step over a StepBatch.
#pragma once

#include <span>
#include <string>

#include "engine/step_batch.h"

namespace kvserve {

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;
  virtual int vocab_size() const = 0;
  // Writes the K/V of every token in the batch at its slot, attends through the block tables, and
  // returns the logits of each sequence's last token: [batch.num_seqs x vocab_size()], row-major,
  // valid until the next call.
  // Contract: within each layer, all of the batch's K/V writes happen before any attention read, so
  // a sequence may attend to blocks that another sequence of the same batch fills (prefix sharing
  // between requests admitted together). A backend that throws leaves the cache undefined: the
  // engine treats that as fatal.
  virtual std::span<const float> forward(const StepBatch& batch) = 0;
};

}  // namespace kvserve
