// Dense fp16/bf16 GEMM on tensor cores: C[M,N] = A[M,K] * B[N,K]^T (+ bias), fp32 accumulation.
// A and B tiles stream through shared memory with cp.async (a multi-stage ring: the load of
// stage st + STAGES - 1 overlaps the math of stage st). Two kernel families:
//   - dense_kernel (TileShape warps, optional split-K over warps; each lane reads its fragments
//     with 16-byte loads under the k-permutation of gemm_common.cuh): 16 x 32 with k split over
//     8 warps (decode-sized M: enough blocks and bytes in flight to stream B at memory
//     bandwidth), 64 x 64, and 128 x 128 with 64 x 32 warp tiles;
//   - dense_big_kernel for large products (2x the 128 x 128 dense_kernel on an H200): 64 x 64
//     warp tiles (each fragment feeds 8 (A) or 4 (B) mma: half the shared-memory reads per mma of
//     a 64 x 32 tile), ldmatrix fragments double-buffered per 16-wide k step with the stage
//     barrier placed before the last step (see there), an xor-swizzled shared layout, a grouped
//     block order (blocks running together share rows of A and of B in L2) and paired C stores.
// All accumulate in fp32 in k order; results differ between families (and from split-K) only in
// how the products are grouped inside an mma and across warps.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <string>

#include "../core/errors.h"
#include "cuda_check.h"
#include "cuda_gemm.h"
#include "gemm_common.cuh"
#include "gemm_tile.cuh"

