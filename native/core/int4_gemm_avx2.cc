// AVX2 + FMA int4 kernels (see int4_gemm.h for the layout). Standard headers first, then the
// target pragma (the rule of stats_avx2.cc).
//
// Unpacking without shuffles (decode, dequantization): a nibble masked out of a 32-bit word and
// OR-ed into the bits of 2^23 is the float 2^23 + q; subtracting 2^23 + z gives q - z exactly.
// So one weight costs and / or / sub (and a shift per 8 nibbles) before its FMA. Decode at
// M <= 3 with groups of 128 takes byte lookups instead (decode_permuted, below): fewer
// operations per weight, for activations permuted once per call.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
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

// ---- Exact decode through byte lookups (group % 128 == 0) ----
//
// Per row, group and 32-byte half of a block: the low and the high nibbles are masked into bytes,
// and one vpshufb with the group's table (byte b holds b - z) turns each into the exact q - z,
// 32 weights per instruction. A second vpshufb moves four of those bytes per 128-bit lane into
// the top byte of a dword (zeros below), so vcvtdq2ps gives (q - z) * 2^24 exactly; x, prepared
// once per call, is permuted into that order and scaled by 2^-24. Per 8 weights: 1 spread, 1
// convert, 1 FMA and a quarter of the masks and lookups, against 5 operations for next_nibble's
// path: at M = 1 it reaches the streaming floor on Zen 3 where next_nibble's path reached ~65%.

alignas(32) constexpr int8_t kMinusZeroTables[16][32] = {
#define AWQ_ROW(z) {0 - z, 1 - z, 2 - z, 3 - z, 4 - z, 5 - z, 6 - z, 7 - z, 8 - z, 9 - z, 10 - z, 11 - z, 12 - z, 13 - z, 14 - z, 15 - z, \
                    0 - z, 1 - z, 2 - z, 3 - z, 4 - z, 5 - z, 6 - z, 7 - z, 8 - z, 9 - z, 10 - z, 11 - z, 12 - z, 13 - z, 14 - z, 15 - z}
    AWQ_ROW(0), AWQ_ROW(1), AWQ_ROW(2),  AWQ_ROW(3),  AWQ_ROW(4),  AWQ_ROW(5),  AWQ_ROW(6),  AWQ_ROW(7),
    AWQ_ROW(8), AWQ_ROW(9), AWQ_ROW(10), AWQ_ROW(11), AWQ_ROW(12), AWQ_ROW(13), AWQ_ROW(14), AWQ_ROW(15)};
#undef AWQ_ROW

// Spread t: in each 128-bit lane, dword d takes byte 4t + d of the lane as its top byte (control
// bytes with the high bit set write zero).
alignas(32) constexpr int8_t kSpread[4][32] = {
#define AWQ_S(t, d) -128, -128, -128, 4 * t + d
#define AWQ_SPREAD(t) {AWQ_S(t, 0), AWQ_S(t, 1), AWQ_S(t, 2), AWQ_S(t, 3), AWQ_S(t, 0), AWQ_S(t, 1), AWQ_S(t, 2), AWQ_S(t, 3)}
    AWQ_SPREAD(0), AWQ_SPREAD(1), AWQ_SPREAD(2), AWQ_SPREAD(3)};
#undef AWQ_SPREAD
#undef AWQ_S

// Where decode_permuted_rows produces weight k (0..127) of a block: half h (32 bytes = words
// 8h..8h+7), nibble set s (0: low nibbles, 1: high), spread t, element e = 4l + d (lane l, dword
// d). That element is byte 4t + d of lane l of the half, i.e. byte c = d of word j = 8h + 4l + t,
// whose nibbles 2c + s hold k = 16 (2c + s) + j (int4_gemm.h).
constexpr int permuted_position(int k) {
  const int i = k >> 4, j = k & 15;
  const int c = i >> 1, s = i & 1, h = j >> 3, l = (j >> 2) & 1, t = j & 3;
  return 64 * h + 32 * s + 8 * t + 4 * l + c;
}
constexpr float kPermutedScale = 1.f / 16777216.f;  // 2^-24: the converted weights carry 2^24

bool permute_x_avx2(const float* x, int64_t M, int64_t in, PermutedActivations& a) {
  for (int64_t i = 0; i < M * in; ++i)
    if (x[i] != 0.f && std::fabs(x[i]) < 0x1p-100f) return false;  // x * 2^-24 would be subnormal
  a.M = M;
  a.blocks = in / 128;
  a.x.resize(static_cast<size_t>(M * in));
  for (int64_t m = 0; m < M; ++m)
    for (int64_t b = 0; b < a.blocks; ++b) {
      const float* src = x + m * in + b * 128;
      float* dst = a.x.data() + m * in + b * 128;
      for (int k = 0; k < 128; ++k) dst[permuted_position(k)] = src[k] * kPermutedScale;
    }
  return true;
}

