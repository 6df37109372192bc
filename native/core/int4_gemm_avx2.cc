// AVX2 + FMA int4 kernels (see int4_gemm.h for the layout). Standard headers first, then the
// target pragma (the rule of stats_avx2.cc).
//
// Unpacking without shuffles: a nibble masked out of a 32-bit word and OR-ed into the bits of
// 2^23 is the float 2^23 + q; subtracting 2^23 + z gives q - z exactly. So one weight costs
// and / or / sub (and a shift per 8 nibbles) before its FMA.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#include "int4_gemm.h"

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")

namespace awq::detail {
namespace {

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline __m256i load_block_half(const uint8_t* p) { return _mm256_load_si256(reinterpret_cast<const __m256i*>(p)); }

// Decode: MR rows of x against NR output rows, the whole of `in`. Per group, the products of
// (q - z) with x are summed in fp32 and then scaled once.
template <int MR, int NR>
void decode_tile(const Int4Weights& w, const float* x, int64_t ldx, float* y, int64_t ldy, int64_t n0) {
  const int64_t G = w.groups, slots_per_group = w.group / 16;
  const uint8_t* rows[NR];
  for (int r = 0; r < NR; ++r) rows[r] = w.row(n0 + r);
  const __m256i mask = _mm256_set1_epi32(15), magic = _mm256_set1_epi32(0x4B000000);
  __m256 tot[MR][NR];
  for (int m = 0; m < MR; ++m)
    for (int r = 0; r < NR; ++r) tot[m][r] = _mm256_setzero_ps();
  for (int64_t g = 0; g < G; ++g) {
    __m256 acc[MR][NR][2];
    for (int m = 0; m < MR; ++m)
      for (int r = 0; r < NR; ++r) acc[m][r][0] = acc[m][r][1] = _mm256_setzero_ps();
    __m256 zc[NR];
    for (int r = 0; r < NR; ++r) zc[r] = _mm256_set1_ps(8388608.f + w.zeros[(n0 + r) * G + g]);
    int64_t s = g * slots_per_group;
    const int64_t s1 = s + slots_per_group;
    while (s < s1) {
      // A group may start inside a 128-block (group 16..64): shift the words to its nibble.
      const int64_t blk = s >> 3;
      const __m128i cnt = _mm_cvtsi32_si128(static_cast<int>(4 * (s & 7)));
      __m256i wv[NR][2];
      for (int r = 0; r < NR; ++r)
        for (int h = 0; h < 2; ++h) wv[r][h] = _mm256_srl_epi32(load_block_half(rows[r] + blk * 64 + 32 * h), cnt);
      const int64_t send = std::min(s1, (blk + 1) * 8);
      for (; s < send; ++s) {
        const float* xs = x + s * 16;
#pragma GCC unroll 4
        for (int r = 0; r < NR; ++r) {
#pragma GCC unroll 2
          for (int h = 0; h < 2; ++h) {
            const __m256 f = _mm256_sub_ps(
                _mm256_castsi256_ps(_mm256_or_si256(_mm256_and_si256(wv[r][h], mask), magic)), zc[r]);
            wv[r][h] = _mm256_srli_epi32(wv[r][h], 4);
#pragma GCC unroll 4
            for (int m = 0; m < MR; ++m)
              acc[m][r][h] = _mm256_fmadd_ps(f, _mm256_loadu_ps(xs + m * ldx + 8 * h), acc[m][r][h]);
          }
        }
      }
    }
    for (int r = 0; r < NR; ++r) {
      const __m256 sc = _mm256_set1_ps(w.scales[(n0 + r) * G + g]);
      for (int m = 0; m < MR; ++m) tot[m][r] = _mm256_fmadd_ps(_mm256_add_ps(acc[m][r][0], acc[m][r][1]), sc, tot[m][r]);
    }
  }
  for (int m = 0; m < MR; ++m)
    for (int r = 0; r < NR; ++r) y[m * ldy + n0 + r] = hsum(tot[m][r]);
}

template <int MR>
void decode_rows(const Int4Weights& w, const float* x, int64_t ldx, float* y, int64_t ldy, int64_t n0, int64_t n1) {
  int64_t n = n0;
  if constexpr (MR == 1) {
    for (; n + 2 <= n1; n += 2) decode_tile<1, 2>(w, x, ldx, y, ldy, n);
  }
  for (; n < n1; ++n) decode_tile<MR, 1>(w, x, ldx, y, ldy, n);
}

void decode_avx2(const Int4Weights& w, const float* x, int64_t ldx, int64_t M, float* y, int64_t ldy,
                 int64_t n0, int64_t n1) {
  // Output rows in tiles of 64 (64 KiB of weights for in = 4096, kept in L2) so that the second
  // chunk of x rows finds them cached.
  for (int64_t t0 = n0; t0 < n1; t0 += 64) {
    const int64_t t1 = std::min(n1, t0 + 64);
    for (int64_t m0 = 0; m0 < M; m0 += 4) {
      const float* xm = x + m0 * ldx;
      float* ym = y + m0 * ldy;
      switch (std::min<int64_t>(4, M - m0)) {
        case 1: decode_rows<1>(w, xm, ldx, ym, ldy, t0, t1); break;
        case 2: decode_rows<2>(w, xm, ldx, ym, ldy, t0, t1); break;
        case 3: decode_rows<3>(w, xm, ldx, ym, ldy, t0, t1); break;
        default: decode_rows<4>(w, xm, ldx, ym, ldy, t0, t1); break;
      }
    }
  }
}

void dequant_panel_avx2(const Int4Weights& w, int64_t n0, int64_t nr, int64_t k0, int64_t kc, float* dst,
                        int64_t ld) {
  const __m256i mask = _mm256_set1_epi32(15), magic = _mm256_set1_epi32(0x4B000000);
  const int64_t G = w.groups;
  for (int64_t r = 0; r < nr; ++r) {
    const int64_t n = n0 + r;
    const uint8_t* row = w.row(n);
    float* out = dst + r * ld - k0;
    int64_t s = k0 / 16;
    const int64_t s1 = (k0 + kc) / 16;
    while (s < s1) {
      const int64_t blk = s >> 3;
      const __m128i cnt = _mm_cvtsi32_si128(static_cast<int>(4 * (s & 7)));
      __m256i w0 = _mm256_srl_epi32(load_block_half(row + blk * 64), cnt);
      __m256i w1 = _mm256_srl_epi32(load_block_half(row + blk * 64 + 32), cnt);
      const int64_t send = std::min(s1, (blk + 1) * 8);
      for (; s < send; ++s) {
        const int64_t g = n * G + (s * 16) / w.group;
        const __m256 zc = _mm256_set1_ps(8388608.f + w.zeros[g]);
        const __m256 sc = _mm256_set1_ps(w.scales[g]);
        const __m256 f0 = _mm256_sub_ps(_mm256_castsi256_ps(_mm256_or_si256(_mm256_and_si256(w0, mask), magic)), zc);
        const __m256 f1 = _mm256_sub_ps(_mm256_castsi256_ps(_mm256_or_si256(_mm256_and_si256(w1, mask), magic)), zc);
        _mm256_storeu_ps(out + s * 16, _mm256_mul_ps(f0, sc));
        _mm256_storeu_ps(out + s * 16 + 8, _mm256_mul_ps(f1, sc));
        w0 = _mm256_srli_epi32(w0, 4);
        w1 = _mm256_srli_epi32(w1, 4);
      }
    }
  }
}

inline void transpose8(__m256 r[8]) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
  r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
  r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
  r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
  r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
  r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
  r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
  r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

// C[MR, nr] (+)= A[MR, kc] * sliver^T: per k, 2 loads of the sliver and MR broadcasts feed
// 2 * MR FMAs (12 accumulators at MR = 6, the classic 6 x 16 fp32 kernel).
template <int MR>
void sliver_kernel(int64_t kc, const float* A, int64_t lda, const float* B, float* C, int64_t ldc, int64_t nr,
                   bool accumulate) {
  __m256 acc[MR][2];
#pragma GCC unroll 6
  for (int i = 0; i < MR; ++i) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
  for (int64_t k = 0; k < kc; ++k) {
    const __m256 b0 = _mm256_load_ps(B + k * 16), b1 = _mm256_load_ps(B + k * 16 + 8);
#pragma GCC unroll 6
    for (int i = 0; i < MR; ++i) {
      const __m256 a = _mm256_broadcast_ss(A + i * lda + k);
      acc[i][0] = _mm256_fmadd_ps(a, b0, acc[i][0]);
      acc[i][1] = _mm256_fmadd_ps(a, b1, acc[i][1]);
    }
  }
  // Unrolled so the accumulators stay in registers in the k loop (a runtime-indexed epilogue
  // made GCC keep them in memory, a store per FMA).
#pragma GCC unroll 6
  for (int i = 0; i < MR; ++i) {
    float* c = C + i * ldc;
    if (nr == 16) {
      if (accumulate) {
        acc[i][0] = _mm256_add_ps(acc[i][0], _mm256_loadu_ps(c));
        acc[i][1] = _mm256_add_ps(acc[i][1], _mm256_loadu_ps(c + 8));
      }
      _mm256_storeu_ps(c, acc[i][0]);
      _mm256_storeu_ps(c + 8, acc[i][1]);
    } else {
      alignas(32) float tmp[16];
      _mm256_store_ps(tmp, acc[i][0]);
      _mm256_store_ps(tmp + 8, acc[i][1]);
      for (int64_t j = 0; j < nr; ++j) c[j] = accumulate ? c[j] + tmp[j] : tmp[j];
    }
  }
}

void gemm_panel_avx2(int64_t M, int64_t nr, int64_t kc, const float* A, int64_t lda, const float* panel, float* C,
                     int64_t ldc, bool accumulate) {
  // Rows of x outer: 6 rows x kc of x (6 KiB) stay in L1 while the 64 KiB panel streams from L2,
  // so x is read from memory once per panel (the sliver-outer order re-reads all of it per sliver).
  for (int64_t i = 0; i < M; i += 6) {
    const int64_t mr = std::min<int64_t>(6, M - i);
    const float* a = A + i * lda;
    for (int64_t t = 0; t * kSliver < nr; ++t) {
      const float* B = panel + t * kc * kSliver;
      const int64_t cols = std::min<int64_t>(kSliver, nr - t * kSliver);
      float* c = C + i * ldc + t * kSliver;
      switch (mr) {
        case 1: sliver_kernel<1>(kc, a, lda, B, c, ldc, cols, accumulate); break;
        case 2: sliver_kernel<2>(kc, a, lda, B, c, ldc, cols, accumulate); break;
        case 3: sliver_kernel<3>(kc, a, lda, B, c, ldc, cols, accumulate); break;
        case 4: sliver_kernel<4>(kc, a, lda, B, c, ldc, cols, accumulate); break;
        case 5: sliver_kernel<5>(kc, a, lda, B, c, ldc, cols, accumulate); break;
        default: sliver_kernel<6>(kc, a, lda, B, c, ldc, cols, accumulate); break;
      }
    }
  }
}

// Int8 mode: u8 nibbles x s8 activations with maddubs (AVX2 has no VNNI). One block's four
// maddubs results are summed in 16 bits (at most 4 * 2 * 15 * 127 = 15240), widened once.
template <int MR>
void decode_int8_rows(const Int4Weights& w, const Int8Activations& a, int64_t m0, float* y, int64_t ldy,
                      int64_t n0, int64_t n1) {
  const __m256i low = _mm256_set1_epi8(15);
  const __m256i ones = _mm256_set1_epi16(1);
  const int64_t bpg = w.group / 128, G = w.groups;
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t* row = w.row(n);
    __m256 acc[MR];
    float zterm[MR];
    for (int m = 0; m < MR; ++m) acc[m] = _mm256_setzero_ps(), zterm[m] = 0.f;
    for (int64_t b = 0; b < w.blocks; ++b) {
      const __m256i v0 = load_block_half(row + b * 64), v1 = load_block_half(row + b * 64 + 32);
      const __m256i lo0 = _mm256_and_si256(v0, low), hi0 = _mm256_and_si256(_mm256_srli_epi16(v0, 4), low);
      const __m256i lo1 = _mm256_and_si256(v1, low), hi1 = _mm256_and_si256(_mm256_srli_epi16(v1, 4), low);
      const int64_t g = n * G + b / bpg;
      const float sw = w.scales[g];
      const int z = w.zeros[g];
      for (int m = 0; m < MR; ++m) {
        const int64_t ab = (m0 + m) * a.blocks + b;
        const uint8_t* xq = a.q.data() + ab * 128;
        __m256i p = _mm256_add_epi16(_mm256_maddubs_epi16(lo0, load_block_half(xq)),
                                     _mm256_maddubs_epi16(hi0, load_block_half(xq + 64)));
        p = _mm256_add_epi16(p, _mm256_add_epi16(_mm256_maddubs_epi16(lo1, load_block_half(xq + 32)),
                                                 _mm256_maddubs_epi16(hi1, load_block_half(xq + 96))));
        const float s = sw * a.scale[ab];
        acc[m] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(p, ones)), _mm256_set1_ps(s), acc[m]);
        zterm[m] += s * static_cast<float>(z * a.sum[ab]);
      }
    }
    for (int m = 0; m < MR; ++m) y[(m0 + m) * ldy + n] = hsum(acc[m]) - zterm[m];
  }
}

