#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "../core/cpu_features.h"
#include "../core/dtype.h"
#include "../core/errors.h"
#include "../core/gemm.h"
#include "../core/gemm_kernels.h"
#include "../core/threadpool.h"
#include "../core/vecmath.h"
#include "test.h"
#include "util.h"

using namespace awq;
using namespace awq::test;

namespace {

struct GemmCase {
  Trans ta, tb;
  int64_t M, N, K;
  float alpha, beta;
  int64_t pad_a = 3, pad_b = 1, pad_c = 2;  // extra stride beyond the dense leading dimension
};

struct Operands {
  int64_t lda, ldb, ldc;
  std::vector<float> A, B, C;
};

Operands make_operands(const GemmCase& c, uint32_t seed) {
  Operands o;
  o.lda = (c.ta == Trans::N ? c.K : c.M) + c.pad_a;
  o.ldb = (c.tb == Trans::N ? c.N : c.K) + c.pad_b;
  o.ldc = c.N + c.pad_c;
  o.A = random_floats((c.ta == Trans::N ? c.M : c.K) * o.lda, seed);
  o.B = random_floats((c.tb == Trans::N ? c.K : c.N) * o.ldb, seed + 1);
  o.C = random_floats(c.M * o.ldc, seed + 2);
  return o;
}

float a_at(const GemmCase& c, const Operands& o, int64_t i, int64_t k) {
  return c.ta == Trans::N ? o.A[i * o.lda + k] : o.A[k * o.lda + i];
}
float b_at(const GemmCase& c, const Operands& o, int64_t k, int64_t j) {
  return c.tb == Trans::N ? o.B[k * o.ldb + j] : o.B[j * o.ldb + k];
}

// Runs sgemm on a copy of o.C and compares every element with an fp64 reference, within the
// rigorous fp32 accumulation bound (K + 2) * eps * (|alpha| sum|a b| + |beta c|); checks that the
// padding between rows of C is untouched. Returns the result. BF16: the reference multiplies the
// operands rounded to bf16, whose products are exact in fp32, so the same bound holds (and an
// unrounded operand would miss it by far: one bf16 rounding is 2^-9 relative, eps is 2^-23).
std::vector<float> check_case(const GemmCase& c, const Operands& o, Precision prec = Precision::F32) {
  std::vector<float> C = o.C;
  sgemm(c.ta, c.tb, c.M, c.N, c.K, c.alpha, o.A.data(), o.lda, o.B.data(), o.ldb, c.beta, C.data(),
        o.ldc, prec);
  auto op = [prec](float v) { return prec == Precision::BF16 ? round_to_bf16(v) : v; };
  const double eps = std::numeric_limits<float>::epsilon();
  int bad = 0;
  for (int64_t i = 0; i < c.M; ++i) {
    for (int64_t j = 0; j < o.ldc; ++j) {
      const float got = C[i * o.ldc + j];
      if (j >= c.N) {  // padding
        if (!(got == o.C[i * o.ldc + j]) && bad++ < 3) CHECK(got == o.C[i * o.ldc + j]);
        continue;
      }
      double acc = 0, mag = 0;
      for (int64_t k = 0; k < c.K; ++k) {
        const double p = static_cast<double>(op(a_at(c, o, i, k))) * op(b_at(c, o, k, j));
        acc += p;
        mag += std::fabs(p);
      }
      const double old = o.C[i * o.ldc + j];
      const double ref = c.alpha * acc + (c.beta == 0.f ? 0.0 : c.beta * old);
      const double tol =
          (c.K + 2) * eps * (std::fabs(c.alpha) * mag + std::fabs(c.beta * old)) + 1e-30;
      if (!(std::fabs(got - ref) <= tol) && bad++ < 3) CHECK_NEAR(got, ref, tol);
    }
  }
  return C;
}

const char* tname(Trans t) { return t == Trans::N ? "N" : "T"; }
constexpr Precision kPrecisions[] = {Precision::F32, Precision::BF16};

}  // namespace

