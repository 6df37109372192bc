// Device twins of the CPU search's statistics, quantization and scaling (cuda_layer_ops.h,
// "statistics, quantization, scaling"); abs_mean_columns_dev lives in stats.cu with the
// host-memory version it shares its kernels with.
//
// Bitwise contracts (tested against the CPU in native/tests/test_cuda_quant.cc):
//   scaled_fake_quant, quantize_weights, scale_columns, divide_columns, divide_rows, subtract,
//   accumulate_f64, convert_f64_to_f32: the same fp32 operations in the same order as the CPU
//   (quant_math.h), so identical bits.
// Same arithmetic, different summation order (tolerance-tested):
//   weight_mean (fp32 terms summed in fp64: the order across rows differs),
//   rowwise_dot_acc (fp32 row sums in a tree instead of left to right; fp64 across rows).
// Reductions are deterministic: the same inputs give the same bits on every run.
#include <cuda_runtime.h>

#include <cmath>
#include <string>
#include <vector>

#include "cuda_layer_ops.h"
#include "quant_common.cuh"

namespace awq::cuda {
namespace {

constexpr int kThreads = 256;

// ---- quantization: one warp per (row, group) ----

// dst = Q(W * s) / s. Warp item u = r * groups + j.
__global__ void scaled_fake_quant_kernel(const float* __restrict__ W, int64_t rows, int64_t in,
                                         const float* __restrict__ s, int64_t g, int bits, bool zero_point,
                                         bool fp16_scale, float* __restrict__ dst, int* __restrict__ bad) {
  const int64_t groups = in / g;
  const int64_t u = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  if (u >= rows * groups) return;  // whole warps leave together
  const int lane = threadIdx.x & 31;
  const int64_t r = u / groups, j = u % groups;
  const float* w = W + r * in + j * g;
  const float* sg = s + j * g;
  // the scaled weight, recomputed identically wherever it is needed
  auto scaled = [&](int64_t k) { return qm::f_mul(w[k], sg[k]); };
  const qm::GroupQuant q = warp_group_quant(scaled, g, bits, zero_point, fp16_scale);
  if (lane == 0 && !qm::f_isfinite(q.s)) atomicOr(bad, 1);
  float* d = dst + r * in + j * g;
  for (int64_t k = lane; k < g; k += 32) {
    const float dq = qm::dequant(qm::quant_level(scaled(k), q), q);
    d[k] = qm::f_div(dq, sg[k]);
  }
}

// q / zeros / scales of quantize_rows (any output may be null). Warp item u = r * groups + j.
__global__ void quantize_kernel(const float* __restrict__ W, int64_t rows, int64_t cols, int64_t g, int bits,
                                bool zero_point, bool fp16_scale, uint8_t* __restrict__ q,
                                uint8_t* __restrict__ zeros, float* __restrict__ scales, int* __restrict__ bad) {
  const int64_t groups = cols / g;
  const int64_t u = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  if (u >= rows * groups) return;
  const int lane = threadIdx.x & 31;
  const int64_t r = u / groups, j = u % groups;
  const float* w = W + r * cols + j * g;
  auto value = [&](int64_t k) { return w[k]; };
  const qm::GroupQuant gq = warp_group_quant(value, g, bits, zero_point, fp16_scale);
  if (lane == 0) {
    if (!qm::f_isfinite(gq.s)) atomicOr(bad, 1);
    if (scales) scales[u] = gq.s;
    if (zeros) zeros[u] = static_cast<uint8_t>(gq.z);
  }
  if (q) {
    uint8_t* qr = q + r * cols + j * g;
    for (int64_t k = lane; k < g; k += 32) qr[k] = static_cast<uint8_t>(qm::quant_level(w[k], gq));
  }
}

// *first = min(*first, index of the first NaN / Inf in x[0, n)).
__global__ void first_non_finite_kernel(const float* __restrict__ x, int64_t n, unsigned long long* first) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    if (!qm::f_isfinite(x[i])) {
      atomicMin(first, static_cast<unsigned long long>(i));
      return;  // this thread's later indices are larger
    }
  }
}

// ---- weight_mean ----

// m[r * groups + j] = max_k |W[r, j*g + k]| + 1e-6f (std::max from 0, so NaN is skipped).
__global__ void group_absmax_kernel(const float* __restrict__ W, int64_t rows, int64_t in, int64_t g,
                                    float* __restrict__ m) {
  const int64_t groups = in / g;
  const int64_t u = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  if (u >= rows * groups) return;
  const int lane = threadIdx.x & 31;
  const float* w = W + (u / groups) * in + (u % groups) * g;
  float a = 0.f;
  for (int64_t k = lane; k < g; k += 32) a = qm::qmax(a, qm::f_abs(w[k]));
  a = warp_max(a);
  if (lane == 0) m[u] = qm::f_add(a, 1e-6f);
}

