// Which x86-64 instruction sets this CPU (and OS) supports, detected once at load time.
// Kernels keep a portable version and faster AVX2 / AVX-512 versions in files compiled for
// those targets; dispatch picks by `active_isa()`, so one binary runs on any x86-64 CPU (and the
// portable versions alone on other architectures).
#pragma once
#include <string>

// x86-64 builds carry the AVX2 / AVX-512 kernels. Elsewhere (arm64: Graviton, Apple silicon) the
// files holding them compile to nothing, no feature is detected and every kernel runs its portable
// version.
#if defined(__x86_64__) || defined(_M_X64)
#define AWQ_X86 1
#else
#define AWQ_X86 0
#endif

namespace awq {

enum class Isa { Portable = 0, Avx2 = 1, Avx512 = 2 };

struct CpuFeatures {
  bool avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false;
  bool avx512vnni = false, avx512bf16 = false, avxvnni = false;
  bool amx_bf16 = false;
};

const CpuFeatures& cpu_features();
// Best ISA usable here, capped by the AWQ_ISA environment variable (portable|avx2|avx512), which
// tests use to exercise every path on one machine.
Isa active_isa();
// Force a cap at run time (tests); returns the ISA now active.
Isa set_isa_cap(Isa cap);
const char* isa_name(Isa isa);
// Space-separated list of the detected features, for `awq doctor`.
std::string cpu_feature_list();

}  // namespace awq
