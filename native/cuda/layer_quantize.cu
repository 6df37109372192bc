// The layer driver of the CUDA backend: native/core/search.cc's quantize_decoder_layer step by
// step, on device buffers. The order of operations, the candidate grid, the loss definitions and
// the argmin rule are the CPU's; see search.h for the semantics.
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

#include "../core/errors.h"
#include "cuda_check.h"
#include "cuda_gemm.h"
#include "cuda_layer.h"

namespace awq::cuda {
namespace {

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

// Tokens per chunk of a search forward: whole blocks, at most 16k tokens (large products keep the
// GPU busy), and no more than half the free device memory holds at `bytes_per_token` of scratch
// (at least one block: a device too small for that fails with OutOfMemory naming the buffer).
int64_t gpu_chunk_tokens(int64_t seqlen, int64_t tokens, int64_t bytes_per_token) {
  size_t free_bytes = 0, total_bytes = 0;
  AWQ_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  const int64_t fit = static_cast<int64_t>(free_bytes / 2) / std::max<int64_t>(bytes_per_token, 1);
  return chunk_tokens(seqlen, tokens, std::min<int64_t>(16384, std::max<int64_t>(fit, seqlen)));
}

// A device array of fp32 (or another POD) with its length.
template <typename T>
struct Dev {
  DeviceMemory mem;
  int64_t n = 0;
  Dev() = default;
  Dev(int64_t count, const char* what) : mem(static_cast<size_t>(std::max<int64_t>(count, 1)) * sizeof(T), what), n(count) {}
  T* get() const { return static_cast<T*>(mem.get()); }
  bool empty() const { return n == 0; }
};

Dev<float> upload(const float* host, int64_t n, const char* what) {
  if (!host) return {};
  Dev<float> d(n, what);
  copy_to_device(d.get(), host, static_cast<size_t>(n) * sizeof(float));
  return d;
}

void copy_d2d(float* dst, const float* src, int64_t n) {
  AWQ_CUDA_CHECK(cudaMemcpyAsync(dst, src, static_cast<size_t>(n) * sizeof(float), cudaMemcpyDeviceToDevice));
}

double read_and_clear(double* acc_dev) {
  double v = 0.0;
  copy_to_host(&v, acc_dev, sizeof(double));
  fill_zero(acc_dev, sizeof(double));
  return v;
}

// dst[j, i] = src[i, j] for src [rows, cols]: the Gram matrix of reduced precision is a product
// Xt * Xt^T of the transposed token chunk (the tensor-core GEMM takes B as [N, K]).
__global__ void transpose_kernel(const float* __restrict__ src, int64_t rows, int64_t cols, float* __restrict__ dst) {
  __shared__ float tile[32][33];
  const int64_t c0 = static_cast<int64_t>(blockIdx.x) * 32, r0 = static_cast<int64_t>(blockIdx.y) * 32;
  for (int i = threadIdx.y; i < 32; i += blockDim.y) {
    const int64_t r = r0 + i, c = c0 + threadIdx.x;
    if (r < rows && c < cols) tile[i][threadIdx.x] = src[r * cols + c];
  }
  __syncthreads();
  for (int i = threadIdx.y; i < 32; i += blockDim.y) {
    const int64_t c = c0 + i, r = r0 + threadIdx.x;
    if (r < rows && c < cols) dst[c * rows + r] = tile[threadIdx.x][i];
  }
}

void transpose(const float* src, int64_t rows, int64_t cols, float* dst) {
  dim3 grid(static_cast<unsigned>((cols + 31) / 32), static_cast<unsigned>((rows + 31) / 32));
  transpose_kernel<<<grid, dim3(32, 8)>>>(src, rows, cols, dst);
  AWQ_CUDA_CHECK(cudaGetLastError());
}

// The working state of one layer's search on the device.
struct DeviceLayer {
  const LayerArch& a;
  const SearchOptions& opt;
  const Precision prec;
  const CancelFlag& cancel;
  int64_t n, seqlen, H, I, QO, KV, QKV;
  Dev<float> W[kNumLinears];
  Dev<float> q_bias, k_bias, v_bias, o_bias, q_norm, k_norm;
  std::vector<float> in_norm, post_norm, v_bias_host;  // host: folded on the host, as the CPU does
  Dev<float> x_attn, x_o, x_mlp, x_down, attn_out, mlp_out;
  Dev<double> acc{1, "loss accumulator"};
  Dev<int> bad{1, "quantization flag"};
  int64_t chunk = 0;  // tokens per chunk of the search forwards (gpu_chunk_tokens, set once)
  double flops = 0;

