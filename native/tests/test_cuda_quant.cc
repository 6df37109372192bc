// Device statistics, quantization, scaling and clip search (native/cuda/cuda_layer_ops.h) against
// the CPU functions on the same inputs.
//
// What must be bitwise: scaled_fake_quant, quantize_weights, the scale / divide / subtract /
// accumulate / convert ops (the same fp32 operations in the same order). What is compared with a
// tolerance: sums whose order differs (abs_mean_columns_dev, weight_mean: fp64 sums of the CPU's
// fp32 terms, ~1e-15 relative before the cast to float; rowwise_dot_acc: fp32 row sums; the clip
// errors: fp64 sums over tokens in another order, and fp32 dot products whose order is not
// guaranteed to be the CPU sgemm's: 1e-5 relative allowed, ~4e-15 seen on an H200). The clip
// search must choose the CPU's shrink except where the CPU's best and second-best errors are
// within 1e-5 relative.
//
// The host instantiation of quant_math.h (the device kernels' scalar code) is checked against
// quantize_rows here without a GPU; the kernels themselves run where a device answers and are
// skipped with the reason otherwise.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "../core/dtype.h"
#include "../core/errors.h"
#include "../core/gemm.h"
#include "../core/quant.h"
#include "../core/search.h"
#include "../core/stats.h"
#include "../core/threadpool.h"
#include "../cuda/quant_math.h"
#include "cuda_device.h"
#include "test.h"
#include "util.h"
#ifdef AWQ_WITH_CUDA
#include "../cuda/cuda_backend.h"
#include "../cuda/cuda_gemm.h"
#include "../cuda/cuda_layer_ops.h"
#include "../cuda/cuda_quant_detail.h"
#endif

using namespace awq;
using namespace awq::test;
namespace qm = awq::cuda::qm;

namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
[[maybe_unused]] uint64_t bits_of(double f) {
  uint64_t u;
  std::memcpy(&u, &f, 8);
  return u;
}
float float_of(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Same bits, or both NaN (NaN payloads differ between x86 and the GPU).
bool same_float(float a, float b) { return bits_of(a) == bits_of(b) || (std::isnan(a) && std::isnan(b)); }

// Index of the first element that differs (same_float), or -1.
int64_t first_diff(const float* a, const float* b, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    if (!same_float(a[i], b[i])) return i;
  return -1;
}

std::string fstr(float v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.9g (0x%08x)", static_cast<double>(v), bits_of(v));
  return buf;
}

std::string qp_str(const QuantParams& p) {
  return "bits " + std::to_string(p.bits) + " group " + std::to_string(p.group) + (p.zero_point ? " zp" : " sym") +
         (p.fp16_scale ? " fp16" : " fp32");
}

// W [rows, in] with the adversarial rows of the quantization tests: zeros, constant groups,
// signed zeros, all negative, all positive, tiny values (scale floor), an outlier column and a
// huge-but-representable row; the rest uniform in [-1, 1].
std::vector<float> adversarial_weights(int64_t rows, int64_t in, int64_t group, uint32_t seed) {
  auto w = random_floats(rows * in, seed, -1.f, 1.f);
  for (int64_t r = 0; r < rows; ++r) {
    float* row = w.data() + r * in;
    switch (r % 10) {
      case 0: std::fill(row, row + in, 0.f); break;
      case 1:
        for (int64_t k = 0; k < in; ++k) row[k] = 0.37f * static_cast<float>(1 + k / group);  // constant groups
        break;
      case 2:
        for (int64_t k = 0; k < in; ++k) row[k] = (k % 3 == 0) ? -0.f : (k % 3 == 1 ? 0.f : row[k] * 1e-3f);
        break;
      case 3:
        for (int64_t k = 0; k < in; ++k) row[k] = -std::fabs(row[k]) - 0.01f;
        break;
      case 4:
        for (int64_t k = 0; k < in; ++k) row[k] = std::fabs(row[k]) + 0.01f;
        break;
      case 5:
        for (int64_t k = 0; k < in; ++k) row[k] *= 1e-9f;  // below the 1e-5 range floor
        break;
      case 6:
        for (int64_t k = 0; k < in; ++k) row[k] *= 3000.f;
        break;
      default: break;
    }
    row[in / 3] *= 60.f;  // an outlier column in every row
  }
  return w;
}

// Per-column scales as the search produces them: mostly O(1), a few large and small.
std::vector<float> search_scales(int64_t in, uint32_t seed) {
  auto s = random_floats(in, seed, 0.2f, 4.f);
  for (int64_t j = 0; j < in; j += 17) s[j] = 40.f + static_cast<float>(j % 5);
  for (int64_t j = 5; j < in; j += 23) s[j] = 1e-2f;
  return s;
}

// ---- host emulation of the kernels' per-group code (warp of 32 lanes, butterfly merge) ----

qm::GroupQuant emulate_warp_group_quant(const float* v, int64_t g, const QuantParams& p) {
  if (p.zero_point) {
    qm::MinMax lanes[32];
    for (int64_t k = 0; k < g; ++k) lanes[k % 32].add(v[k]);
    for (int off = 16; off > 0; off >>= 1) {
      qm::MinMax next[32];
      for (int l = 0; l < 32; ++l) {
        next[l] = lanes[l];
        next[l].merge(lanes[l ^ off]);
      }
      std::copy(next, next + 32, lanes);
    }
    qm::MinMax mm = lanes[0];
    mm.seed_first(v[0]);
    return qm::group_quant_zero_point(mm.mx, mm.mn, p.bits, p.fp16_scale);
  }
  float lanes[32];
  std::fill(lanes, lanes + 32, 0.f);
  for (int64_t k = 0; k < g; ++k) lanes[k % 32] = qm::qmax(lanes[k % 32], qm::f_abs(v[k]));
  for (int off = 16; off > 0; off >>= 1) {
    float next[32];
    for (int l = 0; l < 32; ++l) next[l] = qm::qmax(lanes[l], lanes[l ^ off]);
    std::copy(next, next + 32, lanes);
  }
  return qm::group_quant_symmetric(lanes[0], p.bits, p.fp16_scale);
}

// quantize_rows via the emulation; returns false when a scale is not finite.
bool emulate_quantize(const float* w, int64_t rows, int64_t cols, const QuantParams& p, float* dq, uint8_t* q,
                      uint8_t* zeros, float* scales) {
  bool ok = true;
  const int64_t groups = cols / p.group;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < groups; ++j) {
      const float* src = w + r * cols + j * p.group;
      const qm::GroupQuant gq = emulate_warp_group_quant(src, p.group, p);
      ok &= qm::f_isfinite(gq.s);
      scales[r * groups + j] = gq.s;
      zeros[r * groups + j] = static_cast<uint8_t>(gq.z);
      for (int64_t k = 0; k < p.group; ++k) {
        const float lv = qm::quant_level(src[k], gq);
        q[r * cols + j * p.group + k] = static_cast<uint8_t>(lv);
        dq[r * cols + j * p.group + k] = qm::dequant(lv, gq);
      }
    }
  return ok;
}

