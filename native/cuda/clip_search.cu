// The clip search of one linear on the device (awq::clip_search, native/core/search.cc;
// REFERENCE.md section 5).
//
// For every group j and shrink step i the CPU builds D = Q(clamp(W_j, m0 * shrink_i)) - W_j
// [out, g], multiplies E = X_j D^T over the subsampled tokens [ns, g] and sums E[t, r]^2 over t in
// fp64. Here one fused kernel does that per (128-row tile, group, step) block:
//   1. per row of the tile, one warp computes m0 = max |w|, the clamp bound m = m0 * shrink and
//      quantize_rows' scale / zero point of the clamped row (quant_math.h: the CPU's bits);
//   2. the product runs over token tiles of 128 and k chunks of 16: X and D chunks are staged in
//      shared memory (D computed elementwise from W on the way: clamp, quantize, dequantize,
//      subtract, the CPU's fp32 operations), each thread accumulates 8 tokens x 8 rows with fp32
//      FMA, then adds its squared errors per row in fp64;
//   3. the 16 per-thread partial sums of each row are added in a fixed order and stored at
//      err[(j * steps + i) * out + r], the CPU's layout.
// A second kernel picks the first minimum over the steps per (row, group) (strictly lower wins,
// NaN never wins, as the CPU) and clamps W in place. Everything is deterministic.
//
// Differences from the CPU: the fp64 sums over tokens run in another order, and E's dot products
// are only guaranteed to match up to fp32 rounding (each E is an FMA chain over k = 0..g-1 here;
// the CPU sgemm's x86 kernels happen to use the same chain, and on an H200 the error tables
// agreed to ~4e-15 relative). A (row, group) whose best and second-best steps are that close may
// pick the other one.
//
// Cost: 2 * steps * ns * out * in FLOPs (7B MLP linear, out 11008, in 4096, 10 steps, 512 tokens:
// 0.46 TFLOP) plus recomputing D once per 128-token tile (~25 instructions per element, ~20% of
// the FMA work at ns = 512). Measured on an H200: 27 ms for that shape (17 TFLOP/s of fp32 FMA,
// a quarter of the SIMT peak; no software pipelining, D recomputed per token tile).
#include <cuda_runtime.h>

#include <climits>
#include <cmath>
#include <string>
#include <vector>

#include "cuda_layer_ops.h"
#include "cuda_quant_detail.h"
#include "quant_common.cuh"

