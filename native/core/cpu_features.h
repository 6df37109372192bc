// Which instruction sets this CPU (and OS) supports, detected once at load time. Kernels keep a
// portable version and faster AVX2 / AVX-512 (x86-64) or NEON (arm64) versions in files compiled
// for those targets; dispatch picks by `active_isa()`, so one binary runs on any x86-64 CPU, and
// one on any arm64 CPU (the portable versions alone elsewhere).
#pragma once
#include <string>
#include <vector>

// x86-64 builds carry the AVX2 / AVX-512 kernels, arm64 builds the NEON ones (NEON is part of
// every ARMv8-A core: Graviton, Ampere, Apple silicon); the files holding the other
// architecture's kernels compile to nothing.
#if defined(__x86_64__) || defined(_M_X64)
#define AWQ_X86 1
#else
#define AWQ_X86 0
#endif
#if defined(__aarch64__) || defined(_M_ARM64)
#define AWQ_ARM64 1
#else
#define AWQ_ARM64 0
#endif

namespace awq {

// A machine's usable ISAs are Portable plus one family: Avx2 and Avx512 (x86-64) or Neon (arm64).
enum class Isa { Portable = 0, Avx2 = 1, Avx512 = 2, Neon = 3 };

struct CpuFeatures {
  bool avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false;
  bool avx512vnni = false, avx512bf16 = false, avxvnni = false;
  bool amx_bf16 = false;
  bool neon = false;     // arm64: Advanced SIMD (always there on ARMv8-A)
  bool dotprod = false;  // arm64: SDOT/UDOT (ARMv8.2 DotProd: Neoverse N1 / Graviton2 on, Apple M1 on)
  bool arm_bf16 = false;  // arm64: BFDOT/BFMMLA (FEAT_BF16: Neoverse V1 / Graviton3 on, Apple M2 on)
};

const CpuFeatures& cpu_features();
// Best ISA usable here, capped by the AWQ_ISA environment variable (portable|avx2|avx512|neon),
// which tests use to exercise every path on one machine. A cap is a level (portable 0, avx2 and
// neon 1, avx512 2): the best usable ISA at or below the cap's level runs, so `avx512` (the
// default) leaves NEON on, and `avx2` on arm64 also means NEON.
Isa active_isa();
// Force a cap at run time (tests); returns the ISA now active.
Isa set_isa_cap(Isa cap);
// The ISAs this machine runs, from Portable up (tests run their checks on each).
std::vector<Isa> usable_isas();
const char* isa_name(Isa isa);
// Space-separated list of the detected features, for `awq doctor`.
std::string cpu_feature_list();

}  // namespace awq