const QuantParams kQuantConfigs[] = {
    {4, 128, true, true}, {4, 128, true, false}, {4, 128, false, true}, {4, 128, false, false},
    {2, 32, true, true},  {3, 64, true, false},  {5, 32, false, true},  {6, 64, true, true},
    {7, 128, false, false}, {8, 32, true, true}, {8, 64, false, true},  {3, 128, false, false},
    {2, 64, false, true},
};

}  // namespace

// ---- host checks of the device arithmetic (no GPU needed) ----

TEST(cuda_quant_math_fp16_rounding_matches_cpu) {
  // every fp16 neighbourhood: the value, the midpoints to the next value and one float ulp
  // either side of them, both signs; plus a strided sweep of all float bit patterns
  int64_t bad = 0, checked = 0;
  auto check = [&](float f) {
    ++checked;
    const uint16_t a = qm::f32_to_fp16(f), b = f32_to_fp16_scalar(f);
    const float ra = qm::round_to_fp16(f), rb = round_to_fp16(f);
    if (a != b || bits_of(ra) != bits_of(rb)) {
      if (bad++ < 5) fail(__FILE__, __LINE__, "fp16 rounding of " + fstr(f) + ": " + fstr(ra) + " vs cpu " + fstr(rb));
    }
  };
  for (uint32_t h = 0; h < 0x7c00u; ++h) {
    const float lo = fp16_to_f32_scalar(static_cast<uint16_t>(h)), hi = fp16_to_f32_scalar(static_cast<uint16_t>(h + 1));
    const float mid = static_cast<float>((static_cast<double>(lo) + hi) / 2.0);
    for (float f : {lo, mid, std::nextafter(mid, 0.f), std::nextafter(mid, kInf), hi}) {
      check(f);
      check(-f);
    }
  }
  for (uint64_t u = 0; u < (uint64_t{1} << 32); u += 4099) check(float_of(static_cast<uint32_t>(u)));
  for (float f : {kNaN, kInf, -kInf, 65504.f, 65519.99f, 65520.f, 1e-8f, 2.98e-8f, 2.9802322e-8f, 3.92e-8f})
    check(f);
  CHECK(bad == 0);
  CHECK(checked > 1000000);
}

TEST(cuda_quant_math_matches_quantize_rows) {
  // The kernels' per-group code (lane-strided reduction, butterfly merge, quant_math.h) on the
  // host against quantize_rows: identical dq, q, zeros, scales and overflow flag.
  for (const QuantParams& p0 : kQuantConfigs) {
    for (int64_t in : {int64_t{128}, int64_t{384}}) {
      QuantParams p = p0;
      if (in % p.group) continue;
      const int64_t rows = 23, groups = in / p.group;
      auto w = adversarial_weights(rows, in, p.group, static_cast<uint32_t>(p.bits * 131 + p.group + in));
      // NaN at a group's first element (makes the scale NaN) and in the middle (skipped by the
      // min/max, NaN output), Inf (scale Inf)
      w[7 * in + 0] = kNaN;
      w[8 * in + 5] = kNaN;
      w[9 * in + 2] = kInf;
      std::vector<float> dq_c(rows * in), dq_e(rows * in), s_c(rows * groups), s_e(rows * groups);
      std::vector<uint8_t> q_c(rows * in), q_e(rows * in), z_c(rows * groups), z_e(rows * groups);
      const bool ok_c = quantize_rows(w.data(), 0, rows, in, p, dq_c.data(), q_c.data(), z_c.data(), s_c.data());
      const bool ok_e = emulate_quantize(w.data(), rows, in, p, dq_e.data(), q_e.data(), z_e.data(), s_e.data());
      CHECK(ok_c == ok_e);
      CHECK(!ok_c);  // the NaN / Inf rows make scales non-finite
      const int64_t d = first_diff(dq_c.data(), dq_e.data(), rows * in);
      if (d >= 0) fail(__FILE__, __LINE__, qp_str(p) + " dq[" + std::to_string(d) + "] " + fstr(dq_e[d]) + " vs cpu " + fstr(dq_c[d]));
      const int64_t ds = first_diff(s_c.data(), s_e.data(), rows * groups);
      if (ds >= 0) fail(__FILE__, __LINE__, qp_str(p) + " scale[" + std::to_string(ds) + "] " + fstr(s_e[ds]) + " vs cpu " + fstr(s_c[ds]));
      // q / z of a NaN group are conversions of NaN (meaningless on both sides): compare finite groups
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t j = 0; j < groups; ++j) {
          if (!std::isfinite(s_c[r * groups + j])) continue;
          bool same = z_c[r * groups + j] == z_e[r * groups + j];
          for (int64_t k = 0; k < p.group; ++k) {
            const int64_t i = r * in + j * p.group + k;
            if (std::isfinite(dq_c[i])) same &= q_c[i] == q_e[i];
          }
          if (!same) fail(__FILE__, __LINE__, qp_str(p) + " q/z differ at row " + std::to_string(r) + " group " + std::to_string(j));
        }
    }
  }
}