  DeviceLayer(const LayerArch& a_, const LayerWeights& w, int64_t n_, int64_t seqlen_, const SearchOptions& o,
              Precision p, const CancelFlag& c)
      : a(a_), opt(o), prec(p), cancel(c), n(n_), seqlen(seqlen_), H(a_.hidden), I(a_.intermediate),
        QO(a_.q_out()), KV(a_.kv_out()), QKV(a_.qkv_out()) {
    const float* src[kNumLinears] = {w.q, w.k, w.v, w.o, w.gate, w.up, w.down};
    for (int id = 0; id < kNumLinears; ++id)
      W[id] = upload(src[id], rows(id) * cols(id), (std::string("layer weights ") + linear_name(id)).c_str());
    q_bias = upload(w.q_bias, QO, "q_proj bias");
    k_bias = upload(w.k_bias, KV, "k_proj bias");
    v_bias = upload(w.v_bias, KV, "v_proj bias");
    o_bias = upload(w.o_bias, H, "o_proj bias");
    if (a.qk_norm) {
      q_norm = upload(w.q_norm, a.head_dim, "q_norm");
      k_norm = upload(w.k_norm, a.head_dim, "k_norm");
    }
    in_norm.assign(w.input_norm, w.input_norm + H);
    post_norm.assign(w.post_norm, w.post_norm + H);
    if (w.v_bias) v_bias_host.assign(w.v_bias, w.v_bias + KV);
    fill_zero(acc.get(), sizeof(double));
  }
  int64_t rows(int id) const { return id == kQ ? QO : id == kK || id == kV ? KV : id == kO || id == kDown ? H : I; }
  int64_t cols(int id) const { return id == kO ? QO : id == kDown ? I : H; }

  // sum over chunks of |attention_block(x_attn; w_qkv) - attn_out|^2
  double attention_sq_error(const Dev<float>& w_qkv, const Dev<float>& b_qkv, const DeviceRope& rope, Dev<float>& qkv,
                            Dev<float>& att, Dev<float>& y) {
    const int64_t C = chunk;
    for (int64_t t0 = 0; t0 < n; t0 += C) {
      cancel.check();
      const int64_t T = std::min(C, n - t0);
      cuda::linear(x_attn.get() + t0 * H, T, H, w_qkv.get(), QKV, b_qkv.empty() ? nullptr : b_qkv.get(), qkv.get(), prec);
      flops += cuda::attention_core(a, qkv.get(), T, seqlen, rope, q_norm.empty() ? nullptr : q_norm.get(),
                              k_norm.empty() ? nullptr : k_norm.get(), att.get());
      cuda::linear(att.get(), T, QO, W[kO].get(), H, o_bias.empty() ? nullptr : o_bias.get(), y.get(), prec);
      cuda::sum_sq_diff_acc(y.get(), attn_out.get() + t0 * H, T * H, acc.get());
      flops += 2.0 * T * H * (QKV + QO);
    }
    return read_and_clear(acc.get());
  }

  double mlp_sq_error(const Dev<float>& w_gu, Dev<float>& gu, Dev<float>& d, Dev<float>& y) {
    const int64_t C = chunk;
    for (int64_t t0 = 0; t0 < n; t0 += C) {
      cancel.check();
      const int64_t T = std::min(C, n - t0);
      cuda::linear(x_mlp.get() + t0 * H, T, H, w_gu.get(), 2 * I, nullptr, gu.get(), prec);
      cuda::silu_mul(gu.get(), T, I, d.get());
      cuda::linear(d.get(), T, I, W[kDown].get(), H, nullptr, y.get(), prec);
      cuda::sum_sq_diff_acc(y.get(), mlp_out.get() + t0 * H, T * H, acc.get());
      flops += 2.0 * T * H * 3.0 * I;
    }
    return read_and_clear(acc.get());
  }

