#include <cfloat>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "../core/dtype.h"
#include "../core/errors.h"
#include "../core/int4_gemm.h"
#include "awq_tensors.h"
#include "test.h"
#include "util.h"

using namespace awq;
using namespace awq::test;

namespace {

// A quantized linear in our quantizer's form, with helpers to produce the AWQ tensors.
struct QLinear {
  int64_t in, out, group;
  std::vector<uint8_t> q, z;  // [out, in], [out, groups]
  std::vector<float> s;       // [out, groups], fp16-representable
  std::vector<float> bias;    // [out] or empty
  int64_t groups() const { return in / group; }
  double w(int64_t n, int64_t k) const {
    const int64_t g = n * groups() + k / group;
    return (static_cast<double>(q[n * in + k]) - z[g]) * s[g];
  }
};

QLinear random_linear(int64_t in, int64_t out, int64_t group, uint32_t seed, bool with_bias = false) {
  std::mt19937 rng(seed);
  QLinear L{in, out, group, {}, {}, {}, {}};
  L.q.resize(out * in);
  L.z.resize(out * L.groups());
  L.s.resize(out * L.groups());
  for (auto& v : L.q) v = static_cast<uint8_t>(rng() % 16);
  for (auto& v : L.z) v = static_cast<uint8_t>(rng() % 16);
  std::uniform_real_distribution<float> sd(0.001f, 0.05f);
  for (auto& v : L.s) v = round_to_fp16(sd(rng));
  if (with_bias) {
    L.bias.resize(out);
    for (auto& v : L.bias) v = round_to_fp16(sd(rng) * 10);
  }
  return L;
}

AwqTensors to_awq(const QLinear& L) { return awq_tensors(L.q, L.z, L.s, L.bias, L.in, L.out, L.group); }

std::shared_ptr<Int4Weights> pack(const QLinear& L) {
  return pack_int4_quantized(L.q.data(), L.z.data(), L.s.data(), L.bias.empty() ? nullptr : L.bias.data(), L.in,
                             L.out, L.group);
}

// |y - x W^T| against the fp32 summation bound (in + 2) * eps * sum |x||w| (plus |bias| * eps).
double worst_excess(const QLinear& L, const std::vector<float>& x, int64_t M, const std::vector<float>& y) {
  double worst = -1e300;
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < L.out; ++n) {
      double ref = L.bias.empty() ? 0.0 : L.bias[n], mag = std::fabs(ref);
      for (int64_t k = 0; k < L.in; ++k) {
        const double p = static_cast<double>(x[m * L.in + k]) * L.w(n, k);
        ref += p;
        mag += std::fabs(p);
      }
      // fp32 rounding: a relative eps per operation, and at most the smallest subnormal step per
      // operation where the sums are subnormal (a fixed absolute slack would hide tiny outputs).
      const double bound = (L.in + 2) * (static_cast<double>(FLT_EPSILON) * mag + 0x1p-149);
      worst = std::max(worst, std::fabs(y[m * L.out + n] - ref) - bound);
    }
  return worst;  // <= 0 when every output is within its bound
}

// int4_dequantize(w) equals L's (q - z) * s exactly.
bool dequantizes_exactly(const Int4Weights& w, const QLinear& L) {
  std::vector<float> d(L.out * L.in);
  int4_dequantize(w, d.data());
  bool exact = true;
  for (int64_t n = 0; n < L.out; ++n)
    for (int64_t k = 0; k < L.in; ++k) exact &= d[n * L.in + k] == static_cast<float>(L.w(n, k));
  return exact;
}

void check_exact(const QLinear& L, const std::vector<float>& x, int64_t M) {
  auto w = pack(L);
  std::vector<float> y(M * L.out, std::numeric_limits<float>::quiet_NaN());
  int4_linear(*w, x.data(), M, y.data());
  CHECK(worst_excess(L, x, M, y) <= 0);
}

}  // namespace

