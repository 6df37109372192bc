// The decoder-layer forward on the GPU (cuda_layer_ops.h, "layer forward"): the device twins of
// awq::rms_norm, silu_mul, RopeTable, attention_core and decoder_layer_forward (forward.h) and
// of sum_sq_diff (vecmath.h), with the CPU's arithmetic up to summation order.
//
// Attention: one block per (block of BQ queries, head, sequence block); 4 threads per query.
// Keys and values stream through shared memory in tiles of 32 (the K tile, then the V tile in
// the same buffer); each thread scores 8 keys of a tile for its query, and the four threads of a
// query share the row maximum and sum by warp shuffles (online softmax: running max m, running
// sum l, accumulators rescaled by exp(m_old - m_new)). Each thread accumulates the output
// dimensions d = r, r + 4, ... of its query in registers (head_dim <= 4 * ACC). head_dim 64 and
// 128 (the common ones) take a register-tiled kernel instead (attention_tiled_kernel: 4 x 4
// micro-tiles of queries x keys, then of queries x dims), this one every other size.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "../core/errors.h"
#include "cuda_check.h"
#include "cuda_gemm.h"
#include "cuda_layer_ops.h"
#include "gemm_common.cuh"
#include "sgemm_internal.h"

namespace awq::cuda {
namespace {

using detail::GrowBuffer;

unsigned grid_for(int64_t n, int threads) {
  const int64_t blocks = (n + threads - 1) / threads;
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(blocks, int64_t{kern::sm_count()} * 32)));
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ double warp_sum(double v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, <= 1024); every thread gets the total.
template <typename T>
__device__ T block_sum(T v) {
  __shared__ T part[32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  v = warp_sum(v);
  __syncthreads();  // part[] may still be read by a previous call
  if (lane == 0) part[warp] = v;
  __syncthreads();
  T t = lane < warps ? part[lane] : T(0);
  return warp_sum(t);
}

// ---- elementwise and row kernels ----

__global__ void rms_norm_kernel(const float* x, int64_t cols, const float* __restrict__ w, float eps, float* y) {
  const int64_t row = blockIdx.x;
  const float* xr = x + row * cols;
  float* yr = y + row * cols;
  float ss = 0.f;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) ss = fmaf(xr[j], xr[j], ss);
  ss = block_sum(ss);
  const float r = 1.f / sqrtf(ss / static_cast<float>(cols) + eps);
  // In place (x == y) is fine: element j is read and written by the same thread only.
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) yr[j] = w[j] * (xr[j] * r);
}

__global__ void silu_mul_kernel(const float* __restrict__ gu, int64_t rows, int64_t I, float* __restrict__ d) {
  const int64_t total = rows * I;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = e / I, c = e % I;
    const float g = gu[r * 2 * I + c], u = gu[r * 2 * I + I + c];
    d[e] = g / (1.f + expf(-g)) * u;
  }
}

// y[i] = a[i] + b[i] (y may be a or b).
__global__ void add_kernel(const float* a, const float* b, int64_t n, float* y) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    y[i] = a[i] + b[i];
}

// first[0] = min index of a NaN/Inf (first[0] starts at ~0).
__global__ void find_nonfinite_kernel(const float* __restrict__ x, int64_t n, unsigned long long* first) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    if (!isfinite(x[i])) atomicMin(first, static_cast<unsigned long long>(i));
}

// Sum of squared differences: each thread sums 8 elements of a 2048-element run in fp32 and
// carries fp64 across runs; blocks reduce in fp64 into part[blockIdx.x] (a fixed grid, so the
// result does not depend on scheduling).
constexpr int kSsdThreads = 256, kSsdPer = 8, kSsdRun = kSsdThreads * kSsdPer, kSsdMaxBlocks = 1024;
__global__ void ssd_partial_kernel(const float* __restrict__ a, const float* __restrict__ b, int64_t n,
                                   double* __restrict__ part) {
  double t = 0.0;
  for (int64_t base = static_cast<int64_t>(blockIdx.x) * kSsdRun; base < n;
       base += static_cast<int64_t>(gridDim.x) * kSsdRun) {
    float s = 0.f;
#pragma unroll
    for (int k = 0; k < kSsdPer; ++k) {
      const int64_t i = base + k * kSsdThreads + threadIdx.x;
      if (i < n) {
        const float d = b ? a[i] - b[i] : a[i];
        s = fmaf(d, d, s);
      }
    }
    t += s;
  }
  t = block_sum(t);
  if (threadIdx.x == 0) part[blockIdx.x] = t;
}
__global__ void ssd_final_kernel(const double* __restrict__ part, int parts, double* acc) {
  double t = 0.0;
  for (int i = threadIdx.x; i < parts; i += blockDim.x) t += part[i];
  t = block_sum(t);
  if (threadIdx.x == 0) acc[0] += t;
}

// ---- attention ----

