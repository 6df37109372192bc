// Checkpoint helpers: AWQ pack / unpack / dequantize (REFERENCE.md section 6) and the fp16/bf16
// conversions of tensors read from or written to safetensors. Shapes are validated in
// lib/checkpoint before these calls; the checks here guard the memory the kernels touch.
#include <napi.h>

#include <memory>
#include <string>

#include "../core/convert.h"
#include "../core/dtype.h"
#include "../core/pack.h"
#include "../core/vecmath.h"
#include "args.h"
#include "async.h"
#include "registry.h"

namespace awq::addon {
namespace {

void expect_length(size_t got, int64_t want, const char* name) {
  if (got != static_cast<size_t>(want)) {
    bad_arg(std::string(name) + ": expected " + std::to_string(want) + " elements, got " + std::to_string(got));
  }
}

struct Dims {
  int64_t out, in, group, groups;
};

Dims dims(const Napi::Value& out, const Napi::Value& in, const Napi::Value& group) {
  Dims d{integer(out, "outFeatures", 8), integer(in, "inFeatures", 1), integer(group, "groupSize", 1), 0};
  if (d.out % 8 != 0) bad_arg("outFeatures: expected a multiple of 8, got " + std::to_string(d.out));
  if (d.in % d.group != 0) {
    bad_arg("inFeatures: expected a multiple of groupSize " + std::to_string(d.group) + ", got " + std::to_string(d.in));
  }
  d.groups = d.in / d.group;
  return d;
}

// The packed tensors of one linear (section 6) and their dimensions: the arguments (qweight,
// qzeros, scales16, outFeatures, inFeatures, groupSize) of unpack / dequantize,
// validated in this order: array types, dimensions, array lengths.
struct PackedArgs {
  Borrowed<int32_t> qweight, qzeros;
  Borrowed<uint16_t> scales16;
  Dims d;
};

PackedArgs packed_args(const Napi::CallbackInfo& info) {
  PackedArgs p{typed_array<int32_t>(info[0], "qweight"), typed_array<int32_t>(info[1], "qzeros"),
               typed_array<uint16_t>(info[2], "scales"), {}};
  p.d = dims(info[3], info[4], info[5]);
  expect_length(p.qweight.length, p.d.in * p.d.out / 8, "qweight");
  expect_length(p.qzeros.length, p.d.groups * p.d.out / 8, "qzeros");
  expect_length(p.scales16.length, p.d.groups * p.d.out, "scales");
  return p;
}

// Resolves with [kept[3], kept[4], kept[5]]: the three output arrays of pack / unpack, which
// both keep their three inputs first and their three outputs after them.
Napi::Value three_outputs(Napi::Env env, const std::vector<Napi::Value>& kept) {
  auto arr = Napi::Array::New(env, 3);
  for (uint32_t i = 0; i < 3; ++i) arr.Set(i, kept[3 + i]);
  return arr;
}

// packAwq(q, zeros, scales, outFeatures, inFeatures, groupSize) -> Promise<[qweight, qzeros, scales16]>
Napi::Value PackAwq(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    auto q = typed_array<uint8_t>(info[0], "q");
    auto zeros = typed_array<uint8_t>(info[1], "zeros");
    auto scales = typed_array<float>(info[2], "scales");
    const Dims d = dims(info[3], info[4], info[5]);
    expect_length(q.length, d.out * d.in, "q");
    expect_length(zeros.length, d.out * d.groups, "zeros");
    expect_length(scales.length, d.out * d.groups, "scales");
    auto qweight = Napi::Int32Array::New(env, static_cast<size_t>(d.in * d.out / 8));
    auto qzeros = Napi::Int32Array::New(env, static_cast<size_t>(d.groups * d.out / 8));
    auto scales16 = Napi::Uint16Array::New(env, static_cast<size_t>(d.groups * d.out));
    int32_t* qw = qweight.Data();
    int32_t* qz = qzeros.Data();
    uint16_t* s16 = scales16.Data();
    return AsyncJob::start(
        env, "awq.packAwq", {info[0], info[1], info[2], qweight, qzeros, scales16},
        [=] { pack_awq(q.data, zeros.data, scales.data, d.out, d.in, d.group, qw, qz, s16); }, three_outputs);
  });
}

// unpackAwq(qweight, qzeros, scales16, outFeatures, inFeatures, groupSize) -> Promise<[q, zeros, scales]>
Napi::Value UnpackAwq(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    const PackedArgs p = packed_args(info);
    const Dims d = p.d;
    auto q = Napi::Uint8Array::New(env, static_cast<size_t>(d.out * d.in));
    auto zeros = Napi::Uint8Array::New(env, static_cast<size_t>(d.out * d.groups));
    auto scales = Napi::Float32Array::New(env, static_cast<size_t>(d.out * d.groups));
    uint8_t* qp = q.Data();
    uint8_t* zp = zeros.Data();
    float* sp = scales.Data();
    return AsyncJob::start(
        env, "awq.unpackAwq", {info[0], info[1], info[2], q, zeros, scales},
        [=] { unpack_awq(p.qweight.data, p.qzeros.data, p.scales16.data, d.in, d.out, d.group, qp, zp, sp); },
        three_outputs);
  });
}

