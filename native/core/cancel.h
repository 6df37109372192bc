// Cooperative cancellation: JS sets a shared Int32 flag when its AbortSignal fires; long
// kernels poll it between units of work and stop with ErrorCode::Aborted. A second flag is the
// addon's: set when the environment that started the call is torn down (worker.terminate()).
#pragma once
#include <atomic>
#include <cstdint>

#include "errors.h"

namespace awq {

class CancelFlag {
 public:
  CancelFlag() = default;
  explicit CancelFlag(const int32_t* flag, const int32_t* teardown = nullptr) : flag_(flag), teardown_(teardown) {}
  bool cancelled() const {
    return (flag_ && __atomic_load_n(flag_, __ATOMIC_RELAXED) != 0) ||
           (teardown_ && __atomic_load_n(teardown_, __ATOMIC_RELAXED) != 0);
  }
  void check() const {
    if (cancelled()) throw Error(ErrorCode::Aborted, "aborted by the caller");
  }

 private:
  const int32_t* flag_ = nullptr;
  const int32_t* teardown_ = nullptr;
};

}  // namespace awq