// q/k RMSNorm (when qn is given) and rotate_half RoPE in place on token blockIdx.x: one warp
// per head vector (heads q 0..nh-1, then k heads).
__global__ void norm_rope_kernel(float* qkv, int64_t ld, int S, int hd, int nh, int nkv, int64_t k_off,
                                 const float* __restrict__ cos_t, const float* __restrict__ sin_t,
                                 const float* __restrict__ qn, const float* __restrict__ kn, float eps) {
  const int64_t t = blockIdx.x;
  const int p = static_cast<int>(t % S), half = hd / 2;
  const int lane = threadIdx.x % 32, warps = blockDim.x / 32;
  const float* c = cos_t + static_cast<int64_t>(p) * half;
  const float* s = sin_t + static_cast<int64_t>(p) * half;
  for (int h = threadIdx.x / 32; h < nh + nkv; h += warps) {
    float* x = qkv + t * ld + (h < nh ? static_cast<int64_t>(h) * hd : k_off + static_cast<int64_t>(h - nh) * hd);
    const float* w = h < nh ? qn : kn;
    float r = 1.f;
    if (qn) {
      float ss = 0.f;
      for (int j = lane; j < hd; j += 32) ss = fmaf(x[j], x[j], ss);
      ss = warp_sum(ss);  // all lanes' reads of x precede every write below
      r = 1.f / sqrtf(ss / static_cast<float>(hd) + eps);
    }
    for (int i = lane; i < half; i += 32) {
      float x1 = x[i], x2 = x[i + half];
      if (qn) {
        x1 = w[i] * (x1 * r);
        x2 = w[i + half] * (x2 * r);
      }
      x[i] = x1 * c[i] - x2 * s[i];
      x[i + half] = x2 * c[i] + x1 * s[i];
    }
  }
}

constexpr int kKvTile = 32;             // keys per shared-memory tile
constexpr int kKeysPer = kKvTile / 4;   // keys scored per thread per tile

template <int BQ, int ACC>
constexpr size_t attention_smem_floats(int hd) {
  return static_cast<size_t>(BQ + kKvTile) * (hd + 1) + static_cast<size_t>(BQ) * (kKvTile + 1);
}

// Block (x = sequence block * qtiles + reversed query tile, y = head); 4 * BQ threads; thread
// (qi = tid / 4, r = tid % 4) owns query i0 + qi, keys r + 4c of each tile and output dims r + 4a.
template <int BQ, int ACC>
__global__ void __launch_bounds__(4 * BQ)
    attention_kernel(const float* __restrict__ qkv, int64_t ld, int S, int hd, int group, int64_t k_off,
                     int64_t v_off, int qtiles, float scale, float* __restrict__ attn, int64_t ld_out) {
  extern __shared__ float smem[];
  const int hs = hd + 1;  // odd row stride: rows of different queries / keys hit different banks
  float* Qs = smem;                       // [BQ][hs]
  float* KVs = Qs + BQ * hs;              // [kKvTile][hs]: the K tile, then the V tile
  float* Ps = KVs + kKvTile * hs;         // [BQ][kKvTile + 1] probabilities of the tile
  const int tid = threadIdx.x, qi = tid / 4, r = tid % 4, nthr = 4 * BQ;
  const int b = blockIdx.x / qtiles, tile = qtiles - 1 - blockIdx.x % qtiles;  // long rows first
  const int h = blockIdx.y, kvh = h / group;
  const int i0 = tile * BQ, my_pos = i0 + qi;
  const int kend = min(i0 + BQ, S);  // keys 0 .. kend-1 are visible to some query of the tile
  const float* base = qkv + static_cast<int64_t>(b) * S * ld;
  const float* qsrc = base + static_cast<int64_t>(h) * hd;
  const float* ksrc = base + k_off + static_cast<int64_t>(kvh) * hd;
  const float* vsrc = base + v_off + static_cast<int64_t>(kvh) * hd;

  for (int e = tid; e < BQ * hd; e += nthr) {
    const int q = e / hd, d = e % hd, pos = i0 + q;
    Qs[q * hs + d] = pos < S ? qsrc[static_cast<int64_t>(pos) * ld + d] : 0.f;
  }
  float m = -INFINITY, l = 0.f, acc[ACC];
#pragma unroll
  for (int a = 0; a < ACC; ++a) acc[a] = 0.f;

  for (int j0 = 0; j0 < kend; j0 += kKvTile) {
    __syncthreads();  // Qs stored; the previous tile's V and P are no longer read
    for (int e = tid; e < kKvTile * hd; e += nthr) {
      const int key = e / hd, d = e % hd, pos = j0 + key;
      KVs[key * hs + d] = pos < kend ? ksrc[static_cast<int64_t>(pos) * ld + d] : 0.f;
    }
    __syncthreads();
    float s[kKeysPer];
#pragma unroll
    for (int c = 0; c < kKeysPer; ++c) s[c] = 0.f;
    for (int d = 0; d < hd; ++d) {
      const float qv = Qs[qi * hs + d];
#pragma unroll
      for (int c = 0; c < kKeysPer; ++c) s[c] = fmaf(qv, KVs[(r + 4 * c) * hs + d], s[c]);
    }
    float tmax = -INFINITY;
#pragma unroll
    for (int c = 0; c < kKeysPer; ++c) {
      const int key = j0 + r + 4 * c;
      s[c] = key <= my_pos && key < kend ? scale * s[c] : -INFINITY;  // causal
      tmax = fmaxf(tmax, s[c]);
    }
    // The four threads of a query are lanes 4 qi' .. 4 qi' + 3 of one warp.
    tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, 1));
    tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, 2));
    // Key 0 is in the first tile and visible to every query, so m_new is finite from the first
    // tile on; corr = exp(-inf) = 0 there, 1 for a tile this query sees nothing of.
    const float m_new = fmaxf(m, tmax);
    const float corr = expf(m - m_new);
    float psum = 0.f;
#pragma unroll
    for (int c = 0; c < kKeysPer; ++c) {
      const float pr = expf(s[c] - m_new);
      Ps[qi * (kKvTile + 1) + r + 4 * c] = pr;
      psum += pr;
    }
    psum += __shfl_xor_sync(0xffffffffu, psum, 1);
    psum += __shfl_xor_sync(0xffffffffu, psum, 2);
    l = l * corr + psum;
    m = m_new;
    __syncthreads();  // every thread is done with the K tile (and Ps is complete)
    for (int e = tid; e < kKvTile * hd; e += nthr) {
      const int key = e / hd, d = e % hd, pos = j0 + key;
      KVs[key * hs + d] = pos < kend ? vsrc[static_cast<int64_t>(pos) * ld + d] : 0.f;  // zeros: 0 * V stays 0
    }
    __syncthreads();
