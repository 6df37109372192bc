// arm64 only: elsewhere this file compiles to nothing (AWQ_ARM64, cpu_features.h).
#include "cpu_features.h"
#if AWQ_ARM64

// NEON int4 kernels (see int4_gemm.h for the layout): the exact decode, the dequantization the
// prefill multiplies on the NEON sgemm, and the int8 mode on widening multiplies (on SDOT where the
// core has DotProd: int4_gemm_neon_dotprod.cc).
//
// Unpacking: a word vector's 8 nibbles are 8 steps of 16 consecutive inputs. The decode masks
// nibble I in place and converts it as a fixed-point number (one ucvtf), then subtracts z: and,
// convert, subtract before each FMA (nibble_minus_zero). The dequantization for the prefill shifts
// instead (as on x86, int4_gemm_avx2.cc: a nibble placed
// under the bits of 2^23 is the float 2^23 + q, and subtracting 2^23 + z gives q - z exactly), as
// its start inside a block is known only at run time.
#include <arm_neon.h>

#include <algorithm>
#include <cstdint>

#include "int4_gemm.h"
#include "int4_int8_neon.inc"

namespace awq::detail {
namespace {

// Dequantization: q - z of each word's low nibble, as floats; then the words' next nibble moved down.
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

// q - z of nibble I of each word, as floats: the nibble masked in place and converted as a
// fixed-point number with as many fraction bits as it sits above bit 0 (one ucvtf), which is exact.
// kShifted: the words are shifted down a byte after every odd step (decode_step), so nibble I sits
// in bits 4 (I & 1) to 4 (I & 1) + 3 and two masks serve all steps; otherwise each step has its own
// mask and nothing is shifted. One or two rows of x take the 8 masks (M = 1: 1.58 instructions per
// weight against 1.68 with the shifts, counted under qemu); with 3 and 4 rows GCC 12 kept all 8
// masks in registers and spilled the accumulators.
template <int I, bool kShifted>
inline float32x4_t nibble_minus_zero(uint32x4_t wv, float32x4_t z) {
  constexpr int bit = kShifted ? 4 * (I % 2) : 4 * I;
  const uint32x4_t q = vandq_u32(wv, vdupq_n_u32(15u << bit));
  if constexpr (bit == 0) return vsubq_f32(vcvtq_f32_u32(q), z);
  else return vsubq_f32(vcvtq_n_f32_u32(q, bit), z);
}

// MR rows of x times (q - z) of one output row over nibble step I of one 128-block (16 inputs).
// xr[m]: row m of x at the block's first input.
template <int I, int MR>
inline void decode_step(uint32x4_t (&wv)[4], float32x4_t zc, const float* const (&xr)[MR], float32x4_t (&acc)[MR][4]) {
  constexpr bool kShifted = MR >= 3;
  for (int v = 0; v < 4; ++v) {
    const float32x4_t f = nibble_minus_zero<I, kShifted>(wv[v], zc);
    for (int m = 0; m < MR; ++m) acc[m][v] = vfmaq_f32(acc[m][v], f, vld1q_f32(xr[m] + 16 * I + 4 * v));
    if constexpr (kShifted && I % 2 == 1) wv[v] = vshrq_n_u32(wv[v], 8);
  }
}

// Rows of x at input k0. The pointers are made opaque to the optimizer: from `x + m * ldx + const`
// in the unrolled steps, GCC 12 derived one induction variable per load (128 at 4 rows of x) and
// spilled them all to the stack.
template <int MR>
inline void x_rows(const float* x, int64_t ldx, int64_t k0, const float* (&xr)[MR]) {
  for (int m = 0; m < MR; ++m) {
    xr[m] = x + m * ldx + k0;
    if constexpr (MR > 1) __asm__("" : "+r"(xr[m]));
  }
}

inline void load_block(const Int4Weights& w, const uint8_t* row, int64_t blk, uint32x4_t (&wv)[4]) {
  const uint32_t* p = reinterpret_cast<const uint32_t*>(row + blk * 64);
  for (int v = 0; v < 4; ++v) wv[v] = vld1q_u32(p + 4 * v);
  __builtin_prefetch(prefetch_target(w, row, kPrefetchRows, blk));
}

// Decode: MR rows of x against output row n, the whole of `in`, a 128-block (8 nibble steps of
// 16 inputs) at a time. Per group, the products of (q - z) with x are summed in fp32 and then
// scaled once, as in the x86 kernels. kWholeBlocks (group % 128 == 0, the AWQ default): groups
// start at blocks. Otherwise a group of 16 to 64 inputs ends inside a block, at a nibble step,
// and `in` may end inside one. One output row at a time: two at M = 1 (x loaded once for both)
// needed 25 live vectors besides the masks, and GCC 12 spilled the accumulators at every step
// (1.9 instructions per weight against 1.6 for one row, counted under qemu).
template <int MR, bool kWholeBlocks>
[[gnu::noinline]] void decode_row(const Int4Weights& w, const float* x, int64_t ldx, float* y, int64_t ldy, int64_t n) {
  const int64_t slots = w.in / 16, slots_per_group = w.group / 16;
  const uint8_t* row = w.row(n);
  float32x4_t tot[MR], acc[MR][4];
  for (int m = 0; m < MR; ++m) tot[m] = vdupq_n_f32(0.f);
  int64_t blk = 0, step = 0;  // generic form: the next nibble step of block blk, whose words wv holds
  uint32x4_t wv[4];
  for (int64_t g = 0; g < w.groups; ++g) {
    const float32x4_t zc = vdupq_n_f32(static_cast<float>(w.zero(n, g)));
    for (int m = 0; m < MR; ++m)
      for (int v = 0; v < 4; ++v) acc[m][v] = vdupq_n_f32(0.f);
    if constexpr (kWholeBlocks) {
      for (int64_t b = g * slots_per_group / 8; b < (g + 1) * slots_per_group / 8; ++b) {
        load_block(w, row, b, wv);
        const float* xr[MR];
        x_rows(x, ldx, b * 128, xr);
        decode_step<0>(wv, zc, xr, acc), decode_step<1>(wv, zc, xr, acc), decode_step<2>(wv, zc, xr, acc);
        decode_step<3>(wv, zc, xr, acc), decode_step<4>(wv, zc, xr, acc), decode_step<5>(wv, zc, xr, acc);
        decode_step<6>(wv, zc, xr, acc), decode_step<7>(wv, zc, xr, acc);
      }
    } else {
      // One nibble step at a time (the step number is a compile-time constant of the unpacking).
      for (int64_t s = g * slots_per_group; s < std::min(slots, (g + 1) * slots_per_group); ++s) {
        if (step == 0) load_block(w, row, blk, wv);
        const float* xr[MR];
        x_rows(x, ldx, blk * 128, xr);
        switch (step) {
          case 0: decode_step<0>(wv, zc, xr, acc); break;
          case 1: decode_step<1>(wv, zc, xr, acc); break;
          case 2: decode_step<2>(wv, zc, xr, acc); break;
          case 3: decode_step<3>(wv, zc, xr, acc); break;
          case 4: decode_step<4>(wv, zc, xr, acc); break;
          case 5: decode_step<5>(wv, zc, xr, acc); break;
          case 6: decode_step<6>(wv, zc, xr, acc); break;
          default: decode_step<7>(wv, zc, xr, acc); break;
        }
        if (++step == 8) step = 0, ++blk;
      }
    }
    const float sc = scale_f16(w, n, g);
    for (int m = 0; m < MR; ++m)
      tot[m] = vfmaq_n_f32(tot[m], vaddq_f32(vaddq_f32(acc[m][0], acc[m][1]), vaddq_f32(acc[m][2], acc[m][3])), sc);
  }
  for (int m = 0; m < MR; ++m) y[m * ldy + n] = vaddvq_f32(tot[m]);
}

void decode_neon(const Int4Weights& w, const float* x, int64_t ldx, int64_t M, float* y, int64_t ldy, int64_t n0,
                 int64_t n1) {
  const bool whole_blocks = w.group % 128 == 0;
  for_each_decode_tile(M, n0, n1, [&](auto mr, int64_t m0, int64_t t0, int64_t t1) {
    constexpr int MR = decltype(mr)::value;
    for (int64_t n = t0; n < t1; ++n) {
      if (whole_blocks) decode_row<MR, true>(w, x + m0 * ldx, ldx, y + m0 * ldy, ldy, n);
      else decode_row<MR, false>(w, x + m0 * ldx, ldx, y + m0 * ldy, ldy, n);
    }
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
        const float sc = scale_f16(w, n, g);
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
