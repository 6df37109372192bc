// Dense fp32 matrix product, row-major, BLAS-style:
//   C[M,N] = alpha * op(A)[M,K] * op(B)[K,N] + beta * C
// op(A) = A ([M,K], lda) or A^T (A stored [K,M], lda); op(B) = B ([K,N], ldb) or B^T (B stored
// [N,K], ldb: the layout of a linear layer's weight W[out,in], so X * W^T is sgemm(N, T, ...)).
// beta == 0 overwrites C without reading it (NaN in stale C does not leak in).
// Runs on the shared thread pool; called from inside a parallel region it runs single-threaded.
// fp32 products of a few rows against a transposed B (M <= 8, or 16 where N * K >= 2^22: a linear
// layer on a few tokens) are dot products, each row's result bitwise that of a one-row call.
//
// Precision::BF16 rounds both operands to bf16 (nearest even, as torch's .bfloat16()) and sums the
// exact products in fp32: the arithmetic of a bf16 matrix unit. With AVX512-BF16 it runs on
// vdpbf16ps (two products per lane and instruction, about twice the fp32 FMA rate; the instruction
// treats subnormal bf16 operands as zero); elsewhere the fp32 kernels multiply the rounded
// operands (the same numbers up to summation order and subnormals, no faster).
#pragma once
#include <cstdint>
#include <memory>

namespace awq {

enum class Trans { N, T };
// Arithmetic of a matrix product (the CUDA backend uses the same names). F16 exists on CUDA only.
enum class Precision : int { F32 = 0, BF16 = 1, F16 = 2 };
const char* precision_name(Precision p);  // "f32", "bf16", "f16"
// Whether BF16 products run on bf16 instructions here (AVX512-BF16, or BFDOT on arm64, under the
// AWQ_ISA cap).
bool bf16_products_native();
// Throws InvalidArgument unless the CPU products take precision p (F32, BF16).
void require_cpu_precision(Precision p);
namespace detail {
struct GemmKernel;
}
// The 16-bit float formats a stored operand may have (a checkpoint's fp16 / bf16 weights).
enum class HalfFormat { F16, BF16 };

// p: F32 or BF16 (InvalidArgument for F16).
void sgemm(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
           int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc,
           Precision p = Precision::F32);
// The same product with B stored as 16-bit floats: widened exactly a micro-panel (or, for the dot
// products of a few rows, a row) at a time as it is read, so the result is bitwise sgemm's on the
// widened B, without an fp32 copy of it in memory (a vocabulary-sized lm_head in fp16 stays 2
// bytes a weight) and with half the bytes streamed where the product is memory-bound (M = 1).
void sgemm(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
           int64_t lda, const uint16_t* B, HalfFormat b_format, int64_t ldb, float beta, float* C, int64_t ldc,
           Precision p = Precision::F32);

// op(B) [K, N] packed once into the active kernel's B micro-panels, every panel holding all K
// steps, for a series of products that use prefixes of its columns and steps (attention: every
// query tile against the same keys and values, which sgemm would repack per tile).
class PackedB {
 public:
  // Packs op(B); returns false (and holds nothing) where only the portable sgemm runs.
  bool pack(Trans tb, int64_t K, int64_t N, const float* B, int64_t ldb);
  int64_t k() const { return K_; }
  int64_t n() const { return N_; }

 private:
  friend void sgemm_packed(Trans, int64_t, int64_t, int64_t, float, const float*, int64_t, const PackedB&,
                           float, float*, int64_t);
  struct Free {
    void operator()(float* p) const;
  };
  const detail::GemmKernel* kern_ = nullptr;
  int64_t K_ = 0, N_ = 0;
  size_t capacity_ = 0;  // bytes allocated
  std::unique_ptr<float, Free> data_;
};

// C[M, n] = alpha * op(A)[M, k] * op(B)[:k, :n] + beta * C for a packed op(B) (k <= B.k(),
// n <= B.n()): the blocking of sgemm over those operands, so bitwise its results wherever sgemm
// blocks (not its dot products of a few rows against a transposed B). Runs on the
// calling thread (it is meant for callers inside a parallel region).
void sgemm_packed(Trans ta, int64_t M, int64_t n, int64_t k, float alpha, const float* A, int64_t lda,
                  const PackedB& B, float beta, float* C, int64_t ldc);

// y[M,out] = x[M,in] * W[out,in]^T (+ bias[out] when not null, added in fp32): a linear layer.
void linear(const float* x, int64_t M, int64_t in, const float* W, int64_t out, const float* bias,
            float* y, Precision p = Precision::F32);

}  // namespace awq
