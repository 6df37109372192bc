#include "forward.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "errors.h"
#include "gemm.h"
#include "threadpool.h"
#include "vecmath.h"

namespace awq {

void check_finite(const float* x, int64_t n, const char* name, int64_t cols) {
  // A cheap vectorizable scan first; the position is only searched for on failure.
  bool bad = false;
  for (int64_t i0 = 0; i0 < n && !bad; i0 += 4096) {
    float acc = 0.f;
    const int64_t i1 = std::min(n, i0 + 4096);
    for (int64_t i = i0; i < i1; ++i) acc += x[i] * 0.f;  // NaN/Inf * 0 = NaN
    bad = acc != 0.f;
  }
  if (!bad) return;
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(x[i])) {
      std::string where = cols > 0 ? "row " + std::to_string(i / cols) + ", column " + std::to_string(i % cols)
                                   : "index " + std::to_string(i);
      throw Error(ErrorCode::NonFinite, std::string(name) + ": value at " + where + " is " +
                                            (std::isnan(x[i]) ? "NaN" : "Inf"));
    }
  }
}

void validate_layer(const LayerArch& a, const LayerWeights& w) {
  AWQ_CHECK_ARG(a.hidden > 0 && a.intermediate > 0 && a.heads > 0 && a.kv_heads > 0 && a.head_dim > 0,
                "layer arch: sizes must be positive");
  AWQ_CHECK_ARG(a.head_dim % 2 == 0, "layer arch: headDim must be even for RoPE, got " + std::to_string(a.head_dim));
  AWQ_CHECK_ARG(a.heads % a.kv_heads == 0, "layer arch: numHeads " + std::to_string(a.heads) +
                                               " is not a multiple of numKvHeads " + std::to_string(a.kv_heads));
  AWQ_CHECK_ARG(a.eps > 0.f, "layer arch: rmsNormEps must be positive");
  AWQ_CHECK_ARG(a.inv_freq != nullptr, "layer arch: ropeInvFreq missing");
  AWQ_CHECK_ARG(w.input_norm && w.post_norm && w.q && w.k && w.v && w.o && w.gate && w.up && w.down,
                "layer weights: a required tensor is missing");
  AWQ_CHECK_ARG(!a.qk_norm || (w.q_norm && w.k_norm), "layer weights: qkNorm needs qNorm and kNorm");
  const int64_t H = a.hidden, I = a.intermediate;
  check_finite(a.inv_freq, a.head_dim / 2, "ropeInvFreq");
  check_finite(w.input_norm, H, "input_layernorm.weight");
  check_finite(w.post_norm, H, "post_attention_layernorm.weight");
  check_finite(w.q, a.q_out() * H, "q_proj.weight", H);
  check_finite(w.k, a.kv_out() * H, "k_proj.weight", H);
  check_finite(w.v, a.kv_out() * H, "v_proj.weight", H);
  check_finite(w.o, H * a.q_out(), "o_proj.weight", a.q_out());
  check_finite(w.gate, I * H, "gate_proj.weight", H);
  check_finite(w.up, I * H, "up_proj.weight", H);
  check_finite(w.down, H * I, "down_proj.weight", I);
  if (w.q_bias) check_finite(w.q_bias, a.q_out(), "q_proj.bias");
  if (w.k_bias) check_finite(w.k_bias, a.kv_out(), "k_proj.bias");
  if (w.v_bias) check_finite(w.v_bias, a.kv_out(), "v_proj.bias");
  if (w.o_bias) check_finite(w.o_bias, H, "o_proj.bias");
  if (a.qk_norm) {
    check_finite(w.q_norm, a.head_dim, "q_norm.weight");
    check_finite(w.k_norm, a.head_dim, "k_norm.weight");
  }
}

RopeTable::RopeTable(const float* inv_freq, int64_t half_, int64_t seqlen_)
    : seqlen(seqlen_), half(half_), cos(seqlen_ * half_), sin(seqlen_ * half_) {
  for (int64_t p = 0; p < seqlen; ++p) {
    for (int64_t i = 0; i < half; ++i) {
      const float angle = static_cast<float>(p) * inv_freq[i];  // fp32 product, as HF
      cos[p * half + i] = static_cast<float>(std::cos(static_cast<double>(angle)));
      sin[p * half + i] = static_cast<float>(std::sin(static_cast<double>(angle)));
    }
  }
}

