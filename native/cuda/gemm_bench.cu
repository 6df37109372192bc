// GEMM timing pieces (gemm_bench.h).
#include <cuda_runtime.h>

#include <optional>
#include <random>

#include "../core/dtype.h"
#include "../core/errors.h"
#include "gemm_bench.h"

namespace awq::cuda {
namespace {

double l2_cache_bytes() {
  int dev = 0, l2 = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, dev) != cudaSuccess ||
      l2 <= 0) {
    cudaGetLastError();
    l2 = 64 << 20;
  }
  return static_cast<double>(l2);
}

struct CopyCall {
  void *dst, *src;
  size_t bytes;
  void* stream;
};
void run_copy(void* p) {
  auto* c = static_cast<CopyCall*>(p);
  const cudaError_t err =
      cudaMemcpyAsync(c->dst, c->src, c->bytes, cudaMemcpyDeviceToDevice, static_cast<cudaStream_t>(c->stream));
  if (err != cudaSuccess) throw Error(ErrorCode::Cuda, std::string("cudaMemcpyAsync: ") + cudaGetErrorString(err));
}

struct Int4Call {
  const std::vector<Int4DeviceWeights>* copies;
  size_t* next;
  const void* x;
  void* y;
  int64_t M;
  Int4Kernel kernel;
  void* stream;
};
// Whether a configuration is forced (all zero: the automatic choice; anything else is validated
// by int4_force_skinny_config).
bool forced(const SkinnyConfig& c) { return c.tiles || c.warps || c.stages || c.no_fold || c.no_pdl; }

void run_int4(void* p) {
  auto* c = static_cast<Int4Call*>(p);
  const Int4DeviceWeights& w = (*c->copies)[(*c->next)++ % c->copies->size()];
  int4_gemm(w, c->x, c->M, c->y, Dtype::F16, c->stream, c->kernel);
}

struct DenseCall {
  const std::vector<DeviceMemory>* copies;
  size_t* next;
  const void* x;
  void* y;
  int64_t M, N, K;
  void* stream;
};
void run_dense(void* p) {
  auto* c = static_cast<DenseCall*>(p);
  const DeviceMemory& b = (*c->copies)[(*c->next)++ % c->copies->size()];
  dense_gemm(c->x, b.get(), Dtype::F16, c->M, c->N, c->K, c->y, Dtype::F16, nullptr, c->stream);
}

}  // namespace

Int4DeviceWeights bench_int4_weights(int64_t K, int64_t N, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> qw(static_cast<size_t>(K * N / 8)), qz(static_cast<size_t>(K / 128 * N / 8));
  for (auto& v : qw) v = static_cast<int32_t>(rng());
  for (auto& v : qz) v = static_cast<int32_t>(rng());
  std::vector<uint16_t> sc(static_cast<size_t>(K / 128 * N));
  std::uniform_real_distribution<float> sd(0.002f, 0.02f);
  for (auto& v : sc) v = f32_to_fp16_scalar(sd(rng));
  return int4_upload_awq(qw.data(), qz.data(), sc.data(), nullptr, K, N, 128);
}

DeviceMemory bench_fp16(size_t n, uint32_t seed, float scale, const char* what) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(-scale, scale);
  std::vector<uint16_t> h(n);
  for (auto& v : h) v = f32_to_fp16_scalar(d(rng));
  DeviceMemory m(n * 2, what);
  copy_to_device(m.get(), h.data(), n * 2);
  return m;
}

double copy_bandwidth_gbps(void* stream) {
  const size_t bytes = size_t{1} << 30;
  DeviceMemory src(bytes, "copy source"), dst(bytes, "copy destination");
  fill_zero(src.get(), bytes);
  CopyCall c{dst.get(), src.get(), bytes, stream};
  const double ms = time_median_ms(run_copy, &c, 3, 15, 1, stream);
  return 2.0 * static_cast<double>(bytes) / (ms * 1e-3) / 1e9;
}

GemmBenchShape::GemmBenchShape(int64_t K, int64_t N, int64_t max_m, void* stream, bool with_dense)
    : K_(K), N_(N), max_m_(max_m), stream_(stream) {
  // Bounds far above any model's layer, and low enough that no size below overflows.
  constexpr int64_t kMaxDim = int64_t{1} << 20;
  if (K <= 0 || K % 128 != 0 || N <= 0 || N % 8 != 0 || max_m <= 0 || K > kMaxDim || N > kMaxDim || max_m > kMaxDim)
    throw Error(ErrorCode::InvalidArgument,
                "GemmBenchShape: K must be a multiple of 128 and N of 8, each up to 2^20, and M from 1 to 2^20; got K " +
                    std::to_string(K) + ", N " + std::to_string(N) + ", M " + std::to_string(max_m));
  const double l2 = l2_cache_bytes();
  const auto seed = static_cast<uint32_t>(K * 31 + N);
  int4_.push_back(bench_int4_weights(K, N, seed));
  const double one_copy = static_cast<double>(int4_[0].bytes());
  while (int4_.size() < 16 && static_cast<double>(int4_.size()) * one_copy < 4.0 * l2)
    int4_.push_back(bench_int4_weights(K, N, seed + static_cast<uint32_t>(int4_.size())));
  if (with_dense) {
    do {
      dense_.push_back(bench_fp16(static_cast<size_t>(N * K), 8 + static_cast<uint32_t>(dense_.size()), 0.05f,
                                  "dense weights"));
    } while (dense_.size() < 8 && static_cast<double>(dense_.size()) * 2.0 * N * K < 4.0 * l2);
  }
  x_ = bench_fp16(static_cast<size_t>(max_m * K), 7, 1.f, "x");
  y_ = DeviceMemory(static_cast<size_t>(max_m * N * 2), "y");
}

double GemmBenchShape::int4_ms(int64_t M, int warmup, int reps, int batch, Int4Kernel kernel,
                               const SkinnyConfig& skinny) {
  if (M <= 0 || M > max_m_) throw Error(ErrorCode::InvalidArgument, "GemmBenchShape: M out of range");
  Int4Call c{&int4_, &next_int4_, x_.get(), y_.get(), M, kernel, stream_};
  // A forced configuration is process-wide: set for this timing only. The automatic choice leaves
  // the setting alone (the addon's other calls may be reading it).
  std::optional<ScopedSkinnyConfig> forced_config;
  if (forced(skinny)) forced_config.emplace(skinny);
  return time_median_ms(run_int4, &c, warmup, reps, batch, stream_);
}

double GemmBenchShape::dense_ms(int64_t M, int warmup, int reps, int batch) {
  if (M <= 0 || M > max_m_) throw Error(ErrorCode::InvalidArgument, "GemmBenchShape: M out of range");
  if (dense_.empty()) throw Error(ErrorCode::InvalidArgument, "GemmBenchShape: built without dense weights");
  DenseCall c{&dense_, &next_dense_, x_.get(), y_.get(), M, N_, K_, stream_};
  return time_median_ms(run_dense, &c, warmup, reps, batch, stream_);
}

double GemmBenchShape::int4_weight_bytes() const { return static_cast<double>(int4_[0].q.size() + int4_[0].sz.size()); }

}  // namespace awq::cuda
