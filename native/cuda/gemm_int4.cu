// W4A16 GEMM on the AWQ format: repack once (host), then two kernels.
//
// Layout (cuda_gemm.h, Int4Layout): for each 8 output columns and 128 inputs, 512 bytes that
// one warp reads with one coalesced 16-byte load per lane; lane (g, t) gets the weights of
// column g for k = 32t .. 32t+31 of the chunk. Word j (k = 32t + 8j .. +7) dequantizes to the B
// registers of two mma.m16n8k16 steps under the k-permutation of gemm_common.cuh (here applied
// with the lane owning 8 consecutive k of its own 32), and the matching A registers are one
// 16-byte load of x at the same 8 k per row.
//
// Skinny (M <= 16, decode): a warp streams TILES column tiles over every WARPS-th chunk of
// 128 k through a cp.async ring, WARPS warps per block split k; the mma computes y^T = W x^T
// with a pair of weight tiles as its A rows and x rows 0..7 (8..15) as its B columns, loaded
// straight from global memory (x is tiny and stays in L1/L2); partial sums are reduced through
// shared memory. Dequantization is 9 integer/half2 instructions per 8 weights (the scale is
// applied to each chunk's fp32 sums where the group allows), and the multiply-adds run on the
// tensor cores: an fp32-FMA GEMV needs ~4.5 instructions per weight, more than an H100 can
// issue while reading weights at full bandwidth (6.7e12 weights/s at 3.35 TB/s). The kernel is
// bound by instruction issue as much as by memory (ncu on an H200: 2.5 instructions per weight
// at 75% of the copy bandwidth), so its loop keeps everything per-chunk out of the way.
//
// Tiled (any M): x tiles go to shared memory with cp.async (two stages, swizzled so the lanes'
// 16-byte reads are conflict-free), weights go straight to registers one chunk ahead, and
// three tile shapes cover small, medium and large M.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <mutex>
#include <string>
#include <type_traits>
#include <vector>

#include "../core/errors.h"
#include "cuda_check.h"
#include "cuda_gemm.h"
#include "gemm_common.cuh"
#include "gemm_tile.cuh"

