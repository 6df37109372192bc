// Argument unwrapping for bindings: TypedArrays are borrowed zero-copy (the caller's memory is
// read in place) and every mismatch becomes a typed ERR_AWQ_INVALID_ARGUMENT naming the argument.
#pragma once
#include <napi.h>

#include <cstdint>
#include <string>
#include <vector>

#include "../core/dtype.h"
#include "../core/errors.h"
#include "../core/gemm.h"

namespace awq::addon {

template <typename T>
struct Borrowed {
  T* data = nullptr;
  size_t length = 0;
};

[[noreturn]] inline void bad_arg(const std::string& msg) {
  throw awq::Error(awq::ErrorCode::InvalidArgument, msg);
}

// A precision name ('fp32', 'bf16', 'fp16') as gemm.h's Precision; callers refuse what their
// backend lacks.
inline Precision precision_arg(const Napi::Value& v, const std::string& name) {
  const std::string p = v.IsString() ? v.As<Napi::String>().Utf8Value() : "";
  if (p == "fp32") return Precision::F32;
  if (p == "bf16") return Precision::BF16;
  if (p == "fp16") return Precision::F16;
  bad_arg(name + ": expected 'fp32', 'bf16' or 'fp16', got " + (v.IsString() ? "'" + p + "'" : "a non-string"));
}

template <typename T>
inline const char* typed_array_name();
template <> inline const char* typed_array_name<float>() { return "Float32Array"; }
template <> inline const char* typed_array_name<int32_t>() { return "Int32Array"; }
template <> inline const char* typed_array_name<uint16_t>() { return "Uint16Array"; }
template <> inline const char* typed_array_name<uint8_t>() { return "Uint8Array"; }

template <typename T>
inline napi_typedarray_type typed_array_type();
template <> inline napi_typedarray_type typed_array_type<float>() { return napi_float32_array; }
template <> inline napi_typedarray_type typed_array_type<int32_t>() { return napi_int32_array; }
template <> inline napi_typedarray_type typed_array_type<uint16_t>() { return napi_uint16_array; }
template <> inline napi_typedarray_type typed_array_type<uint8_t>() { return napi_uint8_array; }

template <typename T>
Borrowed<T> typed_array(const Napi::Value& v, const char* name) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != typed_array_type<T>()) {
    bad_arg(std::string(name) + ": expected a " + typed_array_name<T>());
  }
  auto arr = v.As<Napi::TypedArrayOf<T>>();
  return {arr.Data(), arr.ElementLength()};
}

// A weight argument that is a Float32Array, or, when the format argument ('fp16' / 'bf16', as
// lib/half.ts spells a HalfArray's) is given, a Uint16Array of those bits: `f32` or `f16` is set.
struct FloatOrHalf {
  Borrowed<float> f32;
  Borrowed<uint16_t> f16;
  bool half = false;
  HalfFormat format = HalfFormat::F16;
  size_t length() const { return half ? f16.length : f32.length; }
};

inline FloatOrHalf float_or_half(const Napi::CallbackInfo& info, size_t data_arg, size_t format_arg, const char* name,
                                 const char* format_name) {
  FloatOrHalf w;
  w.half = info.Length() > format_arg && !info[format_arg].IsUndefined();
  if (!w.half) {
    w.f32 = typed_array<float>(info[data_arg], name);
    return w;
  }
  const Napi::Value f = info[format_arg];
  const std::string s = f.IsString() ? f.As<Napi::String>().Utf8Value() : "";
  if (s != "fp16" && s != "bf16") bad_arg(std::string(format_name) + ": expected 'fp16' or 'bf16'");
  w.format = s == "bf16" ? HalfFormat::BF16 : HalfFormat::F16;
  w.f16 = typed_array<uint16_t>(info[data_arg], name);
  return w;
}

inline int64_t integer(const Napi::Value& v, const char* name, int64_t min_value = 0) {
  if (!v.IsNumber()) bad_arg(std::string(name) + ": expected an integer");
  const double d = v.As<Napi::Number>().DoubleValue();
  if (d != static_cast<double>(static_cast<int64_t>(d)) || d < static_cast<double>(min_value)) {
    bad_arg(std::string(name) + ": expected an integer >= " + std::to_string(min_value) +
            ", got " + std::to_string(d));
  }
  return static_cast<int64_t>(d);
}

// A handle for JS: an External owning `owned` (deleted when the GC collects it), marked with `tag`
// so that only this binding's own handles unwrap (tagged_external_data). external_bytes > 0 is
// reported to V8 as external memory while the handle lives, so the GC sees what it holds.
template <typename T>
Napi::External<T> tagged_external(Napi::Env env, T* owned, const napi_type_tag& tag, int64_t external_bytes = 0) {
  auto ext = Napi::External<T>::New(env, owned, [external_bytes](Napi::Env e, T* p) {
    delete p;
    if (external_bytes > 0) Napi::MemoryManagement::AdjustExternalMemory(e, -external_bytes);
  });
  ext.TypeTag(&tag);
  if (external_bytes > 0) Napi::MemoryManagement::AdjustExternalMemory(env, external_bytes);
  return ext;
}

// The object behind a tagged_external handle, or nullptr when v is not an External with `tag`.
template <typename T>
T* tagged_external_data(const Napi::Value& v, const napi_type_tag& tag) {
  if (!v.IsExternal() || !v.As<Napi::External<T>>().CheckTypeTag(&tag)) return nullptr;
  return v.As<Napi::External<T>>().Data();
}

// Optional Int32Array(1) that JS sets to 1 when the caller's AbortSignal fires.
inline const int32_t* cancel_flag(const Napi::Value& v) {
  if (v.IsUndefined() || v.IsNull()) return nullptr;
  auto a = typed_array<int32_t>(v, "abortFlag");
  if (a.length < 1) bad_arg("abortFlag: expected an Int32Array of length 1");
  return a.data;
}

// A TypedArray of exactly `expected` elements.
template <typename T>
const T* sized_array(const Napi::Value& v, const char* name, size_t expected) {
  auto a = typed_array<T>(v, name);
  if (a.length != expected) {
    bad_arg(std::string(name) + ": expected " + std::to_string(expected) + " elements, got " + std::to_string(a.length));
  }
  return a.data;
}

// sized_array, or null for an absent (null / undefined) argument.
template <typename T>
const T* optional_array(const Napi::Value& v, const char* name, size_t expected) {
  if (v.IsUndefined() || v.IsNull()) return nullptr;
  return sized_array<T>(v, name, expected);
}

// Activations given as f32 (dtype 0) or fp16 / bf16 bits (1 / 2) as fp32: x itself, or widened
// into `scratch`.
inline const float* activations_f32(const void* x, int dtype, int64_t n, std::vector<float>& scratch) {
  if (dtype == 0) return static_cast<const float*>(x);
  scratch.resize(static_cast<size_t>(n));
  if (dtype == 1) fp16_to_f32(static_cast<const uint16_t*>(x), scratch.data(), n);
  else bf16_to_f32(static_cast<const uint16_t*>(x), scratch.data(), n);
  return scratch.data();
}

// { in, out, group, bytes }: what int4Info and int4CudaInfo report about a weight handle.
inline Napi::Object int4_info_object(Napi::Env env, int64_t in, int64_t out, int64_t group, size_t bytes) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("in", static_cast<double>(in));
  o.Set("out", static_cast<double>(out));
  o.Set("group", static_cast<double>(group));
  o.Set("bytes", static_cast<double>(bytes));
  return o;
}

}  // namespace awq::addon
