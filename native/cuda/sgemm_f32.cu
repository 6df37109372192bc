// Dense fp32 products on the GPU (SIMT FMA, no tensor cores) with the semantics of awq::sgemm,
// and the linear layer in fp32 / bf16 / fp16 (cuda_layer_ops.h).
//
// sgemm kernel: a block of 256 threads computes a BM x BN tile of C (128 x 128, or 64 x 64 when
// the big tiles would not fill the GPU). op(A) and op(B) tiles of depth 8 are staged k-major in
// shared memory (As[k][m], Bs[k][n]), double-buffered: the global loads of the next k-tile go to
// registers while the current one is multiplied. Thread (ty, tx) of the 16 x 16 grid owns rows
// ty*4 + {0..3} (+ 64) and columns tx*4 + {0..3} (+ 64) of the tile, so its operands are two
// float4 shared-memory reads per k for A and for B. Every global load is bounds-checked (zeros
// outside the matrix), so edge tiles and odd sizes run the same code; 16-byte loads are used
// when the operand's rows are 16-byte aligned, element loads otherwise.
// Symmetric products (X^T X or X X^T with beta == 0, the Gram matrices of the search) compute
// only the tiles touching the upper triangle and mirror them, like the CPU sgemm.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <mutex>
#include <string>

#include "../core/errors.h"
#include "cuda_check.h"
#include "cuda_gemm.h"
#include "cuda_layer_ops.h"
#include "gemm_common.cuh"
#include "sgemm_internal.h"

namespace awq::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kBK = 8;  // k depth of a staged tile

// One float4 unit of a BT x kBK tile of an operand, read from global memory. The operand is
// either "k-contiguous" (element (r, k) at P[r * ld + k]: A for op N, B for op T) or
// "r-contiguous" (element (r, k) at P[k * ld + r]: A for op T, B for op N). Units of a
// k-contiguous tile are (r, k..k+3); of an r-contiguous tile (k, r..r+3). Out-of-range elements
// read as zero. `vec`: rows 16-byte aligned (P aligned, ld % 4 == 0), so a unit that lies fully
// inside the matrix is one aligned 16-byte load (unit starts are multiples of 4).
template <int BT, bool RCONTIG>
__device__ __forceinline__ float4 fetch_unit(const float* __restrict__ P, int64_t ld, int R, int K, int r0, int k0,
                                             bool vec, int u) {
  float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
  float e[4] = {0.f, 0.f, 0.f, 0.f};
  if constexpr (!RCONTIG) {
    const int r = r0 + u / (kBK / 4), k = k0 + (u % (kBK / 4)) * 4;
    if (r >= R) return v;
    const float* p = P + static_cast<int64_t>(r) * ld + k;
    if (vec && k + 3 < K) return *reinterpret_cast<const float4*>(p);
#pragma unroll
    for (int i = 0; i < 4; ++i)
      if (k + i < K) e[i] = p[i];
  } else {
    const int k = k0 + u / (BT / 4), r = r0 + (u % (BT / 4)) * 4;
    if (k >= K) return v;
    const float* p = P + static_cast<int64_t>(k) * ld + r;
    if (vec && r + 3 < R) return *reinterpret_cast<const float4*>(p);
#pragma unroll
    for (int i = 0; i < 4; ++i)
      if (r + i < R) e[i] = p[i];
  }
  return make_float4(e[0], e[1], e[2], e[3]);
}

// Stores unit u (see fetch_unit) into the k-major shared tile S[k][r] (row stride BT + 4).
template <int BT, bool RCONTIG>
__device__ __forceinline__ void store_unit(float* S, int u, float4 v) {
  constexpr int ld = BT + 4;
  if constexpr (!RCONTIG) {
    const int r = u / (kBK / 4), k = (u % (kBK / 4)) * 4;
    S[(k + 0) * ld + r] = v.x;
    S[(k + 1) * ld + r] = v.y;
    S[(k + 2) * ld + r] = v.z;
    S[(k + 3) * ld + r] = v.w;
  } else {
    const int k = u / (BT / 4), r = (u % (BT / 4)) * 4;
    *reinterpret_cast<float4*>(S + k * ld + r) = v;  // ld and r multiples of 4: aligned
  }
}