TEST(int4_awq_packing_round_trips_through_the_repacked_layout) {
  for (int64_t in : {128, 208, 512}) {
    QLinear L = random_linear(in, 24, 16, 11 + static_cast<uint32_t>(in), true);
    AwqTensors t = to_awq(L);
    auto a = pack_int4_awq(t.qweight.data(), t.qzeros.data(), t.scales.data(), t.bias.data(), L.in, L.out, L.group);
    auto b = pack(L);
    bool same = true;
    for (int64_t n = 0; n < L.out; ++n)
      for (int64_t k = 0; k < L.in; ++k)
        same &= detail::int4_at(*a, n, k) == L.q[n * L.in + k] && detail::int4_at(*b, n, k) == L.q[n * L.in + k];
    CHECK(same);
    CHECK(a->zeros == b->zeros && a->scales == b->scales && a->bias == L.bias && b->bias == L.bias);
    bool meta = true;
    for (int64_t i = 0; i < L.out * L.groups(); ++i)
      meta &= a->zero(i / L.groups(), i % L.groups()) == L.z[i] && a->scale(i / L.groups(), i % L.groups()) == L.s[i];
    CHECK(meta);
    for_each_isa([&](Isa) { CHECK(dequantizes_exactly(*a, L)); });
  }
}

TEST(int4_scales_are_held_as_fp16_and_zeros_as_nibbles) {
  // fp32 scales that are not fp16 values round to the nearest fp16 (as the checkpoint stores
  // them), subnormal fp16 ones included; with an odd number of groups each row's zeros end on a
  // half byte.
  QLinear L = random_linear(96, 13, 32, 5);
  std::vector<float> s32(L.s.size());
  for (size_t i = 0; i < s32.size(); ++i) s32[i] = (i % 3 == 0) ? 0.1f * (1 + i) : (i % 3 == 1 ? 3e-7f * (1 + i) : L.s[i]);
  for (size_t i = 0; i < L.z.size(); ++i) L.z[i] = static_cast<uint8_t>(15 - i % 16);
  auto w = pack_int4_quantized(L.q.data(), L.z.data(), s32.data(), nullptr, L.in, L.out, L.group);
  CHECK(w->zero_bytes == 2 && w->scales.size() == 39 + Int4Weights::kMetaPad &&
        w->zeros.size() == 26 + Int4Weights::kMetaPad);
  bool same = true;
  for (size_t i = 0; i < s32.size(); ++i) {
    const int64_t n = static_cast<int64_t>(i) / L.groups(), g = static_cast<int64_t>(i) % L.groups();
    same &= w->scale(n, g) == round_to_fp16(s32[i]) && w->zero(n, g) == L.z[i];
    L.s[i] = round_to_fp16(s32[i]);
  }
  CHECK(same);
  for_each_isa([&](Isa) {
    CHECK(dequantizes_exactly(*w, L));
    check_exact(L, random_floats(3 * L.in, 6), 3);
  });
}

TEST(int4_exact_matches_fp64_reference_on_random_shapes_every_isa) {
  // (M, in, out, group): decode and prefill paths, odd M, in = one group, partial last block,
  // out not a multiple of any tile, group 16 .. in.
  const int64_t shapes[][4] = {{1, 128, 8, 128},  {2, 256, 24, 64},  {3, 208, 40, 16},  {4, 384, 16, 128},
                               {5, 512, 24, 512}, {7, 96, 13, 32},   {8, 256, 9, 256},  {9, 256, 37, 128},
                               {13, 640, 70, 128}, {31, 160, 19, 80}, {64, 1024, 64, 128}, {1, 4096, 32, 128}, {1, 512, 26, 256},
                               // more groups per row than the decodes' unpacked metadata keeps on the stack
                               {1, 16512, 9, 16}, {3, 16512, 9, 16},
                               // prefill paths (dequantized panel + sgemm; packed from M = 64):
                               // several kc blocks, a short last one, several work items
                               {40, 1152, 100, 128}, {17, 2320, 48, 16}, {70, 1152, 100, 128}, {65, 2320, 48, 16}};
  for_each_isa([&](Isa) {
    uint32_t seed = 100;
    for (auto& s : shapes) {
      QLinear L = random_linear(s[1], s[2], s[3], seed++, seed % 2 == 0);
      check_exact(L, random_floats(s[0] * s[1], seed++, -2.f, 2.f), s[0]);
    }
  });
}

