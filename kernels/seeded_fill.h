// Generates a random-weight model's tensor on the GPU (engine/seeded_weights.h): the CUDA backend
// fills deferred weights this way, so a benchmark model never occupies host memory.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "engine/seeded_weights.h"

namespace kvserve::cuda {

// out[i] = bf16(value of element i under `fill`), i in [0, count): the value is bit-identical to
// the host's seeded_value() before the (round-to-nearest) bf16 conversion. count == 0 launches
// nothing; count < 0 or a null out with count > 0 throws std::invalid_argument.
void seeded_fill_bf16(__nv_bfloat16* out, int64_t count, const SeededFill& fill, cudaStream_t stream);

}  // namespace kvserve::cuda
