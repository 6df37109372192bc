// x86-64 only: elsewhere this file compiles to nothing (AWQ_X86, cpu_features.h).
#include "cpu_features.h"
#if AWQ_X86
#include "isa_target.h"

// AVX-512 VNNI int8-mode kernel: vpdpbusd multiplies the u8 nibbles by the s8 activations and
// adds groups of 4 products straight into 32-bit lanes (one instruction per 64 weights).
// Its own file because the whole function must be compiled for the VNNI target.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "int4_gemm.h"

// GCC 12 reports the deliberately undefined vectors inside its own AVX-512 intrinsics.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#ifndef __clang__
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#ifndef AWQ_EMULATE_AVX512  // the emulated test build: native/tests/avx512_emulation.h
AWQ_TARGET_BEGIN("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")
#endif

namespace awq::detail {
namespace {

#include "int4_meta_x86.inc"
#include "transpose16_avx512.inc"

inline __m512i load_block(const uint8_t* p) { return _mm512_load_si512(reinterpret_cast<const void*>(p)); }

// R output rows at a time, each with MR rows of x; the rows' blocks interleave so that R weight
// streams are in flight, and the next tile's rows are prefetched to L2 rather than L1. At M = 1,
// R = 4 with L2 prefetch was 1.1-1.3x faster than one row at a time with L1 prefetch (Zen 4,
// 2 threads, from DRAM, same process): at in = 11008 four prefetched rows (22 KiB) plus the
// activations no longer fit the 32 KiB L1 beside the rows in use.
// meta: rows [n, n + R) unpacked. Not inlined into rows_vnni_tile: inlined beside the metadata
// unpacking, GCC 12 kept the accumulators on the stack (1.4x slower at M = 1 with the weights in
// cache, Zen 4).
template <int MR, int R>
[[gnu::noinline]] void rows_vnni(const Int4Weights& w, const TileMeta& meta, const Int8Activations& a, int64_t m0,
                                 float* y, int64_t ldy, int64_t n) {
  const __m512i low = _mm512_set1_epi8(15);
  const int64_t bpg = w.group / 128, G = w.groups;
  const uint8_t* row[R];
  for (int r = 0; r < R; ++r) row[r] = w.row(n + r);
  __m512 acc[R][MR];
  float zterm[R][MR];
  for (int r = 0; r < R; ++r)
    for (int m = 0; m < MR; ++m) acc[r][m] = _mm512_setzero_ps(), zterm[r][m] = 0.f;
  for (int64_t g = 0; g < G; ++g) {
    float sw[R];
    int z[R];
    for (int r = 0; r < R; ++r) sw[r] = meta.scale(r, g), z[r] = meta.zero(r, g);
    for (int64_t b = g * bpg; b < (g + 1) * bpg; ++b) {
      for (int r = 0; r < R; ++r) _mm_prefetch(prefetch_target(w, row[r], kPrefetchRows, b), _MM_HINT_T1);
      for (int r = 0; r < R; ++r) {
        const __m512i v = load_block(row[r] + b * 64);
        const __m512i lo = _mm512_and_si512(v, low), hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), low);
        for (int m = 0; m < MR; ++m) {
          const int64_t ab = (m0 + m) * a.blocks + b;
          const uint8_t* xq = a.q.data() + ab * 128;
          const __m512i d = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, load_block(xq)), hi,
                                                load_block(xq + 64));
          const float s = sw[r] * a.scale[ab];
          acc[r][m] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), _mm512_set1_ps(s), acc[r][m]);
          zterm[r][m] += s * static_cast<float>(z[r] * a.sum[ab]);
        }
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int m = 0; m < MR; ++m) y[(m0 + m) * ldy + n + r] = _mm512_reduce_add_ps(acc[r][m]) - zterm[r][m];
}