TEST(cuda_quant_math_matches_scaled_fake_quant_and_clip_rows) {
  // scaled_fake_quant's W * s -> Q -> / s and the clip search's clamp -> Q -> - W, element by
  // element with quant_math.h, against the CPU functions.
  for (const QuantParams& p : kQuantConfigs) {
    const int64_t rows = 20, in = 256;
    if (in % p.group) continue;
    const auto w = adversarial_weights(rows, in, p.group, static_cast<uint32_t>(p.bits + 7 * p.group));
    const auto s = search_scales(in, 3);
    std::vector<float> cpu(rows * in), emu(rows * in), t(in), dq(in), sc(in);
    std::vector<uint8_t> q(in), z(in);
    const bool ok_c = scaled_fake_quant(w.data(), rows, in, s.data(), p, cpu.data());
    bool ok_e = true;
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t j = 0; j < in; ++j) t[j] = qm::f_mul(w[r * in + j], s[j]);
      ok_e &= emulate_quantize(t.data(), 1, in, p, dq.data(), q.data(), z.data(), sc.data());
      for (int64_t j = 0; j < in; ++j) emu[r * in + j] = qm::f_div(dq[j], s[j]);
    }
    CHECK(ok_c == ok_e);
    const int64_t d = first_diff(cpu.data(), emu.data(), rows * in);
    if (d >= 0) fail(__FILE__, __LINE__, "scaled_fake_quant " + qp_str(p) + " [" + std::to_string(d) + "] " + fstr(emu[d]) + " vs cpu " + fstr(cpu[d]));

    // clip rows: for shrink steps 0, 3, 9 of n_grid 20
    const int64_t g = p.group, groups = in / g;
    for (int step : {0, 3, 9}) {
      const float shrink = qm::clip_shrink(step, 20);
      CHECK(bits_of(shrink) == bits_of(static_cast<float>(1.0 - static_cast<double>(step) / 20)));
      std::vector<float> D(g), E(g);
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t j = 0; j < groups; ++j) {
          const float* wg = w.data() + r * in + j * g;
          float m0 = 0.f;
          for (int64_t k = 0; k < g; ++k) m0 = std::max(m0, std::fabs(wg[k]));
          const float m = m0 * shrink;
          // search.cc
          for (int64_t k = 0; k < g; ++k) D[k] = std::min(std::max(wg[k], -m), m);
          quantize_rows(D.data(), 0, 1, g, QuantParams{p.bits, g, p.zero_point, p.fp16_scale}, D.data(), nullptr,
                        nullptr, nullptr);
          for (int64_t k = 0; k < g; ++k) D[k] -= wg[k];
          // the kernel's arithmetic
          std::vector<float> c(g);
          float a = 0.f;
          for (int64_t k = 0; k < g; ++k) a = qm::qmax(a, qm::f_abs(wg[k]));
          const float me = qm::f_mul(a, shrink);
          for (int64_t k = 0; k < g; ++k) c[k] = qm::qmin(qm::qmax(wg[k], -me), me);
          const qm::GroupQuant gq = emulate_warp_group_quant(c.data(), g, p);
          for (int64_t k = 0; k < g; ++k) E[k] = qm::f_sub(qm::dequant(qm::quant_level(c[k], gq), gq), wg[k]);
          const int64_t e = first_diff(D.data(), E.data(), g);
          if (e >= 0)
            fail(__FILE__, __LINE__, "clip row " + qp_str(p) + " step " + std::to_string(step) + " row " + std::to_string(r) +
                                         " group " + std::to_string(j) + " k " + std::to_string(e) + ": " + fstr(E[e]) +
                                         " vs cpu " + fstr(D[e]));
        }
    }
  }
}

// ---- device checks ----

