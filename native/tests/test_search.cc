#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "../core/errors.h"
#include "../core/forward.h"
#include "../core/quant.h"
#include "../core/search.h"
#include "layer_run.h"
#include "ref_layer.h"
#include "test.h"
#include "util.h"

using namespace awq;
using namespace awq::test;

TEST(search_gram_loss_equals_direct_loss) {
  const int64_t n = 3000, in = 96, out = 40;
  auto X = random_floats(n * in, 1, -1.f, 1.f);
  for (int64_t t = 0; t < n; ++t) X[t * in + 5] *= 30.f;  // an outlier channel
  auto W = random_floats(out * in, 2, -0.1f, 0.1f);
  std::vector<float> s(in), Wq(out * in), dW(out * in);
  std::vector<float> xm(in, 1.f), wm(in, 0.5f);
  for (int64_t j = 0; j < in; ++j) xm[j] = 0.5f + (j % 7);
  scale_candidate(xm.data(), wm.data(), in, 0.35f, true, s.data());
  CHECK(scaled_fake_quant(W.data(), out, in, s.data(), QuantParams{4, 32, true}, Wq.data()));
  for (int64_t e = 0; e < out * in; ++e) dW[e] = Wq[e] - W[e];
  std::vector<double> G;
  gram(X.data(), n, in, G);
  std::vector<float> Gf(G.begin(), G.end());
  const double fast = gram_quadratic(dW.data(), out, in, Gf.data()) / (n * out);
  double direct = 0;  // mean over all outputs of (X W'^T - X W^T)^2, in fp64
  for (int64_t t = 0; t < n; ++t)
    for (int64_t r = 0; r < out; ++r) {
      double a = 0, b = 0;
      for (int64_t j = 0; j < in; ++j) {
        a += static_cast<double>(X[t * in + j]) * Wq[r * in + j];
        b += static_cast<double>(X[t * in + j]) * W[r * in + j];
      }
      direct += (a - b) * (a - b);
    }
  direct /= n * out;
  CHECK_NEAR(fast / direct, 1.0, 1e-5);
}

TEST(search_clip_matches_brute_force) {
  const int64_t n = 1100, in = 64, out = 6, g = 32;
  auto X = random_floats(n * in, 3, -1.f, 1.f);
  auto W = random_floats(out * in, 4, -1.f, 1.f);
  for (int64_t r = 0; r < out; ++r) W[r * in + (r * 11) % in] = 4.f;  // outliers make clipping pay
  for (bool zp : {true, false}) {
    std::vector<float> Wc = W;
    const QuantParams p{3, g, zp};
    const ClipResult res = clip_search(Wc.data(), out, in, X.data(), n, p, 20, 0.5f, CancelFlag());
    const int64_t step = std::max<int64_t>(1, n / 512);
    int64_t total = 0;
    for (auto h : res.histogram) total += h;
    CHECK(total == out * in / g);
    for (int64_t r = 0; r < out; ++r) {
      for (int64_t j = 0; j < in / g; ++j) {
        float m0 = 0;
        for (int64_t k = 0; k < g; ++k) m0 = std::max(m0, std::fabs(W[r * in + j * g + k]));
        double best_err = INFINITY;
        float best_m = m0;
        for (int i = 0; i < 10; ++i) {
          const float m = m0 * static_cast<float>(1.0 - i / 20.0);
          std::vector<float> c(g);
          for (int64_t k = 0; k < g; ++k) c[k] = std::min(std::max(W[r * in + j * g + k], -m), m);
          quantize_rows(c.data(), 0, 1, g, QuantParams{3, g, zp}, c.data(), nullptr, nullptr, nullptr);
          double err = 0;
          int64_t cnt = 0;
          for (int64_t t = 0; t < n; t += step, ++cnt) {
            double a = 0, b = 0;
            for (int64_t k = 0; k < g; ++k) {
              a += static_cast<double>(X[t * in + j * g + k]) * c[k];
              b += static_cast<double>(X[t * in + j * g + k]) * W[r * in + j * g + k];
            }
            err += (a - b) * (a - b);
          }
          err /= cnt;
          if (err < best_err * (1 - 1e-9)) {
            best_err = err;
            best_m = m;
          }
        }
        for (int64_t k = 0; k < g; ++k)
          CHECK(Wc[r * in + j * g + k] == std::min(std::max(W[r * in + j * g + k], -best_m), best_m));
      }
    }
  }
}

