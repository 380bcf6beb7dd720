// What CUDA device this process can use, asked without failing when there is none: the CUDA build
// runs on machines without a GPU (CI), and callers decide what to do with a count of zero.
#pragma once

#include <string>

namespace kvserve::cuda {

// Number of usable CUDA devices; 0 when there is no GPU or no driver.
int device_count();
// "NVIDIA H100 80GB HBM3 (sm_90, 79.1 GiB)" for device `index`, or the CUDA error text.
std::string device_description(int index);

}  // namespace kvserve::cuda