#pragma unroll
    for (int a = 0; a < ACC; ++a) acc[a] *= corr;
    for (int key = 0; key < kKvTile; ++key) {
      const float pr = Ps[qi * (kKvTile + 1) + key];
#pragma unroll
      for (int a = 0; a < ACC; ++a) {
        const int d = r + 4 * a;
        if (d < hd) acc[a] = fmaf(pr, KVs[key * hs + d], acc[a]);
      }
    }
  }
  if (my_pos < S) {
    float* o = attn + (static_cast<int64_t>(b) * S + my_pos) * ld_out + static_cast<int64_t>(h) * hd;
#pragma unroll
    for (int a = 0; a < ACC; ++a) {
      const int d = r + 4 * a;
      if (d < hd) o[d] = acc[a] / l;
    }
  }
}

template <int BQ, int ACC>
void launch_attention(const float* qkv, int64_t ld, int S, int hd, int group, int64_t k_off, int64_t v_off,
                      int64_t blocks, int heads, float scale, float* attn, int64_t ld_out) {
  static std::once_flag once;
  const size_t max_bytes = attention_smem_floats<BQ, ACC>(4 * ACC) * sizeof(float);
  std::call_once(once, [&] {
    AWQ_CUDA_CHECK(cudaFuncSetAttribute(attention_kernel<BQ, ACC>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        static_cast<int>(max_bytes)));
  });
  const size_t bytes = attention_smem_floats<BQ, ACC>(hd) * sizeof(float);
  const int qtiles = (S + BQ - 1) / BQ;
  const int64_t gx = blocks * qtiles;
  AWQ_CHECK_ARG(gx <= INT32_MAX, "cuda attention: too many sequence blocks");
  dim3 grid(static_cast<unsigned>(gx), static_cast<unsigned>(heads));
  attention_kernel<BQ, ACC><<<grid, 4 * BQ, bytes>>>(qkv, ld, S, hd, group, k_off, v_off, qtiles, scale, attn, ld_out);
  AWQ_CUDA_CHECK(cudaGetLastError());
}

// ---- register-tiled attention for head_dim 64 and 128 ----
//
// The kernel above is shared-memory-load bound (9 loads per 8 FMAs in Q K^T, 1 per FMA in P V).
// This one tiles like a SIMT GEMM: block = (sequence block, reversed query tile of 64 queries,
// head), 256 threads as a 16 x 16 grid, ty = tid / 16 and tx = tid % 16, key tiles of 64.
//   scores  thread (ty, tx) owns queries 4 ty + r and keys 4 tx + c (r, c < 4). Q and K are
//           stored transposed ([d][query], [d][key]), so per d one float4 of each (2 shared
//           loads) feeds 16 FMAs. Within a warp the Q float4 is one of two addresses
//           (broadcast) and the K float4s are 64 contiguous floats: no bank conflicts.
//   softmax the 16 threads of a query row are one half-warp (lanes 16 (ty % 2) + tx), so the
//           row maximum is reduced with __shfl_xor_sync 1, 2, 4, 8. The running maximum m is
//           the same in all 16 threads, so each keeps a partial row sum scaled by the same
//           corr; the partial sums are added once at the end.
//   output  thread (ty, tx) accumulates queries 4 ty + r and dims 64 g + 4 tx + e (g < HD / 64,
//           e < 4): per key, one float4 of P per query row (P row-major, loaded 4 keys at a
//           time) and HD / 64 float4s of V (row-major) feed 4 * HD / 16 FMAs.
// K and V share one buffer (K tile, then V tile) so that a block stays under 100 KB and two
// blocks fit per SM: 85 KB for head_dim 128, 51 KB for 64.
constexpr int kTq = 64;         // queries per block
constexpr int kTk = 64;         // keys per shared-memory tile
constexpr int kTThreads = 256;  // 16 x 16 threads, 4 x 4 scores each
constexpr int kTs = 64 + 4;     // row stride of Q^T, K^T and P (rows of 64): rows 4 apart start 16
                                // banks apart (conflict-free transposing stores, and P's float4
                                // loads of a warp's two query groups 4 ty, 4 ty + 4 in one wavefront)

template <int HD>
constexpr size_t attention_tiled_smem_bytes() {
  return (2 * static_cast<size_t>(HD) * kTs + static_cast<size_t>(kTq) * kTs) * sizeof(float);
}

