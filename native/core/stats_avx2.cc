// x86-64 only: elsewhere this file compiles to nothing (AWQ_X86, cpu_features.h).
#include "cpu_features.h"
#if AWQ_X86
#include "isa_target.h"

// AVX2 versions of the stats kernels. Standard headers come before the target pragma so no
// inline library code is compiled for AVX2 and then shared with the portable path.
#include <immintrin.h>

#include <cfloat>
#include <cmath>
#include <cstdint>

#include "stats.h"

AWQ_TARGET_BEGIN("avx2,fma,f16c")

namespace awq::detail {

bool accumulate_abs_avx2(const float* row, float* acc, int64_t cols) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  const __m256 fmax = _mm256_set1_ps(FLT_MAX);
  __m256 bad = _mm256_setzero_ps();
  int64_t j = 0;
  for (; j + 8 <= cols; j += 8) {
    const __m256 a = _mm256_andnot_ps(sign, _mm256_loadu_ps(row + j));
    // NaN compares unordered, so "not <= FLT_MAX" flags both NaN and Inf.
    bad = _mm256_or_ps(bad, _mm256_cmp_ps(a, fmax, _CMP_NLE_UQ));
    _mm256_storeu_ps(acc + j, _mm256_add_ps(_mm256_loadu_ps(acc + j), a));
  }
  bool finite = _mm256_movemask_ps(bad) == 0;
  for (; j < cols; ++j) {
    const float a = std::fabs(row[j]);
    finite &= (a <= FLT_MAX);
    acc[j] += a;
  }
  return finite;
}

}  // namespace awq::detail

AWQ_TARGET_END()

#endif  // AWQ_X86
