#include "stats.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <string>
#include <vector>

#include "cpu_features.h"
#include "errors.h"
#include "threadpool.h"

namespace awq {
namespace detail {

bool accumulate_abs_portable(const float* row, float* acc, int64_t cols) {
  bool finite = true;
  for (int64_t j = 0; j < cols; ++j) {
    const float a = std::fabs(row[j]);
    finite &= (a <= FLT_MAX);
    acc[j] += a;
  }
  return finite;
}

}  // namespace detail

namespace {

detail::AccumulateAbsFn pick_accumulate() {
  switch (active_isa()) {
#if AWQ_X86
    case Isa::Avx512: return detail::accumulate_abs_avx512;
    case Isa::Avx2: return detail::accumulate_abs_avx2;
#endif
    default: return detail::accumulate_abs_portable;
  }
}

[[noreturn]] void throw_non_finite(const float* x, int64_t row, int64_t cols) {
  for (int64_t j = 0; j < cols; ++j) {
    if (!std::isfinite(x[row * cols + j])) {
      throw Error(ErrorCode::NonFinite, "activation value at row " + std::to_string(row) +
                                            ", channel " + std::to_string(j) + " is " +
                                            (std::isnan(x[row * cols + j]) ? "NaN" : "Inf"));
    }
  }
  throw Error(ErrorCode::Internal, "non-finite value reported but not found");
}

}  // namespace

void abs_mean_columns(const float* x, int64_t rows, int64_t cols, float* out) {
  AWQ_CHECK_ARG(rows > 0, "abs_mean_columns: rows must be positive, got " + std::to_string(rows));
  AWQ_CHECK_ARG(cols > 0, "abs_mean_columns: cols must be positive, got " + std::to_string(cols));
  const detail::AccumulateAbsFn accumulate = pick_accumulate();
  // fp32 sums over short row blocks keep rounding error at fp32 level per block; the blocks
  // are summed in fp64 so millions of tokens do not drift.
  constexpr int64_t kBlockRows = 64;
  const int64_t blocks = (rows + kBlockRows - 1) / kBlockRows;
  const int threads = num_threads();
  std::vector<std::vector<double>> partial(threads, std::vector<double>(cols, 0.0));
  std::vector<int64_t> bad_row(threads, -1);
  parallel_for(blocks, 1, [&](int64_t b0, int64_t b1, int t) {
    std::vector<float> acc(cols);
    std::vector<double>& sum = partial[t];
    for (int64_t b = b0; b < b1; ++b) {
      std::fill(acc.begin(), acc.end(), 0.0f);
      const int64_t r1 = std::min(rows, (b + 1) * kBlockRows);
      for (int64_t r = b * kBlockRows; r < r1; ++r) {
        if (!accumulate(x + r * cols, acc.data(), cols)) {
          if (bad_row[t] < 0 || r < bad_row[t]) bad_row[t] = r;
          return;
        }
      }
      for (int64_t j = 0; j < cols; ++j) sum[j] += acc[j];
    }
  }, threads);
  int64_t first_bad = -1;
  for (int64_t r : bad_row)
    if (r >= 0 && (first_bad < 0 || r < first_bad)) first_bad = r;
  if (first_bad >= 0) throw_non_finite(x, first_bad, cols);
  const double inv = 1.0 / static_cast<double>(rows);
  for (int64_t j = 0; j < cols; ++j) {
    double s = 0.0;
    for (int t = 0; t < threads; ++t) s += partial[t][j];
    out[j] = static_cast<float>(s * inv);
  }
}

}  // namespace awq
