// Unwrapping of the LayerArch / LayerWeights objects of lib/quantize/layer.ts into the core
// structs. Every TypedArray read is appended to `keep` so it stays alive while the job runs,
// and every length is checked against the shapes the arch implies.
#pragma once
#include <napi.h>

#include <string>
#include <vector>

#include "../core/forward.h"
#include "args.h"

namespace awq::addon {

inline Napi::Value field(const Napi::Object& o, const char* obj, const char* name, bool required = true) {
  Napi::Value v = o.Get(name);
  if (required && (v.IsUndefined() || v.IsNull())) bad_arg(std::string(obj) + "." + name + ": missing");
  return v;
}

inline const float* float_field(const Napi::Object& o, const char* obj, const char* name, size_t expected,
                                bool required, std::vector<Napi::Value>& keep) {
  Napi::Value v = field(o, obj, name, required);
  if (v.IsUndefined() || v.IsNull()) return nullptr;
  const std::string full = std::string(obj) + "." + name;
  auto a = typed_array<float>(v, full.c_str());
  if (a.length != expected) {
    bad_arg(full + ": expected " + std::to_string(expected) + " elements, got " + std::to_string(a.length));
  }
  keep.push_back(v);
  return a.data;
}

inline LayerArch parse_arch(const Napi::Value& v, std::vector<Napi::Value>& keep) {
  if (!v.IsObject()) bad_arg("arch: expected an object");
  Napi::Object o = v.As<Napi::Object>();
  LayerArch a;
  a.hidden = integer(field(o, "arch", "hiddenSize"), "arch.hiddenSize", 1);
  a.intermediate = integer(field(o, "arch", "intermediateSize"), "arch.intermediateSize", 1);
  a.heads = integer(field(o, "arch", "numHeads"), "arch.numHeads", 1);
  a.kv_heads = integer(field(o, "arch", "numKvHeads"), "arch.numKvHeads", 1);
  a.head_dim = integer(field(o, "arch", "headDim"), "arch.headDim", 2);
  Napi::Value eps = field(o, "arch", "rmsNormEps");
  if (!eps.IsNumber()) bad_arg("arch.rmsNormEps: expected a number");
  a.eps = static_cast<float>(eps.As<Napi::Number>().DoubleValue());
  a.inv_freq = float_field(o, "arch", "ropeInvFreq", static_cast<size_t>(a.head_dim / 2), true, keep);
  a.qk_norm = field(o, "arch", "qkNorm", false).ToBoolean().Value();
  return a;
}

inline LayerWeights parse_weights(const Napi::Value& v, const LayerArch& a, std::vector<Napi::Value>& keep) {
  if (!v.IsObject()) bad_arg("weights: expected an object");
  Napi::Object o = v.As<Napi::Object>();
  const size_t H = a.hidden, I = a.intermediate, QO = a.q_out(), KV = a.kv_out(), hd = a.head_dim;
  LayerWeights w;
  w.input_norm = float_field(o, "weights", "inputNorm", H, true, keep);
  w.post_norm = float_field(o, "weights", "postNorm", H, true, keep);
  w.q = float_field(o, "weights", "q", QO * H, true, keep);
  w.k = float_field(o, "weights", "k", KV * H, true, keep);
  w.v = float_field(o, "weights", "v", KV * H, true, keep);
  w.o = float_field(o, "weights", "o", H * QO, true, keep);
  w.gate = float_field(o, "weights", "gate", I * H, true, keep);
  w.up = float_field(o, "weights", "up", I * H, true, keep);
  w.down = float_field(o, "weights", "down", H * I, true, keep);
  w.q_bias = float_field(o, "weights", "qBias", QO, false, keep);
  w.k_bias = float_field(o, "weights", "kBias", KV, false, keep);
  w.v_bias = float_field(o, "weights", "vBias", KV, false, keep);
  w.o_bias = float_field(o, "weights", "oBias", H, false, keep);
  w.q_norm = float_field(o, "weights", "qNorm", hd, a.qk_norm, keep);
  w.k_norm = float_field(o, "weights", "kNorm", hd, a.qk_norm, keep);
  return w;
}

}  // namespace awq::addon