#ifdef AWQ_WITH_CUDA
namespace {

// A device copy of a host vector (or an uninitialized device array of n elements).
template <class T>
struct Dev {
  cuda::DeviceMemory mem;
  int64_t n = 0;
  explicit Dev(const std::vector<T>& h) : mem(h.size() * sizeof(T), "test buffer"), n(static_cast<int64_t>(h.size())) {
    cuda::copy_to_device(mem.get(), h.data(), h.size() * sizeof(T));
  }
  explicit Dev(int64_t count) : mem(count * sizeof(T), "test buffer"), n(count) {}
  T* get() const { return static_cast<T*>(mem.get()); }
  std::vector<T> host() const {
    std::vector<T> h(n);
    cuda::synchronize();
    cuda::copy_to_host(h.data(), mem.get(), n * sizeof(T));
    return h;
  }
};

// The CPU clip search's error table (search.cc's loop, verbatim arithmetic) for rows [r0, r1):
// err[(j * steps + i) * (r1 - r0) + (r - r0)]. Runs the (group, step) pairs in a parallel_for
// like the CPU, so its sgemm calls run single-threaded as there.
std::vector<double> cpu_clip_errors(const float* W, int64_t out, int64_t in, const float* X, int64_t n,
                                    const QuantParams& p, int n_grid, float max_shrink, int64_t r0, int64_t r1,
                                    int* steps_out) {
  (void)out;
  const int64_t g = p.group, groups = in / g, R = r1 - r0;
  const int steps = static_cast<int>(static_cast<double>(n_grid) * max_shrink);
  *steps_out = steps;
  const int64_t step = std::max<int64_t>(1, n / 512);
  const int64_t ns = (n + step - 1) / step;
  std::vector<double> err(static_cast<size_t>(groups * steps * R));
  parallel_for(groups * steps, 1, [&](int64_t u0, int64_t u1, int) {
    std::vector<float> Xj(ns * g), Wj(R * g), D(R * g), E(ns * R);
    for (int64_t u = u0; u < u1; ++u) {
      const int64_t j = u / steps, i = u % steps;
      for (int64_t t = 0; t < ns; ++t)
        std::copy(X + t * step * in + j * g, X + t * step * in + (j + 1) * g, Xj.data() + t * g);
      for (int64_t r = 0; r < R; ++r) std::copy(W + (r0 + r) * in + j * g, W + (r0 + r) * in + (j + 1) * g, Wj.data() + r * g);
      const float shrink = static_cast<float>(1.0 - static_cast<double>(i) / n_grid);
      for (int64_t r = 0; r < R; ++r) {
        float m0 = 0.f;
        for (int64_t k = 0; k < g; ++k) m0 = std::max(m0, std::fabs(Wj[r * g + k]));
        const float m = m0 * shrink;
        for (int64_t k = 0; k < g; ++k) D[r * g + k] = std::min(std::max(Wj[r * g + k], -m), m);
      }
      quantize_rows(D.data(), 0, R, g, QuantParams{p.bits, g, p.zero_point, p.fp16_scale}, D.data(), nullptr, nullptr,
                    nullptr);
      for (int64_t e = 0; e < R * g; ++e) D[e] -= Wj[e];
      sgemm(Trans::N, Trans::T, ns, R, g, 1.f, Xj.data(), g, D.data(), g, 0.f, E.data(), R);
      double* dst = err.data() + u * R;
      for (int64_t r = 0; r < R; ++r) dst[r] = 0.0;
      for (int64_t t = 0; t < ns; ++t)
        for (int64_t r = 0; r < R; ++r) dst[r] += static_cast<double>(E[t * R + r]) * E[t * R + r];
    }
  });
  return err;
}

struct Choice {
  int best = 0;
  bool near_tie = false;  // best and second best within 1e-5 relative
};

// The CPU's argmin (first strict minimum) per (row, group) of an error table of R rows.
std::vector<Choice> choices(const std::vector<double>& err, int64_t R, int64_t groups, int steps) {
  std::vector<Choice> c(R * groups);
  for (int64_t r = 0; r < R; ++r)
    for (int64_t j = 0; j < groups; ++j) {
      int best = 0;
      double best_err = std::numeric_limits<double>::infinity();
      for (int i = 0; i < steps; ++i) {
        const double e = err[(j * steps + i) * R + r];
        if (e < best_err) {
          best_err = e;
          best = i;
        }
      }
      bool tie = false;
      for (int i = 0; i < steps; ++i) {
        const double e = err[(j * steps + i) * R + r];
        if (i != best && std::fabs(e - best_err) <= 1e-5 * std::fabs(best_err)) tie = true;
      }
      c[r * groups + j] = {best, tie};
    }
  return c;
}

// Compares GPU and CPU error tables (same layout, R rows): relative 1e-5 (plus 1e-30 absolute for
// exact zeros, which both sides produce when D is exactly zero). Returns the number that fail.
int64_t compare_errors(const std::vector<double>& gpu, const std::vector<double>& cpu, const std::string& what) {
  int64_t bad = 0;
  double worst = 0.0;
  if (gpu.size() != cpu.size()) {
    fail(__FILE__, __LINE__, what + ": error table sizes differ");
    return 1;
  }
  for (size_t e = 0; e < cpu.size(); ++e) {
    const double tol = 1e-5 * std::fabs(cpu[e]) + 1e-30;
    const double diff = std::fabs(gpu[e] - cpu[e]);
    if (cpu[e] != 0.0) worst = std::max(worst, diff / std::fabs(cpu[e]));
    if (!(diff <= tol)) {
      if (bad++ < 5)
        fail(__FILE__, __LINE__, what + ": err[" + std::to_string(e) + "] gpu " + std::to_string(gpu[e]) + " cpu " +
                                     std::to_string(cpu[e]));
    }
  }
  std::printf("     %s: %zu errors, worst relative difference %.2e\n", what.c_str(), cpu.size(), worst);
  return bad;
}

struct ClipCase {
  int64_t out, in, n, group;  // group -1: whole row
  bool zero_point;
  int bits, n_grid;
  float max_shrink;
  bool fp16_scale;
};

void check_clip_case(const ClipCase& c, uint32_t seed) {
  QuantParams p{c.bits, c.group < 0 ? c.in : c.group, c.zero_point, c.fp16_scale};
  const int64_t g = p.group, groups = c.in / g;
  const std::string what = "clip out " + std::to_string(c.out) + " in " + std::to_string(c.in) + " n " +
                           std::to_string(c.n) + " " + qp_str(p) + " grid " + std::to_string(c.n_grid) + " x " +
                           std::to_string(c.max_shrink);
  // weights with per-row outliers (so clipping pays), a zero row and a constant-group row;
  // activations with outlier channels
  auto W = random_floats(c.out * c.in, seed, -1.f, 1.f);
  for (int64_t r = 0; r < c.out; ++r) {
    W[r * c.in + (r * 7) % c.in] *= 8.f;
    if (r % 11 == 3) W[r * c.in + (r * 13 + 5) % c.in] = -6.f;
  }
  if (c.out > 2) {
    std::fill(W.begin() + c.in, W.begin() + 2 * c.in, 0.f);
    for (int64_t k = 0; k < c.in; ++k) W[2 * c.in + k] = 0.25f;
  }
  auto X = random_floats(c.n * c.in, seed + 1, -1.f, 1.f);
  for (int64_t t = 0; t < c.n; ++t) {
    X[t * c.in + c.in / 2] *= 30.f;
    X[t * c.in + 1] *= 5.f;
  }

  int steps = 0;
  const auto cpu_err = cpu_clip_errors(W.data(), c.out, c.in, X.data(), c.n, p, c.n_grid, c.max_shrink, 0, c.out, &steps);
  const auto want = choices(cpu_err, c.out, groups, steps);

  // the CPU clip search itself, to tie the replica above to it
  std::vector<float> Wc = W;
  double cpu_flops = 0;
  const ClipResult cr = clip_search(Wc.data(), c.out, c.in, X.data(), c.n, p, c.n_grid, c.max_shrink, CancelFlag(), &cpu_flops);

  Dev<float> dW(W), dX(X);
  std::vector<double> gpu_err;
  cuda::detail::clip_search_errors(dW.get(), c.out, c.in, dX.get(), c.n, p, c.n_grid, c.max_shrink, gpu_err);
  if (steps <= 0) {
    CHECK(gpu_err.empty());
  } else {
    compare_errors(gpu_err, cpu_err, what);
  }
  double gpu_flops = 0;
  const ClipResult gr = cuda::clip_search(dW.get(), c.out, c.in, dX.get(), c.n, p, c.n_grid, c.max_shrink, &gpu_flops);
  const auto Wg = dW.host();
  CHECK(bits_of(gpu_flops) == bits_of(cpu_flops));
  CHECK(gr.histogram.size() == cr.histogram.size());

  // per (row, group): the CPU's clamp equals the replica's choice; the GPU's equals it unless a near tie
  int64_t replica_mismatch = 0, flipped = 0, wrong = 0;
  for (int64_t r = 0; r < c.out; ++r)
    for (int64_t j = 0; j < groups; ++j) {
      const Choice ch = steps > 0 ? want[r * groups + j] : Choice{};
      const float* w0 = W.data() + r * c.in + j * g;
      std::vector<float> expect(w0, w0 + g);
      if (steps > 0) {
        float m0 = 0.f;
        for (int64_t k = 0; k < g; ++k) m0 = std::max(m0, std::fabs(w0[k]));
        const float m = m0 * static_cast<float>(1.0 - static_cast<double>(ch.best) / c.n_grid);
        for (auto& v : expect) v = std::min(std::max(v, -m), m);
      }
      const bool cpu_same = first_diff(expect.data(), Wc.data() + r * c.in + j * g, g) < 0;
      const bool gpu_same = first_diff(expect.data(), Wg.data() + r * c.in + j * g, g) < 0;
      if (!cpu_same && !ch.near_tie) ++replica_mismatch;
      if (!gpu_same) {
        if (ch.near_tie) {
          ++flipped;
        } else if (wrong++ < 5) {
          fail(__FILE__, __LINE__, what + ": row " + std::to_string(r) + " group " + std::to_string(j) +
                                       " clamped differently (cpu step " + std::to_string(ch.best) + ")");
        }
      }
    }
  CHECK(replica_mismatch == 0);
  CHECK(wrong == 0);
  if (flipped == 0) {
    CHECK(gr.histogram == cr.histogram);
    CHECK(bits_of(gr.mean_shrink) == bits_of(cr.mean_shrink));
  } else {
    int64_t diff = 0;
    for (size_t i = 0; i < cr.histogram.size(); ++i) diff += std::llabs(gr.histogram[i] - cr.histogram[i]);
    CHECK(diff <= 2 * flipped);
  }
  std::printf("     %s: %d steps, mean shrink gpu %.6f cpu %.6f, %lld near-tie flips\n", what.c_str(), steps,
              gr.mean_shrink, cr.mean_shrink, static_cast<long long>(flipped));
}

}  // namespace
#endif

