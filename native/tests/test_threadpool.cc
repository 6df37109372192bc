#include <atomic>
#include <chrono>
#include <stdexcept>
#include <thread>
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
  // More than the cap is refused before any thread is started; the pool keeps its size.
  CHECK_THROWS(set_threads(kMaxThreads + 1));
  CHECK(num_threads() == before);
}

TEST(threadpool_regions_across_the_spin_window) {
  // Workers spin ~200 us after a region, then sleep: regions that follow at once, just inside,
  // just past and well past that window (the handovers between spinning and sleeping, where a
  // lost wake-up would hang), with a failing region now and then and more threads than cores.
  const int before = num_threads();
  bool ok = true;
  for (int threads : {before, 3}) {
    set_threads(threads);
    const int gaps_us[] = {0, 150, 190, 210, 260, 1000};
    for (int r = 0; r < 600; ++r) {
      const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(gaps_us[r % 6]);
      while (std::chrono::steady_clock::now() < until) {
      }
      std::atomic<int64_t> sum{0};
      if (r % 50 == 7) {
        bool threw = false;
        try {
          parallel_for(64, 1, [&](int64_t b, int64_t, int) {
            if (b == 0) throw std::runtime_error("boom");
          });
        } catch (const std::runtime_error&) {
          threw = true;
        }
        ok &= threw;
        continue;
      }
      parallel_for(1000, 1, [&](int64_t b, int64_t e, int) { sum += e - b; });
      ok &= sum.load() == 1000;
    }
  }
  set_threads(before);
  CHECK(ok);
}

TEST(threadpool_max_threads_bounds_indices_across_a_resize) {
  // A kernel sizes per-thread buffers by num_threads() and passes that count to parallel_for;
  // another thread resizes the pool in between (the addon's setThreads while a call runs). No
  // index may reach past the buffers, and every item still runs once.
  const int before = num_threads();
  std::atomic<bool> stop{false};
  std::thread resizer([&] {
    for (int i = 0; !stop.load(); ++i) set_threads(1 + i % 6);
  });
  bool ok = true;
  for (int r = 0; r < 2000; ++r) {
    const int threads = num_threads();
    std::vector<int64_t> per_thread(static_cast<size_t>(threads), 0);
    std::this_thread::sleep_for(std::chrono::microseconds(20));  // the kernel's setup: a resize may land here
    std::atomic<bool> in_bounds{true};
    parallel_for(997, 1, [&](int64_t b, int64_t e, int t) {
      if (t >= threads) {
        in_bounds = false;
        return;
      }
      per_thread[static_cast<size_t>(t)] += e - b;  // chunks of one thread run in turn
    }, threads);
    int64_t sum = 0;
    for (int64_t v : per_thread) sum += v;
    ok &= in_bounds.load() && sum == 997;
  }
  stop = true;
  resizer.join();
  set_threads(before);
  CHECK(ok);
}
