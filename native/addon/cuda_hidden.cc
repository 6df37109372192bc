// Device-resident hidden states for the CUDA layer driver (see cuda_hidden.h):
//   cudaHiddenUpload(hidden Float32Array, hiddenSize) -> Promise<handle>
//   cudaHiddenInfo(handle) -> { tokens, hiddenSize, released }
//   cudaHiddenDownload(handle) -> Promise<Float32Array [tokens * hiddenSize]>
//   cudaHiddenRelease(handle) -> Promise<undefined>   gives the device memory back now (also done by the GC)
//   cudaHiddenForward(handle, arch, weights, seqlen, abortFlag?) -> Promise<undefined>
//       one decoder layer's fp32 forward on the states, in place (awq eval on CUDA)
// The copies (about 1 GiB for a 7B model's calibration states, from pageable memory) and the free
// (cudaFree waits for the device) run on a worker, not on the event loop.
// In a build without CUDA each of them is an ERR_AWQ_CUDA error saying how to build one.
#include "cuda_hidden.h"

#include <string>

#include "../core/errors.h"
#include "../cuda/cuda_layer.h"
#include "args.h"
#include "async.h"
#include "job_runner.h"
#include "layer_args.h"
#include "registry.h"

namespace awq::addon {

#ifdef AWQ_WITH_CUDA
namespace {

using Handle = std::shared_ptr<CudaHidden>;

// Marks externals created here, so another External passed back cannot be misread.
constexpr napi_type_tag kHiddenTag = {0x3e6b1d95c07a4f28ULL, 0x91d2a7c4e85f306bULL};

// The handle behind `v`; an argument error when it is not one.
Handle handle_of(const Napi::Value& v) {
  Handle h = cuda_hidden_of(v);
  if (!h) bad_arg("hidden: expected a handle from cudaHiddenUpload");
  return h;
}

}  // namespace

std::shared_ptr<CudaHidden> cuda_hidden_of(const Napi::Value& v) {
  const Handle* h = tagged_external_data<Handle>(v, kHiddenTag);
  return h ? *h : nullptr;
}

CudaHiddenUse::CudaHiddenUse(std::shared_ptr<CudaHidden> h) : h_(std::move(h)) {
  if (h_->busy.exchange(true))
    throw Error(ErrorCode::InvalidArgument, "hidden: these device hidden states are in use by another layer call");
  if (!h_->states) {
    h_->busy = false;
    throw Error(ErrorCode::InvalidArgument, "hidden: these device hidden states were released");
  }
}
CudaHiddenUse::~CudaHiddenUse() { h_->busy = false; }

namespace {

Napi::Value Upload(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    const auto hidden = typed_array<float>(info[0], "hidden");
    const int64_t H = integer(info[1], "hiddenSize", 1);
    if (hidden.length == 0 || hidden.length % static_cast<size_t>(H) != 0)
      bad_arg("hidden: expected a positive multiple of hiddenSize = " + std::to_string(H) + " elements, got " +
              std::to_string(hidden.length));
    auto h = std::make_shared<CudaHidden>();
    const float* data = hidden.data;
    const int64_t tokens = static_cast<int64_t>(hidden.length) / H;
    return AsyncJob::start(
        env, "awq.cudaHiddenUpload", {info[0]},
        [h, data, tokens, H] { h->states = std::make_unique<cuda::DeviceHidden>(data, tokens, H); },
        [h](Napi::Env e, const std::vector<Napi::Value>&) -> Napi::Value {
          return tagged_external(e, new Handle(h), kHiddenTag);
        });
  });
}

Napi::Value Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    const Handle h = handle_of(info[0]);
    Napi::Object o = Napi::Object::New(env);
    o.Set("released", !h->states);
    o.Set("tokens", h->states ? static_cast<double>(h->states->tokens()) : 0.0);
    o.Set("hiddenSize", h->states ? static_cast<double>(h->states->hidden()) : 0.0);
    return o;
  });
}

Napi::Value Download(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    const Handle h = handle_of(info[0]);
    size_t n = 0;
    {
      CudaHiddenUse use(h);  // refuses released or busy states now; the worker checks again
      n = static_cast<size_t>(use.states().tokens() * use.states().hidden());
    }
    auto out = Napi::Float32Array::New(env, n);
    float* dst = out.Data();
    return AsyncJob::start(
        env, "awq.cudaHiddenDownload", {out},
        [h, dst, n] {
          CudaHiddenUse use(h);
          const cuda::DeviceHidden& s = use.states();
          if (static_cast<size_t>(s.tokens() * s.hidden()) != n)
            throw Error(ErrorCode::InvalidArgument, "hidden: the device hidden states changed shape during the download");
          s.download(dst);
        },
        [](Napi::Env, const std::vector<Napi::Value>& kept) -> Napi::Value { return kept[0]; });
  });
}

Napi::Value Release(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    const Handle h = handle_of(info[0]);
    return AsyncJob::start(
        env, "awq.cudaHiddenRelease", {},
        [h] {
          if (!h->states) return;  // released already: idempotent
          CudaHiddenUse use(h);     // not while a layer call holds them
          h->states.reset();
        },
        resolve_undefined);
  });
}

Napi::Value Forward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    const Handle h = handle_of(info[0]);
    std::vector<Napi::Value> keep;
    const LayerArch arch = parse_arch(info[1], keep);
    const LayerWeights w = parse_weights(info[2], arch, keep);
    const int64_t seqlen = integer(info[3], "seqlen", 1);
    const int32_t* flag = cancel_flag(info[4]);
    if (flag) keep.push_back(info[4]);
    {
      CudaHiddenUse use(h);  // refuses released or busy states now; the worker checks again
      const cuda::DeviceHidden& s = use.states();
      if (s.hidden() != arch.hidden)
        bad_arg("hidden: the device hidden states have width " + std::to_string(s.hidden()) +
                ", the layer's hiddenSize is " + std::to_string(arch.hidden));
      if (s.tokens() % seqlen != 0)
        bad_arg("hidden: " + std::to_string(s.tokens()) + " tokens are not whole blocks of seqlen " + std::to_string(seqlen));
    }
    return AsyncJob::start(
        env, "awq.cudaHiddenForward", keep,
        [h, arch, w, seqlen, flag] {
          CudaHiddenUse use(h);
          cuda::decoder_layer_forward(arch, w, use.states(), seqlen, Precision::F32, job_cancel_flag(flag));
        },
        resolve_undefined);
  });
}

}  // namespace
#endif

namespace {

void Export(Napi::Env env, Napi::Object exports) {
#ifdef AWQ_WITH_CUDA
  exports.Set("cudaHiddenUpload", Napi::Function::New(env, Upload, "cudaHiddenUpload"));
  exports.Set("cudaHiddenInfo", Napi::Function::New(env, Info, "cudaHiddenInfo"));
  exports.Set("cudaHiddenDownload", Napi::Function::New(env, Download, "cudaHiddenDownload"));
  exports.Set("cudaHiddenRelease", Napi::Function::New(env, Release, "cudaHiddenRelease"));
  exports.Set("cudaHiddenForward", Napi::Function::New(env, Forward, "cudaHiddenForward"));
#else
  export_without_cuda(env, exports,
                      {"cudaHiddenUpload", "cudaHiddenInfo", "cudaHiddenDownload", "cudaHiddenRelease", "cudaHiddenForward"});
#endif
}

AWQ_EXPORTS(Export);

}  // namespace
}  // namespace awq::addon