namespace {

inline void rms_norm_row(const float* x, int64_t cols, const float* w, float eps, float* y) {
  float ss = 0.f;
  for (int64_t j = 0; j < cols; ++j) ss += x[j] * x[j];
  const float r = 1.f / std::sqrt(ss / static_cast<float>(cols) + eps);
  for (int64_t j = 0; j < cols; ++j) y[j] = w[j] * (x[j] * r);
}

// rotate_half RoPE on one head vector at position p.
inline void rope_head(float* x, const float* c, const float* s, int64_t half) {
  for (int64_t i = 0; i < half; ++i) {
    const float x1 = x[i], x2 = x[i + half];
    x[i] = x1 * c[i] - x2 * s[i];
    x[i + half] = x2 * c[i] + x1 * s[i];
  }
}

}  // namespace

void rms_norm(const float* x, int64_t rows, int64_t cols, const float* w, float eps, float* y) {
  parallel_for(rows, std::max<int64_t>(1, 8192 / cols), [&](int64_t r0, int64_t r1, int) {
    for (int64_t r = r0; r < r1; ++r) rms_norm_row(x + r * cols, cols, w, eps, y + r * cols);
  });
}

void concat_rows(std::initializer_list<std::pair<const float*, int64_t>> parts, int64_t cols, float* dst) {
  for (const auto& [src, rows] : parts) {
    if (src) std::copy(src, src + rows * cols, dst);
    else std::fill(dst, dst + rows * cols, 0.f);
    dst += rows * cols;
  }
}

double attention_core(const LayerArch& a, float* qkv, int64_t T, int64_t seqlen, const RopeTable& rope,
                      const float* q_norm, const float* k_norm, float* attn, const CancelFlag& cancel) {
  const int64_t hd = a.head_dim, half = hd / 2, ld = a.qkv_out();
  const int64_t nh = a.heads, nkv = a.kv_heads, group = nh / nkv;
  const int64_t q_off = 0, k_off = a.q_out(), v_off = a.q_out() + a.kv_out();
  // q/k norm and RoPE, in place, per token
  parallel_for(T, 16, [&](int64_t t0, int64_t t1, int) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t p = t % seqlen;
      const float* c = rope.cos.data() + p * half;
      const float* s = rope.sin.data() + p * half;
      float* row = qkv + t * ld;
      for (int64_t h = 0; h < nh + nkv; ++h) {
        float* x = h < nh ? row + q_off + h * hd : row + k_off + (h - nh) * hd;
        if (q_norm) rms_norm_row(x, hd, h < nh ? q_norm : k_norm, a.eps, x);
        rope_head(x, c, s, half);
      }
    }
  });
  const int64_t blocks = T / seqlen;
  const float scale = 1.f / std::sqrt(static_cast<float>(hd));
  constexpr int64_t kTile = 64;
  parallel_for(blocks * nh, 1, [&](int64_t u0, int64_t u1, int) {
    std::vector<float> scores(static_cast<size_t>(kTile * seqlen));
    PackedB kp, vp;
    for (int64_t u = u0; u < u1; ++u) {
      const int64_t b = u / nh, h = u % nh, kvh = h / group;
      const float* Q = qkv + b * seqlen * ld + q_off + h * hd;
      const float* K = qkv + b * seqlen * ld + k_off + kvh * hd;
      const float* V = qkv + b * seqlen * ld + v_off + kvh * hd;
      float* O = attn + b * seqlen * a.q_out() + h * hd;
      // The keys and values are packed once for all query tiles (sgemm would repack them per
      // tile); the products are bitwise sgemm's blocked ones (sgemm itself takes dot products for
      // a tile of up to 8 rows against the transposed keys).
      const bool packed = kp.pack(Trans::T, hd, seqlen, K, ld) && vp.pack(Trans::N, seqlen, hd, V, ld);
      for (int64_t i0 = 0; i0 < seqlen; i0 += kTile) {
        cancel.check();
        const int64_t i1 = std::min(seqlen, i0 + kTile), rows = i1 - i0;
        // only keys 0..i1-1 can be attended to by rows i0..i1-1 (causal)
        if (packed) sgemm_packed(Trans::N, rows, i1, hd, scale, Q + i0 * ld, ld, kp, 0.f, scores.data(), i1);
        else sgemm(Trans::N, Trans::T, rows, i1, hd, scale, Q + i0 * ld, ld, K, ld, 0.f, scores.data(), i1);
        for (int64_t r = 0; r < rows; ++r) {
          float* srow = scores.data() + r * i1;
          const int64_t visible = i0 + r + 1;
          softmax_inplace(srow, visible);
          std::fill(srow + visible, srow + i1, 0.f);
        }
        float* o = O + i0 * a.q_out();
        if (packed) sgemm_packed(Trans::N, rows, hd, i1, 1.f, scores.data(), i1, vp, 0.f, o, a.q_out());
        else sgemm(Trans::N, Trans::N, rows, hd, i1, 1.f, scores.data(), i1, V, ld, 0.f, o, a.q_out());
      }
    }
  });
  double flops = 0.0;
  for (int64_t i0 = 0; i0 < seqlen; i0 += kTile) flops += 4.0 * std::min(kTile, seqlen - i0) * std::min(seqlen, i0 + kTile) * hd;
  return flops * static_cast<double>(blocks * nh);
}

