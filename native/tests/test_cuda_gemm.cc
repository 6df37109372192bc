// CUDA GEMMs (native/cuda/cuda_gemm.h) against the CPU kernels on the same inputs.
// The layout/repack and the fp16 dequantization trick are checked on the host (no GPU needed);
// the kernels run where a device answers and are skipped with the reason otherwise.
//
// Tolerances (per output, against a float64 reference built from the same fp16 inputs):
//   int4:  2^-10 * sum_k |x_k w_nk|: each dequantized weight is rounded to fp16 once (relative
//          error <= 2^-11), plus fp32 accumulation; fp16 output adds 2^-11 |y|.
//   dense: 2^-14 * sum_k |a_k b_k|: fp16/bf16 products are exact in fp32, only the tensor-core
//          fp32 accumulation rounds; fp16 / bf16 output adds 2^-11 / 2^-8 of |c|.
// A wrong index, fragment or nibble gives errors of the order of |y| itself, far above these.
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "../core/dtype.h"
#include "../core/errors.h"
#include "../core/gemm.h"
#include "../core/int4_gemm.h"
#include "awq_tensors.h"
#include "cuda_device.h"
#include "test.h"
#include "util.h"
#ifdef AWQ_WITH_CUDA
#include <cuda_runtime.h>

#include "../cuda/cuda_gemm.h"
#endif

using namespace awq;

#ifdef AWQ_WITH_CUDA
namespace {

// Stops a stream at this point until release(), so that the work queued after it is all in the
// queue when it starts and runs back to back (without it, each short call may end before the
// host has queued the next, and nothing overlaps). Whatever is queued behind it must not make the
// host wait for the stream (no synchronizing copy or allocation, no first load of a kernel
// module: the test warms its kernels up first); should that happen anyway, the hold gives up
// after 30 s and says so (timed_out) rather than hanging the GPU machine's whole run. The flag
// lives on the heap and is leaked if the stream cannot be waited for, so the host function never
// reads freed memory.
class StreamHold {
 public:
  explicit StreamHold(void* stream) : stream_(static_cast<cudaStream_t>(stream)), state_(new State) {
    if (cudaLaunchHostFunc(stream_, wait, state_) != cudaSuccess) {
      awq::test::fail(__FILE__, __LINE__, "cudaLaunchHostFunc failed");
      state_->open.store(true);
    }
  }
  StreamHold(const StreamHold&) = delete;
  StreamHold& operator=(const StreamHold&) = delete;
  ~StreamHold() {
    release();
    if (cudaStreamSynchronize(stream_) == cudaSuccess) delete state_;
  }
  void release() { state_->open.store(true); }
  bool timed_out() const { return state_->timed_out.load(); }

 private:
  struct State {
    std::atomic<bool> open{false}, timed_out{false};
  };
  static void CUDART_CB wait(void* p) {
    auto* st = static_cast<State*>(p);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (!st->open.load()) {
      if (std::chrono::steady_clock::now() > deadline) {
        st->timed_out.store(true);
        return;
      }
      std::this_thread::yield();
    }
  }
  cudaStream_t stream_;
  State* state_;
};

}  // namespace
#endif
using namespace awq::test;

#ifdef AWQ_WITH_CUDA
namespace {

struct Quant {
  int64_t K, N, group;
  std::vector<uint8_t> q, z;    // q [N, K], z [N, K/group]
  std::vector<float> s, bias;   // s [N, K/group] fp16-representable, bias [N] or empty
  int64_t groups() const { return K / group; }
  double w(int64_t n, int64_t k) const {
    const int64_t g = n * groups() + k / group;
    return (static_cast<double>(q[n * K + k]) - z[g]) * s[g];
  }
};

enum class Pattern { Random, EqualGroups, ZeroPoint0, ZeroPoint15 };

Quant make_quant(int64_t K, int64_t N, int64_t group, uint32_t seed, Pattern p, bool bias) {
  std::mt19937 rng(seed);
  Quant L{K, N, group, {}, {}, {}, {}};
  L.q.resize(N * K);
  L.z.resize(N * L.groups());
  L.s.resize(N * L.groups());
  std::uniform_real_distribution<float> sd(0.002f, 0.05f);
  for (auto& v : L.z) v = p == Pattern::ZeroPoint0 ? 0 : p == Pattern::ZeroPoint15 ? 15 : rng() % 16;
  for (auto& v : L.s) v = round_to_fp16(sd(rng));
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < K; ++k) {
      uint8_t v = rng() % 16;
      if (p == Pattern::EqualGroups) v = static_cast<uint8_t>((n * 7 + k / group * 3) % 16);  // constant per group
      if (p == Pattern::ZeroPoint0 && (k % 5 == 0)) v = 15;  // extremes next to the zero point
      if (p == Pattern::ZeroPoint15 && (k % 5 == 0)) v = 0;
      L.q[n * K + k] = v;
    }
  if (bias) {
    L.bias.resize(N);
    for (auto& v : L.bias) v = round_to_fp16(sd(rng) * 20 - 0.5f);
  }
  return L;
}

