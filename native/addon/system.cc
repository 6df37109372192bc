// backends(), setThreads(), setIsaCap(): what this build can run on, and its knobs.
#include <napi.h>

#include "../core/cpu_features.h"
#include "../core/gemm.h"
#include "../core/threadpool.h"
#include "args.h"
#include "async.h"
#include "registry.h"
#ifdef AWQ_WITH_CUDA
#include "../cuda/cuda_backend.h"
#endif

namespace awq::addon {
namespace {

Napi::Value cuda_info(Napi::Env env) {
  Napi::Object cuda = Napi::Object::New(env);
#ifdef AWQ_WITH_CUDA
  std::string why;
  const auto devices = awq::cuda::list_devices(&why);
  Napi::Array list = Napi::Array::New(env, devices.size());
  for (size_t i = 0; i < devices.size(); ++i) {
    Napi::Object d = Napi::Object::New(env);
    d.Set("index", devices[i].index);
    d.Set("name", devices[i].name);
    d.Set("computeCapability",
          std::to_string(devices[i].cc_major) + "." + std::to_string(devices[i].cc_minor));
    d.Set("memoryBytes", static_cast<double>(devices[i].memory_bytes));
    list.Set(static_cast<uint32_t>(i), d);
  }
  cuda.Set("compiled", true);
  cuda.Set("devices", list);
  cuda.Set("reason", devices.empty() ? Napi::Value(Napi::String::New(env, why)) : env.Null());
#else
  cuda.Set("compiled", false);
  cuda.Set("devices", Napi::Array::New(env, 0));
  cuda.Set("reason", "this binary was built without CUDA (`npm run build:cuda` builds one)");
#endif
  return cuda;
}

Napi::Value Backends(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    Napi::Object cpu = Napi::Object::New(env);
    cpu.Set("isa", isa_name(active_isa()));
    cpu.Set("threads", num_threads());
    cpu.Set("cores", available_cores());
    cpu.Set("features", cpu_feature_list());
    cpu.Set("bf16Products", bf16_products_native());
    Napi::Object out = Napi::Object::New(env);
    out.Set("cpu", cpu);
    out.Set("cuda", cuda_info(env));
    return out;
  });
}

Napi::Value SetThreads(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    const int64_t n = integer(info[0], "threads", 0);
    if (n > kMaxThreads) bad_arg("threads: at most " + std::to_string(kMaxThreads) + ", got " + std::to_string(n));
    set_threads(static_cast<int>(n));
    return Napi::Number::New(env, num_threads());
  });
}

Napi::Value SetIsaCap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    if (!info[0].IsString()) bad_arg("isa: expected 'portable', 'avx2', 'avx512' or 'neon'");
    const std::string s = info[0].As<Napi::String>().Utf8Value();
    Isa cap;
    if (s == "portable") cap = Isa::Portable;
    else if (s == "avx2") cap = Isa::Avx2;
    else if (s == "avx512") cap = Isa::Avx512;
    else if (s == "neon") cap = Isa::Neon;
    else bad_arg("isa: expected 'portable', 'avx2', 'avx512' or 'neon', got '" + s + "'");
    return Napi::String::New(env, isa_name(set_isa_cap(cap)));
  });
}

// The version of the bindings' arguments and results, which lib/native.ts's INTERFACE_VERSION must
// equal: bumped whenever a binding changes its contract, so that a CUDA build made before (it is
// built by hand and outlives `git pull` in a checkout) is set aside instead of misreading new
// arguments. Builds without it are version 1. 2: 16-bit B for sgemm, lm_head for lmHeadNll, widenSync.
constexpr int kInterfaceVersion = 2;

void Export(Napi::Env env, Napi::Object exports) {
  exports.Set("interfaceVersion", Napi::Number::New(env, kInterfaceVersion));
  exports.Set("backends", Napi::Function::New(env, Backends, "backends"));
  exports.Set("setThreads", Napi::Function::New(env, SetThreads, "setThreads"));
  exports.Set("setIsaCap", Napi::Function::New(env, SetIsaCap, "setIsaCap"));
#ifdef AWQ_WITH_CUDA
  exports.Set("cudaBuild", Napi::Boolean::New(env, true));
#else
  exports.Set("cudaBuild", Napi::Boolean::New(env, false));
#endif
}

AWQ_EXPORTS(Export);

}  // namespace
}  // namespace awq::addon
