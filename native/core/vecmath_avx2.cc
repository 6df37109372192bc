// x86-64 only: elsewhere this file compiles to nothing (AWQ_X86, cpu_features.h).
#include "cpu_features.h"
#if AWQ_X86
#include "isa_target.h"

// AVX2 versions of the exp-based kernels. Standard headers first, then the target pragma.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "vecmath.h"

AWQ_TARGET_BEGIN("avx2,fma,f16c")

namespace awq {
namespace {

// Cephes-style expf: range reduction by ln2 in two parts, degree-5 polynomial, 2^n by exponent
// bits. Inputs are clamped to [-87.3, 88.4] (results stay normal floats).
inline __m256 exp8(__m256 x) {
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.33654f)), _mm256_set1_ps(88.37626f));
  __m256 fx = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                              _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
  __m256 y = _mm256_set1_ps(1.9875691500E-4f);
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507E-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073E-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894E-2f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459E-1f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201E-1f));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.f)));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(fx), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

inline float hmax(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
  return _mm_cvtss_f32(m);
}

inline double hsum_pd(__m256 v) {
  alignas(32) float t[8];
  _mm256_store_ps(t, v);
  double s = 0.0;
  for (float f : t) s += f;
  return s;
}

// exp of a scalar through the vector path, so tails match the body bit for bit.
inline float exp1(float x) {
  alignas(32) float t[8];
  _mm256_store_ps(t, exp8(_mm256_set1_ps(x)));
  return t[0];
}

float row_max(const float* x, int64_t n) {
  __m256 m = _mm256_set1_ps(-INFINITY);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) m = _mm256_max_ps(m, _mm256_loadu_ps(x + i));
  float mx = hmax(m);
  for (; i < n; ++i) mx = std::max(mx, x[i]);
  return mx;
}

void softmax_avx2(float* x, int64_t n) {
  const float mx = row_max(x, n);
  const __m256 vmx = _mm256_set1_ps(mx);
  __m256 acc = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), vmx));
    _mm256_storeu_ps(x + i, e);
    acc = _mm256_add_ps(acc, e);
  }
  float sum = static_cast<float>(hsum_pd(acc));
  for (; i < n; ++i) {
    x[i] = exp1(x[i] - mx);
    sum += x[i];
  }
  const __m256 inv = _mm256_set1_ps(1.f / sum);
  i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), inv));
  for (; i < n; ++i) x[i] *= 1.f / sum;
}

void silu_mul_avx2(const float* g, const float* u, float* h, int64_t n) {
  const __m256 one = _mm256_set1_ps(1.f);
  const __m256 sign = _mm256_set1_ps(-0.f);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 gv = _mm256_loadu_ps(g + i);
    const __m256 den = _mm256_add_ps(one, exp8(_mm256_xor_ps(gv, sign)));
    _mm256_storeu_ps(h + i, _mm256_mul_ps(_mm256_div_ps(gv, den), _mm256_loadu_ps(u + i)));
  }
  for (; i < n; ++i) h[i] = g[i] / (1.f + exp1(-g[i])) * u[i];
}

double log_sum_exp_avx2(const float* x, int64_t n) {
  const float mx = row_max(x, n);
  const __m256 vmx = _mm256_set1_ps(mx);
  double sum = 0.0;
  int64_t i = 0;
  while (i + 8 <= n) {
    // fp32 lanes over short runs, fp64 across runs
    __m256 acc = _mm256_setzero_ps();
    const int64_t end = std::min(n - (n - i) % 8, i + 512);
    for (; i < end; i += 8) acc = _mm256_add_ps(acc, exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), vmx)));
    sum += hsum_pd(acc);
  }
  for (; i < n; ++i) sum += exp1(x[i] - mx);
  return static_cast<double>(mx) + std::log(sum);
}

double sum_sq_diff_avx2(const float* a, const float* b, int64_t n) {
  double total = 0.0;
  int64_t i = 0;
  while (i + 8 <= n) {
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    const int64_t end = std::min(n - (n - i) % 8, i + 1024);
    for (; i + 16 <= end; i += 16) {
      const __m256 d0 = _mm256_sub_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i));
      const __m256 d1 = _mm256_sub_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8));
      acc0 = _mm256_fmadd_ps(d0, d0, acc0);
      acc1 = _mm256_fmadd_ps(d1, d1, acc1);
    }
    for (; i < end; i += 8) {
      const __m256 d0 = _mm256_sub_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i));
      acc0 = _mm256_fmadd_ps(d0, d0, acc0);
    }
    total += hsum_pd(_mm256_add_ps(acc0, acc1));
  }
  for (; i < n; ++i) {
    const double d = static_cast<double>(a[i]) - b[i];
    total += d * d;
  }
  return total;
}

// 4 accumulators of 8 lanes (FMA latency x 2 ports in flight), 32 products per step.
// b's elements as fp32: as stored (F32), or widened exactly from fp16 (F16C) or bf16 (a shift).
struct F32Elems {
  static __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
  static float one(const float* p) { return *p; }
};
struct Fp16Elems {
  static __m256 load8(const uint16_t* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
  static float one(const uint16_t* p) { return _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(*p))); }
};
struct Bf16Elems {
  static __m256 load8(const uint16_t* p) {
    const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
  }
  static float one(const uint16_t* p) { return _mm_cvtss_f32(_mm_castsi128_ps(_mm_cvtsi32_si128(static_cast<int>(*p) << 16))); }
};

// One summation order for every storage of b, so a dot on 16-bit b is bitwise the dot on its widening.
template <class Elems, class T>
float dot_avx2_of(const float* a, const T* b, int64_t n) {
  __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
  int64_t i = 0;
  for (; i + 32 <= n; i += 32)
    for (int j = 0; j < 4; ++j)
      acc[j] = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8 * j), Elems::load8(b + i + 8 * j), acc[j]);
  for (; i + 8 <= n; i += 8) acc[0] = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), Elems::load8(b + i), acc[0]);
  const __m256 v = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  float total = _mm_cvtss_f32(s);
  // an explicit fma: whether the compiler contracts a * b + total may differ between instantiations
  for (; i < n; ++i) total = std::fma(a[i], Elems::one(b + i), total);
  return total;
}

float dot_avx2(const float* a, const float* b, int64_t n) { return dot_avx2_of<F32Elems>(a, b, n); }
float dot_fp16_avx2(const float* a, const uint16_t* b, int64_t n) { return dot_avx2_of<Fp16Elems>(a, b, n); }
float dot_bf16_avx2(const float* a, const uint16_t* b, int64_t n) { return dot_avx2_of<Bf16Elems>(a, b, n); }

}  // namespace

namespace detail {
void widen_fp16_f16c(const uint16_t* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i));
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm256_castsi256_si128(h)));
    _mm256_storeu_ps(dst + i + 8, _mm256_cvtph_ps(_mm256_extracti128_si256(h, 1)));
  }
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
  for (; i < n; ++i) dst[i] = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(src[i])));
}

const VecKernels kVecAvx2 = {softmax_avx2,     silu_mul_avx2, log_sum_exp_avx2, sum_sq_diff_avx2,
                             dot_avx2,         dot_fp16_avx2, dot_bf16_avx2};
}

}  // namespace awq

AWQ_TARGET_END()

#endif  // AWQ_X86