TEST(gemm_matches_fp64_reference_all_transposes_and_odd_sizes) {
  for_each_isa([](Isa) {
    const int64_t sizes[][3] = {{1, 1, 1},    {7, 5, 3},     {33, 17, 65},  {130, 71, 260},
                                {1, 300, 129}, {64, 64, 512}, {6, 16, 8},    {12, 32, 4},
                                {14, 32, 9},  {5, 15, 7},    {29, 33, 31},  {150, 40, 17},
                                // last row tiles of 2 and 3 rows (the AVX-512 kernel's short tiles;
                                // with B transposed these few rows are row_dots' dot products)
                                {16, 24, 40}, {3, 9, 33},
                                // one row (N x T: the matrix-vector path), K past and between the
                                // dot kernels' vector steps
                                {1, 37, 1031}, {1, 5, 63}, {1, 70, 16}};
    uint32_t seed = 10;
    for (Precision p : kPrecisions)
      for (auto& s : sizes)
        for (Trans ta : {Trans::N, Trans::T})
          for (Trans tb : {Trans::N, Trans::T})
            for (float beta : {0.f, 0.5f}) {
              const GemmCase c{ta, tb, s[0], s[1], s[2], 1.25f, beta};
              check_case(c, make_operands(c, seed++), p);
            }
  });
}

// K spanning several kc blocks and not a multiple of any unroll; M and N past one mc / nr block
// with ragged edges; unusual alpha / beta (beta = 1 accumulates, negative values).
TEST(gemm_large_k_edges_alpha_beta) {
  for_each_isa([](Isa) {
    const GemmCase cases[] = {
        {Trans::N, Trans::T, 37, 45, 1031, 1.f, 0.f},
        {Trans::T, Trans::N, 41, 19, 2053, -0.5f, 1.f},
        {Trans::N, Trans::N, 301, 53, 515, 2.f, -2.f},
        {Trans::T, Trans::T, 23, 161, 777, 0.75f, 0.25f},
        {Trans::N, Trans::T, 3, 3100, 9, 1.f, 1.f, 0, 0, 5},  // several nc blocks, M < mr
        {Trans::N, Trans::T, 200, 7, 300, 1.f, 0.f, 17, 29, 0},
    };
    uint32_t seed = 100;
    for (Precision p : kPrecisions)  // bf16: odd K past one 512-step block, so the last pair is half empty
      for (const GemmCase& c : cases) check_case(c, make_operands(c, seed += 3), p);
  });
}

// The thread count changes only how blocks are distributed, never the order of accumulation,
// so results are bitwise identical with 1 thread, with all threads, and inside a parallel region
// (where sgemm runs single-threaded, as the attention code calls it).
TEST(gemm_deterministic_across_threads_and_nested) {
  for_each_isa([](Isa) {
    for (Precision p : kPrecisions) {
      const GemmCase c{Trans::N, Trans::T, 515, 261, 600, 1.f, 0.f};
      const Operands o = make_operands(c, 7);
      const std::vector<float> all = check_case(c, o, p);
      set_threads(1);
      std::vector<float> one = o.C;
      sgemm(c.ta, c.tb, c.M, c.N, c.K, c.alpha, o.A.data(), o.lda, o.B.data(), o.ldb, c.beta,
            one.data(), o.ldc, p);
      set_threads(0);
      CHECK(one == all);
      // Four independent products from inside one parallel region.
      std::vector<std::vector<float>> nested(4, o.C);
      parallel_for(4, 1, [&](int64_t b, int64_t e, int) {
        for (int64_t t = b; t < e; ++t)
          sgemm(c.ta, c.tb, c.M, c.N, c.K, c.alpha, o.A.data(), o.lda, o.B.data(), o.ldb, c.beta,
                nested[t].data(), o.ldc, p);
      });
      for (auto& r : nested) CHECK(r == all);
    }
  });
}

