// Decoder-layer forward of the Llama family (Llama, Mistral, Qwen2, Qwen3) in fp32, as
// Hugging Face's eager implementation computes it:
//   h   = x + o_proj(attn(rope(q_proj(n1)), rope(k_proj(n1)), v_proj(n1))),  n1 = rms_norm(x)
//   out = h + down(silu(gate(n2)) * up(n2)),                                   n2 = rms_norm(h)
// Attention is grouped-query and causal over independent blocks of `seqlen` tokens (positions
// 0..seqlen-1 in every block), softmax in fp32 with max subtraction, scale 1/sqrt(head_dim).
// RoPE follows rotate_half; inv_freq comes from the caller, so scaled variants (llama3, linear)
// are the caller's business. Qwen3's q/k RMSNorm (per head, over head_dim) comes before RoPE.
#pragma once
#include <cstdint>
#include <vector>

#include "cancel.h"
#include "gemm.h"

namespace awq {

struct LayerArch {
  int64_t hidden = 0, intermediate = 0, heads = 0, kv_heads = 0, head_dim = 0;
  float eps = 1e-6f;
  const float* inv_freq = nullptr;  // [head_dim / 2]
  bool qk_norm = false;
  int64_t q_out() const { return heads * head_dim; }
  int64_t kv_out() const { return kv_heads * head_dim; }
  int64_t qkv_out() const { return q_out() + 2 * kv_out(); }
};

// fp32, row-major, Hugging Face shapes ([out, in] for linears). Biases and q/k norms optional.
struct LayerWeights {
  const float *input_norm = nullptr, *post_norm = nullptr;
  const float *q = nullptr, *k = nullptr, *v = nullptr, *o = nullptr;
  const float *gate = nullptr, *up = nullptr, *down = nullptr;
  const float *q_bias = nullptr, *k_bias = nullptr, *v_bias = nullptr, *o_bias = nullptr;
  const float *q_norm = nullptr, *k_norm = nullptr;  // [head_dim]
};

// What the forward records: the input of every linear and the two module outputs the scale
// search compares against. Any pointer may be null (not recorded).
struct LayerRecord {
  float* x_attn = nullptr;    // [T, hidden]   input_layernorm output: q/k/v input
  float* x_o = nullptr;       // [T, heads*hd] o_proj input
  float* x_mlp = nullptr;     // [T, hidden]   post_attention_layernorm output: gate/up input
  float* x_down = nullptr;    // [T, inter]    down_proj input
  float* attn_out = nullptr;  // [T, hidden]   attention block output (o_proj incl. bias)
  float* mlp_out = nullptr;   // [T, hidden]   MLP output
};

// Throws InvalidArgument for inconsistent shapes / missing tensors, NonFinite naming the tensor.
void validate_layer(const LayerArch& a, const LayerWeights& w);
void check_finite(const float* x, int64_t n, const char* name, int64_t cols = 0);

// cos/sin [seqlen, head_dim/2] of angle = float(pos) * inv_freq (fp32 product, as HF).
struct RopeTable {
  int64_t seqlen = 0, half = 0;
  std::vector<float> cos, sin;
  RopeTable(const float* inv_freq, int64_t half, int64_t seqlen);
};

// y[r] = w * x[r] / sqrt(mean(x[r]^2) + eps), in parallel over rows.
void rms_norm(const float* x, int64_t rows, int64_t cols, const float* w, float eps, float* y);

// The attention core on a fused projection buffer qkv [T, qkv_out] (q | k | v columns) of whole
// blocks: q/k RMSNorm (when given) and RoPE in place, then causal GQA attention into
// attn [T, heads*head_dim]. Returns the FLOPs of the two attention products. `cancel` is polled
// per 64-query tile (a long sequence's attention is the one unit of work that grows as seqlen^2).
double attention_core(const LayerArch& a, float* qkv, int64_t T, int64_t seqlen, const RopeTable& rope,
                      const float* q_norm, const float* k_norm, float* attn, const CancelFlag& cancel = CancelFlag());

// Concatenates rows of several [r_i, cols] matrices (and optional biases: null -> zeros).
void concat_rows(std::initializer_list<std::pair<const float*, int64_t>> parts, int64_t cols, float* dst);

// Full decoder-layer forward over `tokens` = blocks * seqlen rows of `hidden`, in chunks of
// whole blocks so scratch memory stays bounded. Polls `cancel` between chunks. Adds the FLOPs
// done to *flops when given. `p`: arithmetic of the four linear products (gemm.h); attention and
// norms stay fp32.
void decoder_layer_forward(const LayerArch& a, const LayerWeights& w, const float* hidden,
                           int64_t tokens, int64_t seqlen, float* out, const LayerRecord* rec,
                           const CancelFlag& cancel, double* flops = nullptr, Precision p = Precision::F32);

// Tokens per chunk for a forward: whole blocks, about `target` tokens.
inline int64_t chunk_tokens(int64_t seqlen, int64_t tokens, int64_t target = 2048) {
  int64_t blocks = target / seqlen;
  if (blocks < 1) blocks = 1;
  const int64_t c = blocks * seqlen;
  return c < tokens ? c : tokens;
}

// Sum over windows of the next-token negative log-likelihood at positions 1..seqlen-1:
// logits = rms_norm(hidden, final_norm) * lm_head^T, log-softmax with max subtraction
// (sum of exp in fp64). tokens[i] must be in [0, vocab).
struct NllResult {
  double nll_sum = 0.0;
  int64_t count = 0;
};
NllResult lm_head_nll(const float* hidden, int64_t tokens, int64_t hidden_size, int64_t seqlen,
                      const float* final_norm, float eps, const float* lm_head, int64_t vocab,
                      const int32_t* ids, const CancelFlag& cancel);
// The same with lm_head stored as fp16 / bf16 (a checkpoint's, without an fp32 copy): bitwise the
// result on its widening.
NllResult lm_head_nll(const float* hidden, int64_t tokens, int64_t hidden_size, int64_t seqlen,
                      const float* final_norm, float eps, const uint16_t* lm_head, HalfFormat format,
                      int64_t vocab, const int32_t* ids, const CancelFlag& cancel);

}  // namespace awq
