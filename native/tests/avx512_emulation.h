// AVX-512 without AVX-512: the test build `build-emu512` (npm run test:avx512-emulated) force-
// includes this header into native/core/*_avx512*.cc, which then compile for AVX2 and get their
// 512-bit intrinsics from SIMDe (Debian's libsimde-dev) instead of the CPU. cpu_features() then
// reports AVX-512 and VNNI, so the `*_every_isa` tests run the AVX-512 kernels' logic (masks,
// tails, nibble order, reductions, the VNNI zero-point fold) on machines, CI's among them, that
// lack the instructions. It checks what the kernels compute, not how GCC encodes them: hardware
// runs remain the final word (benchmarks/gpu-check.sh runs the native build on the GPU host).
#pragma once

#define SIMDE_ENABLE_NATIVE_ALIASES
#include <simde/x86/avx512.h>

#include <cmath>
#include <cstdint>
#include <cstring>

// SIMDe 0.7.4 (Debian 12) lacks the intrinsics below (or, for vdpbf16ps, takes a bf16 vector type the
// kernels do not name) or aliases them wrongly. These follow the
// instruction set reference: masked loads and stores touch only the selected lanes (the kernels
// rely on that at row ends), conversions round to nearest even and give INT32_MIN out of range,
// and the reduction adds in the order GCC's own _mm512_reduce_add_ps uses.
namespace awq_emu {

inline simde__m512 maskz_loadu_ps(simde__mmask16 k, const void* p) {
  simde__m512_private r;
  const float* f = static_cast<const float*>(p);
  for (int i = 0; i < 16; ++i) r.f32[i] = (k >> i) & 1 ? f[i] : 0.f;
  return simde__m512_from_private(r);
}

inline void mask_storeu_ps(void* p, simde__mmask16 k, simde__m512 v) {
  const simde__m512_private a = simde__m512_to_private(v);
  float* f = static_cast<float*>(p);
  for (int i = 0; i < 16; ++i)
    if ((k >> i) & 1) f[i] = a.f32[i];
}

inline float reduce_add_ps(simde__m512 v) {
  const simde__m512_private a = simde__m512_to_private(v);
  float t8[8], t4[4];
  for (int i = 0; i < 8; ++i) t8[i] = a.f32[i + 8] + a.f32[i];
  for (int i = 0; i < 4; ++i) t4[i] = t8[i + 4] + t8[i];
  return (t4[0] + t4[2]) + (t4[1] + t4[3]);
}

inline simde__m512 cvtepi32_ps(simde__m512i v) {
  const simde__m512i_private a = simde__m512i_to_private(v);
  simde__m512_private r;
  for (int i = 0; i < 16; ++i) r.f32[i] = static_cast<float>(a.i32[i]);
  return simde__m512_from_private(r);
}

inline simde__m512i cvtps_epi32(simde__m512 v) {
  const simde__m512_private a = simde__m512_to_private(v);
  simde__m512i_private r;
  for (int i = 0; i < 16; ++i) {
    const float x = std::nearbyint(a.f32[i]);
    r.i32[i] = (x >= -2147483648.f && x < 2147483648.f) ? static_cast<int32_t>(x) : INT32_MIN;
  }
  return simde__m512i_from_private(r);
}

template <typename Vec, int N>
inline void mask_storeu_epi32(void* p, unsigned k, Vec v) {
  int32_t lanes[N];
  std::memcpy(lanes, &v, sizeof(lanes));
  int32_t* d = static_cast<int32_t*>(p);
  for (int i = 0; i < N; ++i)
    if ((k >> i) & 1) d[i] = lanes[i];
}

// vpmovdw: the low 16 bits of each 32-bit lane, in order.
inline simde__m256i cvtepi32_epi16(simde__m512i v) {
  const simde__m512i_private a = simde__m512i_to_private(v);
  int16_t r[16];
  for (int i = 0; i < 16; ++i) r[i] = static_cast<int16_t>(a.i32[i]);
  simde__m256i out;
  std::memcpy(&out, r, sizeof(r));
  return out;
}

// vdpbf16ps as the instruction set reference writes it: per fp32 lane, the odd pair's product is
// added first, then the even one's, each add rounded (the hardware also flushes denormals, which
// this leaves alone). a and b hold pairs of bf16 (gemm_kernels.h); the kernel passes them as __m512i.
inline simde__m512 dpbf16_ps(simde__m512 acc, simde__m512i a, simde__m512i b) {
  simde__m512_private r = simde__m512_to_private(acc);
  const simde__m512i_private x = simde__m512i_to_private(a), y = simde__m512i_to_private(b);
  auto widen = [](uint32_t half) {
    const uint32_t u = half << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  };
  for (int i = 0; i < 16; ++i) {
    const uint32_t u = static_cast<uint32_t>(x.i32[i]), v = static_cast<uint32_t>(y.i32[i]);
    r.f32[i] += widen(u >> 16) * widen(v >> 16);
    r.f32[i] += widen(u & 0xffff) * widen(v & 0xffff);
  }
  return simde__m512_from_private(r);
}

}  // namespace awq_emu

#define _mm512_maskz_loadu_ps(k, p) awq_emu::maskz_loadu_ps((k), (p))
#define _mm512_mask_storeu_ps(p, k, v) awq_emu::mask_storeu_ps((p), (k), (v))
#define _mm512_reduce_add_ps(v) awq_emu::reduce_add_ps(v)
#define _mm512_cvtepi32_ps(v) awq_emu::cvtepi32_ps(v)
#define _mm512_cvtepi32_epi16(v) awq_emu::cvtepi32_epi16(v)
#define _mm512_mask_storeu_epi32(p, k, v) awq_emu::mask_storeu_epi32<simde__m512i, 16>((p), (k), (v))
#define _mm256_mask_storeu_epi32(p, k, v) awq_emu::mask_storeu_epi32<simde__m256i, 8>((p), (k), (v))
#define _mm512_cvtps_epi32(v) awq_emu::cvtps_epi32(v)
#define _mm512_mask_cmp_ps_mask(k, a, b, imm) \
  static_cast<simde__mmask16>((k) & simde_mm512_cmp_ps_mask((a), (b), (imm)))
#undef _mm512_madd_epi16
#define _mm512_madd_epi16(a, b) simde_mm512_madd_epi16((a), (b))
