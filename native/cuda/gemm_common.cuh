// Device helpers shared by the GEMM kernels: mma.sync m16n8k16, cp.async, the int4 -> fp16
// conversion, and the k-permutation that lets a lane load its fragments with 16-byte loads.
//
// Fragments of mma.m16n8k16 (PTX ISA "Matrix Fragments for mma.m16n8k16 with floating point
// type"), lane = 4 g + t:
//   A (16x16, row-major): reg0 = A[g][2t, 2t+1], reg1 = A[g+8][2t, 2t+1],
//                         reg2 = A[g][2t+8, 2t+9], reg3 = A[g+8][2t+8, 2t+9]
//   B (16x8, k x n):      reg0 = B[2t, 2t+1][g],   reg1 = B[2t+8, 2t+9][g]
//   C (16x8 fp32):        c0, c1 = C[g][2t, 2t+1], c2, c3 = C[g+8][2t, 2t+1]
// A product sums over k, so any bijection of the 16 k slots applied to both A and B gives the
// same result. The kernels use, for a 32-wide k block, "lane t owns k = 8t .. 8t+7": step 0 of
// the block maps slots (2t, 2t+1) -> k 8t, 8t+1 and (2t+8, 2t+9) -> 8t+2, 8t+3; step 1 maps them
// to 8t+4 .. 8t+7. So one 16-byte load of 8 consecutive halves of a row gives the A (or B)
// registers of both steps: {h0h1, h2h3} for step 0 and {h4h5, h6h7} for step 1.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>

#include "cuda_check.h"