AwqTensors to_awq(const Quant& L) { return awq_tensors(L.q, L.z, L.s, L.bias, L.K, L.N, L.group); }

// x [M, K]: fp16-representable values, optionally with outlier channels.
std::vector<float> make_x(int64_t M, int64_t K, uint32_t seed, bool outliers) {
  auto x = random_floats(M * K, seed, -2.f, 2.f);
  if (outliers)
    for (int64_t m = 0; m < M; ++m) {
      x[m * K + K / 3] *= 400.f;
      x[m * K + K - 1] = -300.f;
    }
  for (auto& v : x) v = round_to_fp16(v);
  return x;
}

std::vector<uint16_t> to_fp16(const std::vector<float>& v) {
  std::vector<uint16_t> h(v.size());
  f32_to_fp16(v.data(), h.data(), static_cast<int64_t>(v.size()));
  return h;
}

// Runs the CUDA int4 GEMM with every kernel that takes this M and both output types and
// checks each against the CPU int4_linear (which is itself exact to fp32 rounding).
void check_int4_case(const Quant& L, int64_t M, bool outliers, uint32_t seed) {
  const AwqTensors t = to_awq(L);
  const auto x = make_x(M, L.K, seed, outliers);
  // CPU reference (native/core) on the same values in fp32, and sum |x w| for the bound.
  auto cpu_w = pack_int4_awq(t.qweight.data(), t.qzeros.data(), t.scales.data(), L.bias.empty() ? nullptr : t.bias.data(),
                             L.K, L.N, L.group);
  std::vector<float> ref(M * L.N);
  int4_linear(*cpu_w, x.data(), M, ref.data());
  std::vector<double> mag(M * L.N, 0.0);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < L.N; ++n) {
      double s = L.bias.empty() ? 0.0 : std::fabs(L.bias[n]);
      for (int64_t k = 0; k < L.K; ++k) s += std::fabs(x[m * L.K + k] * L.w(n, k));
      mag[m * L.N + n] = s;
    }

  auto w = cuda::int4_upload_awq(t.qweight.data(), t.qzeros.data(), t.scales.data(),
                                 L.bias.empty() ? nullptr : t.bias.data(), L.K, L.N, L.group);
  const auto xh = to_fp16(x);
  cuda::DeviceMemory dx(xh.size() * 2, "x"), dy(M * L.N * 4, "y");
  cuda::copy_to_device(dx.get(), xh.data(), xh.size() * 2);
  // Every kernel; the skinny one in every (tiles per warp, warps per block, stages, scale fold)
  // configuration.
  std::vector<std::pair<cuda::Int4Kernel, cuda::SkinnyConfig>> runs = {
      {cuda::Int4Kernel::Auto, {}}, {cuda::Int4Kernel::Tiled16, {}}, {cuda::Int4Kernel::Tiled64, {}},
      {cuda::Int4Kernel::Tiled128, {}}, {cuda::Int4Kernel::DequantDense, {}}};
  if (M <= cuda::kSkinnyMaxM)
    for (int tiles : {2, 4})
      for (int warps : {4, 8})
        for (int stages : {2, 4})
          for (bool no_fold : {false, true}) runs.push_back({cuda::Int4Kernel::Skinny, {tiles, warps, stages, no_fold}});
  if (M <= cuda::kSkinnyMaxM)
    for (bool no_fold : {false, true}) runs.push_back({cuda::Int4Kernel::Skinny, {8, 8, 2, no_fold}});
  for (const auto& [kern, cfg] : runs)
    for (cuda::Dtype yt : {cuda::Dtype::F32, cuda::Dtype::F16}) {
      {
        const cuda::ScopedSkinnyConfig forced(cfg);
        cuda::fill_zero(dy.get(), dy.size());
        cuda::int4_gemm(w, dx.get(), M, dy.get(), yt, nullptr, kern);
      }
      cuda::synchronize();
      std::vector<float> y(M * L.N);
      if (yt == cuda::Dtype::F32) {
        cuda::copy_to_host(y.data(), dy.get(), y.size() * 4);
      } else {
        std::vector<uint16_t> yh(y.size());
        cuda::copy_to_host(yh.data(), dy.get(), yh.size() * 2);
        fp16_to_f32(yh.data(), y.data(), static_cast<int64_t>(y.size()));
      }
      int bad = 0;
      for (int64_t i = 0; i < M * L.N; ++i) {
        const double tol = std::ldexp(mag[i], -10) + (yt == cuda::Dtype::F16 ? std::ldexp(std::fabs(ref[i]), -11) : 0.0) + 1e-6;
        if (!(std::fabs(y[i] - ref[i]) <= tol)) {
          if (bad++ < 3)
            fail(__FILE__, __LINE__,
                 "int4 M=" + std::to_string(M) + " K=" + std::to_string(L.K) + " N=" + std::to_string(L.N) +
                     " g=" + std::to_string(L.group) + " kernel " + std::to_string(static_cast<int>(kern)) +
                     " skinny " + std::to_string(cfg.tiles) + "x" + std::to_string(cfg.warps) + "x" +
                     std::to_string(cfg.stages) + (cfg.no_fold ? " no-fold" : "") + " y " +
                     (yt == cuda::Dtype::F16 ? "f16" : "f32") + ": [" + std::to_string(i / L.N) + ", " +
                     std::to_string(i % L.N) + "] gpu " + std::to_string(y[i]) + " cpu " + std::to_string(ref[i]) +
                     " tol " + std::to_string(tol));
        }
      }
    }
}

}  // namespace
#endif