// A packed op(B) used with prefixes of its steps and columns gives bitwise sgemm's blocked result
// on those operands (k past one kc block included); the portable path packs nothing. sgemm takes
// dot products instead for a few rows against a transposed B (row_dots), so those rows are
// compared with the first rows of a taller product, which blocks and sums each row alike.
TEST(gemm_packed_b_prefixes_equal_sgemm) {
  for_each_isa([](Isa isa) {
    const GemmCase full[] = {
        {Trans::N, Trans::T, 0, 77, 64, 1.f, 0.f},    // attention scores: B = keys, k = head_dim
        {Trans::N, Trans::N, 0, 64, 600, 1.f, 0.f},   // attention output: B = values, k = keys
        {Trans::T, Trans::N, 0, 33, 300, -0.5f, 0.f},
    };
    uint32_t seed = 300;
    for (const GemmCase& f : full) {
      const Operands src = make_operands({f.ta, f.tb, 1, f.N, f.K, 1.f, 0.f}, seed += 5);
      PackedB packed;
      const bool ok = packed.pack(f.tb, f.K, f.N, src.B.data(), src.ldb);
      CHECK(ok == (isa != Isa::Portable));
      if (!ok) continue;
      CHECK(packed.k() == f.K && packed.n() == f.N);
      for (const auto& [M, n, k, beta] : {std::tuple<int64_t, int64_t, int64_t, float>{13, f.N, f.K, 0.f},
                                          {64, f.N / 2 + 1, f.K / 3 + 1, 1.f},
                                          {5, 1, 1, -1.f},
                                          {5, f.N, f.K, 0.f},
                                          {70, f.N, f.K - 1, 0.f}}) {
        GemmCase c{f.ta, f.tb, M, n, k, f.alpha, beta};
        Operands o = make_operands(c, seed += 5);
        o.B = src.B;  // the packed matrix, with its own stride
        o.ldb = src.ldb;
        std::vector<float> want = check_case(c, o);
        if (c.tb == Trans::T && M <= 16) {
          GemmCase tall = c;
          tall.M = M + 16;
          tall.pad_a = 0;
          Operands t = make_operands(tall, seed += 5);
          t.B = src.B;
          t.ldb = src.ldb;
          for (int64_t i = 0; i < M; ++i)  // the first M rows of A and C are o's
            for (int64_t kk = 0; kk < k; ++kk) t.A[i * t.lda + kk] = o.A[i * o.lda + kk];
          std::copy(o.C.begin(), o.C.end(), t.C.begin());
          const std::vector<float> tall_c = check_case(tall, t);
          want.assign(tall_c.begin(), tall_c.begin() + static_cast<int64_t>(o.C.size()));
        }
        std::vector<float> got = o.C;
        parallel_for(1, 1, [&](int64_t, int64_t, int) {  // as callers inside a parallel region do
          sgemm_packed(c.ta, c.M, c.N, c.K, c.alpha, o.A.data(), o.lda, packed, c.beta, got.data(), o.ldc);
        });
        CHECK(got == want);
      }
      std::vector<float> c1(16);
      CHECK_THROWS(sgemm_packed(Trans::N, 1, f.N + 1, 1, 1.f, src.A.data(), f.K + 3, packed, 0.f, c1.data(), f.N + 1));
    }
  });
}

// X^T X and X X^T with beta == 0 take the symmetric path (upper tiles computed, mirrored): the
// result must equal the reference and be exactly symmetric; with beta != 0, or a different
// operand, the general path runs and must agree too.
TEST(gemm_symmetric_gram) {
  for_each_isa([](Isa) {
    uint32_t seed = 200;
    for (Precision p : kPrecisions)
    for (int64_t n : {1, 7, 40, 149})
      for (int64_t d : {3, 300})
        for (Trans ta : {Trans::N, Trans::T}) {
          // ta == T: C = X^T X with X stored [d, n]; ta == N: C = X X^T with X stored [n, d].
          const GemmCase c{ta, ta == Trans::N ? Trans::T : Trans::N, n, n, d, 1.5f, 0.f};
          Operands o;
          o.lda = o.ldb = (ta == Trans::N ? d : n) + 5;
          o.ldc = n + 1;
          o.A = random_floats((ta == Trans::N ? n : d) * o.lda, seed++);
          o.B = o.A;  // same values, different buffer: check_case takes the general path
          o.C = random_floats(n * o.ldc, seed++);
          const std::vector<float> general = check_case(c, o, p);
          std::vector<float> C = o.C;  // B aliased to A: the symmetric path
          sgemm(c.ta, c.tb, n, n, d, c.alpha, o.A.data(), o.lda, o.A.data(), o.lda, 0.f, C.data(), o.ldc, p);
          CHECK(C == general);
          bool symmetric = true;
          for (int64_t i = 0; i < n; ++i)
            for (int64_t j = 0; j < n; ++j) symmetric &= C[i * o.ldc + j] == C[j * o.ldc + i];
          CHECK(symmetric);
        }
  });
}

