// A decoder layer's forward on device-resident hidden states, in place: what `awq eval` runs per
// layer with backend 'cuda' (the hidden states of a chunk of evaluation windows stay on the device
// from the embedding to the last layer). The weights come from the host, are checked as the CPU
// forward checks them, and are uploaded for the call in one allocation.
#include <cuda_runtime.h>

#include <string>
#include <vector>

#include "../core/errors.h"
#include "cuda_gemm.h"
#include "cuda_layer.h"

namespace awq::cuda {

void decoder_layer_forward(const LayerArch& a, const LayerWeights& w, DeviceHidden& hidden, int64_t seqlen,
                           Precision precision, const CancelFlag& cancel) {
  AWQ_CHECK_ARG(hidden.hidden() == a.hidden, "decoder layer: the device hidden states have width " +
                                                 std::to_string(hidden.hidden()) + ", the layer " +
                                                 std::to_string(a.hidden));
  awq::validate_layer(a, w);  // shapes and non-finite weights, named as on the CPU
  cancel.check();
  const int64_t H = a.hidden, I = a.intermediate, QO = a.q_out(), KV = a.kv_out(), n = hidden.tokens();

  // Every tensor at a 256-byte aligned offset of one device buffer (vector loads need 16 bytes).
  LayerWeights dw;
  struct Part {
    const float* host;
    int64_t count;
    const float** dev;
  };
  const std::vector<Part> parts = {
      {w.input_norm, H, &dw.input_norm}, {w.post_norm, H, &dw.post_norm}, {w.q, QO * H, &dw.q},
      {w.k, KV * H, &dw.k},              {w.v, KV * H, &dw.v},            {w.o, H * QO, &dw.o},
      {w.gate, I * H, &dw.gate},         {w.up, I * H, &dw.up},           {w.down, H * I, &dw.down},
      {w.q_bias, QO, &dw.q_bias},        {w.k_bias, KV, &dw.k_bias},      {w.v_bias, KV, &dw.v_bias},
      {w.o_bias, H, &dw.o_bias},
      {a.qk_norm ? w.q_norm : nullptr, a.head_dim, &dw.q_norm},
      {a.qk_norm ? w.k_norm : nullptr, a.head_dim, &dw.k_norm},
  };
  const auto aligned = [](int64_t floats) { return (floats + 63) / 64 * 64; };
  int64_t total = 0;
  for (const Part& p : parts)
    if (p.host) total += aligned(p.count);
  DeviceMemory weights(static_cast<size_t>(total) * sizeof(float), "layer weights");
  float* base = static_cast<float*>(weights.get());
  int64_t at = 0;
  for (const Part& p : parts) {
    if (!p.host) continue;
    copy_to_device(base + at, p.host, static_cast<size_t>(p.count) * sizeof(float));
    *p.dev = base + at;
    at += aligned(p.count);
  }

  DeviceMemory out(static_cast<size_t>(n * H) * sizeof(float), "layer output");
  cuda::decoder_layer_forward(a, dw, hidden.data(), n, seqlen, static_cast<float*>(out.get()), nullptr, precision);
  // The forward's output check already waited for its kernels; this also surfaces an asynchronous
  // error of the last kernel before the input is given up.
  synchronize();
  hidden.replace(std::move(out));
}

}  // namespace awq::cuda
