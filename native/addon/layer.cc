// Decoder-layer numerics: decoderLayerForward, pseudoQuantize, lmHeadNll (and, in
// layer_quantize.cc, quantizeDecoderLayer). Shapes were validated in TypeScript; they are
// re-checked here before any memory is touched.
#include <napi.h>

#include <memory>

#include "../core/forward.h"
#include "../core/quant.h"
#include "args.h"
#include "async.h"
#include "job_runner.h"
#include "layer_args.h"
#include "registry.h"

namespace awq::addon {
namespace {

// decoderLayerForward(arch, weights, hidden, seqlen, abortFlag?) -> Promise<Float32Array>
Napi::Value DecoderLayerForward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    std::vector<Napi::Value> keep;
    const LayerArch arch = parse_arch(info[0], keep);
    const LayerWeights w = parse_weights(info[1], arch, keep);
    auto hidden = typed_array<float>(info[2], "hidden");
    const int64_t seqlen = integer(info[3], "seqlen", 1);
    const int32_t* flag = cancel_flag(info[4]);
    if (hidden.length == 0 || hidden.length % static_cast<size_t>(arch.hidden * seqlen) != 0) {
      bad_arg("hidden: expected a positive multiple of seqlen*hiddenSize = " +
              std::to_string(arch.hidden * seqlen) + " elements, got " + std::to_string(hidden.length));
    }
    const int64_t tokens = static_cast<int64_t>(hidden.length) / arch.hidden;
    Napi::Float32Array out = Napi::Float32Array::New(env, hidden.length);
    keep.push_back(info[2]);
    if (flag) keep.push_back(info[4]);
    keep.push_back(out);
    float* out_data = out.Data();
    const float* x = hidden.data;
    return AsyncJob::start(
        env, "awq.decoderLayerForward", keep,
        [=] { decoder_layer_forward(arch, w, x, tokens, seqlen, out_data, nullptr, job_cancel_flag(flag)); },
        [](Napi::Env, const std::vector<Napi::Value>& kept) { return kept.back(); });
  });
}

// pseudoQuantize(w, out, in, wBit, groupSize, zeroPoint) -> Promise<Float32Array>
Napi::Value PseudoQuantize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    auto w = typed_array<float>(info[0], "w");
    const int64_t rows = integer(info[1], "out", 1);
    const int64_t cols = integer(info[2], "in", 1);
    QuantParams p;
    p.bits = static_cast<int>(integer(info[3], "wBit", 0));
    const int64_t g = integer(info[4], "groupSize", 1);
    p.group = g;
    p.zero_point = info[5].ToBoolean().Value();
    if (static_cast<size_t>(rows * cols) != w.length) {
      bad_arg("w: expected out*in = " + std::to_string(rows * cols) + " elements, got " + std::to_string(w.length));
    }
    check_quant_params(p, cols);
    Napi::Float32Array out = Napi::Float32Array::New(env, w.length);
    float* dq = out.Data();
    const float* src = w.data;
    return AsyncJob::start(
        env, "awq.pseudoQuantize", {info[0], out},
        [=] { quantize_weights(src, rows, cols, p, dq, nullptr, nullptr, nullptr, "w"); },
        [](Napi::Env, const std::vector<Napi::Value>& kept) { return kept[1]; });
  });
}

// lmHeadNll(hidden, hiddenSize, seqlen, finalNorm, eps, lmHead, vocab, ids, abortFlag?, lmHeadFormat?)
//   -> Promise<{ nllSum, count }>; lmHead a Float32Array, or with lmHeadFormat 'fp16' / 'bf16' a
//   Uint16Array of those bits.
Napi::Value LmHeadNll(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    auto hidden = typed_array<float>(info[0], "hidden");
    const int64_t H = integer(info[1], "hiddenSize", 1);
    const int64_t seqlen = integer(info[2], "seqlen", 2);
    auto norm = typed_array<float>(info[3], "finalNorm");
    if (!info[4].IsNumber()) bad_arg("eps: expected a number");
    const float eps = static_cast<float>(info[4].As<Napi::Number>().DoubleValue());
    const FloatOrHalf head = float_or_half(info, 5, 9, "lmHead", "lmHeadFormat");
    const int64_t vocab = integer(info[6], "vocab", 1);
    auto ids = typed_array<int32_t>(info[7], "tokens");
    const int32_t* flag = cancel_flag(info[8]);
    if (hidden.length % static_cast<size_t>(H) != 0) bad_arg("hidden: length is not a multiple of hiddenSize");
    const int64_t tokens = static_cast<int64_t>(hidden.length) / H;
    if (static_cast<int64_t>(ids.length) != tokens) {
      bad_arg("tokens: expected " + std::to_string(tokens) + " ids, got " + std::to_string(ids.length));
    }
    if (tokens == 0 || tokens % seqlen != 0) bad_arg("hidden: token count must be a positive multiple of seqlen");
    if (norm.length != static_cast<size_t>(H)) bad_arg("finalNorm: expected hiddenSize elements");
    if (head.length() != static_cast<size_t>(vocab * H)) bad_arg("lmHead: expected vocab*hiddenSize elements");
    auto result = std::make_shared<NllResult>();
    std::vector<Napi::Value> keep = {info[0], info[3], info[5], info[7]};
    if (flag) keep.push_back(info[8]);
    const float *x = hidden.data, *nw = norm.data;
    const int32_t* t = ids.data;
    return AsyncJob::start(
        env, "awq.lmHeadNll", keep,
        [=] {
          *result = head.half ? lm_head_nll(x, tokens, H, seqlen, nw, eps, head.f16.data, head.format, vocab, t, job_cancel_flag(flag))
                              : lm_head_nll(x, tokens, H, seqlen, nw, eps, head.f32.data, vocab, t, job_cancel_flag(flag));
        },
        [result](Napi::Env env, const std::vector<Napi::Value>&) {
          Napi::Object o = Napi::Object::New(env);
          o.Set("nllSum", result->nll_sum);
          o.Set("count", static_cast<double>(result->count));
          return o;
        });
  });
}

void Export(Napi::Env env, Napi::Object exports) {
  exports.Set("decoderLayerForward", Napi::Function::New(env, DecoderLayerForward, "decoderLayerForward"));
  exports.Set("pseudoQuantize", Napi::Function::New(env, PseudoQuantize, "pseudoQuantize"));
  exports.Set("lmHeadNll", Napi::Function::New(env, LmHeadNll, "lmHeadNll"));
}

AWQ_EXPORTS(Export);

}  // namespace
}  // namespace awq::addon
