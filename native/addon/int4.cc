// The int4 GEMM: packed weights live in a type-tagged External (freed by the GC, counted as
// external memory), and the products run on the shared pool.
//   int4PackAwq(qweight, qzeros, scales, bias|null, in, out, group) -> Promise<handle>
//   int4PackQuantized(q, zeros, scales, bias|null, in, out, group)   -> Promise<handle>
//   int4Info(handle) -> { in, out, group, bytes }
//   int4Forward(handle, x, dtype, m, mode, y) -> Promise<y>  (dtype 0 f32, 1 f16, 2 bf16; mode 0 exact, 1 int8)
//   int4ForwardSync(...same...) -> y
//   int4Dequantize(handle, dst) -> dst                         (dst Float32Array [out * in])
//   int4Release(handle)        drops the weights now (calls in flight keep their own reference)
#include <napi.h>

#include <memory>
#include <vector>

#include "../core/dtype.h"
#include "../core/int4_gemm.h"
#include "args.h"
#include "async.h"
#include "registry.h"

namespace awq::addon {
namespace {

using Handle = std::shared_ptr<Int4Weights>;

// Marks externals created here, so another External passed back cannot be misread.
constexpr napi_type_tag kInt4Tag = {0x8a1f3c2e9b7d4a61ULL, 0x5c03e7f2d8b94e17ULL};

Napi::Value wrap(Napi::Env env, Handle h) {
  const int64_t bytes = static_cast<int64_t>(h->bytes());
  return tagged_external(env, new Handle(std::move(h)), kInt4Tag, bytes);
}

// The handle inside an External of ours (released or not).
Handle* handle_of(const Napi::Value& v) {
  Handle* h = tagged_external_data<Handle>(v, kInt4Tag);
  if (!h) bad_arg("weights: expected an int4 weight handle");
  return h;
}

Handle unwrap(const Napi::Value& v) {
  const Handle* h = handle_of(v);
  if (!*h) bad_arg("weights: this int4 weight handle was released");
  return *h;
}

struct Shape {
  int64_t in, out, group, groups;
};

Shape shape_args(const Napi::CallbackInfo& info) {
  Shape s{integer(info[4], "in", 1), integer(info[5], "out", 1), integer(info[6], "group", 0), 0};
  if (s.group == 0) s.group = s.in;
  check_int4_shape(s.in, s.out, s.group);
  s.groups = s.in / s.group;
  return s;
}

Napi::Value start_pack(Napi::Env env, const Napi::CallbackInfo& info, const char* name, std::function<Handle()> pack) {
  auto box = std::make_shared<Handle>();
  std::vector<Napi::Value> keep;
  for (size_t i = 0; i < 4; ++i)
    if (info[i].IsObject()) keep.push_back(info[i]);  // references hold objects only (bias may be null)
  return AsyncJob::start(
      env, name, keep, [box, pack] { *box = pack(); },
      [box](Napi::Env e, const std::vector<Napi::Value>&) { return wrap(e, std::move(*box)); });
}

Napi::Value PackAwq(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    const Shape s = shape_args(info);
    if (s.out % 8 != 0) bad_arg("out: AWQ packing needs a multiple of 8, got " + std::to_string(s.out));
    const int32_t* qweight = sized_array<int32_t>(info[0], "qweight", s.in * s.out / 8);
    const int32_t* qzeros = sized_array<int32_t>(info[1], "qzeros", s.groups * s.out / 8);
    const uint16_t* scales = sized_array<uint16_t>(info[2], "scales", s.groups * s.out);
    const uint16_t* bias = optional_array<uint16_t>(info[3], "bias", s.out);
    return start_pack(env, info, "awq.int4PackAwq",
                      [=] { return pack_int4_awq(qweight, qzeros, scales, bias, s.in, s.out, s.group); });
  });
}