TEST(int4_exact_on_adversarial_inputs_every_isa) {
  for_each_isa([&](Isa) {
    // Outlier activation channels (x1000) and zero activations.
    {
      QLinear L = random_linear(256, 16, 128, 7);
      auto x = random_floats(3 * 256, 8);
      for (int m = 0; m < 3; ++m) x[m * 256 + 77] *= 1000.f, x[m * 256 + 200] = 0.f;
      check_exact(L, x, 3);
      check_exact(L, x, 1);
      check_exact(L, std::vector<float>(12 * 256, 0.f), 12);
    }
    // Zero points 0 and 15 with q at both ends; tiny and large scales.
    {
      QLinear L = random_linear(256, 16, 64, 9);
      for (size_t i = 0; i < L.z.size(); ++i) L.z[i] = (i % 2) ? 15 : 0;
      for (size_t i = 0; i < L.q.size(); ++i) L.q[i] = (i % 3 == 0) ? 0 : (i % 3 == 1 ? 15 : L.q[i]);
      for (size_t i = 0; i < L.s.size(); ++i) L.s[i] = (i % 4 == 0) ? round_to_fp16(6e-5f) : (i % 4 == 1 ? 4096.f : L.s[i]);
      for (int64_t M : {1, 5, 11, 23, 67}) check_exact(L, random_floats(M * 256, 10 + static_cast<uint32_t>(M)), M);
    }
    // All-equal groups (q == z everywhere): the weights are exactly zero, so is y (bias only).
    {
      QLinear L = random_linear(384, 24, 128, 12, true);
      for (int64_t n = 0; n < L.out; ++n)
        for (int64_t k = 0; k < L.in; ++k) L.q[n * L.in + k] = L.z[n * L.groups() + k / L.group];
      auto w = pack(L);
      for (int64_t M : {1, 4, 10, 20, 70}) {
        auto x = random_floats(M * 384, 13, -100.f, 100.f);
        std::vector<float> y(M * L.out);
        int4_linear(*w, x.data(), M, y.data());
        bool exact = true;
        for (int64_t i = 0; i < M * L.out; ++i) exact &= y[i] == L.bias[i % L.out];
        CHECK(exact);
      }
    }
  });
}

TEST(int4_exact_permuted_decode_on_extreme_inputs_every_isa) {
  // The lookup decode (group % 128 == 0, AVX2): zero points 0 and 15 with q at both ends, several
  // blocks per group, activations near the ends of the fp32 range (down to subnormals), and every
  // M up to the decode limit and past it.
  for_each_isa([&](Isa) {
    for (int64_t group : {128, 256}) {
      QLinear L = random_linear(512, 40, group, 41 + static_cast<uint32_t>(group), true);
      for (size_t i = 0; i < L.z.size(); ++i) L.z[i] = (i % 3 == 0) ? 0 : (i % 3 == 1 ? 15 : L.z[i]);
      for (size_t i = 0; i < L.q.size(); ++i) L.q[i] = (i % 5 == 0) ? 0 : (i % 5 == 1 ? 15 : L.q[i]);
      for (int64_t M = 1; M <= 17; ++M) check_exact(L, random_floats(M * 512, 50 + static_cast<uint32_t>(M), -3.f, 3.f), M);
      for (float magnitude : {1e-42f, 1e-33f, 1e-25f, 1e20f, 1e30f}) {
        auto x = random_floats(3 * 512, 60, -1.f, 1.f);
        for (auto& v : x) v *= magnitude;
        x[7] = 0.f;
        check_exact(L, x, 3);
        check_exact(L, x, 1);
      }
    }
  });
}

