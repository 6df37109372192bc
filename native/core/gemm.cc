// Portable reference implementation of sgemm: correct for every transpose, stride and size.
// (Optimized ISA-specific paths replace the inner loops; this file stays the fallback.)
#include "gemm.h"

#include <algorithm>
#include <vector>

#include "errors.h"
#include "threadpool.h"

namespace awq {

void sgemm(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
           int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  AWQ_CHECK_ARG(M >= 0 && N >= 0 && K >= 0, "sgemm: negative dimension");
  if (M == 0 || N == 0) return;
  parallel_for(M, 4, [&](int64_t m0, int64_t m1, int) {
    std::vector<float> arow(K);
    for (int64_t i = m0; i < m1; ++i) {
      for (int64_t k = 0; k < K; ++k) arow[k] = ta == Trans::N ? A[i * lda + k] : A[k * lda + i];
      float* c = C + i * ldc;
      for (int64_t j = 0; j < N; ++j) {
        float acc = 0.f;
        if (tb == Trans::T) {
          const float* b = B + j * ldb;
          for (int64_t k = 0; k < K; ++k) acc += arow[k] * b[k];
        } else {
          for (int64_t k = 0; k < K; ++k) acc += arow[k] * B[k * ldb + j];
        }
        c[j] = alpha * acc + (beta == 0.f ? 0.f : beta * c[j]);
      }
    }
  });
}

void linear(const float* x, int64_t M, int64_t in, const float* W, int64_t out, const float* bias,
            float* y) {
  sgemm(Trans::N, Trans::T, M, out, in, 1.f, x, in, W, in, 0.f, y, out);
  if (bias) {
    parallel_for(M, 64, [&](int64_t m0, int64_t m1, int) {
      for (int64_t i = m0; i < m1; ++i)
        for (int64_t j = 0; j < out; ++j) y[i * out + j] += bias[j];
    });
  }
}

}  // namespace awq