// C = alpha * op(A) op(B) + beta * C (+ bias[n]) for the tile of block (blockIdx.y, blockIdx.x).
// A_RC: op(A) is r-contiguous (ta == T); B_RC: op(B) is r-contiguous (tb == N).
template <int BM, int BN, bool A_RC, bool B_RC>
__global__ void __launch_bounds__(kThreads)
    sgemm_kernel(int M, int N, int K, float alpha, const float* __restrict__ A, int64_t lda, bool a_vec,
                 const float* __restrict__ B, int64_t ldb, bool b_vec, float beta, const float* __restrict__ bias,
                 float* __restrict__ C, int64_t ldc, bool c_vec, bool upper_only) {
  constexpr int TM = BM / 16, TN = BN / 16;  // per-thread tile: TM x TN (4 or 8)
  static_assert(TM % 4 == 0 && TN % 4 == 0 && TM <= 8 && TN <= 8, "tile shape");
  constexpr int kAUnits = BM * kBK / 4, kBUnits = BN * kBK / 4;
  constexpr int kAPer = (kAUnits + kThreads - 1) / kThreads, kBPer = (kBUnits + kThreads - 1) / kThreads;
  __shared__ __align__(16) float As[2][kBK * (BM + 4)];
  __shared__ __align__(16) float Bs[2][kBK * (BN + 4)];

  const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
  // Symmetric product: tiles entirely below the diagonal are mirrored afterwards.
  if (upper_only && n0 + BN <= m0) return;
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;

  float4 ra[kAPer] = {}, rb[kBPer] = {};
  auto fetch = [&](int k0) {
#pragma unroll
    for (int i = 0; i < kAPer; ++i) {
      const int u = tid + i * kThreads;
      if (u < kAUnits) ra[i] = fetch_unit<BM, A_RC>(A, lda, M, K, m0, k0, a_vec, u);
    }
#pragma unroll
    for (int i = 0; i < kBPer; ++i) {
      const int u = tid + i * kThreads;
      if (u < kBUnits) rb[i] = fetch_unit<BN, B_RC>(B, ldb, N, K, n0, k0, b_vec, u);
    }
  };
  auto stash = [&](int buf) {
#pragma unroll
    for (int i = 0; i < kAPer; ++i) {
      const int u = tid + i * kThreads;
      if (u < kAUnits) store_unit<BM, A_RC>(As[buf], u, ra[i]);
    }
#pragma unroll
    for (int i = 0; i < kBPer; ++i) {
      const int u = tid + i * kThreads;
      if (u < kBUnits) store_unit<BN, B_RC>(Bs[buf], u, rb[i]);
    }
  };

  float acc[TM][TN];
#pragma unroll
  for (int i = 0; i < TM; ++i)
#pragma unroll
    for (int j = 0; j < TN; ++j) acc[i][j] = 0.f;

  const int n_k = (K + kBK - 1) / kBK;
  fetch(0);
  stash(0);
  __syncthreads();
  for (int kt = 0; kt < n_k; ++kt) {
    const int cur = kt & 1;
    if (kt + 1 < n_k) fetch((kt + 1) * kBK);  // in flight during the math below
    const float* as = As[cur];
    const float* bs = Bs[cur];
#pragma unroll
    for (int kk = 0; kk < kBK; ++kk) {
      float a[TM], b[TN];
#pragma unroll
      for (int i = 0; i < TM; i += 4) {
        const float4 v = *reinterpret_cast<const float4*>(as + kk * (BM + 4) + (i / 4) * 64 + ty * 4);
        a[i] = v.x, a[i + 1] = v.y, a[i + 2] = v.z, a[i + 3] = v.w;
      }
#pragma unroll
      for (int j = 0; j < TN; j += 4) {
        const float4 v = *reinterpret_cast<const float4*>(bs + kk * (BN + 4) + (j / 4) * 64 + tx * 4);
        b[j] = v.x, b[j + 1] = v.y, b[j + 2] = v.z, b[j + 3] = v.w;
      }
#pragma unroll
      for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
    }
    // The other buffer was last read in iteration kt - 1, which ended with a barrier.
    if (kt + 1 < n_k) stash(cur ^ 1);
    __syncthreads();
  }

  // Epilogue: four consecutive columns at a time, 16-byte accesses when C's rows allow.
#pragma unroll
  for (int i = 0; i < TM; ++i) {
    const int m = m0 + (i / 4) * 64 + ty * 4 + (i % 4);
    if (m >= M) continue;
    float* crow = C + static_cast<int64_t>(m) * ldc;
#pragma unroll
    for (int j = 0; j < TN; j += 4) {
      const int n = n0 + (j / 4) * 64 + tx * 4;
      if (n >= N) continue;
      float v[4];
#pragma unroll
      for (int q = 0; q < 4; ++q) v[q] = alpha * acc[i][j + q];
      if (c_vec && n + 3 < N) {
        float4* p = reinterpret_cast<float4*>(crow + n);
        if (beta != 0.f) {
          const float4 c = *p;
          v[0] += beta * c.x, v[1] += beta * c.y, v[2] += beta * c.z, v[3] += beta * c.w;
        }
        if (bias) v[0] += bias[n], v[1] += bias[n + 1], v[2] += bias[n + 2], v[3] += bias[n + 3];
        *p = make_float4(v[0], v[1], v[2], v[3]);
      } else {
#pragma unroll
        for (int q = 0; q < 4; ++q) {
          if (n + q >= N) break;
          float r = v[q];
          if (beta != 0.f) r += beta * crow[n + q];
          if (bias) r += bias[n + q];
          crow[n + q] = r;
        }
      }
    }
  }
}

