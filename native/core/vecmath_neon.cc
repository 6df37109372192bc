// arm64 only: elsewhere this file compiles to nothing (AWQ_ARM64, cpu_features.h).
#include "cpu_features.h"
#if AWQ_ARM64

// NEON versions of the exp-based kernels: the polynomial exp of the x86 files (vecmath_avx2.cc),
// 4 lanes at a time.
#include <arm_neon.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "vecmath.h"

namespace awq {
namespace {

// Cephes-style expf: range reduction by ln2 in two parts, degree-5 polynomial, 2^n by exponent
// bits. Inputs are clamped to [-87.3, 88.4] (results stay normal floats); maxnm / minnm clamp a
// NaN to the lower bound, as the x86 kernels' max / min do.
inline float32x4_t exp4(float32x4_t x) {
  x = vminnmq_f32(vmaxnmq_f32(x, vdupq_n_f32(-87.33654f)), vdupq_n_f32(88.37626f));
  const float32x4_t fx = vrndnq_f32(vmulq_n_f32(x, 1.44269504088896341f));
  x = vfmsq_f32(x, fx, vdupq_n_f32(0.693359375f));
  x = vfmsq_f32(x, fx, vdupq_n_f32(-2.12194440e-4f));
  float32x4_t y = vdupq_n_f32(1.9875691500E-4f);
  y = vfmaq_f32(vdupq_n_f32(1.3981999507E-3f), y, x);
  y = vfmaq_f32(vdupq_n_f32(8.3334519073E-3f), y, x);
  y = vfmaq_f32(vdupq_n_f32(4.1665795894E-2f), y, x);
  y = vfmaq_f32(vdupq_n_f32(1.6666665459E-1f), y, x);
  y = vfmaq_f32(vdupq_n_f32(5.0000001201E-1f), y, x);
  y = vfmaq_f32(vaddq_f32(x, vdupq_n_f32(1.f)), y, vmulq_f32(x, x));
  const int32x4_t e = vshlq_n_s32(vaddq_s32(vcvtq_s32_f32(fx), vdupq_n_s32(127)), 23);
  return vmulq_f32(y, vreinterpretq_f32_s32(e));
}

inline double hsum_pd(float32x4_t v) {
  return static_cast<double>(vgetq_lane_f32(v, 0)) + vgetq_lane_f32(v, 1) + vgetq_lane_f32(v, 2) +
         vgetq_lane_f32(v, 3);
}

// exp of a scalar through the vector path, so tails match the body bit for bit.
inline float exp1(float x) { return vgetq_lane_f32(exp4(vdupq_n_f32(x)), 0); }

float row_max(const float* x, int64_t n) {
  float32x4_t m = vdupq_n_f32(-INFINITY);
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) m = vmaxq_f32(m, vld1q_f32(x + i));
  float mx = vmaxvq_f32(m);
  for (; i < n; ++i) mx = std::max(mx, x[i]);
  return mx;
}

void softmax_neon(float* x, int64_t n) {
  const float mx = row_max(x, n);
  const float32x4_t vmx = vdupq_n_f32(mx);
  float32x4_t acc = vdupq_n_f32(0.f);
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const float32x4_t e = exp4(vsubq_f32(vld1q_f32(x + i), vmx));
    vst1q_f32(x + i, e);
    acc = vaddq_f32(acc, e);
  }
  float sum = static_cast<float>(hsum_pd(acc));
  for (; i < n; ++i) {
    x[i] = exp1(x[i] - mx);
    sum += x[i];
  }
  const float inv = 1.f / sum;
  i = 0;
  for (; i + 4 <= n; i += 4) vst1q_f32(x + i, vmulq_n_f32(vld1q_f32(x + i), inv));
  for (; i < n; ++i) x[i] *= inv;
}

void silu_mul_neon(const float* g, const float* u, float* h, int64_t n) {
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const float32x4_t gv = vld1q_f32(g + i);
    const float32x4_t den = vaddq_f32(vdupq_n_f32(1.f), exp4(vnegq_f32(gv)));
    vst1q_f32(h + i, vmulq_f32(vdivq_f32(gv, den), vld1q_f32(u + i)));
  }
  for (; i < n; ++i) h[i] = g[i] / (1.f + exp1(-g[i])) * u[i];
}

double log_sum_exp_neon(const float* x, int64_t n) {
  const float mx = row_max(x, n);
  const float32x4_t vmx = vdupq_n_f32(mx);
  double sum = 0.0;
  int64_t i = 0;
  while (i + 4 <= n) {
    // fp32 lanes over short runs, fp64 across runs
    float32x4_t acc = vdupq_n_f32(0.f);
    const int64_t end = std::min(n - (n - i) % 4, i + 512);
    for (; i < end; i += 4) acc = vaddq_f32(acc, exp4(vsubq_f32(vld1q_f32(x + i), vmx)));
    sum += hsum_pd(acc);
  }
  for (; i < n; ++i) sum += exp1(x[i] - mx);
  return static_cast<double>(mx) + std::log(sum);
}

