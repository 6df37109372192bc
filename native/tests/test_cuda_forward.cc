// The device-side dense products and layer forward (native/cuda/cuda_layer_ops.h) against the
// CPU functions (gemm.h, forward.h, vecmath.h) or float64 references on the same inputs. The
// argument checks run everywhere; everything else is skipped with the reason when no CUDA
// device answers.
//
// Tolerances (per element):
//   fp32 sgemm / linear:  1e-5 * (|alpha| sum_k |a_k b_k| + |beta c| + |bias|) against float64:
//                         fp32 accumulation over K <= ~1000 terms (typical error ~1e-7 of that).
//   bf16 / fp16 linear:   2^-14 * sum |a_k b_k| against float64 on the ROUNDED operands (the
//                         tensor cores multiply exactly and accumulate in fp32, as dense_gemm's
//                         test), and (2^-7 + 2^-13) (bf16) / (2^-10 + 2^-13) (fp16) of it
//                         against the unrounded operands: each operand rounds by <= 2^-8 / 2^-11.
//   rms_norm, silu_mul:   1e-5 / 4e-6 relative (+ tiny absolute): fp32 sums and expf vs the
//                         CPU's ordering and polynomial exp.
//   attention:            1e-5 * (1 + |ref|): outputs are convex combinations of v (|v| <= 1).
//   layer forward fp32:   3e-5 * (1 + |ref|) on every recorded tensor (several chained fp32
//                         products; the CPU and GPU differ in summation order only).
//   layer forward bf16/fp16 against a CPU emulation (the same operands rounded): max error
//                         2^-6 * (1 + |ref|), mean 5e-4: an activation whose fp32 value differs
//                         in the last bit between CPU and GPU may round to the neighbouring
//                         bf16 value, which moves a few outputs by ~2^-8 of a term.
// Index, masking or transpose bugs give errors of the order of the values themselves.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "../core/dtype.h"
#include "../core/errors.h"
#include "../core/forward.h"
#include "../core/gemm.h"
#include "../core/vecmath.h"
#include "ref_layer.h"
#include "ref_linear.h"
#include "cuda_device.h"
#include "test.h"
#include "util.h"
#ifdef AWQ_WITH_CUDA
#include "../cuda/cuda_gemm.h"
#include "../cuda/cuda_layer.h"
#include "../cuda/cuda_layer_ops.h"
#include "../cuda/sgemm_internal.h"
#endif

using namespace awq;
using namespace awq::test;

#ifdef AWQ_WITH_CUDA
namespace {

const float kNaN = std::numeric_limits<float>::quiet_NaN();

// A random layer's shape and the calibration blocks run through it (layer forward tests).
struct LayerCfg {
  int64_t H, I, nh, nkv, hd, S, blocks;
  bool bias, qk_norm;
};

cuda::DeviceMemory upload(const std::vector<float>& v, const char* what) {
  cuda::DeviceMemory m(std::max<size_t>(v.size(), 1) * sizeof(float), what);
  cuda::copy_to_device(m.get(), v.data(), v.size() * sizeof(float));
  return m;
}
std::vector<float> download(const void* dev, size_t n) {
  std::vector<float> v(n);
  cuda::synchronize();
  cuda::copy_to_host(v.data(), dev, n * sizeof(float));
  return v;
}
float* F(cuda::DeviceMemory& m) { return static_cast<float*>(m.get()); }

// Compares got[i] with want[i] within tol[i]; reports the first 3 misses under `label`.
int compare(const std::string& label, const std::vector<float>& got, const std::vector<double>& want,
            const std::vector<double>& tol, int64_t cols) {
  int bad = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    if (std::fabs(static_cast<double>(got[i]) - want[i]) <= tol[i]) continue;  // NaN fails
    if (bad++ < 3)
      fail(__FILE__, __LINE__,
           label + ": [" + std::to_string(i / cols) + ", " + std::to_string(i % cols) + "] gpu " +
               std::to_string(got[i]) + " want " + std::to_string(want[i]) + " tol " + std::to_string(tol[i]));
  }
  return bad;
}

// The same with tol = rel * (1 + |want|).
int compare_rel1(const std::string& label, const std::vector<float>& got, const std::vector<float>& want, double rel,
                 int64_t cols) {
  std::vector<double> w(want.begin(), want.end()), t(want.size());
  for (size_t i = 0; i < t.size(); ++i) t[i] = rel * (1.0 + std::fabs(w[i]));
  return compare(label, got, w, t, cols);
}

std::string trans_name(Trans t) { return t == Trans::N ? "N" : "T"; }

// ---- sgemm ----

struct GemmCase {
  Trans ta, tb;
  int64_t M, N, K, pad;
  float alpha, beta;
  bool nan_c;
};