TEST(cuda_int4_repack_matches_the_kernel_view) {
#ifndef AWQ_WITH_CUDA
  SKIP("built without CUDA");
#else
  // Host only: decode every (n, k) the way the kernels do (lane, word, fp16 pair, half) and
  // compare with the quantized values; also the packed (scale, zero) words.
  for (auto [K, N, group] : {std::tuple<int64_t, int64_t, int64_t>{128, 8, 128}, {96, 24, 32}, {384, 72, 128}, {320, 16, 64}}) {
    const Quant L = make_quant(K, N, group, static_cast<uint32_t>(K + N), Pattern::Random, false);
    const AwqTensors t = to_awq(L);
    std::vector<uint32_t> q, sz;
    const cuda::Int4Layout lay = cuda::int4_repack_host(t.qweight.data(), t.qzeros.data(), t.scales.data(), K, N, group, q, sz);
    CHECK(lay.chunks == (K + 127) / 128);
    CHECK(static_cast<int64_t>(q.size()) == N / 8 * lay.chunks * 128);
    int bad = 0;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t k = 0; k < K; ++k) {
        const int64_t nb = n / 8, g = n % 8, c = k / 128, t4 = (k % 128) / 32, j = (k % 32) / 8, i = k % 8;
        const uint32_t word = q[((nb * lay.chunks + c) * 32 + g * 4 + t4) * 4 + j];
        // pair p = i / 2 comes from bits 4p (low half, value 2p) and 16 + 4p (high half, value 2p + 1)
        const int bit = 4 * static_cast<int>(i / 2) + 16 * static_cast<int>(i % 2);
        bad += static_cast<int>((word >> bit) & 15) != L.q[n * K + k];
      }
    CHECK(bad == 0);
    // padding nibbles (k >= K in the last chunk) are zero
    if (K % 128) {
      for (int64_t nb = 0; nb < N / 8; ++nb)
        for (int lane = 0; lane < 32; ++lane)
          for (int j = 0; j < 4; ++j) {
            const int64_t k = (lay.chunks - 1) * 128 + 32 * (lane % 4) + 8 * j;
            if (k >= K) CHECK(q[((nb * lay.chunks + lay.chunks - 1) * 32 + lane) * 4 + j] == 0);
          }
    }
    for (int64_t gi = 0; gi < K / group; ++gi)
      for (int64_t n = 0; n < N; ++n) {
        const uint32_t v = sz[gi * N + n];
        CHECK(fp16_to_f32_scalar(static_cast<uint16_t>(v & 0xFFFF)) == L.s[n * (K / group) + gi]);
        CHECK(fp16_to_f32_scalar(static_cast<uint16_t>(v >> 16)) == L.z[n * (K / group) + gi]);
      }
  }
