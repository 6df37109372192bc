// Shared pieces of the device-side statistics, quantization and clip-search kernels (stats.cu,
// quant_ops.cu, clip_search.cu): scratch memory, launch checks, warp reductions that follow
// quantize_rows' min / max semantics (quant_math.h).
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "../core/errors.h"
#include "cuda_check.h"
#include "quant_math.h"

namespace awq::cuda {

// Every launch is followed by this: a bad configuration throws at the call that made it.
#define AWQ_CUDA_LAUNCH_CHECK() AWQ_CUDA_CHECK(cudaGetLastError())

constexpr unsigned kFullMask = 0xffffffffu;

// Stream-ordered scratch on the default stream (cudaMallocAsync: no device-wide synchronization
// on free, so functions that return nothing to the host stay asynchronous). Falls back to
// cudaMalloc where memory pools are not supported. Zero bytes: a null pointer.
class Scratch {
 public:
  Scratch(size_t bytes, const char* what) {
    if (bytes == 0) return;
    cudaError_t err = cudaMallocAsync(&ptr_, bytes, 0);
    if (err == cudaErrorNotSupported) {
      cudaGetLastError();
      async_ = false;
      err = cudaMalloc(&ptr_, bytes);
    }
    if (err != cudaSuccess) {
      cudaGetLastError();
      ptr_ = nullptr;
      throw Error(err == cudaErrorMemoryAllocation ? ErrorCode::OutOfMemory : ErrorCode::Cuda,
                  std::string("CUDA: could not allocate ") + std::to_string(bytes) + " bytes for " + what + ": " +
                      cudaGetErrorString(err));
    }
  }
  ~Scratch() {
    if (!ptr_) return;
    if (async_) {
      cudaFreeAsync(ptr_, 0);
    } else {
      cudaFree(ptr_);
    }
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  template <class T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }

 private:
  void* ptr_ = nullptr;
  bool async_ = true;
};

// Blocks for a grid-stride loop over n items (n >= 1).
inline unsigned grid_for(int64_t n, int threads) {
  const int64_t b = (n + threads - 1) / threads;
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(b, int64_t{1} << 20)));
}

// Blocks of `threads` threads so that every one of `warps_needed` warps exists (one work item
// per warp; the kernels return whole warps past the end).
inline unsigned grid_for_warps(int64_t warps_needed, int threads) {
  const int64_t per_block = threads / 32;
  const int64_t b = (warps_needed + per_block - 1) / per_block;
  if (b > 2147483647) throw Error(ErrorCode::InvalidArgument, "CUDA: too many rows x groups for one launch");
  return static_cast<unsigned>(std::max<int64_t>(1, b));
}

// ---- warp reductions; every lane of the warp must call them ----

__device__ __forceinline__ qm::MinMax warp_merge(qm::MinMax v) {
  for (int off = 16; off > 0; off >>= 1) {
    qm::MinMax o;
    o.mx = __shfl_xor_sync(kFullMask, v.mx, off);
    o.mn = __shfl_xor_sync(kFullMask, v.mn, off);
    v.merge(o);
  }
  // lanes may differ in the sign of a zero result: everyone takes lane 0's
  v.mx = __shfl_sync(kFullMask, v.mx, 0);
  v.mn = __shfl_sync(kFullMask, v.mn, 0);
  return v;
}

// std::max-based running maximum (NaN skipped when acc is not NaN), merged across the warp.
__device__ __forceinline__ float warp_max(float v) {
  for (int off = 16; off > 0; off >>= 1) v = qm::qmax(v, __shfl_xor_sync(kFullMask, v, off));
  return __shfl_sync(kFullMask, v, 0);
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int off = 16; off > 0; off >>= 1) v = __fadd_rn(v, __shfl_xor_sync(kFullMask, v, off));
  return __shfl_sync(kFullMask, v, 0);
}

// quantize_rows' per-group parameters for the g values value(0..g-1), computed by one warp.
template <class F>
__device__ __forceinline__ qm::GroupQuant warp_group_quant(const F& value, int64_t g, int bits, bool zero_point,
                                                           bool fp16_scale) {
  const int lane = threadIdx.x & 31;
  if (zero_point) {
    qm::MinMax mm;
    for (int64_t k = lane; k < g; k += 32) mm.add(value(k));
    mm = warp_merge(mm);
    mm.seed_first(value(0));
    return qm::group_quant_zero_point(mm.mx, mm.mn, bits, fp16_scale);
  }
  float amax = 0.f;  // quantize_rows: mx = 0, then std::max(mx, |w|)
  for (int64_t k = lane; k < g; k += 32) amax = qm::qmax(amax, qm::f_abs(value(k)));
  amax = warp_max(amax);
  return qm::group_quant_symmetric(amax, bits, fp16_scale);
}

// sum[c] += partial[0][c] + partial[1][c] + ... (in that order): the fixed-order fp64 total of
// per-chunk column sums (abs-mean statistics, weight_mean). A template so that the kernel can
// live in this header shared by several translation units.
template <typename T>
__global__ void add_partials_kernel(const T* __restrict__ partial, int64_t chunks, int64_t n, T* __restrict__ sum) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= n) return;
  T acc = sum[c];
  for (int64_t y = 0; y < chunks; ++y) acc += partial[y * n + c];
  sum[c] = acc;
}

}  // namespace awq::cuda