namespace awq::cuda {
namespace {

using namespace kern;

constexpr int kAwqNibbleOf[8] = {0, 4, 1, 5, 2, 6, 3, 7};  // value v of an AutoAWQ word is in nibble kAwqNibbleOf[v]

// fp16 bits of a small non-negative integer (zero points 0..15).
uint16_t small_int_to_fp16(int v) {
  if (v == 0) return 0;
  int e = 0;
  while ((v >> (e + 1)) != 0) ++e;
  const int mant = (v - (1 << e)) << (10 - e);
  return static_cast<uint16_t>(((e + 15) << 10) | mant);
}

double fp16_bits_to_double(uint16_t h) {
  const int e = (h >> 10) & 31, m = h & 1023;
  const double sign = (h & 0x8000) ? -1.0 : 1.0;
  if (e == 0) return sign * m * (1.0 / (1 << 24));
  if (e == 31) return m ? std::numeric_limits<double>::quiet_NaN() : sign * std::numeric_limits<double>::infinity();
  return sign * (1024 + m) * std::ldexp(1.0, e - 25);
}

// ---------------------------------------------------------------------------------------------
// Skinny kernel (M <= 16)
//
// TILES 8-column tiles per warp (taken in pairs as the mma's 16 A rows), WARPS warps per block
// splitting k (chunk c goes to warp c % WARPS); x rows 0..7 are the mma's B columns, and M16 runs
// a second mma per A for rows 8..15. Each warp streams its weights (and their scale/zero words) through a private ring of
// STAGES buffers in shared memory filled by cp.async, STAGES - 1 chunks ahead: a weight-streaming
// kernel is as fast as the bytes it keeps in flight per SM, and copies in flight cost no
// registers. Every lane reads back only the slots it copied itself, so the ring needs no barrier,
// only cp.async.wait_group. x (tiny, L1/L2 resident) is loaded into registers one chunk ahead.
//
// The loop is issue-bound before it is memory-bound (an H200 profile of the first version: 71% of
// issue slots busy at ~5 instructions per weight, of which the dequantization is 1.6), so
// everything that does not change from chunk to chunk is computed once: the tiles' global
// addresses (tiles past N read the last tile again: their sums are never stored, so the loop
// needs no predicate), the shared-memory slot addresses, the x row pointer, and the group of a
// chunk by a shift when the group size is a power of two (no integer division per chunk).

template <int TILES>
struct SkinnyStage {
  uint4 w[TILES * 32];
  uint32_t sz[TILES * 32];
};

// Group of the 32 k that lane t reads in chunk c (k past K only in the last chunk's zero padding,
// which any group's scale turns into 0 * x = 0; clamped to the last group).
__device__ __forceinline__ int skinny_group(int c, int t, int gshift, int group, int G) {
  const int k = c * 128 + 32 * t;
  return min(gshift >= 0 ? k >> gshift : k / group, G - 1);
}

template <int TILES, int WARPS, int STAGES>
constexpr int skinny_smem_bytes() {
  return WARPS * STAGES * static_cast<int>(sizeof(SkinnyStage<TILES>));
}

// Blocks per SM the registers must allow: M <= 8 three 8-warp blocks (at most 85 registers; the
// weight stream needs the warps in flight), M16 two (128 registers: it spills at 85; left free,
// the compiler takes 156-168 and one block per SM ran 1.4x slower). Eight tiles per warp (a
// candidate for M16, where each chunk's x loads, 4 KiB per warp from L1/L2, outweigh its 2.5 KiB
// of weights at four tiles) need more registers than two blocks allow and take one block per SM.
template <int TILES, int WARPS, int STAGES, bool M16, bool FOLD, typename OutT>
__global__ void __launch_bounds__(32 * WARPS, TILES == 8 ? 1 : M16 ? 16 / WARPS : 24 / WARPS)
    int4_skinny_kernel(const uint4* __restrict__ wq, const uint32_t* __restrict__ sz, const float* __restrict__ bias,
                       const __half* __restrict__ x, OutT* __restrict__ y, int M, int N, int K, int chunks,
                       int group, int gshift) {
  static_assert(TILES % 2 == 0, "tiles go to the mma in pairs");
  constexpr int PAIRS = TILES / 2;
  constexpr int R = M16 ? 8 : 4;  // accumulator values per lane and tile pair
  constexpr uint32_t kStage = sizeof(SkinnyStage<TILES>);
  extern __shared__ uint4 skinny_smem[];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int NB = N / 8, G = K / group;
  const int nb0 = blockIdx.x * TILES;
  // A decode step is a chain of these calls, each too short to hide its own start and drain:
  // the next call's blocks may start (on sm_90, launched with launch_kernel's attribute) and
  // fetch their first weights while this grid finishes; they wait for it before reading x.
  pdl_launch_dependents();

  // The next chunk to copy (cn, from warp on in steps of WARPS) and this lane's weight unit of it
  // in each tile: pointers carried from chunk to chunk (tiles past N clamped to the last tile).
  int cn = warp;
  const uint4* wn[TILES];
#pragma unroll
  for (int j = 0; j < TILES; ++j) wn[j] = wq + (static_cast<size_t>(min(nb0 + j, NB - 1)) * chunks + cn) * 32 + lane;
  // this lane's (scale, zero) word of tile j in group 0; group gi is gi * N words on
  const uint32_t* szt = sz + min(nb0, NB - 1) * 8 + g;
  int sz_tile[TILES];  // word offset of tile j from tile 0 (clamped like wn)
#pragma unroll
  for (int j = 0; j < TILES; ++j) sz_tile[j] = (min(nb0 + j, NB - 1) - min(nb0, NB - 1)) * 8;
  // shared-space addresses of this lane's slots in stage 0 of this warp's ring
  const uint32_t ring0 = static_cast<uint32_t>(__cvta_generic_to_shared(skinny_smem)) + warp * STAGES * kStage;
  uint32_t w_slot0 = ring0 + lane * 16, sz_slot0 = ring0 + TILES * 32 * 16 + lane * 4;
  const auto* ring = reinterpret_cast<const SkinnyStage<TILES>*>(skinny_smem) + warp * STAGES;
  // Opaque to the optimizer: otherwise it recomputes these from the kernel arguments in the loop
  // (64-bit multiplies per tile and chunk) instead of keeping them in registers.
#pragma unroll
  for (int j = 0; j < TILES; ++j) {
    asm volatile("" : "+l"(wn[j]));
    asm volatile("" : "+r"(sz_tile[j]));
  }
  asm volatile("" : "+l"(szt));
  asm volatile("" : "+r"(w_slot0), "+r"(sz_slot0));

  // copies chunk cn into ring slot `slot`, then moves cn (and the pointers) on by WARPS chunks
  auto issue = [&](uint32_t slot) {
    if (cn < chunks) {  // warp-uniform
      const uint32_t* szg = szt + static_cast<size_t>(skinny_group(cn, t, gshift, group, G)) * N;
#pragma unroll
      for (int j = 0; j < TILES; ++j) {
        cp_async16_s(w_slot0 + slot * kStage + j * 512, wn[j]);
        cp_async4_s(sz_slot0 + slot * kStage + j * 128, szg + sz_tile[j]);
      }
    }
    cp_async_commit();  // always, so that the group count stays in step with the chunks
#pragma unroll
    for (int j = 0; j < TILES; ++j) wn[j] += WARPS * 32;
    cn += WARPS;
  };
  float acc[PAIRS][R];
#pragma unroll
  for (int p = 0; p < PAIRS; ++p)
#pragma unroll
    for (int r = 0; r < R; ++r) acc[p][r] = 0.f;

  // The weights never change, so their first chunks are fetched before waiting for the previous
  // kernel; x may be its output, so x is read only after the wait.
#pragma unroll
  for (int s = 0; s < STAGES - 1; ++s) issue(s);
  pdl_wait_primary();

  // x rows g and g + 8 at this lane's 32 k of chunk cx, loaded one chunk ahead; cx and the row
  // pointers move on by WARPS chunks per load. A lane whose row is past M reads row 0 instead:
  // its row is an output column that is never stored. Zeros only past K (the last chunk's zero
  // padding dequantizes to -z s, which must meet x = 0). The pointers come out of the opaque asm
  // below, which stays after the wait (both are volatile), so no x load can move above it.
  int cx = warp;
  const uint4* xlo = reinterpret_cast<const uint4*>(x + static_cast<size_t>(g < M ? g : 0) * K + cx * 128 + 32 * t);
  const uint4* xhi = reinterpret_cast<const uint4*>(x + static_cast<size_t>(M16 && g + 8 < M ? g + 8 : 0) * K + cx * 128 + 32 * t);
  asm volatile("" : "+l"(xlo));
  asm volatile("" : "+l"(xhi));
  auto load_x = [&](uint4 (&xl)[4], uint4 (&xh)[4]) {
    const bool in = cx * 128 + 32 * t < K;  // this lane's 32 k are all in the row or all out (K % 32 == 0)
#pragma unroll
    for (int w = 0; w < 4; ++w) {
      xl[w] = in ? ld_global16(xlo + w) : make_uint4(0, 0, 0, 0);
      xh[w] = M16 && in ? ld_global16(xhi + w) : make_uint4(0, 0, 0, 0);
    }
    xlo += WARPS * 16;  // 128 halves per chunk
    xhi += WARPS * 16;
    cx += WARPS;
  };

  uint4 xl[4], xh[4], xl_next[4], xh_next[4];
  load_x(xl, xh);
  int s = 0;
  for (int c = warp; c < chunks; c += WARPS) {
    cp_async_wait<STAGES - 2>();  // this lane's copies of chunk c have landed
    issue(s == 0 ? STAGES - 1 : s - 1);  // chunk c + (STAGES - 1) WARPS, into the slot chunk c - WARPS used
    load_x(xl_next, xh_next);           // chunk c + WARPS
    const SkinnyStage<TILES>& st = ring[s];
    // The mma computes y^T = W x^T: A (16 x 16) is a pair of tiles, columns g of tiles j and
    // j + 1 as its rows g and g + 8 (the lane's own dequantized words), and B (16 x 8) is x with
    // its rows as B's columns (row g: the lane's own x load, two consecutive registers of it per
    // mma, so no register is moved or zeroed to build an operand). The lane's k slots map to its
    // own 32 k of the chunk as in gemm_common.cuh: word w gives k pairs (0,1) (2,3) to one mma and
    // (4,5) (6,7) to the next. C[n][m]: c0, c1 = column g of tile j for x rows 2t, 2t + 1; c2, c3
    // the same for tile j + 1 (M16: c4..c7 for x rows 8 + 2t, 8 + 2t + 1).
#pragma unroll
    for (int p = 0; p < PAIRS; ++p) {
      const uint32_t sz0 = st.sz[2 * p * 32 + lane], sz1 = st.sz[(2 * p + 1) * 32 + lane];
      const Int4Dq d0 = int4_dq(sz0), d1 = int4_dq(sz1);
      const uint4 w0 = st.w[2 * p * 32 + lane], w1 = st.w[(2 * p + 1) * 32 + lane];
      // FOLD: the chunk is one group, so its fp32 sums of (q - z) x are scaled once per column
      // (the lane's own scales: its rows of C are its own weight columns) instead of every
      // weight being scaled in fp16 before the product.
      float part[R];
      float* c = FOLD ? part : acc[p];
      if constexpr (FOLD) {
#pragma unroll
        for (int r = 0; r < R; ++r) part[r] = 0.f;
      }
#pragma unroll
      for (int w = 0; w < 4; ++w) {
        uint32_t a0[4], a1[4];
        if constexpr (FOLD) {
          int4_unpack8(word_at(w0, w), d0, a0);
          int4_unpack8(word_at(w1, w), d1, a1);
        } else {
          int4_dequant8(word_at(w0, w), d0, a0);
          int4_dequant8(word_at(w1, w), d1, a1);
        }
        MmaOp<__half>::run(c, a0[0], a1[0], a0[1], a1[1], xl[w].x, xl[w].y);
        MmaOp<__half>::run(c, a0[2], a1[2], a0[3], a1[3], xl[w].z, xl[w].w);
        if constexpr (M16) {
          MmaOp<__half>::run(c + 4, a0[0], a1[0], a0[1], a1[1], xh[w].x, xh[w].y);
          MmaOp<__half>::run(c + 4, a0[2], a1[2], a0[3], a1[3], xh[w].z, xh[w].w);
        }
      }
      if constexpr (FOLD) {
        const float s0 = __low2float(bits_h2(sz0)), s1 = __low2float(bits_h2(sz1));
#pragma unroll
        for (int r = 0; r < R; ++r) acc[p][r] = fmaf(part[r], (r & 2) ? s1 : s0, acc[p][r]);
      }
    }
#pragma unroll
    for (int w = 0; w < 4; ++w) {
      xl[w] = xl_next[w];
      xh[w] = xh_next[w];
    }
    s = s == STAGES - 1 ? 0 : s + 1;
  }
  cp_async_wait<0>();  // no copy may still target shared memory when the block exits

  // acc[p][r]: output column 8 (nb0 + 2p + (r & 2 ? 1 : 0)) + g, x row 2t + (r & 1) + (r & 4 ? 8 : 0);
  // the ring is reused for the cross-warp reduction once every warp is done with it.
  static_assert(WARPS * PAIRS * 32 * R * 4 <= WARPS * STAGES * sizeof(SkinnyStage<TILES>), "reduction fits");
  __syncthreads();
  float* red = reinterpret_cast<float*>(skinny_smem);  // [WARPS][PAIRS * 32 * R]
#pragma unroll
  for (int p = 0; p < PAIRS; ++p)
#pragma unroll
    for (int r = 0; r < R; ++r) red[(warp * PAIRS * 32 + p * 32 + lane) * R + r] = acc[p][r];
  __syncthreads();
  for (int e = threadIdx.x; e < PAIRS * 32 * R; e += 32 * WARPS) {
    const int p = e / (32 * R), l = (e / R) % 32, r = e % R;
    const int row = 2 * (l & 3) + (r & 1) + ((r & 4) ? 8 : 0);
    const int nb = nb0 + 2 * p + ((r & 2) ? 1 : 0), col = nb * 8 + (l >> 2);
    if (row >= M || nb >= NB) continue;
    float v = 0.f;
#pragma unroll
    for (int w = 0; w < WARPS; ++w) v += red[w * PAIRS * 32 * R + e];
    y[static_cast<size_t>(row) * N + col] = to_out<OutT>(v + (bias ? bias[col] : 0.f));
  }
}

// ---------------------------------------------------------------------------------------------
// Tiled kernel

// Position of 16-byte unit u (0..15) of a 128-k row segment in shared memory: lanes t = 0..3
// read units 4t + j, and rows g, g + 1 are read in the same phase; the xor spreads those 8
// reads over the 8 distinct 16-byte bank groups.
__device__ __forceinline__ int swz16(int u, int row) { return u ^ ((u >> 2) & 2) ^ (row & 1); }

template <class S, typename OutT>
__global__ void __launch_bounds__(S::kThreads)
    int4_tiled_kernel(const uint4* __restrict__ wq, const uint32_t* __restrict__ sz, const float* __restrict__ bias,
                      const __half* __restrict__ x, OutT* __restrict__ y, int M, int N, int K, int chunks,
                      int group) {
  constexpr int KS = 128 * S::WARPS_K;  // k per stage
  constexpr int kRowUnits = KS / 8;
  constexpr int kStageUnits = S::BM * kRowUnits;
  static_assert(S::kReduceBytes <= 2 * kStageUnits * 16, "reduction fits in the operand buffers");
  extern __shared__ uint4 smem[];  // two stages of x tiles

  const WarpRole r = warp_role<S>();
  const int NB = N / 8, G = K / group;
  const int m0 = blockIdx.y * S::BM;
  const int nb_warp = blockIdx.x * (S::WN * S::WARPS_N) + r.wn * S::WN;
  const int n_stages = (chunks + S::WARPS_K - 1) / S::WARPS_K;

  auto load_x = [&](int st, int buf) {
    uint4* dst = smem + buf * kStageUnits;
    const int kbase = st * KS;
    for (int u = threadIdx.x; u < kStageUnits; u += S::kThreads) {
      const int row = u / kRowUnits, cu = u % kRowUnits;
      const int gm = m0 + row, gk = kbase + cu * 8;
      const bool ok = gm < M && gk < K;
      const __half* src = ok ? x + static_cast<size_t>(gm) * K + gk : x;
      cp_async16(dst + row * kRowUnits + (cu & ~15) + swz16(cu & 15, row), src, ok ? 16 : 0);
    }
  };
  auto load_w = [&](int c, uint4 (&w)[S::WN], uint32_t (&s)[S::WN]) {
    const int grp = min((c * 128 + 32 * r.t) / group, G - 1);
#pragma unroll
    for (int j = 0; j < S::WN; ++j) {
      const int nb = nb_warp + j;
      if (c < chunks && nb < NB) {
        w[j] = __ldg(wq + (static_cast<size_t>(nb) * chunks + c) * 32 + r.lane);
        s[j] = __ldg(sz + static_cast<size_t>(grp) * N + nb * 8 + r.g);
      } else {
        w[j] = make_uint4(0, 0, 0, 0);
        s[j] = 0;
      }
    }
  };

  float acc[S::WM][S::WN][4];
#pragma unroll
  for (int i = 0; i < S::WM; ++i)
#pragma unroll
    for (int j = 0; j < S::WN; ++j) acc[i][j][0] = acc[i][j][1] = acc[i][j][2] = acc[i][j][3] = 0.f;

  uint4 wcur[S::WN], wnext[S::WN];
  uint32_t scur[S::WN], snext[S::WN];
  load_x(0, 0);
  cp_async_commit();
  load_w(r.wk, wcur, scur);

  for (int st = 0; st < n_stages; ++st) {
    const int c = st * S::WARPS_K + r.wk;
    if (st + 1 < n_stages) load_w(c + S::WARPS_K, wnext, snext);
    cp_async_wait<0>();
    __syncthreads();  // stage st is in shared memory; everyone is done reading stage st - 1
    if (st + 1 < n_stages) load_x(st + 1, (st + 1) & 1);
    cp_async_commit();
    if (c < chunks) {
      const uint4* xs = smem + (st & 1) * kStageUnits;
      Int4Dq d[S::WN];
#pragma unroll
      for (int j = 0; j < S::WN; ++j) d[j] = int4_dq(scur[j]);
#pragma unroll
      for (int w = 0; w < 4; ++w) {
        uint4 alo[S::WM], ahi[S::WM];
#pragma unroll
        for (int i = 0; i < S::WM; ++i) {
          const int r0 = r.wm * S::WM * 16 + i * 16 + r.g, r1 = r0 + 8;
          alo[i] = xs[r0 * kRowUnits + r.wk * 16 + swz16(4 * r.t + w, r0)];
          ahi[i] = xs[r1 * kRowUnits + r.wk * 16 + swz16(4 * r.t + w, r1)];
        }
#pragma unroll
        for (int j = 0; j < S::WN; ++j) {
          uint32_t b[4];
          int4_dequant8(word_at(wcur[j], w), d[j], b);
#pragma unroll
          for (int i = 0; i < S::WM; ++i) {
            MmaOp<__half>::run(acc[i][j], alo[i].x, ahi[i].x, alo[i].y, ahi[i].y, b[0], b[1]);
            MmaOp<__half>::run(acc[i][j], alo[i].z, ahi[i].z, alo[i].w, ahi[i].w, b[2], b[3]);
          }
        }
      }
    }
    if (st + 1 < n_stages) {
#pragma unroll
      for (int j = 0; j < S::WN; ++j) {
        wcur[j] = wnext[j];
        scur[j] = snext[j];
      }
    }
  }
  cp_async_wait<0>();
  __syncthreads();  // the reduction below reuses the x buffers
  store_tile<S, OutT>(acc, reinterpret_cast<float*>(smem), r, m0 + r.wm * S::WM * 16, nb_warp * 8, M, N, bias, y);
}

// ---------------------------------------------------------------------------------------------
// Dequantization into fp16 W[N, K] (for DequantDense): one warp per (8 columns, 128 k) tile; lane
// (g, t) writes column 8 nb + g at k = 128 c + 32 t + 8 j .. + 7 as one 16-byte store per word j
// (int4_dequant8 yields the pairs in k order).
__global__ void __launch_bounds__(256)
    int4_dequant_kernel(const uint4* __restrict__ wq, const uint32_t* __restrict__ sz, __half* __restrict__ W,
                        int N, int K, int chunks, int group) {
  const int lane = threadIdx.x & 31;
  const int64_t tile = static_cast<int64_t>(blockIdx.x) * 8 + (threadIdx.x >> 5);
  const int NB = N / 8;
  if (tile >= static_cast<int64_t>(NB) * chunks) return;
  const int nb = static_cast<int>(tile / chunks), c = static_cast<int>(tile % chunks);
  const int g = lane >> 2, t = lane & 3, n = nb * 8 + g;
  const int k0 = c * 128 + 32 * t;
  if (k0 >= K) return;  // the zero padding of the last chunk (K % 32 == 0)
  const Int4Dq d = int4_dq(sz[static_cast<size_t>(k0 / group) * N + n]);
  const uint4 wv = wq[static_cast<size_t>(tile) * 32 + lane];
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    uint32_t b[4];
    int4_dequant8(word_at(wv, j), d, b);
    *reinterpret_cast<uint4*>(W + static_cast<size_t>(n) * K + k0 + 8 * j) = make_uint4(b[0], b[1], b[2], b[3]);
  }
}

using TileSmall = TileShape<1, 4, 1, 1, 8>;   // 16 x 32, k split over 8 warps
using TileMedium = TileShape<2, 4, 2, 2, 2>;  // 64 x 64
using TileLarge = TileShape<4, 4, 2, 4, 1>;   // 128 x 128

template <class S>
constexpr int tiled_smem_bytes() {
  return 2 * S::BM * (128 * S::WARPS_K / 8) * 16;
}

template <class S, typename OutT>
void launch_tiled(const Int4DeviceWeights& w, const __half* x, int M, OutT* y, cudaStream_t stream) {
  constexpr int smem = tiled_smem_bytes<S>();
  static std::once_flag once;
  std::call_once(once, [] {
    AWQ_CUDA_CHECK(cudaFuncSetAttribute(int4_tiled_kernel<S, OutT>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  });
  const Int4Layout& L = w.layout;
  const int N = static_cast<int>(L.N);
  dim3 grid(static_cast<unsigned>((N + S::BN - 1) / S::BN), static_cast<unsigned>((M + S::BM - 1) / S::BM));
  int4_tiled_kernel<S, OutT><<<grid, S::kThreads, smem, stream>>>(
      static_cast<const uint4*>(w.q.get()), static_cast<const uint32_t*>(w.sz.get()),
      static_cast<const float*>(w.bias.get()), x, y, M, N, static_cast<int>(L.K), static_cast<int>(L.chunks),
      static_cast<int>(L.group));
  AWQ_CUDA_CHECK(cudaGetLastError());
}

SkinnyConfig g_forced_skinny{};

// Tiles per warp, warps per block and ring stages for a shape, from sweeps of every configuration
// on an H200 (awq_cuda_bench): two stages throughout (deeper rings cost more in blocks per SM
// than they gain in bytes in flight); four tiles per warp once that still gives every SM a block
// (M <= 8), and always for M > 8, where x rows 8..15 double the x loads that the extra tiles
// share (two-tile blocks ran 1.5-2x slower there); k split over 8 warps, or for M > 8 over 4
// where K has only 32 chunks and the grid covers the GPU 2.5 times over (4096 x 11008: 1.25x).
SkinnyConfig skinny_config(const Int4Layout& L, int M) {
  if (g_forced_skinny.tiles > 0) return g_forced_skinny;
  const int64_t NB = L.N / 8;
  const int tiles = M > 8 || (NB + 3) / 4 >= sm_count() ? 4 : 2;
  const int64_t blocks = (NB + tiles - 1) / tiles;
  const int warps = M > 8 && L.chunks <= 32 && 2 * blocks >= 5 * sm_count() ? 4 : 8;
  // the scale fold pays at M <= 8 (up to 1.1x); with M16's second accumulator set its registers
  // cost more than the fp16 multiplies it saves (1.03x slower). Programmatic dependent launch
  // where the device has it (launch_kernel).
  return {tiles, warps, 2, M > 8, false};
}

template <int TILES, int WARPS, int STAGES, bool M16, bool FOLD, typename OutT>
void launch_skinny_kernel(const Int4DeviceWeights& w, const __half* x, int M, OutT* y, cudaStream_t stream, bool pdl) {
  constexpr int smem = skinny_smem_bytes<TILES, WARPS, STAGES>();
  auto kernel = int4_skinny_kernel<TILES, WARPS, STAGES, M16, FOLD, OutT>;
  static std::once_flag once;
  static bool has_wait = false;  // the code the device runs holds griddepcontrol (built for sm_90+)
  std::call_once(once, [&] {
    AWQ_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    cudaFuncAttributes fa{};
    AWQ_CUDA_CHECK(cudaFuncGetAttributes(&fa, kernel));
    has_wait = fa.ptxVersion >= 90;
  });
  // Not on the legacy default stream (its implicit synchronization with other streams is not
  // specified together with PDL, and the addon's calls there each wait for their result anyway),
  // and not with code built without sm_90, whose kernel would not wait for x.
  pdl = pdl && has_wait && stream != nullptr;
  const Int4Layout& L = w.layout;
  const int NB = static_cast<int>(L.N / 8);
  dim3 grid(static_cast<unsigned>((NB + TILES - 1) / TILES));
  const int group = static_cast<int>(L.group);
  const int gshift = (group & (group - 1)) == 0 ? __builtin_ctz(static_cast<unsigned>(group)) : -1;
  launch_kernel(kernel, grid, dim3(32 * WARPS), smem, stream, pdl, static_cast<const uint4*>(w.q.get()),
                static_cast<const uint32_t*>(w.sz.get()), static_cast<const float*>(w.bias.get()), x, y, M,
                static_cast<int>(L.N), static_cast<int>(L.K), static_cast<int>(L.chunks), group, gshift);
}

// The scale fold needs one group per 128-k chunk (group size a multiple of 128).
template <int TILES, int WARPS, int STAGES, typename OutT>
void launch_skinny_cfg(const Int4DeviceWeights& w, const __half* x, int M, OutT* y, cudaStream_t stream, bool fold,
                       bool pdl) {
  fold = fold && w.layout.group % 128 == 0;
  if (M > 8) {
    if (fold) launch_skinny_kernel<TILES, WARPS, STAGES, true, true, OutT>(w, x, M, y, stream, pdl);
    else launch_skinny_kernel<TILES, WARPS, STAGES, true, false, OutT>(w, x, M, y, stream, pdl);
  } else {
    if (fold) launch_skinny_kernel<TILES, WARPS, STAGES, false, true, OutT>(w, x, M, y, stream, pdl);
    else launch_skinny_kernel<TILES, WARPS, STAGES, false, false, OutT>(w, x, M, y, stream, pdl);
  }
}

template <int TILES, int WARPS, typename OutT>
void launch_skinny_stages(const SkinnyConfig& c, const Int4DeviceWeights& w, const __half* x, int M, OutT* y,
                          cudaStream_t stream) {
  if (c.stages == 2) launch_skinny_cfg<TILES, WARPS, 2, OutT>(w, x, M, y, stream, !c.no_fold, !c.no_pdl);
  else launch_skinny_cfg<TILES, WARPS, 4, OutT>(w, x, M, y, stream, !c.no_fold, !c.no_pdl);
}

template <typename OutT>
void launch_skinny(const Int4DeviceWeights& w, const __half* x, int M, OutT* y, cudaStream_t stream) {
  const SkinnyConfig c = skinny_config(w.layout, M);
  if (c.tiles == 8) launch_skinny_cfg<8, 8, 2, OutT>(w, x, M, y, stream, !c.no_fold, !c.no_pdl);  // 8 warps, 2 stages
  else if (c.tiles == 2 && c.warps == 4) launch_skinny_stages<2, 4, OutT>(c, w, x, M, y, stream);
  else if (c.tiles == 2) launch_skinny_stages<2, 8, OutT>(c, w, x, M, y, stream);
  else if (c.warps == 4) launch_skinny_stages<4, 4, OutT>(c, w, x, M, y, stream);
  else launch_skinny_stages<4, 8, OutT>(c, w, x, M, y, stream);
}

template <typename OutT>
void launch_dequant_dense(const Int4DeviceWeights& w, const __half* x, int M, OutT* y, cudaStream_t stream) {
  const Int4Layout& L = w.layout;
  const size_t bytes = static_cast<size_t>(L.N) * static_cast<size_t>(L.K) * sizeof(__half);
  void* W = nullptr;
  // Stream-ordered where the device has memory pools; plain cudaMalloc / cudaFree where it does not.
  bool pooled = true;
  cudaError_t err = cudaMallocAsync(&W, bytes, stream);
  if (err == cudaErrorNotSupported) {
    cudaGetLastError();
    pooled = false;
    err = cudaMalloc(&W, bytes);
  }
  const auto release = [&] { return pooled ? cudaFreeAsync(W, stream) : cudaFree(W); };
  if (err != cudaSuccess) {
    cudaGetLastError();
    throw Error(err == cudaErrorMemoryAllocation ? ErrorCode::OutOfMemory : ErrorCode::Cuda,
                "cuda int4_gemm: no room for the dequantized weights (" + std::to_string(bytes >> 20) +
                    " MiB of fp16 scratch): " + cudaGetErrorString(err));
  }
  try {
    const int64_t tiles = (L.N / 8) * L.chunks;
    int4_dequant_kernel<<<static_cast<unsigned>((tiles + 7) / 8), 256, 0, stream>>>(
        static_cast<const uint4*>(w.q.get()), static_cast<const uint32_t*>(w.sz.get()), static_cast<__half*>(W),
        static_cast<int>(L.N), static_cast<int>(L.K), static_cast<int>(L.chunks), static_cast<int>(L.group));
    AWQ_CUDA_CHECK(cudaGetLastError());
    dense_gemm(x, W, Dtype::F16, M, L.N, L.K, y, std::is_same_v<OutT, float> ? Dtype::F32 : Dtype::F16,
               static_cast<const float*>(w.bias.get()), stream);
  } catch (...) {
    release();
    cudaGetLastError();
    throw;
  }
  AWQ_CUDA_CHECK(release());
}

template <typename OutT>
void dispatch(const Int4DeviceWeights& w, const __half* x, int M, OutT* y, cudaStream_t stream, Int4Kernel kernel) {
  if (kernel == Int4Kernel::Auto)
    kernel = M <= kSkinnyMaxM ? Int4Kernel::Skinny : M < kDequantDenseMinM ? Int4Kernel::Tiled : Int4Kernel::DequantDense;
  if (kernel == Int4Kernel::DequantDense) return launch_dequant_dense<OutT>(w, x, M, y, stream);
  if (kernel == Int4Kernel::Tiled) {
    const int64_t N = w.layout.N;
    const int64_t large_blocks =
        ((M + TileLarge::BM - 1) / TileLarge::BM) * ((N + TileLarge::BN - 1) / TileLarge::BN);
    kernel = M <= 16 ? Int4Kernel::Tiled16 : large_blocks >= sm_count() ? Int4Kernel::Tiled128 : Int4Kernel::Tiled64;
  }
  switch (kernel) {
    case Int4Kernel::Skinny: return launch_skinny<OutT>(w, x, M, y, stream);
    case Int4Kernel::Tiled16: return launch_tiled<TileSmall, OutT>(w, x, M, y, stream);
    case Int4Kernel::Tiled64: return launch_tiled<TileMedium, OutT>(w, x, M, y, stream);
    default: return launch_tiled<TileLarge, OutT>(w, x, M, y, stream);
  }
}

}  // namespace

Int4Layout int4_repack_host(const int32_t* qweight, const int32_t* qzeros, const uint16_t* scales_fp16,
                            int64_t K, int64_t N, int64_t group, std::vector<uint32_t>& q,
                            std::vector<uint32_t>& sz) {
  if (group <= 0) group = K;
  AWQ_CHECK_ARG(K > 0 && N > 0, "cuda int4: K and N must be positive, got K = " + std::to_string(K) +
                                    ", N = " + std::to_string(N));
  AWQ_CHECK_ARG(K % 32 == 0, "cuda int4: K must be a multiple of 32, got " + std::to_string(K));
  AWQ_CHECK_ARG(N % 8 == 0, "cuda int4: N must be a multiple of 8, got " + std::to_string(N));
  AWQ_CHECK_ARG(group % 32 == 0 && K % group == 0,
                "cuda int4: group size must be a multiple of 32 that divides K = " + std::to_string(K) + ", got " +
                    std::to_string(group));
  AWQ_CHECK_ARG(K <= (int64_t{1} << 30) && N <= (int64_t{1} << 30), "cuda int4: K and N must be below 2^30");
  AWQ_CHECK_ARG(qweight && qzeros && scales_fp16, "cuda int4: qweight, qzeros and scales are required");
  Int4Layout L;
  L.K = K;
  L.N = N;
  L.group = group;
  L.chunks = (K + 127) / 128;
  const int64_t cols = N / 8, G = K / group;
  sz.assign(static_cast<size_t>(G * N), 0);
  for (int64_t gi = 0; gi < G; ++gi)
    for (int64_t n = 0; n < N; ++n) {
      const uint16_t s = scales_fp16[gi * N + n];
      if ((s & 0x7C00) == 0x7C00)
        throw Error(ErrorCode::NonFinite, "cuda int4: scales[" + std::to_string(gi) + ", " + std::to_string(n) +
                                              "] is " + std::to_string(fp16_bits_to_double(s)));
      const uint32_t word = static_cast<uint32_t>(qzeros[gi * cols + n / 8]);
      const int z = static_cast<int>((word >> (4 * kAwqNibbleOf[n % 8])) & 15);
      sz[gi * N + n] = static_cast<uint32_t>(s) | (static_cast<uint32_t>(small_int_to_fp16(z)) << 16);
    }
  q.assign(static_cast<size_t>(cols * L.chunks * 128), 0);
  for (int64_t k = 0; k < K; ++k) {
    const int64_t c = k / 128, rem = k % 128, t = rem / 32, j = (rem % 32) / 8, i = rem % 8;
    const int shift = 4 * static_cast<int>((i >> 1) + 4 * (i & 1));
    for (int64_t nb = 0; nb < cols; ++nb) {
      const uint32_t word = static_cast<uint32_t>(qweight[k * cols + nb]);
      uint32_t* tile = q.data() + ((nb * L.chunks + c) * 32) * 4;
      for (int g = 0; g < 8; ++g) {
        const uint32_t v = (word >> (4 * kAwqNibbleOf[g])) & 15;
        tile[(g * 4 + t) * 4 + j] |= v << shift;
      }
    }
  }
  return L;
}

Int4DeviceWeights int4_upload_awq(const int32_t* qweight, const int32_t* qzeros, const uint16_t* scales_fp16,
                                  const uint16_t* bias_fp16, int64_t K, int64_t N, int64_t group) {
  std::vector<uint32_t> q, sz;
  Int4DeviceWeights w;
  w.layout = int4_repack_host(qweight, qzeros, scales_fp16, K, N, group, q, sz);
  std::vector<float> bias;
  if (bias_fp16) {
    bias.resize(static_cast<size_t>(N));
    for (int64_t n = 0; n < N; ++n) {
      const double b = fp16_bits_to_double(bias_fp16[n]);
      if (!std::isfinite(b)) throw Error(ErrorCode::NonFinite, "cuda int4: bias[" + std::to_string(n) + "] is not finite");
      bias[n] = static_cast<float>(b);
    }
  }
  w.q = DeviceMemory(q.size() * 4, "int4 weights (qweight)");
  w.sz = DeviceMemory(sz.size() * 4, "int4 scales and zeros");
  copy_to_device(w.q.get(), q.data(), q.size() * 4);
  copy_to_device(w.sz.get(), sz.data(), sz.size() * 4);
  if (!bias.empty()) {
    w.bias = DeviceMemory(bias.size() * 4, "int4 bias");
    copy_to_device(w.bias.get(), bias.data(), bias.size() * 4);
  }
  return w;
}

void int4_gemm(const Int4DeviceWeights& w, const void* x, int64_t M, void* y, Dtype y_type, void* stream,
               Int4Kernel kernel) {
  const Int4Layout& L = w.layout;
  AWQ_CHECK_ARG(L.K > 0 && L.N > 0 && w.q.get() && w.sz.get(), "cuda int4_gemm: weights are not uploaded");
  AWQ_CHECK_ARG(M >= 0 && M <= 1000000, "cuda int4_gemm: M must be in 0..1000000, got " + std::to_string(M));
  AWQ_CHECK_ARG(y_type == Dtype::F16 || y_type == Dtype::F32, "cuda int4_gemm: y must be F16 or F32");
  AWQ_CHECK_ARG(static_cast<int>(kernel) >= 0 && static_cast<int>(kernel) <= 6, "cuda int4_gemm: unknown kernel");
  AWQ_CHECK_ARG(kernel != Int4Kernel::Skinny || M <= kSkinnyMaxM,
                "cuda int4_gemm: the skinny kernel needs M <= 16, got " + std::to_string(M));
  if (M == 0) return;
  AWQ_CHECK_ARG(x && y, "cuda int4_gemm: x and y are required");
  AWQ_CHECK_ARG(reinterpret_cast<uintptr_t>(x) % 16 == 0, "cuda int4_gemm: x must be 16-byte aligned");
  const auto* xh = static_cast<const __half*>(x);
  const auto s = static_cast<cudaStream_t>(stream);
  const int m = static_cast<int>(M);
  if (y_type == Dtype::F16) dispatch<__half>(w, xh, m, static_cast<__half*>(y), s, kernel);
  else dispatch<float>(w, xh, m, static_cast<float*>(y), s, kernel);
}

bool int4_pdl_in_use() { return pdl_supported() && !g_pdl_refused.load(std::memory_order_relaxed); }

void int4_force_skinny_config(const SkinnyConfig& c) {
  const bool automatic = c.tiles == 0 && c.warps == 0 && c.stages == 0 && !c.no_fold && !c.no_pdl;
  AWQ_CHECK_ARG(automatic || ((c.tiles == 2 || c.tiles == 4) && (c.warps == 4 || c.warps == 8) &&
                              (c.stages == 2 || c.stages == 4)) ||
                    (c.tiles == 8 && c.warps == 8 && c.stages == 2),
                "int4_force_skinny_config: tiles must be 2 or 4, warps 4 or 8, stages 2 or 4, or tiles 8 with 8 warps "
                "and 2 stages (or all 0)");
  g_forced_skinny = c;
}

}  // namespace awq::cuda
