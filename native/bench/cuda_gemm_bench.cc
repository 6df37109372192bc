// awq_cuda_bench: timings of the CUDA GEMMs against baselines measured in the same run.
//   - device-to-device copy bandwidth (cudaMemcpyAsync, bytes read + written per second);
//   - int4 GEMM at M = 1 on (K, N) = (8192, 8192), (8192, 28672): bytes moved per second as a
//     share of that copy bandwidth (target >= 75%), skinny and tiled kernels;
//   - M = 16: int4 vs the dense fp16 GEMM (target: int4 >= 2.5x faster); M = 4096: target
//     int4 within 1.5x of dense;
//   - M in {1, 4, 16, 128, 512, 4096} on (4096, 4096), (4096, 11008), (11008, 4096);
//   - the layer search's products (cuda_layer_ops.h): fp32 sgemm 4096^3 NT (target >= 25
//     TFLOP/s), the Gram X^T X (TN, symmetric), and linear in f32 / bf16 (rounding included).
// --dense-sweep: every dense_gemm kernel checked against a float64 reference (and the big tiles
// bitwise against each other), then timed (bf16 in, fp32 out, as cuda::linear calls it) on the
// AWQ search's large shapes; exit code 1 when a kernel fails its check. --dense-one M N K KERNEL
// runs one kernel twice (for profilers).
// Times are medians of `reps` timings after warm-up, cudaEvent-timed on a (blocking) stream of
// the benchmark's own; a timing of M <= 16 covers 20 back-to-back calls (a stream of decode calls)
// cycling through weight copies that together exceed the L2 cache four times over, so the weights
// come from memory as when decoding a model. Skinny rows marked "nopdl" launch without
// programmatic dependent launch (the automatic choice uses it on sm_90+).
// Prints a table; writes JSON to the path given with --json (default cuda-bench.json). Exit code
// 2 when no device answers.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "../core/dtype.h"
#include "../core/errors.h"
#include "../cuda/cuda_backend.h"
#include "../cuda/cuda_gemm.h"
#include "../cuda/gemm_bench.h"
#include "../core/search.h"
#include "../cuda/cuda_layer_ops.h"
#include "../tests/ref_linear.h"

using namespace awq;

