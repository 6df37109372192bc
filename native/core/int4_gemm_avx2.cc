// x86-64 only: elsewhere this file compiles to nothing (AWQ_X86, cpu_features.h).
#include "cpu_features.h"
#if AWQ_X86
#include "isa_target.h"

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
#include <vector>

#include "int4_gemm.h"

AWQ_TARGET_BEGIN("avx2,fma,f16c")

namespace awq::detail {
namespace {

#include "int4_meta_x86.inc"

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
// meta: rows [n0, n0 + NR) unpacked.
template <int MR, int NR>
void decode_tile(const Int4Weights& w, const TileMeta& meta, const float* x, int64_t ldx, float* y, int64_t ldy,
                 int64_t n0) {
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
    for (int r = 0; r < NR; ++r) zc[r] = _mm256_set1_ps(8388608.f + meta.zero(r, g));
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
      const __m256 sc = _mm256_set1_ps(meta.scale(r, g));
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
void decode_tile_m1_g128(const Int4Weights& w, const TileMeta& meta, const float* x, float* y, int64_t n0) {
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
      zc[r] = _mm256_set1_ps(8388608.f + meta.zero(r, g));
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
      tot[r] = _mm256_fmadd_ps(_mm256_add_ps(acc[r][0], acc[r][1]), _mm256_set1_ps(meta.scale(r, g)), tot[r]);
  }
  for (int r = 0; r < NR; ++r) y[n0 + r] = hsum(tot[r]);
}

template <int MR>
void decode_rows(const Int4Weights& w, const float* x, int64_t ldx, float* y, int64_t ldy, int64_t n0, int64_t n1) {
  TileMeta meta(w, 2);
  int64_t n = n0;
  if constexpr (MR == 1) {
    for (; n + 2 <= n1; n += 2) meta.unpack(n, 2), decode_tile<1, 2>(w, meta, x, ldx, y, ldy, n);
  }
  for (; n < n1; ++n) meta.unpack(n, 1), decode_tile<MR, 1>(w, meta, x, ldx, y, ldy, n);
}

void decode_avx2(const Int4Weights& w, const float* x, int64_t ldx, int64_t M, float* y, int64_t ldy,
                 int64_t n0, int64_t n1) {
  if (M == 1 && w.group % 128 == 0) {
    TileMeta meta(w, 2);
    int64_t n = n0;
    for (; n + 2 <= n1; n += 2) meta.unpack(n, 2), decode_tile_m1_g128<2>(w, meta, x, y, n);
    for (; n < n1; ++n) meta.unpack(n, 1), decode_tile_m1_g128<1>(w, meta, x, y, n);
    return;
  }
  for_each_decode_tile(M, n0, n1, [&](auto mr, int64_t m0, int64_t t0, int64_t t1) {
    decode_rows<decltype(mr)::value>(w, x + m0 * ldx, ldx, y + m0 * ldy, ldy, t0, t1);
  });
}

void dequant_panel_avx2(const Int4Weights& w, int64_t n0, int64_t nr, int64_t k0, int64_t kc, float* dst,
                        int64_t ld) {
  const __m256i mask = _mm256_set1_epi32(15), magic = _mm256_set1_epi32(0x4B000000);
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
        const int64_t g = (s * 16) / w.group;
        const __m256 zc = _mm256_set1_ps(8388608.f + w.zero(n, g));
        const __m256 sc = _mm256_set1_ps(scale_f16c(w, n, g));
        _mm256_storeu_ps(out + s * 16, _mm256_mul_ps(next_nibble(w0, mask, magic, zc), sc));
        _mm256_storeu_ps(out + s * 16 + 8, _mm256_mul_ps(next_nibble(w1, mask, magic, zc), sc));
      }
    }
  }
}

#include "gemm_pack_x86.inc"  // transpose8x8

