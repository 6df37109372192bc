#include <atomic>
#include <stdexcept>
#include <vector>

#include "../core/threadpool.h"
#include "test.h"

using namespace awq;

TEST(threadpool_covers_range_once) {
  for (int64_t n : {1, 7, 1000, 100003}) {
    std::vector<std::atomic<int>> hits(n);
    parallel_for(n, 1, [&](int64_t b, int64_t e, int) {
      for (int64_t i = b; i < e; ++i) hits[i]++;
    });
    bool ok = true;
    for (auto& h : hits) ok &= h.load() == 1;
    CHECK(ok);
  }
}

TEST(threadpool_propagates_exceptions_and_recovers) {
  CHECK_THROWS(parallel_for(100, 1, [](int64_t b, int64_t, int) {
    if (b == 0) throw std::runtime_error("boom");
  }));
  std::atomic<int64_t> sum{0};
  parallel_for(100, 1, [&](int64_t b, int64_t e, int) { sum += e - b; });
  CHECK(sum.load() == 100);
}

TEST(threadpool_nested_runs_inline) {
  std::atomic<int64_t> sum{0};
  parallel_for(8, 1, [&](int64_t b, int64_t e, int) {
    for (int64_t i = b; i < e; ++i)
      parallel_for(10, 1, [&](int64_t b2, int64_t e2, int) { sum += e2 - b2; });
  });
  CHECK(sum.load() == 80);
}

TEST(threadpool_resize) {
  const int before = num_threads();
  set_threads(3);
  CHECK(num_threads() == 3);
  set_threads(before);
  CHECK(num_threads() == before);
}
