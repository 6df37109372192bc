// arm64 only: elsewhere this file compiles to nothing (AWQ_ARM64, cpu_features.h).
#include "cpu_features.h"
#if AWQ_ARM64

// NEON int4 kernels (see int4_gemm.h for the layout): the exact decode, the dequantization the
// prefill multiplies on the NEON sgemm, and the int8 mode on widening multiplies (on SDOT where the
// core has DotProd: int4_gemm_neon_dotprod.cc).
//
// Unpacking, as on x86 (int4_gemm_avx2.cc): a nibble placed under the bits of 2^23 is the float
// 2^23 + q, and subtracting 2^23 + z gives q - z exactly. One bit-select (the nibble's 4 bits
// from the word, the rest from 2^23), a subtraction and a shift per 4 weights come before the
// FMA; a word vector's 8 nibbles are 8 steps of 16 consecutive inputs.
#include <arm_neon.h>

#include <algorithm>
#include <cstdint>

#include "int4_gemm.h"
#include "int4_int8_neon.inc"

namespace awq::detail {
namespace {

// q - z of each word's low nibble, as floats; then the words' next nibble moved down.
inline float32x4_t next_nibble(uint32x4_t& wv, uint32x4_t mask, uint32x4_t magic, float32x4_t zc) {
  const float32x4_t f = vsubq_f32(vreinterpretq_f32_u32(vbslq_u32(mask, wv, magic)), zc);
  wv = vshrq_n_u32(wv, 4);
  return f;
}

// The 16 words of block `blk` of a row, shifted right by 4 * nibble (the slot a group starts at).
inline void load_words(const uint8_t* row, int64_t blk, int nibble, uint32x4_t wv[4]) {
  const uint32_t* p = reinterpret_cast<const uint32_t*>(row + blk * 64);
  const int32x4_t cnt = vdupq_n_s32(-4 * nibble);
  for (int v = 0; v < 4; ++v) wv[v] = vshlq_u32(vld1q_u32(p + 4 * v), cnt);
}

// Decode: MR rows of x against NR output rows, the whole of `in`. Per group, the products of
// (q - z) with x are summed in fp32 and then scaled once, as in the x86 kernels.
template <int MR, int NR>
void decode_tile(const Int4Weights& w, const float* x, int64_t ldx, float* y, int64_t ldy, int64_t n0) {
  const int64_t G = w.groups, slots_per_group = w.group / 16;
  const uint8_t* rows[NR];
  for (int r = 0; r < NR; ++r) rows[r] = w.row(n0 + r);
  const uint32x4_t mask = vdupq_n_u32(15), magic = vdupq_n_u32(0x4B000000);
  float32x4_t tot[MR][NR];
  for (int m = 0; m < MR; ++m)
    for (int r = 0; r < NR; ++r) tot[m][r] = vdupq_n_f32(0.f);
  for (int64_t g = 0; g < G; ++g) {
    float32x4_t acc[MR][NR][4], zc[NR];
    for (int r = 0; r < NR; ++r) {
      zc[r] = vdupq_n_f32(8388608.f + static_cast<float>(w.zero(n0 + r, g)));
      for (int m = 0; m < MR; ++m)
        for (int v = 0; v < 4; ++v) acc[m][r][v] = vdupq_n_f32(0.f);
    }
    int64_t s = g * slots_per_group;
    const int64_t s1 = s + slots_per_group;
    while (s < s1) {
      // A group may start inside a 128-block (groups of 16 to 64): shift the words to its nibble.
      const int64_t blk = s >> 3;
      uint32x4_t wv[NR][4];
      for (int r = 0; r < NR; ++r) load_words(rows[r], blk, static_cast<int>(s & 7), wv[r]);
      for (int r = 0; r < NR; ++r) __builtin_prefetch(prefetch_target(w, rows[r], kPrefetchRows, blk));
      const int64_t send = std::min(s1, (blk + 1) * 8);
      for (; s < send; ++s) {
        const float* xs = x + s * 16;
#pragma GCC unroll 2
        for (int r = 0; r < NR; ++r) {
#pragma GCC unroll 4
          for (int v = 0; v < 4; ++v) {
            const float32x4_t f = next_nibble(wv[r][v], mask, magic, zc[r]);
#pragma GCC unroll 4
            for (int m = 0; m < MR; ++m) acc[m][r][v] = vfmaq_f32(acc[m][r][v], f, vld1q_f32(xs + m * ldx + 4 * v));
          }
        }
      }
    }
    for (int r = 0; r < NR; ++r) {
      const float sc = w.scale(n0 + r, g);
      for (int m = 0; m < MR; ++m) {
        const float32x4_t sum = vaddq_f32(vaddq_f32(acc[m][r][0], acc[m][r][1]), vaddq_f32(acc[m][r][2], acc[m][r][3]));
        tot[m][r] = vfmaq_n_f32(tot[m][r], sum, sc);
      }
    }
  }
  for (int m = 0; m < MR; ++m)
    for (int r = 0; r < NR; ++r) y[m * ldy + n0 + r] = vaddvq_f32(tot[m][r]);
}

// M = 1 with whole 128-blocks per group (the AWQ default): the arithmetic of decode_tile with a
// block's 8 nibble steps unrolled at compile time (bitwise the same results).
template <int NR>
void decode_tile_m1_g128(const Int4Weights& w, const float* x, float* y, int64_t n0) {
  const int64_t G = w.groups, blocks_per_group = w.group / 128;
  const uint8_t* rows[NR];
  for (int r = 0; r < NR; ++r) rows[r] = w.row(n0 + r);
  const uint32x4_t mask = vdupq_n_u32(15), magic = vdupq_n_u32(0x4B000000);
  float32x4_t tot[NR];
  for (int r = 0; r < NR; ++r) tot[r] = vdupq_n_f32(0.f);
  for (int64_t g = 0; g < G; ++g) {
    float32x4_t acc[NR][4], zc[NR];
    for (int r = 0; r < NR; ++r) {
      zc[r] = vdupq_n_f32(8388608.f + static_cast<float>(w.zero(n0 + r, g)));
      for (int v = 0; v < 4; ++v) acc[r][v] = vdupq_n_f32(0.f);
    }
    for (int64_t blk = g * blocks_per_group; blk < (g + 1) * blocks_per_group; ++blk) {
      const float* xb = x + blk * 128;
      uint32x4_t wv[NR][4];
      for (int r = 0; r < NR; ++r) {
        const uint32_t* p = reinterpret_cast<const uint32_t*>(rows[r] + blk * 64);
        for (int v = 0; v < 4; ++v) wv[r][v] = vld1q_u32(p + 4 * v);
      }
      for (int r = 0; r < NR; ++r) __builtin_prefetch(prefetch_target(w, rows[r], kPrefetchRows, blk));
#pragma GCC unroll 8
      for (int i = 0; i < 8; ++i) {
#pragma GCC unroll 2
        for (int r = 0; r < NR; ++r) {
#pragma GCC unroll 4
          for (int v = 0; v < 4; ++v)
            acc[r][v] = vfmaq_f32(acc[r][v], next_nibble(wv[r][v], mask, magic, zc[r]), vld1q_f32(xb + 16 * i + 4 * v));
        }
      }
    }
    for (int r = 0; r < NR; ++r) {
      const float32x4_t sum = vaddq_f32(vaddq_f32(acc[r][0], acc[r][1]), vaddq_f32(acc[r][2], acc[r][3]));
      tot[r] = vfmaq_n_f32(tot[r], sum, w.scale(n0 + r, g));
    }
  }
  for (int r = 0; r < NR; ++r) y[n0 + r] = vaddvq_f32(tot[r]);
}

// One row of x: two output rows at a time (8 word vectors in flight); more rows of x: one, so
// that the 4 x MR accumulators fit the 32 registers.
template <int MR>
void decode_rows(const Int4Weights& w, const float* x, int64_t ldx, float* y, int64_t ldy, int64_t n0, int64_t n1) {
  int64_t n = n0;
  if constexpr (MR == 1) {
    for (; n + 2 <= n1; n += 2) decode_tile<1, 2>(w, x, ldx, y, ldy, n);
  }
  for (; n < n1; ++n) decode_tile<MR, 1>(w, x, ldx, y, ldy, n);
}

void decode_neon(const Int4Weights& w, const float* x, int64_t ldx, int64_t M, float* y, int64_t ldy, int64_t n0,
                 int64_t n1) {
  if (M == 1 && w.group % 128 == 0) {
    int64_t n = n0;
    for (; n + 2 <= n1; n += 2) decode_tile_m1_g128<2>(w, x, y, n);
    for (; n < n1; ++n) decode_tile_m1_g128<1>(w, x, y, n);
    return;
  }
  for_each_decode_tile(M, n0, n1, [&](auto mr, int64_t m0, int64_t t0, int64_t t1) {
    decode_rows<decltype(mr)::value>(w, x + m0 * ldx, ldx, y + m0 * ldy, ldy, t0, t1);
  });
}

void dequant_rows_neon(const Int4Weights& w, int64_t n0, int64_t nr, int64_t k0, int64_t kc, float* dst, int64_t ld) {
  const uint32x4_t mask = vdupq_n_u32(15), magic = vdupq_n_u32(0x4B000000);
  for (int64_t r = 0; r < nr; ++r) {
    const int64_t n = n0 + r;
    float* out = dst + r * ld - k0;
    int64_t s = k0 / 16;
    const int64_t s1 = (k0 + kc) / 16;
    while (s < s1) {
      const int64_t blk = s >> 3;
      uint32x4_t wv[4];
      load_words(w.row(n), blk, static_cast<int>(s & 7), wv);
      const int64_t send = std::min(s1, (blk + 1) * 8);
      for (; s < send; ++s) {
        const int64_t g = (s * 16) / w.group;
        const float32x4_t zc = vdupq_n_f32(8388608.f + static_cast<float>(w.zero(n, g)));
        const float sc = w.scale(n, g);
        for (int v = 0; v < 4; ++v) vst1q_f32(out + s * 16 + 4 * v, vmulq_n_f32(next_nibble(wv[v], mask, magic, zc), sc));
      }
    }
  }
}

// ---- Int8 mode (int4_int8_neon.inc) ----

// Without DotProd (Cortex-A72, Graviton 1): the 16 products of nibbles (0..15) and activations
// (-127..127) of two halves fit int16 (at most 2 * 1905), so smull + smlal pair them and sadalp
// adds the pairs into the 32-bit lanes.
struct WideningDot {
  static inline void add(int32x4_t& d0, int32x4_t& d1, int8x16_t lo, int8x16_t xlo, int8x16_t hi, int8x16_t xhi) {
    d0 = vpadalq_s16(d0, vmlal_s8(vmull_s8(vget_low_s8(lo), vget_low_s8(xlo)), vget_low_s8(hi), vget_low_s8(xhi)));
    d1 = vpadalq_s16(d1, vmlal_high_s8(vmull_high_s8(lo, xlo), hi, xhi));
  }
};

void decode_int8_widening(const Int4Weights& w, const Int8Activations& a, float* y, int64_t ldy, int64_t n0,
                          int64_t n1) {
  int8_rows_neon<WideningDot>(w, a, y, ldy, n0, n1);
}

}  // namespace

const Int4Kernels& int4_kernels_neon() {
  static const Int4Kernels k = {decode_neon,
                                dequant_rows_neon,
                                cpu_features().dotprod ? decode_int8_sdot : decode_int8_widening,
                                nullptr,
                                0,
                                0,
                                nullptr,
                                nullptr,
                                nullptr};
  return k;
}

}  // namespace awq::detail

#endif  // AWQ_ARM64