#endif
}

TEST(cuda_int4_fp16_magic_dequant_is_exact_then_rounds_once) {
  // The device conversion: (nibble | 0x6400) as fp16 = 1024 + q, (nibble << 4 | 0x6400) =
  // 1024 + 16 q; q - z is then exact and only the product with the scale rounds.
  auto h = [](uint32_t bits) { return fp16_to_f32_scalar(static_cast<uint16_t>(bits)); };
  for (uint32_t q = 0; q < 16; ++q) {
    CHECK(h(q | 0x6400u) == 1024.f + q);
    CHECK(h((q << 4) | 0x6400u) == 1024.f + 16.f * q);
    for (int z = 0; z < 16; ++z) {
      const float lo = h(q | 0x6400u) - (1024.f + z);
      const float hi = std::fma(h((q << 4) | 0x6400u), 0.0625f, -(64.f + z));
      CHECK(lo == static_cast<float>(static_cast<int>(q) - z));
      CHECK(hi == static_cast<float>(static_cast<int>(q) - z));
      for (float s : {0.0123f, 3.1e-5f, 7.5f}) {
        const float sf = round_to_fp16(s);
        CHECK(round_to_fp16(lo * sf) == round_to_fp16(static_cast<float>((static_cast<double>(q) - z) * sf)));
      }
    }
  }
}

TEST(cuda_int4_repack_rejects_bad_shapes) {
#ifndef AWQ_WITH_CUDA
  SKIP("built without CUDA");
#else
  std::vector<int32_t> qw(64 * 4), qz(4);
  std::vector<uint16_t> sc(32, 0x3C00);
  std::vector<uint32_t> q, sz;
  auto code_of = [&](int64_t K, int64_t N, int64_t group) {
    try {
      cuda::int4_repack_host(qw.data(), qz.data(), sc.data(), K, N, group, q, sz);
    } catch (const Error& e) {
      return static_cast<int>(e.code());
    }
    return -1;
  };
  const int invalid = static_cast<int>(ErrorCode::InvalidArgument);
  CHECK(code_of(48, 32, 16) == invalid);  // K not a multiple of 32
  CHECK(code_of(64, 12, 64) == invalid);  // N not a multiple of 8
  CHECK(code_of(64, 32, 16) == invalid);  // group not a multiple of 32
  CHECK(code_of(64, 32, 96) == invalid);  // group does not divide K
  CHECK(code_of(64, 32, 64) == -1);
  sc[5] = 0x7E00;  // NaN scale
  CHECK(code_of(64, 32, 64) == static_cast<int>(ErrorCode::NonFinite));
#endif
}

TEST(cuda_int4_gemm_matches_cpu) {
#ifndef AWQ_WITH_CUDA
  SKIP("built without CUDA");
#else
  require_cuda_device();
  uint32_t seed = 100;
  // K = one group, K not a multiple of 128 (padding), group 32/64/128; N multiple of 8 but not 64.
  for (auto [K, N, group] : {std::tuple<int64_t, int64_t, int64_t>{128, 8, 128}, {96, 24, 32}, {384, 200, 128},
                             {1024, 72, 64}, {640, 136, 128}})
    for (int64_t M : {1, 3, 7, 8, 9, 16, 33, 130})
      check_int4_case(make_quant(K, N, group, ++seed, Pattern::Random, M % 2 == 1), M, false, ++seed);
#endif
}

TEST(cuda_int4_gemm_adversarial_inputs) {
#ifndef AWQ_WITH_CUDA
  SKIP("built without CUDA");
#else
  require_cuda_device();
  uint32_t seed = 500;
  for (Pattern p : {Pattern::EqualGroups, Pattern::ZeroPoint0, Pattern::ZeroPoint15, Pattern::Random})
    for (int64_t M : {1, 5, 17, 64})
      check_int4_case(make_quant(512, 40, 128, ++seed, p, true), M, /*outliers=*/true, ++seed);
#endif
}

