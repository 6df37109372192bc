// arm64 only: elsewhere this file compiles to nothing (AWQ_ARM64, cpu_features.h).
#include "cpu_features.h"
#if AWQ_ARM64
#include "isa_target.h"

// Int8-mode decode on SDOT (ARMv8.2 DotProd: Neoverse N1 / Graviton2 on, Apple M1 on): one
// instruction adds 4 groups of 4 int8 products into 32-bit lanes, 16 weights an instruction. Its
// own file because the whole function must be compiled for DotProd; picked at run time where
// CpuFeatures::dotprod says the core has it (int4_kernels_neon).
#include <arm_neon.h>

#include <cstdint>

#include "int4_gemm.h"

#if defined(__clang__)
AWQ_TARGET_BEGIN("dotprod")
#else
AWQ_TARGET_BEGIN("arch=armv8.2-a+dotprod")
#endif

#include "int4_int8_neon.inc"

namespace awq::detail {
namespace {

// Inline assembly rather than vdotq_s32: clang 14's arm_neon.h defines that intrinsic only when
// the whole file is compiled with -march=...+dotprod, which the build does not do per file.
struct SdotDot {
  static inline void add(int32x4_t& d0, int32x4_t& d1, int8x16_t lo, int8x16_t xlo, int8x16_t hi, int8x16_t xhi) {
    __asm__("sdot %0.4s, %1.16b, %2.16b" : "+w"(d0) : "w"(lo), "w"(xlo));
    __asm__("sdot %0.4s, %1.16b, %2.16b" : "+w"(d1) : "w"(hi), "w"(xhi));
  }
};

}  // namespace

void decode_int8_sdot(const Int4Weights& w, const Int8Activations& a, float* y, int64_t ldy, int64_t n0, int64_t n1) {
  int8_rows_neon<SdotDot>(w, a, y, ldy, n0, n1);
}

}  // namespace awq::detail

AWQ_TARGET_END()

#endif  // AWQ_ARM64