// Same arguments as attention_kernel, head_dim = HD. Requires qkv and attn 16-byte aligned (ld,
// k_off, v_off and ld_out are multiples of HD, hence of 4): float4 global loads and stores.
template <int HD>
__global__ void __launch_bounds__(kTThreads, 2)
    attention_tiled_kernel(const float* __restrict__ qkv, int64_t ld, int S, int group, int64_t k_off,
                           int64_t v_off, int qtiles, float scale, float* __restrict__ attn, int64_t ld_out) {
  static_assert(HD % 64 == 0 && kTq == 64 && kTk == 64 && kTThreads == 256, "the 16 x 16 x 4 layout");
  constexpr int G = HD / 64;  // float4 column groups of the output per thread
  extern __shared__ __align__(16) float tsmem[];
  float* Qt = tsmem;          // [HD][kTs]: Q transposed
  float* KV = Qt + HD * kTs;  // [HD][kTs]: K transposed, then [kTk][HD]: V
  float* Ps = KV + HD * kTs;  // [kTq][kTs]: probabilities of the tile
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  const int b = blockIdx.x / qtiles, tile = qtiles - 1 - blockIdx.x % qtiles;  // long rows first
  const int h = blockIdx.y, kvh = h / group;
  const int i0 = tile * kTq;
  const int kend = min(i0 + kTq, S);  // keys 0 .. kend-1 are visible to some query of the tile
  const int qrow = i0 + 4 * ty;       // this thread's first query (position in the block)
  const float* base = qkv + static_cast<int64_t>(b) * S * ld;
  const float* qsrc = base + static_cast<int64_t>(h) * HD;
  const float* ksrc = base + k_off + static_cast<int64_t>(kvh) * HD;
  const float* vsrc = base + v_off + static_cast<int64_t>(kvh) * HD;
  const float4 zero4 = make_float4(0.f, 0.f, 0.f, 0.f);

  // dst[d][row] = src[row0 + row][d] for 64 rows (zero at or past S). A warp reads the float4
  // chunks c4, c4 + 1 (one 32-byte sector) of 16 consecutive rows: lane e % 16 is the row within
  // the 16, (e / 16) % 2 the chunk; its stores to the rows 4 c4 + i of dst hit 32 distinct banks
  // (16 consecutive floats, and the same 16 floats of a row 4 below, which kTs puts 16 banks on).
  auto load_transposed = [&](float* dst, const float* src, int row0) {
#pragma unroll 4
    for (int it = 0; it < 64 * HD / 4 / kTThreads; ++it) {
      const int e = tid + it * kTThreads;
      const int row = e % 16 + 16 * (e / 32 % 4), c4 = 2 * (e / 128) + e / 16 % 2, pos = row0 + row;
      const float4 v = pos < S ? *reinterpret_cast<const float4*>(src + static_cast<int64_t>(pos) * ld + 4 * c4) : zero4;
      dst[(4 * c4 + 0) * kTs + row] = v.x;
      dst[(4 * c4 + 1) * kTs + row] = v.y;
      dst[(4 * c4 + 2) * kTs + row] = v.z;
      dst[(4 * c4 + 3) * kTs + row] = v.w;
    }
  };
  load_transposed(Qt, qsrc, i0);

  float m[4], l[4], acc[4][4 * G];
#pragma unroll
  for (int r = 0; r < 4; ++r) {
    m[r] = -INFINITY;
    l[r] = 0.f;
#pragma unroll
    for (int a = 0; a < 4 * G; ++a) acc[r][a] = 0.f;
  }

  for (int j0 = 0; j0 < kend; j0 += kTk) {  // key tiles past the tile's last query are skipped
    __syncthreads();  // Qt stored; the previous tile's V and P are no longer read
    load_transposed(KV, ksrc, j0);
    __syncthreads();

    float s[4][4];
#pragma unroll
    for (int r = 0; r < 4; ++r)
#pragma unroll
      for (int c = 0; c < 4; ++c) s[r][c] = 0.f;
#pragma unroll 8
    for (int d = 0; d < HD; ++d) {
      const float4 qv = *reinterpret_cast<const float4*>(Qt + d * kTs + 4 * ty);
      const float4 kv = *reinterpret_cast<const float4*>(KV + d * kTs + 4 * tx);
      const float qa[4] = {qv.x, qv.y, qv.z, qv.w}, ka[4] = {kv.x, kv.y, kv.z, kv.w};
#pragma unroll
      for (int r = 0; r < 4; ++r)
#pragma unroll
        for (int c = 0; c < 4; ++c) s[r][c] = fmaf(qa[r], ka[c], s[r][c]);
    }

    float corr[4];
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      // Causal: key j0 + 4 tx + c is visible to query qrow + r iff it is not later. Keys at or
      // past S are later than every real query; rows at or past S are not stored.
      float tmax = -INFINITY;
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        s[r][c] = j0 + 4 * tx + c <= qrow + r ? scale * s[r][c] : -INFINITY;
        tmax = fmaxf(tmax, s[r][c]);
      }
#pragma unroll
      for (int o = 1; o < 16; o <<= 1) tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, o));
      // Key 0 is in the first tile and visible to every query (padding rows included), so m_new
      // is finite from the first tile on; corr = exp(-inf) = 0 there (acc and l are still 0).
      // A row that sees no key of a later tile gets tmax = -inf: m_new = m, corr = 1, p = 0.
      const float m_new = fmaxf(m[r], tmax);
      corr[r] = expf(m[r] - m_new);
      float4 p;
      p.x = expf(s[r][0] - m_new);
      p.y = expf(s[r][1] - m_new);
      p.z = expf(s[r][2] - m_new);
      p.w = expf(s[r][3] - m_new);
      l[r] = l[r] * corr[r] + ((p.x + p.y) + (p.z + p.w));  // this thread's 4 keys of the row
      m[r] = m_new;
      *reinterpret_cast<float4*>(Ps + (4 * ty + r) * kTs + 4 * tx) = p;
    }
    __syncthreads();  // every thread is done with the K tile (and Ps is complete)
#pragma unroll 4
    for (int it = 0; it < kTk * HD / 4 / kTThreads; ++it) {
      const int e = tid + it * kTThreads, key = e / (HD / 4), c4 = e % (HD / 4), pos = j0 + key;
      // Zeros past S: their probabilities are 0 for real rows, and 0 * 0 stays 0 (stale shared
      // memory could hold NaN patterns).
      const float4 v = pos < S ? *reinterpret_cast<const float4*>(vsrc + static_cast<int64_t>(pos) * ld + 4 * c4) : zero4;
      *reinterpret_cast<float4*>(KV + key * HD + 4 * c4) = v;
    }
    __syncthreads();