// partial[y * in + c] = sum over rows r in chunk y of double(|W[r, c]| / m[r, c / g]).
__global__ void weight_mean_partial_kernel(const float* __restrict__ W, int64_t rows, int64_t in, int64_t g,
                                           const float* __restrict__ m, int64_t chunk_rows,
                                           double* __restrict__ partial) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= in) return;
  const int64_t groups = in / g, j = c / g;
  const int64_t r0 = static_cast<int64_t>(blockIdx.y) * chunk_rows;
  const int64_t r1 = min(rows, r0 + chunk_rows);
  double acc = 0.0;
  for (int64_t r = r0; r < r1; ++r) acc += static_cast<double>(qm::f_div(qm::f_abs(W[r * in + c]), m[r * groups + j]));
  partial[static_cast<int64_t>(blockIdx.y) * in + c] = acc;
}

// ---- elementwise ----

__global__ void scale_columns_kernel(float* __restrict__ W, int64_t rows, int64_t cols, const float* __restrict__ s) {
  const int64_t n = rows * cols, stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    W[i] = qm::f_mul(W[i], s[i % cols]);
}

__global__ void divide_columns_kernel(float* __restrict__ X, int64_t rows, int64_t cols, const float* __restrict__ s) {
  const int64_t n = rows * cols, stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    X[i] = qm::f_div(X[i], s[i % cols]);
}

__global__ void divide_rows_kernel(float* __restrict__ W, int64_t rows, int64_t cols, const float* __restrict__ s) {
  const int64_t n = rows * cols, stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    W[i] = qm::f_div(W[i], s[i / cols]);
}

__global__ void subtract_kernel(const float* __restrict__ a, const float* __restrict__ b, int64_t n,
                                float* __restrict__ d) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    d[i] = qm::f_sub(a[i], b[i]);
}

__global__ void accumulate_f64_kernel(const float* __restrict__ src, int64_t n, double* __restrict__ dst) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    dst[i] = __dadd_rn(dst[i], static_cast<double>(src[i]));
}

__global__ void convert_f64_to_f32_kernel(const double* __restrict__ src, int64_t n, float* __restrict__ dst) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    dst[i] = static_cast<float>(src[i]);
}

// ---- rowwise_dot_acc ----

// rowsum[r] = sum_j T[r, j] * dW[r, j] in fp32 (products rounded, then summed): one warp per row.
__global__ void row_dot_kernel(const float* __restrict__ T, const float* __restrict__ dW, int64_t rows, int64_t cols,
                               float* __restrict__ rowsum) {
  const int64_t r = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  if (r >= rows) return;
  const int lane = threadIdx.x & 31;
  const float* t = T + r * cols;
  const float* d = dW + r * cols;
  float acc = 0.f;
  for (int64_t j = lane; j < cols; j += 32) acc = __fadd_rn(acc, __fmul_rn(t[j], d[j]));
  acc = warp_sum(acc);
  if (lane == 0) rowsum[r] = acc;
}

// acc[0] += sum_r double(rowsum[r]): one block, fixed order (strided partials, then a tree).
constexpr int kSumThreads = 1024;
__global__ void sum_rows_f64_kernel(const float* __restrict__ rowsum, int64_t rows, double* __restrict__ acc) {
  __shared__ double part[kSumThreads];
  double a = 0.0;
  for (int64_t r = threadIdx.x; r < rows; r += kSumThreads) a += static_cast<double>(rowsum[r]);
  part[threadIdx.x] = a;
  __syncthreads();
  for (int h = kSumThreads / 2; h > 0; h >>= 1) {
    if (static_cast<int>(threadIdx.x) < h) part[threadIdx.x] += part[threadIdx.x + h];
    __syncthreads();
  }
  if (threadIdx.x == 0) acc[0] += part[0];
}

void check_device_ptr(const void* p, const char* what) {
  AWQ_CHECK_ARG(p != nullptr, std::string(what) + ": null device pointer");
}

// Throws NonFinite naming `name` and the first NaN / Inf element of x (device, [rows, cols]).
void check_finite_device(const float* x, int64_t rows, int64_t cols, const std::string& name) {
  const int64_t n = rows * cols;
  Scratch first(sizeof(unsigned long long), "the NaN/Inf scan");
  const unsigned long long none = ~0ull;
  AWQ_CUDA_CHECK(cudaMemcpy(first.as<void>(), &none, sizeof none, cudaMemcpyHostToDevice));
  first_non_finite_kernel<<<grid_for(n, kThreads), kThreads>>>(x, n, first.as<unsigned long long>());
  AWQ_CUDA_LAUNCH_CHECK();
  unsigned long long idx = none;
  AWQ_CUDA_CHECK(cudaMemcpy(&idx, first.as<void>(), sizeof idx, cudaMemcpyDeviceToHost));
  if (idx == none) return;
  float v = 0.f;
  AWQ_CUDA_CHECK(cudaMemcpy(&v, x + idx, sizeof v, cudaMemcpyDeviceToHost));
  const int64_t i = static_cast<int64_t>(idx);
  throw Error(ErrorCode::NonFinite, name + ": value at row " + std::to_string(i / cols) + ", column " +
                                        std::to_string(i % cols) + " is " + (std::isnan(v) ? "NaN" : "Inf"));
}

}  // namespace

