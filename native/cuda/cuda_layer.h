// One decoder layer's AWQ search and quantization on the GPU: awq::quantize_decoder_layer
// (native/core/search.h) with the same contract (host inputs and outputs, report, errors), run
// with the device pieces of cuda_layer_ops.h. The layer's weights, its recorded activations and
// the search's candidates live on the device for the call; the small per-channel vectors (x_mean,
// w_mean, the scale candidates, the norms) are computed on the host with the CPU functions, so
// with Precision::F32 the search sees the same numbers as the CPU path up to summation order.
// Plain C++: the addon and the tests include it without nvcc.
#pragma once
#include <functional>

#include "../core/cancel.h"
#include "../core/search.h"
#include "cuda_gemm.h"
#include "cuda_layer_ops.h"

namespace awq::cuda {

// Calibration hidden states resident on the device between layers ([tokens, hidden] fp32). A
// pipeline uploads them once; the second quantize_decoder_layer below reads a layer's input from
// them and, when the layer succeeded, leaves the layer's output in their place, so no activations
// cross PCIe per layer (a 7B layer on 128 blocks of 512 tokens moves 1 GiB each way otherwise).
class DeviceHidden {
 public:
  DeviceHidden(const float* host, int64_t tokens, int64_t hidden);  // uploads host [tokens, hidden]
  int64_t tokens() const { return tokens_; }
  int64_t hidden() const { return hidden_; }
  const float* data() const { return static_cast<const float*>(mem_.get()); }
  void download(float* host) const;  // host [tokens, hidden]
  // Takes a device buffer of the same shape as the new contents (the layer driver's output).
  void replace(DeviceMemory&& m);

 private:
  DeviceMemory mem_;
  int64_t tokens_ = 0, hidden_ = 0;
};

// `precision`: arithmetic of every linear product of the layer (the recorded forward, the
// candidates' forwards, the Gram matrix and its quadratic forms); attention, norms, the
// quantization and the clip search stay fp32. Throws like the CPU version, plus OutOfMemory
// naming the buffer that did not fit and Cuda for driver errors.
void quantize_decoder_layer(const LayerArch& a, const LayerWeights& w, const float* hidden, int64_t tokens,
                            int64_t seqlen, const SearchOptions& opt, Precision precision,
                            const LayerQuantOutputs& out, LayerQuantReport& report, const CancelFlag& cancel,
                            const std::function<void(const char*)>& on_phase = {});

// The same on device-resident hidden states (hidden.tokens() tokens, hidden.hidden() == a.hidden):
// out.output is not used (may be null); on success `hidden` holds the layer's output, on an
// error or cancellation it still holds the layer's input.
void quantize_decoder_layer(const LayerArch& a, const LayerWeights& w, DeviceHidden& hidden, int64_t seqlen,
                            const SearchOptions& opt, Precision precision, const LayerQuantOutputs& out,
                            LayerQuantReport& report, const CancelFlag& cancel,
                            const std::function<void(const char*)>& on_phase = {});

// One decoder layer's forward on device-resident hidden states, in place (evaluation): the host
// weights are validated as the CPU forward validates them (NonFinite naming the tensor) and
// uploaded for the call; the linear products run in `precision`. On success `hidden` holds the
// layer's output; on an error or cancellation it still holds the input. Cancellation is seen
// before the upload: a layer that started runs to its end (milliseconds). (layer_forward.cu)
void decoder_layer_forward(const LayerArch& a, const LayerWeights& w, DeviceHidden& hidden, int64_t seqlen,
                           Precision precision, const CancelFlag& cancel);

}  // namespace awq::cuda