namespace {

double max_rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double scale = 0, err = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    scale = std::max(scale, std::fabs(static_cast<double>(b[i])));
    err = std::max(err, std::fabs(static_cast<double>(a[i]) - b[i]));
  }
  return err / scale;
}

// T tokens of hidden size 64 in [-2, 2], with channel `outlier` scaled by `factor`.
std::vector<float> input_with_outlier(int64_t T, uint32_t seed, int64_t outlier, float factor) {
  auto x = random_floats(T * 64, seed, -2.f, 2.f);
  for (int64_t t = 0; t < T; ++t) x[t * 64 + outlier] *= factor;
  return x;
}

}  // namespace

TEST(search_fold_is_exact_and_losses_match_fp64) {
  // MHA (o group searched) with biases, and GQA with qk-norm (o group skipped)
  for (bool gqa : {false, true}) {
    RandomLayer L(64, 96, 4, gqa ? 2 : 4, 16, !gqa, gqa, 21);
    const int64_t S = 24, T = 3 * S;
    const auto x = input_with_outlier(T, 7, 9, 15.f);
    SearchOptions opt;
    opt.group_size = 32;
    opt.clip = false;
    QuantRun r = run_layer(L, x, T, S, opt);
    CHECK(r.report.groups.size() == 4);
    CHECK(r.report.groups[1].skipped.empty() == !gqa);
    // the layer with folded (unquantized) weights computes what the original computes
    LayerWeights f = L.w;
    f.input_norm = r.in_norm.data();
    f.post_norm = r.post_norm.data();
    f.q = r.folded[kQ].data(); f.k = r.folded[kK].data(); f.v = r.folded[kV].data(); f.o = r.folded[kO].data();
    f.gate = r.folded[kGate].data(); f.up = r.folded[kUp].data(); f.down = r.folded[kDown].data();
    if (!gqa) f.v_bias = r.bias[kV].data();
    std::vector<float> y(T * 64);
    decoder_layer_forward(L.arch, f, x.data(), T, S, y.data(), nullptr, CancelFlag());
    CHECK(max_rel_diff(y, r.output) < 1e-5);
    // some scaling was chosen (ratio > 0) for at least one group, and folding changed weights
    bool moved = false;
    for (size_t e = 0; e < L.gate.size(); ++e) moved |= r.folded[kGate][e] != L.gate[e];
    CHECK(moved);
    // the qkv / gate_up losses equal the fp64 module error for the same candidate weights
    const RefOut ref = ref_layer(L.arch, L.w, x, T, S);
    std::vector<float> xm(64), wm(64), s(64);
    for (int64_t j = 0; j < 64; ++j) {
      double m = 0;
      for (int64_t t = 0; t < T; ++t) m += std::fabs(ref.x_attn[t * 64 + j]);
      xm[j] = static_cast<float>(m / T);
    }
    weight_mean({{L.w.q, L.arch.q_out()}, {L.w.k, L.arch.kv_out()}, {L.w.v, L.arch.kv_out()}}, 64, 32, wm.data());
    for (int i : {0, 7, 13}) {
      scale_candidate(xm.data(), wm.data(), 64, static_cast<float>(i / 20.0), true, s.data());
      std::vector<float> q(L.q.size()), k(L.k.size()), v(L.v.size());
      const QuantParams sp{4, 32, true, false};  // the search keeps candidate scales in fp32
      scaled_fake_quant(L.w.q, L.arch.q_out(), 64, s.data(), sp, q.data());
      scaled_fake_quant(L.w.k, L.arch.kv_out(), 64, s.data(), sp, k.data());
      scaled_fake_quant(L.w.v, L.arch.kv_out(), 64, s.data(), sp, v.data());
      const Vd yq = ref_attention(L.arch, L.w, ref.x_attn, T, S, q.data(), k.data(), v.data(), L.w.o, nullptr);
      double loss = 0;
      for (size_t e = 0; e < yq.size(); ++e) loss += (yq[e] - ref.attn_out[e]) * (yq[e] - ref.attn_out[e]);
      loss /= static_cast<double>(yq.size());
      CHECK_NEAR(r.report.groups[0].losses[i] / loss, 1.0, 1e-3);
    }
  }
}

