// sgemm driver. On AVX2 / AVX-512 / NEON CPUs: GotoBLAS-style blocking around an ISA micro-kernel
// (gemm_avx2.cc, gemm_avx512.cc, gemm_neon.cc):
//
//   for jc over N in nc-wide blocks            (B block: L3)
//     for pc over K in kc-deep blocks
//       pack op(B)[pc, jc] into nr-wide micro-panels        (shared, packed in parallel)
//       parallel over (mc-row block of M) x (group of B micro-panels):
//         pack op(A)[ic, pc] into mr-wide micro-panels      (per thread, L2)
//         for each B micro-panel (L1), for each A micro-panel: micro-kernel into C
//
// Packing absorbs the transposes and strides, so one micro-kernel serves all four cases. The
// first kc block applies the caller's beta, later ones accumulate (beta = 1), so beta == 0
// never reads C. A product that is symmetric by construction (X^T X, X X^T with beta == 0: the
// Gram matrices of the scale search) computes only the upper triangle's tiles and mirrors them.
// Elsewhere the portable reference below runs (also the benchmarks' baseline). A few rows of A
// against B's rows (M <= 8, or 16 on a large B; B transposed: a linear layer on a few tokens) are
// dot products instead (row_dots), on every ISA: B streams once, and each row's result is the
// same at any such M.
// BF16 products use the same driver with a kernel whose packers round to bf16 (gemm_kernels.h).
#include "gemm.h"

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <new>
#include <vector>

#include "cpu_features.h"
#include "dtype.h"
#include "errors.h"
#include "gemm_kernels.h"
#include "threadpool.h"
#include "vecmath.h"

namespace awq {
namespace {

// bf16: both operands rounded to bf16 (the rounding is exact on bf16 values, so it is idempotent).
// b_at(k, j) is op(B)[k, j].
template <class BAt>
void sgemm_reference(Trans ta, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                     const BAt& b_at, float beta, float* C, int64_t ldc, bool bf16) {
  auto op = [bf16](float v) { return bf16 ? round_to_bf16(v) : v; };
  parallel_for(M, 4, [&](int64_t m0, int64_t m1, int) {
    std::vector<float> arow(K);
    for (int64_t i = m0; i < m1; ++i) {
      for (int64_t k = 0; k < K; ++k) arow[k] = op(ta == Trans::N ? A[i * lda + k] : A[k * lda + i]);
      float* c = C + i * ldc;
      for (int64_t j = 0; j < N; ++j) {
        float acc = 0.f;
        for (int64_t k = 0; k < K; ++k) acc += arow[k] * op(b_at(k, j));
        c[j] = alpha * acc + (beta == 0.f ? 0.f : beta * c[j]);
      }
    }
  });
}

// A per-thread, 64-byte aligned scratch buffer that only grows. Thread-local, so kernels called
// concurrently from inside parallel regions never share packing space.
class Scratch {
 public:
  float* get(size_t floats) {
    if (floats > size_) {
      const size_t bytes = (floats * sizeof(float) + 63) / 64 * 64;
      void* p = std::aligned_alloc(64, bytes);
      if (!p) throw std::bad_alloc();
      data_.reset(static_cast<float*>(p));
      size_ = bytes / sizeof(float);
    }
    return data_.get();
  }