// C[r][c] = C[c][r] for r > c on the square C[n, n]: 32 x 32 tiles through shared memory. A
// block writes only the strictly-lower entries of its tile and reads the transposed tile,
// which lies in the upper triangle except on the diagonal, where the same block reads before
// it writes (barrier in between), so blocks never race.
__global__ void mirror_kernel(float* __restrict__ C, int n, int64_t ldc) {
  __shared__ float s[32][33];
  const int r0 = blockIdx.y * 32, c0 = blockIdx.x * 32;
  if (c0 > r0) return;  // tiles above the diagonal are sources only
  const int tx = threadIdx.x % 32, ty0 = threadIdx.x / 32;
  for (int i = ty0; i < 32; i += blockDim.x / 32) {
    const int row = c0 + i, col = r0 + tx;  // source C[c][r]
    s[i][tx] = row < n && col < n ? C[static_cast<int64_t>(row) * ldc + col] : 0.f;
  }
  __syncthreads();
  for (int i = ty0; i < 32; i += blockDim.x / 32) {
    const int r = r0 + i, c = c0 + tx;
    if (r < n && c < n && r > c) C[static_cast<int64_t>(r) * ldc + c] = s[tx][i];
  }
}

// C = beta * C (beta == 0: zeros, C not read) for an empty product (K == 0).
__global__ void scale_kernel(float* __restrict__ C, int M, int N, int64_t ldc, float beta,
                             const float* __restrict__ bias) {
  const int64_t total = static_cast<int64_t>(M) * N;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t m = e / N, n = e % N;
    float* p = C + m * ldc + n;
    float v = beta == 0.f ? 0.f : beta * *p;
    if (bias) v += bias[n];
    *p = v;
  }
}

template <typename T>
__global__ void round_kernel(const float* __restrict__ src, int64_t n, T* __restrict__ dst) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    dst[i] = kern::to_out<T>(src[i]);  // __float2half_rn / __float2bfloat16_rn: nearest even
}

unsigned grid_for(int64_t n, int threads) {
  const int64_t blocks = (n + threads - 1) / threads;
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(blocks, int64_t{kern::sm_count()} * 32)));
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

std::atomic<int> g_force_tile{0};

