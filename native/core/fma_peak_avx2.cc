// x86-64 only: elsewhere this file compiles to nothing (AWQ_X86, cpu_features.h).
#include "cpu_features.h"
#if AWQ_X86
#include "isa_target.h"

// AVX2 FMA-throughput loop (see fma_peak.h). 12 independent accumulators cover FMA latency x
// throughput on current cores (4 cycles x 2 ports = 8 in flight).
#include <immintrin.h>

#include <cstdint>

#include "fma_peak.h"

AWQ_TARGET_BEGIN("avx2,fma")

namespace awq::detail {

// Results land here so the compiler cannot drop the loop.
volatile float fma_sink_avx2;

double fma_burst_avx2(int64_t iters) {
  __m256 a0 = _mm256_set1_ps(0.1f), a1 = _mm256_set1_ps(0.2f), a2 = _mm256_set1_ps(0.3f),
         a3 = _mm256_set1_ps(0.4f), a4 = _mm256_set1_ps(0.5f), a5 = _mm256_set1_ps(0.6f),
         a6 = _mm256_set1_ps(0.7f), a7 = _mm256_set1_ps(0.8f), a8 = _mm256_set1_ps(0.9f),
         a9 = _mm256_set1_ps(1.0f), a10 = _mm256_set1_ps(1.1f), a11 = _mm256_set1_ps(1.2f);
  const __m256 m = _mm256_set1_ps(0.9999f), c = _mm256_set1_ps(0.0001f);
  for (int64_t i = 0; i < iters; ++i) {
    a0 = _mm256_fmadd_ps(a0, m, c); a1 = _mm256_fmadd_ps(a1, m, c);
    a2 = _mm256_fmadd_ps(a2, m, c); a3 = _mm256_fmadd_ps(a3, m, c);
    a4 = _mm256_fmadd_ps(a4, m, c); a5 = _mm256_fmadd_ps(a5, m, c);
    a6 = _mm256_fmadd_ps(a6, m, c); a7 = _mm256_fmadd_ps(a7, m, c);
    a8 = _mm256_fmadd_ps(a8, m, c); a9 = _mm256_fmadd_ps(a9, m, c);
    a10 = _mm256_fmadd_ps(a10, m, c); a11 = _mm256_fmadd_ps(a11, m, c);
  }
  __m256 s = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)),
                           _mm256_add_ps(_mm256_add_ps(a4, a5), _mm256_add_ps(a6, a7)));
  s = _mm256_add_ps(s, _mm256_add_ps(_mm256_add_ps(a8, a9), _mm256_add_ps(a10, a11)));
  // Keep the result observable so the loop is not removed.
  float out[8];
  _mm256_storeu_ps(out, s);
  fma_sink_avx2 = out[0];
  return static_cast<double>(iters) * 12 * 8 * 2;
}

}  // namespace awq::detail

AWQ_TARGET_END()

#endif  // AWQ_X86