TEST(cuda_int4_decode_chain_reads_each_input_after_it_is_written) {
#ifndef AWQ_WITH_CUDA
  SKIP("built without CUDA");
#else
  require_cuda_device();
  // Calls queued back to back on one stream, each taking the previous call's output as x (N = K),
  // as a decode step does. With programmatic dependent launch (sm_90) a skinny call starts while
  // the previous call finishes and must read x only once that call's y is complete. Every output
  // starts as NaN, so a read too early gives NaN or a wrong value; each step is checked against the
  // CPU on the input the GPU actually had. Variants: automatic configuration (PDL where the device
  // has it), a forced one without PDL, and skinny calls alternating with the tiled kernel (which
  // launches without PDL). The stream is held until all 8 calls are queued (StreamHold).
  constexpr int kSteps = 8;
  uint32_t seed = 1300;
  for (int64_t K : {1024, 4096})
    for (int64_t M : {1, 7, 16})
      for (int variant = 0; variant < 3; ++variant) {
        Quant L = make_quant(K, K, 128, ++seed, Pattern::Random, false);
        // |y| about |x| from step to step: E[(q - z)^2] = 42.5 for uniform q and z
        const float scale = round_to_fp16(1.f / std::sqrt(42.5f * static_cast<float>(K)));
        for (auto& v : L.s) v = scale;
        const AwqTensors t = to_awq(L);
        auto cpu_w = pack_int4_awq(t.qweight.data(), t.qzeros.data(), t.scales.data(), nullptr, K, K, 128);
        auto w = cuda::int4_upload_awq(t.qweight.data(), t.qzeros.data(), t.scales.data(), nullptr, K, K, 128);
        std::vector<float> wabs(K * K);
        for (int64_t n = 0; n < K; ++n)
          for (int64_t k = 0; k < K; ++k) wabs[n * K + k] = static_cast<float>(std::fabs(L.w(n, k)));

        const size_t n_elems = static_cast<size_t>(M * K);
        std::vector<cuda::DeviceMemory> act;
        const std::vector<uint16_t> nan_fill(n_elems, 0x7E00);
        for (int i = 0; i <= kSteps; ++i) {
          act.emplace_back(n_elems * 2, "chain activations");
          cuda::copy_to_device(act.back().get(), i == 0 ? to_fp16(make_x(M, K, ++seed, false)).data() : nan_fill.data(),
                               n_elems * 2);
        }
        cuda::DeviceStream stream;
        {
          const cuda::ScopedSkinnyConfig forced(variant == 1 ? cuda::SkinnyConfig{4, 8, 2, M > 8, /*no_pdl=*/true} : cuda::SkinnyConfig{});
          const auto kernel_of = [&](int i) {
            return variant == 2 && i % 2 == 0 ? cuda::Int4Kernel::Tiled16 : cuda::Int4Kernel::Auto;
          };
          // Warm-up outside the hold: each kernel's first launch may load its module, which can
          // wait for the device (and so for the held stream).
          cuda::DeviceMemory scratch(n_elems * 2, "chain warm-up output");
          for (int i = 1; i <= 2; ++i)
            cuda::int4_gemm(w, act[0].get(), M, scratch.get(), cuda::Dtype::F16, stream.get(), kernel_of(i));
          stream.synchronize();
          StreamHold hold(stream.get());
          for (int i = 1; i <= kSteps; ++i)
            cuda::int4_gemm(w, act[i - 1].get(), M, act[i].get(), cuda::Dtype::F16, stream.get(), kernel_of(i));
          hold.release();
          stream.synchronize();
          if (hold.timed_out()) fail(__FILE__, __LINE__, "the held stream waited 30 s: something queued after the hold waited for it");
        }

        std::vector<std::vector<float>> host(kSteps + 1, std::vector<float>(n_elems));
        for (int i = 0; i <= kSteps; ++i) {
          std::vector<uint16_t> h(n_elems);
          cuda::copy_to_host(h.data(), act[i].get(), n_elems * 2);
          fp16_to_f32(h.data(), host[i].data(), static_cast<int64_t>(n_elems));
        }
        int bad = 0;
        std::vector<float> ref(n_elems), xabs(n_elems), mag(n_elems);
        for (int i = 1; i <= kSteps; ++i) {
          const std::vector<float>& x = host[i - 1];
          int4_linear(*cpu_w, x.data(), M, ref.data());
          // sum_k |x_mk| |w_nk| through the CPU GEMM: the scalar loop took seconds of the GPU
          // machine's time at K = 4096, M = 16.
          for (size_t e = 0; e < n_elems; ++e) xabs[e] = std::fabs(x[e]);
          sgemm(Trans::N, Trans::T, M, K, K, 1.f, xabs.data(), K, wabs.data(), K, 0.f, mag.data(), K);
          for (int64_t m = 0; m < M; ++m)
            for (int64_t n = 0; n < K; ++n) {
              const size_t e = static_cast<size_t>(m * K + n);
              const double tol = std::ldexp(1.01 * mag[e], -10) + std::ldexp(std::fabs(ref[e]), -11) + 1e-6;
              if (!(std::fabs(host[i][e] - ref[e]) <= tol) && bad++ < 3)
                fail(__FILE__, __LINE__,
                     "int4 chain K=N=" + std::to_string(K) + " M=" + std::to_string(M) + " variant " +
                         std::to_string(variant) + " step " + std::to_string(i) + " [" + std::to_string(m) + ", " +
                         std::to_string(n) + "]: gpu " + std::to_string(host[i][e]) + " cpu " + std::to_string(ref[e]));
            }
        }
      }
  // On sm_90+ the automatic variant must have run with PDL (the driver did not refuse it), or this
  // test checked nothing that the plain launches do not.
  std::string why;
  const auto devices = cuda::list_devices(&why);
  if (!devices.empty() && devices[0].cc_major >= 9) CHECK(cuda::int4_pdl_in_use());
#endif
}

