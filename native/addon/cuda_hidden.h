// Device-resident calibration hidden states (awq::cuda::DeviceHidden) as a type-tagged External.
// quantizeDecoderLayer accepts one in place of the hidden Float32Array: the layer reads its input
// from it and leaves its output in it, so activations cross PCIe once per run, not per layer.
#pragma once
#include <napi.h>

#include <atomic>
#include <memory>
#ifdef AWQ_WITH_CUDA
#include "../cuda/cuda_layer.h"
#endif

namespace awq::addon {

#ifdef AWQ_WITH_CUDA
struct CudaHidden {
  std::unique_ptr<cuda::DeviceHidden> states;  // null once released
  std::atomic<bool> busy{false};               // a layer call is reading or replacing them
};

// The states behind `v` (a cudaHiddenUpload handle), or null when `v` is not such a handle.
std::shared_ptr<CudaHidden> cuda_hidden_of(const Napi::Value& v);

// Marks `h` busy for its lifetime (a worker thread's layer call); throws when it already is.
class CudaHiddenUse {
 public:
  explicit CudaHiddenUse(std::shared_ptr<CudaHidden> h);
  ~CudaHiddenUse();
  CudaHiddenUse(const CudaHiddenUse&) = delete;
  CudaHiddenUse& operator=(const CudaHiddenUse&) = delete;
  cuda::DeviceHidden& states() const { return *h_->states; }

 private:
  std::shared_ptr<CudaHidden> h_;
};
#endif

}  // namespace awq::addon