// Runs one case on every block tile (auto, 64, 128) against a float64 reference; the padding
// of A and B holds NaN (never to be read), the padding of C a sentinel (never to be written).
void check_gemm_case(const GemmCase& g, uint32_t seed) {
  const int64_t a_rows = g.ta == Trans::N ? g.M : g.K, a_cols = g.ta == Trans::N ? g.K : g.M;
  const int64_t b_rows = g.tb == Trans::N ? g.K : g.N, b_cols = g.tb == Trans::N ? g.N : g.K;
  const int64_t lda = a_cols + g.pad, ldb = b_cols + g.pad, ldc = g.N + g.pad;
  // A pad of 3 also offsets every base pointer by one float: the unaligned (element-load) path.
  const int64_t off = g.pad == 3 ? 1 : 0;
  std::vector<float> A(off + a_rows * lda, kNaN), B(off + b_rows * ldb, kNaN), C(off + g.M * ldc, 777.f);
  auto ra = random_floats(a_rows * a_cols, seed, -1.f, 1.f), rb = random_floats(b_rows * b_cols, seed + 1, -1.f, 1.f);
  auto rc = random_floats(g.M * g.N, seed + 2, -1.f, 1.f);
  for (int64_t r = 0; r < a_rows; ++r)
    for (int64_t c = 0; c < a_cols; ++c) A[off + r * lda + c] = ra[r * a_cols + c];
  for (int64_t r = 0; r < b_rows; ++r)
    for (int64_t c = 0; c < b_cols; ++c) B[off + r * ldb + c] = rb[r * b_cols + c];
  for (int64_t m = 0; m < g.M; ++m)
    for (int64_t n = 0; n < g.N; ++n) C[off + m * ldc + n] = g.nan_c ? kNaN : rc[m * g.N + n];
  auto opA = [&](int64_t m, int64_t k) { return static_cast<double>(g.ta == Trans::N ? A[off + m * lda + k] : A[off + k * lda + m]); };
  auto opB = [&](int64_t k, int64_t n) { return static_cast<double>(g.tb == Trans::N ? B[off + k * ldb + n] : B[off + n * ldb + k]); };
  std::vector<double> want(g.M * g.N), tol(g.M * g.N);
  for (int64_t m = 0; m < g.M; ++m)
    for (int64_t n = 0; n < g.N; ++n) {
      double s = 0, mag = 0;
      for (int64_t k = 0; k < g.K; ++k) {
        const double p = opA(m, k) * opB(k, n);
        s += p;
        mag += std::fabs(p);
      }
      const double c0 = g.beta == 0.f ? 0.0 : static_cast<double>(g.beta) * C[off + m * ldc + n];
      want[m * g.N + n] = g.alpha * s + c0;
      tol[m * g.N + n] = 1e-5 * (std::fabs(g.alpha) * mag + std::fabs(c0)) + 1e-30;
    }
  auto dA = upload(A, "A"), dB = upload(B, "B");
  for (int tile : {0, 64, 128}) {
    cuda::detail::sgemm_force_tile(tile);
    auto dC = upload(C, "C");
    cuda::sgemm(g.ta, g.tb, g.M, g.N, g.K, g.alpha, F(dA) + off, lda, F(dB) + off, ldb, g.beta, F(dC) + off, ldc);
    const auto out = download(dC.get(), C.size());
    std::vector<float> got(g.M * g.N);
    int sentinel_bad = 0;
    for (int64_t m = 0; m < g.M; ++m)
      for (int64_t n = 0; n < ldc; ++n) {
        const float v = out[off + m * ldc + n];
        if (n < g.N) got[m * g.N + n] = v;
        else sentinel_bad += v != 777.f;
      }
    if (off) sentinel_bad += out[0] != 777.f;
    const std::string label = "sgemm " + trans_name(g.ta) + trans_name(g.tb) + " M=" + std::to_string(g.M) +
                              " N=" + std::to_string(g.N) + " K=" + std::to_string(g.K) + " pad=" +
                              std::to_string(g.pad) + " alpha=" + std::to_string(g.alpha) + " beta=" +
                              std::to_string(g.beta) + (g.nan_c ? " (NaN C)" : "") + " tile " + std::to_string(tile);
    compare(label, got, want, tol, g.N);
    if (sentinel_bad) fail(__FILE__, __LINE__, label + ": wrote outside C's columns");
  }
  cuda::detail::sgemm_force_tile(0);
}

// ---- linear ----

std::vector<float> rounded(const std::vector<float>& v, cuda::Precision p) {
  std::vector<uint16_t> h(v.size());
  std::vector<float> r(v.size());
  const auto n = static_cast<int64_t>(v.size());
  if (p == cuda::Precision::BF16) {
    f32_to_bf16(v.data(), h.data(), n);
    bf16_to_f32(h.data(), r.data(), n);
  } else if (p == cuda::Precision::F16) {
    f32_to_fp16(v.data(), h.data(), n);
    fp16_to_f32(h.data(), r.data(), n);
  } else {
    r = v;
  }
  return r;
}

bool lowp_rule(cuda::Precision p, int64_t in) { return p != cuda::Precision::F32 && in % 8 == 0; }

// ---- layer forward on the CPU with a linear's operands rounded as the GPU path rounds them ----

struct Records {
  std::vector<float> out, x_attn, x_o, x_mlp, x_down, attn_out, mlp_out;
  void resize(int64_t T, const LayerArch& a) {
    out.resize(T * a.hidden);
    x_attn.resize(T * a.hidden);
    x_o.resize(T * a.q_out());
    x_mlp.resize(T * a.hidden);
    x_down.resize(T * a.intermediate);
    attn_out.resize(T * a.hidden);
    mlp_out.resize(T * a.hidden);
  }
};

void emulated_forward(const RandomLayer& L, const std::vector<float>& hidden, int64_t T, int64_t S, cuda::Precision p,
                      Records& r) {
  const LayerArch& a = L.arch;
  const int64_t H = a.hidden, I = a.intermediate, QO = a.q_out(), KV = a.kv_out(), QKV = a.qkv_out();
  r.resize(T, a);
  auto lin = [&](const std::vector<float>& x, int64_t in, const std::vector<float>& W, int64_t out, const float* bias,
                 float* y) {
    const cuda::Precision q = lowp_rule(p, in) ? p : cuda::Precision::F32;
    const auto xr = rounded(x, q), wr = rounded(W, q);
    linear(xr.data(), T, in, wr.data(), out, bias, y);
  };
  std::vector<float> wqkv(QKV * H), wgu(2 * I * H), bqkv;
  concat_rows({{L.w.q, QO}, {L.w.k, KV}, {L.w.v, KV}}, H, wqkv.data());
  concat_rows({{L.w.gate, I}, {L.w.up, I}}, H, wgu.data());
  if (L.w.q_bias) {
    bqkv.resize(QKV);
    concat_rows({{L.w.q_bias, QO}, {L.w.k_bias, KV}, {L.w.v_bias, KV}}, 1, bqkv.data());
  }
  const std::vector<float> wo(L.o), wdown(L.down);
  rms_norm(hidden.data(), T, H, L.w.input_norm, a.eps, r.x_attn.data());
  std::vector<float> qkv(T * QKV), gu(T * 2 * I);
  lin(r.x_attn, H, wqkv, QKV, bqkv.empty() ? nullptr : bqkv.data(), qkv.data());
  const RopeTable rope(a.inv_freq, a.head_dim / 2, S);
  attention_core(a, qkv.data(), T, S, rope, a.qk_norm ? L.w.q_norm : nullptr, a.qk_norm ? L.w.k_norm : nullptr,
                 r.x_o.data());
  lin(r.x_o, QO, wo, H, L.w.o_bias, r.attn_out.data());
  for (int64_t i = 0; i < T * H; ++i) r.out[i] = hidden[i] + r.attn_out[i];
  rms_norm(r.out.data(), T, H, L.w.post_norm, a.eps, r.x_mlp.data());
  lin(r.x_mlp, H, wgu, 2 * I, nullptr, gu.data());
  for (int64_t t = 0; t < T; ++t)
    silu_mul(gu.data() + t * 2 * I, gu.data() + t * 2 * I + I, r.x_down.data() + t * I, I);
  lin(r.x_down, I, wdown, H, nullptr, r.mlp_out.data());
  for (int64_t i = 0; i < T * H; ++i) r.out[i] += r.mlp_out[i];
}

// The layer's weights on the device.
struct DevLayer {
  std::vector<cuda::DeviceMemory> mem;
  LayerWeights w;
  const float* put(const std::vector<float>& v) {
    if (v.empty()) return nullptr;
    mem.push_back(upload(v, "layer weight"));
    return F(mem.back());
  }
  explicit DevLayer(const RandomLayer& L) {
    w.input_norm = put(L.in_norm);
    w.post_norm = put(L.post_norm);
    w.q = put(L.q);
    w.k = put(L.k);
    w.v = put(L.v);
    w.o = put(L.o);
    w.gate = put(L.gate);
    w.up = put(L.up);
    w.down = put(L.down);
    w.q_bias = put(L.qb);
    w.k_bias = put(L.kb);
    w.v_bias = put(L.vb);
    w.o_bias = put(L.ob);
    w.q_norm = put(L.qn);
    w.k_norm = put(L.kn);
  }
};

