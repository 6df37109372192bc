#include "pack.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "dtype.h"
#include "errors.h"
#include "threadpool.h"

namespace awq {
namespace {

// Tiles of 16 words (128 output rows) x 256 input rows: the 128 source rows' slices (32 KiB) and
// the 256 destination cache lines (16 KiB) stay in L1/L2, so the transpose streams memory once.
constexpr int64_t kWordTile = 16;
constexpr int64_t kRowTile = 256;

void check_dims(int64_t out_features, int64_t in_features, int64_t group_size) {
  AWQ_CHECK_ARG(out_features > 0 && out_features % 8 == 0,
                "outFeatures: expected a positive multiple of 8, got " + std::to_string(out_features));
  AWQ_CHECK_ARG(group_size > 0, "groupSize: expected a positive integer, got " + std::to_string(group_size));
  AWQ_CHECK_ARG(in_features > 0 && in_features % group_size == 0,
                "inFeatures: expected a positive multiple of groupSize " + std::to_string(group_size) +
                    ", got " + std::to_string(in_features));
}

// Throws naming the first value above 15 of a row-major [rows, cols] uint8 matrix.
void check_nibbles(const uint8_t* v, int64_t rows, int64_t cols, const char* name) {
  const int64_t n = rows * cols;
  uint8_t any = 0;
  for (int64_t i = 0; i < n; ++i) any |= v[i];
  if ((any & 0xF0) == 0) return;
  for (int64_t i = 0; i < n; ++i) {
    if (v[i] > 15) {
      throw Error(ErrorCode::InvalidArgument,
                  std::string(name) + "[" + std::to_string(i / cols) + ", " + std::to_string(i % cols) +
                      "] = " + std::to_string(v[i]) + ": expected a 4-bit value 0..15");
    }
  }
}

// Runs fn(c0, c1, i0, i1) on the thread pool over tiles of kWordTile words (8 output columns
// each) x rows_per_tile input rows of a [rows, words] packed matrix. Shared by the packing, the
// unpacking and the dequantization so all three walk memory the same cache-friendly way.
template <typename Fn>
void for_each_tile(int64_t words, int64_t rows, int64_t rows_per_tile, Fn&& fn) {
  const int64_t word_tiles = (words + kWordTile - 1) / kWordTile;
  const int64_t row_tiles = (rows + rows_per_tile - 1) / rows_per_tile;
  parallel_for(word_tiles * row_tiles, 1, [&](int64_t begin, int64_t end, int) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t c0 = (t / row_tiles) * kWordTile, c1 = std::min(words, c0 + kWordTile);
      const int64_t i0 = (t % row_tiles) * rows_per_tile, i1 = std::min(rows, i0 + rows_per_tile);
      fn(c0, c1, i0, i1);
    }
  });
}

// dst[i, c] (words, [rows_in, out/8]) from src [out, rows_in] nibbles. One function for any
// row count: qweight (rows_in = in) and qzeros (rows_in = in / g) are the same transform.
void pack_transpose(const uint8_t* src, int64_t out_features, int64_t rows_in, int32_t* dst) {
  const int64_t words = out_features / 8;
  for_each_tile(words, rows_in, kRowTile, [&](int64_t c0, int64_t c1, int64_t i0, int64_t i1) {
    for (int64_t c = c0; c < c1; ++c) {
      const uint8_t* p[8];
      for (int n = 0; n < 8; ++n) p[n] = src + (8 * c + kPackOrder[n]) * rows_in;
      for (int64_t i = i0; i < i1; ++i) {
        const uint32_t w = uint32_t(p[0][i]) | uint32_t(p[1][i]) << 4 | uint32_t(p[2][i]) << 8 |
                           uint32_t(p[3][i]) << 12 | uint32_t(p[4][i]) << 16 |
                           uint32_t(p[5][i]) << 20 | uint32_t(p[6][i]) << 24 |
                           uint32_t(p[7][i]) << 28;
        dst[i * words + c] = static_cast<int32_t>(w);
      }
    }
  });
}

