// Bandwidth probe of `awq bench gemm` (its "floor" rows):
//   benchStreamPool(bytes) -> pool    memory allocated as the int4 weights are (64-byte aligned,
//                                     huge pages advised, every page touched), freed by the GC
//   benchStreamRead(pool, offset, length) -> number
//                                     reads pool[offset, offset + length) once on the shared
//                                     pool, synchronously (so the caller can time it); returns a
//                                     checksum so the reads cannot be elided
// The pool comes from the same allocator as the weights so that the floor and the kernels read
// the same kind of pages: a JS buffer gets small pages, which alone cost a streaming read 3-8%.
#include <napi.h>

#include <memory>

#include "../core/int4_gemm.h"
#include "../core/membench.h"
#include "args.h"
#include "async.h"
#include "registry.h"

namespace awq::addon {
namespace {

constexpr napi_type_tag kPoolTag = {0x3e9d6a0c71b24f85ULL, 0xa4c1f07e5d2b9368ULL};

Napi::Value BenchStreamPool(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    const int64_t bytes = integer(info[0], "bytes", 1);
    return tagged_external(env, new AlignedBytes(static_cast<size_t>(bytes)), kPoolTag, bytes);
  });
}

Napi::Value BenchStreamRead(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    const AlignedBytes* pool_ptr = tagged_external_data<AlignedBytes>(info[0], kPoolTag);
    if (!pool_ptr) bad_arg("pool: expected a handle from benchStreamPool");
    const AlignedBytes& pool = *pool_ptr;
    const int64_t offset = integer(info[1], "offset"), length = integer(info[2], "length");
    if (static_cast<uint64_t>(offset) + static_cast<uint64_t>(length) > pool.size())
      bad_arg("benchStreamRead: range [" + std::to_string(offset) + ", " + std::to_string(offset + length) +
              ") is past the pool's " + std::to_string(pool.size()) + " bytes");
    const uint64_t sum = stream_read(pool.data() + offset, static_cast<size_t>(length));
    return Napi::Number::New(env, static_cast<double>(sum & 0xFFFFFFFFFFFFull));
  });
}

void Export(Napi::Env env, Napi::Object exports) {
  exports.Set("benchStreamPool", Napi::Function::New(env, BenchStreamPool, "benchStreamPool"));
  exports.Set("benchStreamRead", Napi::Function::New(env, BenchStreamRead, "benchStreamRead"));
}

AWQ_EXPORTS(Export);

}  // namespace
}  // namespace awq::addon
