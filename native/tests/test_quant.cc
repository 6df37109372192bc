#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "../core/dtype.h"
#include "../core/errors.h"
#include "../core/quant.h"
#include "test.h"
#include "util.h"

using namespace awq;
using namespace awq::test;

namespace {

// REFERENCE.md section 1 in float64 (the scale rounded to fp16 as the checkpoint stores it).
void reference_quant(const std::vector<float>& w, int64_t rows, int64_t cols, int bits, int64_t g,
                     bool zp, std::vector<double>& dq, std::vector<int>& q) {
  dq.assign(w.size(), 0.0);
  q.assign(w.size(), 0);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = 0; j < cols / g; ++j) {
      const float* s0 = &w[r * cols + j * g];
      double mx = -INFINITY, mn = INFINITY, amax = 0;
      for (int64_t k = 0; k < g; ++k) {
        mx = std::max<double>(mx, s0[k]);
        mn = std::min<double>(mn, s0[k]);
        amax = std::max<double>(amax, std::fabs(s0[k]));
      }
      double s, z, lo, hi;
      if (zp) {
        const double qmax = (1 << bits) - 1;
        s = round_to_fp16(static_cast<float>(std::max(mx - mn, 1e-5) / qmax));
        z = std::min(std::max(-std::nearbyint(mn / s), 0.0), qmax);
        lo = 0;
        hi = qmax;
      } else {
        const double half = 1 << (bits - 1);
        s = round_to_fp16(static_cast<float>(std::max(amax, 1e-5) / (half - 1)));
        z = half;
        lo = 0;
        hi = 2 * half - 1;
      }
      for (int64_t k = 0; k < g; ++k) {
        const double qv = std::min(std::max(std::nearbyint(s0[k] / s) + z, lo), hi);
        q[r * cols + j * g + k] = static_cast<int>(qv);
        dq[r * cols + j * g + k] = (qv - z) * s;
      }
    }
  }
}

}  // namespace

TEST(quant_matches_fp64_reference_all_modes) {
  const int64_t rows = 37, cols = 256;
  auto w = random_floats(rows * cols, 11, -2.f, 2.f);
  for (int64_t r = 0; r < rows; ++r) w[r * cols + (r * 7) % cols] *= 40.f;  // outliers
  for (int64_t k = 0; k < 32; ++k) w[3 * cols + k] = 0.f;                     // an all-zero group
  for (int64_t k = 0; k < 64; ++k) w[5 * cols + 64 + k] = 0.3f;               // a constant group
  for (int64_t k = 0; k < 64; ++k) w[6 * cols + k] = -0.7f;                   // negative constant
  for (int bits = 2; bits <= 8; ++bits) {
    for (int64_t g : {32, 64, 128, 256}) {
      for (bool zp : {true, false}) {
        QuantParams p{bits, g, zp};
        std::vector<float> dq(w.size()), scales(rows * cols / g);
        std::vector<uint8_t> q(w.size()), zeros(rows * cols / g);
        quantize_weights(w.data(), rows, cols, p, dq.data(), q.data(), zeros.data(), scales.data());
        std::vector<double> rdq;
        std::vector<int> rq;
        reference_quant(w, rows, cols, bits, g, zp, rdq, rq);
        int64_t mismatches = 0;
        for (size_t i = 0; i < w.size(); ++i) {
          if (q[i] != rq[i]) ++mismatches;  // only a float division landing on a tie may differ
          const int64_t gi = (i / cols) * (cols / g) + (i % cols) / g;
          CHECK(q[i] <= (1 << bits) - 1);
          // dequantization is (q - z) * s with the stored fp16 scale
          CHECK(dq[i] == (static_cast<float>(q[i]) - zeros[gi]) * scales[gi]);
          CHECK(scales[gi] == round_to_fp16(scales[gi]));
        }
        CHECK(mismatches <= 2);
        for (size_t i = 0; i < w.size(); ++i)
          if (q[i] == rq[i]) CHECK_NEAR(dq[i], rdq[i], 1e-6 * std::fabs(rdq[i]) + 1e-12);
      }
    }
  }
}

