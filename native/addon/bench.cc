// benchStreamRead(bytes: Uint8Array) -> number: reads the buffer once on the shared pool
// (synchronously, so the caller can time it) and returns a checksum; `awq bench` turns the time
// into the streaming read bandwidth its "floor" rows use.
#include <napi.h>

#include "../core/membench.h"
#include "args.h"
#include "async.h"
#include "registry.h"

namespace awq::addon {
namespace {

Napi::Value BenchStreamRead(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    auto buf = typed_array<uint8_t>(info[0], "bytes");
    return Napi::Number::New(env, static_cast<double>(stream_read(buf.data, buf.length) & 0xFFFFFFFFFFFFull));
  });
}

void Export(Napi::Env env, Napi::Object exports) {
  exports.Set("benchStreamRead", Napi::Function::New(env, BenchStreamRead, "benchStreamRead"));
}

AWQ_EXPORTS(Export);

}  // namespace
}  // namespace awq::addon
