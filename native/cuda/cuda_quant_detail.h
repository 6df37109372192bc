// Test hooks of the device clip search (clip_search.cu): plain C++, included by the C++ tests.
#pragma once
#include <cstdint>
#include <vector>

#include "../core/quant.h"

namespace awq::cuda::detail {

// The clip search's error table without choosing or clamping: err_host[(j * steps + i) * out + r]
// = sum over the subsampled tokens t of E[t, r]^2, E = X_j * (Q(clamp(W_j, step i)) - W_j)^T, the
// layout of the CPU's table in search.cc. W and X are device pointers; steps as clip_search.
void clip_search_errors(const float* W, int64_t out, int64_t in, const float* X, int64_t n, const QuantParams& p,
                        int n_grid, float max_shrink, std::vector<double>& err_host);

}  // namespace awq::cuda::detail
