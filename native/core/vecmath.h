// Elementwise kernels built on exp (softmax rows, SiLU gating, log-sum-exp) and two reductions
// (squared differences, dot products), with a portable
// path and AVX2 / AVX-512 / NEON paths that use a polynomial exp accurate to ~2 ulp over the range
// these kernels see. The search runs billions of these per layer; scalar expf would dominate.
#pragma once
#include <cstdint>

namespace awq {

// x[0..n) <- softmax(x) in fp32 with max subtraction.
void softmax_inplace(float* x, int64_t n);
// h[i] = silu(g[i]) * u[i] = g / (1 + exp(-g)) * u.
void silu_mul(const float* g, const float* u, float* h, int64_t n);
// max(x) + log(sum exp(x - max(x))), the sum accumulated in fp64 across vector lanes.
double log_sum_exp(const float* x, int64_t n);
// sum over i of (a[i] - b[i])^2 in fp64 (fp32 within short runs).
double sum_sq_diff(const float* a, const float* b, int64_t n);
// sum over i of a[i] * b[i] in fp32 (independent vector lanes, summed at the end): the outputs of
// sgemm on a few rows against a transposed B (row_dots).
float dot(const float* a, const float* b, int64_t n);
// The same with b stored as fp16 / bf16, widened as it is read: bitwise dot() on the widened b (the
// same summation order), reading half the bytes (the rows of an fp16 lm_head at M = 1).
float dot_fp16(const float* a, const uint16_t* b, int64_t n);
float dot_bf16(const float* a, const uint16_t* b, int64_t n);
// dst[i] = src[i] widened from fp16 (exact; F16C or NEON conversions where the active ISA has them).
// Serial: for kernels that widen a panel or a row at a time inside their own parallel loops.
void widen_fp16(const uint16_t* src, float* dst, int64_t n);
// dst[i] = src[i] widened from bf16 (exact: the bits shifted into the high half).
void widen_bf16(const uint16_t* src, float* dst, int64_t n);

namespace detail {
struct VecKernels {
  void (*softmax)(float*, int64_t);
  void (*silu_mul)(const float*, const float*, float*, int64_t);
  double (*log_sum_exp)(const float*, int64_t);
  double (*sum_sq_diff)(const float*, const float*, int64_t);
  float (*dot)(const float*, const float*, int64_t);
  float (*dot_fp16)(const float*, const uint16_t*, int64_t);
  float (*dot_bf16)(const float*, const uint16_t*, int64_t);
};
extern const VecKernels kVecPortable;
extern const VecKernels kVecAvx2;
extern const VecKernels kVecAvx512;
extern const VecKernels kVecNeon;
// widen_fp16's vector versions (vecmath_avx2.cc: F16C, which every AVX2 CPU here has; vecmath_neon.cc).
void widen_fp16_f16c(const uint16_t* src, float* dst, int64_t n);
void widen_fp16_neon(const uint16_t* src, float* dst, int64_t n);
}  // namespace detail

}  // namespace awq
