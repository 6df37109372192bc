// Int4 GEMM: packing, validation, the driver (decode / prefill / int8 paths on the shared pool)
// and the portable kernels. AVX2 and AVX-512 kernels live in int4_gemm_avx2.cc / _avx512.cc, NEON ones in _neon.cc.
#include "int4_gemm.h"

#include <algorithm>
#include <limits>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#if defined(__linux__) || defined(__APPLE__)
#include <sys/mman.h>
#endif

#include "cpu_features.h"
#include "dtype.h"
#include "gemm.h"
#include "gemm_kernels.h"
#include "errors.h"
#include "round_even.h"
#include "threadpool.h"

namespace awq {

namespace {

// Asks the kernel to back the 2 MiB-aligned interior of a large buffer with transparent huge
// pages (Linux, THP in "madvise" or "always" mode; a no-op elsewhere), before its pages are first
// touched. The streaming kernels read weights once per call: with 4 KiB pages every 4 KiB is a
// TLB miss and a stop for the hardware prefetcher; huge pages made M = 1 2-10% faster on Zen 3
// (interleaved A/B, 4096 x 11008, 2 threads). The unaligned head and tail keep small pages, so
// nothing is over-allocated. AWQ_HUGEPAGES=0 turns it off.
void advise_huge_pages(void* p, size_t n) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t{1} << 21;
  static const bool enabled = [] {
    const char* env = std::getenv("AWQ_HUGEPAGES");
    return !(env && std::strcmp(env, "0") == 0);
  }();
  if (n < 2 * kHuge) return;
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(p) + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(p) + n) & ~(kHuge - 1);
  if (enabled && end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);  // advice only: failure is fine
#else
  (void)p;
  (void)n;
#endif
}

}  // namespace

// Buffers from this size on are mapped pages of their own: glibc's heap keeps freed blocks below
// its (adaptive, up to 32 MiB) mmap threshold, so a server that dropped a model's layers held on
// to about that much memory for good (40 layers of 4096 x 4096: RSS stayed 640 MiB above where it
// began). An unmapped buffer goes back to the system when it is freed.
constexpr size_t kMapBytes = size_t{1} << 20;

