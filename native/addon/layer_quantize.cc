// quantizeDecoderLayer(arch, weights, hidden | null, seqlen, options, onPhase?, abortFlag?)
//   -> Promise<{ linears, inputNorm, postNorm, output, report }>
// hidden == null (RTN only): no forward runs and output is empty. hidden may also be a
// cudaHiddenUpload handle (backend 'cuda'): the input is read from the device and the layer's
// output left there (output is then empty).
// options.backend 'cpu' (default) or 'cuda' (device 0); options.precision 'fp32' (default) |
// 'bf16' | 'fp16' (CUDA only) for the layer's linear products (gemm.h); 'cuda' in a build without
// CUDA is an ERR_AWQ_CUDA error saying how to build one.
// All outputs are allocated here on the JS thread; the search runs on a worker thread and
// reports phase changes through a thread-safe function.
#include <napi.h>

#include <chrono>
#include <future>
#include <memory>
#include <string>

#include "../core/search.h"
#ifdef AWQ_WITH_CUDA
#include "../cuda/cuda_layer.h"
#endif
#include "args.h"
#include "async.h"
#include "cuda_hidden.h"
#include "job_runner.h"
#include "layer_args.h"
#include "registry.h"

namespace awq::addon {
namespace {

struct Backend {
  bool cuda = false;
  Precision precision = Precision::F32;
};

Backend parse_backend(const Napi::Value& v) {
  Napi::Object o = v.As<Napi::Object>();
  Backend b;
  const Napi::Value be = field(o, "options", "backend", false);
  if (!be.IsUndefined()) {
    if (!be.IsString()) bad_arg("options.backend: expected 'cpu' or 'cuda'");
    const std::string name = be.As<Napi::String>().Utf8Value();
    if (name != "cpu" && name != "cuda") bad_arg("options.backend: expected 'cpu' or 'cuda', got '" + name + "'");
    b.cuda = name == "cuda";
  }
  const Napi::Value pr = field(o, "options", "precision", false);
  if (!pr.IsUndefined()) {
    b.precision = precision_arg(pr, "options.precision");
    if (b.precision == Precision::F16 && !b.cuda) bad_arg("options.precision: 'fp16' needs backend 'cuda' (the CPU takes 'fp32' or 'bf16')");
  }
#ifndef AWQ_WITH_CUDA
  if (b.cuda) no_cuda_build();
#endif
  return b;
}

SearchOptions parse_options(const Napi::Value& v) {
  if (!v.IsObject()) bad_arg("options: expected an object");
  Napi::Object o = v.As<Napi::Object>();
  SearchOptions s;
  s.bits = static_cast<int>(integer(field(o, "options", "wBit"), "options.wBit", 0));
  Napi::Value g = field(o, "options", "groupSize");
  if (!g.IsNumber()) bad_arg("options.groupSize: expected an integer");
  s.group_size = static_cast<int64_t>(g.As<Napi::Number>().DoubleValue());
  if (s.group_size != -1 && s.group_size < 1) bad_arg("options.groupSize: expected a positive integer or -1");
  s.zero_point = field(o, "options", "zeroPoint").ToBoolean().Value();
  s.duo_scaling = field(o, "options", "duoScaling").ToBoolean().Value();
  s.clip = field(o, "options", "clip").ToBoolean().Value();
  s.awq = field(o, "options", "awq").ToBoolean().Value();
  s.n_grid = static_cast<int>(integer(field(o, "options", "nGrid"), "options.nGrid", 1));
  Napi::Value ms = field(o, "options", "maxShrink");
  if (!ms.IsNumber()) bad_arg("options.maxShrink: expected a number");
  s.max_shrink = static_cast<float>(ms.As<Napi::Number>().DoubleValue());
  s.fp16_search_scales = field(o, "options", "fp16SearchScales", false).ToBoolean().Value();
  return s;
}

Napi::Value QuantizeDecoderLayer(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    std::vector<Napi::Value> keep;
    const LayerArch arch = parse_arch(info[0], keep);
    const LayerWeights w = parse_weights(info[1], arch, keep);
    const int64_t seqlen = integer(info[3], "seqlen", 1);
    const SearchOptions opt = parse_options(info[4]);
    [[maybe_unused]] const Backend backend = parse_backend(info[4]);  // read only in CUDA builds
    const bool has_cb = info[5].IsFunction();
    const int32_t* flag = cancel_flag(info[6]);
    // RTN needs no activations: hidden may be null, and then no forward runs.
    const bool no_hidden = info[2].IsNull() || info[2].IsUndefined();
    if (no_hidden && opt.awq) bad_arg("hidden: the AWQ search needs the calibration hidden states; null only with RTN");
    Borrowed<float> hidden{};
    size_t hidden_length = 0;  // elements of the hidden states (host or device)
#ifdef AWQ_WITH_CUDA
    const std::shared_ptr<CudaHidden> dev_hidden = cuda_hidden_of(info[2]);
    if (dev_hidden) {
      if (!backend.cuda) bad_arg("hidden: device hidden states need options.backend 'cuda'");
      if (!dev_hidden->states) bad_arg("hidden: these device hidden states were released");
      if (dev_hidden->states->hidden() != arch.hidden)
        bad_arg("hidden: the device hidden states have width " + std::to_string(dev_hidden->states->hidden()) +
                ", the layer's hiddenSize is " + std::to_string(arch.hidden));
      hidden_length = static_cast<size_t>(dev_hidden->states->tokens() * arch.hidden);
    }
#else
    constexpr bool dev_hidden = false;
#endif
    if (!no_hidden && !dev_hidden) {
      hidden = typed_array<float>(info[2], "hidden");
      hidden_length = hidden.length;
    }
    if (!no_hidden) {
      if (hidden_length == 0 || hidden_length % static_cast<size_t>(arch.hidden * seqlen) != 0) {
        bad_arg("hidden: expected a positive multiple of seqlen*hiddenSize = " +
                std::to_string(arch.hidden * seqlen) + " elements, got " + std::to_string(hidden_length));
      }
      keep.push_back(info[2]);
    }
    const int64_t tokens = static_cast<int64_t>(hidden_length) / arch.hidden;
    if (flag) keep.push_back(info[6]);

    const int64_t rows[] = {arch.q_out(), arch.kv_out(), arch.kv_out(), arch.hidden, arch.intermediate, arch.intermediate, arch.hidden};
    const int64_t cols[] = {arch.hidden, arch.hidden, arch.hidden, arch.q_out(), arch.hidden, arch.hidden, arch.intermediate};
    const bool has_bias[] = {w.q_bias != nullptr, w.k_bias != nullptr, w.v_bias != nullptr, w.o_bias != nullptr, false, false, false};
    LayerQuantOutputs out;
    Napi::Object result = Napi::Object::New(env);
    Napi::Object linears = Napi::Object::New(env);
    for (int id = 0; id < kNumLinears; ++id) {
      const QuantParams p = opt.params(cols[id]);
      check_quant_params(p, cols[id]);
      const size_t n = static_cast<size_t>(rows[id] * cols[id]), ng = n / static_cast<size_t>(p.group);
      Napi::Object lin = Napi::Object::New(env);
      auto q = Napi::Uint8Array::New(env, n);
      auto z = Napi::Uint8Array::New(env, ng);
      auto s = Napi::Float32Array::New(env, ng);
      lin.Set("out", static_cast<double>(rows[id]));
      lin.Set("in", static_cast<double>(cols[id]));
      lin.Set("groupSize", static_cast<double>(p.group));
      lin.Set("q", q);
      lin.Set("zeros", z);
      lin.Set("scales", s);
      out.q[id] = q.Data();
      out.zeros[id] = z.Data();
      out.scales[id] = s.Data();
      if (has_bias[id]) {
        auto b = Napi::Float32Array::New(env, static_cast<size_t>(rows[id]));
        lin.Set("bias", b);
        out.bias[id] = b.Data();
      }
      linears.Set(linear_name(id), lin);
    }
    auto in_norm = Napi::Float32Array::New(env, static_cast<size_t>(arch.hidden));
    auto post_norm = Napi::Float32Array::New(env, static_cast<size_t>(arch.hidden));
    auto output = Napi::Float32Array::New(env, dev_hidden ? 0 : hidden_length);  // device form: output stays there
    out.input_norm = in_norm.Data();
    out.post_norm = post_norm.Data();
    out.output = dev_hidden ? nullptr : output.Data();
    result.Set("linears", linears);
    result.Set("inputNorm", in_norm);
    result.Set("postNorm", post_norm);
    result.Set("output", output);
    keep.push_back(result);  // keeps every output array alive

    std::shared_ptr<Napi::ThreadSafeFunction> tsfn;
    if (has_cb) {
      tsfn = std::make_shared<Napi::ThreadSafeFunction>(
          Napi::ThreadSafeFunction::New(env, info[5].As<Napi::Function>(), "awq.onPhase", 0, 1));
    }
    auto report = std::make_shared<LayerQuantReport>();
    const float* x = hidden.data;
    // The job releases tsfn when it ends; a job that never starts (no job thread) must too, or
    // the callback would keep the event loop alive.
    struct ReleaseUnlessStarted {
      std::shared_ptr<Napi::ThreadSafeFunction> f;
      bool started = false;
      ~ReleaseUnlessStarted() {
        if (f && !started) f->Release();
      }
    } unstarted{tsfn};
    Napi::Promise promise = AsyncJob::start(
        env, "awq.quantizeDecoderLayer", keep,
        [=] {
          // released on every path, or the event loop would stay alive
          struct Release {
            std::shared_ptr<Napi::ThreadSafeFunction> f;
            ~Release() {
              if (f) f->Release();
            }
          } release{tsfn};
          // Each phase is delivered before the work goes on (waiting at most a second, so a
          // JS thread that is shutting down cannot hang the worker): the caller sees every
          // phase before the promise settles.
          auto on_phase = [&](const char* phase) {
            if (!tsfn || job_env_closing()) return;
            struct Call {
              std::string phase;
              std::promise<void> done;
            };
            auto* call = new Call{phase, {}};
            std::future<void> done = call->done.get_future();
            const napi_status st = tsfn->BlockingCall(call, [](Napi::Env env, Napi::Function cb, Call* c) {
              try {
                cb.Call({Napi::String::New(env, c->phase)});
              } catch (const Napi::Error&) {
                // Not reached from lib/: quantizeDecoderLayer (layer.ts) catches its listener's
                // exception itself, sets the abort flag and rejects with it. Here it would only
                // break the job midway.
              }
              c->done.set_value();
              delete c;
            });
            if (st != napi_ok) {
              delete call;
              return;
            }
            // A JS thread that tears its environment down waits for this job and delivers nothing.
            for (int slice = 0; slice < 100 && !job_env_closing(); slice++) {
              if (done.wait_for(std::chrono::milliseconds(10)) == std::future_status::ready) break;
            }
          };
#ifdef AWQ_WITH_CUDA
          if (dev_hidden) {
            CudaHiddenUse use(dev_hidden);
            cuda::quantize_decoder_layer(arch, w, use.states(), seqlen, opt, backend.precision,
                                         out, *report, job_cancel_flag(flag), on_phase);
            return;
          }
          if (backend.cuda) {
            cuda::quantize_decoder_layer(arch, w, x, tokens, seqlen, opt, backend.precision,
                                         out, *report, job_cancel_flag(flag), on_phase);
            return;
          }
#endif
          quantize_decoder_layer(arch, w, x, tokens, seqlen, opt, backend.precision, out, *report, job_cancel_flag(flag),
                                 on_phase);
        },
        [report](Napi::Env env, const std::vector<Napi::Value>& kept) {
          Napi::Object res = kept.back().As<Napi::Object>();
          Napi::Object r = Napi::Object::New(env);
          Napi::Array groups = Napi::Array::New(env, report->groups.size());
          for (size_t i = 0; i < report->groups.size(); ++i) {
            const GroupResult& g = report->groups[i];
            Napi::Object o = Napi::Object::New(env);
            o.Set("group", g.group);
            Napi::Array names = Napi::Array::New(env, g.linears.size());
            for (size_t k = 0; k < g.linears.size(); ++k) names.Set(static_cast<uint32_t>(k), linear_name(g.linears[k]));
            o.Set("linears", names);
            o.Set("foldedInto", g.folded_into);
            if (!g.skipped.empty()) o.Set("skipped", g.skipped);
            if (!g.loss_method.empty()) o.Set("lossMethod", g.loss_method);
            o.Set("bestRatio", g.best_ratio);
            o.Set("lossAtBest", g.loss_best);
            o.Set("lossAtZero", g.loss_zero);
            Napi::Array losses = Napi::Array::New(env, g.losses.size());
            for (size_t k = 0; k < g.losses.size(); ++k) losses.Set(static_cast<uint32_t>(k), g.losses[k]);
            o.Set("losses", losses);
            Napi::Array sal = Napi::Array::New(env, g.salient.size());
            for (size_t k = 0; k < g.salient.size(); ++k) {
              Napi::Object c = Napi::Object::New(env);
              c.Set("channel", static_cast<double>(g.salient[k].first));
              c.Set("stat", g.salient[k].second);
              sal.Set(static_cast<uint32_t>(k), c);
            }
            o.Set("salientChannels", sal);
            groups.Set(static_cast<uint32_t>(i), o);
          }
          r.Set("groups", groups);
          Napi::Array clips = Napi::Array::New(env, report->clips.size());
          for (size_t i = 0; i < report->clips.size(); ++i) {
            const ClipResult& c = report->clips[i];
            Napi::Object o = Napi::Object::New(env);
            o.Set("linear", linear_name(c.linear));
            o.Set("meanShrink", c.mean_shrink);
            Napi::Array h = Napi::Array::New(env, c.histogram.size());
            for (size_t k = 0; k < c.histogram.size(); ++k) h.Set(static_cast<uint32_t>(k), static_cast<double>(c.histogram[k]));
            o.Set("shrinkHistogram", h);
            clips.Set(static_cast<uint32_t>(i), o);
          }
          r.Set("clip", clips);
          Napi::Object t = Napi::Object::New(env);
          t.Set("forward", report->ms_forward);
          t.Set("scaleSearch", report->ms_scale);
          t.Set("clipSearch", report->ms_clip);
          t.Set("quantize", report->ms_quant);
          r.Set("timingsMs", t);
          r.Set("gflop", report->flops / 1e9);
          res.Set("report", r);
          return res;
        });
    unstarted.started = true;
    return promise;
  });
}

void Export(Napi::Env env, Napi::Object exports) {
  exports.Set("quantizeDecoderLayer", Napi::Function::New(env, QuantizeDecoderLayer, "quantizeDecoderLayer"));
}

AWQ_EXPORTS(Export);

}  // namespace
}  // namespace awq::addon