// Device record buffers of T tokens.
struct DevRecords {
  cuda::DeviceMemory x_attn, x_o, x_mlp, x_down, attn_out, mlp_out;
  LayerRecord rec;
  DevRecords(int64_t T, const LayerArch& a)
      : x_attn(T * a.hidden * 4, "x_attn"), x_o(T * a.q_out() * 4, "x_o"), x_mlp(T * a.hidden * 4, "x_mlp"),
        x_down(T * a.intermediate * 4, "x_down"), attn_out(T * a.hidden * 4, "attn_out"),
        mlp_out(T * a.hidden * 4, "mlp_out") {
    rec.x_attn = F(x_attn);
    rec.x_o = F(x_o);
    rec.x_mlp = F(x_mlp);
    rec.x_down = F(x_down);
    rec.attn_out = F(attn_out);
    rec.mlp_out = F(mlp_out);
  }
};

// Max and mean of |got - want| / (1 + |want|).
std::pair<double, double> rel1_errors(const std::vector<float>& got, const std::vector<float>& want) {
  double mx = 0, sum = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double e = std::fabs(static_cast<double>(got[i]) - want[i]) / (1.0 + std::fabs(want[i]));
    mx = std::isnan(e) ? INFINITY : std::max(mx, e);
    sum += e;
  }
  return {mx, want.empty() ? 0.0 : sum / static_cast<double>(want.size())};
}

}  // namespace
#endif

// ---------------------------------------------------------------------------------------------

TEST(cuda_layer_ops_precision_names_and_argument_checks) {
#ifndef AWQ_WITH_CUDA
  SKIP("built without CUDA");
#else
  // Host-side checks: these throw before touching the device, so they run without one.
  CHECK(std::string(cuda::precision_name(cuda::Precision::F32)) == "f32");
  CHECK(std::string(cuda::precision_name(cuda::Precision::BF16)) == "bf16");
  CHECK(std::string(cuda::precision_name(cuda::Precision::F16)) == "f16");
  auto code_of = [](auto&& fn) {
    try {
      fn();
    } catch (const Error& e) {
      return static_cast<int>(e.code());
    }
    return -1;
  };
  const int invalid = static_cast<int>(ErrorCode::InvalidArgument);
  float* p = reinterpret_cast<float*>(uintptr_t{256});  // never dereferenced
  CHECK(code_of([&] { cuda::sgemm(Trans::N, Trans::N, -1, 4, 4, 1.f, p, 4, p, 4, 0.f, p, 4); }) == invalid);
  CHECK(code_of([&] { cuda::sgemm(Trans::N, Trans::N, 4, 4, 4, 1.f, p, 4, p, 4, 0.f, p, 3); }) == invalid);  // ldc
  CHECK(code_of([&] { cuda::sgemm(Trans::N, Trans::N, 4, 5, 6, 1.f, p, 5, p, 5, 0.f, p, 5); }) == invalid);  // lda < K
  CHECK(code_of([&] { cuda::sgemm(Trans::T, Trans::N, 4, 5, 6, 1.f, p, 3, p, 5, 0.f, p, 5); }) == invalid);  // lda < M
  CHECK(code_of([&] { cuda::sgemm(Trans::N, Trans::T, 4, 5, 6, 1.f, p, 6, p, 5, 0.f, p, 5); }) == invalid);  // ldb < K
  CHECK(code_of([&] { cuda::sgemm(Trans::N, Trans::N, 4, 5, 6, 1.f, p, 6, p, 4, 0.f, p, 5); }) == invalid);  // ldb < N
  CHECK(code_of([&] { cuda::sgemm(Trans::N, Trans::N, int64_t{1} << 32, 5, 6, 1.f, p, 6, p, 5, 0.f, p, 5); }) == invalid);
  CHECK(code_of([&] { cuda::linear(p, 4, 0, p, 4, nullptr, p); }) == invalid);
  CHECK(code_of([&] { cuda::linear(p, 4, 8, p, 4, nullptr, p, static_cast<cuda::Precision>(7)); }) == invalid);
  CHECK(code_of([&] { cuda::detail::sgemm_force_tile(32); }) == invalid);
  LayerArch a;
  a.hidden = 64, a.intermediate = 128, a.heads = 4, a.kv_heads = 2, a.head_dim = 300;
  std::vector<float> inv(150, 1.f);
  a.inv_freq = inv.data();
  CHECK(code_of([&] { cuda::decoder_layer_forward(a, LayerWeights{}, p, 32, 5, p, nullptr, cuda::Precision::F32); }) ==
        invalid);  // tokens not a multiple of seqlen
  CHECK(code_of([&] { cuda::decoder_layer_forward(a, LayerWeights{}, p, 32, 16, p, nullptr, cuda::Precision::F32); }) ==
        invalid);  // head_dim above 256
  a.head_dim = 16;
  CHECK(code_of([&] { cuda::decoder_layer_forward(a, LayerWeights{}, p, 32, 16, p, nullptr, cuda::Precision::F32); }) ==
        invalid);  // missing weights
  a.kv_heads = 3;
  CHECK(code_of([&] { cuda::decoder_layer_forward(a, LayerWeights{}, p, 32, 16, p, nullptr, cuda::Precision::F32); }) ==
        invalid);  // heads not a multiple of kv_heads
  CHECK(code_of([&] { cuda::DeviceRope r(nullptr, 8, 16); }) == invalid);
#endif
}

TEST(cuda_sgemm_all_transposes_odd_sizes_alpha_beta) {
#ifndef AWQ_WITH_CUDA
  SKIP("built without CUDA");
#else
  require_cuda_device();
  uint32_t seed = 1000;
  const std::vector<std::tuple<int64_t, int64_t, int64_t>> shapes = {
      {1, 1, 1},   {7, 33, 129}, {33, 7, 300},  {129, 130, 7}, {1, 300, 257},
      {257, 1, 64}, {130, 260, 96}, {64, 64, 8}, {65, 129, 17}, {128, 128, 9}};
  for (Trans ta : {Trans::N, Trans::T})
    for (Trans tb : {Trans::N, Trans::T})
      for (auto [M, N, K] : shapes)
        for (int64_t pad : {0, 3}) {
          check_gemm_case({ta, tb, M, N, K, pad, 1.f, 0.f, true}, seed += 3);       // beta = 0: C not read
          check_gemm_case({ta, tb, M, N, K, pad, -0.75f, 0.5f, false}, seed += 3);  // alpha, beta
        }
  // K = 0: C = beta * C (beta = 0 clears NaN)
  check_gemm_case({Trans::N, Trans::T, 5, 9, 0, 3, 1.f, 0.f, true}, seed += 3);
  check_gemm_case({Trans::T, Trans::N, 5, 9, 0, 0, 2.f, -2.f, false}, seed += 3);
#endif
}

