// Cooperative cancellation: JS sets a shared Int32 flag when its AbortSignal fires; long
// kernels poll it between units of work and stop with ErrorCode::Aborted. Two more flags are the
// addon's: set when the environment that started the call is torn down (worker.terminate()), and
// when the process exits.
#pragma once
#include <atomic>
#include <cstdint>

#include "errors.h"

namespace awq {

class CancelFlag {
 public:
  CancelFlag() = default;
  explicit CancelFlag(const int32_t* flag, const int32_t* teardown = nullptr, const int32_t* exiting = nullptr)
      : flag_(flag), teardown_(teardown), exiting_(exiting) {}
  bool cancelled() const { return set(flag_) || set(teardown_) || set(exiting_); }
  void check() const {
    if (cancelled()) throw Error(ErrorCode::Aborted, "aborted by the caller");
  }

 private:
  static bool set(const int32_t* f) { return f && __atomic_load_n(f, __ATOMIC_RELAXED) != 0; }

  const int32_t* flag_ = nullptr;
  const int32_t* teardown_ = nullptr;
  const int32_t* exiting_ = nullptr;
};

}  // namespace awq
