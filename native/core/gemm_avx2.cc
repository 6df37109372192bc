// x86-64 only: elsewhere this file compiles to nothing (AWQ_X86, cpu_features.h).
#include "cpu_features.h"
#if AWQ_X86
#include "isa_target.h"

// AVX2 + FMA sgemm pieces: a 6x16 register-blocked micro-kernel (12 ymm accumulators, two B
// vectors and one A broadcast per step: 15 of 16 registers) and the x86 panel packers.
// Standard headers come before the target pragma (see stats_avx2.cc).
#include <immintrin.h>

#include <cstdint>

#include "gemm_kernels.h"

AWQ_TARGET_BEGIN("avx2,fma,f16c")

namespace awq::detail {
namespace {

#include "gemm_pack_x86.inc"

constexpr int kMr = 6, kNr = 16;

// Writes alpha * acc (+ beta * C) for a full tile straight to C.
inline void store_row(float* c, __m256 lo, __m256 hi, __m256 va, float beta, __m256 vb) {
  lo = _mm256_mul_ps(lo, va);
  hi = _mm256_mul_ps(hi, va);
  if (beta != 0.f) {
    lo = _mm256_fmadd_ps(vb, _mm256_loadu_ps(c), lo);
    hi = _mm256_fmadd_ps(vb, _mm256_loadu_ps(c + 8), hi);
  }
  _mm256_storeu_ps(c, lo);
  _mm256_storeu_ps(c + 8, hi);
}

void micro_6x16(int64_t k, const float* a, const float* b, float* c, int64_t ldc, float alpha,
                float beta, int m, int n) {
  __m256 c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51;
  // The k loop is inline assembly: with intrinsics GCC reorders loads across steps and spills an
  // accumulator to the stack inside the loop (15 of 16 registers are live), costing ~half the
  // throughput. Here the register allocator still picks the registers, but the schedule is fixed.
  // (Accumulators are outputs zeroed inside: "+x" would count twice against GCC's 30 operands.)
  // C is touched only after the k loop: start pulling its rows in now.
  for (int i = 0; i < kMr; ++i) {
    _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc + kNr - 1), _MM_HINT_T0);
  }
  __m256 b0, b1, av;
  int64_t k4 = k / 4, kr = k % 4;
#define AWQ_ASM_ROW(AOFF, C0, C1)                    \
  "vbroadcastss " AOFF "(%[a]), %[av]\n\t"           \
  "vfmadd231ps %[b0], %[av], %[" C0 "]\n\t"          \
  "vfmadd231ps %[b1], %[av], %[" C1 "]\n\t"
#define AWQ_ASM_STEP(B0, B1, A0, A1, A2, A3, A4, A5) \
  "vmovaps " B0 "(%[b]), %[b0]\n\t"                  \
  "vmovaps " B1 "(%[b]), %[b1]\n\t"                  \
  AWQ_ASM_ROW(A0, "c00", "c01") AWQ_ASM_ROW(A1, "c10", "c11") AWQ_ASM_ROW(A2, "c20", "c21") \
  AWQ_ASM_ROW(A3, "c30", "c31") AWQ_ASM_ROW(A4, "c40", "c41") AWQ_ASM_ROW(A5, "c50", "c51")
  asm volatile(
      "vxorps %[c00], %[c00], %[c00]\n\t"
      "vxorps %[c01], %[c01], %[c01]\n\t"
      "vxorps %[c10], %[c10], %[c10]\n\t"
      "vxorps %[c11], %[c11], %[c11]\n\t"
      "vxorps %[c20], %[c20], %[c20]\n\t"
      "vxorps %[c21], %[c21], %[c21]\n\t"
      "vxorps %[c30], %[c30], %[c30]\n\t"
      "vxorps %[c31], %[c31], %[c31]\n\t"
      "vxorps %[c40], %[c40], %[c40]\n\t"
      "vxorps %[c41], %[c41], %[c41]\n\t"
      "vxorps %[c50], %[c50], %[c50]\n\t"
      "vxorps %[c51], %[c51], %[c51]\n\t"
      "test %[k4], %[k4]\n\t"
      "jz 2f\n\t"
      "1:\n\t"
      "prefetcht0 1024(%[b])\n\t"
      AWQ_ASM_STEP("0", "32", "0", "4", "8", "12", "16", "20")
      "prefetcht0 1088(%[b])\n\t"
      AWQ_ASM_STEP("64", "96", "24", "28", "32", "36", "40", "44")
      "prefetcht0 1152(%[b])\n\t"
      AWQ_ASM_STEP("128", "160", "48", "52", "56", "60", "64", "68")
      "prefetcht0 1216(%[b])\n\t"
      AWQ_ASM_STEP("192", "224", "72", "76", "80", "84", "88", "92")
      "add $96, %[a]\n\t"
      "add $256, %[b]\n\t"
      "dec %[k4]\n\t"
      "jnz 1b\n\t"
      "2:\n\t"
      "test %[kr], %[kr]\n\t"
      "jz 4f\n\t"
      "3:\n\t"
      AWQ_ASM_STEP("0", "32", "0", "4", "8", "12", "16", "20")
      "add $24, %[a]\n\t"
      "add $64, %[b]\n\t"
      "dec %[kr]\n\t"
      "jnz 3b\n\t"
      "4:\n\t"
      : [a] "+r"(a), [b] "+r"(b), [k4] "+r"(k4), [kr] "+r"(kr), [b0] "=&x"(b0), [b1] "=&x"(b1),
        [av] "=&x"(av), [c00] "=&x"(c00), [c01] "=&x"(c01), [c10] "=&x"(c10), [c11] "=&x"(c11),
        [c20] "=&x"(c20), [c21] "=&x"(c21), [c30] "=&x"(c30), [c31] "=&x"(c31), [c40] "=&x"(c40),
        [c41] "=&x"(c41), [c50] "=&x"(c50), [c51] "=&x"(c51)
      :
      : "cc", "memory");
#undef AWQ_ASM_STEP
#undef AWQ_ASM_ROW
  const __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
  if (m == kMr && n == kNr) {
    store_row(c + 0 * ldc, c00, c01, va, beta, vb);
    store_row(c + 1 * ldc, c10, c11, va, beta, vb);
    store_row(c + 2 * ldc, c20, c21, va, beta, vb);
    store_row(c + 3 * ldc, c30, c31, va, beta, vb);
    store_row(c + 4 * ldc, c40, c41, va, beta, vb);
    store_row(c + 5 * ldc, c50, c51, va, beta, vb);
    return;
  }
  // Edge tile: stage in a local tile and copy the valid part.
  alignas(32) float t[kMr * kNr];
  store_row(t + 0 * kNr, c00, c01, va, 0.f, vb);
  store_row(t + 1 * kNr, c10, c11, va, 0.f, vb);
  store_row(t + 2 * kNr, c20, c21, va, 0.f, vb);
  store_row(t + 3 * kNr, c30, c31, va, 0.f, vb);
  store_row(t + 4 * kNr, c40, c41, va, 0.f, vb);
  store_row(t + 5 * kNr, c50, c51, va, 0.f, vb);
  for (int i = 0; i < m; ++i) {
    float* ci = c + i * ldc;
    const float* ti = t + i * kNr;
    if (beta == 0.f) {
      for (int j = 0; j < n; ++j) ci[j] = ti[j];
    } else {
      for (int j = 0; j < n; ++j) ci[j] = ti[j] + beta * ci[j];
    }
  }
}