void decoder_layer_forward(const LayerArch& a, const LayerWeights& w, const float* hidden,
                           int64_t tokens, int64_t seqlen, float* out, const LayerRecord* rec,
                           const CancelFlag& cancel, double* flops, Precision p) {
  AWQ_CHECK_ARG(seqlen > 0 && tokens > 0 && tokens % seqlen == 0,
                "decoder layer: tokens (" + std::to_string(tokens) + ") must be a positive multiple of seqlen (" +
                    std::to_string(seqlen) + ")");
  validate_layer(a, w);
  const int64_t H = a.hidden, I = a.intermediate, QKV = a.qkv_out(), QO = a.q_out();
  check_finite(hidden, tokens * H, "hidden states", H);
  const RopeTable rope(a.inv_freq, a.head_dim / 2, seqlen);
  std::vector<float> w_qkv(QKV * H), w_gu(2 * I * H), b_qkv;
  concat_rows({{w.q, a.q_out()}, {w.k, a.kv_out()}, {w.v, a.kv_out()}}, H, w_qkv.data());
  concat_rows({{w.gate, I}, {w.up, I}}, H, w_gu.data());
  if (w.q_bias || w.k_bias || w.v_bias) {
    b_qkv.resize(QKV);
    concat_rows({{w.q_bias, a.q_out()}, {w.k_bias, a.kv_out()}, {w.v_bias, a.kv_out()}}, 1, b_qkv.data());
  }
  const int64_t C = chunk_tokens(seqlen, tokens);
  std::vector<float> xn(C * H), qkv(C * QKV), att(C * QO), tmp(C * H), gu(C * 2 * I), act(C * I);
  double f = 0.0;
  for (int64_t t0 = 0; t0 < tokens; t0 += C) {
    cancel.check();
    const int64_t T = std::min(C, tokens - t0);
    const float* x = hidden + t0 * H;
    float* y = out + t0 * H;
    float* n1 = rec && rec->x_attn ? rec->x_attn + t0 * H : xn.data();
    rms_norm(x, T, H, w.input_norm, a.eps, n1);
    linear(n1, T, H, w_qkv.data(), QKV, b_qkv.empty() ? nullptr : b_qkv.data(), qkv.data(), p);
    float* ao = rec && rec->x_o ? rec->x_o + t0 * QO : att.data();
    f += attention_core(a, qkv.data(), T, seqlen, rope, a.qk_norm ? w.q_norm : nullptr,
                        a.qk_norm ? w.k_norm : nullptr, ao, cancel);
    float* attn_out = rec && rec->attn_out ? rec->attn_out + t0 * H : tmp.data();
    linear(ao, T, QO, w.o, H, w.o_bias, attn_out, p);
    // y = x + attention (the residual stream h), then the MLP adds to it
    for (int64_t i = 0; i < T * H; ++i) y[i] = x[i] + attn_out[i];
    float* n2 = rec && rec->x_mlp ? rec->x_mlp + t0 * H : xn.data();
    rms_norm(y, T, H, w.post_norm, a.eps, n2);
    linear(n2, T, H, w_gu.data(), 2 * I, nullptr, gu.data(), p);
    float* d = rec && rec->x_down ? rec->x_down + t0 * I : act.data();
    parallel_for(T, 16, [&](int64_t r0, int64_t r1, int) {
      for (int64_t r = r0; r < r1; ++r) silu_mul(gu.data() + r * 2 * I, gu.data() + r * 2 * I + I, d + r * I, I);
    });
    float* m = rec && rec->mlp_out ? rec->mlp_out + t0 * H : tmp.data();
    linear(d, T, I, w.down, H, nullptr, m, p);
    for (int64_t i = 0; i < T * H; ++i) y[i] += m[i];
    f += 2.0 * T * H * (QKV + QO + 3.0 * I);
  }
  check_finite(out, tokens * H, "decoder layer output", H);
  if (flops) *flops += f;
}

