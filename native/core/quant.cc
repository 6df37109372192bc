#include "quant.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "dtype.h"
#include "errors.h"
#include "threadpool.h"

namespace awq {

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
        float mx = src[0], mn = src[0];
        for (int64_t k = 1; k < g; ++k) {
          mx = std::max(mx, src[k]);
          mn = std::min(mn, src[k]);
        }
        s = round_to_fp16(std::max(mx - mn, 1e-5f) / qmax);
        z = std::min(std::max(-std::nearbyint(mn / s), 0.f), qmax);
        lo = 0.f;
        hi = qmax;
      } else {
        const float half = static_cast<float>(1 << (p.bits - 1));
        float mx = 0.f;
        for (int64_t k = 0; k < g; ++k) mx = std::max(mx, std::fabs(src[k]));
        s = round_to_fp16(std::max(mx, 1e-5f) / (half - 1.f));
        // symmetric q in [-half, half-1] is stored shifted by `half`: same (q - z) * s
        z = half;
        lo = 0.f;
        hi = 2.f * half - 1.f;
      }
      ok &= std::isfinite(s);
      if (scales) scales[r * groups + j] = s;
      if (zeros) zeros[r * groups + j] = static_cast<uint8_t>(z);
      for (int64_t k = 0; k < g; ++k) {
        const float qv = std::min(std::max(std::nearbyint(src[k] / s) + z, lo), hi);
        if (q) q[base + k] = static_cast<uint8_t>(qv);
        if (dq) dq[base + k] = (qv - z) * s;
      }
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
  std::vector<char> ok(static_cast<size_t>(num_threads()), 1);
  parallel_for(rows, std::max<int64_t>(1, 16384 / cols), [&](int64_t r0, int64_t r1, int t) {
    if (!quantize_rows(w, r0, r1, cols, p, dq, q, zeros, scales)) ok[t] = 0;
  });
  for (char c : ok) ok_all &= c != 0;
  if (!ok_all) {
    throw Error(ErrorCode::NonFinite, std::string(name) +
                                          ": a quantization scale overflows fp16 (weights too large)");
  }
}

}  // namespace awq