void pack_a_6(const float* src, int64_t ld, bool lanes_contiguous, int lanes, int64_t k,
              float* out) {
  pack_panel<kMr>(src, ld, lanes_contiguous, lanes, k, out);
}

void pack_b_16(const float* src, int64_t ld, bool lanes_contiguous, int lanes, int64_t k,
               float* out) {
  pack_panel<kNr>(src, ld, lanes_contiguous, lanes, k, out);
}

}  // namespace

const GemmKernel& gemm_kernel_avx2() {
  // kc * nr * 4 B = 16 KiB of B micro-panel stays in the 32 KiB L1; mc * kc * 4 B = 144 KiB of A
  // block sits in a 512 KiB L2; an nc-wide B block (3 MiB) lives in L3.
  static const GemmKernel k{"avx2-6x16", kMr, kNr, 256, 144, 3072, pack_a_6, pack_b_16, micro_6x16};
  return k;
}

PackPanelFn pack_panel_avx2_for_width(int w) {
  switch (w) {
    case 6: return pack_panel<6>;
    case 14: return pack_panel<14>;
    case 16: return pack_panel<16>;
    case 32: return pack_panel<32>;
    default: return nullptr;
  }
}

}  // namespace awq::detail

AWQ_TARGET_END()

#endif  // AWQ_X86