// M = 1: 4 rows at a time; M = 2..4: 2 (1.0-1.4x faster than 1 or 4 at M = 2 and 4, same test).
template <int MR>
void rows_vnni_tile(const Int4Weights& w, const Int8Activations& a, int64_t m0, float* y, int64_t ldy, int64_t n0,
                    int64_t n1) {
  constexpr int R = MR == 1 ? 4 : 2;
  TileMeta meta(w, R);
  int64_t n = n0;
  for (; n + R <= n1; n += R) meta.unpack(n, R), rows_vnni<MR, R>(w, meta, a, m0, y, ldy, n);
  for (; n < n1; ++n) meta.unpack(n, 1), rows_vnni<MR, 1>(w, meta, a, m0, y, ldy, n);
}

// ---- Int8 prefill: 16 output rows per vector ----
// A panel regroups 16 rows' nibbles as u8 so that, in block b, dword t of lane l holds the 4
// weights of row n0 + l that meet dword t of the block's quantized activations (the order of
// Int8Activations). One vpdpbusd with that dword broadcast then does 4 inputs x 16 rows for a row
// of x, and the per-block scaling (convert + fma) is paid once per 16 rows, not once per row as
// in rows_vnni, whose lanes are inputs.
constexpr int kPanelLanes = 16;
constexpr int kPanelMR = 8;  // rows of x per pass: 8 int32 + 8 fp32 accumulators

struct Int8Panel {
  AlignedBytes q;            // uint32 [blocks][32][16], 64-byte aligned for whole-vector loads
  std::vector<float> sw;     // [groups][16]: weight scales
  std::vector<float> zsw;    // [groups][16]: zero point x weight scale
};

void pack_int8_panel(const Int4Weights& w, int64_t n0, int lanes, Int8Panel& p) {
  const __m512i low = _mm512_set1_epi8(15);
  const int64_t G = w.groups;
  const size_t bytes = static_cast<size_t>(w.blocks * 32 * kPanelLanes * 4);
  if (p.q.size() != bytes) p.q = AlignedBytes(bytes);
  uint32_t* words = reinterpret_cast<uint32_t*>(p.q.data());
  p.sw.assign(static_cast<size_t>(G * kPanelLanes), 0.f);
  p.zsw.assign(static_cast<size_t>(G * kPanelLanes), 0.f);
  for (int64_t b = 0; b < w.blocks; ++b) {
    // lo dword j = nibbles 0, 2, 4, 6 of word j (inputs 32c + j); hi = 1, 3, 5, 7 (32c + 16 + j).
    // Rows past the end multiply as zeros.
    __m512i lo[16], hi[16];
    for (int l = 0; l < kPanelLanes; ++l) {
      const __m512i v = l < lanes ? load_block(w.row(n0 + l) + b * 64) : _mm512_setzero_si512();
      lo[l] = _mm512_and_si512(v, low);
      hi[l] = _mm512_and_si512(_mm512_srli_epi16(v, 4), low);
    }
    transpose16x16(lo);
    transpose16x16(hi);
    uint32_t* dst = words + b * 32 * kPanelLanes;
    for (int t = 0; t < 16; ++t) {
      _mm512_store_si512(reinterpret_cast<void*>(dst + t * kPanelLanes), lo[t]);
      _mm512_store_si512(reinterpret_cast<void*>(dst + (16 + t) * kPanelLanes), hi[t]);
    }
  }
  for (int l = 0; l < lanes; ++l)
    for (int64_t g = 0; g < G; ++g) {
      const float s = scale_f16c(w, n0 + l, g);
      p.sw[g * kPanelLanes + l] = s;
      p.zsw[g * kPanelLanes + l] = static_cast<float>(w.zero(n0 + l, g)) * s;
    }
}

