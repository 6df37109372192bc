#include "cpu_features.h"

#if AWQ_X86
#include <cpuid.h>
#endif
#if AWQ_ARM64 && defined(__linux__)
#include <asm/hwcap.h>
#include <sys/auxv.h>
#endif

#include <atomic>
#include <cstdlib>
#include <cstring>

namespace awq {
namespace {

#if AWQ_X86
uint64_t xgetbv0() {
  uint32_t eax, edx;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<uint64_t>(edx) << 32) | eax;
}

#endif

CpuFeatures detect() {
  CpuFeatures f;
#if AWQ_X86
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  const bool osxsave = c & (1u << 27);
  const bool has_fma = c & (1u << 12);
  const bool has_f16c = c & (1u << 29);
  const bool has_avx = c & (1u << 28);
  if (!osxsave || !has_avx) return f;
  const uint64_t xcr0 = xgetbv0();
  const bool ymm_ok = (xcr0 & 0x6) == 0x6;
  const bool zmm_ok = (xcr0 & 0xe6) == 0xe6;
  const bool amx_ok = (xcr0 & 0x60000) == 0x60000;
  if (!ymm_ok) return f;
  f.fma = has_fma;
  f.f16c = has_f16c;
  if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
    f.avx2 = b & (1u << 5);
    if (zmm_ok) {
      f.avx512f = b & (1u << 16);
      f.avx512dq = b & (1u << 17);
      f.avx512bw = b & (1u << 30);
      f.avx512vl = b & (1u << 31);
      f.avx512vnni = c & (1u << 11);
    }
    f.amx_bf16 = amx_ok && (d & (1u << 22));
  }
  if (__get_cpuid_count(7, 1, &a, &b, &c, &d)) {
    f.avxvnni = a & (1u << 4);
    f.avx512bf16 = zmm_ok && (a & (1u << 5));
  }
#ifdef AWQ_EMULATE_AVX512
  // The emulated test build (native/tests/avx512_emulation.h): its AVX-512 kernels are SIMDe
  // code compiled for AVX2, so they run wherever AVX2 does. AWQ_EMULATE_VNNI=0 / AWQ_EMULATE_BF16=0
  // leave VNNI / BF16 out, for the AVX-512 kernels that machines without them run.
  if (f.avx2 && f.fma && f.f16c) {
    f.avx512f = f.avx512bw = f.avx512vl = f.avx512dq = true;
    auto emulated = [](const char* var) {
      const char* v = std::getenv(var);
      return !(v && !std::strcmp(v, "0"));
    };
    f.avx512vnni = emulated("AWQ_EMULATE_VNNI");
    f.avx512bf16 = emulated("AWQ_EMULATE_BF16");
  }
#endif
#endif  // AWQ_X86
#if AWQ_ARM64
  f.neon = true;
#if defined(__linux__)
  f.dotprod = getauxval(AT_HWCAP) & HWCAP_ASIMDDP;
  f.arm_bf16 = getauxval(AT_HWCAP2) & HWCAP2_BF16;
#elif defined(__APPLE__)
  f.dotprod = true;  // every Apple arm64 core (A11 / M1 on) has it; BF16 only from M2: left off
#endif
#endif  // AWQ_ARM64
  return f;
}

Isa detected_isa(const CpuFeatures& f) {
  if (f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq && f.fma && f.f16c) return Isa::Avx512;
  if (f.avx2 && f.fma && f.f16c) return Isa::Avx2;
  if (f.neon) return Isa::Neon;
  return Isa::Portable;
}

// The cap's level (cpu_features.h): ISAs of one family are ordered by it.
int level(Isa isa) {
  switch (isa) {
    case Isa::Portable: return 0;
    case Isa::Avx2:
    case Isa::Neon: return 1;
    case Isa::Avx512: return 2;
  }
  return 0;
}

Isa env_cap() {
  const char* env = std::getenv("AWQ_ISA");
  if (!env) return Isa::Avx512;
  if (!std::strcmp(env, "portable")) return Isa::Portable;
  if (!std::strcmp(env, "avx2")) return Isa::Avx2;
  if (!std::strcmp(env, "neon")) return Isa::Neon;
  return Isa::Avx512;
}

// The ISA in use, resolved from the cap once per change (-1: not yet, AWQ_ISA is read on first
// use): every kernel call asks for it, so it must cost one atomic load.
std::atomic<int> g_active{-1};

}  // namespace

const CpuFeatures& cpu_features() {
  static const CpuFeatures f = detect();
  return f;
}

std::vector<Isa> usable_isas() {
  const Isa best = detected_isa(cpu_features());
  if (best == Isa::Neon) return {Isa::Portable, Isa::Neon};
  std::vector<Isa> out;
  for (int i = 0; i <= static_cast<int>(best); ++i) out.push_back(static_cast<Isa>(i));
  return out;
}

Isa set_isa_cap(Isa cap) {
  Isa best = Isa::Portable;
  for (Isa isa : usable_isas())
    if (level(isa) <= level(cap)) best = isa;
  g_active.store(static_cast<int>(best));
  return best;
}

Isa active_isa() {
  const int active = g_active.load(std::memory_order_relaxed);
  return active >= 0 ? static_cast<Isa>(active) : set_isa_cap(env_cap());
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Avx512: return "avx512";
    case Isa::Avx2: return "avx2";
    case Isa::Neon: return "neon";
    default: return "portable";
  }
}

std::string cpu_feature_list() {
  const CpuFeatures& f = cpu_features();
  std::string s;
  auto add = [&](bool on, const char* name) {
    if (!on) return;
    if (!s.empty()) s += ' ';
    s += name;
  };
  add(f.avx2, "avx2");
  add(f.fma, "fma");
  add(f.f16c, "f16c");
  add(f.avx512f, "avx512f");
  add(f.avx512bw, "avx512bw");
  add(f.avx512vl, "avx512vl");
  add(f.avx512dq, "avx512dq");
  add(f.avx512vnni, "avx512vnni");
  add(f.avx512bf16, "avx512bf16");
  add(f.avxvnni, "avxvnni");
  add(f.amx_bf16, "amx-bf16");
  add(f.neon, "neon");
  add(f.dotprod, "dotprod");
  add(f.arm_bf16, "bf16");
  return s;
}

}  // namespace awq