namespace awq::cuda {
namespace {

constexpr int kTileT = 128;               // tokens per tile
constexpr int kTileR = 128;               // rows per tile
constexpr int kTileK = 16;                // k per shared-memory chunk
constexpr int kClipThreads = 256;         // 16 x 16 threads, each 8 tokens x 8 rows
constexpr int kLd = 132;                  // shared row stride: 16-byte aligned, conflict-free stores
constexpr int kLoads = kTileK * kTileT / kClipThreads;  // elements each thread stages per chunk
static_assert(kTileT == kTileR, "the staging loops share one mapping");
static_assert(kLoads * kClipThreads == kTileK * kTileT, "whole chunks");
static_assert(kTileK % 8 == 0, "k is staged in runs of 8");

// Staging map for element e of a [kTileK][128] chunk: runs of 8 consecutive k (32 bytes of a
// row-major source row) for 4 consecutive rows per warp; in shared memory kk * 132 + tt hits 32
// distinct banks across the warp.
__device__ __forceinline__ void stage_index(int e, int& kk, int& tt) {
  kk = (e % 8) + 8 * (e / (8 * kTileT));
  tt = (e / 8) % kTileT;
}

// The thread's 8 tokens / rows inside a 128 tile: {4 t .. 4 t + 3} and {64 + 4 t .. 64 + 4 t + 3}
// (two float4 reads per operand, conflict-free).
__device__ __forceinline__ int tile_pos(int t, int q) { return (q < 4 ? 0 : 64) + 4 * t + (q & 3); }

__global__ void __launch_bounds__(kClipThreads, 2)
    clip_error_kernel(const float* __restrict__ W, int64_t out, int64_t in, const float* __restrict__ X, int64_t ns,
                      int64_t tstep, int64_t g, int steps, int n_grid, int bits, bool zero_point, bool fp16_scale,
                      int64_t row_tiles, double* __restrict__ err) {
  __shared__ __align__(16) float xs[kTileK][kLd];
  __shared__ __align__(16) float ds[kTileK][kLd];
  __shared__ float row_m[kTileR], row_s[kTileR], row_z[kTileR];
  __shared__ double red[kClipThreads / 16][kTileR];

  // block -> (step i, row tile, group j); consecutive blocks share the W tile and X group slice
  const int64_t b = blockIdx.x;
  const int i = static_cast<int>(b % steps);
  const int64_t tile = (b / steps) % row_tiles;
  const int64_t j = (b / steps) / row_tiles;
  const int64_t r0 = tile * kTileR;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const float shrink = qm::clip_shrink(i, n_grid);
  // lo / hi of the integer range do not depend on the data
  const qm::GroupQuant range = zero_point ? qm::group_quant_zero_point(1.f, 0.f, bits, false)
                                          : qm::group_quant_symmetric(1.f, bits, false);

  // 1. per-row clamp bound and quantization parameters (one warp per row)
  for (int rr = warp; rr < kTileR; rr += kClipThreads / 32) {
    const int64_t r = r0 + rr;
    if (r < out) {  // uniform across the warp
      const float* w = W + r * in + j * g;
      float a = 0.f;
      for (int64_t k = lane; k < g; k += 32) a = qm::qmax(a, qm::f_abs(w[k]));
      const float m = qm::f_mul(warp_max(a), shrink);
      auto clamped = [&](int64_t k) { return qm::qmin(qm::qmax(w[k], -m), m); };
      const qm::GroupQuant q = warp_group_quant(clamped, g, bits, zero_point, fp16_scale);
      if (lane == 0) {
        row_m[rr] = m;
        row_s[rr] = q.s;
        row_z[rr] = q.z;
      }
    } else if (lane == 0) {
      row_m[rr] = 0.f;
      row_s[rr] = 1.f;
      row_z[rr] = 0.f;
    }
  }
  __syncthreads();

  // 2. E tiles and their squared sums
  const int tx = tid % 16, ty = tid / 16;  // rows tile_pos(tx, .), tokens tile_pos(ty, .)
  // the thread's fp64 sums per row live in red[ty][row] (its own 8 slots; registers are for acc)
#pragma unroll
  for (int q = 0; q < 8; ++q) red[ty][tile_pos(tx, q)] = 0.0;

  for (int64_t t0 = 0; t0 < ns; t0 += kTileT) {
    float acc[8][8];
#pragma unroll
    for (int p = 0; p < 8; ++p)
#pragma unroll
      for (int q = 0; q < 8; ++q) acc[p][q] = 0.f;

    for (int64_t k0 = 0; k0 < g; k0 += kTileK) {
#pragma unroll
      for (int l = 0; l < kLoads; ++l) {
        int kk, tt;
        stage_index(tid + kClipThreads * l, kk, tt);
        const int64_t t = t0 + tt, k = k0 + kk;
        float v = 0.f;
        if (t < ns && k < g) v = X[(t * tstep) * in + j * g + k];
        xs[kk][tt] = v;
      }
#pragma unroll 1
      for (int l = 0; l < kLoads; ++l) {
        int kk, rr;
        stage_index(tid + kClipThreads * l, kk, rr);
        const int64_t r = r0 + rr, k = k0 + kk;
        float d = 0.f;
        if (r < out && k < g) {
          // search.cc: D = clamp(W, +-m); quantize_rows(D) in place; D -= W
          const float w = W[r * in + j * g + k];
          const float m = row_m[rr];
          const qm::GroupQuant q{row_s[rr], row_z[rr], range.lo, range.hi};
          const float c = qm::qmin(qm::qmax(w, -m), m);
          d = qm::f_sub(qm::dequant(qm::quant_level(c, q), q), w);
        }
        ds[kk][rr] = d;
      }
      __syncthreads();
#pragma unroll
      for (int kk = 0; kk < kTileK; ++kk) {
        const float4 a0 = *reinterpret_cast<const float4*>(&xs[kk][4 * ty]);
        const float4 a1 = *reinterpret_cast<const float4*>(&xs[kk][64 + 4 * ty]);
        const float4 b0 = *reinterpret_cast<const float4*>(&ds[kk][4 * tx]);
        const float4 b1 = *reinterpret_cast<const float4*>(&ds[kk][64 + 4 * tx]);
        const float a[8] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
        const float bb[8] = {b0.x, b0.y, b0.z, b0.w, b1.x, b1.y, b1.z, b1.w};
#pragma unroll
        for (int p = 0; p < 8; ++p)
#pragma unroll
          for (int q = 0; q < 8; ++q) acc[p][q] = fmaf(a[p], bb[q], acc[p][q]);
      }
      __syncthreads();
    }
    // squared errors of this tile's valid tokens, fp64 (the CPU: dst[r] += double(E) * E)
#pragma unroll
    for (int q = 0; q < 8; ++q) {
      double sum = red[ty][tile_pos(tx, q)];
#pragma unroll
      for (int p = 0; p < 8; ++p) {
        if (t0 + tile_pos(ty, p) < ns) {
          const double e = static_cast<double>(acc[p][q]);
          sum = __dadd_rn(sum, __dmul_rn(e, e));
        }
      }
      red[ty][tile_pos(tx, q)] = sum;
    }
  }

  // 3. rows' totals over the 16 token lanes, in a fixed order
  __syncthreads();
  if (tid < kTileR) {
    double s = 0.0;
    for (int y = 0; y < kClipThreads / 16; ++y) s += red[y][tid];
    const int64_t r = r0 + tid;
    if (r < out) err[(j * steps + i) * out + r] = s;
  }
}

// Per (row, group), one warp: the first step with the lowest error (strictly lower wins, so NaN
// never does; all NaN: step 0), then W clamped to +-m0 * shrink(best). best[r * groups + j].
__global__ void clip_apply_kernel(float* __restrict__ W, int64_t out, int64_t in, int64_t g, int steps, int n_grid,
                                  const double* __restrict__ err, int* __restrict__ best_out) {
  const int64_t groups = in / g;
  const int64_t u = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  if (u >= out * groups) return;  // whole warps
  const int lane = threadIdx.x & 31;
  const int64_t r = u / groups, j = u % groups;
  int best = 0;
  if (lane == 0) {
    double best_err = static_cast<double>(INFINITY);
    for (int i = 0; i < steps; ++i) {
      const double e = err[(j * steps + i) * out + r];
      if (e < best_err) {
        best_err = e;
        best = i;
      }
    }
    best_out[u] = best;
  }
  best = __shfl_sync(kFullMask, best, 0);
  float* w = W + r * in + j * g;
  float a = 0.f;
  for (int64_t k = lane; k < g; k += 32) a = qm::qmax(a, qm::f_abs(w[k]));
  const float m = qm::f_mul(warp_max(a), qm::clip_shrink(best, n_grid));  // all reads precede the writes
  for (int64_t k = lane; k < g; k += 32) w[k] = qm::qmin(qm::qmax(w[k], -m), m);
}

struct ClipShape {
  int64_t g, groups, steps, tstep, ns, row_tiles, blocks;
};

ClipShape clip_shape(const float* W, int64_t out, int64_t in, const float* X, int64_t n, const QuantParams& p,
                     int n_grid, float max_shrink) {
  check_quant_params(p, in);
  AWQ_CHECK_ARG(out > 0, "clip_search: out must be positive, got " + std::to_string(out));
  AWQ_CHECK_ARG(n >= 0, "clip_search: negative token count");
  AWQ_CHECK_ARG(n_grid >= 1, "nGrid must be positive");
  AWQ_CHECK_ARG(W != nullptr && (X != nullptr || n == 0), "clip_search: null device pointer");
  ClipShape s{};
  s.g = p.group;
  s.groups = in / s.g;
  s.steps = static_cast<int>(static_cast<double>(n_grid) * max_shrink);
  s.tstep = std::max<int64_t>(1, n / 512);  // every max(1, n // 512)-th token
  s.ns = (n + s.tstep - 1) / s.tstep;
  s.row_tiles = (out + kTileR - 1) / kTileR;
  s.blocks = s.row_tiles * s.groups * std::max<int64_t>(s.steps, 1);
  AWQ_CHECK_ARG(s.blocks <= INT_MAX, "clip_search: too many (row tile, group, step) blocks for one launch");
  return s;
}

// err (device, groups * steps * out doubles) for a shape with steps >= 1.
void run_clip_errors(const ClipShape& s, const float* W, int64_t out, int64_t in, const float* X,
                     const QuantParams& p, int n_grid, double* err) {
  clip_error_kernel<<<static_cast<unsigned>(s.blocks), kClipThreads>>>(
      W, out, in, X, s.ns, s.tstep, s.g, static_cast<int>(s.steps), n_grid, p.bits, p.zero_point, p.fp16_scale,
      s.row_tiles, err);
  AWQ_CUDA_LAUNCH_CHECK();
}

}  // namespace

ClipResult clip_search(float* W, int64_t out, int64_t in, const float* X, int64_t n, const QuantParams& p,
                       int n_grid, float max_shrink, double* flops) {
  const ClipShape s = clip_shape(W, out, in, X, n, p, n_grid, max_shrink);
  ClipResult res;
  res.histogram.assign(std::max<int64_t>(s.steps, 1), 0);
  if (s.steps <= 0) return res;
  Scratch err(s.groups * s.steps * out * sizeof(double), "the clip search's error table");
  Scratch best(out * s.groups * sizeof(int), "the clip search's choices");
  run_clip_errors(s, W, out, in, X, p, n_grid, err.as<double>());
  clip_apply_kernel<<<grid_for_warps(out * s.groups, 256), 256>>>(W, out, in, s.g, static_cast<int>(s.steps), n_grid,
                                                                   err.as<double>(), best.as<int>());
  AWQ_CUDA_LAUNCH_CHECK();
  std::vector<int> host(out * s.groups);
  AWQ_CUDA_CHECK(cudaMemcpy(host.data(), best.as<void>(), host.size() * sizeof(int), cudaMemcpyDeviceToHost));
  double shrink_sum = 0.0;
  for (int b : host) {  // (row, group) order, as the CPU sums
    if (b < 0 || b >= s.steps) throw Error(ErrorCode::Internal, "clip_search: step index out of range");
    res.histogram[b] += 1;
    shrink_sum += static_cast<double>(b) / n_grid;
  }
  res.mean_shrink = shrink_sum / static_cast<double>(out * s.groups);
  if (flops) *flops += 2.0 * s.steps * s.ns * out * in;
  return res;
}

namespace detail {

void clip_search_errors(const float* W, int64_t out, int64_t in, const float* X, int64_t n, const QuantParams& p,
                        int n_grid, float max_shrink, std::vector<double>& err_host) {
  const ClipShape s = clip_shape(W, out, in, X, n, p, n_grid, max_shrink);
  err_host.clear();
  if (s.steps <= 0) return;
  Scratch err(s.groups * s.steps * out * sizeof(double), "the clip search's error table");
  run_clip_errors(s, W, out, in, X, p, n_grid, err.as<double>());
  err_host.resize(s.groups * s.steps * out);
  AWQ_CUDA_CHECK(cudaMemcpy(err_host.data(), err.as<void>(), err_host.size() * sizeof(double), cudaMemcpyDeviceToHost));
}

}  // namespace detail
}  // namespace awq::cuda
