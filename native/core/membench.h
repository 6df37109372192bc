// Memory bandwidth probe for benchmarks: the physical floor a bandwidth-bound kernel is
// compared against ("floor" rows of `awq bench gemm`).
#pragma once
#include <cstddef>
#include <cstdint>

namespace awq {

// Reads every byte of p[0, n) once on the shared pool (contiguous 256 KiB chunks, as a
// streaming kernel reads its weights) and returns a checksum so the reads cannot be elided.
uint64_t stream_read(const uint8_t* p, size_t n);

}  // namespace awq