void weight_mean(const std::vector<std::pair<const float*, int64_t>>& linears, int64_t in, int64_t group,
                 float* w_mean_host) {
  AWQ_CHECK_ARG(in > 0 && group > 0 && in % group == 0,
                "weight_mean: group " + std::to_string(group) + " must divide in " + std::to_string(in));
  AWQ_CHECK_ARG(!linears.empty(), "weight_mean: no linears");
  int64_t total_rows = 0, max_rows = 0;
  for (const auto& [W, rows] : linears) {
    AWQ_CHECK_ARG(rows > 0, "weight_mean: empty linear");
    check_device_ptr(W, "weight_mean");
    total_rows += rows;
    max_rows = std::max(max_rows, rows);
  }
  const int64_t groups = in / group;
  const int64_t col_blocks = (in + kThreads - 1) / kThreads;
  // chunks of rows per column: enough blocks to fill the GPU, partials stay small
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(max_rows, 2048 / col_blocks));
  Scratch sum(in * sizeof(double), "weight_mean sums"), m(max_rows * groups * sizeof(float), "weight_mean group maxima"),
      partial(chunks * in * sizeof(double), "weight_mean partial sums");
  AWQ_CUDA_CHECK(cudaMemsetAsync(sum.as<void>(), 0, in * sizeof(double), 0));
  for (const auto& [W, rows] : linears) {
    group_absmax_kernel<<<grid_for_warps(rows * groups, kThreads), kThreads>>>(W, rows, in, group, m.as<float>());
    AWQ_CUDA_LAUNCH_CHECK();
    const int64_t used = std::min(chunks, rows), chunk_rows = (rows + used - 1) / used;
    const int64_t used_chunks = (rows + chunk_rows - 1) / chunk_rows;
    weight_mean_partial_kernel<<<dim3(static_cast<unsigned>(col_blocks), static_cast<unsigned>(used_chunks)), kThreads>>>(
        W, rows, in, group, m.as<float>(), chunk_rows, partial.as<double>());
    AWQ_CUDA_LAUNCH_CHECK();
    add_partials_kernel<double><<<static_cast<unsigned>(col_blocks), kThreads>>>(partial.as<double>(), used_chunks,
                                                                                 in, sum.as<double>());
    AWQ_CUDA_LAUNCH_CHECK();
  }
  std::vector<double> host(in);
  AWQ_CUDA_CHECK(cudaMemcpy(host.data(), sum.as<void>(), in * sizeof(double), cudaMemcpyDeviceToHost));
  for (int64_t j = 0; j < in; ++j) w_mean_host[j] = static_cast<float>(host[j] / static_cast<double>(total_rows));
}

void scaled_fake_quant(const float* W, int64_t rows, int64_t in, const float* s, const QuantParams& p, float* dst,
                       int* bad_dev) {
  check_quant_params(p, in);
  AWQ_CHECK_ARG(rows >= 0, "scaled_fake_quant: negative rows");
  if (rows == 0) return;
  check_device_ptr(W, "scaled_fake_quant W");
  check_device_ptr(s, "scaled_fake_quant s");
  check_device_ptr(dst, "scaled_fake_quant dst");
  check_device_ptr(bad_dev, "scaled_fake_quant bad");
  AWQ_CHECK_ARG(dst != W, "scaled_fake_quant: dst may not alias W");
  const int64_t groups = in / p.group;
  scaled_fake_quant_kernel<<<grid_for_warps(rows * groups, kThreads), kThreads>>>(
      W, rows, in, s, p.group, p.bits, p.zero_point, p.fp16_scale, dst, bad_dev);
  AWQ_CUDA_LAUNCH_CHECK();
}

void scale_columns(float* W, int64_t rows, int64_t cols, const float* s) {
  AWQ_CHECK_ARG(rows >= 0 && cols > 0, "scale_columns: bad shape");
  if (rows == 0) return;
  scale_columns_kernel<<<grid_for(rows * cols, kThreads), kThreads>>>(W, rows, cols, s);
  AWQ_CUDA_LAUNCH_CHECK();
}