#pragma unroll
    for (int r = 0; r < 4; ++r)
#pragma unroll
      for (int a = 0; a < 4 * G; ++a) acc[r][a] *= corr[r];
#pragma unroll 2
    for (int k4 = 0; k4 < kTk; k4 += 4) {
      float pa[4][4];
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        const float4 p = *reinterpret_cast<const float4*>(Ps + (4 * ty + r) * kTs + k4);
        pa[r][0] = p.x, pa[r][1] = p.y, pa[r][2] = p.z, pa[r][3] = p.w;
      }
#pragma unroll
      for (int c = 0; c < 4; ++c) {
#pragma unroll
        for (int g = 0; g < G; ++g) {
          const float4 v = *reinterpret_cast<const float4*>(KV + (k4 + c) * HD + 64 * g + 4 * tx);
#pragma unroll
          for (int r = 0; r < 4; ++r) {
            acc[r][4 * g + 0] = fmaf(pa[r][c], v.x, acc[r][4 * g + 0]);
            acc[r][4 * g + 1] = fmaf(pa[r][c], v.y, acc[r][4 * g + 1]);
            acc[r][4 * g + 2] = fmaf(pa[r][c], v.z, acc[r][4 * g + 2]);
            acc[r][4 * g + 3] = fmaf(pa[r][c], v.w, acc[r][4 * g + 3]);
          }
        }
      }
    }
  }

#pragma unroll
  for (int r = 0; r < 4; ++r) {
#pragma unroll
    for (int o = 1; o < 16; o <<= 1) l[r] += __shfl_xor_sync(0xffffffffu, l[r], o);  // the row's sum
  }
#pragma unroll
  for (int r = 0; r < 4; ++r) {
    const int pos = qrow + r;
    if (pos >= S) continue;
    float* out = attn + (static_cast<int64_t>(b) * S + pos) * ld_out + static_cast<int64_t>(h) * HD;
#pragma unroll
    for (int g = 0; g < G; ++g) {
      float4 v;
      v.x = acc[r][4 * g + 0] / l[r];
      v.y = acc[r][4 * g + 1] / l[r];
      v.z = acc[r][4 * g + 2] / l[r];
      v.w = acc[r][4 * g + 3] / l[r];
      *reinterpret_cast<float4*>(out + 64 * g + 4 * tx) = v;
    }
  }
}

template <int HD>
void launch_attention_tiled(const float* qkv, int64_t ld, int S, int group, int64_t k_off, int64_t v_off,
                            int64_t blocks, int heads, float scale, float* attn, int64_t ld_out) {
  static std::once_flag once;
  constexpr size_t bytes = attention_tiled_smem_bytes<HD>();
  std::call_once(once, [&] {
    AWQ_CUDA_CHECK(cudaFuncSetAttribute(attention_tiled_kernel<HD>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        static_cast<int>(bytes)));
  });
  const int qtiles = (S + kTq - 1) / kTq;
  const int64_t gx = blocks * qtiles;
  AWQ_CHECK_ARG(gx <= INT32_MAX, "cuda attention: too many sequence blocks");
  dim3 grid(static_cast<unsigned>(gx), static_cast<unsigned>(heads));
  attention_tiled_kernel<HD><<<grid, kTThreads, bytes>>>(qkv, ld, S, group, k_off, v_off, qtiles, scale, attn, ld_out);
  AWQ_CUDA_CHECK(cudaGetLastError());
}

// ---- scratch shared by calls ----

GrowBuffer g_ssd_part("sum_sq_diff partial sums");
GrowBuffer g_nonfinite("non-finite check");

// Index of the first NaN/Inf in device x[n], or -1. Synchronizes.
int64_t first_nonfinite(const float* x, int64_t n) {
  if (n <= 0) return -1;
  std::lock_guard<std::mutex> lock(g_nonfinite.mu);
  auto* first = static_cast<unsigned long long*>(g_nonfinite.get(sizeof(unsigned long long)));
  AWQ_CUDA_CHECK(cudaMemsetAsync(first, 0xFF, sizeof(unsigned long long)));
  find_nonfinite_kernel<<<grid_for(n, 256), 256>>>(x, n, first);
  AWQ_CUDA_CHECK(cudaGetLastError());
  unsigned long long h = 0;
  AWQ_CUDA_CHECK(cudaMemcpy(&h, first, sizeof h, cudaMemcpyDeviceToHost));
  return h == ~0ull ? -1 : static_cast<int64_t>(h);
}

// awq::check_finite's message for device data.
void check_finite_dev(const float* x, int64_t n, const char* name, int64_t cols) {
  const int64_t i = first_nonfinite(x, n);
  if (i < 0) return;
  float v = 0.f;
  copy_to_host(&v, x + i, sizeof v);
  const std::string where = cols > 0 ? "row " + std::to_string(i / cols) + ", column " + std::to_string(i % cols)
                                     : "index " + std::to_string(i);
  throw Error(ErrorCode::NonFinite,
              std::string(name) + ": value at " + where + " is " + (std::isnan(v) ? "NaN" : "Inf"));
}

// The shape rules attention_core needs (validate_layer's, plus this kernel's head_dim limit).
void check_heads(const LayerArch& a) {
  AWQ_CHECK_ARG(a.heads > 0 && a.kv_heads > 0 && a.head_dim > 0, "layer arch: sizes must be positive");
  AWQ_CHECK_ARG(a.head_dim % 2 == 0, "layer arch: headDim must be even for RoPE, got " + std::to_string(a.head_dim));
  AWQ_CHECK_ARG(a.heads % a.kv_heads == 0, "layer arch: numHeads " + std::to_string(a.heads) +
                                               " is not a multiple of numKvHeads " + std::to_string(a.kv_heads));
  AWQ_CHECK_ARG(a.head_dim <= 256, "cuda attention: headDim " + std::to_string(a.head_dim) + " is above 256");
  AWQ_CHECK_ARG(a.heads <= 65535, "cuda attention: too many heads");
}