namespace awq::cuda {
namespace {

using namespace kern;

template <class S_, int STAGES_>
struct DenseCfg {
  using S = S_;
  static constexpr int STAGES = STAGES_;
  static constexpr int KS = 32 * S::WARPS_K;      // k per stage
  static constexpr int kRowUnits = KS / 8;        // 16-byte units per row of a stage
  static constexpr int kStageUnits = (S::BM + S::BN) * kRowUnits;
  static constexpr int kSmemBytes = STAGES * kStageUnits * 16;
  static_assert(S::kReduceBytes <= kSmemBytes, "reduction fits in the operand buffers");
};

// Unit u of a row (lane t of k-slice wk reads unit 4 wk + t). With one k-slice a row is 4 units
// (64 bytes) and rows g, g + 1 fall in different bank groups; with more, rows are a multiple of
// 128 bytes and the slice index is xor-ed with the row parity to keep them apart.
template <int WARPS_K>
__device__ __forceinline__ int dense_swz(int u, int row) {
  if constexpr (WARPS_K == 1) return u;
  else return (((u >> 2) ^ (row & 1)) << 2) | (u & 3);
}

template <typename T, class C, typename OutT>
__global__ void __launch_bounds__(C::S::kThreads)
    dense_kernel(const T* __restrict__ A, const T* __restrict__ B, const float* __restrict__ bias,
                 OutT* __restrict__ Cout, int M, int N, int K) {
  using S = typename C::S;
  static_assert(S::WARPS_K == 1 || S::WARPS_K % 2 == 0, "swizzle needs an even number of k-slices");
  extern __shared__ uint4 smem[];
  const WarpRole r = warp_role<S>();
  const int m0 = blockIdx.y * S::BM, n0 = blockIdx.x * S::BN;
  const int n_stages = (K + C::KS - 1) / C::KS;

  auto load = [&](int st, int buf) {
    uint4* dst = smem + buf * C::kStageUnits;
    const int kbase = st * C::KS;
    for (int u = threadIdx.x; u < C::kStageUnits; u += S::kThreads) {
      const int row = u / C::kRowUnits, cu = u % C::kRowUnits;
      const int gk = kbase + cu * 8;  // K % 8 == 0: a unit is all inside or all outside
      const T* src = A;
      bool ok;
      if (row < S::BM) {
        ok = m0 + row < M && gk < K;
        if (ok) src = A + static_cast<size_t>(m0 + row) * K + gk;
      } else {
        ok = n0 + row - S::BM < N && gk < K;
        if (ok) src = B + static_cast<size_t>(n0 + row - S::BM) * K + gk;
      }
      cp_async16(dst + row * C::kRowUnits + dense_swz<S::WARPS_K>(cu, row), src, ok ? 16 : 0);
    }
  };

  float acc[S::WM][S::WN][4];
#pragma unroll
  for (int i = 0; i < S::WM; ++i)
#pragma unroll
    for (int j = 0; j < S::WN; ++j) acc[i][j][0] = acc[i][j][1] = acc[i][j][2] = acc[i][j][3] = 0.f;

#pragma unroll
  for (int s = 0; s < C::STAGES - 1; ++s) {
    if (s < n_stages) load(s, s);
    cp_async_commit();
  }
  for (int st = 0; st < n_stages; ++st) {
    cp_async_wait<C::STAGES - 2>();
    __syncthreads();  // stage st landed; all warps are done with the buffer refilled below
    const int pre = st + C::STAGES - 1;
    if (pre < n_stages) load(pre, pre % C::STAGES);
    cp_async_commit();

    const uint4* as = smem + (st % C::STAGES) * C::kStageUnits;
    const uint4* bs = as + S::BM * C::kRowUnits;
    const int u = 4 * r.wk + r.t;
    uint4 alo[S::WM], ahi[S::WM], bq[S::WN];
#pragma unroll
    for (int i = 0; i < S::WM; ++i) {
      const int r0 = r.wm * S::WM * 16 + i * 16 + r.g, r1 = r0 + 8;
      alo[i] = as[r0 * C::kRowUnits + dense_swz<S::WARPS_K>(u, r0)];
      ahi[i] = as[r1 * C::kRowUnits + dense_swz<S::WARPS_K>(u, r1)];
    }
#pragma unroll
    for (int j = 0; j < S::WN; ++j) {
      const int rn = r.wn * S::WN * 8 + j * 8 + r.g;  // row S::BM + rn of the stage
      bq[j] = bs[rn * C::kRowUnits + dense_swz<S::WARPS_K>(u, S::BM + rn)];
    }
#pragma unroll
    for (int i = 0; i < S::WM; ++i)
#pragma unroll
      for (int j = 0; j < S::WN; ++j)
        MmaOp<T>::run(acc[i][j], alo[i].x, ahi[i].x, alo[i].y, ahi[i].y, bq[j].x, bq[j].y);
#pragma unroll
    for (int i = 0; i < S::WM; ++i)
#pragma unroll
      for (int j = 0; j < S::WN; ++j)
        MmaOp<T>::run(acc[i][j], alo[i].z, ahi[i].z, alo[i].w, ahi[i].w, bq[j].z, bq[j].w);
  }
  cp_async_wait<0>();
  __syncthreads();  // the reduction reuses the operand buffers
  store_tile<S, OutT>(acc, reinterpret_cast<float*>(smem), r, m0 + r.wm * S::WM * 16, n0 + r.wn * S::WN * 8, M, N,
                      bias, Cout);
}

using DenseSmall = DenseCfg<TileShape<1, 4, 1, 1, 8>, 3>;   // 16 x 32, k over 8 warps, 72 KiB
using DenseMedium = DenseCfg<TileShape<2, 4, 2, 2, 2>, 4>;  // 64 x 64, 64 KiB
using DenseLarge = DenseCfg<TileShape<4, 4, 2, 4, 1>, 4>;   // 128 x 128, 64 KiB

// ---- Large tiles: BM x BN per block, WARPS_M x WARPS_N warps of (BM / WARPS_M) x (BN / WARPS_N).
template <int BM_, int BN_, int WARPS_M_, int WARPS_N_, int KS_, int STAGES_, int MIN_BLOCKS_>
struct BigCfg {
  static constexpr int BM = BM_, BN = BN_, WARPS_M = WARPS_M_, WARPS_N = WARPS_N_, KS = KS_, STAGES = STAGES_;
  static constexpr int MIN_BLOCKS = MIN_BLOCKS_;
  static constexpr int kThreads = 32 * WARPS_M * WARPS_N;
  static constexpr int WM = BM / WARPS_M / 16, WN = BN / WARPS_N / 8;  // mma tiles per warp
  static constexpr int kRowUnits = KS / 8;                              // 16-byte units per row of a stage
  static constexpr int kStageUnits = (BM + BN) * kRowUnits;
  static constexpr int kSmemBytes = STAGES * kStageUnits * 16;
  static constexpr int kRowsPerPass = kThreads / kRowUnits;  // rows one pass of the block's loads covers
  static_assert(KS == 32 || KS == 64, "k per stage: 32 or 64");
  static_assert(BM % kRowsPerPass == 0 && BN % kRowsPerPass == 0, "loads split into whole passes");
  static_assert(BM == 16 * WM * WARPS_M && BN == 8 * WN * WARPS_N, "warp tiles cover the block");
  static_assert(kSmemBytes <= 227 * 1024, "fits the shared memory of sm_90 (and sm_80)");
};

// Physical 16-byte unit of unit u (0 .. kRowUnits - 1) of stage row `row`. ldmatrix reads one
// unit of 8 consecutive rows per phase: 64-wide stages (128-byte rows) xor with row % 8, 32-wide
// stages (64-byte rows, two per 128 bytes) with (row / 2) % 4, so the 8 rows hit 8 different bank
// groups; the units a warp's cp.async writes (whole rows) stay conflict-free too.
template <int KS>
__device__ __forceinline__ int big_swz(int u, int row) {
  if constexpr (KS == 64) return u ^ (row & 7);
  else return u ^ ((row >> 1) & 3);
}

template <typename OutT>
struct Pair;
template <>
struct Pair<float> {
  using type = float2;
  static __device__ __forceinline__ float2 make(float a, float b) { return make_float2(a, b); }
};
template <>
struct Pair<__half> {
  using type = __half2;
  static __device__ __forceinline__ __half2 make(float a, float b) {
    return __halves2half2(__float2half_rn(a), __float2half_rn(b));
  }
};
template <>
struct Pair<__nv_bfloat16> {
  using type = __nv_bfloat162;
  static __device__ __forceinline__ __nv_bfloat162 make(float a, float b) {
    return __halves2bfloat162(__float2bfloat16_rn(a), __float2bfloat16_rn(b));
  }
};

// Grouped block order: group_m tile rows at a time, down the rows first, so the blocks in
// flight cover a few rows of A and a band of B that stay in L2.
template <class C>
__device__ __forceinline__ void big_tile_origin(int M, int N, int group_m, int& m0, int& n0) {
  const int tiles_m = (M + C::BM - 1) / C::BM, tiles_n = (N + C::BN - 1) / C::BN;
  const int pid = static_cast<int>(blockIdx.x);
  const int per_group = group_m * tiles_n;
  const int first_m = (pid / per_group) * group_m;
  const int rows_in_group = min(tiles_m - first_m, group_m);
  const int in_group = pid % per_group;
  m0 = (first_m + in_group % rows_in_group) * C::BM;
  n0 = (in_group / rows_in_group) * C::BN;
}

// C[row, col] = acc (+ bias[col]) for the warp tile at (m_warp, n_warp), rows < M, cols < N.
// pairs: C rows hold whole, aligned (col, col + 1) pairs (N even, C aligned to a pair), so the
// two accumulators of a lane at one row go out in one store.
template <class C, typename OutT>
__device__ __forceinline__ void big_store(float (&acc)[C::WM][C::WN][4], int m_warp, int n_warp, int g, int t, int M,
                                          int N, const float* __restrict__ bias, OutT* __restrict__ Cout, bool pairs) {
#pragma unroll
  for (int j = 0; j < C::WN; ++j) {
    const int col = n_warp + j * 8 + 2 * t;
    const float b0 = bias && col < N ? bias[col] : 0.f, b1 = bias && col + 1 < N ? bias[col + 1] : 0.f;
#pragma unroll
    for (int i = 0; i < C::WM; ++i)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int row = m_warp + i * 16 + g + 8 * h;
        if (row >= M) continue;
        OutT* dst = Cout + static_cast<size_t>(row) * N + col;
        const float v0 = acc[i][j][2 * h] + b0, v1 = acc[i][j][2 * h + 1] + b1;
        if (pairs && col + 1 < N) {
          *reinterpret_cast<typename Pair<OutT>::type*>(dst) = Pair<OutT>::make(v0, v1);
        } else {
          if (col < N) dst[0] = to_out<OutT>(v0);
          if (col + 1 < N) dst[1] = to_out<OutT>(v1);
        }
      }
  }
}

// Copies stage st (k = st KS .. st KS + KS - 1 of the block's BM rows of A and BN rows of B) into
// a stage buffer with cp.async: this thread copies unit `cu` of rows row0 + p kRowsPerPass.
// Rows past M or N and units past K are zero-filled.
template <typename T, class C>
struct StageLoader {
  const T *A, *B, *a_src, *b_src;
  int M, N, K, m0, n0, cu, row0;
  __device__ __forceinline__ StageLoader(const T* A_, const T* B_, int M_, int N_, int K_, int m0_, int n0_)
      : A(A_), B(B_), M(M_), N(N_), K(K_), m0(m0_), n0(n0_) {
    cu = static_cast<int>(threadIdx.x) % C::kRowUnits;
    row0 = static_cast<int>(threadIdx.x) / C::kRowUnits;
    a_src = A + static_cast<size_t>(min(m0 + row0, M - 1)) * K + cu * 8;
    b_src = B + static_cast<size_t>(min(n0 + row0, N - 1)) * K + cu * 8;
  }
  __device__ __forceinline__ void load(uint4* dst, int st) const {
    const int k0 = st * C::KS;
    const bool k_ok = k0 + cu * 8 < K;  // K % 8 == 0: a unit is all inside or all outside
#pragma unroll
    for (int p = 0; p < C::BM / C::kRowsPerPass; ++p) {
      const int row = row0 + p * C::kRowsPerPass;
      const bool ok = k_ok && m0 + row < M;
      cp_async16(dst + row * C::kRowUnits + big_swz<C::KS>(cu, row),
                 ok ? a_src + static_cast<size_t>(p * C::kRowsPerPass) * K + k0 : A, ok ? 16 : 0);
    }
#pragma unroll
    for (int p = 0; p < C::BN / C::kRowsPerPass; ++p) {
      const int row = row0 + p * C::kRowsPerPass;
      const bool ok = k_ok && n0 + row < N;
      cp_async16(dst + (C::BM + row) * C::kRowUnits + big_swz<C::KS>(cu, row),
                 ok ? b_src + static_cast<size_t>(p * C::kRowsPerPass) * K + k0 : B, ok ? 16 : 0);
    }
  }
};

// ---- Large tiles, software-pipelined. Fragments of one 16-wide k step at a time (ldmatrix),
// double buffered in registers, so the loads of step s + 1 overlap the mma of step s; the wait
// for the next stage and the block barrier come before the last step's mma, so the first
// fragments of the next stage load while that step computes. k is in natural order inside an
// mma (ldmatrix reads 8 consecutive k of a row): these kernels sum the same products in fp32 as
// the others but group them differently inside the mma, so they are not bitwise equal to them
// (they are to each other).
__device__ __forceinline__ void ldsm_x4(uint32_t addr, uint32_t (&r)[4]) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr)
               : "memory");
}