// Panel packing for every micro-kernel width (AVX2 6/16, AVX-512 14/32), both source layouts,
// partial lanes and step counts around the 8-step transpose: exact values, zero padding, and
// nothing written past the panel (the packer overlaps stores inside it).
TEST(gemm_pack_panels_all_widths) {
#if !AWQ_X86
  SKIP("x86-64 only");
#else
  if (active_isa() < Isa::Avx2) SKIP("needs AVX2");
  const float guard = -12345.f;
  for (int w : {6, 14, 16, 32}) {
    const detail::PackPanelFn pack = detail::pack_panel_avx2_for_width(w);
    CHECK(pack != nullptr);
    if (!pack) continue;
    for (bool contiguous : {true, false})
      for (int lanes : {1, w - 1, w})
        for (int64_t k : {1, 7, 8, 9, 17, 64}) {
          const int64_t ld = (contiguous ? lanes : k) + 3;
          const auto src = random_floats((contiguous ? k : lanes) * ld, 77);
          std::vector<float> out(w * k + 16, guard);
          pack(src.data(), ld, contiguous, lanes, k, out.data());
          int bad = 0;
          for (int64_t s = 0; s < k; ++s)
            for (int l = 0; l < w; ++l) {
              const float want = l >= lanes ? 0.f : contiguous ? src[s * ld + l] : src[l * ld + s];
              bad += out[s * w + l] != want;
            }
          for (size_t i = w * k; i < out.size(); ++i) bad += out[i] != guard;
          if (bad) std::fprintf(stderr, "  w %d lanes %d k %ld contiguous %d: %d wrong\n", w, lanes, static_cast<long>(k), contiguous, bad);
          CHECK(bad == 0);
        }
  }
#endif
}

// NaN in A poisons exactly its row of C; NaN in B exactly its column; with beta == 0 a NaN
// already in C is overwritten, never read; with beta != 0 it propagates.
TEST(gemm_nan_semantics) {
  for_each_isa([](Isa) {
    const float nan = std::numeric_limits<float>::quiet_NaN();
    for (Trans ta : {Trans::N, Trans::T})
      for (Trans tb : {Trans::N, Trans::T}) {
        const GemmCase c{ta, tb, 20, 35, 300, 1.f, 0.f};
        Operands o = make_operands(c, 55);
        const int64_t bad_row = 13, bad_col = 33, bad_k = 271;
        (ta == Trans::N ? o.A[bad_row * o.lda + bad_k] : o.A[bad_k * o.lda + bad_row]) = nan;
        (tb == Trans::N ? o.B[bad_k * o.ldb + bad_col] : o.B[bad_col * o.ldb + bad_k]) = nan;
        for (float& x : o.C) x = nan;
        std::vector<float> C = o.C;
        sgemm(ta, tb, c.M, c.N, c.K, 1.f, o.A.data(), o.lda, o.B.data(), o.ldb, 0.f, C.data(), o.ldc);
        int wrong = 0;
        for (int64_t i = 0; i < c.M; ++i)
          for (int64_t j = 0; j < c.N; ++j)
            wrong += std::isnan(C[i * o.ldc + j]) != (i == bad_row || j == bad_col);
        if (wrong) std::fprintf(stderr, "  %s%s: %d elements wrong\n", tname(ta), tname(tb), wrong);
        CHECK(wrong == 0);
        // beta != 0 reads C: the NaN in C comes through everywhere.
        C = o.C;
        sgemm(ta, tb, c.M, c.N, c.K, 1.f, o.A.data(), o.lda, o.B.data(), o.ldb, 0.5f, C.data(), o.ldc);
        bool all_nan = true;
        for (int64_t i = 0; i < c.M; ++i)
          for (int64_t j = 0; j < c.N; ++j) all_nan &= std::isnan(C[i * o.ldc + j]);
        CHECK(all_nan);
      }
  });
}