 private:
  struct Free {
    void operator()(float* p) const { std::free(p); }
  };
  std::unique_ptr<float, Free> data_;
  size_t size_ = 0;
};

thread_local Scratch t_pack_a, t_pack_b, t_widen;

// Where the driver reads the stored B from: the caller's fp32 matrix as it is (FloatB), or a
// 16-bit one (HalfB) whose blocks are widened, exactly, into thread-local scratch right before
// they are packed, and whose rows the matrix-vector path dots as they are read (dot_fp16 /
// dot_bf16). Every consumer then sees the fp32 values of the widened matrix in the same order, so
// a product on a HalfB is bitwise the product on its widening, without that fp32 copy in memory
// (and at M = 1 with half the bytes streamed).
struct FloatB {
  const float* B;
  int64_t ldb;
  // Stored rows [r, r + rows) x columns [c, c + cols) as an fp32 pointer and its row stride.
  const float* block(int64_t r, int64_t c, int64_t /*rows*/, int64_t /*cols*/, int64_t& ld) const {
    ld = ldb;
    return B + r * ldb + c;
  }
  float at(int64_t r, int64_t c) const { return B[r * ldb + c]; }
  // dot(a, stored row r)
  float dot_row(const float* a, int64_t r, int64_t n) const { return dot(a, B + r * ldb, n); }
};

struct HalfB {
  const uint16_t* B;
  int64_t ldb;
  HalfFormat format;
  const float* block(int64_t r, int64_t c, int64_t rows, int64_t cols, int64_t& ld) const {
    float* w = t_widen.get(static_cast<size_t>(rows * cols));
    for (int64_t i = 0; i < rows; ++i) widen(B + (r + i) * ldb + c, w + i * cols, cols);
    ld = cols;
    return w;
  }
  float at(int64_t r, int64_t c) const {
    const uint16_t h = B[r * ldb + c];
    return format == HalfFormat::F16 ? fp16_to_f32_scalar(h) : bf16_to_f32_scalar(h);
  }
  // Widened as it is read (no scratch), in dot()'s summation order.
  float dot_row(const float* a, int64_t r, int64_t n) const {
    return format == HalfFormat::F16 ? dot_fp16(a, B + r * ldb, n) : dot_bf16(a, B + r * ldb, n);
  }
  void widen(const uint16_t* src, float* dst, int64_t n) const {
    format == HalfFormat::F16 ? widen_fp16(src, dst, n) : widen_bf16(src, dst, n);
  }
};

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

// Splits `total` into the fewest blocks of at most `max_block`, of near-equal size rounded up to
// `multiple` (so the last block is not a sliver), with the block count a multiple of `count_of`.
int64_t balanced_block(int64_t total, int64_t max_block, int64_t multiple, int64_t count_of = 1) {
  const int64_t blocks = round_up(ceil_div(total, max_block), count_of);
  return std::min(round_up(ceil_div(total, blocks), multiple), round_up(total, multiple));
}

// Copies the upper triangle of the square C[n, n] onto the lower one, in cache-sized tiles.
void mirror_upper_to_lower(float* C, int64_t n, int64_t ldc) {
  constexpr int64_t kTile = 32;
  const int64_t tiles = ceil_div(n, kTile);
  parallel_for(tiles, 1, [&](int64_t t0, int64_t t1, int) {
    for (int64_t bi = t0; bi < t1; ++bi) {
      const int64_t r0 = bi * kTile, r1 = std::min(n, r0 + kTile);
      for (int64_t c0 = 0; c0 <= r0; c0 += kTile) {
        const int64_t c1 = std::min(n, c0 + kTile);
        for (int64_t r = r0; r < r1; ++r)
          for (int64_t c = c0; c < std::min(c1, r); ++c) C[r * ldc + c] = C[c * ldc + r];
      }
    }
  });
}

// symmetric: op(A) op(B) is known to be symmetric (A^T A or A A^T, beta == 0), so only micro-tiles
// touching the upper triangle are computed and the rest is mirrored. Each element is still
// computed in the same order as the full product would, so the result is bitwise the same.
template <class BSrc>
void sgemm_blocked(const detail::GemmKernel& kern, Trans ta, Trans tb, int64_t M, int64_t N,
                   int64_t K, float alpha, const float* A, int64_t lda, const BSrc& B, float beta,
                   float* C, int64_t ldc, bool symmetric) {
  const int64_t mr = kern.mr, nr = kern.nr, unit = kern.k_unit;
  const int64_t threads = in_parallel_region() ? 1 : num_threads();
  // k blocks of whole units (bf16 pairs), so only the last block can end in a half-filled pair
  const int64_t kc_max = balanced_block(K, kern.kc, unit);
  const int64_t nc_max = balanced_block(N, kern.nc, nr);
  // Row blocks: a multiple of the thread count when that keeps them reasonably tall, so every
  // thread gets the same number of equal blocks.
  // (Symmetric: row blocks near the bottom have little work, so use more blocks than threads.)
  const int64_t block_multiple = symmetric && threads > 1 ? 4 * threads : threads;
  const int64_t mc = balanced_block(M, kern.mc, mr, M >= block_multiple * 4 * mr ? block_multiple : 1);
  const int64_t m_blocks = ceil_div(M, mc);
  // Too few row blocks to occupy every thread (short M): also split the B micro-panels.
  const int64_t n_groups = m_blocks >= 2 * threads || threads == 1 ? 1 : ceil_div(2 * threads, m_blocks);

  const bool a_lanes_contiguous = ta == Trans::T;  // op(A) rows = A columns: lanes contiguous
  const bool b_lanes_contiguous = tb == Trans::N;
  float* packed_b = t_pack_b.get(static_cast<size_t>(ceil_div(kc_max, unit) * round_up(nc_max, nr)));

  for (int64_t jc = 0; jc < N; jc += nc_max) {
    const int64_t nc = std::min(nc_max, N - jc);
    const int64_t n_panels = ceil_div(nc, nr);
    for (int64_t pc = 0; pc < K; pc += kc_max) {
      const int64_t kc = std::min(kc_max, K - pc), ku = ceil_div(kc, unit);  // steps, packed rows
      const float beta_here = pc == 0 ? beta : 1.f;
      parallel_for(n_panels, 8, [&](int64_t p0, int64_t p1, int) {
        for (int64_t p = p0; p < p1; ++p) {
          const int64_t j = jc + p * nr, lanes = std::min(nr, N - j);
          int64_t ld;
          const float* src = tb == Trans::N ? B.block(pc, j, kc, lanes, ld) : B.block(j, pc, lanes, kc, ld);
          kern.pack_b(src, ld, b_lanes_contiguous, static_cast<int>(lanes), kc, packed_b + p * nr * ku);
        }
      });
      const int64_t tasks = m_blocks * n_groups;
      parallel_for(tasks, 1, [&](int64_t t0, int64_t t1, int) {
        float* packed_a = t_pack_a.get(static_cast<size_t>(round_up(mc, mr) * ku));
        for (int64_t t = t0; t < t1; ++t) {
          const int64_t ic = (t / n_groups) * mc, group = t % n_groups;
          const int64_t m = std::min(mc, M - ic);
          const int64_t q0 = n_panels * group / n_groups, q1 = n_panels * (group + 1) / n_groups;
          if (q0 == q1) continue;
          for (int64_t i = 0; i < m; i += mr) {
            const float* src = ta == Trans::N ? A + (ic + i) * lda + pc : A + pc * lda + ic + i;
            kern.pack_a(src, lda, a_lanes_contiguous, static_cast<int>(std::min(mr, m - i)), kc,
                        packed_a + i * ku);
          }
          for (int64_t q = q0; q < q1; ++q) {
            const int64_t j = jc + q * nr;
            const int n = static_cast<int>(std::min(nr, N - j));
            const float* bp = packed_b + q * nr * ku;
            for (int64_t i = 0; i < m; i += mr) {
              if (symmetric && j + n <= ic + i) continue;  // strictly below the diagonal
              kern.micro(ku, packed_a + i * ku, bp, C + (ic + i) * ldc + j, ldc, alpha, beta_here,
                         static_cast<int>(std::min(mr, m - i)), n);
            }
          }
        }
      });
    }
  }
  if (symmetric) mirror_upper_to_lower(C, M, ldc);
}

// An fp32 kernel whose packers round what they pack to bf16: BF16 products on CPUs without
// AVX512-BF16 (the same numbers as the bf16 kernel up to summation order).
template <const detail::GemmKernel& (*Base)()>
struct RoundedOperands {
  static void round_panel(float* p, int64_t n) {
    for (int64_t i = 0; i < n; ++i) p[i] = round_to_bf16(p[i]);
  }
  static void pack_a(const float* src, int64_t ld, bool lanes_contiguous, int lanes, int64_t k, float* out) {
    Base().pack_a(src, ld, lanes_contiguous, lanes, k, out);
    round_panel(out, Base().mr * k);
  }
  static void pack_b(const float* src, int64_t ld, bool lanes_contiguous, int lanes, int64_t k, float* out) {
    Base().pack_b(src, ld, lanes_contiguous, lanes, k, out);
    round_panel(out, Base().nr * k);
  }
  static const detail::GemmKernel& kernel() {
    static const detail::GemmKernel k = [] {
      detail::GemmKernel r = Base();
      r.pack_a = pack_a;
      r.pack_b = pack_b;
      return r;
    }();
    return k;
  }
};

// The most rows of A for which row_dots beats the blocked path, whose packing of B pays off over
// more rows, sooner where B is small. Measured (AVX2 EPYC, 2 threads, same-process A/B, fp32 B;
// row_dots over blocked): 4096 x 4096 2.6x at M = 2, 2.1x at 8, 1.3x at 16, 0.95x at 32; 4096 x
// 11008 5.3x / 2.5x / 1.6x / 0.98x; 32000 x 4096 (an lm_head) 2.8x / 1.5x / 1.04x / 0.78x; but
// 1536 x 512 (3 MB of fp32 weights) only 2.2x / 1.06x / 0.73x at M = 2 / 8 / 16.
int64_t row_dots_max_m(int64_t N, int64_t K) { return N * K >= (int64_t{1} << 22) ? 16 : 8; }

// A few rows of A with B's rows as the outputs (x W^T: a linear layer on a few tokens): each
// output is one dot product of an A row and a B row. B streams once, each of its rows dotted
// against every A row while it sits in L1, where the blocked path packs all of B into panels first
// and runs 14- or 6-row micro-tiles on a few rows: at M = 1, 30-33 ms on 4096 x 4096 (2 GB/s of
// fp32 weights; Zen 4, 2 threads) against 4.4 ms (15 GB/s) here. Each row's outputs are bitwise
// those of a one-row call (dot()'s order does not depend on M): a batch of requests gets what each
// would get alone. A 16-bit B row is dotted as it is read at M = 1 (half the bytes), widened once
// into scratch for several rows of A. (Dotting blocks of 4 B rows against each A row, so that A is
// read once per block, measured 0.8-1.05x: left out.)
template <class BSrc>
void row_dots(Trans ta, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda, const BSrc& B,
              float beta, float* C, int64_t ldc) {
  std::vector<float> a_copy;
  if (ta == Trans::T) {  // op(A)'s rows are A's columns: gather them
    a_copy.resize(static_cast<size_t>(M * K));
    for (int64_t i = 0; i < M; ++i)
      for (int64_t k = 0; k < K; ++k) a_copy[i * K + k] = A[k * lda + i];
    A = a_copy.data();
    lda = K;
  }
  parallel_for(N, std::max<int64_t>(1, 16384 / (K * M)), [&](int64_t j0, int64_t j1, int) {
    for (int64_t j = j0; j < j1; ++j) {
      int64_t ld;
      const float* brow = M == 1 ? nullptr : B.block(j, 0, 1, K, ld);
      for (int64_t i = 0; i < M; ++i) {
        const float d = alpha * (M == 1 ? B.dot_row(A, j, K) : dot(A + i * lda, brow, K));
        float& c = C[i * ldc + j];
        c = beta == 0.f ? d : d + beta * c;
      }
    }
  });
}

}  // namespace

const char* precision_name(Precision p) {
  switch (p) {
    case Precision::F32: return "f32";
    case Precision::BF16: return "bf16";
    case Precision::F16: return "f16";
  }
  return "unknown";
}

bool bf16_products_native() {
  return (active_isa() == Isa::Avx512 && cpu_features().avx512bf16) || (active_isa() == Isa::Neon && cpu_features().arm_bf16);
}

const detail::GemmKernel* detail::active_gemm_kernel() {
  switch (active_isa()) {
#if AWQ_X86
    case Isa::Avx512: return &detail::gemm_kernel_avx512();
    case Isa::Avx2: return &detail::gemm_kernel_avx2();
#endif
#if AWQ_ARM64
    case Isa::Neon: return &detail::gemm_kernel_neon();
#endif
    default: return nullptr;
  }
}

void require_cpu_precision(Precision p) {
  AWQ_CHECK_ARG(p == Precision::F32 || p == Precision::BF16,
                std::string("matrix products in ") + precision_name(p) + " are not available on the CPU (f32, bf16)");
}

const detail::GemmKernel* detail::gemm_kernel_for(Precision p) {
  require_cpu_precision(p);
  if (p == Precision::F32) return active_gemm_kernel();
#if AWQ_X86
  if (bf16_products_native()) return &gemm_kernel_avx512bf16();
#endif
#if AWQ_ARM64
  if (bf16_products_native()) return &gemm_kernel_neon_bf16();
#endif
  switch (active_isa()) {
#if AWQ_X86
    case Isa::Avx512: return &RoundedOperands<gemm_kernel_avx512>::kernel();
    case Isa::Avx2: return &RoundedOperands<gemm_kernel_avx2>::kernel();
#endif
#if AWQ_ARM64
    case Isa::Neon: return &RoundedOperands<gemm_kernel_neon>::kernel();
#endif
    default: return nullptr;
  }
}

namespace {

// sgemm on either kind of stored B (FloatB, HalfB); `symmetric`: op(A) op(B) is a Gram matrix.
template <class BSrc>
void sgemm_from(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                const BSrc& B, float beta, float* C, int64_t ldc, Precision p, bool symmetric) {
  const detail::GemmKernel* kern = detail::gemm_kernel_for(p);
  AWQ_CHECK_ARG(M >= 0 && N >= 0 && K >= 0, "sgemm: negative dimension");
  if (M == 0 || N == 0) return;
  AWQ_CHECK_ARG(ldc >= N, "sgemm: ldc must be >= N");
  AWQ_CHECK_ARG(lda >= std::max<int64_t>(1, ta == Trans::N ? K : M), "sgemm: lda too small");
  AWQ_CHECK_ARG(B.ldb >= std::max<int64_t>(1, tb == Trans::N ? N : K), "sgemm: ldb too small");
  if (K == 0) {  // empty product: C = beta * C (beta == 0 clears without reading)
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = beta == 0.f ? 0.f : beta * C[i * ldc + j];
    return;
  }
  if (M <= row_dots_max_m(N, K) && tb == Trans::T && p == Precision::F32) {
    return row_dots(ta, M, N, K, alpha, A, lda, B, beta, C, ldc);
  }
  if (kern) {
    sgemm_blocked(*kern, ta, tb, M, N, K, alpha, A, lda, B, beta, C, ldc, symmetric);
  } else {
    const auto b_at = [&](int64_t k, int64_t j) { return tb == Trans::N ? B.at(k, j) : B.at(j, k); };
    sgemm_reference(ta, M, N, K, alpha, A, lda, b_at, beta, C, ldc, p == Precision::BF16);
  }
}

}  // namespace

void sgemm(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
           int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc, Precision p) {
  // X^T X (Gram matrices) and X X^T: the same operand on both sides, transposed on one.
  const bool symmetric = A == B && lda == ldb && ta != tb && M == N && beta == 0.f;
  sgemm_from(ta, tb, M, N, K, alpha, A, lda, FloatB{B, ldb}, beta, C, ldc, p, symmetric);
}

void sgemm(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
           int64_t lda, const uint16_t* B, HalfFormat b_format, int64_t ldb, float beta, float* C, int64_t ldc,
           Precision p) {
  sgemm_from(ta, tb, M, N, K, alpha, A, lda, HalfB{B, ldb, b_format}, beta, C, ldc, p, false);
}

void PackedB::Free::operator()(float* p) const { std::free(p); }

bool PackedB::pack(Trans tb, int64_t K, int64_t N, const float* B, int64_t ldb) {
  AWQ_CHECK_ARG(K > 0 && N > 0, "PackedB: K and N must be positive");
  AWQ_CHECK_ARG(ldb >= (tb == Trans::N ? N : K), "PackedB: ldb too small");
  kern_ = detail::active_gemm_kernel();
  K_ = N_ = 0;
  if (!kern_) return false;
  const int64_t nr = kern_->nr, panels = ceil_div(N, nr);
  const size_t bytes = static_cast<size_t>(round_up(panels * nr * K * 4, 64));
  if (bytes > capacity_) {  // reused across packs (attention packs every head's keys and values)
    data_.reset();
    void* p = std::aligned_alloc(64, bytes);
    if (!p) throw std::bad_alloc();
    data_.reset(static_cast<float*>(p));
    capacity_ = bytes;
  }
  K_ = K;
  N_ = N;
  for (int64_t q = 0; q < panels; ++q) {
    const int64_t j = q * nr;
    kern_->pack_b(tb == Trans::N ? B + j : B + j * ldb, ldb, tb == Trans::N, static_cast<int>(std::min(nr, N - j)), K,
                  data_.get() + q * nr * K);
  }
  return true;
}

void sgemm_packed(Trans ta, int64_t M, int64_t n, int64_t k, float alpha, const float* A, int64_t lda,
                  const PackedB& B, float beta, float* C, int64_t ldc) {
  AWQ_CHECK_ARG(B.kern_, "sgemm_packed: B is not packed");
  AWQ_CHECK_ARG(M >= 0 && n >= 0 && k >= 1 && n <= B.N_ && k <= B.K_, "sgemm_packed: sizes outside the packed B");
  AWQ_CHECK_ARG(ldc >= n && lda >= std::max<int64_t>(1, ta == Trans::N ? k : M), "sgemm_packed: leading dimension too small");
  const detail::GemmKernel& kern = *B.kern_;
  const int64_t mr = kern.mr, nr = kern.nr;
  // sgemm's blocking of the k steps (the only blocking that changes how a C element is summed)
  const int64_t kc_max = balanced_block(k, kern.kc, 1), mc = round_up(std::min(M, kern.mc), mr);
  float* packed_a = t_pack_a.get(static_cast<size_t>(mc * kc_max));
  for (int64_t pc = 0; pc < k; pc += kc_max) {
    const int64_t kc = std::min(kc_max, k - pc);
    const float beta_here = pc == 0 ? beta : 1.f;
    for (int64_t ic = 0; ic < M; ic += mc) {
      const int64_t m = std::min(mc, M - ic);
      for (int64_t i = 0; i < m; i += mr) {
        const float* src = ta == Trans::N ? A + (ic + i) * lda + pc : A + pc * lda + ic + i;
        kern.pack_a(src, lda, ta == Trans::T, static_cast<int>(std::min(mr, m - i)), kc, packed_a + i * kc);
      }
      for (int64_t j = 0; j < n; j += nr) {
        const float* bp = B.data_.get() + j * B.K_ + pc * nr;  // panel j / nr, steps from pc
        for (int64_t i = 0; i < m; i += mr)
          kern.micro(kc, packed_a + i * kc, bp, C + (ic + i) * ldc + j, ldc, alpha, beta_here,
                     static_cast<int>(std::min(mr, m - i)), static_cast<int>(std::min(nr, n - j)));
      }
    }
  }
}

void linear(const float* x, int64_t M, int64_t in, const float* W, int64_t out, const float* bias,
            float* y, Precision p) {
  sgemm(Trans::N, Trans::T, M, out, in, 1.f, x, in, W, in, 0.f, y, out, p);
  if (bias) {
    parallel_for(M, 64, [&](int64_t m0, int64_t m1, int) {
      for (int64_t i = m0; i < m1; ++i)
        for (int64_t j = 0; j < out; ++j) y[i * out + j] += bias[j];
    });
  }
}

}  // namespace awq