namespace {

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
void run_fn(void* ctx) { (*static_cast<std::function<void()>*>(ctx))(); }

// The pieces of one scale-search candidate of a 7B-shaped layer (hidden 4096, intermediate 11008,
// 32 heads of 128) on one 16384-token chunk (the driver's chunk), bf16 products: where the
// search's time goes. Per candidate the driver runs each chunk piece (tokens / 16384) times and
// each fake-quant once.
void bench_candidate_pieces(int reps, std::vector<std::string>& json) {
  const int64_t T = 16384, S = 512, H = 4096, I = 11008, QKV = 3 * H;
  LayerArch a;
  a.hidden = H;
  a.intermediate = I;
  a.heads = a.kv_heads = 32;
  a.head_dim = 128;
  a.eps = 1e-5f;
  std::vector<float> inv_freq(64);
  for (int i = 0; i < 64; ++i) inv_freq[i] = static_cast<float>(std::pow(10000.0, -2.0 * i / 128));
  a.inv_freq = inv_freq.data();
  const cuda::DeviceRope rope(inv_freq.data(), 64, S);
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> d(-1.f, 1.f);
  std::vector<float> h(size_t{1} << 22);
  for (auto& v : h) v = d(rng);
  auto filled = [&](int64_t n, float scale, const char* what) {
    cuda::DeviceMemory m(static_cast<size_t>(n) * 4, what);
    std::vector<float> part(h.size());
    for (size_t i = 0; i < h.size(); ++i) part[i] = h[i] * scale;
    for (int64_t i = 0; i < n; i += static_cast<int64_t>(part.size()))
      cuda::copy_to_device(static_cast<float*>(m.get()) + i, part.data(),
                           static_cast<size_t>(std::min<int64_t>(static_cast<int64_t>(part.size()), n - i)) * 4);
    return m;
  };
  cuda::DeviceMemory x = filled(T * H, 1.f, "x"), wqkv = filled(QKV * H, 0.02f, "w qkv"), wo = filled(H * H, 0.02f, "w o"),
                     wgu = filled(2 * I * H, 0.02f, "w gate|up"), wd = filled(H * I, 0.01f, "w down");
  cuda::DeviceMemory qkv(static_cast<size_t>(T * QKV) * 4, "qkv"), att(static_cast<size_t>(T * H) * 4, "att"),
      y(static_cast<size_t>(T * H) * 4, "y"), gu(static_cast<size_t>(T * 2 * I) * 4, "gu"), dd(static_cast<size_t>(T * I) * 4, "d"),
      fq(static_cast<size_t>(2 * I * H) * 4, "fq"), sdev = filled(H, 0.f, "s"), acc(8, "acc"), bad(4, "bad");
  std::vector<float> ones(H, 1.f);
  cuda::copy_to_device(sdev.get(), ones.data(), H * 4);
  cuda::fill_zero(acc.get(), 8);
  auto F = [](const cuda::DeviceMemory& m) { return static_cast<float*>(m.get()); };
  const auto bf = cuda::Precision::BF16;
  SearchOptions opt;
  const QuantParams qp = opt.search_params(H);
  struct Piece {
    const char* name;
    double flop;
    std::function<void()> fn;
  };
  const Piece pieces[] = {
      {"linear qkv (x W^T)", 2.0 * T * H * QKV, [&] { cuda::linear(F(x), T, H, F(wqkv), QKV, nullptr, F(qkv), bf); }},
      // The causal half of the two products (2 * S^2/2 * head_dim flops each) per head and block.
      {"attention_core", 2.0 * S * S * 128 * 32 * (T / S), [&] { cuda::attention_core(a, F(qkv), T, S, rope, nullptr, nullptr, F(att)); }},
      {"linear o", 2.0 * T * H * H, [&] { cuda::linear(F(att), T, H, F(wo), H, nullptr, F(y), bf); }},
      {"sum_sq_diff", 0, [&] { cuda::sum_sq_diff_acc(F(y), F(att), T * H, static_cast<double*>(acc.get())); }},
      {"linear gate|up", 2.0 * T * H * 2 * I, [&] { cuda::linear(F(x), T, H, F(wgu), 2 * I, nullptr, F(gu), bf); }},
      {"silu_mul", 0, [&] { cuda::silu_mul(F(gu), T, I, F(dd)); }},
      {"linear down", 2.0 * T * I * H, [&] { cuda::linear(F(dd), T, I, F(wd), H, nullptr, F(y), bf); }},
      {"fake quant qkv", 0, [&] { cuda::scaled_fake_quant(F(wqkv), QKV, H, F(sdev), qp, F(fq), static_cast<int*>(bad.get())); }},
      {"fake quant gate|up", 0, [&] { cuda::scaled_fake_quant(F(wgu), 2 * I, H, F(sdev), qp, F(fq), static_cast<int*>(bad.get())); }},
  };
  std::printf("\nsearch candidate pieces, 7B layer, one %lld-token chunk, bf16 products:\n", static_cast<long long>(T));
  double per[9] = {};
  for (int i = 0; i < 9; ++i) {
    std::function<void()> fn = pieces[i].fn;
    per[i] = cuda::time_median_ms(run_fn, &fn, 2, std::max(3, reps / 3));
    std::printf("  %-20s %8.3f ms", pieces[i].name, per[i]);
    if (pieces[i].flop > 0) std::printf("  %6.1f TFLOP/s", pieces[i].flop / (per[i] * 1e-3) / 1e12);
    std::printf("\n");
    char buf[200];
    std::snprintf(buf, sizeof buf, "{\"what\":\"candidate piece: %s\",\"ms\":%.4f}", pieces[i].name, per[i]);
    json.push_back(buf);
  }
  const double chunks = 128.0 * 512 / T;
  const double attn_cand = chunks * (per[0] + per[1] + per[2] + per[3]) + per[7];
  const double mlp_cand = chunks * (per[4] + per[5] + per[6] + per[3]) + per[8];
  std::printf("  per candidate at 128 blocks of 512: qkv %.1f ms (attention_core %.1f), gate_up %.1f ms; "
              "x 20 candidates: %.2f s\n",
              attn_cand, chunks * per[1], mlp_cand, 20 * (attn_cand + mlp_cand) / 1e3);
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
  bench_candidate_pieces(reps, json);
  return ok;
}


// ---- --dense-sweep: every dense kernel, checked, then timed on the AWQ search's large shapes.
struct SweepCase {
  const void *a, *b;
  void* c;
  int64_t M, N, K;
  cuda::DenseKernel kernel;
};
void run_sweep(void* p) {
  auto* c = static_cast<SweepCase*>(p);
  cuda::dense_gemm(c->a, c->b, cuda::Dtype::BF16, c->M, c->N, c->K, c->c, cuda::Dtype::F32, nullptr, nullptr, c->kernel);
}

std::vector<uint16_t> random_lowp(size_t n, uint32_t seed, bool bf16, std::vector<float>& rounded) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(-1.f, 1.f);
  rounded.resize(n);
  for (auto& v : rounded) v = d(rng);
  if (n > 3) rounded[n / 3] = 200.f;  // an outlier
  std::vector<uint16_t> h(n);
  if (bf16) {
    f32_to_bf16(rounded.data(), h.data(), static_cast<int64_t>(n));
    bf16_to_f32(h.data(), rounded.data(), static_cast<int64_t>(n));
  } else {
    f32_to_fp16(rounded.data(), h.data(), static_cast<int64_t>(n));
    fp16_to_f32(h.data(), rounded.data(), static_cast<int64_t>(n));
  }
  return h;
}