TEST(search_rtn_quantizes_original_weights_and_clip_covers_every_group) {
  RandomLayer L(64, 128, 4, 2, 16, false, false, 5);
  const int64_t S = 32, T = 2 * S;
  auto x = random_floats(T * 64, 8, -2.f, 2.f);
  SearchOptions rtn;
  rtn.awq = false;
  rtn.group_size = -1;
  QuantRun r = run_layer(L, x, T, S, rtn);
  CHECK(r.report.groups.empty());
  for (size_t e = 0; e < L.gate.size(); ++e) CHECK(r.folded[kGate][e] == L.gate[e]);
  std::vector<uint8_t> q(L.down.size()), z(64);
  std::vector<float> sc(64);
  quantize_weights(L.w.down, 64, 128, QuantParams{4, 128, true}, nullptr, q.data(), z.data(), sc.data());
  CHECK(q == r.q[kDown] && z == r.z[kDown] && sc == r.s[kDown]);
  // AWQ + clip: the shrink histogram covers every (row, group) of the clipped linears
  SearchOptions awq;
  awq.group_size = 32;
  QuantRun a = run_layer(L, x, T, S, awq);
  CHECK(a.report.clips.size() == 5);
  for (const auto& c : a.report.clips) {
    int64_t total = 0;
    for (auto h : c.histogram) total += h;
    const int64_t rows = c.linear == kV ? 32 : c.linear == kO || c.linear == kDown ? 64 : 128;
    const int64_t cols = c.linear == kO ? 64 : c.linear == kDown ? 128 : 64;
    CHECK(total == rows * cols / 32);
  }
  CHECK(a.output == r.output);  // the output is the full-precision forward either way
}

TEST(search_rejects_bad_options_and_aborts) {
  RandomLayer L(64, 96, 4, 2, 16, false, false, 6);
  auto x = random_floats(2 * 16 * 64, 9);
  SearchOptions bad;
  bad.group_size = 128;  // 64 % 128 != 0
  CHECK_THROWS(run_layer(L, x, 32, 16, bad));
  bad.group_size = 32;
  bad.bits = 9;
  CHECK_THROWS(run_layer(L, x, 32, 16, bad));
}