TEST(quant_rounds_half_to_even_and_handles_constant_groups) {
  // group [0, 3.75] at 4 bits: s = 0.25 exactly, z = 0; w/s = 0.5, 1.5, 2.5, 3.5 -> 0, 2, 2, 4
  std::vector<float> w(16, 1.0f);
  w[0] = 0.f;
  w[1] = 3.75f;
  w[2] = 0.125f;
  w[3] = 0.375f;
  w[4] = 0.625f;
  w[5] = 0.875f;
  std::vector<float> dq(16), s(1);
  std::vector<uint8_t> q(16), z(1);
  quantize_weights(w.data(), 1, 16, QuantParams{4, 16, true}, dq.data(), q.data(), z.data(), s.data());
  CHECK(s[0] == 0.25f && z[0] == 0);
  CHECK(q[2] == 0 && q[3] == 2 && q[4] == 2 && q[5] == 4);
  // constant positive group: s = fp16(1e-5/15), z = 0, q saturates at 15
  std::vector<float> c(8, 0.3f);
  quantize_weights(c.data(), 1, 8, QuantParams{4, 8, true}, dq.data(), q.data(), z.data(), s.data());
  CHECK(s[0] == round_to_fp16(1e-5f / 15.f));
  CHECK(z[0] == 0 && q[0] == 15);
  CHECK_NEAR(dq[0], 15.0 * s[0], 0.0);
  // constant negative group: z saturates at 15, q at 0
  std::vector<float> cn(8, -0.3f);
  quantize_weights(cn.data(), 1, 8, QuantParams{4, 8, true}, dq.data(), q.data(), z.data(), s.data());
  CHECK(z[0] == 15 && q[0] == 0);
  // zeros stay zero in both modes
  std::vector<float> zz(8, 0.f);
  for (bool zp : {true, false}) {
    quantize_weights(zz.data(), 1, 8, QuantParams{3, 8, zp}, dq.data(), q.data(), z.data(), s.data());
    for (int i = 0; i < 8; ++i) CHECK(dq[i] == 0.f);
  }
  // symmetric: q + 2^(b-1) stored, zero 2^(b-1); -max maps to -(2^(b-1)-1)
  std::vector<float> sy = {-1.f, 1.f, 0.5f, -0.25f};
  quantize_weights(sy.data(), 1, 4, QuantParams{4, 4, false}, dq.data(), q.data(), z.data(), s.data());
  CHECK(z[0] == 8 && q[0] == 1 && q[1] == 15);
  CHECK(s[0] == round_to_fp16(1.f / 7.f));
}

TEST(quant_rejects_bad_arguments_and_non_finite) {
  std::vector<float> w(96, 0.5f), dq(96);
  CHECK_THROWS(quantize_weights(w.data(), 1, 96, QuantParams{4, 64, true}, dq.data(), nullptr, nullptr, nullptr));
  CHECK_THROWS(quantize_weights(w.data(), 1, 96, QuantParams{1, 32, true}, dq.data(), nullptr, nullptr, nullptr));
  CHECK_THROWS(quantize_weights(w.data(), 1, 96, QuantParams{9, 32, true}, dq.data(), nullptr, nullptr, nullptr));
  w[50] = std::numeric_limits<float>::quiet_NaN();
  bool named = false;
  try {
    quantize_weights(w.data(), 2, 48, QuantParams{4, 16, true}, dq.data(), nullptr, nullptr, nullptr, "v_proj");
  } catch (const Error& e) {
    named = e.code() == ErrorCode::NonFinite && std::string(e.what()).find("v_proj") != std::string::npos &&
            std::string(e.what()).find("row 1, column 2") != std::string::npos;
  }
  CHECK(named);
}