void decode_int8_avx2(const Int4Weights& w, const Int8Activations& a, float* y, int64_t ldy, int64_t n0,
                      int64_t n1) {
  for (int64_t t0 = n0; t0 < n1; t0 += 64) {
    const int64_t t1 = std::min(n1, t0 + 64);
    for (int64_t m0 = 0; m0 < a.M; m0 += 4) {
      switch (std::min<int64_t>(4, a.M - m0)) {
        case 1: decode_int8_rows<1>(w, a, m0, y, ldy, t0, t1); break;
        case 2: decode_int8_rows<2>(w, a, m0, y, ldy, t0, t1); break;
        case 3: decode_int8_rows<3>(w, a, m0, y, ldy, t0, t1); break;
        default: decode_int8_rows<4>(w, a, m0, y, ldy, t0, t1); break;
      }
    }
  }
}

}  // namespace

// Dequantizes 8 rows x 8 k at a time and transposes them in registers into the sliver layout.
void pack_panel_avx2(const Int4Weights& w, int64_t n0, int64_t nr, int64_t k0, int64_t kc, float* dst) {
  const __m256i mask = _mm256_set1_epi32(15), magic = _mm256_set1_epi32(0x4B000000);
  const int64_t G = w.groups;
  for (int64_t t = 0; t * kSliver < nr; ++t) {
    float* sliver = dst + t * kc * kSliver;
    for (int64_t rg = 0; rg < kSliver; rg += 8) {
      const int64_t base = n0 + t * kSliver + rg;
      const int64_t rows = std::max<int64_t>(0, std::min<int64_t>(8, n0 + nr - base));
      for (int64_t s = k0 / 16; s < (k0 + kc) / 16; ++s) {
        const int64_t blk = s >> 3, g = (s * 16) / w.group;
        const __m128i cnt = _mm_cvtsi32_si128(static_cast<int>(4 * (s & 7)));
        for (int h = 0; h < 2; ++h) {
          __m256 r[8];
          for (int64_t j = 0; j < 8; ++j) {
            if (j >= rows) {
              r[j] = _mm256_setzero_ps();
              continue;
            }
            const int64_t n = base + j;
            const __m256i v = _mm256_srl_epi32(load_block_half(w.row(n) + blk * 64 + 32 * h), cnt);
            const __m256 f = _mm256_sub_ps(_mm256_castsi256_ps(_mm256_or_si256(_mm256_and_si256(v, mask), magic)),
                                           _mm256_set1_ps(8388608.f + w.zeros[n * G + g]));
            r[j] = _mm256_mul_ps(f, _mm256_set1_ps(w.scales[n * G + g]));
          }
          transpose8(r);
          float* out = sliver + (s * 16 + 8 * h - k0) * kSliver + rg;
          for (int kk = 0; kk < 8; ++kk) _mm256_store_ps(out + kk * kSliver, r[kk]);
        }
      }
    }
  }
}

const Int4Kernels kInt4Avx2 = {decode_avx2, dequant_panel_avx2, pack_panel_avx2, gemm_panel_avx2, decode_int8_avx2};

}  // namespace awq::detail

#pragma GCC pop_options
