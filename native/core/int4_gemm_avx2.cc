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

// q - z as floats for the low nibble of each word (the float 2^23 + q minus 2^23 + z, exact),
// then the words' next nibble moved down.
inline __m256 next_nibble(__m256i& wv, __m256i mask, __m256i magic, __m256 zc) {
  const __m256 f = _mm256_sub_ps(_mm256_castsi256_ps(_mm256_or_si256(_mm256_and_si256(wv, mask), magic)), zc);
  wv = _mm256_srli_epi32(wv, 4);
  return f;
}

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
      for (int r = 0; r < NR; ++r) _mm_prefetch(prefetch_target(w, rows[r], kPrefetchRows, blk), _MM_HINT_T0);
      const int64_t send = std::min(s1, (blk + 1) * 8);
      for (; s < send; ++s) {
        const float* xs = x + s * 16;
#pragma GCC unroll 4
        for (int r = 0; r < NR; ++r) {
#pragma GCC unroll 2
          for (int h = 0; h < 2; ++h) {
            const __m256 f = next_nibble(wv[r][h], mask, magic, zc[r]);
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

// M = 1 with whole 128-blocks per group (group % 128 == 0, the AWQ default): the arithmetic of
// decode_tile with the 8 nibble steps of a block unrolled at compile time; bitwise the same
// results, 13% less time at 4096 x 11008 on Zen 3 (interleaved A/B, 2 threads).
template <int NR>
void decode_tile_m1_g128(const Int4Weights& w, const float* x, float* y, int64_t n0) {
  const int64_t G = w.groups, blocks_per_group = w.group / 128;
  const uint8_t* rows[NR];
  for (int r = 0; r < NR; ++r) rows[r] = w.row(n0 + r);
  const __m256i mask = _mm256_set1_epi32(15), magic = _mm256_set1_epi32(0x4B000000);
  __m256 tot[NR];
  for (int r = 0; r < NR; ++r) tot[r] = _mm256_setzero_ps();
  for (int64_t g = 0; g < G; ++g) {
    __m256 acc[NR][2], zc[NR];
    for (int r = 0; r < NR; ++r) {
      acc[r][0] = acc[r][1] = _mm256_setzero_ps();
      zc[r] = _mm256_set1_ps(8388608.f + w.zeros[(n0 + r) * G + g]);
    }
    for (int64_t blk = g * blocks_per_group; blk < (g + 1) * blocks_per_group; ++blk) {
      const float* xb = x + blk * 128;
      __m256i wv[NR][2];
      for (int r = 0; r < NR; ++r)
        for (int h = 0; h < 2; ++h) wv[r][h] = load_block_half(rows[r] + blk * 64 + 32 * h);
      for (int r = 0; r < NR; ++r) _mm_prefetch(prefetch_target(w, rows[r], kPrefetchRows, blk), _MM_HINT_T0);
#pragma GCC unroll 8
      for (int i = 0; i < 8; ++i) {
#pragma GCC unroll 4
        for (int r = 0; r < NR; ++r) {
#pragma GCC unroll 2
          for (int h = 0; h < 2; ++h) {
            acc[r][h] = _mm256_fmadd_ps(next_nibble(wv[r][h], mask, magic, zc[r]), _mm256_loadu_ps(xb + 16 * i + 8 * h),
                                        acc[r][h]);
          }
        }
      }
    }
    for (int r = 0; r < NR; ++r)
      tot[r] = _mm256_fmadd_ps(_mm256_add_ps(acc[r][0], acc[r][1]), _mm256_set1_ps(w.scales[(n0 + r) * G + g]), tot[r]);
  }
  for (int r = 0; r < NR; ++r) y[n0 + r] = hsum(tot[r]);
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
  if (M == 1 && w.group % 128 == 0) {
    int64_t n = n0;
    for (; n + 2 <= n1; n += 2) decode_tile_m1_g128<2>(w, x, y, n);
    for (; n < n1; ++n) decode_tile_m1_g128<1>(w, x, y, n);
    return;
  }
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
        _mm256_storeu_ps(out + s * 16, _mm256_mul_ps(next_nibble(w0, mask, magic, zc), sc));
        _mm256_storeu_ps(out + s * 16 + 8, _mm256_mul_ps(next_nibble(w1, mask, magic, zc), sc));
      }
    }
  }
}

#include "gemm_pack_x86.inc"  // transpose8x8

// One 16-lane sgemm B micro-panel: per 16 k (one nibble of a block's words), 8 rows' two
// 8-wide vectors are dequantized as dequant_panel_avx2 does and transposed in registers into 16
// steps of those 8 lanes; the second 8 rows fill the other half of each step.
void dequant_panel16_avx2(const Int4Weights& w, int64_t n0, int lanes, int64_t k0, int64_t kc, float* dst) {
  const __m256i mask = _mm256_set1_epi32(15), magic = _mm256_set1_epi32(0x4B000000);
  const __m256 zero = _mm256_setzero_ps();
  const int64_t G = w.groups;
  for (int half = 0; half < 2; ++half) {
    const int l0 = 8 * half;
    float* out = dst + l0;
    if (lanes <= l0) {
      for (int64_t s = 0; s < kc; ++s) _mm256_store_ps(out + s * 16, zero);
      continue;
    }
    const int rows = std::min(8, lanes - l0);
    for (int64_t s = k0 / 16; s < (k0 + kc) / 16; ++s) {
      const int64_t blk = s >> 3, nib = s & 7, g = (s * 16) / w.group;
      __m256 lo[8], hi[8];
      for (int r = 0; r < 8; ++r) {
        if (r >= rows) {
          lo[r] = hi[r] = zero;
          continue;
        }
        const int64_t n = n0 + l0 + r;
        const uint8_t* p = w.row(n) + blk * 64;
        const __m128i cnt = _mm_cvtsi32_si128(static_cast<int>(4 * nib));
        __m256i w0 = _mm256_srl_epi32(load_block_half(p), cnt), w1 = _mm256_srl_epi32(load_block_half(p + 32), cnt);
        const __m256 zc = _mm256_set1_ps(8388608.f + w.zeros[n * G + g]);
        const __m256 sc = _mm256_set1_ps(w.scales[n * G + g]);
        lo[r] = _mm256_mul_ps(next_nibble(w0, mask, magic, zc), sc);
        hi[r] = _mm256_mul_ps(next_nibble(w1, mask, magic, zc), sc);
      }
      transpose8x8(lo);
      transpose8x8(hi);
      float* o = out + (s * 16 - k0) * 16;
      for (int t = 0; t < 8; ++t) _mm256_store_ps(o + t * 16, lo[t]);
      for (int t = 0; t < 8; ++t) _mm256_store_ps(o + (8 + t) * 16, hi[t]);
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
      _mm_prefetch(prefetch_target(w, row, kPrefetchRows, b), _MM_HINT_T0);
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

const Int4Kernels kInt4Avx2 = {decode_avx2, dequant_panel_avx2, decode_int8_avx2, dequant_panel16_avx2};

}  // namespace awq::detail

#pragma GCC pop_options
