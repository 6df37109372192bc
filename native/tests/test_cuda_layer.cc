// The CUDA layer driver (native/cuda/cuda_layer.h) against the CPU quantize_decoder_layer on the
// same random layers: with fp32 products the same scale ratios and clip choices (a different
// choice is accepted only where the CPU's own losses call it a tie), the same losses to fp32
// summation-order level, the same layer output, and the same integer codes; with bf16 products
// losses within the rounding's reach. Skipped without a device.
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "../core/errors.h"
#include "../core/search.h"
#include "layer_run.h"
#include "cuda_device.h"
#include "test.h"
#include "util.h"
#ifdef AWQ_WITH_CUDA
#include "../cuda/cuda_layer.h"
#endif

using namespace awq;
using namespace awq::test;

#ifdef AWQ_WITH_CUDA
namespace {

LayerQuantizer gpu_quantizer(cuda::Precision p) {
  return [p](const LayerArch& a, const LayerWeights& w, const float* x, int64_t T, int64_t S, const SearchOptions& opt,
             const LayerQuantOutputs& o, LayerQuantReport& report) {
    cuda::quantize_decoder_layer(a, w, x, T, S, opt, p, o, report, CancelFlag());
  };
}

// The device-resident form: hidden states uploaded once, the output read back from them.
LayerQuantizer gpu_device_quantizer(cuda::Precision p) {
  return [p](const LayerArch& a, const LayerWeights& w, const float* x, int64_t T, int64_t S, const SearchOptions& opt,
             const LayerQuantOutputs& o, LayerQuantReport& report) {
    cuda::DeviceHidden h(x, T, a.hidden);
    LayerQuantOutputs od = o;
    od.output = nullptr;  // not used by this form
    cuda::quantize_decoder_layer(a, w, h, S, opt, p, od, report, CancelFlag());
    h.download(o.output);
  };
}

double rel(double a, double b) { return std::fabs(a - b) / std::max(std::fabs(b), 1e-30); }

// The two runs chose the same ratio, or the CPU's losses at both choices are within `tie`.
bool same_choice(const GroupResult& gpu, const GroupResult& cpu, double tie) {
  if (gpu.best_ratio == cpu.best_ratio || (std::isnan(gpu.best_ratio) && std::isnan(cpu.best_ratio))) return true;
  const int i = static_cast<int>(std::lround(gpu.best_ratio * static_cast<double>(cpu.losses.size())));
  return i >= 0 && i < static_cast<int>(cpu.losses.size()) && rel(cpu.losses[i], cpu.loss_best) <= tie;
}

struct LayerCase {
  const char* name;
  int64_t H, I, heads, kv_heads, hd;
  bool bias, qk_norm;
  int64_t S, blocks, group;
  LinearLoss loss;
};

void compare_layer(const LayerCase& c, uint32_t seed) {
  RandomLayer L(c.H, c.I, c.heads, c.kv_heads, c.hd, c.bias, c.qk_norm, seed);
  const int64_t T = c.S * c.blocks;
  auto x = random_floats(T * c.H, seed + 100, -2.f, 2.f);
  for (int64_t t = 0; t < T; ++t) x[t * c.H + 5] *= 20.f;  // an outlier channel: salience to find
  SearchOptions opt;
  opt.group_size = c.group;
  opt.linear_loss = c.loss;
  const QuantRun cpu = run_layer(L, x, T, c.S, opt);
  const QuantRun gpu = run_layer(L, x, T, c.S, opt, gpu_quantizer(cuda::Precision::F32));
  const std::string what = std::string(c.name) + ": ";

  // the recorded forward: fp32 on both sides, different summation order
  // A NaN difference counts as infinite (std::max would skip it).
  auto nan_max = [](double acc, double d) { return std::isnan(d) ? INFINITY : std::max(acc, d); };
  double out_err = 0, out_scale = 0;
  for (size_t i = 0; i < cpu.output.size(); ++i) {
    out_err = nan_max(out_err, std::fabs(static_cast<double>(gpu.output[i]) - cpu.output[i]));
    out_scale = std::max(out_scale, std::fabs(static_cast<double>(cpu.output[i])));
  }
  if (!(out_err <= 1e-5 * out_scale)) fail(__FILE__, __LINE__, what + "layer output differs by " + std::to_string(out_err));

  CHECK(gpu.report.groups.size() == cpu.report.groups.size());
  bool all_same = true;
  for (size_t g = 0; g < std::min(gpu.report.groups.size(), cpu.report.groups.size()); ++g) {
    const GroupResult &a = gpu.report.groups[g], &b = cpu.report.groups[g];
    CHECK(a.group == b.group && a.skipped == b.skipped && a.loss_method == b.loss_method);
    CHECK(a.losses.size() == b.losses.size());
    double worst = 0;  // losses: the same sums in another order (and forwards equal to fp32 level)
    for (size_t i = 0; i < std::min(a.losses.size(), b.losses.size()); ++i) worst = nan_max(worst, rel(a.losses[i], b.losses[i]));
    if (!(worst <= 1e-4))
      fail(__FILE__, __LINE__, what + "group " + b.group + ": losses differ by up to " + std::to_string(worst) + " relative");
    if (!same_choice(a, b, 1e-5))
      fail(__FILE__, __LINE__, what + "group " + b.group + " ratio gpu " + std::to_string(a.best_ratio) + " cpu " +
                                   std::to_string(b.best_ratio));
    all_same &= a.best_ratio == b.best_ratio || (std::isnan(a.best_ratio) && std::isnan(b.best_ratio));
    CHECK(a.salient.size() == b.salient.size() && !a.salient.empty() && a.salient[0].first == b.salient[0].first);
  }
  CHECK(gpu.report.clips.size() == cpu.report.clips.size());
  for (size_t k = 0; k < std::min(gpu.report.clips.size(), cpu.report.clips.size()); ++k) {
    const ClipResult &a = gpu.report.clips[k], &b = cpu.report.clips[k];
    CHECK(a.linear == b.linear);
    // identical choices up to near-ties of the error sums (different summation order)
    int64_t moved = 0, total = 0;
    for (size_t i = 0; i < std::min(a.histogram.size(), b.histogram.size()); ++i) {
      moved += std::llabs(a.histogram[i] - b.histogram[i]);
      total += b.histogram[i];
    }
    if (all_same && !(moved <= total / 50))
      fail(__FILE__, __LINE__, what + "clip of " + linear_name(b.linear) + ": " + std::to_string(moved) + " of " +
                                   std::to_string(total) + " choices differ");
  }
  // with the same choices, the integer codes agree except where a clip near-tie moved a group
  if (all_same) {
    for (int id = 0; id < kNumLinears; ++id) {
      size_t diff = 0;
      for (size_t e = 0; e < cpu.q[id].size(); ++e) diff += gpu.q[id][e] != cpu.q[id][e];
      if (!(diff <= cpu.q[id].size() / 100))
        fail(__FILE__, __LINE__, what + linear_name(id) + ": " + std::to_string(diff) + " of " +
                                     std::to_string(cpu.q[id].size()) + " codes differ");
    }
    // the folded norms: the same division by scales computed from activations that the two
    // forwards produce equal up to fp32 summation order
    int norm_off = 0;
    for (int64_t j = 0; j < c.H; ++j)
      norm_off += !(rel(gpu.in_norm[j], cpu.in_norm[j]) <= 1e-4 && rel(gpu.post_norm[j], cpu.post_norm[j]) <= 1e-4);
    if (norm_off) fail(__FILE__, __LINE__, what + std::to_string(norm_off) + " folded norm weights differ by > 1e-4");
  }

  // bf16 products: the losses move by the operands' rounding (2^-9 relative), the choices may too
  const QuantRun bf = run_layer(L, x, T, c.S, opt, gpu_quantizer(cuda::Precision::BF16));
  for (size_t g = 0; g < std::min(bf.report.groups.size(), cpu.report.groups.size()); ++g) {
    const GroupResult &a = bf.report.groups[g], &b = cpu.report.groups[g];
    if (!b.skipped.empty()) continue;
    if (!(rel(a.loss_zero, b.loss_zero) <= 0.05))
      fail(__FILE__, __LINE__, what + "bf16 group " + b.group + " loss at ratio 0: gpu " + std::to_string(a.loss_zero) +
                                   " cpu " + std::to_string(b.loss_zero));
    if (!(a.loss_best <= 1.05 * b.losses[static_cast<size_t>(std::lround(a.best_ratio * b.losses.size()))] + 1e-30))
      fail(__FILE__, __LINE__, what + "bf16 group " + b.group + " chose a ratio whose fp32 loss is not its own");
  }
}

}  // namespace
#endif

