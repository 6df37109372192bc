// Checked narrowing of fp32 tensors for checkpoint writers: converts like dtype.h and reports
// where the data cannot be stored faithfully (a NaN/Inf input, or a finite value that overflows
// the target format to Inf), so the writer can refuse the tensor by name instead of writing Inf.
#pragma once
#include <cstdint>

namespace awq {

struct NarrowReport {
  int64_t first_non_finite = -1;  // index of the first NaN/Inf input, -1 if none
  int64_t first_overflow = -1;    // index of the first finite input that became Inf, -1 if none
};

NarrowReport f32_to_fp16_checked(const float* src, uint16_t* dst, int64_t n);
NarrowReport f32_to_bf16_checked(const float* src, uint16_t* dst, int64_t n);

}  // namespace awq
