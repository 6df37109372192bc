#include <cmath>
#include <cstring>
#include <string>
#include <utility>
#include <limits>
#include <vector>

#include "../core/dtype.h"
#include "../core/errors.h"
#include "../core/forward.h"
#include "../core/vecmath.h"
#include "ref_layer.h"
#include "test.h"
#include "util.h"

using namespace awq;
using namespace awq::test;

namespace {
double max_rel(const std::vector<float>& got, const Vd& ref) {
  double scale = 0, err = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    scale = std::max(scale, std::fabs(ref[i]));
    err = std::max(err, std::fabs(got[i] - ref[i]));
  }
  return err / std::max(scale, 1e-30);
}
}  // namespace

TEST(vecmath_kernels_match_fp64) {
  for_each_isa([](Isa) {
    for (int64_t n : {1, 7, 8, 33, 517}) {
      auto x = random_floats(n, static_cast<uint32_t>(n), -30.f, 30.f);
      auto u = random_floats(n, static_cast<uint32_t>(n + 1), -3.f, 3.f);
      std::vector<float> s = x, h(n);
      softmax_inplace(s.data(), n);
      double mx = -INFINITY, sum = 0;
      for (float v : x) mx = std::max<double>(mx, v);
      for (float v : x) sum += std::exp(v - mx);
      for (int64_t i = 0; i < n; ++i) { const double rs = std::exp(x[i] - mx) / sum; CHECK_NEAR(s[i] / rs, 1.0, 1e-5); }  // x - max rounds in fp32: ~60 * 6e-8
      CHECK_NEAR(log_sum_exp(x.data(), n), mx + std::log(sum), 1e-5);
      silu_mul(x.data(), u.data(), h.data(), n);
      for (int64_t i = 0; i < n; ++i) {
        const double r = x[i] / (1.0 + std::exp(-static_cast<double>(x[i]))) * u[i];
        CHECK_NEAR(h[i], r, 2e-6 * std::fabs(r) + 1e-30);
      }
      double ssd = 0;
      for (int64_t i = 0; i < n; ++i) ssd += (static_cast<double>(x[i]) - u[i]) * (static_cast<double>(x[i]) - u[i]);
      CHECK_NEAR(sum_sq_diff(x.data(), u.data(), n), ssd, 1e-5 * ssd);
    }
  });
}

TEST(forward_decoder_layer_matches_fp64_reference) {
  struct Case { int64_t H, I, nh, nkv, hd, S, blocks; bool bias, qkn; };
  for (const Case& c : {Case{32, 48, 4, 2, 8, 13, 3, false, false}, Case{48, 64, 6, 6, 8, 70, 2, true, false},
                        Case{32, 40, 4, 1, 16, 9, 2, true, true}, Case{64, 96, 8, 2, 8, 130, 1, false, true}}) {
    for_each_isa([&](Isa) {
      RandomLayer L(c.H, c.I, c.nh, c.nkv, c.hd, c.bias, c.qkn, 100 + static_cast<uint32_t>(c.H + c.S));
      const int64_t T = c.S * c.blocks;
      auto x = random_floats(T * c.H, 5, -2.f, 2.f);
      for (int64_t t = 0; t < T; ++t) x[t * c.H + 3] *= 20.f;  // an outlier channel
      std::vector<float> out(T * c.H), xa(T * c.H), xo(T * L.arch.q_out()), xm(T * c.H), xd(T * c.I),
          ao(T * c.H), mo(T * c.H);
      LayerRecord rec{xa.data(), xo.data(), xm.data(), xd.data(), ao.data(), mo.data()};
      decoder_layer_forward(L.arch, L.w, x.data(), T, c.S, out.data(), &rec, CancelFlag());
      const RefOut r = ref_layer(L.arch, L.w, x, T, c.S);
      CHECK(max_rel(out, r.out) < 2e-5);
      CHECK(max_rel(xa, r.x_attn) < 2e-5);
      CHECK(max_rel(xo, r.x_o) < 2e-5);
      CHECK(max_rel(ao, r.attn_out) < 2e-5);
      CHECK(max_rel(xm, r.x_mlp) < 2e-5);
      CHECK(max_rel(xd, r.x_down) < 2e-5);
      CHECK(max_rel(mo, r.mlp_out) < 2e-5);
      // without recording, the same output
      std::vector<float> out2(T * c.H);
      decoder_layer_forward(L.arch, L.w, x.data(), T, c.S, out2.data(), nullptr, CancelFlag());
      CHECK(out2 == out);
    });
  }
}

TEST(forward_rejects_non_finite_and_bad_shapes) {
  RandomLayer L(32, 48, 4, 2, 8, false, false, 9);
  auto x = random_floats(2 * 16 * 32, 1);
  std::vector<float> out(x.size());
  CHECK_THROWS(decoder_layer_forward(L.arch, L.w, x.data(), 32, 5, out.data(), nullptr, CancelFlag()));
  L.up[77] = std::numeric_limits<float>::infinity();
  std::string msg;
  try {
    decoder_layer_forward(L.arch, L.w, x.data(), 32, 16, out.data(), nullptr, CancelFlag());
  } catch (const Error& e) {
    if (e.code() == ErrorCode::NonFinite) msg = e.what();
  }
  CHECK(msg.find("up_proj.weight") != std::string::npos && msg.find("row 2, column 13") != std::string::npos);
  L.up[77] = 0.f;
  x[40] = std::numeric_limits<float>::quiet_NaN();
  msg.clear();
  try {
    decoder_layer_forward(L.arch, L.w, x.data(), 32, 16, out.data(), nullptr, CancelFlag());
  } catch (const Error& e) {
    if (e.code() == ErrorCode::NonFinite) msg = e.what();
  }
  CHECK(msg.find("hidden") != std::string::npos);
  int32_t flag = 1;
  x[40] = 0.f;
  bool aborted = false;
  try {
    decoder_layer_forward(L.arch, L.w, x.data(), 32, 16, out.data(), nullptr, CancelFlag(&flag));
  } catch (const Error& e) {
    aborted = e.code() == ErrorCode::Aborted;
  }
  CHECK(aborted);
}