TEST(cuda_sgemm_symmetric_gram_products) {
#ifndef AWQ_WITH_CUDA
  SKIP("built without CUDA");
#else
  require_cuda_device();
  // X^T X (T, N) and X X^T (N, T) with the same pointer: only the upper tiles are computed and
  // mirrored; the result must be the full product and exactly symmetric.
  uint32_t seed = 2000;
  for (int64_t n : {1, 31, 33, 200, 300})
    for (int64_t K : {5, 333})
      for (Trans ta : {Trans::T, Trans::N}) {
        const Trans tb = ta == Trans::T ? Trans::N : Trans::T;
        const int64_t rows = ta == Trans::T ? K : n, cols = ta == Trans::T ? n : K, ld = cols + 2, ldc = n + 1;
        std::vector<float> X(rows * ld, kNaN);
        auto r = random_floats(rows * cols, ++seed, -1.f, 1.f);
        for (int64_t i = 0; i < rows; ++i)
          for (int64_t j = 0; j < cols; ++j) X[i * ld + j] = r[i * cols + j];
        auto op = [&](int64_t m, int64_t k) { return static_cast<double>(ta == Trans::T ? X[k * ld + m] : X[m * ld + k]); };
        std::vector<double> want(n * n), tol(n * n);
        for (int64_t i = 0; i < n; ++i)
          for (int64_t j = 0; j < n; ++j) {
            double s = 0, mag = 0;
            for (int64_t k = 0; k < K; ++k) {
              s += op(i, k) * op(j, k);
              mag += std::fabs(op(i, k) * op(j, k));
            }
            want[i * n + j] = 0.5 * s;
            tol[i * n + j] = 1e-5 * 0.5 * mag + 1e-30;
          }
        auto dX = upload(X, "X");
        for (int tile : {0, 64, 128}) {
          cuda::detail::sgemm_force_tile(tile);
          cuda::DeviceMemory dC(n * ldc * 4, "C");
          std::vector<float> nan_c(n * ldc, kNaN);
          cuda::copy_to_device(dC.get(), nan_c.data(), nan_c.size() * 4);
          cuda::sgemm(ta, tb, n, n, K, 0.5f, F(dX), ld, F(dX), ld, 0.f, F(dC), ldc);
          const auto out = download(dC.get(), n * ldc);
          std::vector<float> got(n * n);
          for (int64_t i = 0; i < n; ++i)
            for (int64_t j = 0; j < n; ++j) got[i * n + j] = out[i * ldc + j];
          const std::string label = std::string("gram ") + (ta == Trans::T ? "X^T X" : "X X^T") + " n=" +
                                    std::to_string(n) + " K=" + std::to_string(K) + " tile " + std::to_string(tile);
          compare(label, got, want, tol, n);
          int asym = 0;
          for (int64_t i = 0; i < n; ++i)
            for (int64_t j = 0; j < i; ++j) asym += got[i * n + j] != got[j * n + i];
          if (asym) fail(__FILE__, __LINE__, label + ": not exactly symmetric in " + std::to_string(asym) + " places");
        }
        cuda::detail::sgemm_force_tile(0);
      }
#endif
}

TEST(cuda_sgemm_large_shapes_match_cpu) {
#ifndef AWQ_WITH_CUDA
  SKIP("built without CUDA");
#else
  require_cuda_device();
  // Shapes that fill the GPU with 128 x 128 tiles; reference: the CPU sgemm, bound from the
  // CPU product of |A| |B|.
  uint32_t seed = 3000;
  for (auto [ta, tb, M, N, K] : {std::tuple<Trans, Trans, int64_t, int64_t, int64_t>{Trans::N, Trans::T, 1536, 1664, 768},
                                 {Trans::T, Trans::N, 1408, 1408, 1000},
                                 {Trans::N, Trans::N, 1500, 1700, 777},
                                 {Trans::T, Trans::T, 1300, 1200, 515}}) {
    const int64_t lda = ta == Trans::N ? K : M, ldb = tb == Trans::N ? N : K;
    auto A = random_floats((ta == Trans::N ? M : K) * lda, ++seed, -1.f, 1.f);
    auto B = random_floats((tb == Trans::N ? K : N) * ldb, ++seed, -1.f, 1.f);
    A[lda / 2] = 40.f;  // an outlier
    std::vector<float> ref(M * N), mag(M * N), Aa(A.size()), Ba(B.size());
    for (size_t i = 0; i < A.size(); ++i) Aa[i] = std::fabs(A[i]);
    for (size_t i = 0; i < B.size(); ++i) Ba[i] = std::fabs(B[i]);
    sgemm(ta, tb, M, N, K, 1.f, A.data(), lda, B.data(), ldb, 0.f, ref.data(), N);
    sgemm(ta, tb, M, N, K, 1.f, Aa.data(), lda, Ba.data(), ldb, 0.f, mag.data(), N);
    std::vector<double> want(ref.begin(), ref.end()), tol(M * N);
    for (int64_t i = 0; i < M * N; ++i) tol[i] = 1e-5 * mag[i] + 1e-30;
    auto dA = upload(A, "A"), dB = upload(B, "B");
    for (int tile : {0, 128}) {
      cuda::detail::sgemm_force_tile(tile);
      cuda::DeviceMemory dC(M * N * 4, "C");
      cuda::sgemm(ta, tb, M, N, K, 1.f, F(dA), lda, F(dB), ldb, 0.f, F(dC), N);
      compare("large sgemm " + trans_name(ta) + trans_name(tb) + " " + std::to_string(M) + "x" + std::to_string(N) +
                  "x" + std::to_string(K) + " tile " + std::to_string(tile),
              download(dC.get(), M * N), want, tol, N);
    }
    cuda::detail::sgemm_force_tile(0);
  }
#endif
}

