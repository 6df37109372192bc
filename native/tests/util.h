// Shared helpers for the C++ tests: deterministic random data and ISA iteration.
#pragma once
#include <cstdint>
#include <functional>
#include <random>
#include <vector>

#include "../core/cpu_features.h"

namespace awq::test {

inline std::vector<float> random_floats(size_t n, uint32_t seed, float lo = -1.f, float hi = 1.f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

// Runs fn once per ISA this CPU supports (portable, avx2, avx512), restoring the cap after.
inline void for_each_isa(const std::function<void(Isa)>& fn) {
  const Isa best = set_isa_cap(Isa::Avx512);
  for (int i = 0; i <= static_cast<int>(best); ++i) {
    set_isa_cap(static_cast<Isa>(i));
    fn(static_cast<Isa>(i));
  }
  set_isa_cap(Isa::Avx512);
}

}  // namespace awq::test