TEST(lm_head_nll_matches_fp64_reference) {
  const int64_t H = 24, V = 37, S = 6, T = 18;
  auto x = random_floats(T * H, 3, -2.f, 2.f);
  auto nw = random_floats(H, 4, 0.5f, 1.5f);
  auto E = random_floats(V * H, 5, -1.f, 1.f);
  std::vector<int32_t> ids(T);
  for (int64_t t = 0; t < T; ++t) ids[t] = static_cast<int32_t>((t * 7 + 3) % V);
  const NllResult got = lm_head_nll(x.data(), T, H, S, nw.data(), 1e-5f, E.data(), V, ids.data(), CancelFlag());
  double ref = 0;
  int64_t count = 0;
  for (int64_t t = 0; t < T; ++t) {
    if ((t + 1) % S == 0) continue;
    Vd xd(x.begin() + t * H, x.begin() + (t + 1) * H), n(H);
    ref_rms(xd.data(), H, nw.data(), 1e-5, n.data());
    Vd logit(V);
    double mx = -INFINITY;
    for (int64_t v = 0; v < V; ++v) {
      double d = 0;
      for (int64_t i = 0; i < H; ++i) d += n[i] * E[v * H + i];
      logit[v] = d;
      mx = std::max(mx, d);
    }
    double s = 0;
    for (double l : logit) s += std::exp(l - mx);
    ref += mx + std::log(s) - logit[ids[t + 1]];
    ++count;
  }
  CHECK(got.count == count);
  CHECK_NEAR(got.nll_sum, ref, 1e-5 * ref);
  ids[4] = static_cast<int32_t>(V);
  CHECK_THROWS(lm_head_nll(x.data(), T, H, S, nw.data(), 1e-5f, E.data(), V, ids.data(), CancelFlag()));
}

// A 16-bit lm_head (as stored) gives bitwise the result on its widening, on every ISA, through the
// blocked product (18 tokens) and the dot products of a few rows (5 tokens, 1 token); NaN / Inf in
// it are named by row and column.
TEST(lm_head_nll_half_lm_head_is_bitwise_its_widening) {
  const int64_t H = 24, V = 37;
  auto E = random_floats(V * H, 5, -1.f, 1.f);
  for_each_isa([&](Isa) {
    for (HalfFormat f : {HalfFormat::F16, HalfFormat::BF16}) {
      std::vector<uint16_t> E16(E.size());
      std::vector<float> wide(E.size());
      for (size_t i = 0; i < E.size(); ++i) {
        E16[i] = f == HalfFormat::F16 ? f32_to_fp16_scalar(E[i]) : f32_to_bf16_scalar(E[i]);
        if (f == HalfFormat::F16) {
          wide[i] = fp16_to_f32_scalar(E16[i]);
        } else {
          const uint32_t bits = static_cast<uint32_t>(E16[i]) << 16;
          std::memcpy(&wide[i], &bits, 4);
        }
      }
      for (auto [T, S] : {std::pair<int64_t, int64_t>{18, 6}, {5, 5}, {2, 2}}) {
        auto x = random_floats(T * H, 3, -2.f, 2.f);
        auto nw = random_floats(H, 4, 0.5f, 1.5f);
        std::vector<int32_t> ids(T);
        for (int64_t t = 0; t < T; ++t) ids[t] = static_cast<int32_t>((t * 7 + 3) % V);
        const NllResult a = lm_head_nll(x.data(), T, H, S, nw.data(), 1e-5f, E16.data(), f, V, ids.data(), CancelFlag());
        const NllResult b = lm_head_nll(x.data(), T, H, S, nw.data(), 1e-5f, wide.data(), V, ids.data(), CancelFlag());
        CHECK(a.count == b.count && std::memcmp(&a.nll_sum, &b.nll_sum, sizeof(double)) == 0);
      }
      std::vector<uint16_t> bad = E16;
      bad[5 * H + 3] = f == HalfFormat::F16 ? 0xfc00 : 0x7fc1;  // -Inf (fp16), NaN (bf16)
      auto x = random_floats(6 * H, 3, -2.f, 2.f);
      auto nw = random_floats(H, 4, 0.5f, 1.5f);
      std::vector<int32_t> ids(6, 1);
      std::string what;
      try {
        lm_head_nll(x.data(), 6, H, 6, nw.data(), 1e-5f, bad.data(), f, V, ids.data(), CancelFlag());
      } catch (const Error& e) {
        what = e.what();
      }
      CHECK(what == std::string("lm_head.weight: value at row 5, column 3 is ") + (f == HalfFormat::F16 ? "Inf" : "NaN"));
    }
  });
}
