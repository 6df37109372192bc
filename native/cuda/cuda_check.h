// CUDA error checking: every runtime call goes through AWQ_CUDA_CHECK, which throws a typed
// awq::Error (out of memory or generic CUDA failure) naming the call.
#pragma once
#include <cuda_runtime.h>

#include <string>

#include "../core/errors.h"

#define AWQ_CUDA_CHECK(call)                                                              \
  do {                                                                                    \
    const cudaError_t awq_err_ = (call);                                                  \
    if (awq_err_ != cudaSuccess) {                                                        \
      cudaGetLastError();                                                                 \
      throw ::awq::Error(awq_err_ == cudaErrorMemoryAllocation ? ::awq::ErrorCode::OutOfMemory \
                                                              : ::awq::ErrorCode::Cuda,   \
                         std::string(#call) + ": " + cudaGetErrorString(awq_err_));       \
    }                                                                                     \
  } while (0)