template <int BM, int BN, bool A_RC, bool B_RC>
void launch_tile(int M, int N, int K, float alpha, const float* A, int64_t lda, bool a_vec, const float* B,
                 int64_t ldb, bool b_vec, float beta, const float* bias, float* C, int64_t ldc, bool c_vec,
                 bool upper_only) {
  // Rows beyond gridDim.y's limit go in slabs (op(A) rows m start at A + m * lda for op N,
  // A + m for op T).
  constexpr int64_t kMaxRows = int64_t{65535} * BM;
  for (int64_t s = 0; s < M; s += kMaxRows) {
    const int rows = static_cast<int>(std::min<int64_t>(kMaxRows, M - s));
    const float* As = A_RC ? A + s : A + s * lda;
    dim3 grid(static_cast<unsigned>((N + BN - 1) / BN), static_cast<unsigned>((rows + BM - 1) / BM));
    sgemm_kernel<BM, BN, A_RC, B_RC><<<grid, kThreads>>>(rows, N, K, alpha, As, lda, a_vec, B, ldb, b_vec, beta, bias,
                                                         C + s * ldc, ldc, c_vec, upper_only);
    AWQ_CUDA_CHECK(cudaGetLastError());
  }
}

template <int BM, int BN>
void launch_trans(Trans ta, Trans tb, int M, int N, int K, float alpha, const float* A, int64_t lda, bool a_vec,
                  const float* B, int64_t ldb, bool b_vec, float beta, const float* bias, float* C, int64_t ldc,
                  bool c_vec, bool upper_only) {
  const bool a_rc = ta == Trans::T, b_rc = tb == Trans::N;
  if (!a_rc && !b_rc)
    launch_tile<BM, BN, false, false>(M, N, K, alpha, A, lda, a_vec, B, ldb, b_vec, beta, bias, C, ldc, c_vec, upper_only);
  else if (!a_rc && b_rc)
    launch_tile<BM, BN, false, true>(M, N, K, alpha, A, lda, a_vec, B, ldb, b_vec, beta, bias, C, ldc, c_vec, upper_only);
  else if (a_rc && !b_rc)
    launch_tile<BM, BN, true, false>(M, N, K, alpha, A, lda, a_vec, B, ldb, b_vec, beta, bias, C, ldc, c_vec, upper_only);
  else
    launch_tile<BM, BN, true, true>(M, N, K, alpha, A, lda, a_vec, B, ldb, b_vec, beta, bias, C, ldc, c_vec, upper_only);
}

}  // namespace

