// arm64 only: elsewhere this file compiles to nothing (AWQ_ARM64, cpu_features.h).
#include "cpu_features.h"
#if AWQ_ARM64
#include "isa_target.h"

// BF16 sgemm pieces for Precision::BF16 on cores with FEAT_BF16 (Graviton3 and later, Neoverse
// V1 / N2, Apple M2 and later): an 8 x 12 micro-kernel on BFDOT, which adds two bf16 products
// per fp32 lane (pairs of k steps, gemm_kernels.h), so each instruction does twice the
// multiply-adds of an fp32 fmla; and packers that round fp32 operands to bf16 pairs. The register
// use is the fp32 kernel's (gemm_neon.cc): 24 accumulators, 3 B vectors and 2 A vectors of pairs,
// each A pair used by lane. BFDOT flushes denormal inputs and results to zero and rounds its sums
// to odd (Arm ARM, FEAT_BF16 without FEAT_EBF16): within the fp32 accumulation bound the tests
// hold every kernel to.
#include <arm_neon.h>

#include <cstdint>

#include "dtype.h"
#include "gemm_kernels.h"

#if defined(__clang__)
AWQ_TARGET_BEGIN("bf16")
#else
AWQ_TARGET_BEGIN("arch=armv8.2-a+bf16")
#endif

namespace awq::detail {
namespace {

constexpr int kMr = 8, kNr = 12;

// See PackPanelFn and the bf16 layout in gemm_kernels.h: unit (pair t, lane l) at out[t * W + l]
// holds bf16(step 2t) in its low half and bf16(step 2t + 1) in its high half (zero past k).
template <int W>
void pack_pairs(const float* src, int64_t ld, bool lanes_contiguous, int lanes, int64_t k, float* out) {
  auto at = [&](int l, int64_t s) { return lanes_contiguous ? src[s * ld + l] : src[l * ld + s]; };
  uint32_t* dst = reinterpret_cast<uint32_t*>(out);
  const int64_t pairs = (k + 1) / 2;
  for (int64_t t = 0; t < pairs; ++t) {
    uint32_t* row = dst + t * W;
    for (int l = 0; l < lanes; ++l) {
      const uint32_t lo = f32_to_bf16_scalar(at(l, 2 * t));
      const uint32_t hi = 2 * t + 1 < k ? f32_to_bf16_scalar(at(l, 2 * t + 1)) : 0u;
      row[l] = lo | (hi << 16);
    }
    for (int l = lanes; l < W; ++l) row[l] = 0;
  }
}

// acc[i] += b.pair(i) . a.pair(LANE) for the 4 fp32 lanes i (bfdot by element). Inline assembly:
// clang 14's arm_neon.h offers vbfdotq_laneq_f32 only to files compiled with -march=...+bf16.
#define AWQ_BFDOT(acc, b, a, LANE) __asm__("bfdot %0.4s, %1.8h, %2.2h[" #LANE "]" : "+w"(acc) : "w"(b), "w"(a))

#include "gemm_store_neon.inc"

// kp packed rows of pairs (2 * kp steps).
void micro_8x12(int64_t kp, const float* a, const float* b, float* c, int64_t ldc, float alpha, float beta, int m,
                int n) {
  float32x4_t c00 = vdupq_n_f32(0.f), c01 = c00, c02 = c00, c10 = c00, c11 = c00, c12 = c00;
  float32x4_t c20 = c00, c21 = c00, c22 = c00, c30 = c00, c31 = c00, c32 = c00;
  float32x4_t c40 = c00, c41 = c00, c42 = c00, c50 = c00, c51 = c00, c52 = c00;
  float32x4_t c60 = c00, c61 = c00, c62 = c00, c70 = c00, c71 = c00, c72 = c00;
  for (int64_t p = 0; p < kp; ++p) {
    __builtin_prefetch(b + 12 * 8);
    const float32x4_t a0 = vld1q_f32(a), a1 = vld1q_f32(a + 4);
    const float32x4_t b0 = vld1q_f32(b), b1 = vld1q_f32(b + 4), b2 = vld1q_f32(b + 8);
    AWQ_BFDOT(c00, b0, a0, 0); AWQ_BFDOT(c01, b1, a0, 0); AWQ_BFDOT(c02, b2, a0, 0);
    AWQ_BFDOT(c10, b0, a0, 1); AWQ_BFDOT(c11, b1, a0, 1); AWQ_BFDOT(c12, b2, a0, 1);
    AWQ_BFDOT(c20, b0, a0, 2); AWQ_BFDOT(c21, b1, a0, 2); AWQ_BFDOT(c22, b2, a0, 2);
    AWQ_BFDOT(c30, b0, a0, 3); AWQ_BFDOT(c31, b1, a0, 3); AWQ_BFDOT(c32, b2, a0, 3);
    AWQ_BFDOT(c40, b0, a1, 0); AWQ_BFDOT(c41, b1, a1, 0); AWQ_BFDOT(c42, b2, a1, 0);
    AWQ_BFDOT(c50, b0, a1, 1); AWQ_BFDOT(c51, b1, a1, 1); AWQ_BFDOT(c52, b2, a1, 1);
    AWQ_BFDOT(c60, b0, a1, 2); AWQ_BFDOT(c61, b1, a1, 2); AWQ_BFDOT(c62, b2, a1, 2);
    AWQ_BFDOT(c70, b0, a1, 3); AWQ_BFDOT(c71, b1, a1, 3); AWQ_BFDOT(c72, b2, a1, 3);
    a += kMr;
    b += kNr;
  }
  const float32x4_t acc[kMr][3] = {{c00, c01, c02}, {c10, c11, c12}, {c20, c21, c22}, {c30, c31, c32},
                                   {c40, c41, c42}, {c50, c51, c52}, {c60, c61, c62}, {c70, c71, c72}};
  store_tile_8x12(acc, c, ldc, alpha, beta, m, n);
}

#undef AWQ_BFDOT

}  // namespace

// kc counted in steps: 512 steps are 256 pair rows, so a B micro-panel is 12 KiB and an A
// micro-panel 8 KiB, as in the fp32 kernel at kc = 256.
const GemmKernel& gemm_kernel_neon_bf16() {
  static const GemmKernel k{"neon-bf16-8x12", kMr, kNr, 512, 128, 3072, pack_pairs<kMr>, pack_pairs<kNr>, micro_8x12, 2};
  return k;
}

}  // namespace awq::detail

AWQ_TARGET_END()

#endif  // AWQ_ARM64
