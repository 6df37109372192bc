// A naive float64 decoder layer (REFERENCE.md forward semantics) for the C++ tests.
#pragma once
#include <cmath>
#include <cstdint>
#include <vector>

#include "../core/forward.h"
#include "util.h"

namespace awq::test {

using Vd = std::vector<double>;

inline Vd ref_linear(const Vd& x, int64_t T, int64_t in, const float* W, int64_t out, const float* b) {
  Vd y(T * out);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t o = 0; o < out; ++o) {
      double acc = b ? b[o] : 0.0;
      for (int64_t i = 0; i < in; ++i) acc += x[t * in + i] * W[o * in + i];
      y[t * out + o] = acc;
    }
  return y;
}

inline void ref_rms(double* x, int64_t cols, const float* w, double eps, double* y) {
  double ss = 0;
  for (int64_t j = 0; j < cols; ++j) ss += x[j] * x[j];
  const double r = 1.0 / std::sqrt(ss / cols + eps);
  for (int64_t j = 0; j < cols; ++j) y[j] = w[j] * x[j] * r;
}

struct RefOut {
  Vd out, x_attn, x_o, x_mlp, x_down, attn_out, mlp_out;
};

// Attention block on normed input n1 [T, H] -> [T, H]; also returns the o_proj input.
inline Vd ref_attention(const LayerArch& a, const LayerWeights& w, const Vd& n1, int64_t T, int64_t S,
                        const float* Wq, const float* Wk, const float* Wv, const float* Wo, Vd* o_in) {
  const int64_t H = a.hidden, hd = a.head_dim, half = hd / 2;
  Vd q = ref_linear(n1, T, H, Wq, a.q_out(), w.q_bias);
  Vd k = ref_linear(n1, T, H, Wk, a.kv_out(), w.k_bias);
  Vd v = ref_linear(n1, T, H, Wv, a.kv_out(), w.v_bias);
  auto rope = [&](double* x, int64_t p) {
    for (int64_t i = 0; i < half; ++i) {
      const double ang = static_cast<float>(p) * a.inv_freq[i];
      const double c = std::cos(ang), s = std::sin(ang);
      const double x1 = x[i], x2 = x[i + half];
      x[i] = x1 * c - x2 * s;
      x[i + half] = x2 * c + x1 * s;
    }
  };
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t h = 0; h < a.heads; ++h) {
      double* x = &q[t * a.q_out() + h * hd];
      if (a.qk_norm) ref_rms(x, hd, w.q_norm, a.eps, x);
      rope(x, t % S);
    }
    for (int64_t h = 0; h < a.kv_heads; ++h) {
      double* x = &k[t * a.kv_out() + h * hd];
      if (a.qk_norm) ref_rms(x, hd, w.k_norm, a.eps, x);
      rope(x, t % S);
    }
  }
  Vd att(T * a.q_out(), 0.0);
  const int64_t grp = a.heads / a.kv_heads;
  for (int64_t t = 0; t < T; ++t) {
    const int64_t b0 = (t / S) * S;
    for (int64_t h = 0; h < a.heads; ++h) {
      const int64_t g = h / grp;
      std::vector<double> sc(t - b0 + 1);
      double mx = -INFINITY;
      for (int64_t j = b0; j <= t; ++j) {
        double d = 0;
        for (int64_t i = 0; i < hd; ++i) d += q[t * a.q_out() + h * hd + i] * k[j * a.kv_out() + g * hd + i];
        sc[j - b0] = d / std::sqrt(static_cast<double>(hd));
        mx = std::max(mx, sc[j - b0]);
      }
      double sum = 0;
      for (auto& s : sc) sum += (s = std::exp(s - mx));
      for (int64_t j = b0; j <= t; ++j)
        for (int64_t i = 0; i < hd; ++i)
          att[t * a.q_out() + h * hd + i] += sc[j - b0] / sum * v[j * a.kv_out() + g * hd + i];
    }
  }
  if (o_in) *o_in = att;
  return ref_linear(att, T, a.q_out(), Wo, H, w.o_bias);
}