// Each kernel against a float64 reference (tolerance as in test_cuda_gemm.cc: 2^-14 sum |a b|
// plus the output rounding), on shapes with tails in M, N and K, both input and output types,
// with a bias; then the big tiles bitwise against each other (same mma sequence) on a larger
// shape. Returns the number of failing kernels.
int sweep_check(const std::vector<cuda::DenseKernel>& kernels) {
  std::vector<int> bad(kernels.size(), 0);
  uint32_t seed = 77;
  for (bool bf16 : {true, false})
    for (auto [M, N, K] : {std::tuple<int64_t, int64_t, int64_t>{256, 384, 512}, {300, 264, 200}, {130, 520, 1032},
                           {17, 1000, 136}, {257, 129, 4104}}) {
      std::vector<float> a, b;
      const auto ah = random_lowp(static_cast<size_t>(M * K), ++seed, bf16, a);
      const auto bh = random_lowp(static_cast<size_t>(N * K), ++seed, bf16, b);
      std::vector<float> bias(static_cast<size_t>(N));
      for (int64_t n = 0; n < N; ++n) bias[n] = 0.25f * static_cast<float>(n % 7) - 0.5f;
      std::vector<double> ref, mag;
      test::ref_linear64(a, M, K, b, N, bias, ref, mag);
      cuda::DeviceMemory da(ah.size() * 2, "A"), db(bh.size() * 2, "B"), dc(ref.size() * 4, "C"), dbias(N * 4, "bias");
      cuda::copy_to_device(da.get(), ah.data(), ah.size() * 2);
      cuda::copy_to_device(db.get(), bh.data(), bh.size() * 2);
      cuda::copy_to_device(dbias.get(), bias.data(), bias.size() * 4);
      const cuda::Dtype ab = bf16 ? cuda::Dtype::BF16 : cuda::Dtype::F16;
      for (size_t v = 0; v < kernels.size(); ++v)
        for (cuda::Dtype ct : {cuda::Dtype::F32, ab}) {
          cuda::fill_zero(dc.get(), dc.size());
          cuda::dense_gemm(da.get(), db.get(), ab, M, N, K, dc.get(), ct, static_cast<const float*>(dbias.get()),
                           nullptr, kernels[v]);
          cuda::synchronize();
          std::vector<float> c(ref.size());
          if (ct == cuda::Dtype::F32) {
            cuda::copy_to_host(c.data(), dc.get(), c.size() * 4);
          } else {
            std::vector<uint16_t> ch(c.size());
            cuda::copy_to_host(ch.data(), dc.get(), ch.size() * 2);
            if (bf16) bf16_to_f32(ch.data(), c.data(), static_cast<int64_t>(c.size()));
            else fp16_to_f32(ch.data(), c.data(), static_cast<int64_t>(c.size()));
          }
          const int out_bits = ct == cuda::Dtype::F32 ? 0 : bf16 ? 8 : 11;
          int64_t wrong = 0;
          for (size_t i = 0; i < c.size(); ++i) {
            const double tol =
                std::ldexp(mag[i], -14) + (out_bits ? std::ldexp(std::fabs(ref[i]), -out_bits) : 0.0) + 1e-6;
            if (!(std::fabs(c[i] - ref[i]) <= tol)) {
              if (wrong++ < 2)
                std::printf("  CHECK FAIL %-18s %s->%s M=%lld N=%lld K=%lld [%zu, %zu] gpu %.6g ref %.6g\n",
                            cuda::dense_kernel_name(kernels[v]), bf16 ? "bf16" : "f16",
                            ct == cuda::Dtype::F32 ? "f32" : "16", static_cast<long long>(M),
                            static_cast<long long>(N), static_cast<long long>(K), i / N, i % N, c[i], ref[i]);
            }
          }
          if (wrong) ++bad[v];
        }
    }
  // Bitwise within the family of kernels that runs the same mma sequence (f32 out, bf16 in,
  // tails everywhere): the pipelined big tiles against each other.
  {
    const int64_t M = 1000, N = 1800, K = 2056;
    std::vector<float> a, b;
    const auto ah = random_lowp(static_cast<size_t>(M * K), 5, true, a);
    const auto bh = random_lowp(static_cast<size_t>(N * K), 6, true, b);
    cuda::DeviceMemory da(ah.size() * 2, "A"), db(bh.size() * 2, "B"), dc(M * N * 4, "C");
    cuda::copy_to_device(da.get(), ah.data(), ah.size() * 2);
    cuda::copy_to_device(db.get(), bh.data(), bh.size() * 2);
    auto run = [&](cuda::DenseKernel k, std::vector<uint32_t>& out) {
      cuda::fill_zero(dc.get(), dc.size());
      cuda::dense_gemm(da.get(), db.get(), cuda::Dtype::BF16, M, N, K, dc.get(), cuda::Dtype::F32, nullptr, nullptr, k);
      cuda::synchronize();
      out.resize(static_cast<size_t>(M * N));
      cuda::copy_to_host(out.data(), dc.get(), out.size() * 4);
    };
    std::vector<uint32_t> base, c;
    run(cuda::DenseKernel::Tile128x256, base);
    for (size_t v = 0; v < kernels.size(); ++v) {
      if (kernels[v] != cuda::DenseKernel::Tile128x128W4) continue;
      run(kernels[v], c);
      int64_t diff = 0;
      for (size_t i = 0; i < c.size(); ++i) diff += c[i] != base[i];
      if (diff) {
        std::printf("  BITWISE FAIL %-18s: %lld of %lld outputs differ from %s\n", cuda::dense_kernel_name(kernels[v]),
                    static_cast<long long>(diff), static_cast<long long>(c.size()),
                    cuda::dense_kernel_name(cuda::DenseKernel::Tile128x256));
        ++bad[v];
      }
    }
  }
  int failing = 0;
  for (size_t v = 0; v < kernels.size(); ++v) {
    std::printf("check %-18s %s\n", cuda::dense_kernel_name(kernels[v]), bad[v] ? "FAIL" : "ok");
    failing += bad[v] != 0;
  }
  return failing;
}

