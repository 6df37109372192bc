// x86-64 only: elsewhere this file compiles to nothing (AWQ_X86, cpu_features.h).
#include "cpu_features.h"
#if AWQ_X86
#include "isa_target.h"

// AVX-512 FMA-throughput loop (see fma_peak.h); 16 independent zmm accumulators.
#include <immintrin.h>

#include <cstdint>

#include "fma_peak.h"

#ifndef AWQ_EMULATE_AVX512  // the emulated test build: native/tests/avx512_emulation.h
AWQ_TARGET_BEGIN("avx512f,avx2,fma")
#endif

namespace awq::detail {

// Results land here so the compiler cannot drop the loop.
volatile float fma_sink_avx512;

double fma_burst_avx512(int64_t iters) {
  __m512 a[16];
  for (int i = 0; i < 16; ++i) a[i] = _mm512_set1_ps(0.05f * static_cast<float>(i + 1));
  const __m512 m = _mm512_set1_ps(0.9999f), c = _mm512_set1_ps(0.0001f);
  for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) a[i] = _mm512_fmadd_ps(a[i], m, c);
  }
  __m512 s = a[0];
  for (int i = 1; i < 16; ++i) s = _mm512_add_ps(s, a[i]);
  float out[16];
  _mm512_storeu_ps(out, s);
  fma_sink_avx512 = out[0];
  return static_cast<double>(iters) * 16 * 16 * 2;
}

}  // namespace awq::detail

#ifndef AWQ_EMULATE_AVX512
AWQ_TARGET_END()
#endif

#endif  // AWQ_X86
