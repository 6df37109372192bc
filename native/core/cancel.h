// Cooperative cancellation: JS sets a shared Int32 flag when its AbortSignal fires; long
// kernels poll it between units of work and stop with ErrorCode::Aborted.
#pragma once
#include <atomic>
#include <cstdint>

#include "errors.h"

namespace awq {

class CancelFlag {
 public:
  CancelFlag() = default;
  explicit CancelFlag(const int32_t* flag) : flag_(flag) {}
  bool cancelled() const {
    return flag_ && __atomic_load_n(flag_, __ATOMIC_RELAXED) != 0;
  }
  void check() const {
    if (cancelled()) throw Error(ErrorCode::Aborted, "aborted by the caller");
  }

 private:
  const int32_t* flag_ = nullptr;
};

}  // namespace awq
