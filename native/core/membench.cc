#include "membench.h"

#include <emmintrin.h>

#include <atomic>

#include "threadpool.h"

namespace awq {

uint64_t stream_read(const uint8_t* p, size_t n) {
  constexpr int64_t kChunk = 1 << 20;
  const int64_t chunks = static_cast<int64_t>(n / kChunk);
  std::atomic<uint64_t> total{0};
  parallel_for(chunks, 1, [&](int64_t c0, int64_t c1, int) {
    // One 16-byte load and one add per 16 bytes (SSE2, every x86-64 CPU): the cheapest full read.
    __m128i acc[4] = {_mm_setzero_si128(), _mm_setzero_si128(), _mm_setzero_si128(), _mm_setzero_si128()};
    for (const uint8_t *q = p + c0 * kChunk, *end = p + c1 * kChunk; q < end; q += 64) {
      for (int i = 0; i < 4; ++i)
        acc[i] = _mm_add_epi64(acc[i], _mm_loadu_si128(reinterpret_cast<const __m128i*>(q + 16 * i)));
    }
    alignas(16) uint64_t lanes[2];
    _mm_store_si128(reinterpret_cast<__m128i*>(lanes),
                    _mm_add_epi64(_mm_add_epi64(acc[0], acc[1]), _mm_add_epi64(acc[2], acc[3])));
    total += lanes[0] + lanes[1];
  });
  uint64_t s = total.load();
  for (size_t i = static_cast<size_t>(chunks) * kChunk; i < n; ++i) s += p[i];
  return s;
}

}  // namespace awq
