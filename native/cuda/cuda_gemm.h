// Matrix products on NVIDIA GPUs (sm_80+, mma.sync tensor cores, no cuBLAS). Plain C++: callers
// (addon, tests, benchmarks) include it without CUDA headers. All matrices are row-major and live
// in device memory; every call is asynchronous on `stream` (nullptr: the default stream).
// Errors: awq::Error InvalidArgument (shapes, alignment), OutOfMemory (naming what did not fit),
// Cuda (driver/runtime failures, no device).
//
//   int4_gemm:  y[M,N] = x[M,K] * dequant(W)^T (+ bias),  dequant(W)[n,k] = (q - z) * s
//               x fp16, y fp16 or fp32, fp32 accumulation. Each dequantized weight is rounded
//               to fp16 ((q - z) is exact, the product with the fp16 scale rounds once), as in
//               AutoAWQ/vLLM kernels, so results match x * dequant(W)^T to fp16 level.
//   dense_gemm: C[M,N] = A[M,K] * B[N,K]^T (+ bias), A and B fp16 or bf16, C fp32 or A's type.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace awq::cuda {

enum class Dtype : int { F16 = 0, BF16 = 1, F32 = 2 };
size_t dtype_size(Dtype t);

// Device memory (RAII, move-only). Allocation failure throws OutOfMemory with `what` and the size.
class DeviceMemory {
 public:
  DeviceMemory() = default;
  DeviceMemory(size_t bytes, const char* what);
  ~DeviceMemory();
  DeviceMemory(DeviceMemory&& o) noexcept;
  DeviceMemory& operator=(DeviceMemory&& o) noexcept;
  DeviceMemory(const DeviceMemory&) = delete;
  DeviceMemory& operator=(const DeviceMemory&) = delete;
  void* get() const { return ptr_; }
  size_t size() const { return size_; }

 private:
  void* ptr_ = nullptr;
  size_t size_ = 0;
};

// A CUDA stream of the caller's own (RAII, move-only). It is a blocking stream: its work waits for
// what was queued on the legacy default stream before it (the uploads and copies here), as uploaded
// weights must. get() is what the `stream` parameters below take.
class DeviceStream {
 public:
  DeviceStream();
  ~DeviceStream();
  DeviceStream(DeviceStream&& o) noexcept;
  DeviceStream& operator=(DeviceStream&& o) noexcept;
  DeviceStream(const DeviceStream&) = delete;
  DeviceStream& operator=(const DeviceStream&) = delete;
  void* get() const { return stream_; }
  void synchronize() const;  // waits for the stream's work; throws on an asynchronous kernel error

 private:
  void* stream_ = nullptr;
};

void copy_to_device(void* dst, const void* src, size_t bytes);
void copy_to_host(void* dst, const void* src, size_t bytes);
void fill_zero(void* dst, size_t bytes, void* stream = nullptr);
void synchronize();  // waits for the device; throws on an asynchronous kernel error

// Int4 weights in the kernels' layout (see int4_repack_host). One uint4 (four uint32 words) per
// lane of a warp per (8 output columns, 128 inputs): word j of lane (g = lane / 4, t = lane % 4)
// of tile (n8, c) holds q[n = 8 n8 + g, k = 128 c + 32 t + 8 j + i] for i = 0..7, value i in
// nibble (i / 2) + 4 (i % 2), so that the two halves of each 16-bit pair are k, k + 1 after the
// magic-number conversion. K is padded to a multiple of 128 with q = 0 (x is zero there).
struct Int4Layout {
  int64_t K = 0, N = 0, group = 0;
  int64_t chunks = 0;  // ceil(K / 128)
  int64_t groups() const { return K / group; }
};

// Host-side repack from AutoAWQ "GEMM" tensors (REFERENCE.md section 6): qweight int32 [K, N/8],
// qzeros int32 [K/group, N/8], scales fp16 [K/group, N]. Outputs: q (N/8 * chunks * 128 words)
// and sz (one word per (group, n): low 16 bits the fp16 scale, high 16 bits z as fp16).
// Requires K % 32 == 0, N % 8 == 0, group % 32 == 0, K % group == 0 (group <= 0 means K).
// Throws NonFinite on NaN/Inf scales.
Int4Layout int4_repack_host(const int32_t* qweight, const int32_t* qzeros, const uint16_t* scales_fp16,
                            int64_t K, int64_t N, int64_t group, std::vector<uint32_t>& q,
                            std::vector<uint32_t>& sz);

struct Int4DeviceWeights {
  Int4Layout layout;
  DeviceMemory q, sz, bias;  // bias: fp32 [N] or empty
  size_t bytes() const { return q.size() + sz.size() + bias.size(); }
};

// Repack once on the host and upload (bias fp16 [N] or null).
Int4DeviceWeights int4_upload_awq(const int32_t* qweight, const int32_t* qzeros, const uint16_t* scales_fp16,
                                  const uint16_t* bias_fp16, int64_t K, int64_t N, int64_t group);

