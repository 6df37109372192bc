// CUDA error checking: every runtime call goes through AWQ_CUDA_CHECK, which throws a typed
// awq::Error (out of memory or generic CUDA failure) naming the call.
#pragma once
#include <cuda_runtime.h>

#include <string>

#include "../core/errors.h"

namespace awq::cuda_detail {
// Errors after which the CUDA context is corrupt: every later call in the process fails with the
// same code, whatever it is (the copy after a faulting kernel reports the kernel's fault).
inline bool context_is_lost(cudaError_t e) {
  return e == cudaErrorIllegalAddress || e == cudaErrorLaunchFailure || e == cudaErrorMisalignedAddress ||
         e == cudaErrorAssert || e == cudaErrorIllegalInstruction || e == cudaErrorHardwareStackError ||
         e == cudaErrorInvalidPc;
}
inline std::string describe(const char* call, cudaError_t e) {
  std::string msg = std::string(call) + ": " + cudaGetErrorString(e);
  if (context_is_lost(e)) msg += " (a kernel faulted; the CUDA context is unusable until the process restarts)";
  return msg;
}
}  // namespace awq::cuda_detail

#define AWQ_CUDA_CHECK(call)                                                              \
  do {                                                                                    \
    const cudaError_t awq_err_ = (call);                                                  \
    if (awq_err_ != cudaSuccess) {                                                        \
      cudaGetLastError();                                                                 \
      throw ::awq::Error(awq_err_ == cudaErrorMemoryAllocation ? ::awq::ErrorCode::OutOfMemory \
                                                              : ::awq::ErrorCode::Cuda,   \
                         ::awq::cuda_detail::describe(#call, awq_err_));                  \
    }                                                                                     \
  } while (0)
