// The machine's fp32 FMA ceiling, measured: a register-resident loop of independent FMAs (no
// memory traffic) on the widest vector unit the active ISA uses, on every pool thread at once.
// Benchmarks report GEMM throughput as a fraction of this number, measured in the same run.
#pragma once
#include <cstdint>

namespace awq {

// Best-of-`reps` GFLOP/s of the FMA loop run concurrently on num_threads() threads, each rep
// about `seconds_per_rep` long. Portable ISA: a scalar-code loop the compiler vectorizes for
// SSE2 (x86-64; or NEON without fusing, arm64): the ceiling of the portable path, not of the CPU.
double measure_fma_peak_gflops(double seconds_per_rep = 0.05, int reps = 5);

namespace detail {
// Runs `iters` iterations of the FMA loop; returns the flops done (2 per lane per FMA).
double fma_burst_avx2(int64_t iters);
double fma_burst_avx512(int64_t iters);
double fma_burst_neon(int64_t iters);
}  // namespace detail

}  // namespace awq
