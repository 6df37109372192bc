// x86-64 only: elsewhere this file compiles to nothing (AWQ_X86, cpu_features.h).
#include "cpu_features.h"
#if AWQ_X86
#include "isa_target.h"

// AVX512-BF16 sgemm pieces for Precision::BF16: a 14x32 micro-kernel on vdpbf16ps, which adds two
// bf16 products per fp32 lane (pairs of k steps, gemm_kernels.h), so each instruction does twice
// the multiply-adds of an fp32 FMA; and packers that round fp32 operands to bf16 pairs. Register
// use is the fp32 kernel's (28 accumulators, two B vectors, one broadcast A pair).
// Standard headers come before the target pragma (see stats_avx2.cc).
#include <immintrin.h>

#include <cstdint>

#include "gemm_kernels.h"

// GCC 12 warns that _mm512_undefined_epi32's self-initialized value (the unused passthrough of the
// unmasked shift and narrowing intrinsics) may be uninitialized: a false positive of its headers.
#pragma GCC diagnostic push
#ifndef __clang__
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#ifndef AWQ_EMULATE_AVX512  // the emulated test build: native/tests/avx512_emulation.h
AWQ_TARGET_BEGIN("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx2,fma,f16c")
#endif

namespace awq::detail {
namespace {

#include "gemm_pack_x86.inc"
#include "gemm_store_avx512.inc"

constexpr int kMr = 14, kNr = 32;

// acc + a.even * b.even + a.odd * b.odd per lane, a and b holding bf16 pairs.
inline __m512 dot_pairs(__m512 acc, __m512i a, __m512i b) {
#ifdef AWQ_EMULATE_AVX512
  return awq_emu::dpbf16_ps(acc, a, b);
#else
  return _mm512_dpbf16_ps(acc, reinterpret_cast<__m512bh&>(a), reinterpret_cast<__m512bh&>(b));
#endif
}

// fp32 bits rounded to bf16 in their high half (nearest even; NaN kept quiet), low half garbage.
inline __m512i round_high(__m512 x) {
  const __m512i u = _mm512_castps_si512(x);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  const __m512i r = _mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff)));
  const __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
  return _mm512_mask_mov_epi32(r, nan, _mm512_or_si512(u, _mm512_set1_epi32(0x00400000)));
}

