// 4-bit weight x fp32 activation matrix products (the int4 GEMM of a serving backend).
//
//   y[M, out] = x[M, in] * dequantize(W)^T (+ bias),  dequantize(W)[n, k] = (q[n,k] - z[n,g]) * s[n,g]
//
// with g = k / group (REFERENCE.md section 6). Weights are repacked once (pack_int4_*) into the
// layout the kernels stream:
//   - q: per output row n, ceil(in/128) blocks of 64 bytes; in block b, the little-endian 32-bit
//     word j (0..15) holds in its nibble i (bits 4i..4i+3) the value q[n, 128b + 16i + j].
//     One 16-lane (or two 8-lane) vector of words thus yields 16 consecutive k per nibble: a
//     shift and a mask (or a 16-entry permute) unpack it, with no shuffles across lanes.
//   - scales fp16 [out, groups] (the checkpoint's own precision); zeros 4-bit, two per byte, each
//     row in whole bytes (group g of row n in nibble g & 1 of byte n * zero_bytes + g / 2); bias
//     fp32 [out] (optional). Both arrays carry a few bytes of padding for whole-vector loads.
// Memory: in*out/2 bytes of weights (rows padded to a multiple of 128 in) + 2.5 bytes per group
// per row + 4 bytes per output with a bias: for group 128 that is 0.52 bytes per weight, the
// bytes of the AWQ tensors themselves. fp32 scales with a u8 zero (5 bytes a group) made the
// int8 decode at M = 1 4-6% slower from DRAM (Zen 4, same-process A/B): it streams every byte.
//
// Modes:
//   Exact: fp32 accumulation of x * ((q - z) * s); equal to x * dequantize(W)^T up to fp32
//          summation-order rounding (tests bound it by 2 * in * eps * sum |x||w|).
//   Int8:  x is quantized per row and 128-block to int8 (symmetric, round to nearest:
//          xs = max|x| / 127, xq = round(x / xs)); integer products sum(q * xq) and
//          z * sum(xq) per block, then scaled. Error per output is at most
//          sum over blocks of (xs / 2) * sum |w| over the block (plus fp32 rounding); it needs a
//          group size that is a multiple of 128.
// Small M (decode, up to 16 rows) streams the weights once, split over output rows on the shared
// pool; larger M (prefill) dequantizes each weight once to fp32 for the project's sgemm
// micro-kernel, which reuses it for every row of x (int4_gemm.cc: the two prefill variants and
// the crossovers).
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <type_traits>
#include <vector>

namespace awq {

enum class Int4Mode { Exact = 0, Int8 = 1 };

// A 64-byte aligned byte buffer (vector loads of whole blocks never split a cache line).
class AlignedBytes {
 public:
  AlignedBytes() = default;
  explicit AlignedBytes(size_t n);
  uint8_t* data() { return ptr_.get(); }
  const uint8_t* data() const { return ptr_.get(); }
  size_t size() const { return size_; }

 private:
  struct Free {
    // Constructors, not a member initializer: GCC cannot default-construct a nested class with
    // one before the enclosing class is complete (unique_ptr's default constructor needs it).
    Free() : mapped(0) {}
    explicit Free(size_t bytes) : mapped(bytes) {}
    size_t mapped;  // bytes mapped with mmap (large buffers), or 0: from aligned_alloc
    void operator()(uint8_t* p) const;
  };
  std::unique_ptr<uint8_t[], Free> ptr_;
  size_t size_ = 0;
};

struct Int4Weights {
  int64_t in = 0, out = 0, group = 0;
  int64_t blocks = 0;  // ceil(in / 128)
  int64_t groups = 0;  // in / group
  AlignedBytes q;      // out * blocks * 64 bytes
  int64_t zero_bytes = 0;  // (groups + 1) / 2: bytes of zeros per row
  std::vector<uint16_t> scales;  // [out, groups] fp16 bits, then kMetaPad more
  std::vector<uint8_t> zeros;    // [out, zero_bytes], then kMetaPad more
  std::vector<float> bias;       // [out] or empty
  // Padding after scales and zeros: a 16-group vector load at any row's group 16i stays inside.
  static constexpr int64_t kMetaPad = 16;