TEST(cuda_linear_f32_bf16_f16_match_reference) {
#ifndef AWQ_WITH_CUDA
  SKIP("built without CUDA");
#else
  require_cuda_device();
  uint32_t seed = 4000;
  int idx = 0;
  for (auto [M, in, out] : {std::tuple<int64_t, int64_t, int64_t>{1, 8, 1}, {7, 40, 33}, {33, 264, 130}, {130, 1032, 72},
                            {5, 30, 17}, {300, 96, 260}, {2, 12, 9}}) {
    const bool with_bias = idx++ % 2 == 0;
    auto x = random_floats(M * in, ++seed, -1.f, 1.f);
    for (int64_t m = 0; m < M; ++m) x[m * in + in / 3] *= 50.f;  // an outlier channel
    auto W = random_floats(out * in, ++seed, -0.2f, 0.2f);
    std::vector<float> b = with_bias ? random_floats(out, ++seed, -1.f, 1.f) : std::vector<float>{};
    auto dx = upload(x, "x"), dW = upload(W, "W"), db = upload(b, "bias");
    for (cuda::Precision p : {cuda::Precision::F32, cuda::Precision::BF16, cuda::Precision::F16}) {
      cuda::DeviceMemory dy(M * out * 4, "y");
      cuda::linear(F(dx), M, in, F(dW), out, with_bias ? F(db) : nullptr, F(dy), p);
      const auto y = download(dy.get(), M * out);
      const std::string label = std::string("linear ") + cuda::precision_name(p) + " M=" + std::to_string(M) +
                                " in=" + std::to_string(in) + " out=" + std::to_string(out) +
                                (with_bias ? " bias" : "");
      std::vector<double> want, mag, tol(M * out);
      ref_linear64(x, M, in, W, out, b, want, mag);
      if (!lowp_rule(p, in)) {  // fp32 (also the fallback for in % 8 != 0)
        for (int64_t i = 0; i < M * out; ++i) tol[i] = 1e-5 * mag[i] + 1e-30;
        compare(label, y, want, tol, out);
        continue;
      }
      const double op_bits = p == cuda::Precision::BF16 ? 7 : 10;
      for (int64_t i = 0; i < M * out; ++i) tol[i] = (std::ldexp(1.0, -op_bits) + std::ldexp(1.0, -13)) * mag[i];
      compare(label + " vs unrounded", y, want, tol, out);
      std::vector<double> want_r, mag_r;
      ref_linear64(rounded(x, p), M, in, rounded(W, p), out, b, want_r, mag_r);
      for (int64_t i = 0; i < M * out; ++i) tol[i] = std::ldexp(mag_r[i], -14) + 1e-30;
      compare(label + " vs rounded operands", y, want_r, tol, out);
    }
  }
#endif
}

TEST(cuda_linear_lowp_rounds_to_nearest_even) {
#ifndef AWQ_WITH_CUDA
  SKIP("built without CUDA");
#else
  require_cuda_device();
  // x and W pick single products: with u the operand type's unit in the last place at 1,
  // 1 + 0.75u -> 1 + u, 1 + 0.5u -> 1 (tie to even), 1 + 1.5u -> 1 + 2u (tie to even),
  // 1 + 0.25u -> 1. Rounding by truncation or ties-away would fail.
  for (cuda::Precision p : {cuda::Precision::BF16, cuda::Precision::F16}) {
    const double u = std::ldexp(1.0, p == cuda::Precision::BF16 ? -7 : -10);
    const std::vector<double> in_v = {1 + 0.75 * u, 1 + 0.5 * u, 1 + 1.5 * u, 1 + 0.25 * u};
    const std::vector<double> out_v = {1 + u, 1, 1 + 2 * u, 1};
    const int64_t K = 8, N = 4;
    for (bool in_x : {true, false}) {
      std::vector<float> x(K, 0.f), W(N * K, 0.f);
      if (in_x) {
        for (int64_t j = 0; j < N; ++j) x[j] = static_cast<float>(in_v[j]), W[j * K + j] = 1.f;
      } else {
        for (int64_t j = 0; j < N; ++j) x[j] = 1.f, W[j * K + j] = static_cast<float>(in_v[j]);
      }
      auto dx = upload(x, "x"), dW = upload(W, "W");
      cuda::DeviceMemory dy(N * 4, "y");
      cuda::linear(F(dx), 1, K, F(dW), N, nullptr, F(dy), p);
      const auto y = download(dy.get(), N);
      for (int64_t j = 0; j < N; ++j)
        if (y[j] != static_cast<float>(out_v[j]))
          fail(__FILE__, __LINE__,
               std::string(cuda::precision_name(p)) + (in_x ? " x" : " W") + "[" + std::to_string(j) + "] = " +
                   std::to_string(in_v[j]) + " gave " + std::to_string(y[j]) + ", want " + std::to_string(out_v[j]));
    }
  }
#endif
}

TEST(cuda_rms_norm_and_silu_mul_match_cpu) {
#ifndef AWQ_WITH_CUDA
  SKIP("built without CUDA");
#else
  require_cuda_device();
  uint32_t seed = 5000;
  for (int64_t rows : {1, 7, 300})
    for (int64_t cols : {1, 33, 64, 1000, 4099}) {
      auto x = random_floats(rows * cols, ++seed, -2.f, 2.f);
      x[cols / 2] = 300.f;  // an outlier in row 0
      auto w = random_floats(cols, ++seed, 0.5f, 1.5f);
      std::vector<float> ref(rows * cols);
      rms_norm(x.data(), rows, cols, w.data(), 1e-6f, ref.data());
      auto dx = upload(x, "x"), dw = upload(w, "w");
      cuda::DeviceMemory dy(rows * cols * 4, "y");
      cuda::rms_norm(F(dx), rows, cols, F(dw), 1e-6f, F(dy));
      const auto y = download(dy.get(), rows * cols);
      std::vector<double> want(ref.begin(), ref.end()), tol(ref.size());
      for (size_t i = 0; i < tol.size(); ++i) tol[i] = 1e-5 * std::fabs(want[i]) + 1e-6;
      const std::string label = "rms_norm rows=" + std::to_string(rows) + " cols=" + std::to_string(cols);
      compare(label, y, want, tol, cols);
      cuda::rms_norm(F(dx), rows, cols, F(dw), 1e-6f, F(dx));  // in place
      if (download(dx.get(), rows * cols) != y) fail(__FILE__, __LINE__, label + ": in place differs");
    }
  for (int64_t rows : {1, 5})
    for (int64_t I : {1, 7, 1000}) {
      auto gu = random_floats(rows * 2 * I, ++seed, -8.f, 8.f);
      const float special[] = {-100.f, 100.f, 0.f, -0.f, -20.f, 30.f};
      for (int i = 0; i < 6 && i < I; ++i) gu[i] = special[i];  // gate extremes in row 0
      std::vector<float> ref(rows * I);
      for (int64_t r = 0; r < rows; ++r) silu_mul(gu.data() + r * 2 * I, gu.data() + r * 2 * I + I, ref.data() + r * I, I);
      auto dgu = upload(gu, "gu");
      cuda::DeviceMemory dd(rows * I * 4, "d");
      cuda::silu_mul(F(dgu), rows, I, F(dd));
      std::vector<double> want(ref.begin(), ref.end()), tol(ref.size());
      for (size_t i = 0; i < tol.size(); ++i) tol[i] = 4e-6 * std::fabs(want[i]) + 1e-30;
      compare("silu_mul rows=" + std::to_string(rows) + " I=" + std::to_string(I), download(dd.get(), rows * I), want,
              tol, I);
    }
#endif
}