TEST(cuda_layer_quantize_matches_cpu) {
#ifndef AWQ_WITH_CUDA
  SKIP("built without CUDA");
#else
  require_cuda_device();
  const LayerCase cases[] = {
      {"mha+bias, gram", 128, 256, 4, 4, 32, true, false, 64, 4, 64, LinearLoss::Auto},
      {"gqa+qk_norm, direct", 128, 384, 4, 2, 32, false, true, 48, 3, 128, LinearLoss::Direct},
      {"mha, whole-row groups", 64, 128, 2, 2, 32, false, false, 33, 2, -1, LinearLoss::Gram},
  };
  uint32_t seed = 40;
  for (const LayerCase& c : cases) compare_layer(c, seed += 7);
#endif
}

TEST(cuda_layer_rtn_and_bad_input_match_cpu) {
#ifndef AWQ_WITH_CUDA
  SKIP("built without CUDA");
#else
  require_cuda_device();
  RandomLayer L(64, 128, 4, 2, 16, false, false, 9);
  SearchOptions opt;
  opt.awq = false;
  opt.group_size = 32;
  const std::vector<float> none;
  const QuantRun cpu = run_layer(L, none, 0, 16, opt);
  const QuantRun gpu = run_layer(L, none, 0, 16, opt, gpu_quantizer(cuda::Precision::F32));
  for (int id = 0; id < kNumLinears; ++id) {
    CHECK(gpu.q[id] == cpu.q[id]);
    CHECK(gpu.z[id] == cpu.z[id]);
    CHECK(gpu.s[id] == cpu.s[id]);
  }
  // the CPU's argument errors, before any device work
  SearchOptions bad;
  bad.n_grid = 0;
  auto x = random_floats(32 * 64, 3);
  CHECK_THROWS(run_layer(L, x, 32, 16, bad, gpu_quantizer(cuda::Precision::F32)));
  bad = SearchOptions();
  bad.group_size = 48;  // does not divide 64
  CHECK_THROWS(run_layer(L, x, 32, 16, bad, gpu_quantizer(cuda::Precision::F32)));
  // NaN in the hidden states: NonFinite, as on the CPU
  x[100] = NAN;
  SearchOptions g32;
  g32.group_size = 32;
  try {
    run_layer(L, x, 32, 16, g32, gpu_quantizer(cuda::Precision::F32));
    fail(__FILE__, __LINE__, "NaN hidden states were accepted");
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::NonFinite);
  }
