#include "search.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <numeric>
#include <string>

#include "errors.h"
#include "gemm.h"
#include "stats.h"
#include "threadpool.h"
#include "vecmath.h"

namespace awq {

const char* linear_name(int id) {
  static const char* names[] = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
  return id >= 0 && id < kNumLinears ? names[id] : "?";
}

namespace {

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

void scale_columns(float* W, int64_t rows, int64_t in, const float* s) {
  parallel_for(rows, 16, [&](int64_t r0, int64_t r1, int) {
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t j = 0; j < in; ++j) W[r * in + j] *= s[j];
  });
}

void divide_columns(float* X, int64_t rows, int64_t in, const float* s) {
  parallel_for(rows, 64, [&](int64_t r0, int64_t r1, int) {
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t j = 0; j < in; ++j) X[r * in + j] /= s[j];
  });
}

}  // namespace

std::vector<std::pair<int64_t, float>> top_channels(const std::vector<float>& x_mean, size_t k) {
  std::vector<int64_t> idx(x_mean.size());
  std::iota(idx.begin(), idx.end(), 0);
  k = std::min(k, idx.size());
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(),
                    [&](int64_t a, int64_t b) { return x_mean[a] > x_mean[b] || (x_mean[a] == x_mean[b] && a < b); });
  std::vector<std::pair<int64_t, float>> out;
  for (size_t i = 0; i < k; ++i) out.emplace_back(idx[i], x_mean[idx[i]]);
  return out;
}

int argmin_loss(const std::vector<double>& losses) {
  int best = -1;
  double best_loss = std::numeric_limits<double>::infinity();
  for (size_t i = 0; i < losses.size(); ++i) {
    if (losses[i] < best_loss) {
      best_loss = losses[i];
      best = static_cast<int>(i);
    }
  }
  return best;
}

void scale_candidate(const float* x_mean, const float* w_mean, int64_t in, float alpha, bool duo, float* s) {
  const float beta = static_cast<float>(1.0 - static_cast<double>(alpha));
  float mx = -std::numeric_limits<float>::infinity(), mn = std::numeric_limits<float>::infinity();
  for (int64_t j = 0; j < in; ++j) {
    float v = std::pow(x_mean[j], alpha);
    if (duo) v = v / (std::pow(w_mean[j], beta) + 1e-4f);
    v = std::max(v, 1e-4f);
    s[j] = v;
    mx = std::max(mx, v);
    mn = std::min(mn, v);
  }
  const float norm = std::sqrt(mx * mn);
  for (int64_t j = 0; j < in; ++j) {
    const float v = s[j] / norm;
    s[j] = std::isfinite(v) ? v : 1.f;
  }
}

void weight_mean(const std::vector<std::pair<const float*, int64_t>>& linears, int64_t in, int64_t group,
                 float* w_mean) {
  std::vector<double> sum(in, 0.0);
  int64_t total_rows = 0;
  for (const auto& linear : linears) {
    // Not a structured binding: C++17 lambdas cannot capture those (clang refuses, GCC allows).
    const float* W = linear.first;
    const int64_t rows = linear.second;
    total_rows += rows;
    const int threads = num_threads();
    std::vector<std::vector<double>> part(threads, std::vector<double>(in, 0.0));
    parallel_for(rows, 16, [&](int64_t r0, int64_t r1, int t) {
      for (int64_t r = r0; r < r1; ++r) {
        for (int64_t j0 = 0; j0 < in; j0 += group) {
          const float* g = W + r * in + j0;
          float m = 0.f;
          for (int64_t k = 0; k < group; ++k) m = std::max(m, std::fabs(g[k]));
          m += 1e-6f;
          for (int64_t k = 0; k < group; ++k) part[t][j0 + k] += std::fabs(g[k]) / m;
        }
      }
    }, threads);
    for (int t = 0; t < threads; ++t)
      for (int64_t j = 0; j < in; ++j) sum[j] += part[t][j];
  }
  for (int64_t j = 0; j < in; ++j) w_mean[j] = static_cast<float>(sum[j] / static_cast<double>(total_rows));
}