template <typename T, class C, typename OutT>
__global__ void __launch_bounds__(C::kThreads, C::MIN_BLOCKS)
    dense_big_kernel(const T* __restrict__ A, const T* __restrict__ B, const float* __restrict__ bias,
                     OutT* __restrict__ Cout, int M, int N, int K, int group_m, bool pairs) {
  static_assert(C::WN % 2 == 0 && C::BM % 16 == 0, "B fragments in pairs of n8 tiles; B rows at a multiple of 16");
  constexpr int STEPS = C::KS / 16, S = C::STAGES, RB = C::kRowUnits * 16;  // RB: bytes per stage row
  extern __shared__ uint4 smem[];
  const int lane = static_cast<int>(threadIdx.x) & 31, warp = static_cast<int>(threadIdx.x) >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int wm = warp / C::WARPS_N, wn = warp % C::WARPS_N;
  int m0, n0;
  big_tile_origin<C>(M, N, group_m, m0, n0);
  const int n_stages = (K + C::KS - 1) / C::KS;
  const StageLoader<T, C> loader(A, B, M, N, K, m0, n0);

  // ldmatrix.x4: lane L gives the address of row L % 8 of matrix L / 8. A (one m16 tile per
  // call): (rows 0-7, k 0-7), (rows 8-15, k 0-7), (rows 0-7, k 8-15), (rows 8-15, k 8-15) = the
  // mma's a0..a3. B (two n8 tiles per call): (n 0-7, k 0-7), (n 0-7, k 8-15), (n 8-15, k 0-7),
  // (n 8-15, k 8-15) = b0, b1 of tile j and of tile j + 1. Every row base below is a multiple of
  // 16 plus r, so the swizzle of a row is that of r.
  const int r = lane & 7, q = lane >> 3;
  const uint32_t smem0 = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  const uint32_t a_off = static_cast<uint32_t>((wm * C::WM * 16 + (q & 1) * 8 + r) * RB);
  const uint32_t b_off = static_cast<uint32_t>((C::BM + wn * C::WN * 8 + (q >> 1) * 8 + r) * RB);
  const int a_hi = q >> 1, b_hi = q & 1;

  uint32_t af[2][C::WM][4], bf[2][C::WN][2];
  auto load_frags = [&](int buf, int s, int slot) {
    const uint32_t base = smem0 + static_cast<uint32_t>(buf * C::kStageUnits * 16);
    const uint32_t a_col = static_cast<uint32_t>(big_swz<C::KS>(2 * s + a_hi, r) * 16);
    const uint32_t b_col = static_cast<uint32_t>(big_swz<C::KS>(2 * s + b_hi, r) * 16);
#pragma unroll
    for (int i = 0; i < C::WM; ++i) ldsm_x4(base + a_off + i * 16 * RB + a_col, af[slot][i]);
#pragma unroll
    for (int jj = 0; jj < C::WN / 2; ++jj) {
      uint32_t v[4];
      ldsm_x4(base + b_off + jj * 16 * RB + b_col, v);
      bf[slot][2 * jj][0] = v[0];
      bf[slot][2 * jj][1] = v[1];
      bf[slot][2 * jj + 1][0] = v[2];
      bf[slot][2 * jj + 1][1] = v[3];
    }
  };

  float acc[C::WM][C::WN][4];
#pragma unroll
  for (int i = 0; i < C::WM; ++i)
#pragma unroll
    for (int j = 0; j < C::WN; ++j) acc[i][j][0] = acc[i][j][1] = acc[i][j][2] = acc[i][j][3] = 0.f;

#pragma unroll
  for (int s = 0; s < S - 1; ++s) {
    if (s < n_stages) loader.load(smem + s * C::kStageUnits, s);
    cp_async_commit();
  }
  cp_async_wait<S - 2>();
  __syncthreads();
  int rd = 0, wr = S - 1;  // stage buffer read now, buffer refilled next
  load_frags(0, 0, 0);
  for (int st = 0; st < n_stages; ++st) {
#pragma unroll
    for (int s = 0; s < STEPS; ++s) {
      if (s == STEPS - 1) {
        // Stage st + 1 landed (groups committed: stages up to st + S - 1); every warp has read
        // the fragments of stage st - 1, whose buffer the next stage's s == 0 refills.
        cp_async_wait<S - 2>();
        __syncthreads();
        rd = rd + 1 == S ? 0 : rd + 1;
      }
      load_frags(rd, (s + 1) % STEPS, (s + 1) & 1);  // (past the last stage: unused)
      if (s == 0) {
        const int pre = st + S - 1;
        if (pre < n_stages) loader.load(smem + wr * C::kStageUnits, pre);
        cp_async_commit();
        wr = wr + 1 == S ? 0 : wr + 1;
      }
#pragma unroll
      for (int i = 0; i < C::WM; ++i)
#pragma unroll
        for (int j = 0; j < C::WN; ++j)
          MmaOp<T>::run(acc[i][j], af[s & 1][i][0], af[s & 1][i][1], af[s & 1][i][2], af[s & 1][i][3],
                        bf[s & 1][j][0], bf[s & 1][j][1]);
    }
  }
  cp_async_wait<0>();  // (only empty groups can be pending here)
  big_store<C, OutT>(acc, m0 + wm * C::WM * 16, n0 + wn * C::WN * 8, g, t, M, N, bias, Cout, pairs);
}