// cudaMalloc with DeviceMemory's typed error (for the raw pointers of DeviceRope).
float* device_alloc(size_t bytes, const char* what) {
  void* p = nullptr;
  const cudaError_t err = cudaMalloc(&p, bytes);
  if (err != cudaSuccess) {
    cudaGetLastError();
    throw Error(err == cudaErrorMemoryAllocation ? ErrorCode::OutOfMemory : ErrorCode::Cuda,
                std::string("CUDA: could not allocate ") + std::to_string(bytes) + " bytes for " + what + ": " +
                    cudaGetErrorString(err));
  }
  return static_cast<float*>(p);
}

}  // namespace

// ---- public functions ----

void rms_norm(const float* x, int64_t rows, int64_t cols, const float* w, float eps, float* y) {
  AWQ_CHECK_ARG(rows >= 0 && cols > 0 && rows <= INT32_MAX, "cuda rms_norm: bad shape");
  if (rows == 0) return;
  AWQ_CHECK_ARG(x && w && y, "cuda rms_norm: null pointer");
  rms_norm_kernel<<<static_cast<unsigned>(rows), 256>>>(x, cols, w, eps, y);
  AWQ_CUDA_CHECK(cudaGetLastError());
}

void silu_mul(const float* gu, int64_t rows, int64_t I, float* d) {
  AWQ_CHECK_ARG(rows >= 0 && I > 0, "cuda silu_mul: bad shape");
  if (rows == 0) return;
  silu_mul_kernel<<<grid_for(rows * I, 256), 256>>>(gu, rows, I, d);
  AWQ_CUDA_CHECK(cudaGetLastError());
}

DeviceRope::DeviceRope(const float* inv_freq_host, int64_t half_, int64_t seqlen_) : seqlen(seqlen_), half(half_) {
  AWQ_CHECK_ARG(inv_freq_host && half_ > 0 && seqlen_ > 0, "DeviceRope: inv_freq, half and seqlen are required");
  RopeTable t(inv_freq_host, half_, seqlen_);  // the CPU table, bit for bit
  host_cos = std::move(t.cos);
  host_sin = std::move(t.sin);
  const size_t bytes = host_cos.size() * sizeof(float);
  cos = device_alloc(bytes, "RoPE cos table");
  try {
    sin = device_alloc(bytes, "RoPE sin table");
    copy_to_device(cos, host_cos.data(), bytes);
    copy_to_device(sin, host_sin.data(), bytes);
  } catch (...) {  // the destructor does not run for a constructor that throws
    cudaFree(cos);
    if (sin) cudaFree(sin);
    throw;
  }
}

DeviceRope::~DeviceRope() {
  if (cos) cudaFree(cos);
  if (sin) cudaFree(sin);
}

double attention_core(const LayerArch& a, float* qkv, int64_t T, int64_t seqlen, const DeviceRope& rope,
                      const float* q_norm, const float* k_norm, float* attn) {
  check_heads(a);
  AWQ_CHECK_ARG(seqlen > 0 && T >= 0 && T % seqlen == 0 && T <= INT32_MAX,
                "cuda attention: T (" + std::to_string(T) + ") must be a multiple of seqlen (" +
                    std::to_string(seqlen) + ")");
  AWQ_CHECK_ARG(rope.half == a.head_dim / 2 && rope.seqlen >= seqlen && rope.cos && rope.sin,
                "cuda attention: the RoPE table does not match headDim / seqlen");
  AWQ_CHECK_ARG((q_norm == nullptr) == (k_norm == nullptr), "cuda attention: q_norm and k_norm go together");
  const int64_t hd = a.head_dim, nh = a.heads, nkv = a.kv_heads, ld = a.qkv_out();
  const int64_t blocks = T / seqlen;
  double flops = 0.0;  // awq::attention_core's count (its 64-row tiles), so the totals agree
  constexpr int64_t kTile = 64;
  for (int64_t i0 = 0; i0 < seqlen; i0 += kTile)
    flops += 4.0 * std::min(kTile, seqlen - i0) * std::min(seqlen, i0 + kTile) * hd;
  flops *= static_cast<double>(blocks * nh);
  if (T == 0) return 0.0;
  AWQ_CHECK_ARG(qkv && attn, "cuda attention: null pointer");

  norm_rope_kernel<<<static_cast<unsigned>(T), 128>>>(qkv, ld, static_cast<int>(seqlen), static_cast<int>(hd),
                                                      static_cast<int>(nh), static_cast<int>(nkv), a.q_out(), rope.cos,
                                                      rope.sin, q_norm, k_norm, a.eps);
  AWQ_CUDA_CHECK(cudaGetLastError());

  const float scale = 1.f / std::sqrt(static_cast<float>(hd));
  const int S = static_cast<int>(seqlen), h = static_cast<int>(hd), group = static_cast<int>(nh / nkv);
  const int64_t k_off = a.q_out(), v_off = a.q_out() + a.kv_out();
  // The register-tiled kernel for head_dim 64 and 128 (float4 accesses: 16-byte aligned
  // pointers; ld, the offsets and q_out are multiples of head_dim); the general one otherwise.
  const bool aligned = (reinterpret_cast<uintptr_t>(qkv) | reinterpret_cast<uintptr_t>(attn)) % 16 == 0;
  if (aligned && hd == 64)
    launch_attention_tiled<64>(qkv, ld, S, group, k_off, v_off, blocks, static_cast<int>(nh), scale, attn, a.q_out());
  else if (aligned && hd == 128)
    launch_attention_tiled<128>(qkv, ld, S, group, k_off, v_off, blocks, static_cast<int>(nh), scale, attn, a.q_out());
  else if (hd <= 64)
    launch_attention<64, 16>(qkv, ld, S, h, group, k_off, v_off, blocks, static_cast<int>(nh), scale, attn, a.q_out());
  else if (hd <= 128)
    launch_attention<64, 32>(qkv, ld, S, h, group, k_off, v_off, blocks, static_cast<int>(nh), scale, attn, a.q_out());
  else
    launch_attention<32, 64>(qkv, ld, S, h, group, k_off, v_off, blocks, static_cast<int>(nh), scale, attn, a.q_out());
  return flops;
}