namespace awq::cuda::kern {

template <typename T>
struct MmaOp;
template <>
struct MmaOp<__half> {
  static __device__ __forceinline__ void run(float* c, uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                             uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
  }
};
template <>
struct MmaOp<__nv_bfloat16> {
  static __device__ __forceinline__ void run(float* c, uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                             uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
  }
};

// 16-byte global -> shared copy; src_bytes = 0 writes zeros (rows/columns past the matrix).
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, int src_bytes) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(src_bytes));
}
// 16-byte / 4-byte copies to a shared-space address the caller keeps (no conversion per copy, no
// zero fill); the 4-byte one is cp.async.ca (the .cg form only copies 16 bytes).
__device__ __forceinline__ void cp_async16_s(uint32_t smem, const void* gmem) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem), "l"(gmem));
}
__device__ __forceinline__ void cp_async4_s(uint32_t smem, const void* gmem) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(smem), "l"(gmem));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
// The memory clobber keeps the compiler from moving shared-memory reads of the landed data
// above the wait (the skinny kernel's lanes read their own copies without a __syncthreads).
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// Programmatic dependent launch (sm_90+; no-ops on older devices and in launches without the
// attribute, see launch_kernel). launch_dependents lets the next kernel of the stream start its
// blocks once every block of this grid has executed it; wait_primary blocks until the previous
// kernel of the stream has completed and its writes are visible. Everything a kernel reads that
// the previous kernel may write (x) must be read after wait_primary, and through coherent loads:
// the non-coherent path (__ldg) is specified only for data that no grid running at the same time
// writes.
__device__ __forceinline__ void pdl_launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_wait_primary() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}
// 16-byte coherent global load (ld.global: cached in L1, covered by the memory model).
__device__ __forceinline__ uint4 ld_global16(const uint4* p) {
  uint4 v;
  // volatile: kept after pdl_wait_primary (also a volatile asm) whatever the pointer's origin
  asm volatile("ld.global.v4.u32 {%0, %1, %2, %3}, [%4];\n" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
  return v;
}

__device__ __forceinline__ uint32_t h2_bits(__half2 h) { return *reinterpret_cast<uint32_t*>(&h); }
__device__ __forceinline__ __half2 bits_h2(uint32_t u) { return *reinterpret_cast<__half2*>(&u); }

// Zero-point constants of one (group, column): the fp16 conversion below yields 1024 + q and
// 1024 + 16 q; these turn them into q - z exactly (all values are small integers in fp16).
struct Int4Dq {
  __half2 z1024;   // 1024 + z
  __half2 nz64;    // -(64 + z)
  __half2 scale;
};
__device__ __forceinline__ Int4Dq int4_dq(uint32_t sz_word) {
  const __half2 p = bits_h2(sz_word);  // low: scale, high: z
  const __half s = __low2half(p), z = __high2half(p);
  Int4Dq d;
  d.scale = __halves2half2(s, s);
  const __half2 zz = __halves2half2(z, z);
  d.z1024 = __hadd2(zz, __float2half2_rn(1024.f));
  d.nz64 = __hneg2(__hadd2(zz, __float2half2_rn(64.f)));
  return d;
}

// One packed word (8 nibbles, value i at nibble i/2 + 4(i%2)) -> 4 fp16 pairs
// out[p] = ((q[2p] - z) s, (q[2p+1] - z) s). OR-ing a nibble into the mantissa of 1024.0
// (0x6400) gives 1024 + nibble exactly (fp16 has 10 mantissa bits).
// (a & mask) | magic in one LOP3: written as C the compiler emits an AND and an OR (a LOP3 takes
// one immediate), which made the nibble extraction 8 instructions per word instead of 4.
__device__ __forceinline__ uint32_t and_or(uint32_t a, uint32_t mask, uint32_t magic) {
  uint32_t d;
  asm("lop3.b32 %0, %1, %2, %3, 0xea;\n" : "=r"(d) : "r"(a), "r"(mask), "r"(magic));  // 0xea: (a & b) | c
  return d;
}

// The same word -> out[p] = (q[2p] - z, q[2p+1] - z), exact small integers in fp16, without the
// scale: for kernels that apply the scale to a group's fp32 partial sums instead.
__device__ __forceinline__ void int4_unpack8(uint32_t w, const Int4Dq& d, uint32_t out[4]) {
  constexpr uint32_t kMagic = 0x64006400u, kLo = 0x000F000Fu, kHi = 0x00F000F0u;
  const __half2 sixteenth = __float2half2_rn(0.0625f);
  const uint32_t l0 = and_or(w, kLo, kMagic), h0 = and_or(w, kHi, kMagic);  // values 0,1 / 2,3
  w >>= 8;
  const uint32_t l1 = and_or(w, kLo, kMagic), h1 = and_or(w, kHi, kMagic);  // values 4,5 / 6,7
  out[0] = h2_bits(__hsub2(bits_h2(l0), d.z1024));
  out[1] = h2_bits(__hfma2(bits_h2(h0), sixteenth, d.nz64));
  out[2] = h2_bits(__hsub2(bits_h2(l1), d.z1024));
  out[3] = h2_bits(__hfma2(bits_h2(h1), sixteenth, d.nz64));
}

__device__ __forceinline__ void int4_dequant8(uint32_t w, const Int4Dq& d, uint32_t out[4]) {
  int4_unpack8(w, d, out);
#pragma unroll
  for (int p = 0; p < 4; ++p) out[p] = h2_bits(__hmul2(bits_h2(out[p]), d.scale));
}

template <typename OutT>
__device__ __forceinline__ OutT to_out(float v);
template <>
__device__ __forceinline__ float to_out<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __half to_out<__half>(float v) {
  return __float2half_rn(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 to_out<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

// Streaming multiprocessors of the current device (the kernels' choice of tile size uses it).
inline int sm_count() {
  static int count = [] {
    int dev = 0, n = 0;
    AWQ_CUDA_CHECK(cudaGetDevice(&dev));
    AWQ_CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev));
    return n;
  }();
  return count;
}

// Whether the current device takes programmatic dependent launches (compute capability 9.0+).
inline bool pdl_supported() {
  static bool ok = [] {
    int dev = 0, major = 0;
    AWQ_CUDA_CHECK(cudaGetDevice(&dev));
    AWQ_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
    return major >= 9;
  }();
  return ok;
}

// Launches `kernel`, with programmatic stream serialization when `pdl` is set and the device has
// it: the kernel may then start while the previous kernel of the stream finishes, and must call
// pdl_wait_primary before touching what that kernel writes. Should a driver refuse the attribute,
// the kernel is launched without it from then on (the kernel is correct either way). Launch
// errors throw (AWQ_CUDA_CHECK).
inline std::atomic<bool> g_pdl_refused{false};
template <typename... Params, typename... Args>
void launch_kernel(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream, bool pdl,
                   Args... args) {
  bool refused = false;
  if (pdl && pdl_supported() && !g_pdl_refused.load(std::memory_order_relaxed)) {
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = stream;
    cfg.attrs = attr;
    cfg.numAttrs = 1;
    if (cudaLaunchKernelEx(&cfg, kernel, static_cast<Params>(args)...) == cudaSuccess) return;
    cudaGetLastError();  // a refused launch configuration is not a sticky error
    refused = true;
  }
  kernel<<<grid, block, smem, stream>>>(static_cast<Params>(args)...);
  AWQ_CUDA_CHECK(cudaGetLastError());
  if (refused) g_pdl_refused.store(true, std::memory_order_relaxed);  // only the attribute failed
}

}  // namespace awq::cuda::kern