TEST(cuda_int4_gemm_propagates_nan_and_rejects_bad_calls) {
#ifndef AWQ_WITH_CUDA
  SKIP("built without CUDA");
#else
  require_cuda_device();
  const int64_t K = 256, N = 16;
  const Quant L = make_quant(K, N, 128, 9, Pattern::Random, false);
  const AwqTensors t = to_awq(L);
  auto w = cuda::int4_upload_awq(t.qweight.data(), t.qzeros.data(), t.scales.data(), nullptr, K, N, 128);
  for (int64_t M : {3, 20}) {
    auto x = make_x(M, K, 3, false);
    x[1 * K + 17] = std::numeric_limits<float>::quiet_NaN();
    const auto xh = to_fp16(x);
    cuda::DeviceMemory dx(xh.size() * 2, "x"), dy(M * N * 4, "y");
    cuda::copy_to_device(dx.get(), xh.data(), xh.size() * 2);
    cuda::int4_gemm(w, dx.get(), M, dy.get(), cuda::Dtype::F32);
    cuda::synchronize();
    std::vector<float> y(M * N);
    cuda::copy_to_host(y.data(), dy.get(), y.size() * 4);
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) CHECK(std::isnan(y[m * N + n]) == (m == 1));
    CHECK_THROWS(cuda::int4_gemm(w, dx.get(), M, dy.get(), cuda::Dtype::BF16));
    if (M > cuda::kSkinnyMaxM) CHECK_THROWS(cuda::int4_gemm(w, dx.get(), M, dy.get(), cuda::Dtype::F32, nullptr, cuda::Int4Kernel::Skinny));
    CHECK_THROWS(cuda::int4_gemm(w, static_cast<char*>(dx.get()) + 2, M, dy.get(), cuda::Dtype::F32));
  }
#endif
}

