// arm64 only: elsewhere this file compiles to nothing (AWQ_ARM64, cpu_features.h).
#include "cpu_features.h"
#if AWQ_ARM64

// NEON FMA-throughput loop (see fma_peak.h). 16 independent accumulators cover FMA latency x
// throughput on current cores (4 cycles x 4 pipes on Neoverse V1 / V2 and Apple cores).
#include <arm_neon.h>

#include <cstdint>

#include "fma_peak.h"

namespace awq::detail {

// Results land here so the compiler cannot drop the loop.
volatile float fma_sink_neon;

double fma_burst_neon(int64_t iters) {
  float32x4_t a[16];
  for (int i = 0; i < 16; ++i) a[i] = vdupq_n_f32(0.1f * static_cast<float>(i + 1));
  const float32x4_t m = vdupq_n_f32(0.9999f), c = vdupq_n_f32(0.0001f);
  for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) a[i] = vfmaq_f32(c, a[i], m);
  }
  float32x4_t s = vdupq_n_f32(0.f);
  for (int i = 0; i < 16; ++i) s = vaddq_f32(s, a[i]);
  // Keep the result observable so the loop is not removed.
  fma_sink_neon = vaddvq_f32(s);
  return static_cast<double>(iters) * 16 * 4 * 2;
}

}  // namespace awq::detail

#endif  // AWQ_ARM64