TEST(gemm_empty_k_scales_c_and_rejects_bad_args) {
  for_each_isa([](Isa) {
    const float nan = std::numeric_limits<float>::quiet_NaN();
    std::vector<float> C = {1.f, 2.f, nan, 4.f};
    const float dummy = 0.f;
    sgemm(Trans::N, Trans::N, 2, 2, 0, 1.f, &dummy, 1, &dummy, 2, 0.f, C.data(), 2);
    CHECK(C == std::vector<float>(4, 0.f));
    C = {1.f, 2.f, 3.f, 4.f};
    sgemm(Trans::N, Trans::N, 2, 2, 0, 1.f, &dummy, 1, &dummy, 2, 2.f, C.data(), 2);
    CHECK((C == std::vector<float>{2.f, 4.f, 6.f, 8.f}));
    CHECK_THROWS(sgemm(Trans::N, Trans::N, -1, 2, 2, 1.f, &dummy, 2, &dummy, 2, 0.f, C.data(), 2));
    CHECK_THROWS(sgemm(Trans::N, Trans::N, 2, 2, 2, 1.f, &dummy, 1, &dummy, 2, 0.f, C.data(), 2));
    CHECK_THROWS(sgemm(Trans::N, Trans::N, 2, 2, 2, 1.f, &dummy, 2, &dummy, 2, 0.f, C.data(), 1));
  });
}

TEST(gemm_linear_with_bias) {
  for_each_isa([](Isa) {
    const int64_t M = 70, in = 96, out = 50;
    const auto x = random_floats(M * in, 1), W = random_floats(out * in, 2), bias = random_floats(out, 3);
    std::vector<float> y(M * out);
    linear(x.data(), M, in, W.data(), out, bias.data(), y.data());
    double worst = 0;
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < out; ++j) {
        double acc = bias[j];
        for (int64_t k = 0; k < in; ++k) acc += static_cast<double>(x[i * in + k]) * W[j * in + k];
        worst = std::max(worst, std::fabs(acc - y[i * out + j]));
      }
    CHECK(worst < 1e-4);
  });
}

// BF16 products: which kernel runs (the vdpbf16ps one only with AVX512-BF16), NaN and Inf carried
// through the rounding, values that round up to the next binade, and F16 refused on the CPU.
TEST(gemm_bf16_kernels_and_special_values) {
  for_each_isa([](Isa isa) {
    const detail::GemmKernel* k = detail::gemm_kernel_for(Precision::BF16);
    CHECK((k != nullptr) == (isa != Isa::Portable));
    CHECK(bf16_products_native() ==
          ((isa == Isa::Avx512 && cpu_features().avx512bf16) || (isa == Isa::Neon && cpu_features().arm_bf16)));
    if (k) CHECK((k->k_unit == 2) == bf16_products_native());
    // 1 + 2^-8 + 2^-9 rounds up to 1 + 2^-7; 1 + 2^-8 is a tie and rounds to even (1); 255.9 rounds to 256.
    const int64_t K = 5;
    std::vector<float> a = {1.f + 0x1p-8f + 0x1p-9f, 1.f + 0x1p-8f, 255.9f, 0.f, -3.f};
    std::vector<float> b = {1.f, 1.f, 1.f, 7.f, 0.f};
    float c = -1.f;
    sgemm(Trans::N, Trans::T, 1, 1, K, 1.f, a.data(), K, b.data(), K, 0.f, &c, 1, Precision::BF16);
    CHECK(c == (1.f + 0x1p-7f) + 1.f + 256.f);
    a[3] = std::numeric_limits<float>::quiet_NaN();
    sgemm(Trans::N, Trans::T, 1, 1, K, 1.f, a.data(), K, b.data(), K, 0.f, &c, 1, Precision::BF16);
    CHECK(std::isnan(c));
    a[3] = std::numeric_limits<float>::infinity();
    sgemm(Trans::N, Trans::T, 1, 1, K, 1.f, a.data(), K, b.data(), K, 0.f, &c, 1, Precision::BF16);
    CHECK(std::isinf(c) && c > 0);
    bool refused = false;
    try {
      sgemm(Trans::N, Trans::T, 1, 1, K, 1.f, a.data(), K, b.data(), K, 0.f, &c, 1, Precision::F16);
    } catch (const Error& e) {
      refused = e.code() == ErrorCode::InvalidArgument;
    }
    CHECK(refused);
  });
}