TEST(cuda_attention_core_matches_cpu) {
#ifndef AWQ_WITH_CUDA
  SKIP("built without CUDA");
#else
  require_cuda_device();
  uint32_t seed = 6000;
  struct Cfg {
    int64_t nh, nkv, hd, S, blocks;
    bool qk_norm;
    int64_t out_skew = 0;  // attn starts this many floats into its buffer (not 16-byte aligned)
  };
  // head_dim 64 and 128 run the register-tiled kernel (64 queries x 64 keys per tile): S = 1, S
  // below / one past / a multiple of the tile, GQA groups 1, 2 and 4, several blocks. An output
  // off 16-byte alignment sends head_dim 128 to the general kernel.
  for (const Cfg& c :
       {Cfg{4, 4, 16, 1, 3, false}, Cfg{4, 2, 32, 7, 2, true}, Cfg{4, 2, 64, 33, 2, false}, Cfg{8, 2, 128, 100, 2, true},
        Cfg{2, 1, 256, 65, 2, true}, Cfg{4, 1, 80, 130, 1, false}, Cfg{2, 2, 8, 300, 1, false},
        Cfg{2, 1, 200, 40, 1, true}, Cfg{4, 2, 64, 520, 1, false}, Cfg{4, 4, 64, 1, 3, false},
        Cfg{4, 1, 128, 1, 2, true}, Cfg{2, 2, 128, 7, 3, false}, Cfg{8, 2, 128, 65, 2, false},
        Cfg{4, 4, 64, 130, 2, true}, Cfg{4, 1, 64, 128, 2, false}, Cfg{8, 2, 128, 512, 2, true},
        Cfg{4, 2, 128, 100, 2, false, 1}}) {
    LayerArch a;
    a.heads = c.nh, a.kv_heads = c.nkv, a.head_dim = c.hd, a.hidden = c.nh * c.hd, a.intermediate = 1;
    a.eps = 1e-6f;
    a.qk_norm = c.qk_norm;
    std::vector<float> inv(c.hd / 2);
    for (int64_t i = 0; i < c.hd / 2; ++i) inv[i] = static_cast<float>(std::pow(10000.0, -2.0 * i / c.hd));
    a.inv_freq = inv.data();
    const int64_t T = c.S * c.blocks, ld = a.qkv_out();
    auto qkv = random_floats(T * ld, ++seed, -1.f, 1.f);
    for (int64_t t = 0; t < T; ++t)  // sharper softmax: larger q and k
      for (int64_t j = 0; j < a.q_out() + a.kv_out(); ++j) qkv[t * ld + j] *= 2.5f;
    auto qn = random_floats(c.hd, ++seed, 0.5f, 1.5f), kn = random_floats(c.hd, ++seed, 0.5f, 1.5f);
    const float* qn_h = c.qk_norm ? qn.data() : nullptr;
    const float* kn_h = c.qk_norm ? kn.data() : nullptr;
    std::vector<float> qkv_cpu = qkv, attn_cpu(T * a.q_out());
    const RopeTable rope(inv.data(), c.hd / 2, c.S);
    const double f_cpu = attention_core(a, qkv_cpu.data(), T, c.S, rope, qn_h, kn_h, attn_cpu.data());

    const cuda::DeviceRope drope(inv.data(), c.hd / 2, c.S);
    CHECK(drope.host_cos == rope.cos && drope.host_sin == rope.sin);
    auto dqkv = upload(qkv, "qkv"), dqn = upload(qn, "q_norm"), dkn = upload(kn, "k_norm");
    // NaN-filled: an output element the kernel does not write fails the comparison.
    auto dattn = upload(std::vector<float>(T * a.q_out() + c.out_skew, kNaN), "attn");
    float* out = F(dattn) + c.out_skew;
    const double f_gpu = cuda::attention_core(a, F(dqkv), T, c.S, drope, c.qk_norm ? F(dqn) : nullptr,
                                              c.qk_norm ? F(dkn) : nullptr, out);
    const std::string label = "attention heads " + std::to_string(c.nh) + "/" + std::to_string(c.nkv) + " hd " +
                              std::to_string(c.hd) + " S " + std::to_string(c.S) + " blocks " +
                              std::to_string(c.blocks) + (c.qk_norm ? " qk_norm" : "") +
                              (c.out_skew ? " unaligned output" : "");
    CHECK_NEAR(f_gpu, f_cpu, 0.0);
    compare_rel1(label + " q|k after norm+rope", download(dqkv.get(), T * ld), qkv_cpu, 1e-5, ld);
    compare_rel1(label + " output", download(out, T * a.q_out()), attn_cpu, 1e-5, a.q_out());
  }
#endif
}

TEST(cuda_sum_sq_diff_acc_matches_cpu) {
#ifndef AWQ_WITH_CUDA
  SKIP("built without CUDA");
#else
  require_cuda_device();
  uint32_t seed = 7000;
  for (int64_t n : {1, 255, 2049, 100003, 3000000}) {
    auto a = random_floats(n, ++seed, -3.f, 3.f), b = random_floats(n, ++seed, -3.f, 3.f);
    a[n / 2] = 1000.f;
    double ref = 0;
    for (int64_t i = 0; i < n; ++i) ref += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
    auto da = upload(a, "a"), db = upload(b, "b");
    cuda::DeviceMemory acc(sizeof(double), "acc");
    const double start = 1.5;
    cuda::copy_to_device(acc.get(), &start, sizeof start);
    cuda::sum_sq_diff_acc(F(da), F(db), n, static_cast<double*>(acc.get()));
    double once = 0, twice = 0, again = 0;
    cuda::synchronize();
    cuda::copy_to_host(&once, acc.get(), sizeof once);
    cuda::sum_sq_diff_acc(F(da), F(db), n, static_cast<double*>(acc.get()));
    cuda::synchronize();
    cuda::copy_to_host(&twice, acc.get(), sizeof twice);
    cuda::copy_to_device(acc.get(), &start, sizeof start);
    cuda::sum_sq_diff_acc(F(da), F(db), n, static_cast<double*>(acc.get()));
    cuda::synchronize();
    cuda::copy_to_host(&again, acc.get(), sizeof again);
    CHECK_NEAR(once, start + ref, 1e-6 * ref);
    CHECK_NEAR(twice, start + 2 * ref, 2e-6 * ref);
    CHECK(again == once);  // deterministic
    CHECK_NEAR(once - start, sum_sq_diff(a.data(), b.data(), n), 2e-6 * ref);
    // b null: the sum of a^2, bitwise what an all-zero b gives (a - 0 == a)
    const std::vector<float> zeros(static_cast<size_t>(n), 0.f);
    auto dz = upload(zeros, "zeros");
    double with_zeros = 0, with_null = 0;
    cuda::fill_zero(acc.get(), sizeof(double));
    cuda::sum_sq_diff_acc(F(da), F(dz), n, static_cast<double*>(acc.get()));
    cuda::synchronize();
    cuda::copy_to_host(&with_zeros, acc.get(), sizeof with_zeros);
    cuda::fill_zero(acc.get(), sizeof(double));
    cuda::sum_sq_diff_acc(F(da), nullptr, n, static_cast<double*>(acc.get()));
    cuda::synchronize();
    cuda::copy_to_host(&with_null, acc.get(), sizeof with_null);
    CHECK(with_null == with_zeros && with_null > 0);
  }
  // n = 0 leaves acc alone
  cuda::DeviceMemory acc(sizeof(double), "acc");
  const double start = 2.25;
  cuda::copy_to_device(acc.get(), &start, sizeof start);
  cuda::sum_sq_diff_acc(nullptr, nullptr, 0, static_cast<double*>(acc.get()));
  double got = 0;
  cuda::synchronize();
  cuda::copy_to_host(&got, acc.get(), sizeof got);
  CHECK(got == start);
#endif
}