void sum_sq_diff_acc(const float* a, const float* b, int64_t n, double* acc) {
  AWQ_CHECK_ARG(n >= 0 && acc, "cuda sum_sq_diff: bad arguments");
  if (n == 0) return;
  const int parts = static_cast<int>(std::min<int64_t>(kSsdMaxBlocks, (n + kSsdRun - 1) / kSsdRun));
  std::lock_guard<std::mutex> lock(g_ssd_part.mu);
  auto* part = static_cast<double*>(g_ssd_part.get(kSsdMaxBlocks * sizeof(double)));
  ssd_partial_kernel<<<parts, kSsdThreads>>>(a, b, n, part);
  AWQ_CUDA_CHECK(cudaGetLastError());
  ssd_final_kernel<<<1, 256>>>(part, parts, acc);
  AWQ_CUDA_CHECK(cudaGetLastError());
}

namespace {

// Scratch of the layer forward, grow-only across calls, and the RoPE table of the last call.
struct ForwardScratch {
  std::mutex mu;
  GrowBuffer xn{"forward: normed input"}, qkv{"forward: q|k|v"}, att{"forward: attention"},
      tmp{"forward: module output"}, gu{"forward: gate|up"}, act{"forward: down input"}, w_qkv{"forward: q|k|v weights"},
      w_gu{"forward: gate|up weights"}, w_o{"forward: o_proj weights"}, w_down{"forward: down_proj weights"},
      b_qkv{"forward: q|k|v bias"};
  std::vector<float> rope_inv;
  std::unique_ptr<DeviceRope> rope;
};
// Never destroyed: a static made inside a job would be destroyed at exit before the addon's exit
// handler has waited for the running jobs (job_runner.cc), under a forward still using it.
ForwardScratch& forward_scratch() {
  static ForwardScratch* s = new ForwardScratch();
  return *s;
}

// A linear's weight as the forward uses it: fp32 (w32) or rounded to bf16/fp16 (w16).
struct Lin {
  const float* w32 = nullptr;
  const void* w16 = nullptr;
};

void run_linear(const float* x, int64_t T, int64_t in, const Lin& L, int64_t out, const float* bias, float* y,
                Precision p) {
  if (detail::lowp_linear(p, in)) detail::linear_lowp(x, T, in, L.w16, out, bias, y, p);
  else detail::sgemm_bias(Trans::N, Trans::T, T, out, in, 1.f, x, in, L.w32, in, 0.f, y, out, bias);
}

// Rows of several [r_i, cols] device matrices into dst, fp32 (lowp = F32) or rounded.
void concat_rows_dev(std::initializer_list<std::pair<const float*, int64_t>> parts, int64_t cols, void* dst,
                     Precision lowp) {
  char* d = static_cast<char*>(dst);
  const size_t esize = lowp == Precision::F32 ? 4 : 2;
  for (const auto& [src, rows] : parts) {
    const int64_t n = rows * cols;
    if (lowp != Precision::F32) detail::round_to_lowp(src, n, d, lowp);
    else if (src) AWQ_CUDA_CHECK(cudaMemcpyAsync(d, src, n * 4, cudaMemcpyDeviceToDevice));
    else AWQ_CUDA_CHECK(cudaMemsetAsync(d, 0, n * 4));  // a missing bias: zeros
    d += n * esize;
  }
}

}  // namespace