inline Vd ref_mlp(const LayerArch& a, const Vd& n2, int64_t T, const float* Wg, const float* Wu, const float* Wd, Vd* d_in) {
  const int64_t H = a.hidden, I = a.intermediate;
  Vd g = ref_linear(n2, T, H, Wg, I, nullptr), u = ref_linear(n2, T, H, Wu, I, nullptr);
  Vd d(T * I);
  for (int64_t i = 0; i < T * I; ++i) d[i] = g[i] / (1.0 + std::exp(-g[i])) * u[i];
  if (d_in) *d_in = d;
  return ref_linear(d, T, I, Wd, H, nullptr);
}

inline RefOut ref_layer(const LayerArch& a, const LayerWeights& w, const std::vector<float>& x, int64_t T, int64_t S) {
  const int64_t H = a.hidden;
  RefOut r;
  r.x_attn.resize(T * H);
  Vd xd(x.begin(), x.end());
  for (int64_t t = 0; t < T; ++t) ref_rms(&xd[t * H], H, w.input_norm, a.eps, &r.x_attn[t * H]);
  r.attn_out = ref_attention(a, w, r.x_attn, T, S, w.q, w.k, w.v, w.o, &r.x_o);
  Vd h(T * H);
  for (int64_t i = 0; i < T * H; ++i) h[i] = xd[i] + r.attn_out[i];
  r.x_mlp.resize(T * H);
  for (int64_t t = 0; t < T; ++t) ref_rms(&h[t * H], H, w.post_norm, a.eps, &r.x_mlp[t * H]);
  r.mlp_out = ref_mlp(a, r.x_mlp, T, w.gate, w.up, w.down, &r.x_down);
  r.out.resize(T * H);
  for (int64_t i = 0; i < T * H; ++i) r.out[i] = h[i] + r.mlp_out[i];
  return r;
}

// Random layer weights held in one owner.
struct RandomLayer {
  LayerArch arch;
  std::vector<float> inv_freq, in_norm, post_norm, q, k, v, o, gate, up, down, qb, kb, vb, ob, qn, kn;
  LayerWeights w;
  RandomLayer(int64_t H, int64_t I, int64_t nh, int64_t nkv, int64_t hd, bool bias, bool qk_norm, uint32_t seed) {
    arch.hidden = H; arch.intermediate = I; arch.heads = nh; arch.kv_heads = nkv; arch.head_dim = hd;
    arch.eps = 1e-5f; arch.qk_norm = qk_norm;
    inv_freq.resize(hd / 2);
    for (int64_t i = 0; i < hd / 2; ++i) inv_freq[i] = static_cast<float>(std::pow(10000.0, -2.0 * i / hd));
    arch.inv_freq = inv_freq.data();
    const float sc = 1.f / std::sqrt(static_cast<float>(H));
    in_norm = random_floats(H, seed + 1, 0.5f, 1.5f);
    post_norm = random_floats(H, seed + 2, 0.5f, 1.5f);
    q = random_floats(nh * hd * H, seed + 3, -2 * sc, 2 * sc);
    k = random_floats(nkv * hd * H, seed + 4, -2 * sc, 2 * sc);
    v = random_floats(nkv * hd * H, seed + 5, -sc, sc);
    o = random_floats(H * nh * hd, seed + 6, -sc, sc);
    gate = random_floats(I * H, seed + 7, -sc, sc);
    up = random_floats(I * H, seed + 8, -sc, sc);
    down = random_floats(H * I, seed + 9, -sc, sc);
    w.input_norm = in_norm.data(); w.post_norm = post_norm.data();
    w.q = q.data(); w.k = k.data(); w.v = v.data(); w.o = o.data();
    w.gate = gate.data(); w.up = up.data(); w.down = down.data();
    if (bias) {
      qb = random_floats(nh * hd, seed + 10, -0.2f, 0.2f);
      kb = random_floats(nkv * hd, seed + 11, -0.2f, 0.2f);
      vb = random_floats(nkv * hd, seed + 12, -0.2f, 0.2f);
      ob = random_floats(H, seed + 13, -0.2f, 0.2f);
      w.q_bias = qb.data(); w.k_bias = kb.data(); w.v_bias = vb.data(); w.o_bias = ob.data();
    }
    if (qk_norm) {
      qn = random_floats(hd, seed + 14, 0.5f, 1.5f);
      kn = random_floats(hd, seed + 15, 0.5f, 1.5f);
      w.q_norm = qn.data(); w.k_norm = kn.data();
    }
  }
};

}  // namespace awq::test
