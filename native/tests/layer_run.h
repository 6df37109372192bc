// One decoder layer's quantization with all outputs allocated: the fixture of the search tests
// (CPU, and the CUDA tests that compare against it).
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "../core/cancel.h"
#include "../core/search.h"
#include "ref_layer.h"

namespace awq::test {

struct QuantRun {
  std::vector<uint8_t> q[kNumLinears], z[kNumLinears];
  std::vector<float> s[kNumLinears], folded[kNumLinears], bias[kNumLinears];
  std::vector<float> in_norm, post_norm, output;
  LayerQuantReport report;
};

// The signature of awq::quantize_decoder_layer (the CUDA tests pass a lambda around theirs).
using LayerQuantizer = std::function<void(const LayerArch&, const LayerWeights&, const float*, int64_t, int64_t,
                                          const SearchOptions&, const LayerQuantOutputs&, LayerQuantReport&)>;

inline void cpu_quantize_layer(const LayerArch& a, const LayerWeights& w, const float* x, int64_t T, int64_t S,
                               const SearchOptions& opt, const LayerQuantOutputs& o, LayerQuantReport& report) {
  quantize_decoder_layer(a, w, x, T, S, opt, Precision::F32, o, report, CancelFlag());
}

// The CPU quantizer with linear products in precision p.
inline LayerQuantizer cpu_quantizer(Precision p) {
  return [p](const LayerArch& a, const LayerWeights& w, const float* x, int64_t T, int64_t S, const SearchOptions& opt,
             const LayerQuantOutputs& o, LayerQuantReport& report) {
    quantize_decoder_layer(a, w, x, T, S, opt, p, o, report, CancelFlag());
  };
}

// Runs one layer's quantization with every output (folded weights included) allocated.
inline QuantRun run_layer(RandomLayer& L, const std::vector<float>& x, int64_t T, int64_t S, const SearchOptions& opt,
                          const LayerQuantizer& quantize = cpu_quantize_layer) {
  QuantRun r;
  LayerQuantOutputs o;
  const LayerArch& a = L.arch;
  const int64_t rows[] = {a.q_out(), a.kv_out(), a.kv_out(), a.hidden, a.intermediate, a.intermediate, a.hidden};
  const int64_t cols[] = {a.hidden, a.hidden, a.hidden, a.q_out(), a.hidden, a.hidden, a.intermediate};
  const float* biases[] = {L.w.q_bias, L.w.k_bias, L.w.v_bias, L.w.o_bias, nullptr, nullptr, nullptr};
  for (int id = 0; id < kNumLinears; ++id) {
    const int64_t g = opt.group_size < 0 ? cols[id] : opt.group_size;
    r.q[id].resize(rows[id] * cols[id]);
    r.z[id].resize(rows[id] * cols[id] / g);
    r.s[id].resize(rows[id] * cols[id] / g);
    r.folded[id].resize(rows[id] * cols[id]);
    o.q[id] = r.q[id].data();
    o.zeros[id] = r.z[id].data();
    o.scales[id] = r.s[id].data();
    o.folded[id] = r.folded[id].data();
    if (biases[id]) {
      r.bias[id].resize(rows[id]);
      o.bias[id] = r.bias[id].data();
    }
  }
  r.in_norm.resize(a.hidden);
  r.post_norm.resize(a.hidden);
  r.output.resize(T * a.hidden);
  o.input_norm = r.in_norm.data();
  o.post_norm = r.post_norm.data();
  o.output = r.output.data();
  quantize(a, L.w, x.data(), T, S, opt, o, r.report);
  return r;
}

}  // namespace awq::test