TEST(cuda_decoder_layer_forward_matches_cpu) {
#ifndef AWQ_WITH_CUDA
  SKIP("built without CUDA");
#else
  require_cuda_device();
  using Cfg = LayerCfg;
  uint32_t seed = 8000;
  // H = 100: in % 8 != 0 for q|k|v and gate|up and I = 210 for down, so BF16 / F16 fall back to
  // fp32 there (o_proj, in = 104, stays on tensor cores). S = 512 x 5 blocks: two chunks.
  for (const Cfg& c : {Cfg{64, 160, 4, 2, 16, 16, 3, false, false}, Cfg{128, 352, 4, 2, 32, 33, 2, true, true},
                       Cfg{256, 688, 4, 2, 64, 40, 2, true, false}, Cfg{100, 210, 4, 2, 26, 17, 2, false, true},
                       Cfg{64, 128, 4, 2, 16, 512, 5, true, true}}) {
    const RandomLayer L(c.H, c.I, c.nh, c.nkv, c.hd, c.bias, c.qk_norm, seed += 20);
    const LayerArch& a = L.arch;
    const int64_t T = c.S * c.blocks, H = c.H;
    auto x = random_floats(T * H, ++seed, -1.f, 1.f);
    for (int64_t t = 0; t < T; ++t) x[t * H + 5] *= 20.f;  // an outlier channel
    const std::string cfg = "layer H=" + std::to_string(c.H) + " I=" + std::to_string(c.I) + " hd=" +
                            std::to_string(c.hd) + " S=" + std::to_string(c.S) + "x" + std::to_string(c.blocks) +
                            (c.bias ? " bias" : "") + (c.qk_norm ? " qk_norm" : "");

    // CPU reference (fp32) with every record.
    Records cpu;
    cpu.resize(T, a);
    LayerRecord crec{cpu.x_attn.data(), cpu.x_o.data(), cpu.x_mlp.data(), cpu.x_down.data(), cpu.attn_out.data(),
                     cpu.mlp_out.data()};
    double f_cpu = 0;
    decoder_layer_forward(a, L.w, x.data(), T, c.S, cpu.out.data(), &crec, CancelFlag(), &f_cpu);

    DevLayer dl(L);
    auto dx = upload(x, "hidden");
    cuda::DeviceMemory dout(T * H * 4, "out");
    for (cuda::Precision p : {cuda::Precision::F32, cuda::Precision::BF16, cuda::Precision::F16}) {
      DevRecords dr(T, a);
      double f_gpu = 0;
      cuda::decoder_layer_forward(a, dl.w, F(dx), T, c.S, F(dout), &dr.rec, p, &f_gpu);
      CHECK_NEAR(f_gpu, f_cpu, 0.0);
      Records g;
      g.out = download(dout.get(), T * H);
      g.x_attn = download(dr.rec.x_attn, T * H);
      g.x_o = download(dr.rec.x_o, T * a.q_out());
      g.x_mlp = download(dr.rec.x_mlp, T * H);
      g.x_down = download(dr.rec.x_down, T * a.intermediate);
      g.attn_out = download(dr.rec.attn_out, T * H);
      g.mlp_out = download(dr.rec.mlp_out, T * H);
      const std::string label = cfg + " " + cuda::precision_name(p);
      const std::vector<std::pair<const char*, std::pair<std::vector<float>*, std::vector<float>*>>> tensors = {
          {"out", {&g.out, &cpu.out}},       {"x_attn", {&g.x_attn, &cpu.x_attn}},
          {"x_o", {&g.x_o, &cpu.x_o}},       {"x_mlp", {&g.x_mlp, &cpu.x_mlp}},
          {"x_down", {&g.x_down, &cpu.x_down}}, {"attn_out", {&g.attn_out, &cpu.attn_out}},
          {"mlp_out", {&g.mlp_out, &cpu.mlp_out}}};
      if (p == cuda::Precision::F32) {
        for (auto& [name, pr] : tensors)
          compare_rel1(label + " " + name, *pr.first, *pr.second, 3e-5, static_cast<int64_t>(pr.second->size()) / T);
        // The same output without records, with some records, and in place (out == hidden).
        cuda::DeviceMemory dout2(T * H * 4, "out2");
        cuda::decoder_layer_forward(a, dl.w, F(dx), T, c.S, F(dout2), nullptr, p);
        if (download(dout2.get(), T * H) != g.out) fail(__FILE__, __LINE__, label + ": output differs without records");
        DevRecords dr2(T, a);
        LayerRecord some;
        some.x_o = dr2.rec.x_o;
        some.mlp_out = dr2.rec.mlp_out;
        cuda::decoder_layer_forward(a, dl.w, F(dx), T, c.S, F(dout2), &some, p);
        if (download(dout2.get(), T * H) != g.out || download(some.x_o, T * a.q_out()) != g.x_o ||
            download(some.mlp_out, T * H) != g.mlp_out)
          fail(__FILE__, __LINE__, label + ": results differ with some records");
        auto dinplace = upload(x, "hidden (in place)");
        cuda::decoder_layer_forward(a, dl.w, F(dinplace), T, c.S, F(dinplace), nullptr, p);
        if (download(dinplace.get(), T * H) != g.out) fail(__FILE__, __LINE__, label + ": in place differs");
      } else {
        Records emu;
        emulated_forward(L, x, T, c.S, p, emu);
        const std::vector<std::pair<const char*, std::pair<std::vector<float>*, std::vector<float>*>>> etensors = {
            {"out", {&g.out, &emu.out}},       {"x_attn", {&g.x_attn, &emu.x_attn}},
            {"x_o", {&g.x_o, &emu.x_o}},       {"x_mlp", {&g.x_mlp, &emu.x_mlp}},
            {"x_down", {&g.x_down, &emu.x_down}}, {"attn_out", {&g.attn_out, &emu.attn_out}},
            {"mlp_out", {&g.mlp_out, &emu.mlp_out}}};
        for (auto& [name, pr] : etensors) {
          const auto [mx, mean] = rel1_errors(*pr.first, *pr.second);
          if (!(mx <= std::ldexp(1.0, -6) && mean <= 5e-4))
            fail(__FILE__, __LINE__,
                 label + " " + name + " vs CPU emulation: max err " + std::to_string(mx) + " (tol 2^-6), mean " +
                     std::to_string(mean) + " (tol 5e-4)");
        }
        // And the rounding changes the fp32 result only at its own scale.
        const auto [mx, mean] = rel1_errors(g.out, cpu.out);
        if (!(mx <= 0.1 && mean <= 0.01))
          fail(__FILE__, __LINE__,
               label + " out vs fp32 CPU: max err " + std::to_string(mx) + ", mean " + std::to_string(mean));
      }
    }
  }
#endif
}

