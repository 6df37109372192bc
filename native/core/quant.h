// Group quantization of weights (REFERENCE.md section 1).
//
// W[rows, cols] is split along cols into groups of `group` weights (group == cols: one group per
// row). Per (row, group), asymmetric (zero point, the default):
//   s = round_to_fp16(max(max - min, 1e-5) / qmax),  z = clamp(-round(min / s), 0, qmax)
//   q = clamp(round(w / s) + z, 0, qmax),            w_dq = (q - z) * s
// symmetric: s = round_to_fp16(max(max|w|, 1e-5) / (2^(b-1) - 1)),
//   q = clamp(round(w / s), -2^(b-1), 2^(b-1) - 1), stored as q + 2^(b-1) with zero 2^(b-1), so the
//   same (q - z) * s dequantizes both. `round` is round-half-to-even (std::nearbyint in the
//   default rounding mode, as torch.round). The scale is rounded to fp16 before q is computed
//   because the checkpoint stores it as fp16: what is evaluated is what inference will see.
#pragma once
#include <cstdint>

namespace awq {

struct QuantParams {
  int bits = 4;           // 2..8
  int64_t group = 128;    // group size along the input dimension; must divide cols
  bool zero_point = true;  // asymmetric with zero point; false: symmetric
};

// Validates bits and group against cols (throws InvalidArgument naming them).
void check_quant_params(const QuantParams& p, int64_t cols);

// Quantizes rows [r0, r1) on the calling thread. Any output pointer may be null:
// dq[rows*cols] (may alias w), q[rows*cols], zeros[rows*cols/group], scales[rows*cols/group].
// Returns false when a scale overflowed fp16 (|range| beyond ~1e6): the outputs are then
// not meaningful. Non-finite weights are the caller's business (see quantize_weights).
bool quantize_rows(const float* w, int64_t r0, int64_t r1, int64_t cols, const QuantParams& p,
                   float* dq, uint8_t* q, uint8_t* zeros, float* scales);

// All rows, in parallel on the shared pool. Throws NonFinite naming `name` when w holds NaN/Inf
// or a scale overflows fp16.
void quantize_weights(const float* w, int64_t rows, int64_t cols, const QuantParams& p, float* dq,
                      uint8_t* q, uint8_t* zeros, float* scales, const char* name = "weight");

}  // namespace awq
