// Conversions between fp32 and the 16-bit float formats of checkpoints.
// fp16 <-> fp32 and bf16 <-> fp32 are exact widenings; narrowing rounds to nearest even,
// keeps NaN a NaN, and overflows to Inf like torch's .half() / .bfloat16().
#pragma once
#include <cstdint>
#include <cstring>

namespace awq {

void bf16_to_f32(const uint16_t* src, float* dst, int64_t n);
void fp16_to_f32(const uint16_t* src, float* dst, int64_t n);
void f32_to_bf16(const float* src, uint16_t* dst, int64_t n);
void f32_to_fp16(const float* src, uint16_t* dst, int64_t n);

// Scalar versions for kernels that round single values (e.g. quantization scales to fp16).
uint16_t f32_to_fp16_scalar(float f);
float fp16_to_f32_scalar(uint16_t h);
// x rounded to the nearest fp16 value and back: what inference sees for an fp16-stored scale.
inline float round_to_fp16(float x) { return fp16_to_f32_scalar(f32_to_fp16_scalar(x)); }
// x rounded to the nearest bf16 value (ties to even; NaN stays a quiet NaN), as an fp32: f32_to_bf16
// of one value, widened back. Branch-free, so loops over it vectorize.
inline float round_to_bf16(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
  const uint32_t nan = (u | 0x00400000u) & 0xffff0000u;
  const uint32_t r = (u & 0x7fffffffu) > 0x7f800000u ? nan : rounded;
  float f;
  std::memcpy(&f, &r, 4);
  return f;
}

}  // namespace awq
