// AWQ "GEMM" packing of 4-bit weights (REFERENCE.md section 6), bit-exact with AutoAWQ.
//
// A linear W[out, in] quantized with group size g is stored as
//   qweight [in, out/8]   int32: q transposed, 8 output columns per word
//   qzeros  [in/g, out/8] int32: zeros transposed, packed the same way
//   scales  [in/g, out]   fp16:  scales transposed
// Within a word, nibble i (bits 4i..4i+3) holds output column 8c + kPackOrder[i]; value k of the
// 8 columns is therefore found at nibble kUnpackNibble[k].
#pragma once
#include <cstdint>

namespace awq {

constexpr int kPackOrder[8] = {0, 2, 4, 6, 1, 3, 5, 7};
constexpr int kUnpackNibble[8] = {0, 4, 1, 5, 2, 6, 3, 7};

// q [out, in] and zeros [out, in/g] hold values 0..15; scales [out, in/g] are finite fp32 that
// round to finite fp16. Throws InvalidArgument (naming the row and column) otherwise.
void pack_awq(const uint8_t* q, const uint8_t* zeros, const float* scales, int64_t out_features,
              int64_t in_features, int64_t group_size, int32_t* qweight, int32_t* qzeros,
              uint16_t* scales_fp16);

// The inverse of pack_awq: q [out, in], zeros [out, in/g], scales [out, in/g] (fp16 widened).
void unpack_awq(const int32_t* qweight, const int32_t* qzeros, const uint16_t* scales_fp16,
                int64_t in_features, int64_t out_features, int64_t group_size, uint8_t* q,
                uint8_t* zeros, float* scales);

// w [out, in] = (q - z) * s, computed in fp32 from the packed tensors.
void dequantize_awq(const int32_t* qweight, const int32_t* qzeros, const uint16_t* scales_fp16,
                    int64_t in_features, int64_t out_features, int64_t group_size, float* w);

}  // namespace awq