template <int R>
void micro_rows(int64_t kp, const float* a, const float* b, float* c, int64_t ldc, float alpha, float beta,
                int m, int n) {
  __m512 acc[R][2];
#pragma GCC unroll 14
  for (int i = 0; i < R; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
  for (int64_t p = 0; p < kp; ++p) {
    const __m512i b0 = _mm512_castps_si512(_mm512_load_ps(b));
    const __m512i b1 = _mm512_castps_si512(_mm512_load_ps(b + 16));
    _mm_prefetch(reinterpret_cast<const char*>(b + 8 * kNr), _MM_HINT_T0);
#pragma GCC unroll 14
    for (int i = 0; i < R; ++i) {
      // the pair as a float-typed 32-bit broadcast (vbroadcastss): the buffers are float-typed
      const __m512i av = _mm512_castps_si512(_mm512_set1_ps(a[i]));
      acc[i][0] = dot_pairs(acc[i][0], av, b0);
      acc[i][1] = dot_pairs(acc[i][1], av, b1);
    }
    a += kMr;
    b += kNr;
  }
  store_tile<R>(acc, c, ldc, alpha, beta, m, n);
}

void micro_14x32(int64_t kp, const float* a, const float* b, float* c, int64_t ldc, float alpha, float beta,
                 int m, int n) {
  if (m <= 2) return micro_rows<2>(kp, a, b, c, ldc, alpha, beta, m, n);
  if (m <= 4) return micro_rows<4>(kp, a, b, c, ldc, alpha, beta, m, n);
  if (m <= 8) return micro_rows<8>(kp, a, b, c, ldc, alpha, beta, m, n);
  micro_rows<kMr>(kp, a, b, c, ldc, alpha, beta, m, n);
}

// PackPanelFn for width W in bf16 pairs (gemm_kernels.h): `out` gets W * ceil(k / 2) 32-bit units.
template <int W>
void pack_pairs(const float* src, int64_t ld, bool lanes_contiguous, int lanes, int64_t k, float* out) {
  int32_t* dst = reinterpret_cast<int32_t*>(out);
  const int64_t kp = (k + 1) / 2;
  if (lanes_contiguous) {
    // Step s's lanes are src[s * ld + l]: round two steps' runs and interleave them by halves.
    const __m512i high = _mm512_set1_epi32(static_cast<int32_t>(0xffff0000u));
    for (int64_t p = 0; p < kp; ++p) {
      const float* even = src + 2 * p * ld;
      const bool has_odd = 2 * p + 1 < k;
      for (int l0 = 0; l0 < W; l0 += 16) {
        const __mmask16 valid = first_lanes(lanes - l0), width = first_lanes(W - l0);
        const __m512i e = _mm512_srli_epi32(round_high(_mm512_maskz_loadu_ps(valid, even + l0)), 16);
        const __m512i o = has_odd ? _mm512_and_si512(round_high(_mm512_maskz_loadu_ps(valid, even + ld + l0)), high)
                                  : _mm512_setzero_si512();
        _mm512_mask_storeu_epi32(dst + p * W + l0, width, _mm512_or_si512(e, o));
      }
    }
    return;
  }
  // Lane l's steps are src[l * ld + s]: 16 steps of a lane round to 8 pairs in order (vpmovdw of
  // the high halves), then 8 lanes x 8 pairs are transposed into 8 packed rows.
  for (int64_t s0 = 0; s0 < k; s0 += 16) {
    const int steps = k - s0 < 16 ? static_cast<int>(k - s0) : 16;
    const int pairs = (steps + 1) / 2;
    const __mmask16 load = first_lanes(steps);
    for (int g = 0; g < W; g += 8) {
      __m256 r[8];
      for (int l = 0; l < 8; ++l) {
        const int lane = g + l;
        if (lane < lanes) {
          const float* row = src + lane * ld + s0;
          _mm_prefetch(reinterpret_cast<const char*>(row + 64), _MM_HINT_T0);
          const __m512i h = _mm512_srli_epi32(round_high(_mm512_maskz_loadu_ps(load, row)), 16);
          r[l] = _mm256_castsi256_ps(_mm512_cvtepi32_epi16(h));
        } else {
          r[l] = _mm256_setzero_ps();
        }
      }
      transpose8x8(r);
      const int width = W - g < 8 ? W - g : 8;
      const __mmask8 store = static_cast<__mmask8>((1u << width) - 1);
      for (int t = 0; t < pairs; ++t)
        _mm256_mask_storeu_epi32(dst + (s0 / 2 + t) * W + g, store, _mm256_castps_si256(r[t]));
    }
  }
}

void pack_a_14(const float* src, int64_t ld, bool lanes_contiguous, int lanes, int64_t k, float* out) {
  pack_pairs<kMr>(src, ld, lanes_contiguous, lanes, k, out);
}

void pack_b_32(const float* src, int64_t ld, bool lanes_contiguous, int lanes, int64_t k, float* out) {
  pack_pairs<kNr>(src, ld, lanes_contiguous, lanes, k, out);
}

}  // namespace

const GemmKernel& gemm_kernel_avx512bf16() {
  // The fp32 kernel's cache blocks in bytes: kc = 512 steps are 256 pair rows, so a B micro-panel
  // is 32 KiB (L1) and an A block 168 KiB (L2).
  static const GemmKernel k{"avx512bf16-14x32", kMr, kNr, 512, 168, 3072, pack_a_14, pack_b_32, micro_14x32, 2};
  return k;
}

}  // namespace awq::detail

#pragma GCC diagnostic pop
#ifndef AWQ_EMULATE_AVX512
AWQ_TARGET_END()
#endif

#endif  // AWQ_X86