AlignedBytes::AlignedBytes(size_t n) : size_(n) {
  const size_t padded = n == 0 ? 64 : (n + 63) / 64 * 64;
  void* p = nullptr;
#if defined(__linux__) || defined(__APPLE__)
  if (padded >= kMapBytes) {
    p = mmap(nullptr, padded, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw Error(ErrorCode::OutOfMemory, "int4: could not map " + std::to_string(n) + " bytes");
    advise_huge_pages(p, padded);  // the pages arrive zeroed, untouched until written
    ptr_ = std::unique_ptr<uint8_t[], Free>(static_cast<uint8_t*>(p), Free{padded});
    return;
  }
#endif
  p = std::aligned_alloc(64, padded);
  if (!p) throw Error(ErrorCode::OutOfMemory, "int4: could not allocate " + std::to_string(n) + " bytes");
  std::memset(p, 0, padded);
  ptr_ = std::unique_ptr<uint8_t[], Free>(static_cast<uint8_t*>(p), Free{0});
}

void AlignedBytes::Free::operator()(uint8_t* p) const {
#if defined(__linux__) || defined(__APPLE__)
  if (mapped > 0) {
    munmap(p, mapped);
    return;
  }
#endif
  std::free(p);
}

size_t Int4Weights::bytes() const {
  return q.size() + scales.size() * sizeof(uint16_t) + zeros.size() + bias.size() * sizeof(float);
}

float Int4Weights::scale(int64_t n, int64_t g) const { return fp16_to_f32_scalar(scales[static_cast<size_t>(n * groups + g)]); }

void check_int4_shape(int64_t in, int64_t out, int64_t group) {
  AWQ_CHECK_ARG(in > 0, "int4: in must be positive, got " + std::to_string(in));
  AWQ_CHECK_ARG(out > 0, "int4: out must be positive, got " + std::to_string(out));
  AWQ_CHECK_ARG(group > 0 && group % 16 == 0,
                "int4: group size must be a positive multiple of 16, got " + std::to_string(group));
  AWQ_CHECK_ARG(in % group == 0, "int4: in (" + std::to_string(in) +
                                     ") must be a multiple of the group size (" +
                                     std::to_string(group) + ")");
}

namespace {

std::shared_ptr<Int4Weights> allocate(int64_t in, int64_t out, int64_t group) {
  auto w = std::make_shared<Int4Weights>();
  w->in = in;
  w->out = out;
  w->group = group;
  w->blocks = (in + 127) / 128;
  w->groups = in / group;
  w->q = AlignedBytes(static_cast<size_t>(out * w->blocks * 64));
  w->zero_bytes = (w->groups + 1) / 2;
  w->scales.assign(static_cast<size_t>(out * w->groups + Int4Weights::kMetaPad), 0);
  w->zeros.assign(static_cast<size_t>(out * w->zero_bytes + Int4Weights::kMetaPad), 0);
  return w;
}

// Sets the zero point of row n, group g (the buffer starts zeroed, so OR is enough).
inline void put_zero(Int4Weights& w, int64_t n, int64_t g, unsigned z) {
  uint8_t& byte = w.zeros[static_cast<size_t>(n * w.zero_bytes + (g >> 1))];
  byte = static_cast<uint8_t>(byte | (z << ((g & 1) * 4)));
}

// Sets q[n, k] in the packed layout (the buffer starts zeroed, so OR is enough).
inline void put(Int4Weights& w, int64_t n, int64_t k, unsigned v) {
  const int64_t r = k & 127, i = r >> 4, j = r & 15;
  uint8_t& byte = w.q.data()[n * w.blocks * 64 + (k >> 7) * 64 + 4 * j + (i >> 1)];
  byte = static_cast<uint8_t>(byte | (v << ((i & 1) * 4)));
}

[[noreturn]] void non_finite(const std::string& what, float v) {
  throw Error(ErrorCode::NonFinite, what + " is " + (std::isnan(v) ? "NaN" : "Inf"));
}

// AutoAWQ packs output column 8c + order[i] into nibble i, order = [0,2,4,6,1,3,5,7]; the
// inverse (the nibble of column 8c + v) is:
constexpr int kAwqNibbleOf[8] = {0, 4, 1, 5, 2, 6, 3, 7};

}  // namespace

std::shared_ptr<Int4Weights> pack_int4_awq(const int32_t* qweight, const int32_t* qzeros,
                                           const uint16_t* scales_fp16, const uint16_t* bias_fp16,
                                           int64_t in, int64_t out, int64_t group) {
  if (group <= 0) group = in;
  check_int4_shape(in, out, group);
  AWQ_CHECK_ARG(out % 8 == 0, "int4: AWQ packing needs out to be a multiple of 8, got " + std::to_string(out));
  auto w = allocate(in, out, group);
  const int64_t cols = out / 8, G = w->groups;
  // Scales and zeros first (they can fail on NaN), then the weights, 8 output rows per task.
  for (int64_t g = 0; g < G; ++g) {
    for (int64_t n = 0; n < out; ++n) {
      const uint16_t h = scales_fp16[g * out + n];
      const float s = fp16_to_f32_scalar(h);
      if (!std::isfinite(s)) non_finite("scales[" + std::to_string(g) + ", " + std::to_string(n) + "]", s);
      w->scales[n * G + g] = h;
      const uint32_t word = static_cast<uint32_t>(qzeros[g * cols + n / 8]);
      put_zero(*w, n, g, (word >> (4 * kAwqNibbleOf[n % 8])) & 15);
    }
  }
  if (bias_fp16) {
    w->bias.resize(out);
    for (int64_t n = 0; n < out; ++n) {
      const float b = fp16_to_f32_scalar(bias_fp16[n]);
      if (!std::isfinite(b)) non_finite("bias[" + std::to_string(n) + "]", b);
      w->bias[n] = b;
    }
  }
  Int4Weights& ww = *w;
  parallel_for(cols, 4, [&](int64_t c0, int64_t c1, int) {
    for (int64_t c = c0; c < c1; ++c)
      for (int64_t k = 0; k < in; ++k) {
        const uint32_t word = static_cast<uint32_t>(qweight[k * cols + c]);
        for (int v = 0; v < 8; ++v) put(ww, 8 * c + v, k, (word >> (4 * kAwqNibbleOf[v])) & 15);
      }
  });
  return w;
}

std::shared_ptr<Int4Weights> pack_int4_quantized(const uint8_t* q, const uint8_t* zeros,
                                                 const float* scales, const float* bias,
                                                 int64_t in, int64_t out, int64_t group) {
  if (group <= 0) group = in;
  check_int4_shape(in, out, group);
  auto w = allocate(in, out, group);
  const int64_t G = w->groups;
  for (int64_t i = 0; i < out * G; ++i) {
    const auto at = [&] { return "[" + std::to_string(i / G) + ", " + std::to_string(i % G) + "]"; };
    if (!std::isfinite(scales[i])) non_finite("scales" + at(), scales[i]);
    AWQ_CHECK_ARG(zeros[i] <= 15, "int4: zeros" + at() + " = " + std::to_string(zeros[i]) + " is not in 0..15");
    // Held as fp16 (see the header); a value past fp16's range would become Inf.
    const uint16_t h = f32_to_fp16_scalar(scales[i]);
    if ((h & 0x7c00) == 0x7c00)
      throw Error(ErrorCode::NonFinite, "scales" + at() + " = " + std::to_string(scales[i]) +
                                            " is beyond fp16's range (scales are held as fp16, as AWQ checkpoints store them)");
    w->scales[i] = h;
    put_zero(*w, i / G, i % G, zeros[i]);
  }
  if (bias) {
    for (int64_t n = 0; n < out; ++n)
      if (!std::isfinite(bias[n])) non_finite("bias[" + std::to_string(n) + "]", bias[n]);
    w->bias.assign(bias, bias + out);
  }
  for (int64_t i = 0; i < out * in; ++i)
    AWQ_CHECK_ARG(q[i] <= 15, "int4: q[" + std::to_string(i / in) + ", " + std::to_string(i % in) +
                                  "] = " + std::to_string(q[i]) + " is not in 0..15");
  Int4Weights& ww = *w;
  parallel_for(out, 16, [&](int64_t n0, int64_t n1, int) {
    for (int64_t n = n0; n < n1; ++n)
      for (int64_t k = 0; k < in; ++k) put(ww, n, k, q[n * in + k]);
  });
  return w;
}

void int4_dequantize(const Int4Weights& w, float* dst) {
  const detail::Int4Kernels& kern = detail::int4_kernels();
  parallel_for(w.out, 8, [&](int64_t n0, int64_t n1, int) {
    kern.dequant_rows(w, n0, n1 - n0, 0, w.in, dst + n0 * w.in, w.in);
  });
}

namespace detail {

void quantize_activations_int8(const float* x, int64_t M, int64_t in, Int8Activations& a) {
  a.M = M;
  a.blocks = (in + 127) / 128;
  a.q = AlignedBytes(static_cast<size_t>(M * a.blocks * 128));
  a.scale.assign(M * a.blocks, 0.f);
  a.sum.assign(M * a.blocks, 0);
  parallel_for(M * a.blocks, 64, [&](int64_t i0, int64_t i1, int) {
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t m = i / a.blocks, b = i % a.blocks;
      const float* xb = x + m * in + b * 128;
      const int64_t len = std::min<int64_t>(128, in - b * 128);
      float amax = 0.f;
      for (int64_t k = 0; k < len; ++k) amax = std::max(amax, std::fabs(xb[k]));
      int8_t* dst = reinterpret_cast<int8_t*>(a.q.data() + i * 128);
      if (amax == 0.f) continue;  // all zero: scale 0, values 0 (buffer starts zeroed)
      const float scale = amax / 127.f, inv = 127.f / amax;
      // |x| below 127 / FLT_MAX (3.7e-37) everywhere in the block: 127 / amax overflows, so those
      // blocks divide in double (0 * inf would be NaN, clamped to -127).
      const bool tiny = !(inv <= std::numeric_limits<float>::max());
      const double inv_tiny = 127.0 / amax;
      int32_t sum = 0;
      for (int64_t k = 0; k < len; ++k) {
        const float r = tiny ? round_even(static_cast<float>(xb[k] * inv_tiny)) : round_even(xb[k] * inv);
        const int v = static_cast<int>(std::min(127.f, std::max(-127.f, r)));
        // k = 32c + 16h + j  ->  half h, byte 4j + c
        const int64_t c = k >> 5, h = (k >> 4) & 1, j = k & 15;
        dst[h * 64 + 4 * j + c] = static_cast<int8_t>(v);
        sum += v;
      }
      a.scale[i] = scale;
      a.sum[i] = sum;
    }
  });
}

namespace {

// ---- portable kernels: straightforward loops, also the reference shape for the SIMD ones ----

void decode_portable(const Int4Weights& w, const float* x, int64_t ldx, int64_t M, float* y,
                     int64_t ldy, int64_t n0, int64_t n1) {
  std::vector<float> wq(w.in);
  for (int64_t n = n0; n < n1; ++n) {
    for (int64_t k = 0; k < w.in; ++k)
      wq[k] = static_cast<float>(int4_at(w, n, k) - w.zero(n, k / w.group));
    for (int64_t m = 0; m < M; ++m) {
      const float* xm = x + m * ldx;
      float total = 0.f;
      for (int64_t g = 0; g < w.groups; ++g) {
        float acc = 0.f;
        for (int64_t k = g * w.group; k < (g + 1) * w.group; ++k) acc += xm[k] * wq[k];
        total += acc * w.scale(n, g);
      }
      y[m * ldy + n] = total;
    }
  }
}

void dequant_panel_portable(const Int4Weights& w, int64_t n0, int64_t nr, int64_t k0, int64_t kc,
                            float* dst, int64_t ld) {
  for (int64_t r = 0; r < nr; ++r) {
    const int64_t n = n0 + r;
    for (int64_t k = k0; k < k0 + kc; ++k) {
      const int64_t g = k / w.group;
      dst[r * ld + (k - k0)] = static_cast<float>(int4_at(w, n, k) - w.zero(n, g)) * w.scale(n, g);
    }
  }
}

void decode_int8_portable(const Int4Weights& w, const Int8Activations& a, float* y, int64_t ldy,
                          int64_t n0, int64_t n1) {
  const int64_t blocks_per_group = w.group / 128;
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t* row = w.row(n);
    for (int64_t m = 0; m < a.M; ++m) {
      float total = 0.f;
      for (int64_t b = 0; b < w.blocks; ++b) {
        const uint8_t* wb = row + b * 64;
        const int8_t* xb = reinterpret_cast<const int8_t*>(a.q.data() + (m * a.blocks + b) * 128);
        int32_t dot = 0;
        for (int t = 0; t < 64; ++t) dot += (wb[t] & 15) * xb[t] + (wb[t] >> 4) * xb[64 + t];
        const int64_t g = b / blocks_per_group;
        dot -= w.zero(n, g) * a.sum[m * a.blocks + b];
        total += static_cast<float>(dot) * (w.scale(n, g) * a.scale[m * a.blocks + b]);
      }
      y[m * ldy + n] = total;
    }
  }
}

}  // namespace

