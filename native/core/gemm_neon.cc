// arm64 only: elsewhere this file compiles to nothing (AWQ_ARM64, cpu_features.h).
#include "cpu_features.h"
#if AWQ_ARM64

// NEON sgemm pieces: an 8 x 12 register-blocked micro-kernel and the panel packers.
// arm64 has 32 128-bit registers: 24 accumulators (8 rows x 3 vectors of 4 columns), two A
// vectors (8 rows) and three B vectors per step, each A value used by lane (fmla by element), so
// a step is 5 loads for 24 FMAs (the OpenBLAS / BLIS shape for Cortex-A and Neoverse cores).
#include <arm_neon.h>

#include <cstdint>
#include <cstring>

#include "gemm_kernels.h"

namespace awq::detail {
namespace {

constexpr int kMr = 8, kNr = 12;

// See PackPanelFn in gemm_kernels.h.
template <int W>
void pack_panel(const float* src, int64_t ld, bool lanes_contiguous, int lanes, int64_t k, float* out) {
  if (lanes_contiguous) {
    for (int64_t s = 0; s < k; ++s) {
      float* o = out + s * W;
      std::memcpy(o, src + s * ld, static_cast<size_t>(lanes) * sizeof(float));
      for (int l = lanes; l < W; ++l) o[l] = 0.f;
    }
    return;
  }
  // Each lane's steps are contiguous: transpose 4 x 4 blocks in registers (4 lanes, 4 steps).
  int64_t s = 0;
  for (; s + 4 <= k; s += 4) {
    int l = 0;
    for (; l + 4 <= lanes; l += 4) {
      const float32x4_t r0 = vld1q_f32(src + (l + 0) * ld + s), r1 = vld1q_f32(src + (l + 1) * ld + s);
      const float32x4_t r2 = vld1q_f32(src + (l + 2) * ld + s), r3 = vld1q_f32(src + (l + 3) * ld + s);
      const float32x4_t t0 = vtrn1q_f32(r0, r1), t1 = vtrn2q_f32(r0, r1);
      const float32x4_t t2 = vtrn1q_f32(r2, r3), t3 = vtrn2q_f32(r2, r3);
      float* o = out + s * W + l;
      vst1q_f32(o, vreinterpretq_f32_f64(vtrn1q_f64(vreinterpretq_f64_f32(t0), vreinterpretq_f64_f32(t2))));
      vst1q_f32(o + W, vreinterpretq_f32_f64(vtrn1q_f64(vreinterpretq_f64_f32(t1), vreinterpretq_f64_f32(t3))));
      vst1q_f32(o + 2 * W, vreinterpretq_f32_f64(vtrn2q_f64(vreinterpretq_f64_f32(t0), vreinterpretq_f64_f32(t2))));
      vst1q_f32(o + 3 * W, vreinterpretq_f32_f64(vtrn2q_f64(vreinterpretq_f64_f32(t1), vreinterpretq_f64_f32(t3))));
    }
    for (; l < lanes; ++l)
      for (int j = 0; j < 4; ++j) out[(s + j) * W + l] = src[l * ld + s + j];
    for (int j = 0; j < 4; ++j)
      for (int z = lanes; z < W; ++z) out[(s + j) * W + z] = 0.f;
  }
  for (; s < k; ++s) {
    for (int l = 0; l < lanes; ++l) out[s * W + l] = src[l * ld + s];
    for (int l = lanes; l < W; ++l) out[s * W + l] = 0.f;
  }
}

#include "gemm_store_neon.inc"

void micro_8x12(int64_t k, const float* a, const float* b, float* c, int64_t ldc, float alpha, float beta, int m,
                int n) {
  // Named accumulators (not an array) so that the compiler keeps all 24 in registers.
  float32x4_t c00 = vdupq_n_f32(0.f), c01 = c00, c02 = c00, c10 = c00, c11 = c00, c12 = c00;
  float32x4_t c20 = c00, c21 = c00, c22 = c00, c30 = c00, c31 = c00, c32 = c00;
  float32x4_t c40 = c00, c41 = c00, c42 = c00, c50 = c00, c51 = c00, c52 = c00;
  float32x4_t c60 = c00, c61 = c00, c62 = c00, c70 = c00, c71 = c00, c72 = c00;
  for (int64_t s = 0; s < k; ++s) {
    __builtin_prefetch(b + 12 * 8);
    const float32x4_t a0 = vld1q_f32(a), a1 = vld1q_f32(a + 4);
    const float32x4_t b0 = vld1q_f32(b), b1 = vld1q_f32(b + 4), b2 = vld1q_f32(b + 8);
    c00 = vfmaq_laneq_f32(c00, b0, a0, 0), c01 = vfmaq_laneq_f32(c01, b1, a0, 0), c02 = vfmaq_laneq_f32(c02, b2, a0, 0);
    c10 = vfmaq_laneq_f32(c10, b0, a0, 1), c11 = vfmaq_laneq_f32(c11, b1, a0, 1), c12 = vfmaq_laneq_f32(c12, b2, a0, 1);
    c20 = vfmaq_laneq_f32(c20, b0, a0, 2), c21 = vfmaq_laneq_f32(c21, b1, a0, 2), c22 = vfmaq_laneq_f32(c22, b2, a0, 2);
    c30 = vfmaq_laneq_f32(c30, b0, a0, 3), c31 = vfmaq_laneq_f32(c31, b1, a0, 3), c32 = vfmaq_laneq_f32(c32, b2, a0, 3);
    c40 = vfmaq_laneq_f32(c40, b0, a1, 0), c41 = vfmaq_laneq_f32(c41, b1, a1, 0), c42 = vfmaq_laneq_f32(c42, b2, a1, 0);
    c50 = vfmaq_laneq_f32(c50, b0, a1, 1), c51 = vfmaq_laneq_f32(c51, b1, a1, 1), c52 = vfmaq_laneq_f32(c52, b2, a1, 1);
    c60 = vfmaq_laneq_f32(c60, b0, a1, 2), c61 = vfmaq_laneq_f32(c61, b1, a1, 2), c62 = vfmaq_laneq_f32(c62, b2, a1, 2);
    c70 = vfmaq_laneq_f32(c70, b0, a1, 3), c71 = vfmaq_laneq_f32(c71, b1, a1, 3), c72 = vfmaq_laneq_f32(c72, b2, a1, 3);
    a += kMr;
    b += kNr;
  }
  const float32x4_t acc[kMr][3] = {{c00, c01, c02}, {c10, c11, c12}, {c20, c21, c22}, {c30, c31, c32},
                                   {c40, c41, c42}, {c50, c51, c52}, {c60, c61, c62}, {c70, c71, c72}};
  store_tile_8x12(acc, c, ldc, alpha, beta, m, n);
}

}  // namespace

// kc 256: a B micro-panel (12 KiB) and an A micro-panel (8 KiB) stay in a 64 KiB L1 (Neoverse
// N1 / V1; Apple cores have more); mc 128: the A block (128 KiB) in a 1 MiB L2; nc 3072: the
// packed B block (3 MiB) in the shared L3 / system cache.
const GemmKernel& gemm_kernel_neon() {
  static const GemmKernel k{"neon-8x12", kMr, kNr, 256, 128, 3072, pack_panel<kMr>, pack_panel<kNr>, micro_8x12, 1};
  return k;
}

}  // namespace awq::detail

#endif  // AWQ_ARM64
