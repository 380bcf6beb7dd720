// Deferred weights (WeightLoading::kDeferred): tensors that know where their values are - a mapped
// checkpoint or a random generator - and materialize_weights(), which reads them into float32 for
// the backends that compute from host memory.
#include <cstddef>
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
      safetensors_to_float32(*t->mapped->tensor, t->mapped->file->path(), t->mapped->first, t->data);
    else
      seeded_values(*t->seeded, t->data);
  }
}

}  // namespace kvserve