TEST(search_linear_groups_gram_and_direct_losses_agree) {
  // The FLOP rule on the shapes of a 7B Llama down_proj (in 11008, out 4096): direct products win
  // with 8192 tokens (~15 vs ~22 TFLOP), the Gram matrix with 65536 (~36 vs ~118 TFLOP).
  CHECK(prefer_direct_loss(8192, 11008, 4096, 20));
  CHECK(!prefer_direct_loss(65536, 11008, 4096, 20));
  CHECK_NEAR(gram_loss_flops(8192, 11008, 4096, 20) / 1e12, 21.84, 0.01);
  CHECK_NEAR(direct_loss_flops(8192, 11008, 4096, 20) / 1e12, 14.77, 0.01);

  // MHA so the o group is searched; down has the wider input. Outlier channels make the ratios move.
  const int64_t H = 64, I = 192, S = 24, T = 3 * S;
  RandomLayer L(H, I, 4, 4, 16, false, false, 33);
  auto x = random_floats(T * H, 11, -2.f, 2.f);
  for (int64_t t = 0; t < T; ++t) x[t * H + 3] *= 20.f;
  SearchOptions opt;
  opt.group_size = 32;
  opt.clip = false;
  opt.linear_loss = LinearLoss::Gram;
  QuantRun g = run_layer(L, x, T, S, opt);
  opt.linear_loss = LinearLoss::Direct;
  QuantRun d = run_layer(L, x, T, S, opt);
  opt.linear_loss = LinearLoss::Auto;
  QuantRun a = run_layer(L, x, T, S, opt);
  CHECK(g.report.groups.size() == 4 && d.report.groups.size() == 4 && a.report.groups.size() == 4);
  for (size_t k : {size_t{1}, size_t{3}}) {  // o, down
    const GroupResult &gg = g.report.groups[k], &dd = d.report.groups[k];
    CHECK(gg.loss_method == "gram" && dd.loss_method == "direct");
    CHECK(gg.losses.size() == 20 && dd.losses.size() == 20);
    for (size_t i = 0; i < gg.losses.size(); ++i) CHECK_NEAR(gg.losses[i] / dd.losses[i], 1.0, 1e-4);
    CHECK(gg.best_ratio == dd.best_ratio);
  }
  CHECK(g.report.groups[0].loss_method == "direct" && g.report.groups[2].loss_method == "direct");
  // some ratio other than 0 was chosen, so the agreement covers folded scales too
  CHECK(g.report.groups[1].best_ratio > 0 || g.report.groups[3].best_ratio > 0);
  for (int id = 0; id < kNumLinears; ++id) CHECK(g.q[id] == d.q[id] && g.z[id] == d.z[id] && g.s[id] == d.s[id]);
  CHECK(g.output == d.output);
  // FLOPs: everything else is the same, so the difference is exactly the two linear groups'
  const int64_t QO = L.arch.q_out();
  const double gram_f = gram_loss_flops(T, QO, H, 20) + gram_loss_flops(T, I, H, 20);
  const double direct_f = direct_loss_flops(T, QO, H, 20) + direct_loss_flops(T, I, H, 20);
  CHECK_NEAR((g.report.flops - d.report.flops) / (gram_f - direct_f), 1.0, 1e-12);
  // Auto: with 72 tokens, o (in 64 = out) is cheaper through the Gram matrix, down (in 192) direct
  CHECK(!prefer_direct_loss(T, QO, H, 20) && prefer_direct_loss(T, I, H, 20));
  CHECK(a.report.groups[1].loss_method == "gram" && a.report.groups[3].loss_method == "direct");
  CHECK(a.report.groups[1].losses == g.report.groups[1].losses);
  CHECK(a.report.groups[3].losses == d.report.groups[3].losses);
  CHECK_NEAR(a.report.flops - g.report.flops, direct_loss_flops(T, I, H, 20) - gram_loss_flops(T, I, H, 20), 1.0);
  // the direct error equals the fp64 sum of squares of X dW^T
  auto Xr = random_floats(T * I, 12, -1.f, 1.f), dr = random_floats(H * I, 13, -0.01f, 0.01f);
  double ref = 0;
  for (int64_t t = 0; t < T; ++t)
    for (int64_t r = 0; r < H; ++r) {
      double e = 0;
      for (int64_t j = 0; j < I; ++j) e += static_cast<double>(Xr[t * I + j]) * dr[r * I + j];
      ref += e * e;
    }
  CHECK_NEAR(direct_sq_error(Xr.data(), T, I, dr.data(), H) / ref, 1.0, 1e-5);
}

