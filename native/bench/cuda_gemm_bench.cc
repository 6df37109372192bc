// awq_cuda_bench: timings of the CUDA GEMMs against baselines measured in the same run.
//   - device-to-device copy bandwidth (cudaMemcpyAsync, bytes read + written per second);
//   - int4 GEMM at M = 1 on (K, N) = (8192, 8192), (8192, 28672): bytes moved per second as a
//     share of that copy bandwidth (target >= 75%), skinny and tiled kernels;
//   - M = 16: int4 vs the dense fp16 GEMM (target: int4 >= 2.5x faster); M = 4096: target
//     int4 within 1.5x of dense;
//   - M in {1, 4, 16, 128, 512, 4096} on (4096, 4096), (4096, 11008), (11008, 4096);
//   - the layer search's products (cuda_layer_ops.h): fp32 sgemm 4096^3 NT (target >= 25
//     TFLOP/s), the Gram X^T X (TN, symmetric), and linear in f32 / bf16 (rounding included).
// Times are medians of `reps` timings after warm-up, cudaEvent-timed; a timing of M <= 16 covers
// 20 back-to-back calls (a stream of decode calls) cycling through weight copies that together
// exceed the L2 cache four times over, so the weights come from memory as when decoding a model.
// Prints a table; writes JSON to the path given with --json (default cuda-bench.json). Exit code
// 2 when no device answers.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "../core/dtype.h"
#include "../core/errors.h"
#include "../cuda/cuda_backend.h"
#include "../cuda/cuda_gemm.h"
#include "../cuda/cuda_layer_ops.h"

using namespace awq;

namespace {

struct Int4Case {
  // Copies of the same weights, cycled call after call so that decode-sized products stream
  // from memory (together they exceed the L2 cache several times), as decoding a model does.
  std::vector<cuda::Int4DeviceWeights> copies;
  size_t next = 0;
  const void* x;
  void* y;
  int64_t M;
  cuda::Int4Kernel kernel;
  cuda::SkinnyConfig skinny;  // forced skinny configuration (all 0: automatic)
};
void run_int4(void* p) {
  auto* c = static_cast<Int4Case*>(p);
  cuda::int4_force_skinny_config(c->skinny);
  const cuda::Int4DeviceWeights& w = c->copies[c->next++ % c->copies.size()];
  cuda::int4_gemm(w, c->x, c->M, c->y, cuda::Dtype::F16, nullptr, c->kernel);
}

struct DenseCase {
  const void* a;
  std::vector<const void*> b;  // weight copies, cycled like Int4Case's
  void* c;
  int64_t M, N, K;
  size_t next = 0;
};
void run_dense(void* p) {
  auto* c = static_cast<DenseCase*>(p);
  cuda::dense_gemm(c->a, c->b[c->next++ % c->b.size()], cuda::Dtype::F16, c->M, c->N, c->K, c->c, cuda::Dtype::F16);
}

struct CopyCase {
  void *dst, *src;
  size_t bytes;
};
void run_copy(void* p) {
  auto* c = static_cast<CopyCase*>(p);
  if (cudaMemcpyAsync(c->dst, c->src, c->bytes, cudaMemcpyDeviceToDevice) != cudaSuccess)
    throw Error(ErrorCode::Cuda, "cudaMemcpyAsync failed");
}

// Random device data: AWQ tensors (random nibbles, fp16 scales in [0.002, 0.02]), fp16 x and
// dense weights. Generated on the host once per shape (the repack is part of loading).
cuda::Int4DeviceWeights make_int4(int64_t K, int64_t N, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> qw(static_cast<size_t>(K * N / 8)), qz(static_cast<size_t>(K / 128 * N / 8));
  for (auto& v : qw) v = static_cast<int32_t>(rng());
  for (auto& v : qz) v = static_cast<int32_t>(rng());
  std::vector<uint16_t> sc(static_cast<size_t>(K / 128 * N));
  std::uniform_real_distribution<float> sd(0.002f, 0.02f);
  for (auto& v : sc) v = f32_to_fp16_scalar(sd(rng));
  return cuda::int4_upload_awq(qw.data(), qz.data(), sc.data(), nullptr, K, N, 128);
}

cuda::DeviceMemory make_fp16(size_t n, uint32_t seed, float scale, const char* what) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(-scale, scale);
  std::vector<uint16_t> h(n);
  for (auto& v : h) v = f32_to_fp16_scalar(d(rng));
  cuda::DeviceMemory m(n * 2, what);
  cuda::copy_to_device(m.get(), h.data(), n * 2);
  return m;
}

