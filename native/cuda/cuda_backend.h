// The CUDA backend's host interface: plain C++ (no CUDA headers), so the addon and the C++ tests
// include it without nvcc. Compiled only in the cmake-js build (AWQ_WITH_CUDA).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace awq::cuda {

struct DeviceInfo {
  int index = 0;
  std::string name;
  int cc_major = 0, cc_minor = 0;
  uint64_t memory_bytes = 0;
};

// Devices the driver reports. Never throws: when none answer, `why_none` says why
// (no driver, no device, driver too old for this build, ...).
std::vector<DeviceInfo> list_devices(std::string* why_none);

// abs_mean_columns (native/core/stats.h) on device 0: x is host memory, copied in chunks.
// Throws awq::Error(Cuda) on driver errors, NonFinite like the CPU version.
void abs_mean_columns(const float* x, int64_t rows, int64_t cols, float* out);

}  // namespace awq::cuda
