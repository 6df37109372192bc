// The CUDA int4 GEMM behind Int4Linear's device 'cuda' (native/cuda/cuda_gemm.h): the AWQ
// tensors are repacked once and uploaded to device 0; each forward rounds x to fp16 on the host
// (the kernels are W4A16), copies it over, multiplies (skinny kernel for m <= 16, tiled or
// dequantize + dense beyond) and copies y (fp32) back.
//   int4CudaUpload(qweight, qzeros, scales, bias|null, in, out, group) -> Promise<handle>
//   int4CudaInfo(handle) -> { in, out, group, bytes }
//   int4CudaForward(handle, x, dtype, m, y) -> Promise<y>   (dtype 0 f32, 1 f16, 2 bf16)
//   int4CudaRelease(handle) -> Promise<undefined>   frees the device memory now (later calls reject)
// In a build without CUDA each of them is an ERR_AWQ_CUDA error saying how to build one.
#include <napi.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "../core/errors.h"
#include "../core/int4_gemm.h"
#ifdef AWQ_WITH_CUDA
#include "../cuda/cuda_gemm.h"
#endif
#include "args.h"
#include "async.h"
#include "registry.h"

namespace awq::addon {
namespace {

#ifdef AWQ_WITH_CUDA
struct CudaInt4 {
  cuda::Int4DeviceWeights w;
  int64_t in = 0, out = 0, group = 0;
  // One forward (or the release) at a time: the GPU runs them one after the other on the default
  // stream anyway, and the small-m x / y buffers are shared.
  std::mutex mu;
  bool released = false;
  cuda::DeviceMemory dx, dy;  // kept for calls of at most kCachedForwardBytes (decode steps)
};
// x and y buffers up to this size are kept on the handle between calls (a decode step of a 7B
// layer needs well under 1 MiB); larger ones (prefill) are allocated for the call and freed after
// it, so one long prompt does not pin gigabytes per layer.
constexpr size_t kCachedForwardBytes = size_t{16} << 20;

const char* const kReleased = "weights: this CUDA int4 layer was released (dispose)";
using Handle = std::shared_ptr<CudaInt4>;

// Marks externals created here, so another External passed back cannot be misread.
constexpr napi_type_tag kCudaInt4Tag = {0x5d2e8b41a7c3f096ULL, 0x0e94c6b3d1f72a58ULL};

Handle unwrap(const Napi::Value& v) {
  const Handle* h = tagged_external_data<Handle>(v, kCudaInt4Tag);
  if (!h) bad_arg("weights: expected a CUDA int4 weight handle");
  return *h;
}

Napi::Value Upload(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    const int64_t in = integer(info[4], "in", 1), out = integer(info[5], "out", 1);
    int64_t group = integer(info[6], "group", 0);
    if (group == 0) group = in;
    check_int4_shape(in, out, group);  // the CPU handle's rules; int4_upload_awq adds the kernels' (multiples of 32)
    if (out % 8 != 0) bad_arg("out: AWQ packing needs a multiple of 8, got " + std::to_string(out));
    const int64_t groups = in / group;
    const int32_t* qweight = sized_array<int32_t>(info[0], "qweight", static_cast<size_t>(in * out / 8));
    const int32_t* qzeros = sized_array<int32_t>(info[1], "qzeros", static_cast<size_t>(groups * out / 8));
    const uint16_t* scales = sized_array<uint16_t>(info[2], "scales", static_cast<size_t>(groups * out));
    const uint16_t* bias = optional_array<uint16_t>(info[3], "bias", static_cast<size_t>(out));
    std::vector<Napi::Value> keep;
    for (size_t i = 0; i < 4; ++i)
      if (info[i].IsObject()) keep.push_back(info[i]);
    auto box = std::make_shared<Handle>(std::make_shared<CudaInt4>());
    return AsyncJob::start(
        env, "awq.int4CudaUpload", keep,
        [=] {
          CudaInt4& h = **box;
          h.w = cuda::int4_upload_awq(qweight, qzeros, scales, bias, in, out, group);
          h.in = in;
          h.out = out;
          h.group = group;
        },
        [box](Napi::Env e, const std::vector<Napi::Value>&) -> Napi::Value {
          return tagged_external(e, new Handle(std::move(*box)), kCudaInt4Tag);
        });
  });
}

Napi::Value Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    const Handle h = unwrap(info[0]);
    return int4_info_object(env, h->in, h->out, h->group, h->w.bytes());
  });
}