template <int MR>
void panel_rows_int8(const Int4Weights& w, const Int8Activations& a, const Int8Panel& p, int64_t m0, float* y,
                     int64_t ldy, int64_t n0, int lanes) {
  const int64_t bpg = w.group / 128;
  const __mmask16 keep = static_cast<__mmask16>((1u << lanes) - 1);
  __m512 acc[MR];
  for (int m = 0; m < MR; ++m) acc[m] = _mm512_setzero_ps();
  for (int64_t b = 0; b < w.blocks; ++b) {
    const uint32_t* pq = reinterpret_cast<const uint32_t*>(p.q.data()) + b * 32 * kPanelLanes;
    const int32_t* xq[MR];
    for (int m = 0; m < MR; ++m) xq[m] = reinterpret_cast<const int32_t*>(a.q.data() + ((m0 + m) * a.blocks + b) * 128);
    __m512i d[MR];
    for (int m = 0; m < MR; ++m) d[m] = _mm512_setzero_si512();
#pragma GCC unroll 4
    for (int t = 0; t < 32; ++t) {
      const __m512i wv = _mm512_load_si512(reinterpret_cast<const void*>(pq + t * kPanelLanes));
      for (int m = 0; m < MR; ++m) d[m] = _mm512_dpbusd_epi32(d[m], wv, _mm512_set1_epi32(xq[m][t]));
    }
    const int64_t g = b / bpg;
    const __m512 sw = _mm512_loadu_ps(p.sw.data() + g * kPanelLanes), zsw = _mm512_loadu_ps(p.zsw.data() + g * kPanelLanes);
    for (int m = 0; m < MR; ++m) {
      const int64_t ab = (m0 + m) * a.blocks + b;
      const float sa = a.scale[ab];
      acc[m] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d[m]), _mm512_mul_ps(sw, _mm512_set1_ps(sa)), acc[m]);
      acc[m] = _mm512_fnmadd_ps(zsw, _mm512_set1_ps(sa * static_cast<float>(a.sum[ab])), acc[m]);
    }
  }
  for (int m = 0; m < MR; ++m) _mm512_mask_storeu_ps(y + (m0 + m) * ldy + n0, keep, acc[m]);
}

}  // namespace

void prefill_int8_avx512vnni(const Int4Weights& w, const Int8Activations& a, float* y, int64_t ldy, int64_t n0,
                             int64_t n1) {
  thread_local Int8Panel panel;  // reused: up to 2 KiB per 128 inputs
  for (int64_t p0 = n0; p0 < n1; p0 += kPanelLanes) {
    const int lanes = static_cast<int>(std::min<int64_t>(kPanelLanes, n1 - p0));
    pack_int8_panel(w, p0, lanes, panel);
    for (int64_t m0 = 0; m0 < a.M; m0 += kPanelMR) {
      switch (std::min<int64_t>(kPanelMR, a.M - m0)) {
        case 1: panel_rows_int8<1>(w, a, panel, m0, y, ldy, p0, lanes); break;
        case 2: panel_rows_int8<2>(w, a, panel, m0, y, ldy, p0, lanes); break;
        case 3: panel_rows_int8<3>(w, a, panel, m0, y, ldy, p0, lanes); break;
        case 4: panel_rows_int8<4>(w, a, panel, m0, y, ldy, p0, lanes); break;
        case 5: panel_rows_int8<5>(w, a, panel, m0, y, ldy, p0, lanes); break;
        case 6: panel_rows_int8<6>(w, a, panel, m0, y, ldy, p0, lanes); break;
        case 7: panel_rows_int8<7>(w, a, panel, m0, y, ldy, p0, lanes); break;
        default: panel_rows_int8<8>(w, a, panel, m0, y, ldy, p0, lanes); break;
      }
    }
  }
}

void decode_int8_avx512vnni(const Int4Weights& w, const Int8Activations& a, float* y, int64_t ldy, int64_t n0,
                            int64_t n1) {
  for_each_decode_tile(a.M, n0, n1, [&](auto mr, int64_t m0, int64_t t0, int64_t t1) {
    rows_vnni_tile<decltype(mr)::value>(w, a, m0, y, ldy, t0, t1);
  });
}

}  // namespace awq::detail

#pragma GCC diagnostic pop
#ifndef AWQ_EMULATE_AVX512
AWQ_TARGET_END()
#endif

#endif  // AWQ_X86
