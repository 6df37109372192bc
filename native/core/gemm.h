// Dense fp32 matrix product, row-major, BLAS-style:
//   C[M,N] = alpha * op(A)[M,K] * op(B)[K,N] + beta * C
// op(A) = A ([M,K], lda) or A^T (A stored [K,M], lda); op(B) = B ([K,N], ldb) or B^T (B stored
// [N,K], ldb: the layout of a linear layer's weight W[out,in], so X * W^T is sgemm(N, T, ...)).
// beta == 0 overwrites C without reading it (NaN in stale C does not leak in).
// Runs on the shared thread pool; called from inside a parallel region it runs single-threaded.
#pragma once
#include <cstdint>

namespace awq {

enum class Trans { N, T };

void sgemm(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
           int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

// y[M,out] = x[M,in] * W[out,in]^T (+ bias[out] when not null): a linear layer.
void linear(const float* x, int64_t M, int64_t in, const float* W, int64_t out, const float* bias,
            float* y);

}  // namespace awq