enum class Int4Kernel : int {
  Auto = 0,      // Skinny for M <= 16, Tiled below kDequantDenseMinM, DequantDense from there
  Skinny = 1,    // M <= 16: streams the weights once, split-K over warps, x rows in the mma's A rows
  Tiled = 2,     // any M: x tiles in shared memory (cp.async double buffer); tile shape by M
  Tiled16 = 3,   // the tiled kernel with a forced tile shape (tests, benchmarks): 16 x 32,
  Tiled64 = 4,   // 64 x 64,
  Tiled128 = 5,  // 128 x 128
  // Large M (prefill): dequantize W once into fp16 [N, K] scratch (stream-ordered allocation,
  // N * K * 2 bytes, freed after the call) and run the dense tensor-core GEMM on it. Each weight
  // is rounded to fp16 exactly as the other kernels round it, so results agree to fp32 summation.
  DequantDense = 6,
};
constexpr int64_t kDequantDenseMinM = 1024;  // H200: tiled wins at M = 512 (1.4-1.5x), this at 4096 (1.7x)

// y[M, N] = x[M, K] * dequant(W)^T (+ bias). x fp16 (16-byte aligned), y `y_type` (F16 or F32).
// NaN/Inf in x propagate to y (not checked on the device).
void int4_gemm(const Int4DeviceWeights& w, const void* x, int64_t M, void* y, Dtype y_type,
               void* stream = nullptr, Int4Kernel kernel = Int4Kernel::Auto);

// Tests and benchmarks: force the skinny kernel's tiles per warp (2, 4), warps per block (4, 8)
// and shared-memory ring stages (2, 4), or 8 tiles with 8 warps and 2 stages (a candidate for
// M > 8, not an automatic choice yet); all 0 restores the automatic choice by shape.
// Process-wide, not thread-safe.
// no_fold: scale every weight before the product even where the group size (a multiple of 128)
// lets the kernel scale each chunk's fp32 sums instead (the automatic choice for M <= 8).
// no_pdl: launch without programmatic dependent launch. By default, on sm_90+ with sm_90 code and
// on a stream other than the legacy default stream (nullptr), a skinny call may
// start while the previous kernel of its stream finishes (it fetches its first weights, then waits
// for that kernel before reading x), which hides most of a short call's start and drain in a
// stream of calls.
struct SkinnyConfig {
  int tiles = 0, warps = 0, stages = 0;
  bool no_fold = false;
  bool no_pdl = false;
};
void int4_force_skinny_config(const SkinnyConfig& c);
// Forces a skinny configuration for a scope (tests and benchmarks), back to the automatic choice
// on the way out, exceptions included.
class ScopedSkinnyConfig {
 public:
  explicit ScopedSkinnyConfig(const SkinnyConfig& c) { int4_force_skinny_config(c); }
  ~ScopedSkinnyConfig() { int4_force_skinny_config({}); }
  ScopedSkinnyConfig(const ScopedSkinnyConfig&) = delete;
  ScopedSkinnyConfig& operator=(const ScopedSkinnyConfig&) = delete;
};
// Whether skinny launches may use programmatic dependent launch on the current device: sm_90+,
// and the driver has not refused it. That is the device's and driver's part only; a launch also
// needs kernels compiled for sm_90 (a build without sm_90 code runs them without PDL) and a
// stream other than the legacy default stream (nullptr), which the addon's calls use.
bool int4_pdl_in_use();
constexpr int kSkinnyMaxM = 16;

enum class DenseKernel : int {
  Auto = 0,           // by M and the number of blocks
  Tile16 = 1,         // forced tile shapes (tests, benchmarks): 16 x 32 with k split over 8 warps,
  Tile64 = 2,         // 64 x 64 (k split over 2 warps),
  Tile128 = 3,        // 128 x 128 (64 x 32 per warp),
  Tile128x256 = 4,    // 128 x 256 (64 x 64 per warp, pipelined; 192 KiB of shared memory: where a
                      // block cannot have that, 128 x 128 on 4 warps instead),
  Tile128x128W4 = 5,  // 128 x 128 on 4 warps (64 x 64 per warp, pipelined, 2 blocks per SM)
  Count = 6           // (not a kernel)
};
const char* dense_kernel_name(DenseKernel k);
// Tests and benchmarks: tile rows per group of the big kernels' block order (0: the default).
// Process-wide.
void dense_force_group_m(int group_m);

// C[M, N] = A[M, K] * B[N, K]^T (+ bias fp32 [N] on the device, or null). ab_type F16 or BF16,
// c_type F32 or ab_type. K % 8 == 0, A and B 16-byte aligned.
void dense_gemm(const void* A, const void* B, Dtype ab_type, int64_t M, int64_t N, int64_t K, void* C,
                Dtype c_type, const float* bias = nullptr, void* stream = nullptr,
                DenseKernel kernel = DenseKernel::Auto);

// Timing helper for benchmarks: median milliseconds per call over `reps` timings (after `warmup`
// calls), each timing `batch` back-to-back calls of fn between two CUDA events on `stream` (the
// stream fn queues its work on; batch > 1 measures throughput in a stream, not the latency of
// one launch).
double time_median_ms(void (*fn)(void*), void* ctx, int warmup, int reps, int batch = 1, void* stream = nullptr);

}  // namespace awq::cuda
