// Each addon file registers its exports with AWQ_EXPORTS(fn); main.cc calls them all, so adding
// a binding never means editing a central list.
#pragma once
#include <napi.h>

namespace awq::addon {

using ExportFn = void (*)(Napi::Env env, Napi::Object exports);

struct Registration {
  explicit Registration(ExportFn fn);
};

void register_all(Napi::Env env, Napi::Object exports);

}  // namespace awq::addon

#define AWQ_CONCAT_INNER(a, b) a##b
#define AWQ_CONCAT(a, b) AWQ_CONCAT_INNER(a, b)
#define AWQ_EXPORTS(fn) \
  static ::awq::addon::Registration AWQ_CONCAT(awq_registration_, __LINE__)(fn)