int dense_sweep(int reps) {
  std::vector<cuda::DenseKernel> kernels;
  for (int k = 0; k < static_cast<int>(cuda::DenseKernel::Count); ++k) kernels.push_back(static_cast<cuda::DenseKernel>(k));
  const int failing = sweep_check(kernels);
  std::printf("correctness: %d kernel(s) failing\n\n", failing);

  // (M, N, K) of the search: linears of a 16384-token chunk (K = hidden or intermediate), the
  // Gram products X^T X over 4096-token blocks, the dW G products, and 4096 x 11008 x 4096.
  struct Shape {
    const char* what;
    int64_t M, N, K;
  };
  const Shape shapes[] = {{"linear qkv/o", 16384, 4096, 4096},   {"linear qkv fused", 16384, 12288, 4096},
                          {"linear gate+up", 16384, 22016, 4096}, {"linear down", 16384, 4096, 11008},
                          {"gram 11008", 11008, 11008, 4096},      {"gram 4096", 4096, 4096, 4096},
                          {"dW G 4096x11008", 4096, 11008, 11008}, {"4096x11008x4096", 4096, 11008, 4096}};
  int64_t max_a = 0, max_b = 0, max_c = 0;
  for (const Shape& s : shapes) {
    max_a = std::max(max_a, s.M * s.K);
    max_b = std::max(max_b, s.N * s.K);
    max_c = std::max(max_c, s.M * s.N);
  }
  // Random bf16 operands: one 16 Mi-element random block copied over the buffers.
  std::vector<float> tmp;
  const auto block = random_lowp(size_t{1} << 24, 1234, true, tmp);
  auto fill = [&](cuda::DeviceMemory& m, int64_t n) {  // (shifted copies: rows do not repeat exactly)
    const int64_t chunk = static_cast<int64_t>(block.size()) - 1024;
    for (int64_t i = 0; i < n; i += chunk)
      cuda::copy_to_device(static_cast<uint16_t*>(m.get()) + i, block.data() + (i / chunk * 37) % 1024,
                           static_cast<size_t>(std::min(chunk, n - i)) * 2);
  };
  cuda::DeviceMemory A(static_cast<size_t>(max_a) * 2, "sweep A"), B(static_cast<size_t>(max_b) * 2, "sweep B"),
      C(static_cast<size_t>(max_c) * 4, "sweep C");
  fill(A, max_a);
  fill(B, max_b);

  std::printf("dense_gemm bf16 in, f32 out, TFLOP/s (median of %d):\n%-18s", reps, "M x N x K");
  for (auto k : kernels) std::printf(" %17.17s", cuda::dense_kernel_name(k));
  std::printf("\n");
  for (const Shape& s : shapes) {
    std::printf("%-18s", (std::to_string(s.M) + "x" + std::to_string(s.N) + "x" + std::to_string(s.K)).c_str());
    double best = 0;
    cuda::DenseKernel best_k = cuda::DenseKernel::Auto;
    for (auto k : kernels) {
      if (k == cuda::DenseKernel::Tile16) {  // decode-shaped: hundreds of times slower here
        std::printf(" %17s", "-");
        continue;
      }
      SweepCase sc{A.get(), B.get(), C.get(), s.M, s.N, s.K, k};
      const double ms = cuda::time_median_ms(run_sweep, &sc, 1, reps);
      const double tf = 2.0 * s.M * s.N * s.K / (ms * 1e-3) / 1e12;
      std::printf(" %17.1f", tf);
      std::fflush(stdout);
      if (k != cuda::DenseKernel::Auto && tf > best) {
        best = tf;
        best_k = k;
      }
    }
    std::printf("   best %s (%s)\n", cuda::dense_kernel_name(best_k), s.what);
  }
  // The block order's group height (default 8 tile rows) on the big kernels.
  std::printf("\ngroup height (tile rows per group of the block order), TFLOP/s:\n%-18s", "M x N x K");
  const std::pair<cuda::DenseKernel, int> grouped[] = {
      {cuda::DenseKernel::Tile128x256, 1},   {cuda::DenseKernel::Tile128x256, 4},   {cuda::DenseKernel::Tile128x256, 16},
      {cuda::DenseKernel::Tile128x128W4, 1}, {cuda::DenseKernel::Tile128x128W4, 4}, {cuda::DenseKernel::Tile128x128W4, 16}};
  for (auto [k, gm] : grouped) std::printf(" %14s g%-2d", cuda::dense_kernel_name(k), gm);
  std::printf("\n");
  for (const Shape& s : shapes) {
    std::printf("%-18s", (std::to_string(s.M) + "x" + std::to_string(s.N) + "x" + std::to_string(s.K)).c_str());
    for (auto [k, gm] : grouped) {
      cuda::dense_force_group_m(gm);
      SweepCase sc{A.get(), B.get(), C.get(), s.M, s.N, s.K, k};
      const double ms = cuda::time_median_ms(run_sweep, &sc, 1, reps);
      std::printf(" %18.1f", 2.0 * s.M * s.N * s.K / (ms * 1e-3) / 1e12);
      std::fflush(stdout);
    }
    std::printf("\n");
  }
  cuda::dense_force_group_m(0);
  {
    // The search's entry point: cuda::linear in bf16 (fp32 x and W rounded, then dense_gemm).
    const int64_t M = 16384, N = 4096, K = 4096;
    cuda::DeviceMemory x(static_cast<size_t>(M * K) * 4, "linear x"), w(static_cast<size_t>(N * K) * 4, "linear W");
    cuda::fill_zero(x.get(), x.size());
    cuda::fill_zero(w.get(), w.size());
    LayerOpCase lc{2, static_cast<const float*>(x.get()), static_cast<const float*>(w.get()), static_cast<float*>(C.get()),
                   M, N, K, cuda::Precision::BF16};
    const double ms = cuda::time_median_ms(run_layer_op, &lc, 1, reps);
    std::printf("cuda::linear bf16 %lldx%lldx%lld (rounding x and W included): %.3f ms, %.1f TFLOP/s\n",
                static_cast<long long>(M), static_cast<long long>(N), static_cast<long long>(K), ms,
                2.0 * M * N * K / (ms * 1e-3) / 1e12);
  }
  return failing ? 1 : 0;
}
}  // namespace