// dequantizeAwq(qweight, qzeros, scales16, outFeatures, inFeatures, groupSize) -> Promise<Float32Array [out, in]>
Napi::Value DequantizeAwq(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    const PackedArgs p = packed_args(info);
    const Dims d = p.d;
    auto w = Napi::Float32Array::New(env, static_cast<size_t>(d.out * d.in));
    float* wp = w.Data();
    return AsyncJob::start(
        env, "awq.dequantizeAwq", {info[0], info[1], info[2], w},
        [=] { dequantize_awq(p.qweight.data, p.qzeros.data, p.scales16.data, d.in, d.out, d.group, wp); },
        [](Napi::Env, const std::vector<Napi::Value>& kept) { return kept[3]; });
  });
}

bool is_bf16(const Napi::Value& v, const char* name) {
  const std::string s = v.IsString() ? v.As<Napi::String>().Utf8Value() : "";
  if (s == "BF16") return true;
  if (s == "F16") return false;
  bad_arg(std::string(name) + ": expected 'F16' or 'BF16'");
}

// The arguments of the widenings below: src, its format, and dst of the same length.
struct WidenArgs {
  Borrowed<uint16_t> src;
  bool bf16;
  Borrowed<float> dst;
};

WidenArgs widen_args(const Napi::CallbackInfo& info) {
  WidenArgs a{typed_array<uint16_t>(info[0], "src"), is_bf16(info[1], "dtype"), typed_array<float>(info[2], "dst")};
  if (a.src.length != a.dst.length) bad_arg("dst: expected as many elements as src");
  return a;
}

// convertToF32(src: Uint16Array, dtype: 'F16'|'BF16', dst: Float32Array) -> Promise<void>
Napi::Value ConvertToF32(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    const WidenArgs a = widen_args(info);
    return AsyncJob::start(
        env, "awq.convertToF32", {info[0], info[2]},
        [=] { (a.bf16 ? bf16_to_f32 : fp16_to_f32)(a.src.data, a.dst.data, static_cast<int64_t>(a.src.length)); },
        resolve_undefined);
  });
}

// widenSync(src: Uint16Array, dtype: 'F16'|'BF16', dst: Float32Array) -> undefined: the same
// widening on the calling thread (vector code, serial), for a few rows where a job's hop would cost
// more than the work.
Napi::Value WidenSync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    const WidenArgs a = widen_args(info);
    (a.bf16 ? widen_bf16 : widen_fp16)(a.src.data, a.dst.data, static_cast<int64_t>(a.src.length));
    return env.Undefined();
  });
}

// convertFromF32(src: Float32Array, dtype: 'F16'|'BF16', dst: Uint16Array)
//   -> Promise<{ firstNonFinite: number, firstOverflow: number }> (-1 when none)
Napi::Value ConvertFromF32(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    auto src = typed_array<float>(info[0], "src");
    const bool bf16 = is_bf16(info[1], "dtype");
    auto dst = typed_array<uint16_t>(info[2], "dst");
    if (src.length != dst.length) bad_arg("dst: expected as many elements as src");
    auto report = std::make_shared<NarrowReport>();
    return AsyncJob::start(
        env, "awq.convertFromF32", {info[0], info[2]},
        [=] {
          const int64_t n = static_cast<int64_t>(src.length);
          *report = bf16 ? f32_to_bf16_checked(src.data, dst.data, n) : f32_to_fp16_checked(src.data, dst.data, n);
        },
        [report](Napi::Env env, const std::vector<Napi::Value>&) {
          auto o = Napi::Object::New(env);
          o.Set("firstNonFinite", Napi::Number::New(env, static_cast<double>(report->first_non_finite)));
          o.Set("firstOverflow", Napi::Number::New(env, static_cast<double>(report->first_overflow)));
          return o;
        });
  });
}

void Export(Napi::Env env, Napi::Object exports) {
  exports.Set("packAwq", Napi::Function::New(env, PackAwq, "packAwq"));
  exports.Set("unpackAwq", Napi::Function::New(env, UnpackAwq, "unpackAwq"));
  exports.Set("dequantizeAwq", Napi::Function::New(env, DequantizeAwq, "dequantizeAwq"));
  exports.Set("convertToF32", Napi::Function::New(env, ConvertToF32, "convertToF32"));
  exports.Set("convertFromF32", Napi::Function::New(env, ConvertFromF32, "convertFromF32"));
  exports.Set("widenSync", Napi::Function::New(env, WidenSync, "widenSync"));
}

AWQ_EXPORTS(Export);

}  // namespace
}  // namespace awq::addon