TEST(search_rtn_without_tokens_runs_no_forward) {
  RandomLayer L(64, 128, 4, 2, 16, true, false, 41);
  const int64_t S = 16, T = 2 * S;
  auto x = random_floats(T * 64, 14, -2.f, 2.f);
  SearchOptions rtn;
  rtn.awq = false;
  rtn.group_size = 32;
  QuantRun with = run_layer(L, x, T, S, rtn);
  // no hidden states, no output buffer
  QuantRun none;
  LayerQuantOutputs o;
  const LayerArch& a = L.arch;
  const int64_t rows[] = {a.q_out(), a.kv_out(), a.kv_out(), a.hidden, a.intermediate, a.intermediate, a.hidden};
  const int64_t cols[] = {a.hidden, a.hidden, a.hidden, a.q_out(), a.hidden, a.hidden, a.intermediate};
  for (int id = 0; id < kNumLinears; ++id) {
    none.q[id].resize(rows[id] * cols[id]);
    none.z[id].resize(rows[id] * cols[id] / 32);
    none.s[id].resize(rows[id] * cols[id] / 32);
    o.q[id] = none.q[id].data();
    o.zeros[id] = none.z[id].data();
    o.scales[id] = none.s[id].data();
    if (!with.bias[id].empty()) {
      none.bias[id].resize(rows[id]);
      o.bias[id] = none.bias[id].data();
    }
  }
  none.in_norm.resize(64);
  none.post_norm.resize(64);
  o.input_norm = none.in_norm.data();
  o.post_norm = none.post_norm.data();
  std::vector<std::string> phases;
  quantize_decoder_layer(a, L.w, nullptr, 0, 1, rtn, Precision::F32, o, none.report, CancelFlag(),
                         [&](const char* p) { phases.push_back(p); });
  CHECK(phases == std::vector<std::string>{"quantize"});
  CHECK(none.report.flops == 0 && none.report.ms_forward == 0);
  for (int id = 0; id < kNumLinears; ++id) {
    CHECK(none.q[id] == with.q[id] && none.z[id] == with.z[id] && none.s[id] == with.s[id]);
    CHECK(none.bias[id] == with.bias[id]);
  }
  CHECK(none.in_norm == with.in_norm && none.post_norm == with.post_norm);
  // AWQ needs tokens
  SearchOptions awq;
  awq.group_size = 32;
  CHECK_THROWS(quantize_decoder_layer(a, L.w, nullptr, 0, 1, awq, Precision::F32, o, none.report, CancelFlag()));
}

// Precision::BF16: every linear product of the layer (the recorded forward, the candidates'
// forwards, the Gram or direct losses) rounds its operands to bf16, on every ISA (the AVX512-BF16
// kernel or fp32 kernels on rounded operands). The losses move by about the rounding (2^-9
// relative), not more; the choices may move with them.
TEST(search_bf16_products_move_losses_by_rounding_only) {
  for_each_isa([](Isa) {
    for (LinearLoss method : {LinearLoss::Gram, LinearLoss::Direct}) {
      RandomLayer L(64, 96, 4, 4, 16, true, false, 31);  // MHA: the o group is searched too
      const int64_t S = 24, T = 3 * S;
      const auto x = input_with_outlier(T, 17, 5, 12.f);
      SearchOptions opt;
      opt.group_size = 32;
      opt.linear_loss = method;
      const QuantRun f = run_layer(L, x, T, S, opt);
      const QuantRun b = run_layer(L, x, T, S, opt, cpu_quantizer(Precision::BF16));
      const double out_diff = max_rel_diff(b.output, f.output);
      CHECK(out_diff > 1e-6 && out_diff < 1e-2);  // rounded, and only by bf16's step
      CHECK(b.report.groups.size() == f.report.groups.size());
      bool moved = false;
      for (size_t g = 0; g < f.report.groups.size(); ++g) {
        const GroupResult &gb = b.report.groups[g], &gf = f.report.groups[g];
        CHECK(gb.skipped == gf.skipped && gb.loss_method == gf.loss_method);
        if (!gf.skipped.empty()) continue;
        for (size_t i = 0; i < gf.losses.size(); ++i) {
          moved |= gb.losses[i] != gf.losses[i];
          CHECK_NEAR(gb.losses[i] / gf.losses[i], 1.0, 0.05);
        }
      }
      CHECK(moved);
    }
  });
}

TEST(search_refuses_fp16_products_on_the_cpu) {
  RandomLayer L(64, 96, 4, 4, 16, false, false, 3);
  auto x = random_floats(32 * 64, 2, -1.f, 1.f);
  bool refused = false;
  try {
    run_layer(L, x, 32, 16, SearchOptions(), cpu_quantizer(Precision::F16));
  } catch (const Error& e) {
    refused = e.code() == ErrorCode::InvalidArgument;
  }
  CHECK(refused);
}