namespace detail {

void sgemm_force_tile(int tile) {
  AWQ_CHECK_ARG(tile == 0 || tile == 64 || tile == 128, "sgemm_force_tile: 0, 64 or 128");
  g_force_tile = tile;
}

void sgemm_bias(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                const float* B, int64_t ldb, float beta, float* C, int64_t ldc, const float* bias) {
  AWQ_CHECK_ARG(M >= 0 && N >= 0 && K >= 0, "cuda sgemm: negative dimension");
  AWQ_CHECK_ARG(M <= INT_MAX && N <= INT_MAX && K <= INT_MAX,
                "cuda sgemm: dimensions must be below 2^31, got M = " + std::to_string(M) +
                    ", N = " + std::to_string(N) + ", K = " + std::to_string(K));
  if (M == 0 || N == 0) return;
  AWQ_CHECK_ARG(ldc >= N, "cuda sgemm: ldc must be >= N");
  AWQ_CHECK_ARG(lda >= std::max<int64_t>(1, ta == Trans::N ? K : M), "cuda sgemm: lda too small");
  AWQ_CHECK_ARG(ldb >= std::max<int64_t>(1, tb == Trans::N ? N : K), "cuda sgemm: ldb too small");
  AWQ_CHECK_ARG(C != nullptr && (K == 0 || (A != nullptr && B != nullptr)), "cuda sgemm: null matrix");
  const int m = static_cast<int>(M), n = static_cast<int>(N), k = static_cast<int>(K);
  if (K == 0) {  // empty product: C = beta * C (+ bias); beta == 0 clears without reading
    scale_kernel<<<grid_for(M * N, 256), 256>>>(C, m, n, ldc, beta, bias);
    AWQ_CUDA_CHECK(cudaGetLastError());
    return;
  }
  // X^T X and X X^T (the same operand on both sides, transposed on one): symmetric.
  const bool symmetric = A == B && lda == ldb && ta != tb && M == N && beta == 0.f && bias == nullptr;
  const bool a_vec = aligned16(A) && lda % 4 == 0, b_vec = aligned16(B) && ldb % 4 == 0;
  const bool c_vec = aligned16(C) && ldc % 4 == 0;
  int tile = g_force_tile.load();
  if (tile == 0) {
    const int64_t big_blocks = ((M + 127) / 128) * ((N + 127) / 128);
    tile = big_blocks >= kern::sm_count() ? 128 : 64;
  }
  if (tile == 128)
    launch_trans<128, 128>(ta, tb, m, n, k, alpha, A, lda, a_vec, B, ldb, b_vec, beta, bias, C, ldc, c_vec, symmetric);
  else
    launch_trans<64, 64>(ta, tb, m, n, k, alpha, A, lda, a_vec, B, ldb, b_vec, beta, bias, C, ldc, c_vec, symmetric);
  if (symmetric) {
    const unsigned t = static_cast<unsigned>((N + 31) / 32);
    mirror_kernel<<<dim3(t, t), 256>>>(C, n, ldc);
    AWQ_CUDA_CHECK(cudaGetLastError());
  }
}

void round_to_lowp(const float* src, int64_t n, void* dst, Precision p) {
  AWQ_CHECK_ARG(p == Precision::BF16 || p == Precision::F16, "round_to_lowp: precision must be BF16 or F16");
  AWQ_CHECK_ARG(n >= 0, "round_to_lowp: negative size");
  if (n == 0) return;
  if (p == Precision::BF16)
    round_kernel<__nv_bfloat16><<<grid_for(n, 256), 256>>>(src, n, static_cast<__nv_bfloat16*>(dst));
  else
    round_kernel<__half><<<grid_for(n, 256), 256>>>(src, n, static_cast<__half*>(dst));
  AWQ_CUDA_CHECK(cudaGetLastError());
}

namespace {
GrowBuffer g_lowp_x("linear: rounded activations");
GrowBuffer g_lowp_w("linear: rounded weights");
}  // namespace

void linear_lowp(const float* x, int64_t M, int64_t in, const void* W_lowp, int64_t out, const float* bias, float* y,
                 Precision p) {
  AWQ_CHECK_ARG(lowp_linear(p, in), "cuda linear: the tensor-core path needs BF16/F16 and in % 8 == 0");
  if (M == 0) return;
  std::lock_guard<std::mutex> lock(g_lowp_x.mu);
  void* xs = g_lowp_x.get(static_cast<size_t>(M * in) * 2);
  round_to_lowp(x, M * in, xs, p);
  dense_gemm(xs, W_lowp, p == Precision::BF16 ? Dtype::BF16 : Dtype::F16, M, out, in, y, Dtype::F32, bias);
}

}  // namespace detail

void sgemm(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
           const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  detail::sgemm_bias(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, nullptr);
}

void linear(const float* x, int64_t M, int64_t in, const float* W, int64_t out, const float* bias, float* y,
            Precision p) {
  AWQ_CHECK_ARG(M >= 0 && in > 0 && out > 0,
                "cuda linear: bad shape M = " + std::to_string(M) + ", in = " + std::to_string(in) +
                    ", out = " + std::to_string(out));
  AWQ_CHECK_ARG(p == Precision::F32 || p == Precision::BF16 || p == Precision::F16, "cuda linear: unknown precision");
  if (M == 0) return;
  if (!detail::lowp_linear(p, in)) {  // fp32, or K not a multiple of 8 (dense_gemm's granule)
    detail::sgemm_bias(Trans::N, Trans::T, M, out, in, 1.f, x, in, W, in, 0.f, y, out, bias);
    return;
  }
  std::lock_guard<std::mutex> lock(detail::g_lowp_w.mu);
  void* ws = detail::g_lowp_w.get(static_cast<size_t>(out * in) * 2);
  detail::round_to_lowp(W, out * in, ws, p);
  detail::linear_lowp(x, M, in, ws, out, bias, y, p);
}

}  // namespace awq::cuda