TEST(cuda_abs_mean_columns_dev_matches_cpu) {
  require_cuda_device();
#ifdef AWQ_WITH_CUDA
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{1, 1}, {63, 5}, {64, 300}, {65, 257}, {4099, 777}, {20000, 96}}) {
    auto x = random_floats(rows * cols, static_cast<uint32_t>(rows + cols), -2.f, 2.f);
    for (int64_t r = 0; r < rows; ++r) x[r * cols + cols / 2] *= 300.f;  // outlier channel
    if (rows > 3) std::fill(x.begin() + 2 * cols, x.begin() + 3 * cols, 0.f);
    std::vector<float> cpu(cols), gpu(cols), host_api(cols);
    abs_mean_columns(x.data(), rows, cols, cpu.data());
    Dev<float> dx(x);
    cuda::abs_mean_columns_dev(dx.get(), rows, cols, gpu.data());
    cuda::abs_mean_columns(x.data(), rows, cols, host_api.data());
    int64_t exact = 0;
    for (int64_t j = 0; j < cols; ++j) {
      CHECK_NEAR(gpu[j], cpu[j], 1e-6 * std::fabs(cpu[j]));
      CHECK(bits_of(gpu[j]) == bits_of(host_api[j]));  // the two entry points share the kernels
      exact += bits_of(gpu[j]) == bits_of(cpu[j]);
    }
    std::printf("     abs_mean %lld x %lld: %lld of %lld columns bitwise equal to the CPU\n", static_cast<long long>(rows),
                static_cast<long long>(cols), static_cast<long long>(exact), static_cast<long long>(cols));
  }
#endif
}

TEST(cuda_abs_mean_columns_rejects_non_finite) {
  require_cuda_device();
#ifdef AWQ_WITH_CUDA
  for (float bad : {kNaN, kInf, -kInf}) {
    const int64_t rows = 300, cols = 33;
    auto x = random_floats(rows * cols, 1);
    x[250 * cols + 3] = bad;  // later rows: the first (row-major) must be named
    x[150 * cols + 32] = bad;
    x[150 * cols + 7] = bad;  // the first in row-major order: row 150, channel 7
    std::string cpu_msg, dev_msg, host_msg;
    try {
      std::vector<float> out(cols);
      abs_mean_columns(x.data(), rows, cols, out.data());
    } catch (const Error& e) {
      cpu_msg = e.what();
    }
    Dev<float> dx(x);
    for (int api = 0; api < 2; ++api) {
      std::string& msg = api == 0 ? dev_msg : host_msg;
      try {
        std::vector<float> out(cols);
        if (api == 0) {
          cuda::abs_mean_columns_dev(dx.get(), rows, cols, out.data());
        } else {
          cuda::abs_mean_columns(x.data(), rows, cols, out.data());
        }
      } catch (const Error& e) {
        if (e.code() == ErrorCode::NonFinite) msg = e.what();
      }
    }
    CHECK(!cpu_msg.empty());
    CHECK(cpu_msg.find("row 150, channel 7") != std::string::npos);
    CHECK(dev_msg == cpu_msg);
    CHECK(host_msg == cpu_msg);
  }
  float one = 1.f;
  CHECK_THROWS(cuda::abs_mean_columns_dev(&one, 0, 1, &one));
#endif
}

