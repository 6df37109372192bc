// x86-64 only: elsewhere this file compiles to nothing (AWQ_X86, cpu_features.h).
#include "cpu_features.h"
#if AWQ_X86
#include "isa_target.h"

// AVX-512 versions of the stats kernels (see stats_avx2.cc for the include rule).
#include <immintrin.h>

#include <cfloat>
#include <cmath>
#include <cstdint>

#include "stats.h"

#ifndef AWQ_EMULATE_AVX512  // the emulated test build: native/tests/avx512_emulation.h
AWQ_TARGET_BEGIN("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")
#endif

namespace awq::detail {

bool accumulate_abs_avx512(const float* row, float* acc, int64_t cols) {
  const __m512 fmax = _mm512_set1_ps(FLT_MAX);
  __mmask16 bad = 0;
  int64_t j = 0;
  for (; j + 16 <= cols; j += 16) {
    const __m512 a = _mm512_abs_ps(_mm512_loadu_ps(row + j));
    bad |= _mm512_cmp_ps_mask(a, fmax, _CMP_NLE_UQ);
    _mm512_storeu_ps(acc + j, _mm512_add_ps(_mm512_loadu_ps(acc + j), a));
  }
  if (j < cols) {
    const __mmask16 m = static_cast<__mmask16>((1u << (cols - j)) - 1);
    const __m512 a = _mm512_abs_ps(_mm512_maskz_loadu_ps(m, row + j));
    bad |= _mm512_mask_cmp_ps_mask(m, a, fmax, _CMP_NLE_UQ);
    _mm512_mask_storeu_ps(acc + j, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, acc + j), a));
  }
  return bad == 0;
}

}  // namespace awq::detail

#ifndef AWQ_EMULATE_AVX512
AWQ_TARGET_END()
#endif

#endif  // AWQ_X86
