// Per-channel mean |x| on the GPU (awq::abs_mean_columns, native/core/stats.cc): the same split
// as the CPU kernel, fp32 sums over blocks of 64 rows (rows in order, so each block sum has the
// CPU's bits) and fp64 sums of the blocks (order differs from the CPU's threads: fp64 rounding
// only). Two entry points share the kernels: abs_mean_columns (x in host memory, streamed through
// the device in chunks) and abs_mean_columns_dev (x already on the device).
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "../core/errors.h"
#include "cuda_backend.h"
#include "cuda_check.h"
#include "cuda_layer_ops.h"
#include "quant_common.cuh"

namespace awq::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kRowsPerBlock = 64;  // stats.cc kBlockRows
constexpr unsigned long long kNone = ~0ull;

// partial[y * cols + c] = sum over the 64-row blocks b = y, y + chunks, ... of the fp32 block sum
// of |x[r, c]|, in fp64. *first_bad = min(*first_bad, flat index of a NaN / Inf).
__global__ void abs_block_sums_kernel(const float* __restrict__ x, int64_t rows, int64_t cols, int64_t chunks,
                                      double* __restrict__ partial, unsigned long long* __restrict__ first_bad) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= cols) return;
  const int64_t blocks = (rows + kRowsPerBlock - 1) / kRowsPerBlock;
  double total = 0.0;
  bool bad = false;
  for (int64_t b = blockIdx.y; b < blocks; b += chunks) {
    const int64_t r1 = min(rows, (b + 1) * kRowsPerBlock);
    float acc = 0.f;
    for (int64_t r = b * kRowsPerBlock; r < r1; ++r) {
      const float a = fabsf(x[r * cols + c]);
      if (!bad && !(a <= 3.402823466e38f)) {
        bad = true;  // the first for this thread is its smallest index (rows increase)
        atomicMin(first_bad, static_cast<unsigned long long>(r * cols + c));
      }
      acc = __fadd_rn(acc, a);
    }
    total += static_cast<double>(acc);
  }
  partial[static_cast<int64_t>(blockIdx.y) * cols + c] = total;
}

// Device scratch for summing |x| over rows of `cols` columns.
struct AbsSums {
  int64_t cols, chunks;
  Scratch sum, partial, first_bad;
  explicit AbsSums(int64_t cols_)
      : cols(cols_),
        chunks(std::max<int64_t>(1, 2048 / ((cols_ + kThreads - 1) / kThreads))),
        sum(cols_ * sizeof(double), "column sums"),
        partial(chunks * cols_ * sizeof(double), "column partial sums"),
        first_bad(sizeof(unsigned long long), "the NaN/Inf flag") {
    AWQ_CUDA_CHECK(cudaMemsetAsync(sum.as<void>(), 0, cols * sizeof(double), 0));
    AWQ_CUDA_CHECK(cudaMemcpy(first_bad.as<void>(), &kNone, sizeof kNone, cudaMemcpyHostToDevice));
  }
  // Adds rows [0, rows) of x (device) to the sums; returns nothing, flags NaN/Inf on the device.
  void add(const float* x, int64_t rows) {
    const int64_t blocks = (rows + kRowsPerBlock - 1) / kRowsPerBlock;
    const int64_t used = std::min(chunks, blocks);
    const dim3 grid(static_cast<unsigned>((cols + kThreads - 1) / kThreads), static_cast<unsigned>(used));
    abs_block_sums_kernel<<<grid, kThreads>>>(x, rows, cols, used, partial.as<double>(),
                                              first_bad.as<unsigned long long>());
    AWQ_CUDA_LAUNCH_CHECK();
    add_partials_kernel<double><<<grid.x, kThreads>>>(partial.as<double>(), used, cols, sum.as<double>());
    AWQ_CUDA_LAUNCH_CHECK();
  }
  // Flat index (row * cols + col) of the first NaN/Inf seen by add(), or -1.
  int64_t first_bad_index() const {
    unsigned long long i = kNone;
    AWQ_CUDA_CHECK(cudaMemcpy(&i, first_bad.as<void>(), sizeof i, cudaMemcpyDeviceToHost));
    return i == kNone ? -1 : static_cast<int64_t>(i);
  }
  // out[c] = float(sum[c] * (1 / rows)), as stats.cc.
  void mean(int64_t rows, float* out_host) const {
    std::vector<double> s(cols);
    AWQ_CUDA_CHECK(cudaMemcpy(s.data(), sum.as<void>(), cols * sizeof(double), cudaMemcpyDeviceToHost));
    const double inv = 1.0 / static_cast<double>(rows);
    for (int64_t c = 0; c < cols; ++c) out_host[c] = static_cast<float>(s[c] * inv);
  }
};

[[noreturn]] void throw_non_finite(int64_t row, int64_t col, float v) {
  throw Error(ErrorCode::NonFinite, "activation value at row " + std::to_string(row) + ", channel " +
                                        std::to_string(col) + " is " + (std::isnan(v) ? "NaN" : "Inf"));
}

}  // namespace

void abs_mean_columns(const float* x, int64_t rows, int64_t cols, float* out) {
  AWQ_CHECK_ARG(rows > 0, "abs_mean_columns: rows must be positive, got " + std::to_string(rows));
  AWQ_CHECK_ARG(cols > 0, "abs_mean_columns: cols must be positive, got " + std::to_string(cols));
  size_t free_bytes = 0, total_bytes = 0;
  AWQ_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  // At most a quarter of the free memory for one chunk of rows, whole 64-row blocks per chunk
  // so the fp32 block sums are the CPU's.
  const int64_t row_bytes = cols * static_cast<int64_t>(sizeof(float));
  int64_t chunk_rows = std::max<int64_t>(kRowsPerBlock, static_cast<int64_t>(free_bytes / 4) / row_bytes);
  chunk_rows = std::min(chunk_rows, rows);
  chunk_rows = (chunk_rows + kRowsPerBlock - 1) / kRowsPerBlock * kRowsPerBlock;
  Scratch dx(static_cast<size_t>(chunk_rows * row_bytes), "activation rows");
  AbsSums sums(cols);
  for (int64_t r0 = 0; r0 < rows; r0 += chunk_rows) {
    const int64_t n = std::min(chunk_rows, rows - r0);
    AWQ_CUDA_CHECK(cudaMemcpy(dx.as<void>(), x + r0 * cols, n * row_bytes, cudaMemcpyHostToDevice));
    sums.add(dx.as<float>(), n);
    const int64_t bad = sums.first_bad_index();
    if (bad >= 0) throw_non_finite(r0 + bad / cols, bad % cols, x[r0 * cols + bad]);
  }
  sums.mean(rows, out);
}

void abs_mean_columns_dev(const float* X, int64_t rows, int64_t cols, float* out_host) {
  AWQ_CHECK_ARG(rows > 0, "abs_mean_columns: rows must be positive, got " + std::to_string(rows));
  AWQ_CHECK_ARG(cols > 0, "abs_mean_columns: cols must be positive, got " + std::to_string(cols));
  AWQ_CHECK_ARG(X != nullptr, "abs_mean_columns: null device pointer");
  AbsSums sums(cols);
  sums.add(X, rows);
  const int64_t bad = sums.first_bad_index();
  if (bad >= 0) {
    float v = 0.f;
    AWQ_CUDA_CHECK(cudaMemcpy(&v, X + bad, sizeof v, cudaMemcpyDeviceToHost));
    throw_non_finite(bad / cols, bad % cols, v);
  }
  sums.mean(rows, out_host);
}

}  // namespace awq::cuda
