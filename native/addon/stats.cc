// activationStats(x, rows, cols, device?) -> Promise<Float32Array>: per-channel mean |x|.
#include <napi.h>

#include "../core/stats.h"
#include "args.h"
#include "async.h"
#include "registry.h"
#ifdef AWQ_WITH_CUDA
#include "../cuda/cuda_backend.h"
#endif

namespace awq::addon {
namespace {

Napi::Value ActivationStats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    auto x = typed_array<float>(info[0], "x");
    const int64_t rows = integer(info[1], "rows", 1);
    const int64_t cols = integer(info[2], "cols", 1);
    if (static_cast<size_t>(rows * cols) != x.length) {
      bad_arg("x: expected rows*cols = " + std::to_string(rows * cols) + " elements, got " +
              std::to_string(x.length));
    }
    const bool on_cuda = info.Length() > 3 && info[3].IsString() &&
                         info[3].As<Napi::String>().Utf8Value() == "cuda";
#ifndef AWQ_WITH_CUDA
    if (on_cuda) no_cuda_build();
#endif
    Napi::Float32Array out = Napi::Float32Array::New(env, static_cast<size_t>(cols));
    float* out_data = out.Data();
    const float* x_data = x.data;
    return AsyncJob::start(
        env, "awq.activationStats", {info[0], out},
        [=] {
#ifdef AWQ_WITH_CUDA
          if (on_cuda) return awq::cuda::abs_mean_columns(x_data, rows, cols, out_data);
#endif
          abs_mean_columns(x_data, rows, cols, out_data);
        },
        [](Napi::Env, const std::vector<Napi::Value>& kept) { return kept[1]; });
  });
}

void Export(Napi::Env env, Napi::Object exports) {
  exports.Set("activationStats", Napi::Function::New(env, ActivationStats, "activationStats"));
}

AWQ_EXPORTS(Export);

}  // namespace
}  // namespace awq::addon
