// Internal interface between the blocked sgemm driver (gemm.cc, portable C++) and the
// ISA-specific pieces it calls (gemm_avx2.cc, gemm_avx512.cc, gemm_neon.cc): panel packing and the
// register-blocked micro-kernel. The driver owns blocking, buffers and threads; the ISA files
// own only code that must be compiled for their target.
//
// Packed layouts (GotoBLAS style): a micro-panel of width W (W = mr for A, nr for B) over k
// steps is W * k floats, step-major: element (lane, step) at [step * W + lane]; lanes past the
// valid count are zero. Packed buffers are 64-byte aligned, so every B row of a micro-panel is.
//
// bf16 kernels (k_unit == 2) pack a pair of consecutive steps into one 32-bit unit, both values
// rounded to bf16 (step 2t in the low half, 2t + 1 in the high half; an odd k's last pair has a
// zero high half), so a micro-panel is W * ceil(k / 2) units in the layout above, one row per pair.
// The driver keeps every k block but the last even, so pairs never straddle blocks.
#pragma once
#include <cstdint>

#include "gemm.h"

namespace awq::detail {

// Packs `lanes` valid lanes (<= W, rest zero-filled) over `k` steps into `out`.
// lanes_contiguous: lane l, step s is src[s * ld + l] (rows of op(A)^T / op(B) are contiguous);
// otherwise it is src[l * ld + s] (each lane's steps are contiguous, so packing transposes).
using PackPanelFn = void (*)(const float* src, int64_t ld, bool lanes_contiguous, int lanes,
                             int64_t k, float* out);

// C[m, n] (m <= mr, n <= nr, row stride ldc) = alpha * Ap * Bp + beta * C, where Ap is one
// packed A micro-panel and Bp one packed B micro-panel over k packed rows (steps, or pairs of
// steps for bf16 kernels). beta == 0 never reads C.
using MicroKernelFn = void (*)(int64_t k, const float* a, const float* b, float* c, int64_t ldc,
                               float alpha, float beta, int m, int n);

struct GemmKernel {
  const char* name;
  int mr, nr;          // register tile
  int64_t kc, mc, nc;  // cache blocks: kc steps (B micro-panel in L1), mc rows (A block in L2),
                       // nc columns (B block in L3)
  PackPanelFn pack_a;  // packs width mr
  PackPanelFn pack_b;  // packs width nr
  MicroKernelFn micro;
  int k_unit = 1;      // steps per packed unit: 1 (fp32), 2 (bf16 pairs)
};

// The kernel sgemm uses on this CPU (after the AWQ_ISA cap), or nullptr where only the portable
// reference runs. For callers that build their own packed panels (the int4 prefill).
const GemmKernel* active_gemm_kernel();

const GemmKernel& gemm_kernel_avx2();
// Test hook: the x86 panel packer built for width w (6, 14, 16 or 32) in the AVX2 file, so the
// AVX-512 widths' packing logic is also checked on CPUs without AVX-512; nullptr for other w.
PackPanelFn pack_panel_avx2_for_width(int w);
const GemmKernel& gemm_kernel_avx512();
// 14 x 32 tiles of bf16 pairs on vdpbf16ps (AVX512-BF16), kc counted in steps.
const GemmKernel& gemm_kernel_avx512bf16();
// arm64: 8 x 12 tiles on NEON fmla (gemm_neon.cc), and of bf16 pairs on BFDOT (gemm_neon_bf16.cc).
const GemmKernel& gemm_kernel_neon();
const GemmKernel& gemm_kernel_neon_bf16();
// The kernel for products of precision p here: the bf16 kernel (AVX512-BF16, or BFDOT on arm64), or
// for BF16 without one the fp32 kernel with packers that round the operands to bf16; nullptr where only the portable
// reference runs. Throws InvalidArgument for F16.
const GemmKernel* gemm_kernel_for(Precision p);

}  // namespace awq::detail
