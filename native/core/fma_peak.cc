#include "fma_peak.h"

#include <algorithm>
#include <atomic>
#include <chrono>

#include "cpu_features.h"
#include "threadpool.h"

namespace awq {
namespace {

// Results land here so the compiler cannot drop the loops.
volatile float fma_sink_portable;

// 16 independent chains of 8 lanes: the compiler vectorizes these with the baseline ISA.
double fma_burst_portable(int64_t iters) {
  float acc[16][8];
  for (int i = 0; i < 16; ++i)
    for (int l = 0; l < 8; ++l) acc[i][l] = 0.001f * static_cast<float>(i + l);
  for (int64_t it = 0; it < iters; ++it)
    for (int i = 0; i < 16; ++i)
      for (int l = 0; l < 8; ++l) acc[i][l] = acc[i][l] * 0.9999f + 0.0001f;
  float sum = 0.f;
  for (int i = 0; i < 16; ++i)
    for (int l = 0; l < 8; ++l) sum += acc[i][l];
  // Keep the result observable so the loop is not removed.
  fma_sink_portable = sum;
  return static_cast<double>(iters) * 16 * 8 * 2;
}

}  // namespace

double measure_fma_peak_gflops(double seconds_per_rep, int reps) {
  double (*burst)(int64_t) = fma_burst_portable;
#if AWQ_X86
  if (active_isa() == Isa::Avx512) burst = detail::fma_burst_avx512;
  else if (active_isa() == Isa::Avx2) burst = detail::fma_burst_avx2;
#endif
#if AWQ_ARM64
  if (active_isa() == Isa::Neon) burst = detail::fma_burst_neon;
#endif
  using clock = std::chrono::steady_clock;
  // Calibrate the iteration count on one thread, then run it on all of them at once.
  int64_t iters = 1 << 16;
  for (;;) {
    const auto t0 = clock::now();
    burst(iters);
    const double s = std::chrono::duration<double>(clock::now() - t0).count();
    if (s >= seconds_per_rep / 4 || iters > (int64_t{1} << 40)) {
      iters = static_cast<int64_t>(static_cast<double>(iters) * seconds_per_rep / std::max(s, 1e-9));
      break;
    }
    iters *= 4;
  }
  const int threads = num_threads();
  double best = 0;
  for (int r = 0; r < std::max(reps, 1); ++r) {
    std::atomic<double> flops{0};
    const auto t0 = clock::now();
    parallel_for(threads, 1, [&](int64_t b, int64_t e, int) {
      for (int64_t t = b; t < e; ++t) {
        const double f = burst(iters);
        double cur = flops.load();
        while (!flops.compare_exchange_weak(cur, cur + f)) {}
      }
    });
    const double s = std::chrono::duration<double>(clock::now() - t0).count();
    best = std::max(best, flops.load() / s / 1e9);
  }
  return best;
}

}  // namespace awq