// x (f32, f16 or bf16 bits) -> fp16 bits; NaN/Inf inputs and values beyond fp16's range are a
// NonFinite error naming the element (the CPU path rejects NaN/Inf the same way).
std::vector<uint16_t> to_fp16(const void* x, int dtype, int64_t m, int64_t in) {
  const int64_t n = m * in;
  std::vector<float> scratch;
  const float* xf = activations_f32(x, dtype, n, scratch);
  std::vector<uint16_t> h(static_cast<size_t>(n));
  f32_to_fp16(xf, h.data(), n);
  for (int64_t i = 0; i < n; ++i)
    if ((h[i] & 0x7C00) == 0x7C00) {
      const std::string where = "x[" + std::to_string(i / in) + ", " + std::to_string(i % in) + "]";
      if (!std::isfinite(xf[i])) throw Error(ErrorCode::NonFinite, where + " is " + (std::isnan(xf[i]) ? "NaN" : "Inf"));
      throw Error(ErrorCode::NonFinite, where + " = " + std::to_string(xf[i]) +
                                            " is beyond fp16's range (the CUDA int4 kernels take fp16 activations)");
    }
  return h;
}

Napi::Value Forward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    const Handle h = unwrap(info[0]);
    const int dtype = static_cast<int>(integer(info[2], "dtype", 0));
    if (dtype > 2) bad_arg("dtype: expected 0 (f32), 1 (f16) or 2 (bf16), got " + std::to_string(dtype));
    const int64_t m = integer(info[3], "m", 1);
    if (m > 1000000) bad_arg("m: at most 1000000 rows per call, got " + std::to_string(m));
    const size_t nx = static_cast<size_t>(m * h->in), ny = static_cast<size_t>(m * h->out);
    const void* x = dtype == 0 ? static_cast<const void*>(sized_array<float>(info[1], "x", nx))
                               : static_cast<const void*>(sized_array<uint16_t>(info[1], "x", nx));
    float* y = const_cast<float*>(sized_array<float>(info[4], "y", ny));
    return AsyncJob::start(
        env, "awq.int4CudaForward", {info[1], info[4]},
        [=] {
          const std::vector<uint16_t> xh = to_fp16(x, dtype, m, h->in);
          std::lock_guard<std::mutex> lock(h->mu);
          if (h->released) bad_arg(kReleased);
          cuda::DeviceMemory call_x, call_y;
          void* dx;
          void* dy;
          if (nx * 2 + ny * 4 <= kCachedForwardBytes) {
            if (h->dx.size() < nx * 2) h->dx = cuda::DeviceMemory(nx * 2, "int4 forward x (fp16)");
            if (h->dy.size() < ny * 4) h->dy = cuda::DeviceMemory(ny * 4, "int4 forward y");
            dx = h->dx.get();
            dy = h->dy.get();
          } else {
            call_x = cuda::DeviceMemory(nx * 2, "int4 forward x (fp16)");
            call_y = cuda::DeviceMemory(ny * 4, "int4 forward y");
            dx = call_x.get();
            dy = call_y.get();
          }
          cuda::copy_to_device(dx, xh.data(), nx * 2);
          cuda::int4_gemm(h->w, dx, m, dy, cuda::Dtype::F32);
          cuda::copy_to_host(y, dy, ny * 4);  // waits for the product (same stream)
        },
        [](Napi::Env, const std::vector<Napi::Value>& kept) { return kept[1]; });
  });
}

// On a worker: it waits for a forward in flight, and cudaFree waits for the device.
Napi::Value Release(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    const Handle h = unwrap(info[0]);
    return AsyncJob::start(
        env, "awq.int4CudaRelease", {},
        [h] {
          std::lock_guard<std::mutex> lock(h->mu);
          h->released = true;
          h->w = cuda::Int4DeviceWeights{};
          h->dx = cuda::DeviceMemory();
          h->dy = cuda::DeviceMemory();
        },
        resolve_undefined);
  });
}
#endif

void Export(Napi::Env env, Napi::Object exports) {
#ifdef AWQ_WITH_CUDA
  exports.Set("int4CudaUpload", Napi::Function::New(env, Upload, "int4CudaUpload"));
  exports.Set("int4CudaInfo", Napi::Function::New(env, Info, "int4CudaInfo"));
  exports.Set("int4CudaForward", Napi::Function::New(env, Forward, "int4CudaForward"));
  exports.Set("int4CudaRelease", Napi::Function::New(env, Release, "int4CudaRelease"));
#else
  export_without_cuda(env, exports, {"int4CudaUpload", "int4CudaInfo", "int4CudaForward", "int4CudaRelease"});
#endif
}

AWQ_EXPORTS(Export);

}  // namespace
}  // namespace awq::addon
