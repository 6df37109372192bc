// Pieces shared by the tiled kernels (int4 and dense): warp roles, the split-K reduction of
// accumulators across the warps of a block, and the store of C fragments with bias and tails.
#pragma once
#include "gemm_common.cuh"

namespace awq::cuda::kern {

// A block of WARPS_M x WARPS_N x WARPS_K warps. Each warp owns a (16 WM) x (8 WN) tile of C;
// the WARPS_K warps of one tile each sum a different slice of k and are reduced at the end.
template <int WM_, int WN_, int WARPS_M_, int WARPS_N_, int WARPS_K_>
struct TileShape {
  static constexpr int WM = WM_, WN = WN_, WARPS_M = WARPS_M_, WARPS_N = WARPS_N_, WARPS_K = WARPS_K_;
  static constexpr int kWarps = WARPS_M * WARPS_N * WARPS_K, kThreads = 32 * kWarps;
  static constexpr int BM = 16 * WM * WARPS_M, BN = 8 * WN * WARPS_N;
  static constexpr int kAcc = WM * WN * 4;  // fp32 accumulators per lane
  // Bytes of shared memory the split-K reduction needs (it reuses the operand buffers).
  static constexpr int kReduceBytes = (WARPS_K - 1) * WARPS_M * WARPS_N * kAcc * 32 * 4;
};

struct WarpRole {
  int lane, g, t, wk, wm, wn;
};
template <class S>
__device__ __forceinline__ WarpRole warp_role() {
  WarpRole r;
  const int warp = static_cast<int>(threadIdx.x) >> 5;
  r.lane = static_cast<int>(threadIdx.x) & 31;
  r.g = r.lane >> 2;
  r.t = r.lane & 3;
  r.wk = warp % S::WARPS_K;
  const int wmn = warp / S::WARPS_K;
  r.wn = wmn % S::WARPS_N;
  r.wm = wmn / S::WARPS_N;
  return r;
}

// Sums the WARPS_K partial tiles (through `red`, shared memory of at least kReduceBytes, free
// to overwrite: callers pass their operand buffers after the last __syncthreads of the main
// loop) and writes C[row, col] = acc (+ bias[col]) for rows < M, cols < N. Every thread of the
// block must call it. m_warp / n_warp: first row / column of this warp's tile.
template <class S, typename OutT>
__device__ __forceinline__ void store_tile(float (&acc)[S::WM][S::WN][4], float* red, const WarpRole& r,
                                           int m_warp, int n_warp, int M, int N, const float* __restrict__ bias,
                                           OutT* __restrict__ C) {
  if constexpr (S::WARPS_K > 1) {
    const int wmn = r.wm * S::WARPS_N + r.wn;
    if (r.wk > 0) {
      float* dst = red + (static_cast<size_t>((r.wk - 1) * S::WARPS_M * S::WARPS_N + wmn) * S::kAcc) * 32 + r.lane;
#pragma unroll
      for (int i = 0; i < S::WM; ++i)
#pragma unroll
        for (int j = 0; j < S::WN; ++j)
#pragma unroll
          for (int q = 0; q < 4; ++q) dst[((i * S::WN + j) * 4 + q) * 32] = acc[i][j][q];
    }
    __syncthreads();
    if (r.wk > 0) return;
#pragma unroll 1
    for (int w = 1; w < S::WARPS_K; ++w) {
      const float* src = red + (static_cast<size_t>((w - 1) * S::WARPS_M * S::WARPS_N + wmn) * S::kAcc) * 32 + r.lane;
#pragma unroll
      for (int i = 0; i < S::WM; ++i)
#pragma unroll
        for (int j = 0; j < S::WN; ++j)
#pragma unroll
          for (int q = 0; q < 4; ++q) acc[i][j][q] += src[((i * S::WN + j) * 4 + q) * 32];
    }
  }
#pragma unroll
  for (int i = 0; i < S::WM; ++i)
#pragma unroll
    for (int j = 0; j < S::WN; ++j)
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const int row = m_warp + i * 16 + r.g + 8 * (q >> 1);
        const int col = n_warp + j * 8 + 2 * r.t + (q & 1);
        if (row < M && col < N) {
          const float b = bias ? bias[col] : 0.f;
          C[static_cast<size_t>(row) * N + col] = to_out<OutT>(acc[i][j][q] + b);
        }
      }
}

// Word j of a uint4; j is a constant after loop unrolling, so this folds to a register.
__device__ __forceinline__ uint32_t word_at(const uint4& v, int j) {
  return j == 0 ? v.x : j == 1 ? v.y : j == 2 ? v.z : v.w;
}

}  // namespace awq::cuda::kern
