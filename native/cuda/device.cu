#include <cuda_runtime.h>

#include "cuda_backend.h"
#include "cuda_check.h"

namespace awq::cuda {

std::vector<DeviceInfo> list_devices(std::string* why_none) {
  std::vector<DeviceInfo> out;
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    if (why_none) *why_none = std::string("CUDA runtime: ") + cudaGetErrorString(err);
    cudaGetLastError();  // clear the sticky error so later calls start clean
    return out;
  }
  if (count == 0) {
    if (why_none) *why_none = "the CUDA driver reports no devices";
    return out;
  }
  std::string too_old;
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, i) != cudaSuccess) {
      cudaGetLastError();
      continue;
    }
    // The kernels are built for sm_80 and newer (mma.sync with bf16, cp.async): an older device
    // would fail every launch with "no kernel image", so it is not offered.
    if (prop.major < 8) {
      too_old += std::string(too_old.empty() ? "" : ", ") + prop.name + " (compute capability " +
                 std::to_string(prop.major) + "." + std::to_string(prop.minor) + ")";
      continue;
    }
    out.push_back({i, prop.name, prop.major, prop.minor, static_cast<uint64_t>(prop.totalGlobalMem)});
  }
  if (out.empty() && !too_old.empty() && why_none)
    *why_none = "the CUDA kernels need compute capability 8.0 or newer (Ampere); found " + too_old;
  return out;
}

}  // namespace awq::cuda