void decoder_layer_forward(const LayerArch& a, const LayerWeights& w, const float* hidden, int64_t tokens,
                           int64_t seqlen, float* out, const LayerRecord* rec, Precision p, double* flops) {
  AWQ_CHECK_ARG(seqlen > 0 && tokens > 0 && tokens % seqlen == 0,
                "decoder layer: tokens (" + std::to_string(tokens) + ") must be a positive multiple of seqlen (" +
                    std::to_string(seqlen) + ")");
  AWQ_CHECK_ARG(a.hidden > 0 && a.intermediate > 0, "layer arch: sizes must be positive");
  check_heads(a);
  AWQ_CHECK_ARG(a.eps > 0.f, "layer arch: rmsNormEps must be positive");
  AWQ_CHECK_ARG(a.inv_freq != nullptr, "layer arch: ropeInvFreq missing");
  AWQ_CHECK_ARG(w.input_norm && w.post_norm && w.q && w.k && w.v && w.o && w.gate && w.up && w.down,
                "layer weights: a required tensor is missing");
  AWQ_CHECK_ARG(!a.qk_norm || (w.q_norm && w.k_norm), "layer weights: qkNorm needs qNorm and kNorm");
  AWQ_CHECK_ARG(p == Precision::F32 || p == Precision::BF16 || p == Precision::F16, "decoder layer: unknown precision");
  AWQ_CHECK_ARG(hidden && out, "decoder layer: hidden and out are required");
  const int64_t H = a.hidden, I = a.intermediate, QKV = a.qkv_out(), QO = a.q_out(), KV = a.kv_out();
  check_finite_dev(hidden, tokens * H, "hidden states", H);

  ForwardScratch& S = forward_scratch();
  std::lock_guard<std::mutex> lock(S.mu);
  // RoPE table (a.inv_freq is HOST memory, as in LayerArch everywhere): rebuilt when it changes.
  const int64_t half = a.head_dim / 2;
  if (!S.rope || S.rope->seqlen != seqlen || S.rope->half != half ||
      std::memcmp(S.rope_inv.data(), a.inv_freq, half * sizeof(float)) != 0) {
    S.rope.reset();
    S.rope = std::make_unique<DeviceRope>(a.inv_freq, half, seqlen);
    S.rope_inv.assign(a.inv_freq, a.inv_freq + half);
  }

  // Weights: q|k|v and gate|up concatenated once per call, rounded when those linears run on
  // tensor cores (o and down too); fp32 linears read o and down in place.
  const Precision ph = detail::lowp_linear(p, H) ? p : Precision::F32;
  const size_t wsz_h = ph == Precision::F32 ? 4 : 2;
  Lin qkv_w, gu_w, o_w, down_w;
  void* wq = S.w_qkv.get(static_cast<size_t>(QKV * H) * wsz_h);
  concat_rows_dev({{w.q, QO}, {w.k, KV}, {w.v, KV}}, H, wq, ph);
  void* wg = S.w_gu.get(static_cast<size_t>(2 * I * H) * wsz_h);
  concat_rows_dev({{w.gate, I}, {w.up, I}}, H, wg, ph);
  if (ph == Precision::F32) {
    qkv_w.w32 = static_cast<const float*>(wq);
    gu_w.w32 = static_cast<const float*>(wg);
  } else {
    qkv_w.w16 = wq;
    gu_w.w16 = wg;
  }
  if (detail::lowp_linear(p, QO)) {
    void* d = S.w_o.get(static_cast<size_t>(H * QO) * 2);
    detail::round_to_lowp(w.o, H * QO, d, p);
    o_w.w16 = d;
  } else {
    o_w.w32 = w.o;
  }
  if (detail::lowp_linear(p, I)) {
    void* d = S.w_down.get(static_cast<size_t>(H * I) * 2);
    detail::round_to_lowp(w.down, H * I, d, p);
    down_w.w16 = d;
  } else {
    down_w.w32 = w.down;
  }
  const float* b_qkv = nullptr;
  if (w.q_bias || w.k_bias || w.v_bias) {
    void* d = S.b_qkv.get(static_cast<size_t>(QKV) * 4);
    concat_rows_dev({{w.q_bias, QO}, {w.k_bias, KV}, {w.v_bias, KV}}, 1, d, Precision::F32);
    b_qkv = static_cast<const float*>(d);
  }

  const int64_t C = chunk_tokens(seqlen, tokens);
  auto buf = [](GrowBuffer& g, int64_t floats) { return static_cast<float*>(g.get(static_cast<size_t>(floats) * 4)); };
  float* xn = buf(S.xn, C * H);
  float* qkv = buf(S.qkv, C * QKV);
  float* att = buf(S.att, C * QO);
  float* tmp = buf(S.tmp, C * H);
  float* gu = buf(S.gu, C * 2 * I);
  float* act = buf(S.act, C * I);
  const float* qn = a.qk_norm ? w.q_norm : nullptr;
  const float* kn = a.qk_norm ? w.k_norm : nullptr;
  double f = 0.0;
  for (int64_t t0 = 0; t0 < tokens; t0 += C) {
    const int64_t T = std::min(C, tokens - t0);
    const float* x = hidden + t0 * H;
    float* y = out + t0 * H;
    float* n1 = rec && rec->x_attn ? rec->x_attn + t0 * H : xn;
    rms_norm(x, T, H, w.input_norm, a.eps, n1);
    run_linear(n1, T, H, qkv_w, QKV, b_qkv, qkv, p);
    float* ao = rec && rec->x_o ? rec->x_o + t0 * QO : att;
    f += attention_core(a, qkv, T, seqlen, *S.rope, qn, kn, ao);
    float* attn_out = rec && rec->attn_out ? rec->attn_out + t0 * H : tmp;
    run_linear(ao, T, QO, o_w, H, w.o_bias, attn_out, p);
    add_kernel<<<grid_for(T * H, 256), 256>>>(x, attn_out, T * H, y);  // the residual stream h
    AWQ_CUDA_CHECK(cudaGetLastError());
    float* n2 = rec && rec->x_mlp ? rec->x_mlp + t0 * H : xn;
    rms_norm(y, T, H, w.post_norm, a.eps, n2);
    run_linear(n2, T, H, gu_w, 2 * I, nullptr, gu, p);
    float* d = rec && rec->x_down ? rec->x_down + t0 * I : act;
    silu_mul(gu, T, I, d);
    float* m = rec && rec->mlp_out ? rec->mlp_out + t0 * H : tmp;
    run_linear(d, T, I, down_w, H, nullptr, m, p);
    add_kernel<<<grid_for(T * H, 256), 256>>>(y, m, T * H, y);
    AWQ_CUDA_CHECK(cudaGetLastError());
    f += 2.0 * T * H * (QKV + QO + 3.0 * I);
  }
  check_finite_dev(out, tokens * H, "decoder layer output", H);
  if (flops) *flops += f;
}

}  // namespace awq::cuda
