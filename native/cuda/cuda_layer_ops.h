// The device-side pieces of one decoder layer's AWQ search (REFERENCE.md sections 1-5), the CUDA
// twins of native/core/{gemm,forward,stats,quant,search}.h. Plain C++ (no CUDA headers): the
// layer driver (layer_quantize.cu), the tests and the benchmark include it without nvcc.
//
// Conventions: every pointer named in a comment as "device" lives in device memory; matrices are
// row-major with the CPU functions' shapes; everything runs on the default stream, in order, so
// a caller needs no synchronization between calls (functions returning host values synchronize).
// Errors: awq::Error InvalidArgument (shapes), OutOfMemory (naming what did not fit), Cuda.
#pragma once
#include <cstdint>
#include <vector>

#include "../core/forward.h"
#include "../core/gemm.h"
#include "../core/quant.h"
#include "../core/search.h"

namespace awq::cuda {

// Arithmetic of the search's matrix products (awq::Precision, gemm.h). F32: SIMT fp32 FMA (the CPU
// path's arithmetic up to summation order). BF16 / F16: operands rounded to bf16 / fp16,
// tensor-core products, fp32 accumulation (faster; changes losses by ~2^-8 / 2^-11 relative, so
// close candidates may swap).
using awq::Precision;
using awq::precision_name;

// ---- dense products (sgemm_f32.cu) ----

// C = alpha * op(A) * op(B) + beta * C, fp32, the semantics of awq::sgemm (gemm.h); all device.
void sgemm(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
           const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

// y[M, out] = x[M, in] * W[out, in]^T (+ bias[out]); all device. With BF16 / F16, x and W are
// rounded into scratch owned by the library (grow-only, reused across calls) and multiplied on
// tensor cores (dense_gemm, fp32 output); bias is added in fp32.
void linear(const float* x, int64_t M, int64_t in, const float* W, int64_t out, const float* bias, float* y,
            Precision p = Precision::F32);

// ---- layer forward (forward_ops.cu) ----

// y[r] = w * x[r] / sqrt(mean(x[r]^2) + eps); all device.
void rms_norm(const float* x, int64_t rows, int64_t cols, const float* w, float eps, float* y);

// d[r, :] = silu(gu[r, 0:I]) * gu[r, I:2I]; gu [rows, 2I] (gate | up), d [rows, I]; device.
void silu_mul(const float* gu, int64_t rows, int64_t I, float* d);

// RoPE table on the device: cos/sin [seqlen, head_dim/2] computed as awq::RopeTable does.
struct DeviceRope {
  int64_t seqlen = 0, half = 0;
  std::vector<float> host_cos, host_sin;  // kept for tests
  float *cos = nullptr, *sin = nullptr;   // device
  DeviceRope(const float* inv_freq_host, int64_t half, int64_t seqlen);
  ~DeviceRope();
  DeviceRope(const DeviceRope&) = delete;
  DeviceRope& operator=(const DeviceRope&) = delete;
};

// awq::attention_core on the device: qkv [T, qkv_out] (q | k | v) of whole blocks of `seqlen`
// tokens; q/k RMSNorm (q_norm, k_norm device [head_dim] or null) and RoPE in place, then causal
// GQA attention (fp32, softmax with max subtraction) into attn [T, heads * head_dim]. a.inv_freq is
// not read (the rope table carries it). Returns the FLOPs of the two attention products.
double attention_core(const LayerArch& a, float* qkv, int64_t T, int64_t seqlen, const DeviceRope& rope,
                      const float* q_norm, const float* k_norm, float* attn);

// acc[0] += sum_i (a[i] - b[i])^2: fp32 per block, fp64 accumulation (acc is one device double).
// b may be null: the sum of a[i]^2.
void sum_sq_diff_acc(const float* a, const float* b, int64_t n, double* acc);

// awq::decoder_layer_forward with every pointer (weights, hidden, out, record) on the device and
// the linears in precision p; scratch is allocated for chunks of whole blocks. Adds the FLOPs to
// *flops when given.
void decoder_layer_forward(const LayerArch& a, const LayerWeights& w, const float* hidden, int64_t tokens,
                           int64_t seqlen, float* out, const LayerRecord* rec, Precision p,
                           double* flops = nullptr);

// ---- statistics, quantization, scaling (quant_ops.cu) ----

// awq::abs_mean_columns for X [rows, cols] on the device; out is HOST [cols]. NonFinite when X
// holds NaN/Inf.
void abs_mean_columns_dev(const float* X, int64_t rows, int64_t cols, float* out_host);

// awq::weight_mean over device matrices (each [rows_i, in]); w_mean is HOST [in].
void weight_mean(const std::vector<std::pair<const float*, int64_t>>& linears, int64_t in, int64_t group,
                 float* w_mean_host);

// awq::scaled_fake_quant on the device: dst = Q(W * s) / s (s device [in]); quantize_rows'
// arithmetic exactly (round half to even, fp16 scale rounding when p.fp16_scale). Sets *bad_dev
// (device int) to 1 when a scale overflowed fp16; never clears it.
void scaled_fake_quant(const float* W, int64_t rows, int64_t in, const float* s, const QuantParams& p, float* dst,
                       int* bad_dev);

// W[r, j] *= s[j] (scale_columns) / X[r, j] /= s[j] (divide_columns) / W[r, :] /= s[r]
// (divide_rows); s device.
void scale_columns(float* W, int64_t rows, int64_t cols, const float* s);
void divide_columns(float* X, int64_t rows, int64_t cols, const float* s);
void divide_rows(float* W, int64_t rows, int64_t cols, const float* s);

// d[i] = a[i] - b[i] (device); dst[i] += (double)src[i] (device fp64 accumulation); dst[i] = (float)src[i].
void subtract(const float* a, const float* b, int64_t n, float* d);
void accumulate_f64(const float* src, int64_t n, double* dst);
void convert_f64_to_f32(const double* src, int64_t n, float* dst);

// acc[0] += sum_r sum_j T[r, j] * dW[r, j] with a fp32 sum per row and fp64 across rows
// (gram_quadratic's reduction); device.
void rowwise_dot_acc(const float* T, const float* dW, int64_t rows, int64_t cols, double* acc);

// awq::quantize_weights on the device: q / zeros / scales are HOST outputs ([rows*cols],
// [rows*cols/group], [rows*cols/group]). Throws NonFinite naming `name` for NaN/Inf weights or an
// fp16 scale overflow.
void quantize_weights(const float* W, int64_t rows, int64_t cols, const QuantParams& p, uint8_t* q_host,
                      uint8_t* zeros_host, float* scales_host, const char* name);

// ---- clip search (clip_search.cu) ----

// awq::clip_search on the device: W [out, in] and X [n, in] device; clamps W in place with the
// chosen shrink per (row, group); the same token subsampling (every max(1, n / 512)-th token),
// steps, error sums (fp32 products, fp64 sums) and argmin rule (first minimum) as the CPU. Adds
// the FLOPs to *flops when given.
ClipResult clip_search(float* W, int64_t out, int64_t in, const float* X, int64_t n, const QuantParams& p,
                       int n_grid, float max_shrink, double* flops = nullptr);

}  // namespace awq::cuda