bool scaled_fake_quant(const float* W, int64_t rows, int64_t in, const float* s, const QuantParams& p, float* dst) {
  const int threads = num_threads();
  std::vector<char> ok(static_cast<size_t>(threads), 1);
  parallel_for(rows, std::max<int64_t>(1, 8192 / in), [&](int64_t r0, int64_t r1, int t) {
    std::vector<float> ws(in);  // W * s apart from dst: quantize_rows' loops vectorize unaliased
    for (int64_t r = r0; r < r1; ++r) {
      float* d = dst + r * in;
      for (int64_t j = 0; j < in; ++j) ws[j] = W[r * in + j] * s[j];
      if (!quantize_rows(ws.data(), 0, 1, in, p, d, nullptr, nullptr, nullptr)) ok[t] = 0;
      for (int64_t j = 0; j < in; ++j) d[j] /= s[j];
    }
  }, threads);
  return std::all_of(ok.begin(), ok.end(), [](char c) { return c != 0; });
}

void gram(const float* X, int64_t n, int64_t in, std::vector<double>& G, Precision p) {
  G.assign(in * in, 0.0);
  constexpr int64_t kBlock = 1024;
  std::vector<float> Gb(in * in);
  for (int64_t t0 = 0; t0 < n; t0 += kBlock) {
    const int64_t T = std::min(kBlock, n - t0);
    sgemm(Trans::T, Trans::N, in, in, T, 1.f, X + t0 * in, in, X + t0 * in, in, 0.f, Gb.data(), in, p);
    for (int64_t i = 0; i < in * in; ++i) G[i] += Gb[i];
  }
}

double gram_quadratic(const float* dW, int64_t out, int64_t in, const float* Gf, Precision p) {
  std::vector<float> T(out * in);
  sgemm(Trans::N, Trans::N, out, in, in, 1.f, dW, in, Gf, in, 0.f, T.data(), in, p);
  const int threads = num_threads();
  std::vector<double> part(static_cast<size_t>(threads), 0.0);
  parallel_for(out, 16, [&](int64_t r0, int64_t r1, int t) {
    double acc = 0.0;
    for (int64_t r = r0; r < r1; ++r) {
      float row = 0.f;
      for (int64_t j = 0; j < in; ++j) row += T[r * in + j] * dW[r * in + j];
      acc += row;
    }
    part[t] += acc;
  }, threads);
  return std::accumulate(part.begin(), part.end(), 0.0);
}

double direct_sq_error(const float* X, int64_t n, int64_t in, const float* dW, int64_t out,
                       const CancelFlag& cancel, Precision p) {
  // Chunks of at most 4 Mi products (16 MiB) and at most n tokens.
  const int64_t C = std::max<int64_t>(1, std::min<int64_t>(n, (int64_t{1} << 22) / std::max<int64_t>(out, 1)));
  std::vector<float> E(C * out);
  const int threads = num_threads();
  std::vector<double> part(static_cast<size_t>(threads), 0.0);
  for (int64_t t0 = 0; t0 < n; t0 += C) {
    cancel.check();
    const int64_t T = std::min(C, n - t0);
    linear(X + t0 * in, T, in, dW, out, nullptr, E.data(), p);
    parallel_for(T, 16, [&](int64_t r0, int64_t r1, int t) {
      double acc = 0.0;
      for (int64_t r = r0; r < r1; ++r) {
        const float* e = E.data() + r * out;
        float row = 0.f;  // fp32 within a token's row, fp64 across rows (as gram_quadratic)
        for (int64_t c = 0; c < out; ++c) row += e[c] * e[c];
        acc += row;
      }
      part[t] += acc;
    }, threads);
  }
  return std::accumulate(part.begin(), part.end(), 0.0);
}

double gram_loss_flops(int64_t n, int64_t in, int64_t out, int n_grid) {
  const double i = static_cast<double>(in);
  return 2.0 * static_cast<double>(n) * i * i + n_grid * 2.0 * static_cast<double>(out) * i * i;
}

double direct_loss_flops(int64_t n, int64_t in, int64_t out, int n_grid) {
  return n_grid * 2.0 * static_cast<double>(n) * static_cast<double>(in) * static_cast<double>(out);
}

bool prefer_direct_loss(int64_t n, int64_t in, int64_t out, int n_grid) {
  return direct_loss_flops(n, in, out, n_grid) < gram_loss_flops(n, in, out, n_grid);
}