TEST(cuda_decoder_layer_forward_rejects_non_finite_input) {
#ifndef AWQ_WITH_CUDA
  SKIP("built without CUDA");
#else
  require_cuda_device();
  const RandomLayer L(64, 128, 4, 2, 16, false, false, 77);
  const int64_t T = 32, S = 16;
  auto x = random_floats(T * 64, 78, -1.f, 1.f);
  x[17 * 64 + 3] = kNaN;
  DevLayer dl(L);
  auto dx = upload(x, "hidden");
  cuda::DeviceMemory dout(T * 64 * 4, "out");
  std::string msg;
  int code = -1;
  try {
    cuda::decoder_layer_forward(L.arch, dl.w, F(dx), T, S, F(dout), nullptr, cuda::Precision::F32);
  } catch (const Error& e) {
    code = static_cast<int>(e.code());
    msg = e.what();
  }
  CHECK(code == static_cast<int>(ErrorCode::NonFinite));
  CHECK(msg.find("hidden states") != std::string::npos && msg.find("row 17, column 3") != std::string::npos);
  // A NaN weight surfaces as a non-finite output.
  std::vector<float> down = L.down;
  down[5] = kNaN;
  auto ddown = upload(down, "down");
  LayerWeights w = dl.w;
  w.down = F(ddown);
  auto dx2 = upload(random_floats(T * 64, 79, -1.f, 1.f), "hidden");
  code = -1;
  try {
    cuda::decoder_layer_forward(L.arch, w, F(dx2), T, S, F(dout), nullptr, cuda::Precision::F32);
  } catch (const Error& e) {
    code = static_cast<int>(e.code());
    msg = e.what();
  }
  CHECK(code == static_cast<int>(ErrorCode::NonFinite));
  CHECK(msg.find("decoder layer output") != std::string::npos);
#endif
}

// The in-place forward on device-resident hidden states (cuda_layer.h; `awq eval --backend cuda`):
// the same output as the CPU forward (fp32 tolerance as above), and an error or a cancellation
// leaves the states holding the layer's input.
TEST(cuda_decoder_layer_forward_in_place_on_device_hidden) {
#ifndef AWQ_WITH_CUDA
  SKIP("built without CUDA");
#else
  require_cuda_device();
  using Cfg = LayerCfg;
  uint32_t seed = 9100;
  for (const Cfg& c : {Cfg{64, 160, 4, 2, 16, 16, 3, false, false}, Cfg{128, 352, 4, 2, 32, 33, 2, true, true},
                       Cfg{100, 210, 4, 2, 26, 17, 2, true, false}}) {
    RandomLayer L(c.H, c.I, c.nh, c.nkv, c.hd, c.bias, c.qk_norm, seed += 10);
    const int64_t T = c.S * c.blocks, H = c.H;
    auto x = random_floats(T * H, ++seed, -1.f, 1.f);
    for (int64_t t = 0; t < T; ++t) x[t * H + 5] *= 20.f;  // an outlier channel
    const std::string label = "in place H=" + std::to_string(H) + " hd=" + std::to_string(c.hd) +
                              (c.bias ? " bias" : "") + (c.qk_norm ? " qk_norm" : "");
    std::vector<float> want(T * H), got(T * H);
    decoder_layer_forward(L.arch, L.w, x.data(), T, c.S, want.data(), nullptr, CancelFlag());
    cuda::DeviceHidden dh(x.data(), T, H);
    cuda::decoder_layer_forward(L.arch, L.w, dh, c.S, cuda::Precision::F32, CancelFlag());
    dh.download(got.data());
    compare_rel1(label, got, want, 3e-5, H);
    // chained on the same states, as evaluation runs layer after layer
    std::vector<float> want2(T * H);
    decoder_layer_forward(L.arch, L.w, want.data(), T, c.S, want2.data(), nullptr, CancelFlag());
    cuda::decoder_layer_forward(L.arch, L.w, dh, c.S, cuda::Precision::F32, CancelFlag());
    dh.download(got.data());
    compare_rel1(label + " twice", got, want2, 6e-5, H);

    // failures keep the input: a NaN weight (named), a cancellation, a width mismatch
    cuda::DeviceHidden keep(x.data(), T, H);
    const float saved = L.down[5];
    L.down[5] = kNaN;
    std::string msg;
    int code = -1;
    try {
      cuda::decoder_layer_forward(L.arch, L.w, keep, c.S, cuda::Precision::F32, CancelFlag());
    } catch (const Error& e) {
      code = static_cast<int>(e.code());
      msg = e.what();
    }
    L.down[5] = saved;
    CHECK(code == static_cast<int>(ErrorCode::NonFinite));
    CHECK(msg.find("down_proj.weight") != std::string::npos);
    const int32_t stop = 1;
    code = -1;
    try {
      cuda::decoder_layer_forward(L.arch, L.w, keep, c.S, cuda::Precision::F32, CancelFlag(&stop));
    } catch (const Error& e) {
      code = static_cast<int>(e.code());
    }
    CHECK(code == static_cast<int>(ErrorCode::Aborted));
    // finite weights that overflow (gate and up of ~3e38 each, multiplied): the device forward
    // itself fails (its output check) after the upload and the kernels, and the states must
    // still hold the input
    const std::vector<float> post_norm = L.post_norm;
    std::fill(L.post_norm.begin(), L.post_norm.end(), 3e38f);
    msg.clear();
    code = -1;
    try {
      cuda::decoder_layer_forward(L.arch, L.w, keep, c.S, cuda::Precision::F32, CancelFlag());
    } catch (const Error& e) {
      code = static_cast<int>(e.code());
      msg = e.what();
    }
    std::copy(post_norm.begin(), post_norm.end(), L.post_norm.begin());
    CHECK(code == static_cast<int>(ErrorCode::NonFinite));
    CHECK(msg.find("decoder layer output") != std::string::npos);
    cuda::DeviceHidden narrow(x.data(), T * H / 4, 4);
    CHECK_THROWS(cuda::decoder_layer_forward(L.arch, L.w, narrow, c.S, cuda::Precision::F32, CancelFlag()));
    std::vector<float> after(T * H);
    keep.download(after.data());
    if (after != x) fail(__FILE__, __LINE__, label + ": a failed call changed the hidden states");
  }
#endif
}