int main(int argc, char** argv) {
  std::string json_path = "cuda-bench.json";
  int reps = 30;
  bool layer_ops_only = false;  // --layer-ops: only the layer-search products
  bool sweep = false;           // --dense-sweep: every dense kernel, checked and timed on large shapes
  int64_t one[4] = {0, 0, 0, 0};  // --dense-one M N K KERNEL: two calls of one kernel (for profilers)
  int64_t int4_one[3] = {0, 0, 0};  // --int4-one M K N: 40 automatic int4 calls over the weight copies (for profilers)
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--json") && i + 1 < argc) json_path = argv[++i];
    else if (!std::strcmp(argv[i], "--reps") && i + 1 < argc) reps = std::max(3, std::atoi(argv[++i]));
    else if (!std::strcmp(argv[i], "--layer-ops")) layer_ops_only = true;
    else if (!std::strcmp(argv[i], "--dense-sweep")) sweep = true;
    else if (!std::strcmp(argv[i], "--dense-one") && i + 4 < argc)
      for (auto& v : one) v = std::atoll(argv[++i]);
    else if (!std::strcmp(argv[i], "--int4-one") && i + 3 < argc)
      for (auto& v : int4_one) v = std::atoll(argv[++i]);
    else {
      std::fprintf(stderr, "usage: awq_cuda_bench [--json PATH] [--reps N] [--layer-ops | --dense-sweep | --dense-one M N K KERNEL | --int4-one M K N]\n");
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
    if (sweep) return dense_sweep(std::min(reps, 7));
    // The int4, dense and copy timings queue on a stream of their own (a serving loop's, not the
    // legacy default stream, where the skinny kernel does not use programmatic dependent launch).
    const cuda::DeviceStream stream;
    if (one[0] > 0) {
      const auto k = static_cast<cuda::DenseKernel>(one[3]);
      cuda::DeviceMemory a(static_cast<size_t>(one[0] * one[2]) * 2, "A"), b(static_cast<size_t>(one[1] * one[2]) * 2, "B"),
          c(static_cast<size_t>(one[0] * one[1]) * 4, "C");
      cuda::fill_zero(a.get(), a.size());
      cuda::fill_zero(b.get(), b.size());
      SweepCase sc{a.get(), b.get(), c.get(), one[0], one[1], one[2], k};
      const double ms = cuda::time_median_ms(run_sweep, &sc, 0, 2);
      std::printf("%s %lldx%lldx%lld: %.3f ms, %.1f TFLOP/s (zeros)\n", cuda::dense_kernel_name(k),
                  static_cast<long long>(one[0]), static_cast<long long>(one[1]), static_cast<long long>(one[2]), ms,
                  2.0 * one[0] * one[1] * one[2] / (ms * 1e-3) / 1e12);
      return 0;
    }
    if (int4_one[0] > 0) {
      cuda::GemmBenchShape shape(int4_one[1], int4_one[2], int4_one[0], stream.get(), /*with_dense=*/false);
      const double ms = shape.int4_ms(int4_one[0], 0, 2, 20);
      std::printf("int4 M=%lld K=%lld N=%lld: %.4f ms per call\n", static_cast<long long>(int4_one[0]),
                  static_cast<long long>(int4_one[1]), static_cast<long long>(int4_one[2]), ms);
      return 0;
    }
    const double copy_gbs = cuda::copy_bandwidth_gbps(stream.get());
    std::printf("device-to-device copy: %.1f GB/s (read + write, median of 15)\n\n", copy_gbs);

    std::vector<Row> rows;
    bool pdl_reported = false;
    auto bench_shape = [&](const char* what, int64_t K, int64_t N, const std::vector<int64_t>& Ms, bool skinny_too) {
      cuda::GemmBenchShape shape(K, N, *std::max_element(Ms.begin(), Ms.end()), stream.get());
      const double wbytes4 = shape.int4_weight_bytes();
      for (int64_t M : Ms) {
        struct Variant {
          std::string name;
          cuda::Int4Kernel kernel;
          cuda::SkinnyConfig skinny;
        };
        std::vector<Variant> kernels = {{what, cuda::Int4Kernel::Auto}};
        if (skinny_too && M <= cuda::kSkinnyMaxM) {
          // variant 0: as configured; 1: without the scale fold; 2: without PDL, folding where auto does
          auto add_skinny = [&](int tiles, int warps, int stages, int variant) {
            const bool no_fold = variant == 1 || (variant == 2 && M > 8);
            kernels.push_back({std::string(what) + " skinny" + std::to_string(tiles) + "x" + std::to_string(warps) + "x" +
                                   std::to_string(stages) + (no_fold ? " nofold" : "") + (variant == 2 ? " nopdl" : ""),
                               cuda::Int4Kernel::Skinny, {tiles, warps, stages, no_fold, variant == 2}});
          };
          // every skinny configuration (tiles per warp x warps per block x stages), to check the automatic choice
          for (int tiles : {2, 4})
            for (int warps : {4, 8})
              for (int stages : {2, 4})
                for (int variant : {0, 1, 2}) {
                  // the fold's and PDL's effects on the usual configurations (PDL's in both ring depths)
                  if (variant == 1 && !(stages == 2 && warps == 8)) continue;
                  if (variant == 2 && warps != 8) continue;
                  add_skinny(tiles, warps, stages, variant);
                }
          for (int variant : {0, 1, 2}) add_skinny(8, 8, 2, variant);  // eight tiles per warp, the three variants
          kernels.push_back({std::string(what) + " tiled16", cuda::Int4Kernel::Tiled16});
        }
        // the two large-M paths side by side, to check kDequantDenseMinM
        if (M >= 128) {
          kernels.push_back({std::string(what) + " tiled", cuda::Int4Kernel::Tiled});
          kernels.push_back({std::string(what) + " dequant+dense", cuda::Int4Kernel::DequantDense});
        }
        const int r = cuda::GemmBenchShape::reps_for(M, reps), batch = cuda::GemmBenchShape::batch_for(M);
        const double dense_ms = shape.dense_ms(M, 3, r, batch);
        for (const Variant& v : kernels) {
          const std::string& name = v.name;
          Row row{name, M, K, N};
          row.int4_ms = shape.int4_ms(M, 3, r, batch, v.kernel, v.skinny);
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
        if (!pdl_reported && M <= cuda::kSkinnyMaxM) {  // after skinny calls ran: a refusal shows there
          std::printf("programmatic dependent launch of the skinny kernel: %s\n", cuda::int4_pdl_in_use() ? "on" : "off");
          pdl_reported = true;
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
    std::fprintf(f, "{\"device\":\"%s\",\"sm\":\"%d%d\",\"skinny_pdl\":%s,\"copy_GBps\":%.1f,\"reps\":%d,\"rows\":[",
                 dev.name.c_str(), dev.cc_major, dev.cc_minor, cuda::int4_pdl_in_use() ? "true" : "false", copy_gbs,
                 reps);
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