// Eight lanes of a 16-lane sgemm B micro-panel (out: the panel at the half's first lane): per 16 k
// (one nibble of a block's words), each row's two 8-wide vectors are dequantized as
// dequant_panel_avx2 does, and each set of 8 transposed in registers into 8 steps of these lanes.
// Rows past `rows` (an edge panel) are zero; kFull drops that test from the common case. One set
// of 8 at a time keeps the transpose within the 16 registers, and the group index advances
// without a division: 1.3-1.4x the speed of the earlier form (16 vectors, a division per step)
// on its own, bitwise the same; inside the prefill its share of the time hardly moved (32% to
// 31% at M = 32), where fetching the weights bounds it.
template <bool kFull>
void dequant_panel_half(const Int4Weights& w, int64_t n_first, int rows, int64_t k0, int64_t kc, float* out) {
  const __m256i mask = _mm256_set1_epi32(15), magic = _mm256_set1_epi32(0x4B000000);
  const int64_t slots_per_group = w.group / 16;
  const uint8_t* row[8] = {};
  for (int r = 0; r < rows; ++r) row[r] = w.row(n_first + r);
  const int64_t s_end = (k0 + kc) / 16;
  int64_t s = k0 / 16, g = s / slots_per_group, g_end = (g + 1) * slots_per_group;  // group of slot s, its end
  for (; s < s_end; ++s) {
    if (s == g_end) {
      ++g;
      g_end += slots_per_group;
    }
    const int64_t blk = s >> 3;
    const __m128i cnt = _mm_cvtsi32_si128(static_cast<int>(4 * (s & 7)));
    float* o = out + (s * 16 - k0) * 16;
    for (int h = 0; h < 2; ++h) {  // words 0-7, then 8-15: k = 16 * nibble + word
      __m256 v[8];
      for (int r = 0; r < 8; ++r) {
        if (!kFull && r >= rows) {
          v[r] = _mm256_setzero_ps();
          continue;
        }
        __m256i wv = _mm256_srl_epi32(load_block_half(row[r] + blk * 64 + 32 * h), cnt);
        const __m256 zc = _mm256_set1_ps(8388608.f + w.zero(n_first + r, g));
        v[r] = _mm256_mul_ps(next_nibble(wv, mask, magic, zc), _mm256_set1_ps(scale_f16c(w, n_first + r, g)));
      }
      transpose8x8(v);
      for (int t = 0; t < 8; ++t) _mm256_store_ps(o + (8 * h + t) * 16, v[t]);
    }
  }
}

// One 16-lane sgemm B micro-panel, as two halves of 8 lanes (dequant_panel_half).
void dequant_panel16_avx2(const Int4Weights& w, int64_t n0, int lanes, int64_t k0, int64_t kc, float* dst) {
  for (int half = 0; half < 2; ++half) {
    const int l0 = 8 * half;
    float* out = dst + l0;
    if (lanes <= l0) {
      for (int64_t s = 0; s < kc; ++s) _mm256_store_ps(out + s * 16, _mm256_setzero_ps());
    } else if (lanes - l0 >= 8) {
      dequant_panel_half<true>(w, n0 + l0, 8, k0, kc, out);
    } else {
      dequant_panel_half<false>(w, n0 + l0, lanes - l0, k0, kc, out);
    }
  }
}

// ---- Exact decode through byte lookups (group % 128 == 0) ----
//
// Every q - z (-15..15) is exact in bf16, and a bf16 value is the top half of the fp32 with the
// same value. Per row, group and 32-byte half of a block: the low and the high nibbles are masked
// into bytes; two vpshufb with the group's tables give the low and the high byte of bf16(q - z)
// for 32 weights; vpunpck{l,h}bw pairs them into 16-bit words; a dword's even word becomes an
// fp32 by a 16-bit left shift, its odd word by masking off the low half. Per 8 weights: 2
// operations and the FMA (plus a share of the nibble masks), where the earlier lookup form (a
// byte-to-dword vpshufb and a vcvtdq2ps per 8) took 2.25, on busier ports: 15-20% faster on weights
// in L2, 7% in L3 (Zen 3). No activation scaling either: every fp32 x stays exact, subnormals too.
// x, prepared once per call, is permuted into the order the weights come out in.

struct Bf16Tables {
  // lo[z][i], hi[z][i]: the low and the high byte of bf16((i mod 16) - z), both 128-bit lanes.
  alignas(32) uint8_t lo[16][32];
  alignas(32) uint8_t hi[16][32];
};
// bf16 bits of an integer v with |v| <= 15: sign, exponent 127 + e (2^e <= |v| < 2^(e + 1)),
// mantissa |v| - 2^e in the top e of its 7 bits.
constexpr uint16_t bf16_of_small_int(int v) {
  const int a = v < 0 ? -v : v;
  if (a == 0) return 0;
  int e = 0;
  while ((a >> (e + 1)) != 0) ++e;
  const int mantissa = (a - (1 << e)) << (7 - e);
  return static_cast<uint16_t>((v < 0 ? 0x8000 : 0) | (127 + e) << 7 | mantissa);
}
static_assert(bf16_of_small_int(1) == 0x3F80 && bf16_of_small_int(-15) == 0xC170 && bf16_of_small_int(6) == 0x40C0,
              "bf16 bit patterns");
