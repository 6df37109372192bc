// x86-64 only: elsewhere this file compiles to nothing (AWQ_X86, cpu_features.h).
#include "cpu_features.h"
#if AWQ_X86
#include "isa_target.h"

// AVX-512 int4 kernels (see int4_gemm.h for the layout, stats_avx2.cc for the include rule).
//
// One 512-bit vector is a whole 128-block of a row (16 words); vpermps with the word as index
// reads only its low 4 bits, so a 16-entry table holding (q - z) * s for the group turns a
// nibble into its dequantized weight in one instruction (no mask, no convert).
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "cpu_features.h"
#include "int4_gemm.h"

// GCC 12 reports the deliberately undefined vectors inside its own AVX-512 intrinsics.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#ifndef __clang__
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#ifndef AWQ_EMULATE_AVX512  // the emulated test build: native/tests/avx512_emulation.h
AWQ_TARGET_BEGIN("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")
#endif

namespace awq::detail {
namespace {

#include "int4_meta_x86.inc"
#include "transpose16_avx512.inc"

inline __m512i load_block(const uint8_t* p) { return _mm512_load_si512(reinterpret_cast<const void*>(p)); }

// kIotaMinusZ.v[z][i] = i - z: a group's table is then one multiply of a row of it (a load) by the
// scale, where converting z and subtracting took two more vector-pipe operations per group and
// row (M = 1 decode 1.02-1.05x faster from DRAM on Zen 4, same-process A/B).
// constexpr: built by the compiler, as no code of this file may run at load time on a CPU without
// AVX-512.
struct IotaMinusZ {
  alignas(64) float v[16][16] = {};
  constexpr IotaMinusZ() {
    for (int z = 0; z < 16; ++z)
      for (int i = 0; i < 16; ++i) v[z][i] = static_cast<float>(i - z);
  }
};
constexpr IotaMinusZ kIotaMinusZ;

inline __m512 group_table(const Int4Weights& w, int64_t n, int64_t g) {
  return _mm512_mul_ps(_mm512_load_ps(kIotaMinusZ.v[w.zero(n, g)]), _mm512_set1_ps(scale_f16c(w, n, g)));
}
// The same from a tile's unpacked metadata (row r of the tile).
inline __m512 group_table(const TileMeta& m, int r, int64_t g) {
  return _mm512_mul_ps(_mm512_load_ps(kIotaMinusZ.v[m.zero(r, g)]), _mm512_set1_ps(m.scale(r, g)));
}

// meta: rows [n0, n0 + NR) unpacked.
template <int MR, int NR>
void decode_tile(const Int4Weights& w, const TileMeta& meta, const float* x, int64_t ldx, float* y, int64_t ldy,
                 int64_t n0) {
  const int64_t G = w.groups, slots_per_group = w.group / 16;
  const uint8_t* rows[NR];
  for (int r = 0; r < NR; ++r) rows[r] = w.row(n0 + r);
  __m512 acc[MR][NR];
  for (int m = 0; m < MR; ++m)
    for (int r = 0; r < NR; ++r) acc[m][r] = _mm512_setzero_ps();
  for (int64_t g = 0; g < G; ++g) {
    __m512 lut[NR];
    for (int r = 0; r < NR; ++r) lut[r] = group_table(meta, r, g);
    int64_t s = g * slots_per_group;
    const int64_t s1 = s + slots_per_group;
    while (s < s1) {
      const int64_t blk = s >> 3;
      const __m128i cnt = _mm_cvtsi32_si128(static_cast<int>(4 * (s & 7)));
      __m512i wv[NR];
      for (int r = 0; r < NR; ++r) wv[r] = _mm512_srl_epi32(load_block(rows[r] + blk * 64), cnt);
      for (int r = 0; r < NR; ++r) _mm_prefetch(prefetch_target(w, rows[r], kPrefetchRows, blk), _MM_HINT_T0);
      const int64_t send = std::min(s1, (blk + 1) * 8);
      for (; s < send; ++s) {
        const float* xs = x + s * 16;
#pragma GCC unroll 4
        for (int r = 0; r < NR; ++r) {
          const __m512 f = _mm512_permutexvar_ps(wv[r], lut[r]);
          wv[r] = _mm512_srli_epi32(wv[r], 4);
#pragma GCC unroll 4
          for (int m = 0; m < MR; ++m) acc[m][r] = _mm512_fmadd_ps(f, _mm512_loadu_ps(xs + m * ldx), acc[m][r]);
        }
      }
    }
  }
  for (int m = 0; m < MR; ++m)
    for (int r = 0; r < NR; ++r) y[m * ldy + n0 + r] = _mm512_reduce_add_ps(acc[m][r]);
}

// decode_tile at M = 1 for groups of whole 128-blocks (group 128, the usual AWQ case): every
// block's 8 slots share one table and one fully unrolled loop, ~12% faster than the general slot
// walk above with the weights in L1 (Zen 4; at M = 4 it was 8% slower, so M > 1 keeps the walk).
// The prefetch goes to L2, not L1: from DRAM that was 6-13% faster on Zen 4 (same-process A/B,
// 2 threads), as the L1 then holds x and the rows in use rather than the next tile as well.
// The next group's tables are built one group ahead, so that their dependent loads (zero point,
// then its table row) are not on the path into the group's first lookups, and group 128 (one
// block per group) has its own instance without the block loop: together 1.08-1.10x from L2 and
// DRAM (Zen 4, same-process A/B, bit-identical results).
template <int NR, int kBlocksPerGroup>
void decode_tile_blocks(const Int4Weights& w, const TileMeta& meta, const float* x, float* y, int64_t n0) {
  const int64_t G = w.groups, bpg = kBlocksPerGroup > 0 ? kBlocksPerGroup : w.group / 128;
  const uint8_t* rows[NR];
  for (int r = 0; r < NR; ++r) rows[r] = w.row(n0 + r);
  __m512 acc[NR], lut[NR];
  for (int r = 0; r < NR; ++r) acc[r] = _mm512_setzero_ps(), lut[r] = group_table(meta, r, 0);
  for (int64_t g = 0; g < G; ++g) {
    __m512 next[NR];
    const int64_t g_next = std::min(g + 1, G - 1);
    for (int r = 0; r < NR; ++r) next[r] = group_table(meta, r, g_next);
    for (int64_t blk = g * bpg; blk < (g + 1) * bpg; ++blk) {
      __m512i wv[NR];
      for (int r = 0; r < NR; ++r) wv[r] = load_block(rows[r] + blk * 64);
      for (int r = 0; r < NR; ++r) _mm_prefetch(prefetch_target(w, rows[r], kPrefetchRows, blk), _MM_HINT_T1);
      const float* xb = x + blk * 128;
#pragma GCC unroll 8
      for (int s = 0; s < 8; ++s) {
        const __m512 xv = _mm512_loadu_ps(xb + s * 16);
#pragma GCC unroll 4
        for (int r = 0; r < NR; ++r) {
          acc[r] = _mm512_fmadd_ps(_mm512_permutexvar_ps(wv[r], lut[r]), xv, acc[r]);
          wv[r] = _mm512_srli_epi32(wv[r], 4);
        }
      }
    }
    for (int r = 0; r < NR; ++r) lut[r] = next[r];
  }
  for (int r = 0; r < NR; ++r) y[n0 + r] = _mm512_reduce_add_ps(acc[r]);
}

// kBlocksPerGroup: 1 for group 128, 0 for any other multiple of 128 (read from w).
template <int NR, int kBlocksPerGroup>
void decode_rows_blocks(const Int4Weights& w, const float* x, float* y, int64_t n0, int64_t n1) {
  TileMeta meta(w, NR);
  int64_t n = n0;
  for (; n + NR <= n1; n += NR) meta.unpack(n, NR), decode_tile_blocks<NR, kBlocksPerGroup>(w, meta, x, y, n);
  for (; n < n1; ++n) meta.unpack(n, 1), decode_tile_blocks<1, kBlocksPerGroup>(w, meta, x, y, n);
}

template <int MR, int NR>
void decode_rows(const Int4Weights& w, const float* x, int64_t ldx, float* y, int64_t ldy, int64_t n0, int64_t n1) {
  int64_t n = n0;
  if constexpr (MR == 1) {
    if (w.group == 128) return decode_rows_blocks<NR, 1>(w, x, y, n0, n1);
    if (w.group % 128 == 0) return decode_rows_blocks<NR, 0>(w, x, y, n0, n1);
  }
  TileMeta meta(w, NR);
  for (; n + NR <= n1; n += NR) meta.unpack(n, NR), decode_tile<MR, NR>(w, meta, x, ldx, y, ldy, n);
  for (; n < n1; ++n) meta.unpack(n, 1), decode_tile<MR, 1>(w, meta, x, ldx, y, ldy, n);
}

void decode_avx512(const Int4Weights& w, const float* x, int64_t ldx, int64_t M, float* y, int64_t ldy,
                   int64_t n0, int64_t n1) {
  for_each_decode_tile(M, n0, n1, [&](auto mr, int64_t m0, int64_t t0, int64_t t1) {
    constexpr int MR = decltype(mr)::value;
    decode_rows<MR, MR <= 2 ? 4 : 2>(w, x + m0 * ldx, ldx, y + m0 * ldy, ldy, t0, t1);
  });
}

void dequant_panel_avx512(const Int4Weights& w, int64_t n0, int64_t nr, int64_t k0, int64_t kc, float* dst,
                          int64_t ld) {
  for (int64_t r = 0; r < nr; ++r) {
    const int64_t n = n0 + r;
    const uint8_t* row = w.row(n);
    float* out = dst + r * ld - k0;
    int64_t s = k0 / 16;
    const int64_t s1 = (k0 + kc) / 16;
    int64_t table_group = -1;
    __m512 lut = _mm512_setzero_ps();
    while (s < s1) {
      const int64_t blk = s >> 3;
      __m512i wv = _mm512_srl_epi32(load_block(row + blk * 64), _mm_cvtsi32_si128(static_cast<int>(4 * (s & 7))));
      const int64_t send = std::min(s1, (blk + 1) * 8);
      for (; s < send; ++s) {
        const int64_t g = (s * 16) / w.group;
        if (g != table_group) lut = group_table(w, n, g), table_group = g;
        _mm512_storeu_ps(out + s * 16, _mm512_permutexvar_ps(wv, lut));
        wv = _mm512_srli_epi32(wv, 4);
      }
    }
  }
}

// One 32-lane sgemm B micro-panel (dst[s * 32 + l] = dequantize(W)[n0 + l, k0 + s]), straight
// from the packed weights: per 16 inputs and 16 rows, the rows' table lookups (as in the decode),
// then a 16 x 16 transpose turns them into 16 steps of the panel. This replaces dequantizing
// rows into a staging block and the sgemm packer's transposing copy of it.
void dequant_panel32_avx512(const Int4Weights& w, int64_t n0, int lanes, int64_t k0, int64_t kc, float* dst) {
  const int64_t slots_per_group = w.group / 16, s0 = k0 / 16, s1 = (k0 + kc) / 16;
  for (int half = 0; half < 2; ++half) {
    const int l0 = 16 * half, rows = std::max(0, std::min(16, lanes - l0));
    float* out = dst + l0;
    if (rows == 0) {
      for (int64_t s = 0; s < kc; ++s) _mm512_store_ps(out + s * 32, _mm512_setzero_ps());
      continue;
    }
    __m512 lut[16];
    int64_t table_group = -1;
    for (int64_t s = s0; s < s1; ++s) {
      const int64_t g = s / slots_per_group;
      if (g != table_group) {
        for (int r = 0; r < rows; ++r) lut[r] = group_table(w, n0 + l0 + r, g);
        table_group = g;
      }
      const int64_t blk = s >> 3;
      const __m128i cnt = _mm_cvtsi32_si128(static_cast<int>(4 * (s & 7)));
      __m512i v[16];
      for (int r = 0; r < 16; ++r)
        v[r] = r < rows ? _mm512_castps_si512(_mm512_permutexvar_ps(
                              _mm512_srl_epi32(load_block(w.row(n0 + l0 + r) + blk * 64), cnt), lut[r]))
                        : _mm512_setzero_si512();
      transpose16x16(v);
      float* o = out + (s * 16 - k0) * 32;
      for (int t = 0; t < 16; ++t) _mm512_store_ps(o + t * 32, _mm512_castsi512_ps(v[t]));
    }
  }
}

// Int8 mode without VNNI: maddubs (u8 nibbles x s8 activations) then madd to 32 bits.
template <int MR>
void decode_int8_rows(const Int4Weights& w, const Int8Activations& a, int64_t m0, float* y, int64_t ldy,
                      int64_t n0, int64_t n1) {
  const __m512i low = _mm512_set1_epi8(15);
  const __m512i ones = _mm512_set1_epi16(1);
  const int64_t bpg = w.group / 128;
  TileMeta meta(w, 1);
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t* row = w.row(n);
    meta.unpack(n, 1);
    __m512 acc[MR];
    float zterm[MR];
    for (int m = 0; m < MR; ++m) acc[m] = _mm512_setzero_ps(), zterm[m] = 0.f;
    for (int64_t b = 0; b < w.blocks; ++b) {
      _mm_prefetch(prefetch_target(w, row, kPrefetchRows, b), _MM_HINT_T0);
      const __m512i v = load_block(row + b * 64);
      const __m512i lo = _mm512_and_si512(v, low), hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), low);
      const float sw = meta.scale(0, b / bpg);
      const int z = meta.zero(0, b / bpg);
      for (int m = 0; m < MR; ++m) {
        const int64_t ab = (m0 + m) * a.blocks + b;
        const uint8_t* xq = a.q.data() + ab * 128;
        const __m512i p = _mm512_add_epi16(_mm512_maddubs_epi16(lo, load_block(xq)),
                                           _mm512_maddubs_epi16(hi, load_block(xq + 64)));
        const float s = sw * a.scale[ab];
        acc[m] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_madd_epi16(p, ones)), _mm512_set1_ps(s), acc[m]);
        zterm[m] += s * static_cast<float>(z * a.sum[ab]);
      }
    }
    for (int m = 0; m < MR; ++m) y[(m0 + m) * ldy + n] = _mm512_reduce_add_ps(acc[m]) - zterm[m];
  }
}