ClipResult clip_search(float* W, int64_t out, int64_t in, const float* X, int64_t n, const QuantParams& p,
                       int n_grid, float max_shrink, const CancelFlag& cancel, double* flops) {
  const int64_t g = p.group, groups = in / g;
  const int steps = static_cast<int>(static_cast<double>(n_grid) * max_shrink);
  ClipResult res;
  res.histogram.assign(std::max(steps, 1), 0);
  if (steps <= 0) return res;
  // every max(1, n // 512)-th token
  const int64_t step = std::max<int64_t>(1, n / 512);
  const int64_t ns = (n + step - 1) / step;
  std::vector<float> m0(out * groups);
  for (int64_t r = 0; r < out; ++r)
    for (int64_t j = 0; j < groups; ++j) {
      float m = 0.f;
      for (int64_t k = 0; k < g; ++k) m = std::max(m, std::fabs(W[r * in + j * g + k]));
      m0[r * groups + j] = m;
    }
  // err[(j * steps + i) * out + r]
  std::vector<double> err(static_cast<size_t>(groups * steps * out));
  parallel_for(groups * steps, 1, [&](int64_t u0, int64_t u1, int) {
    std::vector<float> Xj(ns * g), Wj(out * g), D(out * g), E(ns * out);
    int64_t loaded = -1;
    for (int64_t u = u0; u < u1; ++u) {
      if (cancel.cancelled()) return;
      const int64_t j = u / steps, i = u % steps;
      if (loaded != j) {
        for (int64_t t = 0; t < ns; ++t) std::copy(X + t * step * in + j * g, X + t * step * in + (j + 1) * g, Xj.data() + t * g);
        for (int64_t r = 0; r < out; ++r) std::copy(W + r * in + j * g, W + r * in + (j + 1) * g, Wj.data() + r * g);
        loaded = j;
      }
      const float shrink = static_cast<float>(1.0 - static_cast<double>(i) / n_grid);
      for (int64_t r = 0; r < out; ++r) {
        const float m = m0[r * groups + j] * shrink;
        for (int64_t k = 0; k < g; ++k) D[r * g + k] = std::min(std::max(Wj[r * g + k], -m), m);
      }
      quantize_rows(D.data(), 0, out, g, QuantParams{p.bits, g, p.zero_point, p.fp16_scale}, D.data(), nullptr, nullptr, nullptr);
      for (int64_t e = 0; e < out * g; ++e) D[e] -= Wj[e];
      // E = Xj * D^T: the output error of every row at every sampled token
      sgemm(Trans::N, Trans::T, ns, out, g, 1.f, Xj.data(), g, D.data(), g, 0.f, E.data(), out);
      double* dst = err.data() + u * out;
      for (int64_t r = 0; r < out; ++r) dst[r] = 0.0;
      for (int64_t t = 0; t < ns; ++t)
        for (int64_t r = 0; r < out; ++r) dst[r] += static_cast<double>(E[t * out + r]) * E[t * out + r];
    }
  });
  cancel.check();
  double shrink_sum = 0.0;
  for (int64_t r = 0; r < out; ++r) {
    for (int64_t j = 0; j < groups; ++j) {
      int best = 0;
      double best_err = std::numeric_limits<double>::infinity();
      for (int i = 0; i < steps; ++i) {
        const double e = err[(j * steps + i) * out + r];  // mean over tokens: same argmin as the sum
        if (e < best_err) {
          best_err = e;
          best = i;
        }
      }
      res.histogram[best] += 1;
      shrink_sum += static_cast<double>(best) / n_grid;
      const float m = m0[r * groups + j] * static_cast<float>(1.0 - static_cast<double>(best) / n_grid);
      for (int64_t k = 0; k < g; ++k) {
        float& v = W[r * in + j * g + k];
        v = std::min(std::max(v, -m), m);
      }
    }
  }
  res.mean_shrink = shrink_sum / static_cast<double>(out * groups);
  if (flops) *flops += 2.0 * steps * ns * out * in;
  return res;
}

namespace {

// The working state of one layer's search: mutable weights, recorded activations, scratch.
struct LayerState {
  const LayerArch& a;
  const SearchOptions& opt;
  const CancelFlag& cancel;
  const Precision prec;  // of the linear products
  int64_t n, seqlen, H, I, QO, KV, QKV;
  std::vector<float> W[kNumLinears];
  std::vector<float> in_norm, post_norm, q_bias, k_bias, v_bias, o_bias, q_norm, k_norm;
  std::vector<float> x_attn, x_o, x_mlp, x_down, attn_out, mlp_out;
  double flops = 0;