// The two kept from a sweep of block tiles, stage widths and depths on an H200 (awq_cuda_bench
// --dense-sweep; 128 x 256, 256 x 128 and 128 x 128 blocks, k 32 / 64, 3 / 4 stages, with and
// without the pipelining): 128 x 256 with 4 stages of k 64, pipelined, was fastest (or within 2%)
// on every large shape, 395-445 TFLOP/s; 128 x 128 on 4 warps (2 blocks per SM, 64 KiB) serves
// products with fewer tiles and devices with less shared memory per block.
//                      BM   BN  warps  KS  stages  blocks/SM      shared memory
using Big128x256 = BigCfg<128, 256, 2, 4, 64, 4, 1>;  // 192 KiB (sm_90)
using Big128x128 = BigCfg<128, 128, 2, 2, 32, 4, 2>;  //  64 KiB

std::atomic<int> g_group_m{0};  // dense_force_group_m; 0: kDefaultGroupM
constexpr int kDefaultGroupM = 8;

template <typename T, class C, typename OutT>
void launch_big(const T* A, const T* B, const float* bias, OutT* Cout, int M, int N, int K, cudaStream_t stream) {
  constexpr auto kernel = dense_big_kernel<T, C, OutT>;
  static std::once_flag once;
  std::call_once(once, [] {
    AWQ_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, C::kSmemBytes));
  });
  const int64_t tiles = int64_t{(M + C::BM - 1) / C::BM} * ((N + C::BN - 1) / C::BN);
  const bool pairs = N % 2 == 0 && reinterpret_cast<uintptr_t>(Cout) % (2 * sizeof(OutT)) == 0;
  const int forced = g_group_m.load(std::memory_order_relaxed);
  const int group_m = std::min(forced > 0 ? forced : kDefaultGroupM, (M + C::BM - 1) / C::BM);
  kernel<<<static_cast<unsigned>(tiles), C::kThreads, C::kSmemBytes, stream>>>(A, B, bias, Cout, M, N, K, group_m,
                                                                                pairs);
  AWQ_CUDA_CHECK(cudaGetLastError());
}