void decode_int8_avx512(const Int4Weights& w, const Int8Activations& a, float* y, int64_t ldy, int64_t n0,
                        int64_t n1) {
  if (cpu_features().avx512vnni) return decode_int8_avx512vnni(w, a, y, ldy, n0, n1);
  for_each_decode_tile(a.M, n0, n1, [&](auto mr, int64_t m0, int64_t t0, int64_t t1) {
    decode_int8_rows<decltype(mr)::value>(w, a, m0, y, ldy, t0, t1);
  });
}

void prefill_int8_avx512(const Int4Weights& w, const Int8Activations& a, float* y, int64_t ldy, int64_t n0,
                         int64_t n1) {
  if (cpu_features().avx512vnni) return prefill_int8_avx512vnni(w, a, y, ldy, n0, n1);
  decode_int8_avx512(w, a, y, ldy, n0, n1);
}

}  // namespace

const Int4Kernels kInt4Avx512 = {decode_avx512, dequant_panel_avx512, decode_int8_avx512, dequant_panel32_avx512, 32, 16,
                                 nullptr,       nullptr,              prefill_int8_avx512};

}  // namespace awq::detail

#pragma GCC diagnostic pop
#ifndef AWQ_EMULATE_AVX512
AWQ_TARGET_END()
#endif

#endif  // AWQ_X86