  LayerState(const LayerArch& a_, const LayerWeights& w, int64_t n_, int64_t seqlen_, const SearchOptions& o,
             Precision p, const CancelFlag& c)
      : a(a_), opt(o), cancel(c), prec(p), n(n_), seqlen(seqlen_), H(a_.hidden), I(a_.intermediate), QO(a_.q_out()),
        KV(a_.kv_out()), QKV(a_.qkv_out()) {
    auto copy = [](const float* p, int64_t len) { return p ? std::vector<float>(p, p + len) : std::vector<float>(); };
    W[kQ] = copy(w.q, QO * H);
    W[kK] = copy(w.k, KV * H);
    W[kV] = copy(w.v, KV * H);
    W[kO] = copy(w.o, H * QO);
    W[kGate] = copy(w.gate, I * H);
    W[kUp] = copy(w.up, I * H);
    W[kDown] = copy(w.down, H * I);
    in_norm = copy(w.input_norm, H);
    post_norm = copy(w.post_norm, H);
    q_bias = copy(w.q_bias, QO);
    k_bias = copy(w.k_bias, KV);
    v_bias = copy(w.v_bias, KV);
    o_bias = copy(w.o_bias, H);
    if (a.qk_norm) {
      q_norm = copy(w.q_norm, a.head_dim);
      k_norm = copy(w.k_norm, a.head_dim);
    }
  }
  int64_t rows(int id) const { return id == kQ ? QO : id == kK || id == kV ? KV : id == kO || id == kDown ? H : I; }
  int64_t cols(int id) const { return id == kO ? QO : id == kDown ? I : H; }

  // sum over chunks of |attention_block(x_attn; w_qkv) - attn_out|^2
  double attention_sq_error(const std::vector<float>& w_qkv, const RopeTable& rope) {
    std::vector<float> b_qkv;
    if (!q_bias.empty() || !k_bias.empty() || !v_bias.empty()) {
      b_qkv.resize(QKV);
      concat_rows({{q_bias.empty() ? nullptr : q_bias.data(), QO}, {k_bias.empty() ? nullptr : k_bias.data(), KV},
                   {v_bias.empty() ? nullptr : v_bias.data(), KV}},
                  1, b_qkv.data());
    }
    const int64_t C = chunk_tokens(seqlen, n);
    std::vector<float> qkv(C * QKV), att(C * QO), y(C * H);
    double sum = 0.0;
    for (int64_t t0 = 0; t0 < n; t0 += C) {
      cancel.check();
      const int64_t T = std::min(C, n - t0);
      linear(x_attn.data() + t0 * H, T, H, w_qkv.data(), QKV, b_qkv.empty() ? nullptr : b_qkv.data(), qkv.data(), prec);
      flops += attention_core(a, qkv.data(), T, seqlen, rope, q_norm.empty() ? nullptr : q_norm.data(),
                              k_norm.empty() ? nullptr : k_norm.data(), att.data(), cancel);
      linear(att.data(), T, QO, W[kO].data(), H, o_bias.empty() ? nullptr : o_bias.data(), y.data(), prec);
      sum += sum_sq_diff(y.data(), attn_out.data() + t0 * H, T * H);
      flops += 2.0 * T * H * (QKV + QO);
    }
    return sum;
  }

  double mlp_sq_error(const std::vector<float>& w_gu) {
    const int64_t C = chunk_tokens(seqlen, n);
    std::vector<float> gu(C * 2 * I), d(C * I), y(C * H);
    double sum = 0.0;
    for (int64_t t0 = 0; t0 < n; t0 += C) {
      cancel.check();
      const int64_t T = std::min(C, n - t0);
      linear(x_mlp.data() + t0 * H, T, H, w_gu.data(), 2 * I, nullptr, gu.data(), prec);
      parallel_for(T, 16, [&](int64_t r0, int64_t r1, int) {
        for (int64_t r = r0; r < r1; ++r) silu_mul(gu.data() + r * 2 * I, gu.data() + r * 2 * I + I, d.data() + r * I, I);
      });
      linear(d.data(), T, I, W[kDown].data(), H, nullptr, y.data(), prec);
      sum += sum_sq_diff(y.data(), mlp_out.data() + t0 * H, T * H);
      flops += 2.0 * T * H * 3.0 * I;
    }
    return sum;
  }