TEST(cuda_weight_mean_matches_cpu) {
  require_cuda_device();
#ifdef AWQ_WITH_CUDA
  for (int64_t group : {int64_t{32}, int64_t{128}, int64_t{-1}}) {
    const int64_t in = 384, g = group < 0 ? in : group;
    std::vector<std::vector<float>> hosts = {adversarial_weights(300, in, g, 11), adversarial_weights(37, in, g, 12),
                                             random_floats(5000 * in, 13, -1.f, 1.f)};
    std::vector<int64_t> rows = {300, 37, 5000};
    std::vector<std::pair<const float*, int64_t>> cpu_lin, gpu_lin;
    std::vector<std::unique_ptr<Dev<float>>> devs;
    for (size_t i = 0; i < hosts.size(); ++i) {
      cpu_lin.emplace_back(hosts[i].data(), rows[i]);
      devs.push_back(std::make_unique<Dev<float>>(hosts[i]));
      gpu_lin.emplace_back(devs.back()->get(), rows[i]);
    }
    for (size_t use : {size_t{1}, size_t{3}}) {
      std::vector<std::pair<const float*, int64_t>> c(cpu_lin.begin(), cpu_lin.begin() + use),
          d(gpu_lin.begin(), gpu_lin.begin() + use);
      std::vector<float> cpu(in), gpu(in);
      weight_mean(c, in, g, cpu.data());
      cuda::weight_mean(d, in, g, gpu.data());
      int64_t exact = 0;
      for (int64_t j = 0; j < in; ++j) {
        CHECK_NEAR(gpu[j], cpu[j], 1e-6 * std::fabs(cpu[j]) + 1e-30);
        exact += bits_of(gpu[j]) == bits_of(cpu[j]);
      }
      std::printf("     weight_mean group %lld, %zu linears: %lld of %lld bitwise equal\n", static_cast<long long>(g), use,
                  static_cast<long long>(exact), static_cast<long long>(in));
    }
  }
  std::vector<float> out(10);
  CHECK_THROWS(cuda::weight_mean({}, 10, 5, out.data()));
#endif
}

TEST(cuda_scaled_fake_quant_bitwise) {
  require_cuda_device();
#ifdef AWQ_WITH_CUDA
  const int64_t rows = 41, in = 256;
  const auto s = search_scales(in, 21);
  Dev<float> ds(s);
  int configs = 0;
  for (int bits = 2; bits <= 8; ++bits)
    for (int64_t group : {int64_t{32}, int64_t{64}, int64_t{128}, int64_t{-1}})
      for (bool zp : {true, false})
        for (bool fp16 : {true, false}) {
          const QuantParams p{bits, group < 0 ? in : group, zp, fp16};
          const auto w = adversarial_weights(rows, in, p.group, static_cast<uint32_t>(bits * 1000 + group + zp * 7 + fp16));
          std::vector<float> cpu(rows * in);
          const bool ok = scaled_fake_quant(w.data(), rows, in, s.data(), p, cpu.data());
          Dev<float> dw(w), dd(rows * in);
          Dev<int> bad(std::vector<int>{0});
          cuda::scaled_fake_quant(dw.get(), rows, in, ds.get(), p, dd.get(), bad.get());
          const auto gpu = dd.host();
          const int64_t d = first_diff(cpu.data(), gpu.data(), rows * in);
          if (d >= 0)
            fail(__FILE__, __LINE__, qp_str(p) + ": [" + std::to_string(d / in) + ", " + std::to_string(d % in) + "] gpu " +
                                         fstr(gpu[d]) + " cpu " + fstr(cpu[d]));
          CHECK((bad.host()[0] != 0) == !ok);
          ++configs;
        }
  CHECK(configs == 7 * 4 * 2 * 2);

  // an fp16-overflowing scale sets the flag (range 2e6 / 15 > 65504); the flag is never cleared
  {
    const QuantParams p{4, 64, true, true};
    auto w = random_floats(3 * in, 5);
    w[in + 10] = 1e6f;
    w[in + 11] = -1e6f;
    std::vector<float> ones(in, 1.f), cpu(3 * in);
    CHECK(!scaled_fake_quant(w.data(), 3, in, ones.data(), p, cpu.data()));
    Dev<float> dw(w), dd(3 * in), d1(ones);
    Dev<int> bad(std::vector<int>{0});
    cuda::scaled_fake_quant(dw.get(), 3, in, d1.get(), p, dd.get(), bad.get());
    CHECK(bad.host()[0] == 1);
    CHECK(first_diff(cpu.data(), dd.host().data(), 3 * in) < 0);
    // a clean call leaves the flag set
    auto clean = random_floats(3 * in, 6);
    Dev<float> dc(clean);
    cuda::scaled_fake_quant(dc.get(), 3, in, d1.get(), p, dd.get(), bad.get());
    CHECK(bad.host()[0] == 1);
  }
  // NaN weights: at a group's start (the scale is NaN: flagged) and inside a group (NaN output)
  {
    const QuantParams p{4, 32, true, false};
    auto w = random_floats(2 * in, 8);
    w[64] = kNaN;
    w[in + 70] = kNaN;
    std::vector<float> cpu(2 * in);
    const bool ok = scaled_fake_quant(w.data(), 2, in, s.data(), p, cpu.data());
    Dev<float> dw(w), dd(2 * in);
    Dev<int> bad(std::vector<int>{0});
    cuda::scaled_fake_quant(dw.get(), 2, in, ds.get(), p, dd.get(), bad.get());
    CHECK(!ok);
    CHECK(bad.host()[0] == 1);
    CHECK(first_diff(cpu.data(), dd.host().data(), 2 * in) < 0);
  }
  int dummy = 0;
  CHECK_THROWS(cuda::scaled_fake_quant(ds.get(), 1, in, ds.get(), QuantParams{4, 100, true, true}, nullptr, &dummy));
#endif
}

