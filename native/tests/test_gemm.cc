#include <vector>

#include "../core/gemm.h"
#include "test.h"
#include "util.h"

using namespace awq;
using namespace awq::test;

// C = alpha * op(A) op(B) + beta * C in double, the reference for every path.
static std::vector<double> ref_gemm(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, float alpha,
                                    const std::vector<float>& A, int64_t lda, const std::vector<float>& B,
                                    int64_t ldb, float beta, const std::vector<float>& C, int64_t ldc) {
  std::vector<double> out(M * ldc);
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      double acc = 0;
      for (int64_t k = 0; k < K; ++k) {
        const double a = ta == Trans::N ? A[i * lda + k] : A[k * lda + i];
        const double b = tb == Trans::N ? B[k * ldb + j] : B[j * ldb + k];
        acc += a * b;
      }
      out[i * ldc + j] = alpha * acc + (beta == 0.f ? 0.0 : beta * C[i * ldc + j]);
    }
  return out;
}

TEST(gemm_matches_fp64_reference_all_transposes_and_odd_sizes) {
  for_each_isa([](Isa) {
    const int64_t sizes[][3] = {{1, 1, 1}, {7, 5, 3}, {33, 17, 65}, {130, 71, 260}, {1, 300, 129}, {64, 64, 512}};
    for (auto& s : sizes) {
      const int64_t M = s[0], N = s[1], K = s[2];
      for (Trans ta : {Trans::N, Trans::T})
        for (Trans tb : {Trans::N, Trans::T})
          for (float beta : {0.f, 0.5f}) {
            const int64_t lda = (ta == Trans::N ? K : M) + 3, ldb = (tb == Trans::N ? N : K) + 1, ldc = N + 2;
            auto A = random_floats((ta == Trans::N ? M : K) * lda, 1);
            auto B = random_floats((tb == Trans::N ? K : N) * ldb, 2);
            auto C = random_floats(M * ldc, 3);
            const auto ref = ref_gemm(ta, tb, M, N, K, 1.25f, A, lda, B, ldb, beta, C, ldc);
            sgemm(ta, tb, M, N, K, 1.25f, A.data(), lda, B.data(), ldb, beta, C.data(), ldc);
            double worst = 0;
            for (int64_t i = 0; i < M; ++i)
              for (int64_t j = 0; j < N; ++j)
                worst = std::max(worst, std::fabs(C[i * ldc + j] - ref[i * ldc + j]));
            CHECK(worst <= 1e-5 * K + 1e-5);
          }
    }
  });
}
