#include <cstdint>
#include <cstring>
#include <vector>

#include "../core/membench.h"
#include "../core/threadpool.h"
#include "test.h"

using namespace awq;

// The bandwidth probe reads every byte: its checksum is the wrapping sum of the buffer's 64-bit
// words over the whole 16-byte units, plus the bytes of the tail, for sizes around its chunking.
TEST(membench_stream_read_reads_every_byte) {
  for (size_t n : {size_t{0}, size_t{15}, size_t{16}, size_t{1000}, (size_t{1} << 18) + 17, 3 * (size_t{1} << 18) + 53,
                   (size_t{5} << 20) + 64}) {
    std::vector<uint8_t> buf(n + 16);
    uint32_t x = 12345;
    for (auto& b : buf) b = static_cast<uint8_t>((x = x * 1103515245u + 12345u) >> 24);
    uint64_t want = 0;
    const size_t len = n / 16 * 16;
    for (size_t i = 0; i < len; i += 8) {
      uint64_t w;
      std::memcpy(&w, buf.data() + i, 8);
      want += w;
    }
    for (size_t i = len; i < n; ++i) want += buf[i];
    CHECK(stream_read(buf.data(), n) == want);
    set_threads(1);
    CHECK(stream_read(buf.data(), n) == want);
    set_threads(0);
  }
}
