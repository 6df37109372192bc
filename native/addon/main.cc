#include <napi.h>

#include <vector>

#include "registry.h"

namespace awq::addon {
namespace {
std::vector<ExportFn>& registry() {
  static std::vector<ExportFn> fns;
  return fns;
}
}  // namespace

Registration::Registration(ExportFn fn) { registry().push_back(fn); }

void register_all(Napi::Env env, Napi::Object exports) {
  for (ExportFn fn : registry()) fn(env, exports);
}

}  // namespace awq::addon

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  awq::addon::register_all(env, exports);
  return exports;
}

NODE_API_MODULE(awq, Init)
