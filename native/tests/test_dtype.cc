#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "../core/dtype.h"
#include "test.h"
#include "util.h"

using namespace awq;

static float ref_fp16_to_f32(uint16_t h) {
  const int sign = h >> 15, exp = (h >> 10) & 31, mant = h & 1023;
  double v;
  if (exp == 31) v = mant ? std::nan("") : INFINITY;
  else if (exp == 0) v = std::ldexp(mant, -24);
  else v = std::ldexp(1024 + mant, exp - 25);
  return static_cast<float>(sign ? -v : v);
}

TEST(dtype_fp16_widening_is_exact_for_all_values) {
  int bad = 0;
  for (uint32_t h = 0; h < 65536; ++h) {
    const float got = fp16_to_f32_scalar(static_cast<uint16_t>(h));
    const float ref = ref_fp16_to_f32(static_cast<uint16_t>(h));
    if (std::isnan(ref) ? !std::isnan(got) : std::memcmp(&got, &ref, 4) != 0) ++bad;
  }
  CHECK(bad == 0);
}

// The bulk widening (the checkpoint reader's, chunks of F16C / NEON conversions in parallel) agrees
// with the scalar one on every value and every instruction set.
TEST(dtype_bulk_fp16_widening_matches_the_scalar_one) {
  std::vector<uint16_t> all(65536 * 3 + 5);
  for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<uint16_t>(i * 40503u);
  awq::test::for_each_isa([&](Isa) {
    std::vector<float> got(all.size());
    fp16_to_f32(all.data(), got.data(), static_cast<int64_t>(all.size()));
    int bad = 0;
    for (size_t i = 0; i < all.size(); ++i) {
      const float ref = fp16_to_f32_scalar(all[i]);
      if (std::isnan(ref) ? !std::isnan(got[i]) : std::memcmp(&got[i], &ref, 4) != 0) ++bad;
    }
    CHECK(bad == 0);
  });
}

TEST(dtype_fp16_narrowing_round_trips_and_rounds_to_nearest_even) {
  int bad = 0;
  for (uint32_t h = 0; h < 65536; ++h) {
    if (((h >> 10) & 31) == 31 && (h & 1023)) continue;  // NaN payloads
    const float f = fp16_to_f32_scalar(static_cast<uint16_t>(h));
    if (f32_to_fp16_scalar(f) != h) ++bad;
  }
  CHECK(bad == 0);
  // halfway between 1 and 1+2^-10 rounds to even (1); just above rounds up
  CHECK(f32_to_fp16_scalar(1.0f + std::ldexp(1.f, -11)) == 0x3c00);
  CHECK(f32_to_fp16_scalar(1.0f + 3 * std::ldexp(1.f, -11)) == 0x3c02);
  CHECK(f32_to_fp16_scalar(65519.f) == 0x7bff);
  CHECK(f32_to_fp16_scalar(65520.f) == 0x7c00);
  CHECK(f32_to_fp16_scalar(-1e9f) == 0xfc00);
  CHECK(f32_to_fp16_scalar(std::ldexp(1.f, -25)) == 0);          // halfway to smallest subnormal: even
  CHECK(f32_to_fp16_scalar(std::ldexp(1.5f, -25)) == 1);
  CHECK((f32_to_fp16_scalar(std::numeric_limits<float>::quiet_NaN()) & 0x7fff) > 0x7c00);
}

TEST(dtype_bf16_round_trip) {
  const float vals[] = {0.f, -0.f, 1.f, -2.5f, 3.0e38f, 1e-40f, INFINITY};
  uint16_t b[7];
  float back[7];
  f32_to_bf16(vals, b, 7);
  bf16_to_f32(b, back, 7);
  for (int i = 0; i < 6; ++i) CHECK_NEAR(back[i], vals[i], std::fabs(vals[i]) * 0.004 + 1e-38);
  CHECK(std::isinf(back[6]) && back[6] > 0);
  // round to nearest even on the 16 dropped bits
  const float halfway = [] { uint32_t u = 0x3f808000u; float f; std::memcpy(&f, &u, 4); return f; }();
  f32_to_bf16(&halfway, b, 1);
  CHECK(b[0] == 0x3f80);
}
