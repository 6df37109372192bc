// AVX-512 VNNI int8-mode kernel: vpdpbusd multiplies the u8 nibbles by the s8 activations and
// adds groups of 4 products straight into 32-bit lanes (one instruction per 64 weights).
// Its own file because the whole function must be compiled for the VNNI target.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#include "int4_gemm.h"

#pragma GCC push_options
// GCC 12 reports the deliberately undefined vectors inside its own AVX-512 intrinsics.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#ifndef AWQ_EMULATE_AVX512  // the emulated test build: native/tests/avx512_emulation.h
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")
#endif

namespace awq::detail {
namespace {

inline __m512i load_block(const uint8_t* p) { return _mm512_load_si512(reinterpret_cast<const void*>(p)); }

template <int MR>
void rows_vnni(const Int4Weights& w, const Int8Activations& a, int64_t m0, float* y, int64_t ldy, int64_t n0,
               int64_t n1) {
  const __m512i low = _mm512_set1_epi8(15);
  const int64_t bpg = w.group / 128, G = w.groups;
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t* row = w.row(n);
    __m512 acc[MR];
    float zterm[MR];
    for (int m = 0; m < MR; ++m) acc[m] = _mm512_setzero_ps(), zterm[m] = 0.f;
    for (int64_t b = 0; b < w.blocks; ++b) {
      _mm_prefetch(prefetch_target(w, row, kPrefetchRows, b), _MM_HINT_T0);
      const __m512i v = load_block(row + b * 64);
      const __m512i lo = _mm512_and_si512(v, low), hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), low);
      const int64_t g = n * G + b / bpg;
      const float sw = w.scales[g];
      const int z = w.zeros[g];
      for (int m = 0; m < MR; ++m) {
        const int64_t ab = (m0 + m) * a.blocks + b;
        const uint8_t* xq = a.q.data() + ab * 128;
        const __m512i d = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, load_block(xq)), hi,
                                              load_block(xq + 64));
        const float s = sw * a.scale[ab];
        acc[m] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), _mm512_set1_ps(s), acc[m]);
        zterm[m] += s * static_cast<float>(z * a.sum[ab]);
      }
    }
    for (int m = 0; m < MR; ++m) y[(m0 + m) * ldy + n] = _mm512_reduce_add_ps(acc[m]) - zterm[m];
  }
}

}  // namespace

void decode_int8_avx512vnni(const Int4Weights& w, const Int8Activations& a, float* y, int64_t ldy, int64_t n0,
                            int64_t n1) {
  for_each_decode_tile(a.M, n0, n1, [&](auto mr, int64_t m0, int64_t t0, int64_t t1) {
    rows_vnni<decltype(mr)::value>(w, a, m0, y, ldy, t0, t1);
  });
}

}  // namespace awq::detail

#pragma GCC diagnostic pop
#pragma GCC pop_options