  const uint8_t* row(int64_t n) const { return q.data() + n * blocks * 64; }
  int zero(int64_t n, int64_t g) const {
    return (zeros[static_cast<size_t>(n * zero_bytes + (g >> 1))] >> ((g & 1) * 4)) & 15;
  }
  // Exact. The x86 kernels convert with F16C instead (int4_meta_x86.inc).
  float scale(int64_t n, int64_t g) const;
  // Bytes held by this object (for external-memory accounting and the docs).
  size_t bytes() const;
};

// From an AutoAWQ "GEMM" tensor set: qweight int32 [in, out/8], qzeros int32 [in/group, out/8],
// scales fp16 [in/group, out], bias fp16 [out] or null. group <= 0 means in.
// Throws InvalidArgument on shapes this layout cannot hold, NonFinite on NaN/Inf scales.
std::shared_ptr<Int4Weights> pack_int4_awq(const int32_t* qweight, const int32_t* qzeros,
                                           const uint16_t* scales_fp16, const uint16_t* bias_fp16,
                                           int64_t in, int64_t out, int64_t group);

// From this project's quantizer: q u8 [out, in] (0..15), zeros u8 [out, in/group] (0..15),
// scales fp32 [out, in/group], bias fp32 [out] or null. The scales are held as fp16, as the
// checkpoint stores them (the quantizer's scales are fp16 values already, REFERENCE.md section
// 1); any other value rounds to the nearest fp16, and one beyond fp16's range is NonFinite.
std::shared_ptr<Int4Weights> pack_int4_quantized(const uint8_t* q, const uint8_t* zeros,
                                                 const float* scales, const float* bias,
                                                 int64_t in, int64_t out, int64_t group);

// Requirements on shapes shared by both packers: in, out > 0, group % 16 == 0, in % group == 0.
void check_int4_shape(int64_t in, int64_t out, int64_t group);

// y[M, out] = x[M, in] * dequantize(W)^T + bias. Throws NonFinite naming the first NaN/Inf in x.
void int4_linear(const Int4Weights& w, const float* x, int64_t M, float* y,
                 Int4Mode mode = Int4Mode::Exact);

// dequantize(W) as fp32 [out, in] (tests, dense baselines).
void int4_dequantize(const Int4Weights& w, float* dst);

namespace detail {

// Activations quantized for Int8 mode: per row m and 128-block b, 128 bytes laid out to match
// the weight words: bytes [0,64) ("lo") hold at byte 4j+c the value x[128b + 32c + j] and bytes
// [64,128) ("hi") x[128b + 32c + 16 + j], so that lo pairs with the even nibbles of word j and hi
// with the odd ones. Blocks past `in` are zero.
struct Int8Activations {
  int64_t M = 0, blocks = 0;
  AlignedBytes q;               // [M, blocks, 128] int8
  std::vector<float> scale;     // [M, blocks]
  std::vector<int32_t> sum;     // [M, blocks]: sum of the block's int8 values
};
void quantize_activations_int8(const float* x, int64_t M, int64_t in, Int8Activations& out);

// Activations for an ISA's permuted exact decode (Int4Kernels::decode_permuted): per row m,
// x[m, 128b + k] moved, within its 128-block b, to the position at which that kernel produces
// weight k. [M, blocks * 128] floats.
struct PermutedActivations {
  int64_t M = 0, blocks = 0;
  // 64-byte aligned: each 128-block is then two whole cache lines, and no 32-byte load of it
  // splits (a std::vector's buffer sat at 16 or 48 mod 64: 1.08-1.12x slower at M = 1 in cache).
  AlignedBytes storage;
  float* x() { return reinterpret_cast<float*>(storage.data()); }
  const float* x() const { return reinterpret_cast<const float*>(storage.data()); }
};

// One ISA's kernels. n ranges are output rows; k0 is a multiple of 128 and kc of 16.
struct Int4Kernels {
  // y[m * ldy + n] for m < M (any M; used up to kDecodeMaxM), n in [n0, n1): exact mode, no bias.
  void (*decode)(const Int4Weights& w, const float* x, int64_t ldx, int64_t M, float* y,
                 int64_t ldy, int64_t n0, int64_t n1);
  // dst[r * ld + (k - k0)] = dequantize(W)[n0 + r, k] for r < nr, k in [k0, k0 + kc).
  void (*dequant_rows)(const Int4Weights& w, int64_t n0, int64_t nr, int64_t k0, int64_t kc,
                       float* dst, int64_t ld);
  // Int8 mode: y[m * ldy + n] for all m < a.M, n in [n0, n1), no bias.
  void (*decode_int8)(const Int4Weights& w, const Int8Activations& a, float* y, int64_t ldy,
                      int64_t n0, int64_t n1);
  // Optional (null: dequant_rows, then the sgemm's packer): one panel_lanes-wide B micro-panel of
  // the sgemm (used where that is the sgemm's nr), dequantized in place:
  // dst[s * panel_lanes + l] = dequantize(W)[n0 + l, k0 + s] for l < lanes (0 for lanes <= l <
  // panel_lanes), s < kc.
  void (*dequant_panel)(const Int4Weights& w, int64_t n0, int lanes, int64_t k0, int64_t kc, float* dst);
  int panel_lanes;
  // With dequant_panel: rows of x up to which decode stays faster than the fused prefill.
  int decode_max_m_fused;
  // Optional (null: decode) exact decode for group % 128 == 0 and M <= kPermutedDecodeMaxM on
  // activations that permute_x prepared (x exact, only reordered).
  void (*permute_x)(const float* x, int64_t M, int64_t in, PermutedActivations& out);
  void (*decode_permuted)(const Int4Weights& w, const PermutedActivations& a, float* y, int64_t ldy,
                          int64_t n0, int64_t n1);
  // Optional (null: decode_int8) int8 mode from kInt8PrefillMinM rows of x: same contract as
  // decode_int8, organised for many rows (AVX-512 VNNI: 16 output rows per vector).
  void (*prefill_int8)(const Int4Weights& w, const Int8Activations& a, float* y, int64_t ldy, int64_t n0,
                       int64_t n1);
};
// Rows of x up to which decode_permuted is used: from 4 rows on, the FMAs outweigh the unpacking
// it saves and its accumulators crowd the registers (AVX2: 10-20% slower than decode at M = 4-16).
constexpr int64_t kPermutedDecodeMaxM = 3;
extern const Int4Kernels kInt4Portable;
extern const Int4Kernels kInt4Avx2;
extern const Int4Kernels kInt4Avx512;
// The AVX-512 int8 kernel with VNNI (vpdpbusd), picked by kInt4Avx512 where the CPU has it.
void decode_int8_avx512vnni(const Int4Weights& w, const Int8Activations& a, float* y, int64_t ldy,
                            int64_t n0, int64_t n1);
void prefill_int8_avx512vnni(const Int4Weights& w, const Int8Activations& a, float* y, int64_t ldy,
                             int64_t n0, int64_t n1);
// arm64: NEON decode and dequantization; int8 mode on SDOT where the CPU has DotProd.
const Int4Kernels& int4_kernels_neon();
void decode_int8_sdot(const Int4Weights& w, const Int8Activations& a, float* y, int64_t ldy, int64_t n0, int64_t n1);
const Int4Kernels& int4_kernels();  // for active_isa()

// Software prefetch target of the streaming kernels: block `blk` of the row `rows_ahead` rows
// after `row`. Rows are short (in/2 bytes, a few KiB), too short for the hardware prefetcher to
// ramp up on each one; fetching a few rows ahead made M = 1 1.7x faster on Zen 3. Prefetches
// past the end of the buffer are harmless (they never fault).
inline const char* prefetch_target(const Int4Weights& w, const uint8_t* row, int64_t rows_ahead, int64_t blk) {
  return reinterpret_cast<const char*>(row + (rows_ahead * w.blocks + blk) * 64);
}
constexpr int64_t kPrefetchRows = 4;

// The streaming (decode) kernels' walk over output rows [n0, n1): tiles of 64 rows (64 KiB of
// weights at in = 4096, kept in L2 while each 4-row slice of x passes), calling
// rows(std::integral_constant<int, MR>{}, m0, t0, t1) with MR = min(4, M - m0), so that each ISA
// instantiates its register tiles for MR = 1..4.
template <typename Rows>
void for_each_decode_tile(int64_t M, int64_t n0, int64_t n1, const Rows& rows) {
  for (int64_t t0 = n0; t0 < n1; t0 += 64) {
    const int64_t t1 = std::min(n1, t0 + 64);
    for (int64_t m0 = 0; m0 < M; m0 += 4) {
      switch (std::min<int64_t>(4, M - m0)) {
        case 1: rows(std::integral_constant<int, 1>{}, m0, t0, t1); break;
        case 2: rows(std::integral_constant<int, 2>{}, m0, t0, t1); break;
        case 3: rows(std::integral_constant<int, 3>{}, m0, t0, t1); break;
        default: rows(std::integral_constant<int, 4>{}, m0, t0, t1); break;
      }
    }
  }
}

// q[n, k] read from the packed layout (tests, portable kernels).
inline int int4_at(const Int4Weights& w, int64_t n, int64_t k) {
  const int64_t r = k & 127, i = r >> 4, j = r & 15;
  const uint8_t byte = w.row(n)[(k >> 7) * 64 + 4 * j + (i >> 1)];
  return (i & 1) ? (byte >> 4) : (byte & 15);
}

}  // namespace detail
}  // namespace awq