template <typename T, class C, typename OutT>
void launch(const T* A, const T* B, const float* bias, OutT* Cout, int M, int N, int K, cudaStream_t stream) {
  static std::once_flag once;
  std::call_once(once, [] {
    AWQ_CUDA_CHECK(cudaFuncSetAttribute(dense_kernel<T, C, OutT>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        C::kSmemBytes));
  });
  dim3 grid(static_cast<unsigned>((N + C::S::BN - 1) / C::S::BN), static_cast<unsigned>((M + C::S::BM - 1) / C::S::BM));
  dense_kernel<T, C, OutT><<<grid, C::S::kThreads, C::kSmemBytes, stream>>>(A, B, bias, Cout, M, N, K);
  AWQ_CUDA_CHECK(cudaGetLastError());
}

int smem_optin() {
  static int bytes = [] {
    int dev = 0, n = 0;
    AWQ_CUDA_CHECK(cudaGetDevice(&dev));
    AWQ_CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    return n;
  }();
  return bytes;
}

// Shared memory of a big-tile kernel; 0 for the others (all within 72 KiB).
int big_smem_bytes(DenseKernel k) {
  return k == DenseKernel::Tile128x256 ? Big128x256::kSmemBytes : k == DenseKernel::Tile128x128W4 ? Big128x128::kSmemBytes : 0;
}