const Int4Kernels kInt4Portable = {decode_portable, dequant_panel_portable, decode_int8_portable, nullptr, 0, 0,
                                   nullptr,         nullptr,                nullptr};

const Int4Kernels& int4_kernels() {
  switch (active_isa()) {
#if AWQ_X86
    case Isa::Avx512: return kInt4Avx512;
    case Isa::Avx2: return kInt4Avx2;
#endif
#if AWQ_ARM64
    case Isa::Neon: return int4_kernels_neon();
#endif
    default: return kInt4Portable;
  }
}

}  // namespace detail

namespace {

// Rows of x up to kDecodeMaxM take the streaming (decode) path, which unpacks the weights in
// registers once per 4 rows of x; above it, the prefill paths dequantize each weight once and
// reuse it for every row: straight into the sgemm's packed panels (prefill_packed), or, below
// kPackedPrefillMinM rows where the ISA has no fused panel dequantization, through a dequantized
// fp32 panel and an sgemm call. Crossovers measured on Zen 3 (AVX2), 2 threads: the fused packed
// path is 1.02-1.11x the speed of decode at M = 16 on the three benchmark shapes (medians of 41
// alternating calls in one process), behind at M = 12-15, and 20-30% ahead from M = 24; the
// unfused packed path needed M = 64, so without the fused panels decode keeps M = 16. Where the
// panels are fused, Int4Kernels::decode_max_m_fused says up to where decode stays (AVX2 15,
// AVX-512 16: its 14-row micro-tiles make M = 16 cost as much as 28 rows).
constexpr int64_t kDecodeMaxM = 16;
constexpr int64_t kPackedPrefillMinM = 64;
// Int8 mode: rows of x from which Int4Kernels::prefill_int8 (where an ISA has one) replaces
// decode_int8. Zen 4, 2 threads: 0.78-1.0x decode_int8's time at M = 8, 0.67-0.75x at 16-32
// (its panels are repacked on every call, which fewer rows do not repay).
constexpr int64_t kInt8PrefillMinM = 8;

// Runs fn(i, thread index) for i in [0, n) with the items handed out one at a time from a shared counter:
// on a machine shared with other processes, a descheduled thread then delays one small item,
// not a quarter of the work (parallel_for's static chunks).
// `threads`: the count the caller sized its per-thread scratch by (thread indices stay below it).
template <typename Fn>
void for_each_item(int64_t n, int threads, const Fn& fn) {
  std::atomic<int64_t> next{0};
  parallel_for(std::min<int64_t>(threads, n), 1, [&](int64_t, int64_t, int thread) {
    for (int64_t i = next.fetch_add(1); i < n; i = next.fetch_add(1)) fn(i, thread);
  }, threads);
}

// Output rows per work item of the streaming paths (64 rows of in = 4096 is 128 KiB of weights).
constexpr int64_t kDecodeRows = 64;

// Largest |x| the kernels take: they sum x * (q - z) over a group in fp32 and scale the sum
// afterwards, so 15 * group * |x| must stay below fp32's 2^128; past 2^100 (1.3e30) a finite
// product could come back Inf or NaN (an M = 1 decode gave Inf where the answer was 1.5e36).
constexpr float kMaxInput = 0x1p100f;

void check_input(const float* x, int64_t M, int64_t in) {
  // One pass over x is small next to the product (in * out work per row).
  int64_t bad = -1;
  for (int64_t i = 0; i < M * in; ++i) {
    if (!(std::fabs(x[i]) <= kMaxInput)) {  // NaN fails the comparison too
      bad = i;
      break;
    }
  }
  if (bad < 0) return;
  const std::string where = "x: value at row " + std::to_string(bad / in) + ", column " + std::to_string(bad % in);
  if (!std::isfinite(x[bad])) throw Error(ErrorCode::NonFinite, where + " is " + (std::isnan(x[bad]) ? "NaN" : "Inf"));
  char value[32];
  std::snprintf(value, sizeof value, "%g", static_cast<double>(x[bad]));
  throw Error(ErrorCode::InvalidArgument, where + " is " + value +
                                              ": beyond the int4 kernels' input range, |x| <= 2^100 (about 1.3e30; "
                                              "their fp32 group sums would overflow)");
}

// Exact prefill for moderate M (and the portable path): dequantize 128 output rows at a time to
// fp32 and multiply them with the project's sgemm (single-threaded inside this parallel region).
void prefill_dequant_sgemm(const detail::Int4Kernels& kern, const Int4Weights& w, const float* x, int64_t M,
                           float* y) {
  constexpr int64_t kRows = 128;
  const int64_t N = w.out, K = w.in;
  const int threads = num_threads();
  std::vector<std::vector<float>> scratch(threads);
  for_each_item((N + kRows - 1) / kRows, threads, [&](int64_t p, int thread) {
    std::vector<float>& panel = scratch[thread];
    const int64_t n0 = p * kRows, nr = std::min(kRows, N - n0);
    panel.resize(static_cast<size_t>(kRows * K));
    kern.dequant_rows(w, n0, nr, 0, K, panel.data(), K);
    sgemm(Trans::N, Trans::T, M, nr, K, 1.f, x, K, panel.data(), K, 0.f, y + n0, N);
  });
}

// Whether this ISA dequantizes straight into the sgemm's B micro-panels (no staging block):
// prefill_packed then skips the transposing pack, and it takes over from decode_max_m_fused + 1 rows.
bool fused_panels(const detail::Int4Kernels& kern, const detail::GemmKernel& gk) {
  return kern.dequant_panel != nullptr && gk.nr == kern.panel_lanes;
}

// Scratch that the prefill keeps between calls on each thread (the caller's packed x, each
// thread's panels and output block), up to kKeptScratchBytes a buffer: allocating and clearing it
// anew every call made M = 256-512 on 4096 x 4096 5-7% slower (Zen 4, same-process A/B; level on
// the larger shapes). A larger need gets a buffer for the call only, so that one long prompt does
// not pin its scratch for the life of the process.
constexpr size_t kKeptScratchBytes = size_t{32} << 20;
thread_local AlignedBytes tl_packed_x, tl_panels, tl_stage, tl_c;

uint8_t* scratch_bytes(AlignedBytes& kept, AlignedBytes& once, size_t n) {
  if (n > kKeptScratchBytes) {
    once = AlignedBytes(n);
    return once.data();
  }
  if (kept.size() < n) kept = AlignedBytes(n);
  return kept.data();
}

// Exact prefill for large M on the sgemm micro-kernel (GotoBLAS blocking with the weights as the B operand):
// x is packed once into mr-row micro-panels per kc-deep block, shared by all threads; each work
// item (a block of output rows) dequantizes its weights kc at a time into B micro-panels (in L2;
// straight, or through a staging block and the sgemm's packer where fused_panels is false), and runs the micro-kernel
// for every x panel against them, into a padded output block copied to y at the end. Each
// weight is dequantized once, and x is packed once rather than once per weight panel (as a
// plain sgemm call per dequantized panel would).
void prefill_packed(const detail::GemmKernel& gk, const detail::Int4Kernels& kern, const Int4Weights& w,
                   const float* x, int64_t M, float* y) {
  const int64_t K = w.in, N = w.out, mr = gk.mr, nr = gk.nr;
  // dequant_rows takes k0 at multiples of 128 (and K is a multiple of 16, so every block is).
  const int64_t kc = std::min(std::max<int64_t>(128, gk.kc / 128 * 128), (K + 15) / 16 * 16);
  const int64_t k_blocks = (K + kc - 1) / kc, m_panels = (M + mr - 1) / mr, Mp = m_panels * mr;
  const int64_t mc_panels = std::max<int64_t>(1, gk.mc / mr);
  // Packed x: block b (k from pc = b * kc, depth kb) starts at pc * Mp; its panel i at i * mr * kb.
  AlignedBytes packed_x_once;
  float* px = reinterpret_cast<float*>(
      scratch_bytes(tl_packed_x, packed_x_once, static_cast<size_t>(Mp * K) * sizeof(float)));
  parallel_for(k_blocks * m_panels, 4, [&](int64_t t0, int64_t t1, int) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / m_panels, i = t % m_panels, pc = b * kc, kb = std::min(kc, K - pc);
      gk.pack_a(x + i * mr * K + pc, K, false, static_cast<int>(std::min(mr, M - i * mr)), kb,
                px + pc * Mp + i * mr * kb);
    }
  });
  // Output rows per item: up to 8 B micro-panels (128 KiB of packed weights at kc = 256 on AVX2),
  // fewer when N is small so that every thread gets work.
  const int threads = num_threads();
  const int64_t per_thread = (N + 2 * threads - 1) / (2 * threads);
  const int64_t rows = std::min(8 * nr, std::max(nr, (per_thread + nr - 1) / nr * nr));
  // Each item accumulates its C block (all M rows x its output rows) in a thread-local buffer
  // whose row stride is padded off multiples of 4 KiB: written straight into y with ldc = out =
  // 4096, the six rows of a micro-tile share one L1 set and evict the B panel's lines.
  // (5-10% faster at M = 128-512 with out = 4096 on Zen 3, same-run A/B against ort-acc0.)
  const int64_t ldcb = rows + 16;
  struct Buffers {
    AlignedBytes panels, stage, c;  // for this call only, where the kept ones would grow too large
    float *pb = nullptr, *stage_p = nullptr, *cb = nullptr;
  };
  std::vector<Buffers> scratch(threads);
  const bool fused = fused_panels(kern, gk);
  for_each_item((N + rows - 1) / rows, threads, [&](int64_t item, int thread) {
    Buffers& buf = scratch[thread];
    if (!buf.pb) {
      const size_t panel_bytes = static_cast<size_t>(rows * kc) * sizeof(float);
      buf.pb = reinterpret_cast<float*>(scratch_bytes(tl_panels, buf.panels, panel_bytes));
      if (!fused) buf.stage_p = reinterpret_cast<float*>(scratch_bytes(tl_stage, buf.stage, panel_bytes));
      buf.cb = reinterpret_cast<float*>(scratch_bytes(tl_c, buf.c, static_cast<size_t>(M * ldcb) * sizeof(float)));
    }
    float* cb = buf.cb;
    float* pb = buf.pb;
    float* stage = buf.stage_p;
    const int64_t n_begin = item * rows, n_end = std::min(N, n_begin + rows);
    const int64_t panels = (n_end - n_begin + nr - 1) / nr;
    for (int64_t pc = 0; pc < K; pc += kc) {
      const int64_t kb = std::min(kc, K - pc);
      if (!fused) kern.dequant_rows(w, n_begin, n_end - n_begin, pc, kb, stage, kb);
      // The next kc block of each row is two cache lines a row apart: a pattern the hardware
      // prefetcher does not follow. Fetch it while the micro-kernels run (3x less time in the
      // dequantization on Zen 3).
      if (pc + kc < K)
        for (int64_t n = n_begin; n < n_end; ++n)
          for (int64_t b = (pc + kc) / 128; b < std::min(w.blocks, (pc + 2 * kc) / 128); ++b)
            __builtin_prefetch(w.row(n) + b * 64);
      for (int64_t q = 0; q < panels; ++q) {
        const int lanes = static_cast<int>(std::min(nr, n_end - n_begin - q * nr));
        if (fused) kern.dequant_panel(w, n_begin + q * nr, lanes, pc, kb, pb + q * nr * kb);
        else gk.pack_b(stage + q * nr * kb, kb, false, lanes, kb, pb + q * nr * kb);
      }
      // GotoBLAS order: a B micro-panel stays in L1 while an mc-row block of x panels (L2)
      // streams past it.
      const float beta = pc == 0 ? 0.f : 1.f;
      for (int64_t i0 = 0; i0 < m_panels; i0 += mc_panels) {
        const int64_t i1 = std::min(m_panels, i0 + mc_panels);
        for (int64_t q = 0; q < panels; ++q) {
          const int64_t n0 = n_begin + q * nr;
          const int n = static_cast<int>(std::min(nr, n_end - n0));
          for (int64_t i = i0; i < i1; ++i)
            gk.micro(kb, px + pc * Mp + i * mr * kb, pb + q * nr * kb, cb + i * mr * ldcb + (n0 - n_begin), ldcb,
                     1.f, beta, static_cast<int>(std::min(mr, M - i * mr)), n);
        }
      }
    }
    for (int64_t m = 0; m < M; ++m)
      std::memcpy(y + m * N + n_begin, cb + m * ldcb, static_cast<size_t>(n_end - n_begin) * sizeof(float));
  });
}

