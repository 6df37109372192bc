// Calibration statistics (REFERENCE.md section 4): the per-input-channel mean absolute
// activation that the scale search raises to the power alpha.
#pragma once
#include <cstdint>

namespace awq {

// out[j] = mean over rows r of |x[r * cols + j]|, accumulated in fp32 blocks summed in fp64.
// Throws ErrorCode::NonFinite naming the first row/column holding NaN or Inf.
void abs_mean_columns(const float* x, int64_t rows, int64_t cols, float* out);

namespace detail {
// acc[j] += |row[j]| for j < cols; returns false when a value is NaN or Inf.
using AccumulateAbsFn = bool (*)(const float* row, float* acc, int64_t cols);
bool accumulate_abs_portable(const float* row, float* acc, int64_t cols);
bool accumulate_abs_avx2(const float* row, float* acc, int64_t cols);
bool accumulate_abs_avx512(const float* row, float* acc, int64_t cols);
}  // namespace detail

}  // namespace awq
