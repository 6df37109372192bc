// x86-64 only: elsewhere this file compiles to nothing (AWQ_X86, cpu_features.h).
#include "cpu_features.h"
#if AWQ_X86
#include "isa_target.h"

// AVX-512 versions of the exp-based kernels. Standard headers first, then the target pragma.
// GCC 12 flags the deliberately undefined pass-through operand of _mm512_max_ps/_mm512_min_ps.
#ifndef __clang__
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "vecmath.h"

#ifndef AWQ_EMULATE_AVX512  // the emulated test build: native/tests/avx512_emulation.h
AWQ_TARGET_BEGIN("avx512f,avx512dq,avx512vl,avx512bw,avx2,fma,f16c")
#endif

namespace awq {
namespace {

// Cephes-style expf: range reduction by ln2 in two parts, degree-5 polynomial, 2^n by exponent
// bits. Inputs are clamped to [-87.3, 88.4] (results stay normal floats).
inline __m512 exp16(__m512 x) {
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.33654f)), _mm512_set1_ps(88.37626f));
  __m512 fx = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                              _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  x = _mm512_fnmadd_ps(fx, _mm512_set1_ps(0.693359375f), x);
  x = _mm512_fnmadd_ps(fx, _mm512_set1_ps(-2.12194440e-4f), x);
  __m512 y = _mm512_set1_ps(1.9875691500E-4f);
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(1.3981999507E-3f));
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(8.3334519073E-3f));
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(4.1665795894E-2f));
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(1.6666665459E-1f));
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(5.0000001201E-1f));
  y = _mm512_fmadd_ps(y, _mm512_mul_ps(x, x), _mm512_add_ps(x, _mm512_set1_ps(1.f)));
  const __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(fx), _mm512_set1_epi32(127)), 23);
  return _mm512_mul_ps(y, _mm512_castsi512_ps(e));
}

inline float hmax(__m512 v) {
  alignas(64) float t[16];
  _mm512_store_ps(t, v);
  float m = t[0];
  for (float f : t) m = std::max(m, f);
  return m;
}

inline double hsum_pd(__m512 v) {
  alignas(64) float t[16];
  _mm512_store_ps(t, v);
  double s = 0.0;
  for (float f : t) s += f;
  return s;
}

// exp of a scalar through the vector path, so tails match the body bit for bit.
inline float exp1(float x) {
  alignas(64) float t[16];
  _mm512_store_ps(t, exp16(_mm512_set1_ps(x)));
  return t[0];
}

float row_max(const float* x, int64_t n) {
  __m512 m = _mm512_set1_ps(-INFINITY);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) m = _mm512_max_ps(m, _mm512_loadu_ps(x + i));
  float mx = hmax(m);
  for (; i < n; ++i) mx = std::max(mx, x[i]);
  return mx;
}

void softmax_avx512(float* x, int64_t n) {
  const float mx = row_max(x, n);
  const __m512 vmx = _mm512_set1_ps(mx);
  __m512 acc = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 e = exp16(_mm512_sub_ps(_mm512_loadu_ps(x + i), vmx));
    _mm512_storeu_ps(x + i, e);
    acc = _mm512_add_ps(acc, e);
  }
  float sum = static_cast<float>(hsum_pd(acc));
  for (; i < n; ++i) {
    x[i] = exp1(x[i] - mx);
    sum += x[i];
  }
  const __m512 inv = _mm512_set1_ps(1.f / sum);
  i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(x + i, _mm512_mul_ps(_mm512_loadu_ps(x + i), inv));
  for (; i < n; ++i) x[i] *= 1.f / sum;
}

void silu_mul_avx512(const float* g, const float* u, float* h, int64_t n) {
  const __m512 one = _mm512_set1_ps(1.f);
  const __m512 sign = _mm512_set1_ps(-0.f);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 gv = _mm512_loadu_ps(g + i);
    const __m512 den = _mm512_add_ps(one, exp16(_mm512_xor_ps(gv, sign)));
    _mm512_storeu_ps(h + i, _mm512_mul_ps(_mm512_div_ps(gv, den), _mm512_loadu_ps(u + i)));
  }
  for (; i < n; ++i) h[i] = g[i] / (1.f + exp1(-g[i])) * u[i];
}

double log_sum_exp_avx512(const float* x, int64_t n) {
  const float mx = row_max(x, n);
  const __m512 vmx = _mm512_set1_ps(mx);
  double sum = 0.0;
  int64_t i = 0;
  while (i + 16 <= n) {
    // fp32 lanes over short runs, fp64 across runs
    __m512 acc = _mm512_setzero_ps();
    const int64_t end = std::min(n - (n - i) % 16, i + 512);
    for (; i < end; i += 16) acc = _mm512_add_ps(acc, exp16(_mm512_sub_ps(_mm512_loadu_ps(x + i), vmx)));
    sum += hsum_pd(acc);
  }
  for (; i < n; ++i) sum += exp1(x[i] - mx);
  return static_cast<double>(mx) + std::log(sum);
}

