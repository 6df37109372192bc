// Pieces of the dense products (sgemm_f32.cu) that the layer forward (forward_ops.cu) and the
// tests reuse; not part of the public device interface (cuda_layer_ops.h). Plain C++.
#pragma once
#include <cstddef>
#include <cstdint>
#include <mutex>

#include "cuda_gemm.h"
#include "cuda_layer_ops.h"

namespace awq::cuda::detail {

// Device memory that only grows: get() returns at least `bytes`, reallocating (old contents
// lost) when it is too small. cudaFree waits for the device, so a buffer still read by queued
// kernels is never freed under them. Users serialize through `mu`: with everything on the
// legacy default stream, holding it while *enqueuing* the work that uses the buffer is enough.
class GrowBuffer {
 public:
  explicit GrowBuffer(const char* what) : what_(what) {}
  void* get(size_t bytes) {
    if (bytes > mem_.size()) {
      mem_ = DeviceMemory();  // free first: the peak is the new size, not old + new
      mem_ = DeviceMemory(bytes, what_);
    }
    return mem_.get();
  }
  std::mutex mu;

 private:
  const char* what_;
  DeviceMemory mem_;
};

// awq::cuda::sgemm with bias[N] (device, or null) added to every row of C after the product:
// C = alpha * op(A) op(B) + beta * C (+ bias).
void sgemm_bias(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                const float* B, int64_t ldb, float beta, float* C, int64_t ldc, const float* bias);

// Tests: force the fp32 kernel's block tile (64 or 128); 0 restores the automatic choice.
void sgemm_force_tile(int tile);

// dst[i] = src[i] rounded to nearest even in bf16 (p == BF16) or fp16 (p == F16); device.
void round_to_lowp(const float* src, int64_t n, void* dst, Precision p);

// True when linear in precision p runs on tensor cores for this input width (else fp32).
inline bool lowp_linear(Precision p, int64_t in) { return p != Precision::F32 && in % 8 == 0; }

// y[M, out] = lowp(x) * W^T (+ bias), W already rounded (round_to_lowp, [out, in], 16-byte
// aligned); requires lowp_linear(p, in). x is rounded into the library's scratch.
void linear_lowp(const float* x, int64_t M, int64_t in, const void* W_lowp, int64_t out, const float* bias, float* y,
                 Precision p);

}  // namespace awq::cuda::detail
