// Deferred weights (WeightLoading::kDeferred): tensors that know where their values are - a mapped
// checkpoint (FP8 ones dequantized with their scales) or a random generator - and
// materialize_weights(), which reads them into float32 for the backends that compute from host memory.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine/model.h"
#include "engine/random_model.h"

namespace kvserve {
namespace {

bool is_deferred(const Tensor& t) {
  return !t.shape.empty() && t.data.empty() && t.numel() > 0;
}

}  // namespace

void mapped_to_float32(const MappedTensor& m, size_t first, std::span<float> out) {
  if (first > m.count || out.size() > m.count - first)
    throw std::out_of_range("mapped_to_float32: elements [" + std::to_string(first) + ", " +
                            std::to_string(first + out.size()) + ") of a weight mapping " +
                            std::to_string(m.count));
  if (m.tensor->dtype == SafetensorsDtype::kF8E4M3 && !m.fp8_scales)
    throw std::logic_error("mapped_to_float32: FP8 tensor '" + m.tensor->name + "' without its scales");
  safetensors_to_float32(*m.tensor, m.file->path(), m.first + first, out);
  if (!m.fp8_scales || out.empty()) return;
  // Row by row, each row's scales read once and each block of columns multiplied by its own (the
  // loader checked the scale tensor's shape against the weight's, so every index is inside it).
  const MappedTensor::Fp8Scales& s = *m.fp8_scales;
  const auto cols = static_cast<size_t>(m.tensor->shape.at(1));
  const auto block_rows = static_cast<size_t>(s.block_rows);
  const auto block_cols = static_cast<size_t>(s.block_cols);
  const size_t scale_cols = (cols + block_cols - 1) / block_cols;
  std::vector<float> scale_row(scale_cols);
  size_t loaded_row = SIZE_MAX;  // the scale row in scale_row
  const size_t begin = m.first + first;
  for (size_t i = 0; i < out.size();) {
    const size_t element = begin + i;
    const size_t row = element / cols;
    if (row / block_rows != loaded_row) {
      loaded_row = row / block_rows;
      safetensors_to_float32(*s.tensor, s.file->path(), loaded_row * scale_cols, scale_row);
    }
    const size_t row_end = std::min(out.size(), i + (cols - element % cols));  // this row's part of out
    for (size_t col = element % cols; i < row_end;) {
      const size_t block_end = std::min(row_end, i + (block_cols - col % block_cols));
      const float scale = scale_row[col / block_cols];
      for (; i < block_end; ++i, ++col)
        out[i] *= scale;
    }
  }
}

bool has_deferred_weights(const Model& model) {
  bool deferred = false;
  for_each_tensor(model.weights, [&](const Tensor& t) { deferred |= is_deferred(t); });
  return deferred;
}

void materialize_weights(Model& model) {
  std::vector<Tensor*> todo;
  for_each_tensor(model.weights, [&](Tensor& t) {
    if (!is_deferred(t)) return;
    if (!t.mapped && !t.seeded)
      throw std::invalid_argument("materialize_weights: a tensor of shape " + shape_string(t.shape) +
                                  " has no values and no source to read them from");
    todo.push_back(&t);
  });
  // Allocating zeroes every page on the allocating thread: spread the tensors over the threads so
  // that an 8B model's 32 GB is not touched by one core.
  const auto n_todo = static_cast<std::ptrdiff_t>(todo.size());
#pragma omp parallel for schedule(dynamic, 1)
  for (std::ptrdiff_t i = 0; i < n_todo; ++i)
    todo[i]->data.resize(static_cast<size_t>(todo[i]->numel()));

  for (Tensor* t : todo) {
    if (t->mapped && t->mapped->count != static_cast<size_t>(t->numel()))
      throw std::logic_error("materialize_weights: a tensor of shape " + shape_string(t->shape) + " maps " +
                             std::to_string(t->mapped->count) + " elements");
    if (t->mapped)
      mapped_to_float32(*t->mapped, 0, t->data);
    else
      seeded_values(*t->seeded, t->data);
  }
}

}  // namespace kvserve
