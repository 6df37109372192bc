// Conversions between fp32 and the 16-bit float formats of checkpoints.
// fp16 <-> fp32 and bf16 <-> fp32 are exact widenings (a NaN stays a NaN; the vector widenings of
// fp16 set a signalling NaN's quiet bit, the scalar one keeps its bits); narrowing rounds to
// nearest even, keeps NaN a NaN, and overflows to Inf like torch's .half() / .bfloat16().
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
// One value of f32_to_bf16: nearest even, NaN kept a NaN (made quiet). Branch-free, so loops over
// it vectorize.
inline uint16_t f32_to_bf16_scalar(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  const uint32_t nan = (u >> 16) | 0x40u;
  return static_cast<uint16_t>((u & 0x7fffffffu) > 0x7f800000u ? nan : rounded);
}
// One value of bf16_to_f32: the bits shifted into the high half (exact). Loops over it vectorize.
inline float bf16_to_f32_scalar(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
// x rounded to the nearest bf16 value, as an fp32 (what a bf16 product's operand holds).
inline float round_to_bf16(float x) { return bf16_to_f32_scalar(f32_to_bf16_scalar(x)); }

}  // namespace awq
