// sgemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, precision?, bFormat?)
//   -> Promise<Float32Array>: C = alpha * op(A) op(B) + beta * C in place on the caller's buffers
//   (zero-copy), resolving with c; precision 'fp32' (default) or 'bf16' (operands rounded to
//   bf16, gemm.h). b is a Float32Array, or with bFormat 'fp16' / 'bf16' a Uint16Array of those
//   bits (widened as it is packed, gemm.h).
// fmaPeak(secondsPerRep?, reps?) -> Promise<number>: the measured FMA ceiling in GFLOP/s on the
//   current thread count, for benchmarks to report GEMM throughput against.
#include <napi.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "../core/fma_peak.h"
#include "../core/gemm.h"
#include "args.h"
#include "async.h"
#include "registry.h"

namespace awq::addon {
namespace {

bool boolean(const Napi::Value& v, const char* name) {
  if (!v.IsBoolean()) bad_arg(std::string(name) + ": expected a boolean");
  return v.As<Napi::Boolean>().Value();
}

float number(const Napi::Value& v, const char* name) {
  if (!v.IsNumber()) bad_arg(std::string(name) + ": expected a number");
  return static_cast<float>(v.As<Napi::Number>().DoubleValue());
}

// A stored [rows, cols] matrix with row stride ld must fit in `length` elements.
void check_matrix(const char* name, size_t length, int64_t rows, int64_t cols, int64_t ld) {
  if (ld < std::max<int64_t>(cols, 1)) {
    bad_arg(std::string("ld") + name + ": expected >= " + std::to_string(std::max<int64_t>(cols, 1)) +
            ", got " + std::to_string(ld));
  }
  const int64_t need = rows == 0 || cols == 0 ? 0 : (rows - 1) * ld + cols;
  if (static_cast<int64_t>(length) < need) {
    bad_arg(std::string(name) + ": expected at least " + std::to_string(need) + " elements for " +
            std::to_string(rows) + "x" + std::to_string(cols) + " with stride " + std::to_string(ld) +
            ", got " + std::to_string(length));
  }
}

Napi::Value Sgemm(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    const bool ta = boolean(info[0], "transA"), tb = boolean(info[1], "transB");
    const int64_t m = integer(info[2], "m"), n = integer(info[3], "n"), k = integer(info[4], "k");
    const float alpha = number(info[5], "alpha");
    auto a = typed_array<float>(info[6], "a");
    const int64_t lda = integer(info[7], "lda", 1);
    const FloatOrHalf b = float_or_half(info, 8, 14, "b", "bFormat");
    const int64_t ldb = integer(info[9], "ldb", 1);
    const float beta = number(info[10], "beta");
    auto c = typed_array<float>(info[11], "c");
    const int64_t ldc = integer(info[12], "ldc", 1);
    Precision prec = Precision::F32;
    if (info.Length() > 13 && !info[13].IsUndefined()) {
      prec = precision_arg(info[13], "precision");
      if (prec == Precision::F16) bad_arg("precision: 'fp16' products are not available on the CPU (fp32, bf16)");
    }
    check_matrix("a", a.length, ta ? k : m, ta ? m : k, lda);
    check_matrix("b", b.length(), tb ? n : k, tb ? k : n, ldb);
    check_matrix("c", c.length, m, n, ldc);
    const float* a_data = a.data;
    float* c_data = c.data;
    return AsyncJob::start(
        env, "awq.sgemm", {info[6], info[8], info[11]},
        [=] {
          const Trans t_a = ta ? Trans::T : Trans::N, t_b = tb ? Trans::T : Trans::N;
          if (b.half) {
            sgemm(t_a, t_b, m, n, k, alpha, a_data, lda, b.f16.data, b.format, ldb, beta, c_data, ldc, prec);
          } else {
            sgemm(t_a, t_b, m, n, k, alpha, a_data, lda, b.f32.data, ldb, beta, c_data, ldc, prec);
          }
        },
        [](Napi::Env, const std::vector<Napi::Value>& kept) { return kept[2]; });
  });
}

Napi::Value FmaPeak(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    const double seconds = info.Length() > 0 && !info[0].IsUndefined() ? number(info[0], "secondsPerRep") : 0.05;
    const int64_t reps = info.Length() > 1 && !info[1].IsUndefined() ? integer(info[1], "reps", 1) : 5;
    if (!(seconds > 0 && seconds <= 10)) bad_arg("secondsPerRep: expected a number in (0, 10]");
    auto result = std::make_shared<double>(0);
    return AsyncJob::start(
        env, "awq.fmaPeak", {},
        [=] { *result = measure_fma_peak_gflops(seconds, static_cast<int>(reps)); },
        [result](Napi::Env e, const std::vector<Napi::Value>&) -> Napi::Value {
          return Napi::Number::New(e, *result);
        });
  });
}

void Export(Napi::Env env, Napi::Object exports) {
  exports.Set("sgemm", Napi::Function::New(env, Sgemm, "sgemm"));
  exports.Set("fmaPeak", Napi::Function::New(env, FmaPeak, "fmaPeak"));
}

AWQ_EXPORTS(Export);

}  // namespace
}  // namespace awq::addon