#endif
}

TEST(cuda_layer_device_hidden_states_match_host_form) {
#ifndef AWQ_WITH_CUDA
  SKIP("built without CUDA");
#else
  require_cuda_device();
  // Same kernels in the same order: the two forms agree bitwise, over two chained layers.
  RandomLayer L1(128, 256, 4, 2, 32, true, false, 21), L2(128, 256, 4, 2, 32, true, false, 22);
  const int64_t S = 40, T = 3 * S;
  const auto x = random_floats(T * 128, 5, -2.f, 2.f);
  SearchOptions opt;
  opt.group_size = 64;
  const QuantRun h1 = run_layer(L1, x, T, S, opt, gpu_quantizer(cuda::Precision::F32));
  const QuantRun d1 = run_layer(L1, x, T, S, opt, gpu_device_quantizer(cuda::Precision::F32));
  const QuantRun h2 = run_layer(L2, h1.output, T, S, opt, gpu_quantizer(cuda::Precision::BF16));
  const QuantRun d2 = run_layer(L2, d1.output, T, S, opt, gpu_device_quantizer(cuda::Precision::BF16));
  for (const auto* pair : {&h1, &h2}) {
    const QuantRun& h = *pair;
    const QuantRun& d = pair == &h1 ? d1 : d2;
    CHECK(d.output == h.output);
    CHECK(d.in_norm == h.in_norm && d.post_norm == h.post_norm);
    for (int id = 0; id < kNumLinears; ++id) CHECK(d.q[id] == h.q[id] && d.z[id] == h.z[id] && d.s[id] == h.s[id]);
    CHECK(d.report.groups.size() == h.report.groups.size());
    for (size_t g = 0; g < h.report.groups.size() && g < d.report.groups.size(); ++g)
      CHECK(d.report.groups[g].losses == h.report.groups[g].losses);
  }
  // a failed layer leaves the input in place; a width mismatch is an argument error
  auto bad = x;
  bad[77] = NAN;
  cuda::DeviceHidden hidden(bad.data(), T, 128);
  LayerQuantOutputs none;
  LayerQuantReport report;
  std::vector<uint8_t> q[kNumLinears], z[kNumLinears];
  std::vector<float> sc[kNumLinears], b[kNumLinears], in_norm(128), post_norm(128);
  const float* biases[] = {L1.w.q_bias, L1.w.k_bias, L1.w.v_bias, L1.w.o_bias, nullptr, nullptr, nullptr};
  for (int id = 0; id < kNumLinears; ++id) {
    q[id].resize(h1.q[id].size());
    z[id].resize(h1.z[id].size());
    sc[id].resize(h1.s[id].size());
    none.q[id] = q[id].data();
    none.zeros[id] = z[id].data();
    none.scales[id] = sc[id].data();
    if (biases[id]) {
      b[id].resize(h1.bias[id].size());
      none.bias[id] = b[id].data();
    }
  }
  none.input_norm = in_norm.data();
  none.post_norm = post_norm.data();
  try {
    cuda::quantize_decoder_layer(L1.arch, L1.w, hidden, S, opt, cuda::Precision::F32, none, report, CancelFlag());
    fail(__FILE__, __LINE__, "NaN hidden states were accepted");
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::NonFinite);
  }
  std::vector<float> back(bad.size());
  hidden.download(back.data());
  CHECK(std::isnan(back[77]));
  back[77] = bad[77] = 0.f;
  CHECK(back == bad);
  cuda::DeviceHidden narrow(x.data(), T * 2, 64);
  CHECK_THROWS(cuda::quantize_decoder_layer(L1.arch, L1.w, narrow, S, opt, cuda::Precision::F32, none, report,
                                            CancelFlag()));
#endif
}