  // G = X^T X over token blocks (fp32 or reduced-precision products, fp64 sums), returned as fp32.
  Dev<float> gram(const Dev<float>& X, int64_t in) {
    const int64_t block = 4096;
    Dev<double> G(in * in, "Gram matrix (fp64)");
    fill_zero(G.get(), static_cast<size_t>(in * in) * sizeof(double));
    Dev<float> Gb(in * in, "Gram matrix block");
    Dev<float> Xt;
    if (prec != Precision::F32) Xt = Dev<float>(std::min(block, n) * in, "transposed token block");
    for (int64_t t0 = 0; t0 < n; t0 += block) {
      cancel.check();
      const int64_t T = std::min(block, n - t0);
      if (prec == Precision::F32) {
        cuda::sgemm(Trans::T, Trans::N, in, in, T, 1.f, X.get() + t0 * in, in, X.get() + t0 * in, in, 0.f, Gb.get(), in);
      } else {
        transpose(X.get() + t0 * in, T, in, Xt.get());
        cuda::linear(Xt.get(), in, T, Xt.get(), in, nullptr, Gb.get(), prec);
      }
      cuda::accumulate_f64(Gb.get(), in * in, G.get());
    }
    cuda::convert_f64_to_f32(G.get(), in * in, Gb.get());
    flops += 2.0 * n * in * in;
    return Gb;
  }

  // The grid search of one group (search.cc's LayerState::search on device candidates).
  GroupResult search(const char* group, const std::vector<int>& ids, const char* folded_into, const Dev<float>& X,
                     int64_t in, const std::function<double(const std::vector<Dev<float>>&)>& eval,
                     std::vector<float>& best_s) {
    GroupResult res;
    res.group = group;
    res.linears = ids;
    res.loss_method = "direct";
    res.folded_into = folded_into;
    std::vector<float> x_mean(in), w_mean(in), s(in);
    cuda::abs_mean_columns_dev(X.get(), n, in, x_mean.data());
    res.salient = top_channels(x_mean, 8);
    std::vector<std::pair<const float*, int64_t>> lin;
    for (int id : ids) lin.emplace_back(W[id].get(), rows(id));
    const QuantParams p = opt.search_params(in);
    cuda::weight_mean(lin, in, p.group, w_mean.data());
    std::vector<Dev<float>> cand;
    for (int id : ids) cand.emplace_back(W[id].n, "scale-search candidate weights");
    Dev<float> s_dev(in, "scale candidate");
    std::vector<std::vector<float>> scales;
    for (int i = 0; i < opt.n_grid; ++i) {
      cancel.check();
      const float alpha = static_cast<float>(static_cast<double>(i) / opt.n_grid);
      scale_candidate(x_mean.data(), w_mean.data(), in, alpha, opt.duo_scaling, s.data());
      copy_to_device(s_dev.get(), s.data(), static_cast<size_t>(in) * sizeof(float));
      fill_zero(bad.get(), sizeof(int));
      for (size_t k = 0; k < ids.size(); ++k)
        cuda::scaled_fake_quant(W[ids[k]].get(), rows(ids[k]), in, s_dev.get(), p, cand[k].get(), bad.get());
      int overflow = 0;
      copy_to_host(&overflow, bad.get(), sizeof(int));
      const double loss = overflow ? std::numeric_limits<double>::infinity() : eval(cand);
      res.losses.push_back(loss);
      scales.push_back(s);
    }
    const int best = argmin_loss(res.losses);
    if (best < 0)
      throw Error(ErrorCode::NonFinite,
                  std::string("scale search of group ") + group + ": every candidate gave a non-finite loss");
    res.best_ratio = static_cast<double>(best) / opt.n_grid;
    res.loss_best = res.losses[best];
    res.loss_zero = res.losses[0];
    best_s = scales[best];
    return res;
  }

