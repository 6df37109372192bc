// `awq bench cuda-gemm`: the CUDA int4 GEMM against this project's dense fp16 GEMM and the
// device's copy bandwidth, timed on device 0 on a stream of the benchmark's own
// (native/cuda/gemm_bench.h, shared with the awq_cuda_bench executable).
//   cudaBenchCopy() -> Promise<GB/s>   (1 GiB device-to-device copy, bytes read + written)
//   cudaBenchGemm(K, N, ms: number[], reps) -> Promise<{ int4WeightBytes, rows: [{ m, int4Ms, denseMs }] }>
// In a build without CUDA each of them is an ERR_AWQ_CUDA error saying how to build one.
#include <napi.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "../core/errors.h"
#ifdef AWQ_WITH_CUDA
#include "../cuda/cuda_gemm.h"
#include "../cuda/gemm_bench.h"
#endif
#include "args.h"
#include "async.h"
#include "registry.h"

namespace awq::addon {
namespace {

#ifdef AWQ_WITH_CUDA
Napi::Value BenchCopy(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    auto gbps = std::make_shared<double>(0);
    return AsyncJob::start(
        env, "awq.cudaBenchCopy", {},
        [gbps] {
          const cuda::DeviceStream stream;
          *gbps = cuda::copy_bandwidth_gbps(stream.get());
        },
        [gbps](Napi::Env e, const std::vector<Napi::Value>&) { return Napi::Number::New(e, *gbps); });
  });
}

struct GemmTimes {
  double weight_bytes = 0;
  std::vector<int64_t> ms;
  std::vector<double> int4_ms, dense_ms;
};

Napi::Value BenchGemm(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    const int64_t K = integer(info[0], "K", 128), N = integer(info[1], "N", 8);
    if (K % 128 != 0 || N % 8 != 0)
      bad_arg("K must be a multiple of 128 and N of 8, got " + std::to_string(K) + " x " + std::to_string(N));
    if (!info[2].IsArray() || info[2].As<Napi::Array>().Length() == 0) bad_arg("ms: expected a non-empty array of row counts");
    auto t = std::make_shared<GemmTimes>();
    const Napi::Array ms = info[2].As<Napi::Array>();
    for (uint32_t i = 0; i < ms.Length(); ++i) t->ms.push_back(integer(ms.Get(i), "ms[i]", 1));
    const int reps = static_cast<int>(std::min<int64_t>(integer(info[3], "reps", 3), 1000));
    return AsyncJob::start(
        env, "awq.cudaBenchGemm", {},
        [t, K, N, reps] {
          const cuda::DeviceStream stream;
          cuda::GemmBenchShape shape(K, N, *std::max_element(t->ms.begin(), t->ms.end()), stream.get());
          t->weight_bytes = shape.int4_weight_bytes();
          for (const int64_t M : t->ms) {
            const int r = cuda::GemmBenchShape::reps_for(M, reps), batch = cuda::GemmBenchShape::batch_for(M);
            t->dense_ms.push_back(shape.dense_ms(M, 3, r, batch));
            t->int4_ms.push_back(shape.int4_ms(M, 3, r, batch));
          }
        },
        [t](Napi::Env e, const std::vector<Napi::Value>&) -> Napi::Value {
          Napi::Object out = Napi::Object::New(e);
          out.Set("int4WeightBytes", t->weight_bytes);
          Napi::Array rows = Napi::Array::New(e, t->ms.size());
          for (size_t i = 0; i < t->ms.size(); ++i) {
            Napi::Object row = Napi::Object::New(e);
            row.Set("m", static_cast<double>(t->ms[i]));
            row.Set("int4Ms", t->int4_ms[i]);
            row.Set("denseMs", t->dense_ms[i]);
            rows.Set(static_cast<uint32_t>(i), row);
          }
          out.Set("rows", rows);
          return out;
        });
  });
}
#endif

void Export(Napi::Env env, Napi::Object exports) {
#ifdef AWQ_WITH_CUDA
  exports.Set("cudaBenchCopy", Napi::Function::New(env, BenchCopy, "cudaBenchCopy"));
  exports.Set("cudaBenchGemm", Napi::Function::New(env, BenchGemm, "cudaBenchGemm"));
#else
  export_without_cuda(env, exports, {"cudaBenchCopy", "cudaBenchGemm"});
#endif
}

AWQ_EXPORTS(Export);

}  // namespace
}  // namespace awq::addon