TEST(cuda_scale_and_divide_ops_bitwise) {
  require_cuda_device();
#ifdef AWQ_WITH_CUDA
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{1, 1}, {33, 257}, {1000, 96}}) {
    const auto w = random_floats(rows * cols, static_cast<uint32_t>(rows * cols), -3.f, 3.f);
    const auto sc = search_scales(cols, 2), sr = search_scales(rows, 3);
    std::vector<float> a = w, b = w, c = w;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < cols; ++j) {
        a[r * cols + j] *= sc[j];
        b[r * cols + j] /= sc[j];
        c[r * cols + j] /= sr[r];
      }
    Dev<float> da(w), db(w), dc(w), dsc(sc), dsr(sr);
    cuda::scale_columns(da.get(), rows, cols, dsc.get());
    cuda::divide_columns(db.get(), rows, cols, dsc.get());
    cuda::divide_rows(dc.get(), rows, cols, dsr.get());
    CHECK(first_diff(a.data(), da.host().data(), rows * cols) < 0);
    CHECK(first_diff(b.data(), db.host().data(), rows * cols) < 0);
    CHECK(first_diff(c.data(), dc.host().data(), rows * cols) < 0);
  }
#endif
}

TEST(cuda_elementwise_ops_bitwise) {
  require_cuda_device();
#ifdef AWQ_WITH_CUDA
  for (int64_t n : {int64_t{1}, int64_t{1000}, int64_t{300001}}) {
    const auto a = random_floats(n, 1, -5.f, 5.f), b = random_floats(n, 2, -5.f, 5.f);
    std::vector<double> acc(n);
    for (int64_t i = 0; i < n; ++i) acc[i] = 1.0 / 3.0 + static_cast<double>(i);
    std::vector<float> d(n), conv(n);
    std::vector<double> acc2 = acc;
    for (int64_t i = 0; i < n; ++i) {
      d[i] = a[i] - b[i];
      acc2[i] += static_cast<double>(a[i]);
      acc2[i] += static_cast<double>(b[i]);
      conv[i] = static_cast<float>(acc2[i]);
    }
    Dev<float> da(a), db(b), dd(n), dc(n);
    Dev<double> dacc(acc);
    cuda::subtract(da.get(), db.get(), n, dd.get());
    cuda::accumulate_f64(da.get(), n, dacc.get());
    cuda::accumulate_f64(db.get(), n, dacc.get());
    cuda::convert_f64_to_f32(dacc.get(), n, dc.get());
    CHECK(first_diff(d.data(), dd.host().data(), n) < 0);
    CHECK(first_diff(conv.data(), dc.host().data(), n) < 0);
    const auto g = dacc.host();
    int64_t bad = 0;
    for (int64_t i = 0; i < n; ++i) bad += bits_of(g[i]) != bits_of(acc2[i]);
    CHECK(bad == 0);
  }
#endif
}

TEST(cuda_rowwise_dot_acc_matches_cpu) {
  require_cuda_device();
#ifdef AWQ_WITH_CUDA
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{1, 1}, {37, 300}, {2048, 4096}}) {
    const auto T = random_floats(rows * cols, 3, -2.f, 2.f), dW = random_floats(rows * cols, 4, -1e-2f, 1e-2f);
    double ref = 0.0, mag = 0.0, cpu = 0.0;
    for (int64_t r = 0; r < rows; ++r) {
      float row = 0.f;  // gram_quadratic's reduction
      for (int64_t j = 0; j < cols; ++j) {
        ref += static_cast<double>(T[r * cols + j]) * dW[r * cols + j];
        mag += std::fabs(static_cast<double>(T[r * cols + j]) * dW[r * cols + j]);
        row += T[r * cols + j] * dW[r * cols + j];
      }
      cpu += row;
    }
    Dev<float> dT(T), dD(dW);
    Dev<double> acc(std::vector<double>{0.5});
    cuda::rowwise_dot_acc(dT.get(), dD.get(), rows, cols, acc.get());
    cuda::rowwise_dot_acc(dT.get(), dD.get(), rows, cols, acc.get());  // accumulates
    const double gpu = acc.host()[0] - 0.5;
    // fp32 row sums: a few ulps of sum |products| (the CPU's left-to-right sum is the looser one)
    CHECK_NEAR(gpu, 2 * ref, 2 * 1e-5 * mag + 1e-12);
    CHECK_NEAR(gpu, 2 * cpu, 2 * 1e-5 * mag + 1e-12);
    std::printf("     rowwise_dot %lld x %lld: gpu %.10g cpu %.10g fp64 %.10g\n", static_cast<long long>(rows),
                static_cast<long long>(cols), gpu / 2, cpu, ref);
  }
#endif
}

