#include "membench.h"

#include <algorithm>
#include <atomic>
#include <cstring>

#include "cpu_features.h"
#if AWQ_X86
#include <emmintrin.h>
#endif

#include "threadpool.h"

namespace awq {

uint64_t stream_read(const uint8_t* p, size_t n) {
  // 256 KiB per work item, the last one shorter: every byte is read by a vector loop on the pool
  // (a scalar tail of up to a chunk once made the probe ~10% slow for 20 MB buffers).
  constexpr int64_t kChunk = 1 << 18;
  const int64_t len = static_cast<int64_t>(n / 16 * 16);
  const int64_t chunks = (len + kChunk - 1) / kChunk;
  std::atomic<uint64_t> total{0};
  parallel_for(chunks, 4, [&](int64_t c0, int64_t c1, int) {
#if AWQ_X86
    // One 16-byte load and one add per 16 bytes (SSE2, every x86-64 CPU): the cheapest full read.
    __m128i acc[4] = {_mm_setzero_si128(), _mm_setzero_si128(), _mm_setzero_si128(), _mm_setzero_si128()};
    const uint8_t* q = p + c0 * kChunk;
    const uint8_t* end = p + std::min(len, c1 * kChunk);
    for (; q + 64 <= end; q += 64) {
      for (int i = 0; i < 4; ++i)
        acc[i] = _mm_add_epi64(acc[i], _mm_loadu_si128(reinterpret_cast<const __m128i*>(q + 16 * i)));
    }
    for (; q < end; q += 16) acc[0] = _mm_add_epi64(acc[0], _mm_loadu_si128(reinterpret_cast<const __m128i*>(q)));
    alignas(16) uint64_t lanes[2];
    _mm_store_si128(reinterpret_cast<__m128i*>(lanes),
                    _mm_add_epi64(_mm_add_epi64(acc[0], acc[1]), _mm_add_epi64(acc[2], acc[3])));
    total += lanes[0] + lanes[1];
#else
    // Eight 64-bit lanes per 64 bytes, which compilers turn into 16-byte vector loads and adds.
    uint64_t acc[8] = {};
    const uint8_t* q = p + c0 * kChunk;
    const uint8_t* end = p + std::min(len, c1 * kChunk);
    for (; q + 64 <= end; q += 64) {
      uint64_t v[8];
      std::memcpy(v, q, 64);
      for (int i = 0; i < 8; ++i) acc[i] += v[i];
    }
    for (; q < end; q += 16) {
      uint64_t v[2];
      std::memcpy(v, q, 16);
      acc[0] += v[0] + v[1];
    }
    uint64_t sum = 0;
    for (int i = 0; i < 8; ++i) sum += acc[i];
    total += sum;
#endif
  });
  uint64_t s = total.load();
  for (size_t i = static_cast<size_t>(len); i < n; ++i) s += p[i];
  return s;
}

}  // namespace awq
