// Per-channel mean |x| on the GPU. Rows stream through in chunks sized to fit comfortably in
// device memory; each block reduces a tile of rows for 256 channels into a per-chunk partial
// that the host sums in fp64 (the same fp32-block / fp64-total split as the CPU kernel).
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "../core/errors.h"
#include "cuda_backend.h"
#include "cuda_check.h"

namespace awq::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kRowsPerBlock = 64;

__global__ void abs_sum_kernel(const float* __restrict__ x, int64_t rows, int64_t cols,
                               float* __restrict__ partial, int* __restrict__ bad) {
  const int64_t col = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  const int64_t row0 = static_cast<int64_t>(blockIdx.y) * kRowsPerBlock;
  if (col >= cols) return;
  const int64_t row1 = min(rows, row0 + kRowsPerBlock);
  float acc = 0.f;
  bool finite = true;
  for (int64_t r = row0; r < row1; ++r) {
    const float a = fabsf(x[r * cols + col]);
    finite &= (a <= 3.402823466e38f);
    acc += a;
  }
  partial[static_cast<int64_t>(blockIdx.y) * cols + col] = acc;
  if (!finite) atomicExch(bad, 1);
}

struct DeviceBuffer {
  void* p = nullptr;
  explicit DeviceBuffer(size_t bytes) { AWQ_CUDA_CHECK(cudaMalloc(&p, bytes)); }
  ~DeviceBuffer() { cudaFree(p); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
};

}  // namespace

void abs_mean_columns(const float* x, int64_t rows, int64_t cols, float* out) {
  AWQ_CHECK_ARG(rows > 0 && cols > 0, "abs_mean_columns: rows and cols must be positive");
  size_t free_bytes = 0, total_bytes = 0;
  AWQ_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  // Use at most a quarter of the free memory for one chunk of rows.
  const int64_t row_bytes = cols * static_cast<int64_t>(sizeof(float));
  int64_t chunk_rows = std::max<int64_t>(kRowsPerBlock, static_cast<int64_t>(free_bytes / 4) / row_bytes);
  chunk_rows = std::min(chunk_rows, rows);
  chunk_rows = (chunk_rows + kRowsPerBlock - 1) / kRowsPerBlock * kRowsPerBlock;
  const int64_t tiles = chunk_rows / kRowsPerBlock;
  DeviceBuffer dx(static_cast<size_t>(chunk_rows * row_bytes));
  DeviceBuffer dpartial(static_cast<size_t>(tiles * row_bytes));
  DeviceBuffer dbad(sizeof(int));
  AWQ_CUDA_CHECK(cudaMemset(dbad.p, 0, sizeof(int)));
  std::vector<double> sum(cols, 0.0);
  std::vector<float> partial(static_cast<size_t>(tiles * cols));
  for (int64_t r0 = 0; r0 < rows; r0 += chunk_rows) {
    const int64_t n = std::min(chunk_rows, rows - r0);
    const int64_t used_tiles = (n + kRowsPerBlock - 1) / kRowsPerBlock;
    AWQ_CUDA_CHECK(cudaMemcpy(dx.p, x + r0 * cols, n * row_bytes, cudaMemcpyHostToDevice));
    dim3 grid(static_cast<unsigned>((cols + kThreads - 1) / kThreads), static_cast<unsigned>(used_tiles));
    abs_sum_kernel<<<grid, kThreads>>>(static_cast<const float*>(dx.p), n, cols,
                                       static_cast<float*>(dpartial.p), static_cast<int*>(dbad.p));
    AWQ_CUDA_CHECK(cudaGetLastError());
    AWQ_CUDA_CHECK(cudaMemcpy(partial.data(), dpartial.p, used_tiles * row_bytes, cudaMemcpyDeviceToHost));
    for (int64_t t = 0; t < used_tiles; ++t)
      for (int64_t j = 0; j < cols; ++j) sum[j] += partial[t * cols + j];
  }
  int bad = 0;
  AWQ_CUDA_CHECK(cudaMemcpy(&bad, dbad.p, sizeof(int), cudaMemcpyDeviceToHost));
  if (bad) throw Error(ErrorCode::NonFinite, "activations contain NaN or Inf");
  for (int64_t j = 0; j < cols; ++j) out[j] = static_cast<float>(sum[j] / static_cast<double>(rows));
}

}  // namespace awq::cuda