TEST(int4_permuted_decode_kernel_runs_and_matches_the_reference) {
  // The driver falls back silently when an ISA has no permuted decode; call it directly where
  // one exists, so a layout mistake cannot hide behind the fallback.
  bool ran = false;
  for_each_isa([&](Isa) {
    const detail::Int4Kernels& kern = detail::int4_kernels();
    if (!kern.decode_permuted) return;
    ran = true;
    QLinear L = random_linear(384, 24, 128, 71);
    L.bias.clear();
    auto w = pack(L);
    auto check_kernel = [&](const std::vector<float>& x, int64_t M) {
      detail::PermutedActivations a;
      kern.permute_x(x.data(), M, 384, a);
      std::vector<float> y(M * 24, std::numeric_limits<float>::quiet_NaN());
      kern.decode_permuted(*w, a, y.data(), 24, 0, 24);
      CHECK(worst_excess(L, x, M, y) <= 0);
    };
    for (int64_t M = 1; M <= detail::kPermutedDecodeMaxM; ++M)
      check_kernel(random_floats(M * 384, 72 + static_cast<uint32_t>(M), -2.f, 2.f), M);
    // Tiny and subnormal activations go through the same kernel, still exact.
    for (float magnitude : {1e-32f, 1e-40f}) {
      auto x = random_floats(384, 73, -1.f, 1.f);
      for (auto& v : x) v *= magnitude;
      check_kernel(x, 1);
    }
  });
  if (!ran) SKIP("no ISA of this CPU has a permuted decode (it is the AVX2 kernel's)");
}

TEST(int4_int8_mode_within_its_documented_bound_every_isa) {
  for_each_isa([&](Isa) {
    // From M = 8 the AVX-512 VNNI path takes 16 output rows per vector: 37 rows of x leave a
    // pass of 5, 50 outputs a panel of 2 (9 and 40: 9 and 8), group 256 two blocks per scale.
    // Below 8 it walks 4 outputs at a time (M = 1) or 2 (M = 2..4): 13 outputs leave one.
    const int64_t shapes[][4] = {{1, 128, 16, 128}, {3, 512, 24, 256}, {8, 384, 40, 128}, {20, 1024, 9, 128},
                                 {37, 512, 50, 256}, {32, 384, 16, 128}, {2, 2304, 24, 128}, {1, 256, 13, 128},
                                 {2, 512, 13, 256}};
    uint32_t seed = 300;
    for (auto& s : shapes) {
      const int64_t M = s[0];
      QLinear L = random_linear(s[1], s[2], s[3], seed++, true);
      auto x = random_floats(M * L.in, seed++, -3.f, 3.f);
      x[L.in / 2] *= 50.f;  // an outlier makes one block's step coarse
      auto w = pack(L);
      std::vector<float> y(M * L.out);
      int4_linear(*w, x.data(), M, y.data(), Int4Mode::Int8);
      double worst = -1e300;
      for (int64_t m = 0; m < M; ++m)
        for (int64_t n = 0; n < L.out; ++n) {
          double ref = L.bias[n], bound = 0, mag = std::fabs(ref);
          for (int64_t b = 0; b * 128 < L.in; ++b) {
            double amax = 0, wsum = 0;
            for (int64_t k = b * 128; k < std::min<int64_t>(L.in, (b + 1) * 128); ++k) {
              amax = std::max(amax, std::fabs(static_cast<double>(x[m * L.in + k])));
              wsum += std::fabs(L.w(n, k));
              ref += x[m * L.in + k] * L.w(n, k);
              mag += std::fabs(x[m * L.in + k] * L.w(n, k));
            }
            bound += amax / 127 / 2 * wsum;
          }
          bound = bound * 1.001 + (L.in + 2) * FLT_EPSILON * mag * 4;
          worst = std::max(worst, std::fabs(y[m * L.out + n] - ref) - bound);
        }
      CHECK(worst <= 0);
    }
  });
}