  // The grid search of one group. `eval` returns the loss for candidate weights of the group's
  // linears (already W' = Q(W s)/s). Returns the chosen scales (empty: all candidates failed).
  GroupResult search(const char* group, const std::vector<int>& ids, const char* folded_into,
                     const std::vector<float>& X, int64_t in,
                     const std::function<double(const std::vector<std::vector<float>>&)>& eval,
                     std::vector<float>& best_s) {
    GroupResult res;
    res.group = group;
    res.linears = ids;
    res.loss_method = "direct";  // the compared module runs on X (linear groups may say "gram")
    res.folded_into = folded_into;
    std::vector<float> x_mean(in), w_mean(in), s(in);
    abs_mean_columns(X.data(), n, in, x_mean.data());
    res.salient = top_channels(x_mean, 8);
    std::vector<std::pair<const float*, int64_t>> lin;
    for (int id : ids) lin.emplace_back(W[id].data(), rows(id));
    const QuantParams p = opt.search_params(in);
    weight_mean(lin, in, p.group, w_mean.data());
    std::vector<std::vector<float>> cand(ids.size());
    for (size_t k = 0; k < ids.size(); ++k) cand[k].resize(W[ids[k]].size());
    std::vector<std::vector<float>> scales;
    for (int i = 0; i < opt.n_grid; ++i) {
      cancel.check();
      const float alpha = static_cast<float>(static_cast<double>(i) / opt.n_grid);
      scale_candidate(x_mean.data(), w_mean.data(), in, alpha, opt.duo_scaling, s.data());
      bool ok = true;
      for (size_t k = 0; k < ids.size(); ++k)
        ok &= scaled_fake_quant(W[ids[k]].data(), rows(ids[k]), in, s.data(), p, cand[k].data());
      const double loss = ok ? eval(cand) : std::numeric_limits<double>::infinity();
      res.losses.push_back(loss);
      scales.push_back(s);
    }
    const int best = argmin_loss(res.losses);
    if (best < 0) {
      throw Error(ErrorCode::NonFinite, std::string("scale search of group ") + group +
                                            ": every candidate gave a non-finite loss");
    }
    res.best_ratio = static_cast<double>(best) / opt.n_grid;
    res.loss_best = res.losses[best];
    res.loss_zero = res.losses[0];
    best_s = scales[best];
    return res;
  }
};

}  // namespace

void check_layer_quant_args(const LayerArch& a, const LayerWeights& w, const float* hidden, int64_t tokens,
                            int64_t seqlen, const SearchOptions& opt, const LayerQuantOutputs& out, bool host_output) {
  AWQ_CHECK_ARG(opt.n_grid >= 1, "nGrid must be positive");
  AWQ_CHECK_ARG(opt.max_shrink >= 0.f && opt.max_shrink < 1.f, "maxShrink must be in [0, 1)");
  validate_layer(a, w);
  for (int id = 0; id < kNumLinears; ++id) {
    const int64_t in = id == kO ? a.q_out() : id == kDown ? a.intermediate : a.hidden;
    check_quant_params(opt.params(in), in);
  }
  AWQ_CHECK_ARG(tokens >= 0 && seqlen >= 1, "quantize_decoder_layer: tokens must be >= 0 and seqlen >= 1");
  AWQ_CHECK_ARG(tokens > 0 || !opt.awq, "the AWQ search needs calibration tokens (only RTN runs without them)");
  AWQ_CHECK_ARG(tokens == 0 || (hidden && (out.output || !host_output)),
                "quantize_decoder_layer: missing hidden states or output");
  AWQ_CHECK_ARG(out.input_norm && out.post_norm, "quantize_decoder_layer: missing outputs");
  const bool has_bias[kNumLinears] = {w.q_bias != nullptr, w.k_bias != nullptr, w.v_bias != nullptr, w.o_bias != nullptr,
                                      false, false, false};
  for (int id = 0; id < kNumLinears; ++id) {
    AWQ_CHECK_ARG(out.q[id] && out.zeros[id] && out.scales[id], "quantize_decoder_layer: missing outputs");
    AWQ_CHECK_ARG((out.bias[id] != nullptr) == has_bias[id], "quantize_decoder_layer: bias outputs do not match");
  }
}