  // o / down: loss = mean((X dW^T)^2) through the Gram matrix or the direct products, the
  // cheaper by FLOPs (or as opt says), as on the CPU.
  GroupResult linear_group(const char* name, int id, const char* into, const Dev<float>& X, int64_t in,
                           std::vector<float>& best) {
    const int64_t out_rows = rows(id);
    const bool direct = opt.linear_loss == LinearLoss::Direct ||
                        (opt.linear_loss == LinearLoss::Auto && prefer_direct_loss(n, in, out_rows, opt.n_grid));
    Dev<float> G, T, dW(W[id].n, "weight difference");
    Dev<float> E;
    const int64_t C = std::max<int64_t>(1, std::min<int64_t>(n, (int64_t{1} << 24) / std::max<int64_t>(out_rows, 1)));
    if (!direct) {
      G = gram(X, in);
      T = Dev<float>(out_rows * in, "dW * G");
    } else {
      E = Dev<float>(C * out_rows, "output error block");
    }
    GroupResult res = search(name, {id}, into, X, in,
                             [&](const std::vector<Dev<float>>& c) {
                               cuda::subtract(c[0].get(), W[id].get(), W[id].n, dW.get());
                               if (direct) {
                                 for (int64_t t0 = 0; t0 < n; t0 += C) {
                                   cancel.check();
                                   const int64_t Tn = std::min(C, n - t0);
                                   cuda::linear(X.get() + t0 * in, Tn, in, dW.get(), out_rows, nullptr, E.get(), prec);
                                   cuda::sum_sq_diff_acc(E.get(), nullptr, Tn * out_rows, acc.get());
                                 }
                                 flops += 2.0 * n * in * out_rows;
                               } else {
                                 // G is symmetric: dW G = dW G^T, a linear of dW by G
                                 cuda::linear(dW.get(), out_rows, in, G.get(), in, nullptr, T.get(), prec);
                                 cuda::rowwise_dot_acc(T.get(), dW.get(), out_rows, in, acc.get());
                                 flops += 2.0 * out_rows * in * in;
                               }
                               return read_and_clear(acc.get()) / static_cast<double>(n * out_rows);
                             },
                             best);
    res.loss_method = direct ? "direct" : "gram";
    return res;
  }

