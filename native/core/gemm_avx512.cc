// x86-64 only: elsewhere this file compiles to nothing (AWQ_X86, cpu_features.h).
#include "cpu_features.h"
#if AWQ_X86
#include "isa_target.h"

// AVX-512 sgemm pieces: a 14x32 register-blocked micro-kernel (28 zmm accumulators, two B
// vectors and one A broadcast per step: 31 of 32 registers) and the x86 panel packers.
// Standard headers come before the target pragma (see stats_avx2.cc).
#include <immintrin.h>

#include <cstdint>

#include "gemm_kernels.h"

#ifndef AWQ_EMULATE_AVX512  // the emulated test build: native/tests/avx512_emulation.h
AWQ_TARGET_BEGIN("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")
#endif

namespace awq::detail {
namespace {

#include "gemm_pack_x86.inc"
#include "gemm_store_avx512.inc"

constexpr int kMr = 14, kNr = 32;

// R rows of the micro-tile (A panels keep their kMr stride): the full tile, and shorter ones for
// the last tile of an M that is not a multiple of 14, which would otherwise cost a full tile
// (M = 128 is 9 full tiles and one of 2).
template <int R>
void micro_rows(int64_t k, const float* a, const float* b, float* c, int64_t ldc, float alpha, float beta,
                int m, int n) {
  __m512 acc[R][2];
#pragma GCC unroll 14
  for (int i = 0; i < R; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
  for (int64_t p = 0; p < k; ++p) {
    const __m512 b0 = _mm512_load_ps(b);
    const __m512 b1 = _mm512_load_ps(b + 16);
    _mm_prefetch(reinterpret_cast<const char*>(b + 8 * kNr), _MM_HINT_T0);
#pragma GCC unroll 14
    for (int i = 0; i < R; ++i) {
      const __m512 av = _mm512_set1_ps(a[i]);
      acc[i][0] = _mm512_fmadd_ps(av, b0, acc[i][0]);
      acc[i][1] = _mm512_fmadd_ps(av, b1, acc[i][1]);
    }
    a += kMr;
    b += kNr;
  }
  store_tile<R>(acc, c, ldc, alpha, beta, m, n);
}

void micro_14x32(int64_t k, const float* a, const float* b, float* c, int64_t ldc, float alpha,
                 float beta, int m, int n) {
  if (m <= 2) return micro_rows<2>(k, a, b, c, ldc, alpha, beta, m, n);
  if (m <= 4) return micro_rows<4>(k, a, b, c, ldc, alpha, beta, m, n);
  if (m <= 8) return micro_rows<8>(k, a, b, c, ldc, alpha, beta, m, n);
  micro_rows<kMr>(k, a, b, c, ldc, alpha, beta, m, n);
}

void pack_a_14(const float* src, int64_t ld, bool lanes_contiguous, int lanes, int64_t k,
               float* out) {
  pack_panel<kMr>(src, ld, lanes_contiguous, lanes, k, out);
}

void pack_b_32(const float* src, int64_t ld, bool lanes_contiguous, int lanes, int64_t k,
               float* out) {
  pack_panel<kNr>(src, ld, lanes_contiguous, lanes, k, out);
}

}  // namespace

const GemmKernel& gemm_kernel_avx512() {
  // kc * nr * 4 B = 32 KiB of B micro-panel in a 48 KiB L1; mc * kc * 4 B = 168 KiB of A block
  // in a 1-2 MiB L2; nc-wide B block (3 MiB) in L3.
  static const GemmKernel k{"avx512-14x32", kMr, kNr, 256, 168, 3072, pack_a_14, pack_b_32, micro_14x32};
  return k;
}

}  // namespace awq::detail

#ifndef AWQ_EMULATE_AVX512
AWQ_TARGET_END()
#endif

#endif  // AWQ_X86