void quantize_decoder_layer(const LayerArch& a, const LayerWeights& w, const float* hidden, int64_t tokens,
                            int64_t seqlen, const SearchOptions& opt, Precision precision, const LayerQuantOutputs& out,
                            LayerQuantReport& report, const CancelFlag& cancel,
                            const std::function<void(const char*)>& on_phase) {
  check_layer_quant_args(a, w, hidden, tokens, seqlen, opt, out);
  require_cpu_precision(precision);
  report = LayerQuantReport();
  LayerState st(a, w, tokens, seqlen, opt, precision, cancel);
  const int64_t n = tokens, H = st.H, I = st.I, QO = st.QO;
  const bool search = opt.awq;

  // 1. the forward of the unquantized layer, recording what the search needs (RTN without tokens:
  // none)
  auto t0 = Clock::now();
  if (n > 0) {
    if (on_phase) on_phase("forward");
    LayerRecord rec;
    if (search) {
      st.x_attn.resize(n * H);
      st.x_o.resize(n * QO);
      st.x_mlp.resize(n * H);
      st.x_down.resize(n * I);
      st.attn_out.resize(n * H);
      st.mlp_out.resize(n * H);
      rec = LayerRecord{st.x_attn.data(), st.x_o.data(), st.x_mlp.data(), st.x_down.data(), st.attn_out.data(), st.mlp_out.data()};
    }
    decoder_layer_forward(a, w, hidden, n, seqlen, out.output, search ? &rec : nullptr, cancel, &st.flops, precision);
    report.ms_forward = ms_since(t0);
  }

  if (search) {
    // 2. scale search for every group, on the original weights and inputs; then fold (section 3)
    if (on_phase) on_phase("scale-search");
    t0 = Clock::now();
    const RopeTable rope(a.inv_freq, a.head_dim / 2, seqlen);
    std::vector<float> s_qkv, s_o, s_gu, s_down;
    {
      std::vector<float> w_qkv(st.QKV * H);
      report.groups.push_back(st.search(
          "qkv", {kQ, kK, kV}, "input_layernorm", st.x_attn, H,
          [&](const std::vector<std::vector<float>>& c) {
            concat_rows({{c[0].data(), QO}, {c[1].data(), st.KV}, {c[2].data(), st.KV}}, H, w_qkv.data());
            return st.attention_sq_error(w_qkv, rope) / static_cast<double>(n * H);
          },
          s_qkv));
    }
    // single-linear groups: loss = mean((X dW^T)^2), either as trace(dW G dW^T) / (n * out) with
    // G = X^T X or by the products themselves, whichever costs fewer FLOPs (or as opt says)
    auto linear_group = [&](const char* name, int id, const char* into, const std::vector<float>& X, int64_t in,
                            std::vector<float>& best) {
      const int64_t rows = st.rows(id);
      const bool direct = opt.linear_loss == LinearLoss::Direct ||
                          (opt.linear_loss == LinearLoss::Auto && prefer_direct_loss(n, in, rows, opt.n_grid));
      std::vector<float> Gf, dW(st.W[id].size());
      if (!direct) {
        std::vector<double> G;
        gram(X.data(), n, in, G, precision);
        st.flops += 2.0 * n * in * in;
        Gf.assign(G.begin(), G.end());
      }
      GroupResult res = st.search(name, {id}, into, X, in,
                                  [&](const std::vector<std::vector<float>>& c) {
                                    for (size_t e = 0; e < dW.size(); ++e) dW[e] = c[0][e] - st.W[id][e];
                                    double sq;
                                    if (direct) {
                                      sq = direct_sq_error(X.data(), n, in, dW.data(), rows, cancel, precision);
                                      st.flops += 2.0 * n * in * rows;
                                    } else {
                                      sq = gram_quadratic(dW.data(), rows, in, Gf.data(), precision);
                                      st.flops += 2.0 * rows * in * in;
                                    }
                                    return sq / static_cast<double>(n * rows);
                                  },
                                  best);
      res.loss_method = direct ? "direct" : "gram";
      return res;
    };
    // AutoAWQ folds into v_proj only when v_proj and o_proj weights have the same shape,
    // [KV, H] == [H, QO]: no grouped-query attention and heads * head_dim == hidden.
    if (st.KV == H && QO == H) {
      report.groups.push_back(linear_group("o", kO, "v_proj", st.x_o, QO, s_o));
    } else {
      GroupResult skip;
      skip.group = "o";
      skip.linears = {kO};
      skip.folded_into = "v_proj";
      skip.skipped = st.KV != QO ? "grouped-query attention" : "v_proj and o_proj differ in shape (heads x head_dim != hidden)";
      skip.best_ratio = skip.loss_best = skip.loss_zero = std::numeric_limits<double>::quiet_NaN();
      std::vector<float> xm(QO);
      abs_mean_columns(st.x_o.data(), n, QO, xm.data());
      skip.salient = top_channels(xm, 8);
      report.groups.push_back(skip);
    }
    {
      std::vector<float> w_gu(2 * I * H);
      report.groups.push_back(st.search(
          "gate_up", {kGate, kUp}, "post_attention_layernorm", st.x_mlp, H,
          [&](const std::vector<std::vector<float>>& c) {
            concat_rows({{c[0].data(), I}, {c[1].data(), I}}, H, w_gu.data());
            return st.mlp_sq_error(w_gu) / static_cast<double>(n * H);
          },
          s_gu));
    }
    report.groups.push_back(linear_group("down", kDown, "up_proj", st.x_down, I, s_down));
    st.attn_out = {};
    st.mlp_out = {};

    // fold, in AutoAWQ's order: qkv, o, gate_up, down
    for (int64_t j = 0; j < H; ++j) st.in_norm[j] /= s_qkv[j];
    for (int id : {kQ, kK, kV}) scale_columns(st.W[id].data(), st.rows(id), H, s_qkv.data());
    divide_columns(st.x_attn.data(), n, H, s_qkv.data());
    if (!s_o.empty()) {
      for (int64_t r = 0; r < st.KV; ++r) {
        for (int64_t j = 0; j < H; ++j) st.W[kV][r * H + j] /= s_o[r];
        if (!st.v_bias.empty()) st.v_bias[r] /= s_o[r];
      }
      scale_columns(st.W[kO].data(), H, QO, s_o.data());
      divide_columns(st.x_o.data(), n, QO, s_o.data());
    }
    for (int64_t j = 0; j < H; ++j) st.post_norm[j] /= s_gu[j];
    for (int id : {kGate, kUp}) scale_columns(st.W[id].data(), I, H, s_gu.data());
    divide_columns(st.x_mlp.data(), n, H, s_gu.data());
    for (int64_t r = 0; r < I; ++r)
      for (int64_t j = 0; j < H; ++j) st.W[kUp][r * H + j] /= s_down[r];
    scale_columns(st.W[kDown].data(), H, I, s_down.data());
    divide_columns(st.x_down.data(), n, I, s_down.data());
    report.ms_scale = ms_since(t0);

    // 3. clip search (not q/k), then clamp
    if (opt.clip) {
      if (on_phase) on_phase("clip-search");
      t0 = Clock::now();
      const std::pair<int, const std::vector<float>*> clip_inputs[] = {
          {kV, &st.x_attn}, {kO, &st.x_o}, {kGate, &st.x_mlp}, {kUp, &st.x_mlp}, {kDown, &st.x_down}};
      for (const auto& [id, X] : clip_inputs) {
        const int64_t in = st.cols(id);
        ClipResult c = clip_search(st.W[id].data(), st.rows(id), in, X->data(), n, opt.search_params(in), opt.n_grid,
                                   opt.max_shrink, cancel, &st.flops);
        c.linear = id;
        report.clips.push_back(c);
      }
      report.ms_clip = ms_since(t0);
    }
  }

  // 4. integer quantization of all seven linears
  if (on_phase) on_phase("quantize");
  t0 = Clock::now();
  for (int id = 0; id < kNumLinears; ++id) {
    const int64_t in = st.cols(id);
    if (out.folded[id]) std::copy(st.W[id].begin(), st.W[id].end(), out.folded[id]);
    quantize_weights(st.W[id].data(), st.rows(id), in, opt.params(in), nullptr, out.q[id], out.zeros[id],
                     out.scales[id], linear_name(id));
  }
  std::copy(st.in_norm.begin(), st.in_norm.end(), out.input_norm);
  std::copy(st.post_norm.begin(), st.post_norm.end(), out.post_norm);
  const std::vector<float>* biases[kNumLinears] = {&st.q_bias, &st.k_bias, &st.v_bias, &st.o_bias, nullptr, nullptr, nullptr};
  for (int id = 0; id < kNumLinears; ++id)
    if (out.bias[id]) std::copy(biases[id]->begin(), biases[id]->end(), out.bias[id]);
  check_finite(out.input_norm, H, "input_layernorm.weight (after folding)");
  check_finite(out.post_norm, H, "post_attention_layernorm.weight (after folding)");
  report.ms_quant = ms_since(t0);
  report.flops = st.flops;
}

}  // namespace awq
