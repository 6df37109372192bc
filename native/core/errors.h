// Errors thrown by the core. The addon maps `code` onto the typed JS errors of lib/errors.ts,
// so every code used here must exist there too.
#pragma once
#include <stdexcept>
#include <string>

namespace awq {

enum class ErrorCode {
  InvalidArgument,  // ERR_AWQ_INVALID_ARGUMENT: wrong shape, size or option
  NonFinite,        // ERR_AWQ_NON_FINITE: NaN or Inf in weights or activations
  OutOfMemory,      // ERR_AWQ_OUT_OF_MEMORY
  Aborted,          // ERR_AWQ_ABORTED: the caller's AbortSignal fired
  Cuda,             // ERR_AWQ_CUDA: driver/runtime failure or no device
  Internal,         // ERR_AWQ_INTERNAL: a bug; please report
};

inline const char* error_code_name(ErrorCode c) {
  switch (c) {
    case ErrorCode::InvalidArgument: return "ERR_AWQ_INVALID_ARGUMENT";
    case ErrorCode::NonFinite: return "ERR_AWQ_NON_FINITE";
    case ErrorCode::OutOfMemory: return "ERR_AWQ_OUT_OF_MEMORY";
    case ErrorCode::Aborted: return "ERR_AWQ_ABORTED";
    case ErrorCode::Cuda: return "ERR_AWQ_CUDA";
    case ErrorCode::Internal: return "ERR_AWQ_INTERNAL";
  }
  return "ERR_AWQ_INTERNAL";
}

class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  ErrorCode code() const { return code_; }

 private:
  ErrorCode code_;
};

// Argument checks that must hold before a kernel touches memory.
#define AWQ_CHECK_ARG(cond, msg)                                        \
  do {                                                                  \
    if (!(cond)) throw ::awq::Error(::awq::ErrorCode::InvalidArgument, (msg)); \
  } while (0)

}  // namespace awq