constexpr Bf16Tables make_bf16_tables() {
  Bf16Tables t{};
  for (int z = 0; z < 16; ++z)
    for (int i = 0; i < 32; ++i) {
      const uint16_t b = bf16_of_small_int((i & 15) - z);
      t.lo[z][i] = static_cast<uint8_t>(b & 0xFF);
      t.hi[z][i] = static_cast<uint8_t>(b >> 8);
    }
  return t;
}
constexpr Bf16Tables kBf16Tables = make_bf16_tables();

// Where decode_permuted_rows produces weight k (0..127) of a block. Byte c of word j holds
// weights k = 16 (2c + s) + j, s = 0 (low nibble) or 1 (high) (int4_gemm.h). In half h = j / 8 of
// the block (32 bytes), that byte sits at B = 4 (j % 8) + c: 128-bit lane l = B / 16, byte b = B % 16
// of it. The unpacks take bytes 0-7 (vpunpcklbw) or 8-15 (vpunpckhbw) of each lane into words
// w = b % 8; word w lands in dword w / 2, even words shifted, odd ones masked. Within half h and
// nibble set s, the four FMA operands come in the order lo-even, lo-odd, hi-even, hi-odd.
constexpr int permuted_position(int k) {
  const int i = k >> 4, j = k & 15;
  const int c = i >> 1, s = i & 1, h = j >> 3;
  const int B = 4 * (j & 7) + c, l = B >> 4, b = B & 15;
  const int operand = 2 * (b >> 3) + (b & 1);
  return 64 * h + 32 * s + 8 * operand + 4 * l + ((b & 7) >> 1);
}
constexpr bool is_permutation_of_128() {
  bool seen[128] = {};
  for (int k = 0; k < 128; ++k) {
    const int p = permuted_position(k);
    if (p < 0 || p >= 128 || seen[p]) return false;
    seen[p] = true;
  }
  return true;
}
static_assert(is_permutation_of_128(), "permuted_position must be a permutation of a block");

void permute_x_avx2(const float* x, int64_t M, int64_t in, PermutedActivations& a) {
  a.M = M;
  a.blocks = in / 128;
  a.storage = AlignedBytes(static_cast<size_t>(M * in) * sizeof(float));
  for (int64_t m = 0; m < M; ++m)
    for (int64_t b = 0; b < a.blocks; ++b) {
      const float* src = x + m * in + b * 128;
      float* dst = a.x() + m * in + b * 128;
      for (int k = 0; k < 128; ++k) dst[permuted_position(k)] = src[k];
    }
}

// Accumulators per row of x: a block's 16 FMAs per row go round them, so each dependency chain
// is 16 / kPermutedAcc FMAs long. At M = 1, four chains instead of two (8 FMAs of 4 cycles each
// per block) measured 1.03-1.13x faster on Zen 3; at M = 2 they cost 5-17% (registers spill).
template <int MR>
constexpr int kPermutedAcc = MR == 1 ? 4 : 2;