// The inverse of pack_transpose.
void unpack_transpose(const int32_t* src, int64_t out_features, int64_t rows_in, uint8_t* dst) {
  const int64_t words = out_features / 8;
  for_each_tile(words, rows_in, kRowTile, [&](int64_t c0, int64_t c1, int64_t i0, int64_t i1) {
    for (int64_t c = c0; c < c1; ++c) {
      uint8_t* p[8];
      for (int n = 0; n < 8; ++n) p[n] = dst + (8 * c + kPackOrder[n]) * rows_in;
      for (int64_t i = i0; i < i1; ++i) {
        const uint32_t w = static_cast<uint32_t>(src[i * words + c]);
        for (int n = 0; n < 8; ++n) p[n][i] = static_cast<uint8_t>((w >> (4 * n)) & 15u);
      }
    }
  });
}

}  // namespace

void pack_awq(const uint8_t* q, const uint8_t* zeros, const float* scales, int64_t out_features,
              int64_t in_features, int64_t group_size, int32_t* qweight, int32_t* qzeros,
              uint16_t* scales_fp16) {
  check_dims(out_features, in_features, group_size);
  const int64_t groups = in_features / group_size;
  check_nibbles(q, out_features, in_features, "q");
  check_nibbles(zeros, out_features, groups, "zeros");
  for (int64_t r = 0; r < out_features; ++r) {
    for (int64_t j = 0; j < groups; ++j) {
      const float s = scales[r * groups + j];
      const uint16_t h = f32_to_fp16_scalar(s);
      if (!std::isfinite(s) || (h & 0x7c00) == 0x7c00) {
        throw Error(ErrorCode::NonFinite,
                    "scales[" + std::to_string(r) + ", " + std::to_string(j) + "] = " + std::to_string(s) +
                        ": expected a finite value that fits fp16");
      }
      scales_fp16[j * out_features + r] = h;
    }
  }
  pack_transpose(q, out_features, in_features, qweight);
  pack_transpose(zeros, out_features, groups, qzeros);
}

void unpack_awq(const int32_t* qweight, const int32_t* qzeros, const uint16_t* scales_fp16,
                int64_t in_features, int64_t out_features, int64_t group_size, uint8_t* q,
                uint8_t* zeros, float* scales) {
  check_dims(out_features, in_features, group_size);
  const int64_t groups = in_features / group_size;
  unpack_transpose(qweight, out_features, in_features, q);
  unpack_transpose(qzeros, out_features, groups, zeros);
  for (int64_t j = 0; j < groups; ++j) {
    for (int64_t r = 0; r < out_features; ++r) {
      scales[r * groups + j] = fp16_to_f32_scalar(scales_fp16[j * out_features + r]);
    }
  }
}

void dequantize_awq(const int32_t* qweight, const int32_t* qzeros, const uint16_t* scales_fp16,
                    int64_t in_features, int64_t out_features, int64_t group_size, float* w) {
  check_dims(out_features, in_features, group_size);
  const int64_t words = out_features / 8;
  // Row tiles are whole groups so each tile reads each (group, column) zero and scale once.
  const int64_t rows_per_tile = std::max<int64_t>(1, kRowTile / group_size) * group_size;
  for_each_tile(words, in_features, rows_per_tile, [&](int64_t c0, int64_t c1, int64_t i0, int64_t i1) {
    for (int64_t c = c0; c < c1; ++c) {
      for (int n = 0; n < 8; ++n) {
        const int64_t r = 8 * c + kPackOrder[n];
        float* wr = w + r * in_features;
        for (int64_t g0 = i0; g0 < i1; g0 += group_size) {
          const int64_t grp = g0 / group_size;
          const uint32_t zw = static_cast<uint32_t>(qzeros[grp * words + c]);
          const float z = static_cast<float>((zw >> (4 * n)) & 15u);
          const float s = fp16_to_f32_scalar(scales_fp16[grp * out_features + r]);
          const int64_t g1 = std::min(i1, g0 + group_size);
          for (int64_t i = g0; i < g1; ++i) {
            const uint32_t qw = static_cast<uint32_t>(qweight[i * words + c]);
            wr[i] = (static_cast<float>((qw >> (4 * n)) & 15u) - z) * s;
          }
        }
      }
    }
  });
}

}  // namespace awq