TEST(int4_int8_and_exact_modes_agree_on_integer_friendly_inputs) {
  // x holding small integers with a block maximum of 127 quantizes exactly: both modes agree
  // up to fp32 rounding, which checks the int8 layout and zero-point folding tightly.
  for_each_isa([&](Isa) {
    QLinear L = random_linear(256, 40, 128, 21);
    std::mt19937 rng(22);
    for (const int64_t M : {2, 35}) {  // the row-wise and (from 8 rows) the panel int8 kernels
      std::vector<float> x(M * 256);
      for (auto& v : x) v = static_cast<float>(static_cast<int>(rng() % 255) - 127);
      for (int64_t m = 0; m < M; ++m) x[m * 256] = 127.f, x[m * 256 + 128] = -127.f;
      auto w = pack(L);
      std::vector<float> ye(M * 40), yi(M * 40);
      int4_linear(*w, x.data(), M, ye.data(), Int4Mode::Exact);
      int4_linear(*w, x.data(), M, yi.data(), Int4Mode::Int8);
      double worst = 0;
      for (int64_t i = 0; i < M * 40; ++i) worst = std::max(worst, std::fabs(ye[i] - yi[i]) / (std::fabs(ye[i]) + 1.0));
      CHECK(worst < 1e-4);
    }
  });
}

TEST(int4_rejects_bad_shapes_values_and_non_finite_input) {
  QLinear L = random_linear(256, 16, 128, 31);
  auto expect_code = [](ErrorCode code, const std::function<void()>& fn) {
    bool ok = false;
    try {
      fn();
    } catch (const Error& e) {
      ok = e.code() == code;
    }
    CHECK(ok);
  };
  expect_code(ErrorCode::InvalidArgument, [&] { pack_int4_quantized(L.q.data(), L.z.data(), L.s.data(), nullptr, 256, 16, 24); });
  expect_code(ErrorCode::InvalidArgument, [&] { pack_int4_quantized(L.q.data(), L.z.data(), L.s.data(), nullptr, 200, 16, 64); });
  expect_code(ErrorCode::InvalidArgument, [&] { pack_int4_quantized(L.q.data(), L.z.data(), L.s.data(), nullptr, 256, 0, 128); });
  AwqTensors t = to_awq(L);
  expect_code(ErrorCode::InvalidArgument,
              [&] { pack_int4_awq(t.qweight.data(), t.qzeros.data(), t.scales.data(), nullptr, 256, 12, 128); });
  auto bad_q = L.q;
  bad_q[5] = 16;
  expect_code(ErrorCode::InvalidArgument, [&] { pack_int4_quantized(bad_q.data(), L.z.data(), L.s.data(), nullptr, 256, 16, 128); });
  auto bad_s = L.s;
  bad_s[3] = std::numeric_limits<float>::quiet_NaN();
  expect_code(ErrorCode::NonFinite, [&] { pack_int4_quantized(L.q.data(), L.z.data(), bad_s.data(), nullptr, 256, 16, 128); });
  bad_s[3] = -65520.f;  // finite in fp32, rounds to -Inf in fp16 (the scales' storage)
  expect_code(ErrorCode::NonFinite, [&] { pack_int4_quantized(L.q.data(), L.z.data(), bad_s.data(), nullptr, 256, 16, 128); });
  bad_s[3] = 65504.f;  // fp16's largest: accepted
  pack_int4_quantized(L.q.data(), L.z.data(), bad_s.data(), nullptr, 256, 16, 128);
  t.scales[7] = 0x7e00;  // fp16 NaN
  expect_code(ErrorCode::NonFinite, [&] { pack_int4_awq(t.qweight.data(), t.qzeros.data(), t.scales.data(), nullptr, 256, 16, 128); });
  auto w = pack(L);
  auto x = random_floats(3 * 256, 32);
  x[2 * 256 + 9] = std::numeric_limits<float>::infinity();
  std::vector<float> y(3 * 16);
  expect_code(ErrorCode::NonFinite, [&] { int4_linear(*w, x.data(), 3, y.data()); });
  QLinear L64 = random_linear(256, 16, 64, 33);
  auto w64 = pack(L64);
  x[2 * 256 + 9] = 0.f;
  expect_code(ErrorCode::InvalidArgument, [&] { int4_linear(*w64, x.data(), 3, y.data(), Int4Mode::Int8); });
}
