// Conversions between fp32 and the 16-bit float formats of checkpoints.
// fp16 <-> fp32 and bf16 <-> fp32 are exact widenings; narrowing rounds to nearest even,
// keeps NaN a NaN, and overflows to Inf like torch's .half() / .bfloat16().
#pragma once
#include <cstdint>

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

}  // namespace awq
