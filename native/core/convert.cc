#include "convert.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>

#include "dtype.h"
#include "threadpool.h"

namespace awq {
namespace {

constexpr int64_t kGrain = 1 << 16;

void atomic_min(std::atomic<int64_t>& a, int64_t v) {
  int64_t cur = a.load();
  while ((cur < 0 || v < cur) && !a.compare_exchange_weak(cur, v)) {
  }
}

// Converts with dtype.h, then scans the chunk: inputs are checked for NaN/Inf, outputs for Inf
// (exponent all ones) that came from a finite input.
template <typename Convert>
NarrowReport narrow_checked(const float* src, uint16_t* dst, int64_t n, uint16_t inf_mask, Convert convert) {
  std::atomic<int64_t> non_finite{-1}, overflow{-1};
  parallel_for(n, kGrain, [&](int64_t b, int64_t e, int) {
    convert(src + b, dst + b, e - b);  // nested: runs inline on this thread
    for (int64_t i = b; i < e; ++i) {
      if ((dst[i] & inf_mask) != inf_mask) continue;
      if (!std::isfinite(src[i])) {
        atomic_min(non_finite, i);
      } else {
        atomic_min(overflow, i);
      }
    }
  });
  return {non_finite.load(), overflow.load()};
}

}  // namespace

NarrowReport f32_to_fp16_checked(const float* src, uint16_t* dst, int64_t n) {
  return narrow_checked(src, dst, n, 0x7c00, f32_to_fp16);
}

NarrowReport f32_to_bf16_checked(const float* src, uint16_t* dst, int64_t n) {
  return narrow_checked(src, dst, n, 0x7f80, f32_to_bf16);
}

}  // namespace awq
