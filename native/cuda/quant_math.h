// The scalar arithmetic of group quantization (native/core/quant.cc quantize_rows), written once
// for the host and the device so the CUDA kernels reproduce the CPU bit for bit.
//
// Why every operation is spelled out:
//  - nvcc contracts a * b + c into one FMA by default; the CPU build (-O3, no -march, so no FMA
//    instructions) rounds every operation separately. On the device each operation goes through
//    an explicitly rounded intrinsic (__fmul_rn, __fdiv_rn, ...), which nvcc never contracts.
//  - std::max / std::min are not fmaxf / fminf: std::max(a, b) is (a < b) ? b : a, which keeps a
//    when b is NaN, returns a NaN a, and keeps the first of +0 / -0. qmax / qmin below are exactly
//    that expression, so NaN and signed-zero behaviour follows the CPU.
//  - round half to even: std::nearbyint (default rounding mode) on the host, rintf on the device.
//  - fp16 rounding of the scale: a port of dtype.cc's f32_to_fp16_scalar / fp16_to_f32_scalar
//    (integer bit manipulation), tested on the host against awq::round_to_fp16.
//
// Plain C++ when not compiled by nvcc, so the C++ tests check the host instantiation against
// quantize_rows without a GPU.
#pragma once
#include <cstdint>
#include <cstring>

#ifdef __CUDACC__
#define AWQ_HD __host__ __device__ __forceinline__
#else
#include <cmath>
#define AWQ_HD inline
#endif

namespace awq::cuda::qm {

AWQ_HD float f_mul(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
AWQ_HD float f_div(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}
AWQ_HD float f_add(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
AWQ_HD float f_sub(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}
// Round half to even.
AWQ_HD float f_rint(float a) {
#ifdef __CUDA_ARCH__
  return rintf(a);
#else
  return std::nearbyint(a);
#endif
}
AWQ_HD float f_abs(float a) {
#ifdef __CUDA_ARCH__
  return fabsf(a);
#else
  return std::fabs(a);
#endif
}
AWQ_HD bool f_isnan(float a) { return a != a; }
AWQ_HD bool f_isfinite(float a) { return f_abs(a) <= 3.402823466e38f; }  // false for NaN and Inf

// std::max / std::min, including their NaN and signed-zero behaviour.
AWQ_HD float qmax(float a, float b) { return (a < b) ? b : a; }
AWQ_HD float qmin(float a, float b) { return (b < a) ? b : a; }

AWQ_HD uint32_t float_bits(float f) {
#ifdef __CUDA_ARCH__
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
#endif
}
AWQ_HD float bits_float(uint32_t u) {
#ifdef __CUDA_ARCH__
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, 4);
  return f;
#endif
}

// dtype.cc f32_to_fp16_scalar, statement for statement.
AWQ_HD uint16_t f32_to_fp16(float f) {
  const uint32_t x = float_bits(f);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t abs = x & 0x7fffffffu;
  if (abs > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u | ((abs >> 13) & 0x3ffu));  // NaN
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds to >= 65520: Inf
  if (abs < 0x38800000u) {
    // fp16 subnormal or zero: abs / 2^-24 rounded to the nearest even integer
    const float v = f_mul(bits_float(abs), 16777216.0f);  // exact (power of two)
    float r = static_cast<float>(static_cast<int32_t>(v));
    const float frac = f_sub(v, r);  // exact
    if (frac > 0.5f || (frac == 0.5f && (static_cast<int32_t>(r) & 1))) r = f_add(r, 1.f);
    return static_cast<uint16_t>(sign | static_cast<uint32_t>(r));
  }
  const uint32_t rounded = abs + 0xfffu + ((abs >> 13) & 1u);
  return static_cast<uint16_t>(sign | ((rounded - 0x38000000u) >> 13));
}

// dtype.cc fp16_to_f32_scalar.
AWQ_HD float fp16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  if (exp == 0x1fu) return bits_float(sign | 0x7f800000u | (mant << 13));
  if (exp == 0) {
    if (mant == 0) return bits_float(sign);
    const float v = f_mul(static_cast<float>(mant), 5.9604644775390625e-8f);  // exact
    return sign ? -v : v;
  }
  return bits_float(sign | ((exp + 112u) << 23) | (mant << 13));
}

AWQ_HD float round_to_fp16(float x) { return fp16_to_f32(f32_to_fp16(x)); }

// What quantize_rows derives per (row, group): w_dq = (clamp(rint(w / s) + z, lo, hi) - z) * s.
struct GroupQuant {
  float s, z, lo, hi;
};

// Asymmetric (zero point) from the group's max and min, as quantize_rows computes them (mx / mn
// seeded with the first element, then std::max / std::min).
AWQ_HD GroupQuant group_quant_zero_point(float mx, float mn, int bits, bool fp16_scale) {
  const float qmx = static_cast<float>((1 << bits) - 1);
  float s = f_div(qmax(f_sub(mx, mn), 1e-5f), qmx);
  if (fp16_scale) s = round_to_fp16(s);
  const float z = qmin(qmax(-f_rint(f_div(mn, s)), 0.f), qmx);
  return GroupQuant{s, z, 0.f, qmx};
}

// Symmetric from max |w| (seeded with 0, then std::max): q in [-half, half - 1] stored + half.
AWQ_HD GroupQuant group_quant_symmetric(float amax, int bits, bool fp16_scale) {
  const float half = static_cast<float>(1 << (bits - 1));
  float s = f_div(qmax(amax, 1e-5f), f_sub(half, 1.f));
  if (fp16_scale) s = round_to_fp16(s);
  return GroupQuant{s, half, 0.f, f_sub(f_mul(2.f, half), 1.f)};
}

// The integer level q (as a float in [lo, hi]) of w.
AWQ_HD float quant_level(float w, const GroupQuant& g) {
  return qmin(qmax(f_add(f_rint(f_div(w, g.s)), g.z), g.lo), g.hi);
}

AWQ_HD float dequant(float q, const GroupQuant& g) { return f_mul(f_sub(q, g.z), g.s); }

// The shrink factor of clip step i: float(1 - i / n_grid) computed in double, as search.cc does.
AWQ_HD float clip_shrink(int i, int n_grid) {
  return static_cast<float>(1.0 - static_cast<double>(i) / static_cast<double>(n_grid));
}

// Running max / min seeded so that NaN values are skipped (qmax(acc, NaN) == acc); the caller
// applies quantize_rows' rule that a NaN first element makes both NaN (see seed_first()).
struct MinMax {
  float mx = bits_float(0xff800000u), mn = bits_float(0x7f800000u);  // -Inf, +Inf
  AWQ_HD void add(float v) {
    mx = qmax(mx, v);
    mn = qmin(mn, v);
  }
  AWQ_HD void merge(const MinMax& o) {
    mx = qmax(mx, o.mx);
    mn = qmin(mn, o.mn);
  }
  // quantize_rows seeds mx = mn = src[0]: a NaN there stays (std::max(NaN, x) is NaN), any
  // later NaN is skipped. Values otherwise equal the running max / min over all non-NaN values.
  AWQ_HD void seed_first(float first) {
    if (f_isnan(first)) mx = mn = first;
  }
};

}  // namespace awq::cuda::qm