void add_bias(const Int4Weights& w, int64_t M, float* y) {
  if (w.bias.empty()) return;
  parallel_for(M, 16, [&](int64_t m0, int64_t m1, int) {
    for (int64_t m = m0; m < m1; ++m)
      for (int64_t n = 0; n < w.out; ++n) y[m * w.out + n] += w.bias[n];
  });
}

}  // namespace

void int4_linear(const Int4Weights& w, const float* x, int64_t M, float* y, Int4Mode mode) {
  AWQ_CHECK_ARG(M >= 0, "int4_linear: M must be >= 0, got " + std::to_string(M));
  if (M == 0) return;
  check_input(x, M, w.in);
  const detail::Int4Kernels& kern = detail::int4_kernels();
  const int64_t N = w.out, K = w.in;
  if (mode == Int4Mode::Int8) {
    AWQ_CHECK_ARG(w.group % 128 == 0, "int4_linear: int8 mode needs a group size that is a multiple of 128, got " +
                                          std::to_string(w.group));
    detail::Int8Activations a;
    detail::quantize_activations_int8(x, M, K, a);
    const auto rows = kern.prefill_int8 && M >= kInt8PrefillMinM ? kern.prefill_int8 : kern.decode_int8;
    for_each_item((N + kDecodeRows - 1) / kDecodeRows, num_threads(), [&](int64_t i, int) {
      rows(w, a, y, N, i * kDecodeRows, std::min(N, (i + 1) * kDecodeRows));
    });
    return add_bias(w, M, y);
  }
  const detail::GemmKernel* gk = detail::active_gemm_kernel();
  const bool fused = gk && fused_panels(kern, *gk);
  if (M <= detail::kPermutedDecodeMaxM && kern.decode_permuted && w.group % 128 == 0) {
    detail::PermutedActivations a;
    kern.permute_x(x, M, K, a);
    for_each_item((N + kDecodeRows - 1) / kDecodeRows, num_threads(), [&](int64_t i, int) {
      kern.decode_permuted(w, a, y, N, i * kDecodeRows, std::min(N, (i + 1) * kDecodeRows));
    });
  } else if (M <= (fused ? kern.decode_max_m_fused : kDecodeMaxM)) {
    for_each_item((N + kDecodeRows - 1) / kDecodeRows, num_threads(), [&](int64_t i, int) {
      kern.decode(w, x, K, M, y, N, i * kDecodeRows, std::min(N, (i + 1) * kDecodeRows));
    });
  } else if (gk && (M >= kPackedPrefillMinM || fused)) {
    prefill_packed(*gk, kern, w, x, M, y);
  } else {
    prefill_dequant_sgemm(kern, w, x, M, y);
  }
  add_bias(w, M, y);
}

}  // namespace awq
