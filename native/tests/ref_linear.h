// The float64 reference of a linear layer (C++ tests and the CUDA benchmark's checks):
// y = x W^T + b and, per output, the magnitude sum |x w| + |b| that error bounds scale with.
#pragma once
#include <cmath>
#include <cstdint>
#include <vector>

namespace awq::test {

// x [M, in], W [out, in], b [out] or empty; y and mag become [M, out].
inline void ref_linear64(const std::vector<float>& x, int64_t M, int64_t in, const std::vector<float>& W, int64_t out,
                         const std::vector<float>& b, std::vector<double>& y, std::vector<double>& mag) {
  y.assign(static_cast<size_t>(M * out), 0.0);
  mag.assign(static_cast<size_t>(M * out), 0.0);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t o = 0; o < out; ++o) {
      double s = b.empty() ? 0.0 : b[o], a = b.empty() ? 0.0 : std::fabs(b[o]);
      for (int64_t k = 0; k < in; ++k) {
        const double p = static_cast<double>(x[m * in + k]) * W[o * in + k];
        s += p;
        a += std::fabs(p);
      }
      y[m * out + o] = s;
      mag[m * out + o] = a;
    }
}

}  // namespace awq::test