template <typename T, typename OutT>
void dispatch(const T* A, const T* B, const float* bias, OutT* Cout, int M, int N, int K, cudaStream_t stream,
              DenseKernel kernel) {
  auto tiles = [&](int bm, int bn) { return int64_t{(M + bm - 1) / bm} * ((N + bn - 1) / bn); };
  if (kernel == DenseKernel::Auto) {
    // The widest tile that still gives every SM a block (a wave of 128 x 128 blocks fills the
    // SMs twice over: 2 per SM); below that, 64 x 64 with k split over 2 warps.
    kernel = M <= 16                          ? DenseKernel::Tile16
             : tiles(128, 256) >= sm_count()  ? DenseKernel::Tile128x256
             : tiles(128, 128) >= sm_count()  ? DenseKernel::Tile128x128W4
                                              : DenseKernel::Tile64;
  }
  // Shared memory the device grants one block (sm_86 / sm_89: 99 KiB, sm_80: 163 KiB, sm_90:
  // 227 KiB): 128 x 256 falls back to 128 x 128 where it does not fit.
  if (big_smem_bytes(kernel) > smem_optin()) kernel = DenseKernel::Tile128x128W4;
  // The big kernels number their blocks in one grid dimension (at most 2^31 - 1 blocks).
  if (big_smem_bytes(kernel) > 0 && tiles(128, 128) > 0x7fffffff) kernel = DenseKernel::Tile128;
  switch (kernel) {
    case DenseKernel::Tile16: return launch<T, DenseSmall, OutT>(A, B, bias, Cout, M, N, K, stream);
    case DenseKernel::Tile64: return launch<T, DenseMedium, OutT>(A, B, bias, Cout, M, N, K, stream);
    case DenseKernel::Tile128x256: return launch_big<T, Big128x256, OutT>(A, B, bias, Cout, M, N, K, stream);
    case DenseKernel::Tile128x128W4: return launch_big<T, Big128x128, OutT>(A, B, bias, Cout, M, N, K, stream);
    default: return launch<T, DenseLarge, OutT>(A, B, bias, Cout, M, N, K, stream);
  }
}

}  // namespace

