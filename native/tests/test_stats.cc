#include <cmath>
#include <limits>
#include <string>

#include "../core/errors.h"
#include "../core/stats.h"
#include "../core/threadpool.h"
#include "cuda_device.h"
#include "test.h"
#include "util.h"
#ifdef AWQ_WITH_CUDA
#include "../cuda/cuda_backend.h"
#endif

using namespace awq;
using namespace awq::test;

static std::vector<double> reference_abs_mean(const std::vector<float>& x, int64_t rows, int64_t cols) {
  std::vector<double> m(cols, 0.0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < cols; ++j) m[j] += std::fabs(static_cast<double>(x[r * cols + j]));
  for (auto& v : m) v /= static_cast<double>(rows);
  return m;
}

TEST(stats_abs_mean_matches_fp64_reference) {
  for_each_isa([](Isa) {
    for (auto [rows, cols] : {std::pair<int64_t, int64_t>{1, 1}, {3, 17}, {1000, 64}, {517, 531}}) {
      auto x = random_floats(rows * cols, static_cast<uint32_t>(rows * 7 + cols), -3.f, 3.f);
      // an outlier channel, as real activations have
      for (int64_t r = 0; r < rows; ++r) x[r * cols + cols / 2] *= 300.f;
      std::vector<float> out(cols);
      abs_mean_columns(x.data(), rows, cols, out.data());
      const auto ref = reference_abs_mean(x, rows, cols);
      for (int64_t j = 0; j < cols; ++j) CHECK_NEAR(out[j], ref[j], 1e-5 * ref[j] + 1e-7);
    }
  });
}

TEST(stats_abs_mean_rejects_non_finite) {
  for_each_isa([](Isa) {
    for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
      auto x = random_floats(200 * 33, 1);
      x[150 * 33 + 32] = bad;
      std::vector<float> out(33);
      bool threw = false;
      try {
        abs_mean_columns(x.data(), 200, 33, out.data());
      } catch (const Error& e) {
        threw = e.code() == ErrorCode::NonFinite &&
                std::string(e.what()).find("row 150, channel 32") != std::string::npos;
      }
      CHECK(threw);
    }
  });
}

TEST(stats_abs_mean_rejects_bad_shape) {
  float x = 1.f, out = 0.f;
  CHECK_THROWS(abs_mean_columns(&x, 0, 1, &out));
}

TEST(stats_cuda_matches_cpu) {
#ifndef AWQ_WITH_CUDA
  SKIP("built without CUDA");
#else
  require_cuda_device();
  const int64_t rows = 4099, cols = 777;
  auto x = random_floats(rows * cols, 5, -2.f, 2.f);
  std::vector<float> cpu(cols), gpu(cols);
  abs_mean_columns(x.data(), rows, cols, cpu.data());
  cuda::abs_mean_columns(x.data(), rows, cols, gpu.data());
  for (int64_t j = 0; j < cols; ++j) CHECK_NEAR(gpu[j], cpu[j], 1e-5 * cpu[j]);
#endif
}
