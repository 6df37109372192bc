// Runs one CPU kernel `reps` times on fixed random inputs, for counting the instructions a call
// executes on a machine we cannot time: benchmarks/arm64-insns.sh runs it for arm64 under
// qemu-aarch64 with an instruction-counting plugin, at two rep counts, and divides the
// difference by the difference in calls (setup and the first call's one-time work cancel).
//
//   awq_kernel_insns <kernel> <reps>      kernels: see kKernels below
//
// The active ISA and thread count come from AWQ_ISA and AWQ_THREADS as everywhere else.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "../core/cpu_features.h"
#include "../core/gemm.h"
#include "../core/int4_gemm.h"
#include "../core/vecmath.h"
#include "../tests/util.h"  // random_floats

using namespace awq;
using awq::test::random_floats;

namespace {

std::shared_ptr<Int4Weights> random_int4(int64_t in, int64_t out) {
  std::mt19937 rng(7);
  std::vector<uint8_t> q(static_cast<size_t>(in * out)), z(static_cast<size_t>(out * (in / 128)));
  for (auto& v : q) v = static_cast<uint8_t>(rng() & 15);
  for (auto& v : z) v = static_cast<uint8_t>(rng() & 15);
  const std::vector<float> s = random_floats(z.size(), 8, 0.001f, 0.01f);
  return pack_int4_quantized(q.data(), z.data(), s.data(), nullptr, in, out, 128);
}

struct Kernel {
  const char* name;
  const char* unit;  // what `per` counts
  double per;        // units per call (weights, multiply-adds, elements)
  std::function<std::function<void()>()> setup;
};

std::function<void()> int4_call(int64_t in, int64_t out, int64_t m, Int4Mode mode) {
  auto w = random_int4(in, out);
  auto x = std::make_shared<std::vector<float>>(random_floats(static_cast<size_t>(m * in), 9, -1.f, 1.f));
  auto y = std::make_shared<std::vector<float>>(static_cast<size_t>(m * out));
  return [=] { int4_linear(*w, x->data(), m, y->data(), mode); };
}

// C = A B^T, all n x n.
std::function<void()> sgemm_call(int64_t n, Precision p) {
  auto a = std::make_shared<std::vector<float>>(random_floats(static_cast<size_t>(n * n), 1, -1.f, 1.f));
  auto b = std::make_shared<std::vector<float>>(random_floats(static_cast<size_t>(n * n), 2, -1.f, 1.f));
  auto c = std::make_shared<std::vector<float>>(static_cast<size_t>(n * n));
  return [=] { sgemm(Trans::N, Trans::T, n, n, n, 1.f, a->data(), n, b->data(), n, 0.f, c->data(), n, p); };
}

const Kernel kKernels[] = {
    {"int4-exact-m1", "weights", 4096.0 * 4096, [] { return int4_call(4096, 4096, 1, Int4Mode::Exact); }},
    {"int4-int8-m1", "weights", 4096.0 * 4096, [] { return int4_call(4096, 4096, 1, Int4Mode::Int8); }},
    {"int4-exact-m16", "multiply-adds", 16.0 * 2048 * 2048, [] { return int4_call(2048, 2048, 16, Int4Mode::Exact); }},
    {"int4-exact-m128", "multiply-adds", 128.0 * 1024 * 1024, [] { return int4_call(1024, 1024, 128, Int4Mode::Exact); }},
    {"sgemm-256", "multiply-adds", 256.0 * 256 * 256, [] { return sgemm_call(256, Precision::F32); }},
    {"sgemm-256-bf16", "multiply-adds", 256.0 * 256 * 256, [] { return sgemm_call(256, Precision::BF16); }},
    {"softmax-512", "elements", 64.0 * 512,
     [] {
       auto x = std::make_shared<std::vector<float>>(random_floats(64 * 512, 3, -20.f, 5.f));
       return std::function<void()>([=] {
         for (int r = 0; r < 64; ++r) softmax_inplace(x->data() + r * 512, 512);
       });
     }},
};

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s <kernel> <reps>   (kernels:", argv[0]);
    for (const Kernel& k : kKernels) std::fprintf(stderr, " %s", k.name);
    std::fprintf(stderr, ")\n");
    return 2;
  }
  for (const Kernel& k : kKernels) {
    if (std::strcmp(k.name, argv[1]) != 0) continue;
    const std::function<void()> call = k.setup();
    const long reps = std::strtol(argv[2], nullptr, 10);
    for (long r = 0; r < reps; ++r) call();
    std::printf("{\"kernel\": \"%s\", \"isa\": \"%s\", \"features\": \"%s\", \"unit\": \"%s\", \"per\": %.0f}\n", k.name,
                isa_name(active_isa()), cpu_feature_list().c_str(), k.unit, k.per);
    return 0;
  }
  std::fprintf(stderr, "unknown kernel '%s'\n", argv[1]);
  return 2;
}
