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

// Runs fn once per ISA this CPU supports (portable, then avx2 and avx512, or neon), restoring
// the cap after.
inline void for_each_isa(const std::function<void(Isa)>& fn) {
  for (Isa isa : usable_isas()) {
    set_isa_cap(isa);
    fn(isa);
  }
  set_isa_cap(Isa::Avx512);
}

}  // namespace awq::test
