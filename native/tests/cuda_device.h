// Skips the calling test, saying why, when this build has no CUDA backend or no device answers.
#pragma once
#include <string>

#include "test.h"
#ifdef AWQ_WITH_CUDA
#include "../cuda/cuda_backend.h"
#endif

namespace awq::test {

inline void require_cuda_device() {
#ifdef AWQ_WITH_CUDA
  std::string why;
  if (awq::cuda::list_devices(&why).empty()) SKIP("no CUDA device: " + why);
#else
  SKIP("built without CUDA");
#endif
}

}  // namespace awq::test