// One 128-block of one output row against the MR rows of permuted x (xb: the block in row 0).
template <int MR>
inline void permuted_block(const uint8_t* wb, __m256i lo_table, __m256i hi_table, const float* xb, int64_t ldx,
                           __m256 (&acc)[MR][kPermutedAcc<MR>]) {
  constexpr int A = kPermutedAcc<MR>;
  const __m256i low = _mm256_set1_epi8(15);
  const __m256i top_half = _mm256_set1_epi32(static_cast<int>(0xFFFF0000u));
#pragma GCC unroll 2
  for (int h = 0; h < 2; ++h) {
    const __m256i v = load_block_half(wb + 32 * h);
    const __m256i nibbles[2] = {_mm256_and_si256(v, low), _mm256_and_si256(_mm256_srli_epi16(v, 4), low)};
#pragma GCC unroll 2
    for (int s = 0; s < 2; ++s) {
      const __m256i lo = _mm256_shuffle_epi8(lo_table, nibbles[s]), hi = _mm256_shuffle_epi8(hi_table, nibbles[s]);
      const __m256i w0 = _mm256_unpacklo_epi8(lo, hi), w1 = _mm256_unpackhi_epi8(lo, hi);
      const __m256 f[4] = {_mm256_castsi256_ps(_mm256_slli_epi32(w0, 16)), _mm256_castsi256_ps(_mm256_and_si256(w0, top_half)),
                           _mm256_castsi256_ps(_mm256_slli_epi32(w1, 16)), _mm256_castsi256_ps(_mm256_and_si256(w1, top_half))};
#pragma GCC unroll 4
      for (int m = 0; m < MR; ++m) {
        const float* xm = xb + m * ldx + 64 * h + 32 * s;
#pragma GCC unroll 4
        for (int j = 0; j < 4; ++j) acc[m][j % A] = _mm256_fmadd_ps(f[j], _mm256_loadu_ps(xm + 8 * j), acc[m][j % A]);
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
  const float* x = a.x();
  TileMeta meta(w, 1);
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t* row = w.row(n);
    meta.unpack(n, 1);
    const float* scales = meta.scales(0);
    const uint8_t* zeros = meta.zeros(0);
    __m256 tot[MR];
    for (int m = 0; m < MR; ++m) tot[m] = _mm256_setzero_ps();
    for (int64_t g = 0; g < G; ++g) {
      const __m256i lo_table = _mm256_load_si256(reinterpret_cast<const __m256i*>(kBf16Tables.lo[zeros[g]]));
      const __m256i hi_table = _mm256_load_si256(reinterpret_cast<const __m256i*>(kBf16Tables.hi[zeros[g]]));
      __m256 acc[MR][kPermutedAcc<MR>];
      for (auto& row_acc : acc)
        for (__m256& v : row_acc) v = _mm256_setzero_ps();
      if constexpr (kOneBlockPerGroup) {
        _mm_prefetch(prefetch_target(w, row, kPrefetchRows, g), _MM_HINT_T0);
        permuted_block<MR>(row + g * 64, lo_table, hi_table, x + g * 128, in, acc);
      } else {
        for (int64_t blk = g * blocks_per_group; blk < (g + 1) * blocks_per_group; ++blk) {
          _mm_prefetch(prefetch_target(w, row, kPrefetchRows, blk), _MM_HINT_T0);
          permuted_block<MR>(row + blk * 64, lo_table, hi_table, x + blk * 128, in, acc);
        }
      }
      const __m256 sc = _mm256_set1_ps(scales[g]);
      for (int m = 0; m < MR; ++m) {
        __m256 sum = _mm256_add_ps(acc[m][0], acc[m][1]);
        if constexpr (kPermutedAcc<MR> == 4) sum = _mm256_add_ps(sum, _mm256_add_ps(acc[m][2], acc[m][3]));
        tot[m] = _mm256_fmadd_ps(sum, sc, tot[m]);
      }
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
  const int64_t bpg = w.group / 128;
  TileMeta meta(w, 1);
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t* row = w.row(n);
    meta.unpack(n, 1);
    __m256 acc[MR];
    float zterm[MR];
    for (int m = 0; m < MR; ++m) acc[m] = _mm256_setzero_ps(), zterm[m] = 0.f;
    for (int64_t b = 0; b < w.blocks; ++b) {
      _mm_prefetch(prefetch_target(w, row, kPrefetchRows, b), _MM_HINT_T0);
      const __m256i v0 = load_block_half(row + b * 64), v1 = load_block_half(row + b * 64 + 32);
      const __m256i lo0 = _mm256_and_si256(v0, low), hi0 = _mm256_and_si256(_mm256_srli_epi16(v0, 4), low);
      const __m256i lo1 = _mm256_and_si256(v1, low), hi1 = _mm256_and_si256(_mm256_srli_epi16(v1, 4), low);
      const float sw = meta.scale(0, b / bpg);
      const int z = meta.zero(0, b / bpg);
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
  for_each_decode_tile(a.M, n0, n1, [&](auto mr, int64_t m0, int64_t t0, int64_t t1) {
    decode_int8_rows<decltype(mr)::value>(w, a, m0, y, ldy, t0, t1);
  });
}

}  // namespace

const Int4Kernels kInt4Avx2 = {decode_avx2,    dequant_panel_avx2,   decode_int8_avx2, dequant_panel16_avx2, 16, 15,
                                permute_x_avx2, decode_permuted_avx2, nullptr};

}  // namespace awq::detail

AWQ_TARGET_END()

#endif  // AWQ_X86