namespace {

// lm_head_nll around `logits_of(xn, T, logits)`, the product with lm_head in its stored form.
template <class LogitsOf>
NllResult lm_head_nll_with(const float* hidden, int64_t tokens, int64_t H, int64_t seqlen, const float* final_norm,
                           float eps, int64_t vocab, const int32_t* ids, const CancelFlag& cancel,
                           const LogitsOf& logits_of) {
  const int64_t C = 256;
  std::vector<float> xn(C * H), logits(C * vocab);
  NllResult res;
  for (int64_t t0 = 0; t0 < tokens; t0 += C) {
    cancel.check();
    const int64_t T = std::min(C, tokens - t0);
    rms_norm(hidden + t0 * H, T, H, final_norm, eps, xn.data());
    logits_of(xn.data(), T, logits.data());
    std::vector<double> nll(T, 0.0);
    parallel_for(T, 4, [&](int64_t r0, int64_t r1, int) {
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t t = t0 + r;
        if ((t + 1) % seqlen == 0) continue;  // last position of a window predicts nothing
        const float* row = logits.data() + r * vocab;
        nll[r] = log_sum_exp(row, vocab) - static_cast<double>(row[ids[t + 1]]);
      }
    });
    for (int64_t r = 0; r < T; ++r) {
      if ((t0 + r + 1) % seqlen == 0) continue;
      res.nll_sum += nll[r];
      res.count += 1;
    }
  }
  if (!std::isfinite(res.nll_sum)) throw Error(ErrorCode::NonFinite, "lmHeadNll: the loss is not finite");
  return res;
}

void check_nll_inputs(const float* hidden, int64_t tokens, int64_t H, int64_t seqlen, const float* final_norm,
                      int64_t vocab, const int32_t* ids) {
  AWQ_CHECK_ARG(seqlen > 1 && tokens > 0 && tokens % seqlen == 0,
                "lmHeadNll: tokens must be a positive multiple of seqlen (> 1)");
  for (int64_t t = 0; t < tokens; ++t) {
    AWQ_CHECK_ARG(ids[t] >= 0 && ids[t] < vocab, "lmHeadNll: token id " + std::to_string(ids[t]) +
                                                     " at position " + std::to_string(t) +
                                                     " is outside the vocabulary [0, " + std::to_string(vocab) + ")");
  }
  check_finite(hidden, tokens * H, "hidden states", H);
  check_finite(final_norm, H, "norm.weight");
}

// check_finite for 16-bit floats: an all-ones exponent field is Inf or NaN.
void check_finite_half(const uint16_t* x, int64_t n, HalfFormat format, const char* name, int64_t cols) {
  const uint16_t exp = format == HalfFormat::F16 ? 0x7c00 : 0x7f80;
  // A vectorizable scan first (no early exit); the position is only searched for on failure.
  bool bad = false;
  for (int64_t i0 = 0; i0 < n && !bad; i0 += 4096) {
    uint32_t hits = 0;
    const int64_t i1 = std::min(n, i0 + 4096);
    for (int64_t i = i0; i < i1; ++i) hits |= static_cast<uint32_t>((x[i] & exp) == exp);
    bad = hits != 0;
  }
  if (!bad) return;
  for (int64_t i = 0; i < n; ++i) {
    if ((x[i] & exp) != exp) continue;
    const bool nan = (x[i] & static_cast<uint16_t>(~exp & 0x7fff)) != 0;
    throw Error(ErrorCode::NonFinite, std::string(name) + ": value at row " + std::to_string(i / cols) + ", column " +
                                          std::to_string(i % cols) + " is " + (nan ? "NaN" : "Inf"));
  }
}

}  // namespace

NllResult lm_head_nll(const float* hidden, int64_t tokens, int64_t H, int64_t seqlen,
                      const float* final_norm, float eps, const float* lm_head, int64_t vocab,
                      const int32_t* ids, const CancelFlag& cancel) {
  check_nll_inputs(hidden, tokens, H, seqlen, final_norm, vocab, ids);
  check_finite(lm_head, vocab * H, "lm_head.weight", H);
  return lm_head_nll_with(hidden, tokens, H, seqlen, final_norm, eps, vocab, ids, cancel,
                          [&](const float* xn, int64_t T, float* logits) {
                            linear(xn, T, H, lm_head, vocab, nullptr, logits);
                          });
}

NllResult lm_head_nll(const float* hidden, int64_t tokens, int64_t H, int64_t seqlen,
                      const float* final_norm, float eps, const uint16_t* lm_head, HalfFormat format,
                      int64_t vocab, const int32_t* ids, const CancelFlag& cancel) {
  check_nll_inputs(hidden, tokens, H, seqlen, final_norm, vocab, ids);
  check_finite_half(lm_head, vocab * H, format, "lm_head.weight", H);
  return lm_head_nll_with(hidden, tokens, H, seqlen, final_norm, eps, vocab, ids, cancel,
                          [&](const float* xn, int64_t T, float* logits) {
                            // linear() on the widened lm_head: x W^T, no bias
                            sgemm(Trans::N, Trans::T, T, vocab, H, 1.f, xn, H, lm_head, format, H, 0.f, logits, vocab);
                          });
}

}  // namespace awq