// One 128-block of one output row against the MR rows of permuted x (xb: the block in row 0).
template <int MR>
inline void permuted_block(const uint8_t* wb, __m256i table, const float* xb, int64_t ldx, __m256 (&acc)[MR][2]) {
  const __m256i low = _mm256_set1_epi8(15);
#pragma GCC unroll 2
  for (int h = 0; h < 2; ++h) {
    const __m256i v = load_block_half(wb + 32 * h);
    const __m256i lo = _mm256_shuffle_epi8(table, _mm256_and_si256(v, low));
    const __m256i hi = _mm256_shuffle_epi8(table, _mm256_and_si256(_mm256_srli_epi16(v, 4), low));
#pragma GCC unroll 4
    for (int t = 0; t < 4; ++t) {
      const __m256i spread = _mm256_load_si256(reinterpret_cast<const __m256i*>(kSpread[t]));
      const __m256 flo = _mm256_cvtepi32_ps(_mm256_shuffle_epi8(lo, spread));
      const __m256 fhi = _mm256_cvtepi32_ps(_mm256_shuffle_epi8(hi, spread));
#pragma GCC unroll 4
      for (int m = 0; m < MR; ++m) {
        const float* xm = xb + m * ldx + 64 * h + 8 * t;
        acc[m][0] = _mm256_fmadd_ps(flo, _mm256_loadu_ps(xm), acc[m][0]);
        acc[m][1] = _mm256_fmadd_ps(fhi, _mm256_loadu_ps(xm + 32), acc[m][1]);
      }
    }
  }
}

// The MR = a.M rows of x against output rows [n0, n1), one output row at a time: a second row in
// flight needs more than AVX2's 16 vector registers (measured 25% slower at M = 1). The loop is
// close to the front end's limit, so the common group of 128 (one block per group) gets a loop
// without the inner block loop's bookkeeping (about 15% faster at M = 1 on Zen 3).
template <int MR, bool kOneBlockPerGroup>
void decode_permuted_rows(const Int4Weights& w, const PermutedActivations& a, float* y, int64_t ldy, int64_t n0,
                          int64_t n1) {
  const int64_t G = w.groups, blocks_per_group = kOneBlockPerGroup ? 1 : w.group / 128, in = a.blocks * 128;
  const float* x = a.x.data();
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t* row = w.row(n);
    const uint8_t* zeros = w.zeros.data() + n * G;
    const float* scales = w.scales.data() + n * G;
    __m256 tot[MR];
    for (int m = 0; m < MR; ++m) tot[m] = _mm256_setzero_ps();
    for (int64_t g = 0; g < G; ++g) {
      const __m256i table = _mm256_load_si256(reinterpret_cast<const __m256i*>(kMinusZeroTables[zeros[g]]));
      __m256 acc[MR][2];
      for (int m = 0; m < MR; ++m) acc[m][0] = acc[m][1] = _mm256_setzero_ps();
      if constexpr (kOneBlockPerGroup) {
        _mm_prefetch(prefetch_target(w, row, kPrefetchRows, g), _MM_HINT_T0);
        permuted_block<MR>(row + g * 64, table, x + g * 128, in, acc);
      } else {
        for (int64_t blk = g * blocks_per_group; blk < (g + 1) * blocks_per_group; ++blk) {
          _mm_prefetch(prefetch_target(w, row, kPrefetchRows, blk), _MM_HINT_T0);
          permuted_block<MR>(row + blk * 64, table, x + blk * 128, in, acc);
        }
      }
      const __m256 sc = _mm256_set1_ps(scales[g]);
      for (int m = 0; m < MR; ++m) tot[m] = _mm256_fmadd_ps(_mm256_add_ps(acc[m][0], acc[m][1]), sc, tot[m]);
    }
    for (int m = 0; m < MR; ++m) y[m * ldy + n] = hsum(tot[m]);
  }
}

template <bool kOneBlockPerGroup>
void decode_permuted_m(const Int4Weights& w, const PermutedActivations& a, float* y, int64_t ldy, int64_t n0,
                           int64_t n1) {
  switch (a.M) {
    case 1: decode_permuted_rows<1, kOneBlockPerGroup>(w, a, y, ldy, n0, n1); break;
    case 2: decode_permuted_rows<2, kOneBlockPerGroup>(w, a, y, ldy, n0, n1); break;
    default: decode_permuted_rows<3, kOneBlockPerGroup>(w, a, y, ldy, n0, n1); break;
  }
}

void decode_permuted_avx2(const Int4Weights& w, const PermutedActivations& a, float* y, int64_t ldy, int64_t n0,
                          int64_t n1) {
  static_assert(kPermutedDecodeMaxM == 3, "decode_permuted_m instantiates M = 1..3");
  if (w.group == 128) decode_permuted_m<true>(w, a, y, ldy, n0, n1);
  else decode_permuted_m<false>(w, a, y, ldy, n0, n1);
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

const Int4Kernels kInt4Avx2 = {decode_avx2,          dequant_panel_avx2, decode_int8_avx2, dequant_panel16_avx2,
                                permute_x_avx2, decode_permuted_avx2};

}  // namespace awq::detail

#pragma GCC pop_options
