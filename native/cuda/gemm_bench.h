// GEMM timing pieces shared by the awq_cuda_bench executable and `awq bench cuda-gemm` (the
// addon): random device operands, the copy bandwidth the int4 decode is measured against, and
// one shape's int4 and dense fp16 products timed as streams of calls.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "cuda_gemm.h"

namespace awq::cuda {

// AWQ tensors (random nibbles, fp16 scales in [0.002, 0.02], group 128), uploaded and repacked.
Int4DeviceWeights bench_int4_weights(int64_t K, int64_t N, uint32_t seed);

// n random fp16 values in [-scale, scale] on the device.
DeviceMemory bench_fp16(size_t n, uint32_t seed, float scale, const char* what);

// Device-to-device copy of 1 GiB on `stream`, counted as bytes read + written per second (GB/s,
// median of 15 after 3 warm-up copies).
double copy_bandwidth_gbps(void* stream);

// One (K, N) shape: int4 weight copies and dense fp16 weight copies that together exceed the L2
// cache four times over (so that decode-sized calls, cycling through them, read their weights
// from memory as decoding a model does), x for up to max_m rows, and y. Calls queue on `stream`.
// K, N and max_m up to 2^20 (InvalidArgument beyond); without `with_dense`, no dense weights
// (dense_ms then throws).
class GemmBenchShape {
 public:
  GemmBenchShape(int64_t K, int64_t N, int64_t max_m, void* stream, bool with_dense = true);
  GemmBenchShape(const GemmBenchShape&) = delete;
  GemmBenchShape& operator=(const GemmBenchShape&) = delete;

  // Median ms of one call: reps timings after warm-up calls, each timing covering `batch`
  // back-to-back calls (cudaEvent-timed on the stream).
  double int4_ms(int64_t M, int warmup, int reps, int batch, Int4Kernel kernel = Int4Kernel::Auto,
                 const SkinnyConfig& skinny = {});
  double dense_ms(int64_t M, int warmup, int reps, int batch);

  // The usual timing plan for M rows: 20 calls per timing for decode sizes (M <= 16: the
  // throughput of a stream of calls), and a third of the repetitions from M = 1024 (long calls).
  static int batch_for(int64_t M) { return M <= kSkinnyMaxM ? 20 : 1; }
  static int reps_for(int64_t M, int reps) { return M >= 1024 ? (reps / 3 > 5 ? reps / 3 : 5) : reps; }

  // Bytes of one int4 weight copy in the kernels' layout (packed nibbles, scales and zeros).
  double int4_weight_bytes() const;
  int64_t K() const { return K_; }
  int64_t N() const { return N_; }

 private:
  int64_t K_, N_, max_m_;
  void* stream_;
  std::vector<Int4DeviceWeights> int4_;
  std::vector<DeviceMemory> dense_;
  DeviceMemory x_, y_;
  size_t next_int4_ = 0, next_dense_ = 0;
};

}  // namespace awq::cuda