void divide_columns(float* X, int64_t rows, int64_t cols, const float* s) {
  AWQ_CHECK_ARG(rows >= 0 && cols > 0, "divide_columns: bad shape");
  if (rows == 0) return;
  divide_columns_kernel<<<grid_for(rows * cols, kThreads), kThreads>>>(X, rows, cols, s);
  AWQ_CUDA_LAUNCH_CHECK();
}

void divide_rows(float* W, int64_t rows, int64_t cols, const float* s) {
  AWQ_CHECK_ARG(rows >= 0 && cols > 0, "divide_rows: bad shape");
  if (rows == 0) return;
  divide_rows_kernel<<<grid_for(rows * cols, kThreads), kThreads>>>(W, rows, cols, s);
  AWQ_CUDA_LAUNCH_CHECK();
}

void subtract(const float* a, const float* b, int64_t n, float* d) {
  AWQ_CHECK_ARG(n >= 0, "subtract: negative size");
  if (n == 0) return;
  subtract_kernel<<<grid_for(n, kThreads), kThreads>>>(a, b, n, d);
  AWQ_CUDA_LAUNCH_CHECK();
}

void accumulate_f64(const float* src, int64_t n, double* dst) {
  AWQ_CHECK_ARG(n >= 0, "accumulate_f64: negative size");
  if (n == 0) return;
  accumulate_f64_kernel<<<grid_for(n, kThreads), kThreads>>>(src, n, dst);
  AWQ_CUDA_LAUNCH_CHECK();
}

void convert_f64_to_f32(const double* src, int64_t n, float* dst) {
  AWQ_CHECK_ARG(n >= 0, "convert_f64_to_f32: negative size");
  if (n == 0) return;
  convert_f64_to_f32_kernel<<<grid_for(n, kThreads), kThreads>>>(src, n, dst);
  AWQ_CUDA_LAUNCH_CHECK();
}

void rowwise_dot_acc(const float* T, const float* dW, int64_t rows, int64_t cols, double* acc) {
  AWQ_CHECK_ARG(rows >= 0 && cols > 0, "rowwise_dot_acc: bad shape");
  if (rows == 0) return;
  Scratch rowsum(rows * sizeof(float), "rowwise_dot_acc row sums");
  row_dot_kernel<<<grid_for_warps(rows, kThreads), kThreads>>>(T, dW, rows, cols, rowsum.as<float>());
  AWQ_CUDA_LAUNCH_CHECK();
  sum_rows_f64_kernel<<<1, kSumThreads>>>(rowsum.as<float>(), rows, acc);
  AWQ_CUDA_LAUNCH_CHECK();
}

void quantize_weights(const float* W, int64_t rows, int64_t cols, const QuantParams& p, uint8_t* q_host,
                      uint8_t* zeros_host, float* scales_host, const char* name) {
  // the CPU's checks, in the CPU's order and words
  check_quant_params(p, cols);
  AWQ_CHECK_ARG(rows > 0 && cols > 0, std::string(name) + ": empty weight");
  check_device_ptr(W, name);
  check_finite_device(W, rows, cols, name);
  const int64_t groups = cols / p.group;
  Scratch q(q_host ? rows * cols : 0, "quantized weights"), z(zeros_host ? rows * groups : 0, "zero points"),
      s(scales_host ? rows * groups * sizeof(float) : 0, "scales"), bad(sizeof(int), "the scale overflow flag");
  AWQ_CUDA_CHECK(cudaMemsetAsync(bad.as<void>(), 0, sizeof(int), 0));
  quantize_kernel<<<grid_for_warps(rows * groups, kThreads), kThreads>>>(
      W, rows, cols, p.group, p.bits, p.zero_point, p.fp16_scale, q.as<uint8_t>(), z.as<uint8_t>(), s.as<float>(),
      bad.as<int>());
  AWQ_CUDA_LAUNCH_CHECK();
  int bad_host = 0;
  AWQ_CUDA_CHECK(cudaMemcpy(&bad_host, bad.as<void>(), sizeof bad_host, cudaMemcpyDeviceToHost));
  if (bad_host) {
    throw Error(ErrorCode::NonFinite,
                std::string(name) + ": a quantization scale overflows fp16 (weights too large)");
  }
  if (q_host) AWQ_CUDA_CHECK(cudaMemcpy(q_host, q.as<void>(), rows * cols, cudaMemcpyDeviceToHost));
  if (zeros_host) AWQ_CUDA_CHECK(cudaMemcpy(zeros_host, z.as<void>(), rows * groups, cudaMemcpyDeviceToHost));
  if (scales_host)
    AWQ_CUDA_CHECK(cudaMemcpy(scales_host, s.as<void>(), rows * groups * sizeof(float), cudaMemcpyDeviceToHost));
}

}  // namespace awq::cuda
