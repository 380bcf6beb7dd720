// The default model, compiled into the binary so that `kvserve` serves with no model files at all
// (the project's own tiny test model, tests/data/models/tiny-llama).
#pragma once

#include <filesystem>

namespace kvserve {

// Writes the embedded model's files into a new private temporary directory and returns it. The
// caller loads the model from there and then removes the directory.
std::filesystem::path write_embedded_model();

}  // namespace kvserve