double sum_sq_diff_avx512(const float* a, const float* b, int64_t n) {
  double total = 0.0;
  int64_t i = 0;
  while (i + 16 <= n) {
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    const int64_t end = std::min(n - (n - i) % 16, i + 1024);
    for (; i + 32 <= end; i += 32) {
      const __m512 d0 = _mm512_sub_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i));
      const __m512 d1 = _mm512_sub_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16));
      acc0 = _mm512_fmadd_ps(d0, d0, acc0);
      acc1 = _mm512_fmadd_ps(d1, d1, acc1);
    }
    for (; i < end; i += 16) {
      const __m512 d0 = _mm512_sub_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i));
      acc0 = _mm512_fmadd_ps(d0, d0, acc0);
    }
    total += hsum_pd(_mm512_add_ps(acc0, acc1));
  }
  for (; i < n; ++i) {
    const double d = static_cast<double>(a[i]) - b[i];
    total += d * d;
  }
  return total;
}

// b's elements as fp32: as stored (F32), or widened exactly from fp16 / bf16 (with 256-bit
// conversions, which the emulated test build also has). tail16: the first `count` elements, the
// other lanes zero (what a masked load gives).
struct F32Elems {
  static __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
  static __m512 tail16(const float* p, int64_t /*count*/, __mmask16 m) { return _mm512_maskz_loadu_ps(m, p); }
};
inline __m512 join8(__m256 lo, __m256 hi) { return _mm512_insertf32x8(_mm512_castps256_ps512(lo), hi, 1); }
inline __m256i load8_u16(const uint16_t* p) { return _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
template <class Widen8>
__m512 half_tail16(const uint16_t* p, int64_t count) {
  uint16_t buf[16] = {};  // zero bits widen to +0 in both formats
  for (int64_t i = 0; i < count; ++i) buf[i] = p[i];
  return join8(Widen8::widen8(buf), Widen8::widen8(buf + 8));
}
struct Fp16Elems {
  static __m256 widen8(const uint16_t* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
  static __m512 load16(const uint16_t* p) { return join8(widen8(p), widen8(p + 8)); }
  static __m512 tail16(const uint16_t* p, int64_t count, __mmask16) { return half_tail16<Fp16Elems>(p, count); }
};
struct Bf16Elems {
  static __m256 widen8(const uint16_t* p) { return _mm256_castsi256_ps(_mm256_slli_epi32(load8_u16(p), 16)); }
  static __m512 load16(const uint16_t* p) { return join8(widen8(p), widen8(p + 8)); }
  static __m512 tail16(const uint16_t* p, int64_t count, __mmask16) { return half_tail16<Bf16Elems>(p, count); }
};

// 4 accumulators of 16 lanes, 64 products per step; the tail through a masked load. One summation
// order for every storage of b, so a dot on 16-bit b is bitwise the dot on its widening.
template <class Elems, class T>
float dot_avx512_of(const float* a, const T* b, int64_t n) {
  __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
  int64_t i = 0;
  for (; i + 64 <= n; i += 64)
    for (int j = 0; j < 4; ++j)
      acc[j] = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16 * j), Elems::load16(b + i + 16 * j), acc[j]);
  for (; i + 16 <= n; i += 16) acc[0] = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), Elems::load16(b + i), acc[0]);
  if (i < n) {
    const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1);
    acc[1] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), Elems::tail16(b + i, n - i, m), acc[1]);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3])));
}

float dot_avx512(const float* a, const float* b, int64_t n) { return dot_avx512_of<F32Elems>(a, b, n); }
float dot_fp16_avx512(const float* a, const uint16_t* b, int64_t n) { return dot_avx512_of<Fp16Elems>(a, b, n); }
float dot_bf16_avx512(const float* a, const uint16_t* b, int64_t n) { return dot_avx512_of<Bf16Elems>(a, b, n); }

}  // namespace

namespace detail {
const VecKernels kVecAvx512 = {softmax_avx512, silu_mul_avx512, log_sum_exp_avx512, sum_sq_diff_avx512,
                               dot_avx512,     dot_fp16_avx512, dot_bf16_avx512};
}

}  // namespace awq

#ifndef AWQ_EMULATE_AVX512
AWQ_TARGET_END()
#endif

#endif  // AWQ_X86
