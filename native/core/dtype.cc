#include "dtype.h"

#include <cstring>

#include "threadpool.h"
#include "vecmath.h"

namespace awq {

namespace {
inline float bits_to_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint32_t float_to_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
constexpr int64_t kGrain = 1 << 16;
}  // namespace

float fp16_to_f32_scalar(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  const uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ff;
  if (exp == 0x1f) return bits_to_float(sign | 0x7f800000u | (mant << 13));  // Inf / NaN
  if (exp == 0) {
    if (mant == 0) return bits_to_float(sign);
    // subnormal: value = mant * 2^-24
    const float v = static_cast<float>(mant) * 5.9604644775390625e-8f;
    return sign ? -v : v;
  }
  return bits_to_float(sign | ((exp + 112) << 23) | (mant << 13));
}

uint16_t f32_to_fp16_scalar(float f) {
  const uint32_t x = float_to_bits(f);
  const uint32_t sign = (x >> 16) & 0x8000;
  const uint32_t abs = x & 0x7fffffff;
  if (abs > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00 | ((abs >> 13) & 0x3ff));  // NaN
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00);  // rounds to >= 65520: Inf
  if (abs < 0x38800000u) {
    // result is subnormal (or zero) in fp16: round abs / 2^-24 to nearest even integer
    const float v = bits_to_float(abs) * 16777216.0f;  // exact: scaling by a power of two
    // nearest-even rounding of a float to integer in [0, 1024]
    float r = static_cast<float>(static_cast<int32_t>(v));
    const float frac = v - r;
    if (frac > 0.5f || (frac == 0.5f && (static_cast<int32_t>(r) & 1))) r += 1.f;
    return static_cast<uint16_t>(sign | static_cast<uint32_t>(r));
  }
  // normal: re-bias exponent, round mantissa to 10 bits, nearest even (carry may bump exponent)
  const uint32_t rounded = abs + 0xfff + ((abs >> 13) & 1);
  return static_cast<uint16_t>(sign | ((rounded - 0x38000000u) >> 13));
}

// The bulk widenings run vecmath's serial ones (F16C / NEON for fp16) on chunks in parallel.
void bf16_to_f32(const uint16_t* src, float* dst, int64_t n) {
  parallel_for(n, kGrain, [&](int64_t b, int64_t e, int) { widen_bf16(src + b, dst + b, e - b); });
}

void fp16_to_f32(const uint16_t* src, float* dst, int64_t n) {
  parallel_for(n, kGrain, [&](int64_t b, int64_t e, int) { widen_fp16(src + b, dst + b, e - b); });
}

void f32_to_bf16(const float* src, uint16_t* dst, int64_t n) {
  parallel_for(n, kGrain, [&](int64_t b, int64_t e, int) {
    for (int64_t i = b; i < e; ++i) dst[i] = f32_to_bf16_scalar(src[i]);
  });
}

void f32_to_fp16(const float* src, uint16_t* dst, int64_t n) {
  parallel_for(n, kGrain, [&](int64_t b, int64_t e, int) {
    for (int64_t i = b; i < e; ++i) dst[i] = f32_to_fp16_scalar(src[i]);
  });
}

}  // namespace awq
