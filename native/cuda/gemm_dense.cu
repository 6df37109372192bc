// Dense fp16/bf16 GEMM on tensor cores: C[M,N] = A[M,K] * B[N,K]^T (+ bias), fp32 accumulation.
// A and B tiles stream through shared memory with cp.async (a multi-stage ring: the load of
// stage st + STAGES - 1 overlaps the math of stage st); each lane reads its fragments with
// 16-byte loads under the k-permutation of gemm_common.cuh. Three tile shapes: 16 x 32 with k
// split over 8 warps (decode-sized M: enough blocks and bytes in flight to stream B at memory
// bandwidth), 64 x 64, and 128 x 128 for large M.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

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
      for (int j = 0; j < S::WN; ++j) {
        MmaOp<T>::run(acc[i][j], alo[i].x, ahi[i].x, alo[i].y, ahi[i].y, bq[j].x, bq[j].y);
        MmaOp<T>::run(acc[i][j], alo[i].z, ahi[i].z, alo[i].w, ahi[i].w, bq[j].z, bq[j].w);
      }
  }
  cp_async_wait<0>();
  __syncthreads();  // the reduction reuses the operand buffers
  store_tile<S, OutT>(acc, reinterpret_cast<float*>(smem), r, m0 + r.wm * S::WM * 16, n0 + r.wn * S::WN * 8, M, N,
                      bias, Cout);
}

using DenseSmall = DenseCfg<TileShape<1, 4, 1, 1, 8>, 3>;   // 16 x 32, k over 8 warps, 72 KiB
using DenseMedium = DenseCfg<TileShape<2, 4, 2, 2, 2>, 4>;  // 64 x 64, 64 KiB
using DenseLarge = DenseCfg<TileShape<4, 4, 2, 4, 1>, 4>;   // 128 x 128, 64 KiB

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

template <typename T, typename OutT>
void dispatch(const T* A, const T* B, const float* bias, OutT* Cout, int M, int N, int K, cudaStream_t stream,
              DenseKernel kernel) {
  if (kernel == DenseKernel::Auto) {
    const int64_t large_blocks =
        ((M + DenseLarge::S::BM - 1) / DenseLarge::S::BM) * int64_t{(N + DenseLarge::S::BN - 1) / DenseLarge::S::BN};
    kernel = M <= 16 ? DenseKernel::Tile16 : large_blocks >= sm_count() ? DenseKernel::Tile128 : DenseKernel::Tile64;
  }
  switch (kernel) {
    case DenseKernel::Tile16: return launch<T, DenseSmall, OutT>(A, B, bias, Cout, M, N, K, stream);
    case DenseKernel::Tile64: return launch<T, DenseMedium, OutT>(A, B, bias, Cout, M, N, K, stream);
    default: return launch<T, DenseLarge, OutT>(A, B, bias, Cout, M, N, K, stream);
  }
}

}  // namespace

void dense_gemm(const void* A, const void* B, Dtype ab_type, int64_t M, int64_t N, int64_t K, void* C, Dtype c_type,
                const float* bias, void* stream, DenseKernel kernel) {
  AWQ_CHECK_ARG(static_cast<int>(kernel) >= 0 && static_cast<int>(kernel) <= 3, "cuda dense_gemm: unknown kernel");
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
