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
#include "cuda_layer_ops.h"

namespace awq::cuda {

// `precision`: arithmetic of every linear product of the layer (the recorded forward, the
// candidates' forwards, the Gram matrix and its quadratic forms); attention, norms, the
// quantization and the clip search stay fp32. Throws like the CPU version, plus OutOfMemory
// naming the buffer that did not fit and Cuda for driver errors.
void quantize_decoder_layer(const LayerArch& a, const LayerWeights& w, const float* hidden, int64_t tokens,
                            int64_t seqlen, const SearchOptions& opt, Precision precision,
                            const LayerQuantOutputs& out, LayerQuantReport& report, const CancelFlag& cancel,
                            const std::function<void(const char*)>& on_phase = {});

}  // namespace awq::cuda