double sum_sq_diff_neon(const float* a, const float* b, int64_t n) {
  double total = 0.0;
  int64_t i = 0;
  while (i + 4 <= n) {
    float32x4_t acc0 = vdupq_n_f32(0.f), acc1 = vdupq_n_f32(0.f);
    const int64_t end = std::min(n - (n - i) % 4, i + 1024);
    for (; i + 8 <= end; i += 8) {
      const float32x4_t d0 = vsubq_f32(vld1q_f32(a + i), vld1q_f32(b + i));
      const float32x4_t d1 = vsubq_f32(vld1q_f32(a + i + 4), vld1q_f32(b + i + 4));
      acc0 = vfmaq_f32(acc0, d0, d0);
      acc1 = vfmaq_f32(acc1, d1, d1);
    }
    for (; i < end; i += 4) {
      const float32x4_t d0 = vsubq_f32(vld1q_f32(a + i), vld1q_f32(b + i));
      acc0 = vfmaq_f32(acc0, d0, d0);
    }
    total += hsum_pd(vaddq_f32(acc0, acc1));
  }
  for (; i < n; ++i) {
    const double d = static_cast<double>(a[i]) - b[i];
    total += d * d;
  }
  return total;
}

// 8 accumulators of 4 lanes (FMA latency x pipes in flight), 32 products per step.
// b's elements as fp32: as stored (F32), or widened exactly from fp16 / bf16.
struct F32Elems {
  static float32x4_t load4(const float* p) { return vld1q_f32(p); }
  static float one(const float* p) { return *p; }
};
struct Fp16Elems {
  static float32x4_t load4(const uint16_t* p) { return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p))); }
  static float one(const uint16_t* p) { return vgetq_lane_f32(load4_one(*p), 0); }
  static float32x4_t load4_one(uint16_t h) { return vcvt_f32_f16(vreinterpret_f16_u16(vdup_n_u16(h))); }
};
struct Bf16Elems {
  static float32x4_t load4(const uint16_t* p) { return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(p), 16)); }
  static float one(const uint16_t* p) { return vgetq_lane_f32(vreinterpretq_f32_u32(vshll_n_u16(vdup_n_u16(*p), 16)), 0); }
};

// One summation order for every storage of b, so a dot on 16-bit b is bitwise the dot on its widening.
template <class Elems, class T>
float dot_neon_of(const float* a, const T* b, int64_t n) {
  float32x4_t acc[8];
  for (auto& v : acc) v = vdupq_n_f32(0.f);
  int64_t i = 0;
  for (; i + 32 <= n; i += 32)
    for (int j = 0; j < 8; ++j) acc[j] = vfmaq_f32(acc[j], vld1q_f32(a + i + 4 * j), Elems::load4(b + i + 4 * j));
  for (; i + 4 <= n; i += 4) acc[0] = vfmaq_f32(acc[0], vld1q_f32(a + i), Elems::load4(b + i));
  float32x4_t s = vaddq_f32(vaddq_f32(vaddq_f32(acc[0], acc[1]), vaddq_f32(acc[2], acc[3])),
                            vaddq_f32(vaddq_f32(acc[4], acc[5]), vaddq_f32(acc[6], acc[7])));
  float total = vaddvq_f32(s);
  // an explicit fma: whether the compiler contracts a * b + total may differ between instantiations
  for (; i < n; ++i) total = std::fma(a[i], Elems::one(b + i), total);
  return total;
}

float dot_neon(const float* a, const float* b, int64_t n) { return dot_neon_of<F32Elems>(a, b, n); }
float dot_fp16_neon(const float* a, const uint16_t* b, int64_t n) { return dot_neon_of<Fp16Elems>(a, b, n); }
float dot_bf16_neon(const float* a, const uint16_t* b, int64_t n) { return dot_neon_of<Bf16Elems>(a, b, n); }

}  // namespace

namespace detail {
void widen_fp16_neon(const uint16_t* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const float16x8_t h = vreinterpretq_f16_u16(vld1q_u16(src + i));
    vst1q_f32(dst + i, vcvt_f32_f16(vget_low_f16(h)));
    vst1q_f32(dst + i + 4, vcvt_high_f32_f16(h));
  }
  for (; i < n; ++i) dst[i] = vgetq_lane_f32(vcvt_f32_f16(vreinterpret_f16_u16(vdup_n_u16(src[i]))), 0);
}

const VecKernels kVecNeon = {softmax_neon, silu_mul_neon, log_sum_exp_neon, sum_sq_diff_neon,
                             dot_neon,     dot_fp16_neon, dot_bf16_neon};
}

}  // namespace awq

#endif  // AWQ_ARM64