// Every fp16 and bf16 value widens to the scalar conversion's fp32 bits on each ISA's vector path
// (F16C, NEON), at every length around the vector steps (NaN: a NaN).
TEST(gemm_widen_half_all_values_each_isa) {
  std::vector<uint16_t> all(65536 + 13);
  for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<uint16_t>(i * 40503u);  // a permutation, then 13 more
  for_each_isa([&](Isa) {
    for (HalfFormat f : {HalfFormat::F16, HalfFormat::BF16}) {
      for (int64_t n : {int64_t(1), int64_t(7), int64_t(8), int64_t(15), int64_t(17), static_cast<int64_t>(all.size())}) {
        std::vector<float> got(static_cast<size_t>(n), -7.f);
        if (f == HalfFormat::F16) widen_fp16(all.data(), got.data(), n);
        else widen_bf16(all.data(), got.data(), n);
        int bad = 0;
        for (int64_t i = 0; i < n; ++i) {
          float ref;
          if (f == HalfFormat::F16) {
            ref = fp16_to_f32_scalar(all[i]);
          } else {
            const uint32_t bits = static_cast<uint32_t>(all[i]) << 16;
            std::memcpy(&ref, &bits, 4);
          }
          if (std::isnan(ref) ? !std::isnan(got[i]) : std::memcmp(&got[i], &ref, 4) != 0) ++bad;
        }
        CHECK(bad == 0);
      }
    }
  });
}

// dot_fp16 / dot_bf16 are bitwise dot() on the widened b at every length through two 64-element
// steps (the vector steps, the AVX-512 masked tail, the scalar tails).
TEST(gemm_half_dots_are_bitwise_the_widened_dot) {
  const std::vector<float> a = random_floats(150, 61);
  const std::vector<float> src = random_floats(150, 62, -3.f, 3.f);
  std::vector<uint16_t> h16(150), hb16(150);
  std::vector<float> w16(150), wb16(150);
  for (size_t i = 0; i < 150; ++i) {
    h16[i] = f32_to_fp16_scalar(src[i]);
    hb16[i] = f32_to_bf16_scalar(src[i]);
    w16[i] = fp16_to_f32_scalar(h16[i]);
    const uint32_t bits = static_cast<uint32_t>(hb16[i]) << 16;
    std::memcpy(&wb16[i], &bits, 4);
  }
  for_each_isa([&](Isa) {
    int bad = 0;
    for (int64_t n = 0; n <= 150; ++n) {
      const float f16 = dot_fp16(a.data(), h16.data(), n), r16 = dot(a.data(), w16.data(), n);
      const float fb = dot_bf16(a.data(), hb16.data(), n), rb = dot(a.data(), wb16.data(), n);
      bad += std::memcmp(&f16, &r16, 4) != 0;
      bad += std::memcmp(&fb, &rb, 4) != 0;
    }
    CHECK(bad == 0);
  });
}

