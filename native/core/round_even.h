// Round to nearest, ties to even, for kernels that round one float at a time.
#pragma once

namespace awq {

// std::nearbyint without the libm call it costs per value on baseline x86-64 (no roundss).
// Adding and subtracting 1.5 * 2^23 leaves no fraction bits, so for |x| < 2^22 this is exactly
// round-half-to-even (the default rounding mode; the compiler may not fold it without
// -ffast-math). A larger |x| comes back as a value of the same sign and at least 2^22 - 1 in
// magnitude, which every caller clamps to its integer range as it would the exact result; NaN and
// +-Inf stay NaN and +-Inf.
inline float round_even(float x) {
  constexpr float kShift = 12582912.f;  // 1.5 * 2^23
  return (x + kShift) - kShift;
}

}  // namespace awq