struct Row {
  std::string what;
  int64_t M, K, N;
  double int4_ms = 0, dense_ms = 0, int4_gbs = 0, dense_gbs = 0, int4_tflops = 0, dense_tflops = 0;
  double bw_share = 0;  // int4 bytes/s over copy bandwidth (M = 1 rows)
};

std::string json_row(const Row& r) {
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "{\"what\":\"%s\",\"M\":%lld,\"K\":%lld,\"N\":%lld,\"int4_ms\":%.5f,\"dense_ms\":%.5f,"
                "\"int4_GBps\":%.1f,\"dense_GBps\":%.1f,\"int4_TFLOPS\":%.2f,\"dense_TFLOPS\":%.2f,"
                "\"int4_share_of_copy_bw\":%.4f}",
                r.what.c_str(), static_cast<long long>(r.M), static_cast<long long>(r.K), static_cast<long long>(r.N),
                r.int4_ms, r.dense_ms, r.int4_gbs, r.dense_gbs, r.int4_tflops, r.dense_tflops, r.bw_share);
  return buf;
}

// Times of the search's dense products; appends table lines and JSON records to `json`.
struct LayerOpCase {
  int kind;  // 0 sgemm NT, 1 Gram TN (same operand), 2 linear
  const float *a, *b;
  float* c;
  int64_t M, N, K;
  cuda::Precision p;
};
void run_layer_op(void* ctx) {
  auto* c = static_cast<LayerOpCase*>(ctx);
  if (c->kind == 0) cuda::sgemm(Trans::N, Trans::T, c->M, c->N, c->K, 1.f, c->a, c->K, c->b, c->K, 0.f, c->c, c->N);
  else if (c->kind == 1) cuda::sgemm(Trans::T, Trans::N, c->M, c->N, c->K, 1.f, c->a, c->M, c->a, c->M, 0.f, c->c, c->N);
  else cuda::linear(c->a, c->M, c->K, c->b, c->N, nullptr, c->c, c->p);
}
bool bench_layer_ops(int reps, std::vector<std::string>& json) {
  const int64_t S = 4096, OUT = 11008;
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> d(-1.f, 1.f);
  std::vector<float> h(static_cast<size_t>(OUT * S));
  for (auto& v : h) v = d(rng);
  cuda::DeviceMemory a(S * S * 4, "bench A"), b(OUT * S * 4, "bench B"), c(S * OUT * 4, "bench C");
  cuda::copy_to_device(a.get(), h.data(), S * S * 4);
  cuda::copy_to_device(b.get(), h.data(), OUT * S * 4);
  const auto* A = static_cast<const float*>(a.get());
  const auto* B = static_cast<const float*>(b.get());
  auto* C = static_cast<float*>(c.get());
  // (NT with B != A: with the same operand X X^T is symmetric and only half the tiles run.)
  const LayerOpCase cases[] = {{0, A, B, C, S, S, S, cuda::Precision::F32},
                               {1, A, A, C, S, S, S, cuda::Precision::F32},
                               {2, A, B, C, S, OUT, S, cuda::Precision::F32},
                               {2, A, B, C, S, OUT, S, cuda::Precision::BF16}};
  const char* names[] = {"sgemm f32 NT", "sgemm f32 gram TN", "linear f32", "linear bf16"};  // gram: full 2MNK counted
  bool ok = true;
  std::printf("\nlayer-search products (fp32 SIMT sgemm; linear bf16 includes rounding x and W):\n");
  for (int i = 0; i < 4; ++i) {
    LayerOpCase lc = cases[i];
    const double ms = cuda::time_median_ms(run_layer_op, &lc, 2, std::max(3, reps / 3));
    const double tf = 2.0 * lc.M * lc.N * lc.K / (ms * 1e-3) / 1e12;
    std::printf("%-20s M=%5lld N=%5lld K=%5lld  %8.3f ms  %6.1f TFLOP/s%s\n", names[i], static_cast<long long>(lc.M),
                static_cast<long long>(lc.N), static_cast<long long>(lc.K), ms, tf,
                i == 0 ? (tf >= 25 ? "  (target >= 25: PASS)" : "  (target >= 25: MISS)") : "");
    if (i == 0) ok = tf >= 25;
    char buf[256];
    std::snprintf(buf, sizeof buf, "{\"what\":\"%s\",\"M\":%lld,\"N\":%lld,\"K\":%lld,\"ms\":%.5f,\"TFLOPS\":%.2f}",
                  names[i], static_cast<long long>(lc.M), static_cast<long long>(lc.N), static_cast<long long>(lc.K), ms,
                  tf);
    json.push_back(buf);
  }
  return ok;
}

}  // namespace