// sgemm with B stored as fp16 / bf16 is bitwise sgemm on the widened B: every transpose, the
// matrix-vector path (M = 1, B^T), K past a kc block, N past an nc block, ragged panels, both
// precisions, 1 thread and all; B holds subnormals, zeros of both signs and infinities too.
TEST(gemm_half_b_is_bitwise_sgemm_on_the_widened_b) {
  for_each_isa([](Isa) {
    const GemmCase cases[] = {
        {Trans::N, Trans::T, 1, 300, 129, 1.f, 0.f},   {Trans::N, Trans::T, 1, 37, 1031, 0.5f, 1.f},
        {Trans::T, Trans::T, 1, 70, 16, 1.f, 0.f},     {Trans::N, Trans::T, 37, 45, 1031, 1.f, 0.f},
        {Trans::T, Trans::N, 41, 19, 777, -0.5f, 1.f}, {Trans::N, Trans::N, 30, 53, 65, 2.f, -2.f},
        {Trans::T, Trans::T, 23, 161, 99, 0.75f, 0.25f}, {Trans::N, Trans::T, 3, 3100, 9, 1.f, 1.f, 0, 0, 5},
        {Trans::N, Trans::T, 7, 5, 3, 1.f, 0.f},
    };
    uint32_t seed = 500;
    for (HalfFormat f : {HalfFormat::F16, HalfFormat::BF16})
      for (Precision p : kPrecisions)
        for (const GemmCase& c : cases) {
          Operands o = make_operands(c, seed += 3);
          std::vector<uint16_t> half(o.B.size());
          for (size_t i = 0; i < o.B.size(); ++i) {
            float v = o.B[i] * 4.f;
            if (i % 97 == 5) v = 3e-6f * o.B[i];  // fp16 subnormal
            if (i % 211 == 7) v = -0.f;
            if (i % 1009 == 11) v = i % 2 ? INFINITY : -INFINITY;
            half[i] = f == HalfFormat::F16 ? f32_to_fp16_scalar(v) : f32_to_bf16_scalar(v);
          }
          std::vector<float> widened(half.size());
          for (size_t i = 0; i < half.size(); ++i) {
            if (f == HalfFormat::F16) {
              widened[i] = fp16_to_f32_scalar(half[i]);
            } else {
              const uint32_t bits = static_cast<uint32_t>(half[i]) << 16;
              std::memcpy(&widened[i], &bits, 4);
            }
          }
          std::vector<float> want = o.C, got = o.C, one = o.C;
          sgemm(c.ta, c.tb, c.M, c.N, c.K, c.alpha, o.A.data(), o.lda, widened.data(), o.ldb, c.beta, want.data(),
                o.ldc, p);
          sgemm(c.ta, c.tb, c.M, c.N, c.K, c.alpha, o.A.data(), o.lda, half.data(), f, o.ldb, c.beta, got.data(),
                o.ldc, p);
          set_threads(1);
          sgemm(c.ta, c.tb, c.M, c.N, c.K, c.alpha, o.A.data(), o.lda, half.data(), f, o.ldb, c.beta, one.data(),
                o.ldc, p);
          set_threads(0);
          CHECK(std::memcmp(got.data(), want.data(), want.size() * 4) == 0);
          CHECK(std::memcmp(one.data(), want.data(), want.size() * 4) == 0);
        }
    // A NaN in B reaches exactly the outputs that read it.
    const int64_t K = 40, N = 6;
    std::vector<float> a(K, 1.f);
    std::vector<uint16_t> b(static_cast<size_t>(N * K), 0x3c00);  // fp16 1
    b[3 * K + 17] = 0x7e01;
    std::vector<float> c(N);
    sgemm(Trans::N, Trans::T, 1, N, K, 1.f, a.data(), K, b.data(), HalfFormat::F16, K, 0.f, c.data(), N);
    for (int64_t j = 0; j < N; ++j) CHECK(j == 3 ? std::isnan(c[j]) : c[j] == 40.f);
  });
}