TEST(cuda_quantize_weights_bitwise) {
  require_cuda_device();
#ifdef AWQ_WITH_CUDA
  for (const QuantParams& p0 : kQuantConfigs)
    for (int64_t in : {int64_t{128}, int64_t{640}}) {
      for (bool whole_row : {false, true}) {
        QuantParams p = p0;
        if (whole_row) p.group = in;
        if (in % p.group) continue;
        const int64_t rows = 57, groups = in / p.group;
        auto w = adversarial_weights(rows, in, p.group, static_cast<uint32_t>(in + p.bits));
        for (auto& v : w) v = std::max(std::min(v, 1e4f), -1e4f);  // keep fp16 scales finite
        std::vector<uint8_t> qc(rows * in), zc(rows * groups), qg(rows * in), zg(rows * groups);
        std::vector<float> sc(rows * groups), sg(rows * groups);
        quantize_weights(w.data(), rows, in, p, nullptr, qc.data(), zc.data(), sc.data(), "w");
        Dev<float> dw(w);
        cuda::quantize_weights(dw.get(), rows, in, p, qg.data(), zg.data(), sg.data(), "w");
        CHECK(qc == qg);
        CHECK(zc == zg);
        const int64_t d = first_diff(sc.data(), sg.data(), rows * groups);
        if (d >= 0) fail(__FILE__, __LINE__, qp_str(p) + ": scale " + std::to_string(d) + " gpu " + fstr(sg[d]) + " cpu " + fstr(sc[d]));
        // outputs may be skipped
        std::vector<float> s_only(rows * groups);
        cuda::quantize_weights(dw.get(), rows, in, p, nullptr, nullptr, s_only.data(), "w");
        CHECK(first_diff(sc.data(), s_only.data(), rows * groups) < 0);
      }
    }

  // errors: the CPU's codes and messages
  const int64_t rows = 40, in = 256;
  const QuantParams p{4, 128, true, true};
  auto message = [&](const std::vector<float>& w, bool gpu, ErrorCode* code) {
    std::vector<uint8_t> q(rows * in), z(rows * 2);
    std::vector<float> s(rows * 2);
    try {
      if (gpu) {
        Dev<float> dw(w);
        cuda::quantize_weights(dw.get(), rows, in, p, q.data(), z.data(), s.data(), "layers.3.mlp.up_proj");
      } else {
        quantize_weights(w.data(), rows, in, p, nullptr, q.data(), z.data(), s.data(), "layers.3.mlp.up_proj");
      }
    } catch (const Error& e) {
      *code = e.code();
      return std::string(e.what());
    }
    return std::string();
  };
  for (int which = 0; which < 3; ++which) {
    auto w = random_floats(rows * in, 9);
    if (which == 0) {
      w[31 * in + 200] = kNaN;
      w[32 * in + 1] = kInf;
    } else if (which == 1) {
      w[17 * in + 3] = -kInf;
      w[30 * in + 3] = kNaN;
    } else {
      w[5 * in + 7] = 3e6f;  // finite, but the fp16 scale overflows
    }
    ErrorCode cc = ErrorCode::Internal, gc = ErrorCode::Internal;
    const std::string cm = message(w, false, &cc), gm = message(w, true, &gc);
    CHECK(!cm.empty());
    CHECK(cc == ErrorCode::NonFinite);
    CHECK(gc == ErrorCode::NonFinite);
    if (gm != cm) fail(__FILE__, __LINE__, "message gpu '" + gm + "' cpu '" + cm + "'");
    CHECK(cm.find("layers.3.mlp.up_proj") != std::string::npos);
  }
  auto w = random_floats(rows * in, 9);
  Dev<float> dw(w);
  std::vector<uint8_t> q(rows * in);
  CHECK_THROWS(cuda::quantize_weights(dw.get(), rows, in, QuantParams{9, 128, true, true}, q.data(), nullptr, nullptr, "w"));
  CHECK_THROWS(cuda::quantize_weights(dw.get(), rows, in, QuantParams{4, 100, true, true}, q.data(), nullptr, nullptr, "w"));
#endif
}

TEST(cuda_clip_search_matches_cpu) {
  require_cuda_device();
#ifdef AWQ_WITH_CUDA
  const ClipCase cases[] = {
      {200, 256, 300, 128, true, 4, 20, 0.5f, false},   // n < 512: every token
      {130, 384, 1300, 64, true, 4, 20, 0.5f, false},   // step 2, 650 tokens (not a tile multiple)
      {77, 96, 100, -1, true, 3, 20, 0.5f, false},      // group = whole row (96)
      {64, 200, 37, -1, true, 4, 10, 0.5f, false},      // whole row of 200: k tail of 8
      {129, 256, 512, 32, false, 4, 20, 0.5f, false},   // symmetric
      {257, 512, 2000, 128, true, 4, 20, 0.5f, true},   // fp16 scales, step 3, 667 tokens
      {33, 128, 1, 128, true, 8, 20, 0.5f, false},      // one token
      {40, 128, 700, 128, true, 2, 7, 0.9f, false},     // 6 steps of 1/7
      {16, 64, 50, 32, true, 4, 20, 0.0f, false},       // no steps: nothing changes
  };
  uint32_t seed = 100;
  for (const ClipCase& c : cases) check_clip_case(c, seed++);
#endif
}

TEST(cuda_clip_search_7b_shape) {
  require_cuda_device();
#ifdef AWQ_WITH_CUDA
  // A 7B MLP linear (out 11008, in 4096, group 128, 512 tokens, 10 steps): timing, plus the
  // errors of the first and last 64 rows against the CPU (rows are independent).
  const int64_t out = 11008, in = 4096, n = 512;
  const QuantParams p{4, 128, true, false};
  auto W = random_floats(out * in, 71, -1.f, 1.f);
  for (int64_t r = 0; r < out; ++r) W[r * in + (r * 7) % in] *= 8.f;
  auto X = random_floats(n * in, 72, -1.f, 1.f);
  for (int64_t t = 0; t < n; ++t) X[t * in + 100] *= 30.f;
  Dev<float> dW(W), dX(X);
  std::vector<double> err;
  cuda::detail::clip_search_errors(dW.get(), out, in, dX.get(), n, p, 20, 0.5f, err);  // warm-up
  const int steps = 10;
  const int64_t groups = in / 128;
  for (auto [r0, r1] : {std::pair<int64_t, int64_t>{0, 64}, {out - 64, out}}) {
    int s = 0;
    const auto cpu = cpu_clip_errors(W.data(), out, in, X.data(), n, p, 20, 0.5f, r0, r1, &s);
    std::vector<double> sub(cpu.size());
    for (int64_t j = 0; j < groups; ++j)
      for (int i = 0; i < steps; ++i)
        for (int64_t r = r0; r < r1; ++r) sub[(j * steps + i) * (r1 - r0) + (r - r0)] = err[(j * steps + i) * out + r];
    compare_errors(sub, cpu, "7B shape rows " + std::to_string(r0) + ".." + std::to_string(r1));
  }
  cuda::synchronize();
  const auto t0 = std::chrono::steady_clock::now();
  double flops = 0;
  const ClipResult res = cuda::clip_search(dW.get(), out, in, dX.get(), n, p, 20, 0.5f, &flops);
  cuda::synchronize();
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  std::printf("     clip search 7B shape: %.2f ms, %.1f TFLOP/s (%.3g FLOPs), mean shrink %.4f\n", ms,
              flops / ms * 1e-9, flops, res.mean_shrink);
  CHECK(flops == 2.0 * steps * n * out * in);
  int64_t total = 0;
  for (int64_t h : res.histogram) total += h;
  CHECK(total == out * groups);
#endif
}
