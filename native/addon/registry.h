// Each addon file registers its exports with AWQ_EXPORTS(fn); main.cc calls them all, so adding
// a binding never means editing a central list.
#pragma once
#include <napi.h>

#include <initializer_list>

#include "../core/errors.h"
#include "async.h"

namespace awq::addon {

using ExportFn = void (*)(Napi::Env env, Napi::Object exports);

struct Registration {
  explicit Registration(ExportFn fn);
};

void register_all(Napi::Env env, Napi::Object exports);

// The error of a CUDA feature in a binary built without CUDA.
[[noreturn]] inline void no_cuda_build() {
  throw awq::Error(awq::ErrorCode::Cuda,
                   "this binary was built without CUDA; build one with `npm run build:cuda` (needs nvcc)");
}

// A binary built without CUDA exports its CUDA bindings as functions throwing no_cuda_build's
// error, so that callers get that typed error rather than "not a function".
inline void export_without_cuda(Napi::Env env, Napi::Object exports, std::initializer_list<const char*> names) {
  for (const char* name : names)
    exports.Set(name, Napi::Function::New(
                          env,
                          [](const Napi::CallbackInfo& info) {
                            return guarded(info.Env(), []() -> Napi::Value { no_cuda_build(); });
                          },
                          name));
}

}  // namespace awq::addon

#define AWQ_CONCAT_INNER(a, b) a##b
#define AWQ_CONCAT(a, b) AWQ_CONCAT_INNER(a, b)
#define AWQ_EXPORTS(fn) \
  static ::awq::addon::Registration AWQ_CONCAT(awq_registration_, __LINE__)(fn)
