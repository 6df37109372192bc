// The AWQ search and quantization of one decoder layer (REFERENCE.md sections 3-5):
// forward with recording -> scale search per group -> fold -> clip search -> integer quantization.
//
// Semantics-preserving shortcuts: the groups whose compared module is a single linear (o_proj,
// down_proj) evaluate loss(alpha) = trace(dW G dW^T) / (n * out) with one Gram matrix
// G = X^T X (accumulated in fp64) instead of twenty forwards when that costs fewer FLOPs (many
// tokens; with few tokens and a wide input the direct products X dW^T are cheaper, and both are
// exact up to fp32 rounding); the attention / MLP candidates run
// real forwards (fused q|k|v and gate|up products, causal attention computing only the lower
// triangle); the clip search is a batched product per (group, shrink) step.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "cancel.h"
#include "forward.h"
#include "quant.h"

namespace awq {

enum LinearId { kQ = 0, kK, kV, kO, kGate, kUp, kDown, kNumLinears };
const char* linear_name(int id);

// How the loss of a single-linear group (o, down) is evaluated. Both give the same loss up to
// fp32 rounding; Auto picks the one with fewer FLOPs (prefer_direct_loss).
enum class LinearLoss { Auto, Gram, Direct };

struct SearchOptions {
  int bits = 4;
  int64_t group_size = 128;  // -1: one group per row
  bool zero_point = true;
  bool duo_scaling = true;
  bool clip = true;
  bool awq = true;  // false: RTN (no scaling, no clipping)
  int n_grid = 20;
  float max_shrink = 0.5f;
  // Whether the search's candidate pseudo-quantizations (scale and clip search) round s to fp16.
  // The final quantization always does (the checkpoint stores fp16). Default false: the search
  // then picks the same ratios as the reference run of REFERENCE.md section 8 (layer 3 of
  // llama-22m flips 0.40 -> 0.45 with rounding; measured 128.26 vs 128.10 perplexity).
  bool fp16_search_scales = false;
  LinearLoss linear_loss = LinearLoss::Auto;
  QuantParams params(int64_t in) const { return QuantParams{bits, group_size < 0 ? in : group_size, zero_point}; }
  QuantParams search_params(int64_t in) const {
    QuantParams p = params(in);
    p.fp16_scale = fp16_search_scales;
    return p;
  }
};

struct GroupResult {
  std::string group, folded_into, skipped;
  std::vector<int> linears;
  // "gram" (trace(dW G dW^T) with G = X^T X) or "direct" (the compared module run on X for every
  // candidate); empty when the group was skipped.
  std::string loss_method;
  double best_ratio = 0, loss_best = 0, loss_zero = 0;
  std::vector<double> losses;
  std::vector<std::pair<int64_t, float>> salient;  // (channel, x_mean), top 8
};

struct ClipResult {
  int linear = 0;
  double mean_shrink = 0;
  std::vector<int64_t> histogram;  // (row, group) count per shrink step
};

struct LayerQuantReport {
  std::vector<GroupResult> groups;
  std::vector<ClipResult> clips;
  double ms_forward = 0, ms_scale = 0, ms_clip = 0, ms_quant = 0;
  double flops = 0;  // forward FLOPs (initial forward + search candidates + Gram products)
};

// Caller-allocated outputs. bias[i] must be non-null exactly when linear i has a bias.
struct LayerQuantOutputs {
  uint8_t* q[kNumLinears] = {};
  uint8_t* zeros[kNumLinears] = {};
  float* scales[kNumLinears] = {};
  float* bias[kNumLinears] = {};
  float* input_norm = nullptr;
  float* post_norm = nullptr;
  float* output = nullptr;  // [tokens, hidden]: the full-precision forward output (unused when tokens == 0)
  // Optional: the fp32 weights after folding and clipping, before quantization ([out, in]).
  float* folded[kNumLinears] = {};
};

// tokens == 0 (hidden may be null) is accepted for RTN (opt.awq == false) only: no forward runs
// and the weights are quantized as they are.
// `precision` (gemm.h): arithmetic of every linear product of the layer (the recorded forward, the
// candidates' forwards, the Gram matrices and their quadratic forms), as on CUDA; attention, norms,
// the quantization and the clip search stay fp32. F32 or BF16.
// Throws InvalidArgument (options / shapes), NonFinite (naming the tensor), Aborted.
void quantize_decoder_layer(const LayerArch& a, const LayerWeights& w, const float* hidden, int64_t tokens,
                            int64_t seqlen, const SearchOptions& opt, Precision precision, const LayerQuantOutputs& out,
                            LayerQuantReport& report, const CancelFlag& cancel,
                            const std::function<void(const char*)>& on_phase = {});

// --- pieces, exposed for tests and the CUDA driver ---

// quantize_decoder_layer's argument checks (InvalidArgument / NonFinite naming what is wrong).
// host_output = false: the caller keeps the layer output elsewhere (the CUDA driver's device-resident
// hidden states), so out.output may be null.
void check_layer_quant_args(const LayerArch& a, const LayerWeights& w, const float* hidden, int64_t tokens,
                            int64_t seqlen, const SearchOptions& opt, const LayerQuantOutputs& out,
                            bool host_output = true);

// The k channels with the largest statistic (ties: lower index first), with their statistic.
std::vector<std::pair<int64_t, float>> top_channels(const std::vector<float>& x_mean, size_t k);
// Index of the lowest loss: strictly lower wins, so the first minimum is kept, as AutoAWQ does
// (-1 when none is finite).
int argmin_loss(const std::vector<double>& losses);

// The scale candidate of REFERENCE.md section 4 for ratio alpha (fp32, as torch computes it).
void scale_candidate(const float* x_mean, const float* w_mean, int64_t in, float alpha, bool duo, float* s);
// w_mean over the concatenation of linears (each row's groups normalized by their max |w|).
void weight_mean(const std::vector<std::pair<const float*, int64_t>>& linears, int64_t in, int64_t group, float* w_mean);
// W' = Q(W * s) / s, rows [0, rows), written to dst (may not alias W).
bool scaled_fake_quant(const float* W, int64_t rows, int64_t in, const float* s, const QuantParams& p, float* dst);
// The products below run in precision p (gemm.h); their sums stay fp32 within a row, fp64 across.
// G = X^T X for X [n, in], products over token blocks summed in fp64.
void gram(const float* X, int64_t n, int64_t in, std::vector<double>& G, Precision p = Precision::F32);
// sum over rows r of dW_r G dW_r^T (fp64 sum), dW [out, in], Gf = G as fp32.
double gram_quadratic(const float* dW, int64_t out, int64_t in, const float* Gf, Precision p = Precision::F32);
// sum over tokens t and rows r of (X dW^T)[t, r]^2 (fp64 sum): the squared output error of a
// linear whose weights moved by dW [out, in], on X [n, in], computed in token chunks (polls cancel).
double direct_sq_error(const float* X, int64_t n, int64_t in, const float* dW, int64_t out,
                       const CancelFlag& cancel = CancelFlag(), Precision p = Precision::F32);
// FLOPs of the two ways to evaluate n_grid candidates of a single linear [out, in] on n tokens:
// Gram matrix (2 n in^2) plus n_grid quadratic forms (2 out in^2 each), or n_grid direct
// products (2 n in out each).
double gram_loss_flops(int64_t n, int64_t in, int64_t out, int n_grid);
double direct_loss_flops(int64_t n, int64_t in, int64_t out, int n_grid);
// Whether the direct products cost fewer FLOPs than the Gram route (ties: Gram).
bool prefer_direct_loss(int64_t n, int64_t in, int64_t out, int n_grid);
// Clip search for one linear (section 5): clamps W in place; returns the report.
ClipResult clip_search(float* W, int64_t out, int64_t in, const float* X, int64_t n, const QuantParams& p,
                       int n_grid, float max_shrink, const CancelFlag& cancel, double* flops = nullptr);

}  // namespace awq
