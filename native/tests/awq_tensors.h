// Test helper: AutoAWQ "GEMM" tensors (REFERENCE.md section 6) built from a linear in our
// quantizer's form, for the CPU and CUDA int4 tests.
#pragma once
#include <cstdint>
#include <vector>

#include "../core/dtype.h"

namespace awq::test {

struct AwqTensors {
  std::vector<int32_t> qweight, qzeros;  // [in, out/8], [in/group, out/8]
  std::vector<uint16_t> scales, bias;    // fp16 [in/group, out], [out] or empty
};

// q [out, in] and zeros [out, in/group] in 0..15, scales [out, in/group] (fp16-representable),
// bias [out] or empty. AutoAWQ puts output column 8c + order[i] in nibble i of word c.
inline AwqTensors awq_tensors(const std::vector<uint8_t>& q, const std::vector<uint8_t>& zeros,
                              const std::vector<float>& scales, const std::vector<float>& bias, int64_t in,
                              int64_t out, int64_t group) {
  constexpr int kOrder[8] = {0, 2, 4, 6, 1, 3, 5, 7};
  const int64_t cols = out / 8, G = in / group;
  AwqTensors t;
  t.qweight.assign(in * cols, 0);
  t.qzeros.assign(G * cols, 0);
  t.scales.resize(G * out);
  // packs column-group c of row r of a [rows, out]-shaped matrix read as src[n * ld + r]
  auto word = [&](const std::vector<uint8_t>& src, int64_t ld, int64_t r, int64_t c) {
    uint32_t w = 0;
    for (int i = 0; i < 8; ++i) w |= static_cast<uint32_t>(src[(8 * c + kOrder[i]) * ld + r]) << (4 * i);
    return static_cast<int32_t>(w);
  };
  for (int64_t k = 0; k < in; ++k)
    for (int64_t c = 0; c < cols; ++c) t.qweight[k * cols + c] = word(q, in, k, c);
  for (int64_t g = 0; g < G; ++g) {
    for (int64_t c = 0; c < cols; ++c) t.qzeros[g * cols + c] = word(zeros, G, g, c);
    for (int64_t n = 0; n < out; ++n) t.scales[g * out + n] = f32_to_fp16_scalar(scales[n * G + g]);
  }
  for (float b : bias) t.bias.push_back(f32_to_fp16_scalar(b));
  return t;
}

}  // namespace awq::test
