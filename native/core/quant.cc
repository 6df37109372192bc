#include "quant.h"

#include <algorithm>
#include <cmath>
#ifdef __SSE2__
#include <emmintrin.h>
#endif
#include <string>
#include <vector>

#include "dtype.h"
#include "errors.h"
#include "round_even.h"
#include "threadpool.h"

namespace awq {
namespace {

// max and min of v[0..n) (n >= 1) in 8 interleaved lanes (SSE2, baseline on x86-64), not one
// serial chain the compiler keeps scalar. Max and min are exact, so the result is the serial
// scan's (mx = v[0], then mx = std::max(mx, v[k])), NaN included: every lane starts from v[0], so
// a NaN there makes the result NaN and a NaN elsewhere is skipped (maxps(a, hi) keeps hi when
// either is NaN, as std::max(hi, a) does).
inline void max_min(const float* v, int64_t n, float& mx, float& mn) {
  int64_t k = 1;
  mx = mn = v[0];
#ifdef __SSE2__
  if (n >= 8) {
    __m128 hi0 = _mm_set1_ps(v[0]), hi1 = hi0, lo0 = hi0, lo1 = hi0;
    for (k = 0; k + 8 <= n; k += 8) {
      const __m128 a = _mm_loadu_ps(v + k), b = _mm_loadu_ps(v + k + 4);
      hi0 = _mm_max_ps(a, hi0), hi1 = _mm_max_ps(b, hi1);  // std::max(hi, a)
      lo0 = _mm_min_ps(a, lo0), lo1 = _mm_min_ps(b, lo1);
    }
    alignas(16) float h[8], l[8];
    _mm_store_ps(h, hi0), _mm_store_ps(h + 4, hi1), _mm_store_ps(l, lo0), _mm_store_ps(l + 4, lo1);
    mx = h[0], mn = l[0];
    for (int i = 1; i < 8; ++i) mx = std::max(mx, h[i]), mn = std::min(mn, l[i]);
  }
#endif
  for (; k < n; ++k) mx = std::max(mx, v[k]), mn = std::min(mn, v[k]);
}

}  // namespace

void check_quant_params(const QuantParams& p, int64_t cols) {
  AWQ_CHECK_ARG(p.bits >= 2 && p.bits <= 8,
                "wBit: expected an integer in 2..8, got " + std::to_string(p.bits));
  AWQ_CHECK_ARG(p.group > 0, "groupSize: expected a positive group size, got " + std::to_string(p.group));
  AWQ_CHECK_ARG(cols % p.group == 0, "groupSize: in_features " + std::to_string(cols) +
                                         " is not divisible by the group size " +
                                         std::to_string(p.group));
}

bool quantize_rows(const float* w, int64_t r0, int64_t r1, int64_t cols, const QuantParams& p,
                   float* dq, uint8_t* q, uint8_t* zeros, float* scales) {
  const int64_t g = p.group;
  const int64_t groups = cols / g;
  bool ok = true;
  for (int64_t r = r0; r < r1; ++r) {
    for (int64_t j = 0; j < groups; ++j) {
      const float* src = w + r * cols + j * g;
      const int64_t base = r * cols + j * g;
      float s, z, lo, hi;
      if (p.zero_point) {
        const float qmax = static_cast<float>((1 << p.bits) - 1);
        float mx, mn;
        max_min(src, g, mx, mn);
        s = std::max(mx - mn, 1e-5f) / qmax;
        if (p.fp16_scale) s = round_to_fp16(s);
        z = std::min(std::max(-round_even(mn / s), 0.f), qmax);
        lo = 0.f;
        hi = qmax;
      } else {
        const float half = static_cast<float>(1 << (p.bits - 1));
        float mx = 0.f;
        for (int64_t k = 0; k < g; ++k) mx = std::max(mx, std::fabs(src[k]));
        s = std::max(mx, 1e-5f) / (half - 1.f);
        if (p.fp16_scale) s = round_to_fp16(s);
        // symmetric q in [-half, half-1] is stored shifted by `half`: same (q - z) * s
        z = half;
        lo = 0.f;
        hi = 2.f * half - 1.f;
      }
      ok &= std::isfinite(s);
      if (scales) scales[r * groups + j] = s;
      if (zeros) zeros[r * groups + j] = static_cast<uint8_t>(z);
      // Separate branch-free loops, so they vectorize; the codes first, because dq may be w.
      auto code = [&](float x) { return std::min(std::max(round_even(x / s) + z, lo), hi); };
      if (q)
        for (int64_t k = 0; k < g; ++k) q[base + k] = static_cast<uint8_t>(code(src[k]));
      if (dq)
        for (int64_t k = 0; k < g; ++k) dq[base + k] = (code(src[k]) - z) * s;
    }
  }
  return ok;
}

void quantize_weights(const float* w, int64_t rows, int64_t cols, const QuantParams& p, float* dq,
                      uint8_t* q, uint8_t* zeros, float* scales, const char* name) {
  check_quant_params(p, cols);
  AWQ_CHECK_ARG(rows > 0 && cols > 0, std::string(name) + ": empty weight");
  for (int64_t i = 0; i < rows * cols; ++i) {
    if (!std::isfinite(w[i])) {
      throw Error(ErrorCode::NonFinite, std::string(name) + ": value at row " +
                                            std::to_string(i / cols) + ", column " +
                                            std::to_string(i % cols) + " is " +
                                            (std::isnan(w[i]) ? "NaN" : "Inf"));
    }
  }
  bool ok_all = true;
  const int threads = num_threads();
  std::vector<char> ok(static_cast<size_t>(threads), 1);
  parallel_for(rows, std::max<int64_t>(1, 16384 / cols), [&](int64_t r0, int64_t r1, int t) {
    if (!quantize_rows(w, r0, r1, cols, p, dq, q, zeros, scales)) ok[t] = 0;
  }, threads);
  for (char c : ok) ok_all &= c != 0;
  if (!ok_all) {
    throw Error(ErrorCode::NonFinite, std::string(name) +
                                          ": a quantization scale overflows fp16 (weights too large)");
  }
}

}  // namespace awq