  void concat(std::initializer_list<std::pair<const float*, int64_t>> parts, float* dst) {
    for (const auto& [src, len] : parts) {
      copy_d2d(dst, src, len);
      dst += len;
    }
  }
};

// Both forms of quantize_decoder_layer: hidden states on the host (`hidden`, output to
// out.output) or on the device (`dev`: input read there, output moved there at the end).
void quantize_layer(const LayerArch& a, const LayerWeights& w, const float* hidden, DeviceHidden* dev, int64_t tokens,
                    int64_t seqlen, const SearchOptions& opt, Precision precision, const LayerQuantOutputs& out,
                    LayerQuantReport& report, const CancelFlag& cancel,
                    const std::function<void(const char*)>& on_phase) {
  check_layer_quant_args(a, w, hidden, tokens, seqlen, opt, out, dev == nullptr);  // the CPU version's checks
  AWQ_CHECK_ARG(tokens % seqlen == 0, "quantize_decoder_layer: tokens must be whole blocks of seqlen");
  report = LayerQuantReport();
  DeviceLayer st(a, w, tokens, seqlen, opt, precision, cancel);
  const int64_t n = tokens, H = st.H, I = st.I, QO = st.QO, KV = st.KV, QKV = st.QKV;
  const bool search = opt.awq;

  // 1. the forward, recording what the search needs (RTN without tokens: none)
  auto t0 = Clock::now();
  Dev<float> y_dev;  // device form: the layer output, moved into *dev once everything succeeded
  if (n > 0) {
    if (on_phase) on_phase("forward");
    Dev<float> h_up = dev ? Dev<float>() : upload(hidden, n * H, "hidden states");
    const float* h = dev ? dev->data() : h_up.get();
    Dev<float> y(n * H, "layer output");
    LayerRecord rec;
    if (search) {
      st.x_attn = Dev<float>(n * H, "recorded q/k/v input");
      st.x_o = Dev<float>(n * QO, "recorded o_proj input");
      st.x_mlp = Dev<float>(n * H, "recorded gate/up input");
      st.x_down = Dev<float>(n * I, "recorded down_proj input");
      st.attn_out = Dev<float>(n * H, "recorded attention output");
      st.mlp_out = Dev<float>(n * H, "recorded MLP output");
      rec = LayerRecord{st.x_attn.get(), st.x_o.get(), st.x_mlp.get(), st.x_down.get(), st.attn_out.get(),
                        st.mlp_out.get()};
    }
    LayerWeights dw;
    Dev<float> in_norm = upload(w.input_norm, H, "input_layernorm"), post_norm = upload(w.post_norm, H, "post_attention_layernorm");
    dw.input_norm = in_norm.get();
    dw.post_norm = post_norm.get();
    dw.q = st.W[kQ].get();
    dw.k = st.W[kK].get();
    dw.v = st.W[kV].get();
    dw.o = st.W[kO].get();
    dw.gate = st.W[kGate].get();
    dw.up = st.W[kUp].get();
    dw.down = st.W[kDown].get();
    dw.q_bias = st.q_bias.empty() ? nullptr : st.q_bias.get();
    dw.k_bias = st.k_bias.empty() ? nullptr : st.k_bias.get();
    dw.v_bias = st.v_bias.empty() ? nullptr : st.v_bias.get();
    dw.o_bias = st.o_bias.empty() ? nullptr : st.o_bias.get();
    dw.q_norm = st.q_norm.empty() ? nullptr : st.q_norm.get();
    dw.k_norm = st.k_norm.empty() ? nullptr : st.k_norm.get();
    cuda::decoder_layer_forward(a, dw, h, n, seqlen, y.get(), search ? &rec : nullptr, precision, &st.flops);
    if (dev) y_dev = std::move(y);
    else copy_to_host(out.output, y.get(), static_cast<size_t>(n * H) * sizeof(float));
    report.ms_forward = ms_since(t0);
  }

  if (search) {
    // 2. scale search for every group on the original weights and inputs; then fold
    if (on_phase) on_phase("scale-search");
    t0 = Clock::now();
    const DeviceRope rope(a.inv_freq, a.head_dim / 2, seqlen);
    std::vector<float> s_qkv, s_o, s_gu, s_down;
    // scratch per token of the attention and MLP candidates' forwards (fp32 buffers, plus the
    // rounded copies of their inputs that reduced-precision products make)
    const int64_t per_token = 4 * std::max(QKV + QO + H, 3 * I + H) + 2 * std::max(H + QO, H + I);
    const int64_t C = st.chunk = gpu_chunk_tokens(seqlen, n, per_token);
    {
      Dev<float> w_qkv(QKV * H, "fused q|k|v candidate"), b_qkv;
      if (!st.q_bias.empty() || !st.k_bias.empty() || !st.v_bias.empty()) {
        b_qkv = Dev<float>(QKV, "fused q|k|v bias");
        fill_zero(b_qkv.get(), static_cast<size_t>(QKV) * sizeof(float));
        if (!st.q_bias.empty()) copy_d2d(b_qkv.get(), st.q_bias.get(), QO);
        if (!st.k_bias.empty()) copy_d2d(b_qkv.get() + QO, st.k_bias.get(), KV);
        if (!st.v_bias.empty()) copy_d2d(b_qkv.get() + QO + KV, st.v_bias.get(), KV);
      }
      Dev<float> qkv(C * QKV, "attention scratch (q|k|v)"), att(C * QO, "attention scratch"), y(C * H, "attention scratch (output)");
      report.groups.push_back(st.search(
          "qkv", {kQ, kK, kV}, "input_layernorm", st.x_attn, H,
          [&](const std::vector<Dev<float>>& c) {
            st.concat({{c[0].get(), QO * H}, {c[1].get(), KV * H}, {c[2].get(), KV * H}}, w_qkv.get());
            return st.attention_sq_error(w_qkv, b_qkv, rope, qkv, att, y) / static_cast<double>(n * H);
          },
          s_qkv));
    }
    if (KV == H && QO == H) {  // v_proj and o_proj of one shape, as AutoAWQ asks (search.cc)
      report.groups.push_back(st.linear_group("o", kO, "v_proj", st.x_o, QO, s_o));
    } else {
      GroupResult skip;
      skip.group = "o";
      skip.linears = {kO};
      skip.folded_into = "v_proj";
      skip.skipped = KV != QO ? "grouped-query attention" : "v_proj and o_proj differ in shape (heads x head_dim != hidden)";
      skip.best_ratio = skip.loss_best = skip.loss_zero = std::numeric_limits<double>::quiet_NaN();
      std::vector<float> xm(QO);
      cuda::abs_mean_columns_dev(st.x_o.get(), n, QO, xm.data());
      skip.salient = top_channels(xm, 8);
      report.groups.push_back(skip);
    }
    {
      Dev<float> w_gu(2 * I * H, "fused gate|up candidate");
      Dev<float> gu(C * 2 * I, "MLP scratch (gate|up)"), d(C * I, "MLP scratch"), y(C * H, "MLP scratch (output)");
      report.groups.push_back(st.search(
          "gate_up", {kGate, kUp}, "post_attention_layernorm", st.x_mlp, H,
          [&](const std::vector<Dev<float>>& c) {
            st.concat({{c[0].get(), I * H}, {c[1].get(), I * H}}, w_gu.get());
            return st.mlp_sq_error(w_gu, gu, d, y) / static_cast<double>(n * H);
          },
          s_gu));
    }
    report.groups.push_back(st.linear_group("down", kDown, "up_proj", st.x_down, I, s_down));
    st.attn_out = {};
    st.mlp_out = {};

    // fold, in AutoAWQ's order: qkv, o, gate_up, down (norms and v bias on the host, as the CPU)
    Dev<float> s_dev(std::max({H, I, QO}), "folding scales");
    auto put = [&](const std::vector<float>& s) {
      copy_to_device(s_dev.get(), s.data(), s.size() * sizeof(float));
      return s_dev.get();
    };
    for (int64_t j = 0; j < H; ++j) st.in_norm[j] /= s_qkv[j];
    put(s_qkv);
    for (int id : {kQ, kK, kV}) cuda::scale_columns(st.W[id].get(), st.rows(id), H, s_dev.get());
    cuda::divide_columns(st.x_attn.get(), n, H, s_dev.get());
    if (!s_o.empty()) {
      put(s_o);
      cuda::divide_rows(st.W[kV].get(), KV, H, s_dev.get());
      for (int64_t r = 0; r < KV && !st.v_bias_host.empty(); ++r) st.v_bias_host[r] /= s_o[r];
      cuda::scale_columns(st.W[kO].get(), H, QO, s_dev.get());
      cuda::divide_columns(st.x_o.get(), n, QO, s_dev.get());
    }
    for (int64_t j = 0; j < H; ++j) st.post_norm[j] /= s_gu[j];
    put(s_gu);
    for (int id : {kGate, kUp}) cuda::scale_columns(st.W[id].get(), I, H, s_dev.get());
    cuda::divide_columns(st.x_mlp.get(), n, H, s_dev.get());
    put(s_down);
    cuda::divide_rows(st.W[kUp].get(), I, H, s_dev.get());
    cuda::scale_columns(st.W[kDown].get(), H, I, s_dev.get());
    cuda::divide_columns(st.x_down.get(), n, I, s_dev.get());
    report.ms_scale = ms_since(t0);

    // 3. clip search (not q/k), then clamp
    if (opt.clip) {
      if (on_phase) on_phase("clip-search");
      t0 = Clock::now();
      const std::pair<int, const Dev<float>*> clip_inputs[] = {
          {kV, &st.x_attn}, {kO, &st.x_o}, {kGate, &st.x_mlp}, {kUp, &st.x_mlp}, {kDown, &st.x_down}};
      for (const auto& [id, X] : clip_inputs) {
        cancel.check();
        const int64_t in = st.cols(id);
        ClipResult c = cuda::clip_search(st.W[id].get(), st.rows(id), in, X->get(), n, opt.search_params(in),
                                         opt.n_grid, opt.max_shrink, &st.flops);
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
    if (out.folded[id]) copy_to_host(out.folded[id], st.W[id].get(), static_cast<size_t>(st.W[id].n) * sizeof(float));
    cuda::quantize_weights(st.W[id].get(), st.rows(id), in, opt.params(in), out.q[id], out.zeros[id], out.scales[id],
                     linear_name(id));
  }
  std::copy(st.in_norm.begin(), st.in_norm.end(), out.input_norm);
  std::copy(st.post_norm.begin(), st.post_norm.end(), out.post_norm);
  const float* biases[kNumLinears] = {w.q_bias, w.k_bias, st.v_bias_host.empty() ? nullptr : st.v_bias_host.data(),
                                      w.o_bias, nullptr, nullptr, nullptr};
  for (int id = 0; id < kNumLinears; ++id)
    if (out.bias[id]) std::copy(biases[id], biases[id] + st.rows(id), out.bias[id]);
  check_finite(out.input_norm, H, "input_layernorm.weight (after folding)");
  check_finite(out.post_norm, H, "post_attention_layernorm.weight (after folding)");
  report.ms_quant = ms_since(t0);
  report.flops = st.flops;
  if (dev && n > 0) dev->replace(std::move(y_dev.mem));
}

}  // namespace

DeviceHidden::DeviceHidden(const float* host, int64_t tokens, int64_t hidden) : tokens_(tokens), hidden_(hidden) {
  AWQ_CHECK_ARG(tokens >= 0 && hidden > 0, "cuda hidden states: tokens must be >= 0 and hidden positive");
  AWQ_CHECK_ARG(tokens == 0 || host, "cuda hidden states: no host data");
  const size_t bytes = static_cast<size_t>(tokens * hidden) * sizeof(float);
  mem_ = DeviceMemory(std::max<size_t>(bytes, sizeof(float)), "calibration hidden states");
  copy_to_device(mem_.get(), host, bytes);
}

void DeviceHidden::download(float* host) const {
  copy_to_host(host, mem_.get(), static_cast<size_t>(tokens_ * hidden_) * sizeof(float));
}

void DeviceHidden::replace(DeviceMemory&& m) {
  AWQ_CHECK_ARG(m.size() >= static_cast<size_t>(tokens_ * hidden_) * sizeof(float),
                "cuda hidden states: the replacement is smaller than the hidden states");
  mem_ = std::move(m);
}

void quantize_decoder_layer(const LayerArch& a, const LayerWeights& w, const float* hidden, int64_t tokens,
                            int64_t seqlen, const SearchOptions& opt, Precision precision,
                            const LayerQuantOutputs& out, LayerQuantReport& report, const CancelFlag& cancel,
                            const std::function<void(const char*)>& on_phase) {
  quantize_layer(a, w, hidden, nullptr, tokens, seqlen, opt, precision, out, report, cancel, on_phase);
}

void quantize_decoder_layer(const LayerArch& a, const LayerWeights& w, DeviceHidden& hidden, int64_t seqlen,
                            const SearchOptions& opt, Precision precision, const LayerQuantOutputs& out,
                            LayerQuantReport& report, const CancelFlag& cancel,
                            const std::function<void(const char*)>& on_phase) {
  AWQ_CHECK_ARG(hidden.hidden() == a.hidden, "quantize_decoder_layer: the device hidden states have width " +
                                                 std::to_string(hidden.hidden()) + ", the layer " +
                                                 std::to_string(a.hidden));
  quantize_layer(a, w, hidden.data(), &hidden, hidden.tokens(), seqlen, opt, precision, out, report, cancel, on_phase);
}

}  // namespace awq::cuda