// A few rows against a transposed B (M <= 8, or 16 on a B of 2^22 elements or more) are dot
// products: right against fp64, and each row bitwise what a one-row call gives it (fp32 and 16-bit
// B, A transposed or not, alpha and beta), on either side of both thresholds.
TEST(gemm_few_rows_are_batch_invariant) {
  for_each_isa([](Isa) {
    for (auto [N, K] : {std::pair<int64_t, int64_t>{37, 129}, {1025, 4100}}) {
      for (int64_t M : {2, 8, 9, 16, 17}) {
        for (Trans ta : {Trans::N, Trans::T}) {
          const GemmCase c{ta, Trans::T, M, N, K, 0.75f, 0.5f};
          const Operands o = make_operands(c, static_cast<uint32_t>(M * 7 + N));
          const std::vector<float> all = check_case(c, o);
          std::vector<uint16_t> half(o.B.size());
          for (size_t i = 0; i < half.size(); ++i) half[i] = f32_to_fp16_scalar(o.B[i]);
          std::vector<float> all_half = o.C;
          sgemm(c.ta, c.tb, M, N, K, c.alpha, o.A.data(), o.lda, half.data(), HalfFormat::F16, o.ldb, c.beta,
                all_half.data(), o.ldc);
          const bool dots = M <= (N * K >= (int64_t{1} << 22) ? 16 : 8);
          int differ = 0, differ_half = 0;
          for (int64_t i = 0; i < M; ++i) {
            // row i alone: A's row i (a column of the stored A when transposed), C's row i
            const float* a = ta == Trans::N ? o.A.data() + i * o.lda : o.A.data() + i;
            std::vector<float> row(o.C.begin() + i * o.ldc, o.C.begin() + (i + 1) * o.ldc), row_half = row;
            sgemm(ta, Trans::T, 1, N, K, c.alpha, a, o.lda, o.B.data(), o.ldb, c.beta, row.data(), o.ldc);
            sgemm(ta, Trans::T, 1, N, K, c.alpha, a, o.lda, half.data(), HalfFormat::F16, o.ldb, c.beta, row_half.data(),
                  o.ldc);
            differ += std::memcmp(row.data(), all.data() + i * o.ldc, N * 4) != 0;
            differ_half += std::memcmp(row_half.data(), all_half.data() + i * o.ldc, N * 4) != 0;
          }
          // past the threshold the blocked sums differ somewhere: this detects where the threshold lies
          CHECK(dots ? differ == 0 : differ > 0);
          CHECK(dots ? differ_half == 0 : differ_half > 0);
        }
      }
    }
  });
}

// The ISA caps (AWQ_ISA, the tests' for_each_isa) and the sgemm kernel each usable ISA runs: the
// portable reference, or the blocked driver around that ISA's own micro-kernel. A cap is a level:
// on arm64 avx2 / avx512 keep NEON, on x86-64 neon means AVX2.
TEST(isa_caps_pick_each_isas_own_kernel) {
  const std::vector<Isa> isas = usable_isas();
  CHECK(!isas.empty() && isas.front() == Isa::Portable);
  CHECK(set_isa_cap(Isa::Portable) == Isa::Portable);
#if AWQ_ARM64
  CHECK(isas.size() == 2 && isas.back() == Isa::Neon);
  CHECK(set_isa_cap(Isa::Avx2) == Isa::Neon);
  CHECK(set_isa_cap(Isa::Avx512) == Isa::Neon);
#elif AWQ_X86
  const bool avx2 = isas.size() >= 2;
  CHECK(set_isa_cap(Isa::Neon) == (avx2 ? Isa::Avx2 : Isa::Portable));
#endif
  set_isa_cap(Isa::Avx512);
  const char* expected[] = {"", "avx2", "avx512", "neon"};
  for_each_isa([&](Isa isa) {
    CHECK(active_isa() == isa);
    const detail::GemmKernel* k = detail::active_gemm_kernel();
    CHECK((k != nullptr) == (isa != Isa::Portable));
    if (k) CHECK(std::string(k->name).rfind(expected[static_cast<int>(isa)], 0) == 0);
  });
}