TEST(cuda_dense_gemm_matches_cpu) {
#ifndef AWQ_WITH_CUDA
  SKIP("built without CUDA");
#else
  require_cuda_device();
  uint32_t seed = 900;
  for (cuda::Dtype ab : {cuda::Dtype::F16, cuda::Dtype::BF16})
    for (auto [M, N, K] : {std::tuple<int64_t, int64_t, int64_t>{1, 1, 8}, {7, 13, 40}, {16, 64, 264}, {33, 200, 520},
                           {130, 72, 1032}, {300, 260, 96}, {1100, 600, 136}}) {
      auto a = random_floats(M * K, ++seed, -1.f, 1.f), b = random_floats(N * K, ++seed, -1.f, 1.f);
      a[K / 2] = 300.f;  // an outlier
      std::vector<uint16_t> ah(a.size()), bh(b.size());
      auto round_in = [&](std::vector<float>& v, std::vector<uint16_t>& hv) {
        if (ab == cuda::Dtype::F16) f32_to_fp16(v.data(), hv.data(), static_cast<int64_t>(v.size()));
        else f32_to_bf16(v.data(), hv.data(), static_cast<int64_t>(v.size()));
        if (ab == cuda::Dtype::F16) fp16_to_f32(hv.data(), v.data(), static_cast<int64_t>(v.size()));
        else bf16_to_f32(hv.data(), v.data(), static_cast<int64_t>(v.size()));
      };
      round_in(a, ah);
      round_in(b, bh);
      std::vector<float> bias(N);
      for (int64_t n = 0; n < N; ++n) bias[n] = 0.25f * static_cast<float>(n % 7) - 0.5f;
      std::vector<float> ref(M * N);
      linear(a.data(), M, K, b.data(), N, bias.data(), ref.data());
      std::vector<double> mag(M * N);
      for (int64_t m = 0; m < M; ++m)
        for (int64_t n = 0; n < N; ++n) {
          double s = std::fabs(bias[n]);
          for (int64_t k = 0; k < K; ++k) s += std::fabs(static_cast<double>(a[m * K + k]) * b[n * K + k]);
          mag[m * N + n] = s;
        }
      cuda::DeviceMemory da(ah.size() * 2, "A"), db(bh.size() * 2, "B"), dc(M * N * 4, "C"), dbias(N * 4, "bias");
      cuda::copy_to_device(da.get(), ah.data(), ah.size() * 2);
      cuda::copy_to_device(db.get(), bh.data(), bh.size() * 2);
      cuda::copy_to_device(dbias.get(), bias.data(), bias.size() * 4);
      // (1100 x 600: more tile rows than one group of the big kernels' block order, and a partial group)
      for (int ki = 0; ki < static_cast<int>(cuda::DenseKernel::Count); ++ki)
        for (cuda::Dtype ct : {cuda::Dtype::F32, ab}) {
          const auto kern = static_cast<cuda::DenseKernel>(ki);
          cuda::fill_zero(dc.get(), dc.size());
          cuda::dense_gemm(da.get(), db.get(), ab, M, N, K, dc.get(), ct, static_cast<const float*>(dbias.get()), nullptr, kern);
          cuda::synchronize();
          std::vector<float> c(M * N);
          if (ct == cuda::Dtype::F32) {
            cuda::copy_to_host(c.data(), dc.get(), c.size() * 4);
          } else {
            std::vector<uint16_t> ch(c.size());
            cuda::copy_to_host(ch.data(), dc.get(), ch.size() * 2);
            if (ct == cuda::Dtype::F16) fp16_to_f32(ch.data(), c.data(), static_cast<int64_t>(c.size()));
            else bf16_to_f32(ch.data(), c.data(), static_cast<int64_t>(c.size()));
          }
          const int out_bits = ct == cuda::Dtype::F32 ? 0 : ct == cuda::Dtype::F16 ? 11 : 8;
          int bad = 0;
          for (int64_t i = 0; i < M * N; ++i) {
            const double tol = std::ldexp(mag[i], -14) + (out_bits ? std::ldexp(std::fabs(ref[i]), -out_bits) : 0.0) + 1e-6;
            if (!(std::fabs(c[i] - ref[i]) <= tol) && bad++ < 3)
              fail(__FILE__, __LINE__,
                   std::string("dense ") + (ab == cuda::Dtype::F16 ? "f16" : "bf16") + " M=" + std::to_string(M) +
                       " N=" + std::to_string(N) + " K=" + std::to_string(K) + " kernel " +
                       cuda::dense_kernel_name(kern) + " out " + std::to_string(static_cast<int>(ct)) + ": [" +
                       std::to_string(i / N) + ", " + std::to_string(i % N) + "] gpu " + std::to_string(c[i]) +
                       " cpu " + std::to_string(ref[i]));
          }
        }
    }
  CHECK_THROWS(cuda::dense_gemm(nullptr, nullptr, cuda::Dtype::F16, 4, 4, 12, nullptr, cuda::Dtype::F32));  // K % 8
  CHECK_THROWS(cuda::dense_gemm(nullptr, nullptr, cuda::Dtype::F16, 4, 4, 16, nullptr, cuda::Dtype::F32, nullptr, nullptr,
                                cuda::DenseKernel::Count));
#endif
}

TEST(cuda_out_of_memory_is_typed) {
#ifndef AWQ_WITH_CUDA
  SKIP("built without CUDA");
#else
  require_cuda_device();
  bool typed = false;
  try {
    cuda::DeviceMemory huge(size_t{1} << 52, "a test buffer");
  } catch (const Error& e) {
    typed = e.code() == ErrorCode::OutOfMemory && std::string(e.what()).find("a test buffer") != std::string::npos;
  }
  CHECK(typed);
#endif
}