int main(int argc, char** argv) {
  std::string json_path = "cuda-bench.json";
  int reps = 30;
  bool layer_ops_only = false;  // --layer-ops: only the layer-search products
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--json") && i + 1 < argc) json_path = argv[++i];
    else if (!std::strcmp(argv[i], "--reps") && i + 1 < argc) reps = std::max(3, std::atoi(argv[++i]));
    else if (!std::strcmp(argv[i], "--layer-ops")) layer_ops_only = true;
    else {
      std::fprintf(stderr, "usage: awq_cuda_bench [--json PATH] [--reps N] [--layer-ops]\n");
      return 64;
    }
  }
  std::string why;
  const auto devices = cuda::list_devices(&why);
  if (devices.empty()) {
    std::printf("awq_cuda_bench: no CUDA device: %s\n", why.c_str());
    return 2;
  }
  const auto& dev = devices[0];
  std::printf("device 0: %s (sm_%d%d, %.1f GiB)\n", dev.name.c_str(), dev.cc_major, dev.cc_minor,
              dev.memory_bytes / 1073741824.0);
  try {
    // Copy bandwidth: 1 GiB device to device, counted as read + write.
    const size_t copy_bytes = size_t{1} << 30;
    int l2_attr = 0;
    if (cudaDeviceGetAttribute(&l2_attr, cudaDevAttrL2CacheSize, 0) != cudaSuccess) l2_attr = 64 << 20;
    const double l2_bytes = l2_attr;
    cuda::DeviceMemory src(copy_bytes, "copy source"), dst(copy_bytes, "copy destination");
    cuda::fill_zero(src.get(), copy_bytes);
    CopyCase cc{dst.get(), src.get(), copy_bytes};
    const double copy_ms = cuda::time_median_ms(run_copy, &cc, 3, 15);
    const double copy_gbs = 2.0 * copy_bytes / (copy_ms * 1e-3) / 1e9;
    std::printf("device-to-device copy: %.1f GB/s (read + write, median of 15)\n\n", copy_gbs);

    std::vector<Row> rows;
    auto bench_shape = [&](const char* what, int64_t K, int64_t N, const std::vector<int64_t>& Ms, bool skinny_too) {
      Int4Case ic{};
      ic.copies.push_back(make_int4(K, N, static_cast<uint32_t>(K * 31 + N)));
      const double one_copy = static_cast<double>(ic.copies[0].bytes());
      while (ic.copies.size() < 16 && ic.copies.size() * one_copy < 4.0 * l2_bytes)
        ic.copies.push_back(make_int4(K, N, static_cast<uint32_t>(K * 31 + N + ic.copies.size())));
      const int64_t maxM = *std::max_element(Ms.begin(), Ms.end());
      cuda::DeviceMemory x = make_fp16(static_cast<size_t>(maxM * K), 7, 1.f, "x");
      std::vector<cuda::DeviceMemory> B;
      std::vector<const void*> b_ptrs;
      do {
        B.push_back(make_fp16(static_cast<size_t>(N * K), 8 + static_cast<uint32_t>(B.size()), 0.05f, "dense weights"));
        b_ptrs.push_back(B.back().get());
      } while (B.size() < 8 && B.size() * 2.0 * N * K < 4.0 * l2_bytes);
      cuda::DeviceMemory y(static_cast<size_t>(maxM * N * 2), "y");
      ic.x = x.get();
      ic.y = y.get();
      const double wbytes4 = static_cast<double>(ic.copies[0].q.size() + ic.copies[0].sz.size());
      for (int64_t M : Ms) {
        struct Variant {
          std::string name;
          cuda::Int4Kernel kernel;
          cuda::SkinnyConfig skinny;
        };
        std::vector<Variant> kernels = {{what, cuda::Int4Kernel::Auto}};
        if (skinny_too && M <= cuda::kSkinnyMaxM) {
          // every skinny configuration (tiles per warp x warps per block x stages), to check the automatic choice
          for (int tiles : {2, 4})
            for (int warps : {4, 8})
              for (int stages : {2, 4})
                kernels.push_back({std::string(what) + " skinny" + std::to_string(tiles) + "x" + std::to_string(warps) +
                                       "x" + std::to_string(stages),
                                   cuda::Int4Kernel::Skinny, {tiles, warps, stages}});
          kernels.push_back({std::string(what) + " tiled16", cuda::Int4Kernel::Tiled16});
        }
        DenseCase dc{x.get(), b_ptrs, y.get(), M, N, K};
        const int r = M >= 1024 ? std::max(5, reps / 3) : reps;
        const int batch = M <= 16 ? 20 : 1;  // decode-sized calls: throughput of a stream of calls
        const double dense_ms = cuda::time_median_ms(run_dense, &dc, 3, r, batch);
        for (const Variant& v : kernels) {
          const std::string& name = v.name;
          ic.M = M;
          ic.kernel = v.kernel;
          ic.skinny = v.skinny;
          Row row{name, M, K, N};
          row.int4_ms = cuda::time_median_ms(run_int4, &ic, 3, r, batch);
          row.dense_ms = dense_ms;
          const double io = 2.0 * M * (K + N);
          const double flops = 2.0 * M * N * K;
          row.int4_gbs = (wbytes4 + io) / (row.int4_ms * 1e-3) / 1e9;
          row.dense_gbs = (2.0 * N * K + io) / (dense_ms * 1e-3) / 1e9;
          row.int4_tflops = flops / (row.int4_ms * 1e-3) / 1e12;
          row.dense_tflops = flops / (dense_ms * 1e-3) / 1e12;
          row.bw_share = row.int4_gbs / copy_gbs;
          rows.push_back(row);
          std::printf("%-22s M=%5lld K=%5lld N=%5lld  int4 %8.4f ms %7.1f GB/s %6.1f TF (%5.1f%% copy bw)  "
                      "dense %8.4f ms %7.1f GB/s %6.1f TF  dense/int4 %5.2fx\n",
                      name.c_str(), static_cast<long long>(M), static_cast<long long>(K), static_cast<long long>(N),
                      row.int4_ms, row.int4_gbs, row.int4_tflops, 100 * row.bw_share, row.dense_ms, row.dense_gbs,
                      row.dense_tflops, dense_ms / row.int4_ms);
          std::fflush(stdout);
        }
      }
    };
    if (!layer_ops_only) {
      bench_shape("decode-8192x8192", 8192, 8192, {1, 16, 4096}, true);
      bench_shape("decode-8192x28672", 8192, 28672, {1, 16, 4096}, true);
      for (auto [K, N] : {std::pair<int64_t, int64_t>{4096, 4096}, {4096, 11008}, {11008, 4096}})
        bench_shape(("llama7b-" + std::to_string(K) + "x" + std::to_string(N)).c_str(), K, N,
                    {1, 4, 16, 128, 512, 4096}, true);
    }

    std::vector<std::string> layer_ops;
    const bool sgemm_ok = bench_layer_ops(reps, layer_ops);

    // Targets of issue 6 on the auto-dispatched rows.
    std::printf("\ntargets (auto kernels):\n");
    bool all_ok = true;
    std::string targets;
    for (const Row& r : rows) {
      if (r.what.find(' ') != std::string::npos) continue;  // forced-kernel rows
      std::string line;
      bool ok = true;
      char buf[256];
      if (r.what.rfind("decode-", 0) == 0 && r.M == 1) {
        ok = r.bw_share >= 0.75;
        std::snprintf(buf, sizeof buf, "M=1 %s: %.1f%% of copy bandwidth (>= 75%%)", r.what.c_str(), 100 * r.bw_share);
      } else if (r.M == 16) {
        ok = r.dense_ms / r.int4_ms >= 2.5;
        std::snprintf(buf, sizeof buf, "M=16 %s: int4 %.2fx faster than dense (>= 2.5x)", r.what.c_str(),
                      r.dense_ms / r.int4_ms);
      } else if (r.M == 4096) {
        ok = r.int4_ms / r.dense_ms <= 1.5;
        std::snprintf(buf, sizeof buf, "M=4096 %s: int4 / dense time %.2f (<= 1.5)", r.what.c_str(),
                      r.int4_ms / r.dense_ms);
      } else {
        continue;
      }
      line = buf;
      all_ok &= ok;
      std::printf("  %s %s\n", ok ? "PASS" : "MISS", line.c_str());
      targets += std::string(targets.empty() ? "" : ",") + "{\"target\":\"" + line + "\",\"met\":" +
                 (ok ? "true" : "false") + "}";
    }

    all_ok &= sgemm_ok;
    targets += std::string(targets.empty() ? "" : ",") + "{\"target\":\"sgemm f32 NT 4096^3 >= 25 TFLOP/s\",\"met\":" +
               (sgemm_ok ? "true" : "false") + "}";

    FILE* f = std::fopen(json_path.c_str(), "w");
    if (!f) throw Error(ErrorCode::InvalidArgument, "cannot write " + json_path);
    std::fprintf(f, "{\"device\":\"%s\",\"sm\":\"%d%d\",\"copy_GBps\":%.1f,\"reps\":%d,\"rows\":[", dev.name.c_str(),
                 dev.cc_major, dev.cc_minor, copy_gbs, reps);
    for (size_t i = 0; i < rows.size(); ++i) std::fprintf(f, "%s%s", i ? "," : "", json_row(rows[i]).c_str());
    std::fprintf(f, "],\"layer_ops\":[");
    for (size_t i = 0; i < layer_ops.size(); ++i) std::fprintf(f, "%s%s", i ? "," : "", layer_ops[i].c_str());
    std::fprintf(f, "],\"targets\":[%s],\"all_targets_met\":%s}\n", targets.c_str(), all_ok ? "true" : "false");
    std::fclose(f);
    std::printf("\nwrote %s; targets %s\n", json_path.c_str(), all_ok ? "all met" : "NOT all met");
    return 0;  // missed performance targets are reported, not a failure of the run
  } catch (const Error& e) {
    std::printf("awq_cuda_bench: %s: %s\n", error_code_name(e.code()), e.what());
    return 1;
  }
}