Napi::Value PackQuantized(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    const Shape s = shape_args(info);
    const uint8_t* q = sized_array<uint8_t>(info[0], "q", s.out * s.in);
    const uint8_t* zeros = sized_array<uint8_t>(info[1], "zeros", s.out * s.groups);
    const float* scales = sized_array<float>(info[2], "scales", s.out * s.groups);
    const float* bias = optional_array<float>(info[3], "bias", s.out);
    return start_pack(env, info, "awq.int4PackQuantized",
                      [=] { return pack_int4_quantized(q, zeros, scales, bias, s.in, s.out, s.group); });
  });
}

Napi::Value Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    const Handle h = unwrap(info[0]);
    return int4_info_object(env, h->in, h->out, h->group, h->bytes());
  });
}

// Unwrapped forward arguments; `run` does the work (on whichever thread calls it).
struct Forward {
  Handle w;
  const void* x;
  int dtype;
  int64_t m;
  Int4Mode mode;
  float* y;

  void run() const {
    std::vector<float> scratch;
    int4_linear(*w, activations_f32(x, dtype, m * w->in, scratch), m, y, mode);
  }
};

Forward forward_args(const Napi::CallbackInfo& info) {
  Forward f;
  f.w = unwrap(info[0]);
  f.dtype = static_cast<int>(integer(info[2], "dtype", 0));
  if (f.dtype > 2) bad_arg("dtype: expected 0 (f32), 1 (f16) or 2 (bf16), got " + std::to_string(f.dtype));
  f.m = integer(info[3], "m", 0);
  const int64_t mode = integer(info[4], "mode", 0);
  if (mode > 1) bad_arg("mode: expected 0 (exact) or 1 (int8), got " + std::to_string(mode));
  f.mode = static_cast<Int4Mode>(mode);
  const size_t nx = static_cast<size_t>(f.m * f.w->in);
  f.x = f.dtype == 0 ? static_cast<const void*>(sized_array<float>(info[1], "x", nx))
                     : static_cast<const void*>(sized_array<uint16_t>(info[1], "x", nx));
  f.y = const_cast<float*>(sized_array<float>(info[5], "y", static_cast<size_t>(f.m * f.w->out)));
  return f;
}

Napi::Value ForwardAsync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    const Forward f = forward_args(info);
    return AsyncJob::start(env, "awq.int4Forward", {info[1], info[5]}, [f] { f.run(); },
                           [](Napi::Env, const std::vector<Napi::Value>& kept) { return kept[1]; });
  });
}

Napi::Value ForwardSync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    forward_args(info).run();
    return info[5];
  });
}

Napi::Value Dequantize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    const Handle h = unwrap(info[0]);
    float* dst = const_cast<float*>(sized_array<float>(info[1], "dst", static_cast<size_t>(h->in * h->out)));
    int4_dequantize(*h, dst);
    return info[1];
  });
}

// Int4Linear.dispose: the weights go back to the system now, not when the garbage collector
// finalizes the handle (a server swapping models held the old ones until then). The External's
// external-memory count stays until that finalizer, which subtracts it.
Napi::Value Release(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    handle_of(info[0])->reset();
    return env.Undefined();
  });
}

void Export(Napi::Env env, Napi::Object exports) {
  exports.Set("int4PackAwq", Napi::Function::New(env, PackAwq, "int4PackAwq"));
  exports.Set("int4PackQuantized", Napi::Function::New(env, PackQuantized, "int4PackQuantized"));
  exports.Set("int4Info", Napi::Function::New(env, Info, "int4Info"));
  exports.Set("int4Forward", Napi::Function::New(env, ForwardAsync, "int4Forward"));
  exports.Set("int4ForwardSync", Napi::Function::New(env, ForwardSync, "int4ForwardSync"));
  exports.Set("int4Dequantize", Napi::Function::New(env, Dequantize, "int4Dequantize"));
  exports.Set("int4Release", Napi::Function::New(env, Release, "int4Release"));
}

AWQ_EXPORTS(Export);

}  // namespace
}  // namespace awq::addon