void dense_force_group_m(int group_m) {
  AWQ_CHECK_ARG(group_m >= 0 && group_m <= 1024, "dense_force_group_m: 0 .. 1024");
  g_group_m.store(group_m);
}

const char* dense_kernel_name(DenseKernel k) {
  switch (k) {
    case DenseKernel::Auto: return "auto";
    case DenseKernel::Tile16: return "16x32 splitk8";
    case DenseKernel::Tile64: return "64x64 splitk2";
    case DenseKernel::Tile128: return "128x128 w64x32";
    case DenseKernel::Tile128x256: return "128x256 k64 s4";
    case DenseKernel::Tile128x128W4: return "128x128 w4 k32 s4";
    default: return "unknown";
  }
}

void dense_gemm(const void* A, const void* B, Dtype ab_type, int64_t M, int64_t N, int64_t K, void* C, Dtype c_type,
                const float* bias, void* stream, DenseKernel kernel) {
  AWQ_CHECK_ARG(static_cast<int>(kernel) >= 0 && static_cast<int>(kernel) < static_cast<int>(DenseKernel::Count),
                "cuda dense_gemm: unknown kernel");
  AWQ_CHECK_ARG(ab_type == Dtype::F16 || ab_type == Dtype::BF16, "cuda dense_gemm: A and B must be F16 or BF16");
  AWQ_CHECK_ARG(c_type == Dtype::F32 || c_type == ab_type, "cuda dense_gemm: C must be F32 or the type of A and B");
  AWQ_CHECK_ARG(M >= 0 && N > 0 && K > 0 && M <= 1000000 && N <= (int64_t{1} << 30) && K <= (int64_t{1} << 30),
                "cuda dense_gemm: bad shape M = " + std::to_string(M) + ", N = " + std::to_string(N) +
                    ", K = " + std::to_string(K));
  AWQ_CHECK_ARG(K % 8 == 0, "cuda dense_gemm: K must be a multiple of 8, got " + std::to_string(K));
  if (M == 0) return;
  AWQ_CHECK_ARG(A && B && C, "cuda dense_gemm: A, B and C are required");
  AWQ_CHECK_ARG(reinterpret_cast<uintptr_t>(A) % 16 == 0 && reinterpret_cast<uintptr_t>(B) % 16 == 0,
                "cuda dense_gemm: A and B must be 16-byte aligned");
  const auto s = static_cast<cudaStream_t>(stream);
  const int m = static_cast<int>(M), n = static_cast<int>(N), k = static_cast<int>(K);
  if (ab_type == Dtype::F16) {
    const auto* a = static_cast<const __half*>(A);
    const auto* b = static_cast<const __half*>(B);
    if (c_type == Dtype::F32) dispatch<__half, float>(a, b, bias, static_cast<float*>(C), m, n, k, s, kernel);
    else dispatch<__half, __half>(a, b, bias, static_cast<__half*>(C), m, n, k, s, kernel);
  } else {
    const auto* a = static_cast<const __nv_bfloat16*>(A);
    const auto* b = static_cast<const __nv_bfloat16*>(B);
    if (c_type == Dtype::F32) dispatch<__nv_bfloat16, float>(a, b, bias, static_cast<float*>(C), m, n, k, s, kernel);
    else dispatch<__nv_bfloat16, __nv_bfloat16>(a, b, bias, static_cast<__nv_bfloat16*>(C), m, n, k, s, kernel);
  }
}

}  // namespace awq::cuda
