#include "vecmath.h"

#include <algorithm>
#include <cmath>

#include "cpu_features.h"
#include "dtype.h"

namespace awq {
namespace {

void softmax_portable(float* x, int64_t n) {
  float mx = x[0];
  for (int64_t i = 1; i < n; ++i) mx = std::max(mx, x[i]);
  float sum = 0.f;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - mx);
    sum += x[i];
  }
  const float inv = 1.f / sum;
  for (int64_t i = 0; i < n; ++i) x[i] *= inv;
}

void silu_mul_portable(const float* g, const float* u, float* h, int64_t n) {
  for (int64_t i = 0; i < n; ++i) h[i] = g[i] / (1.f + std::exp(-g[i])) * u[i];
}

double log_sum_exp_portable(const float* x, int64_t n) {
  float mx = x[0];
  for (int64_t i = 1; i < n; ++i) mx = std::max(mx, x[i]);
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) sum += std::exp(static_cast<double>(x[i] - mx));
  return static_cast<double>(mx) + std::log(sum);
}

double sum_sq_diff_portable(const float* a, const float* b, int64_t n) {
  double total = 0.0;
  for (int64_t i0 = 0; i0 < n; i0 += 256) {
    float acc = 0.f;
    for (int64_t i = i0; i < std::min(n, i0 + 256); ++i) {
      const float d = a[i] - b[i];
      acc += d * d;
    }
    total += acc;
  }
  return total;
}

// 16 independent lanes, which the compiler vectorizes for the baseline ISA. elem(i) is b[i] as
// fp32; one summation order for every storage of b.
template <class Elem>
float dot_portable_of(const float* a, const Elem& elem, int64_t n) {
  float acc[16] = {};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    for (int l = 0; l < 16; ++l) acc[l] += a[i + l] * elem(i + l);
  float s = 0.f;
  for (float v : acc) s += v;
  for (; i < n; ++i) s += a[i] * elem(i);
  return s;
}

float dot_portable(const float* a, const float* b, int64_t n) {
  return dot_portable_of(a, [b](int64_t i) { return b[i]; }, n);
}
float dot_fp16_portable(const float* a, const uint16_t* b, int64_t n) {
  return dot_portable_of(a, [b](int64_t i) { return fp16_to_f32_scalar(b[i]); }, n);
}
float dot_bf16_portable(const float* a, const uint16_t* b, int64_t n) {
  return dot_portable_of(a, [b](int64_t i) { return bf16_to_f32_scalar(b[i]); }, n);
}

const detail::VecKernels& kernels() {
  switch (active_isa()) {
#if AWQ_X86
    case Isa::Avx512: return detail::kVecAvx512;
    case Isa::Avx2: return detail::kVecAvx2;
#endif
#if AWQ_ARM64
    case Isa::Neon: return detail::kVecNeon;
#endif
    default: return detail::kVecPortable;
  }
}

}  // namespace

namespace detail {
const VecKernels kVecPortable = {softmax_portable, silu_mul_portable, log_sum_exp_portable, sum_sq_diff_portable,
                                 dot_portable,     dot_fp16_portable, dot_bf16_portable};
}

void softmax_inplace(float* x, int64_t n) { kernels().softmax(x, n); }
void silu_mul(const float* g, const float* u, float* h, int64_t n) { kernels().silu_mul(g, u, h, n); }
double log_sum_exp(const float* x, int64_t n) { return kernels().log_sum_exp(x, n); }
double sum_sq_diff(const float* a, const float* b, int64_t n) { return kernels().sum_sq_diff(a, b, n); }
float dot(const float* a, const float* b, int64_t n) { return kernels().dot(a, b, n); }
float dot_fp16(const float* a, const uint16_t* b, int64_t n) { return kernels().dot_fp16(a, b, n); }
float dot_bf16(const float* a, const uint16_t* b, int64_t n) { return kernels().dot_bf16(a, b, n); }

void widen_fp16(const uint16_t* src, float* dst, int64_t n) {
  switch (active_isa()) {
#if AWQ_X86
    case Isa::Avx512:
    case Isa::Avx2: return detail::widen_fp16_f16c(src, dst, n);
#endif
#if AWQ_ARM64
    case Isa::Neon: return detail::widen_fp16_neon(src, dst, n);
#endif
    default:
      for (int64_t i = 0; i < n; ++i) dst[i] = fp16_to_f32_scalar(src[i]);
  }
}

void widen_bf16(const uint16_t* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32_scalar(src[i]);  // vectorizes for the baseline ISA
}

}  // namespace awq
