#include "threadpool.h"

#if defined(__linux__)
#include <sched.h>
#endif

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "errors.h"

namespace awq {
namespace {

thread_local bool t_inside_region = false;

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#else
  std::this_thread::yield();
#endif
}

// AWQ_POOL_SPIN_US (README "Runtime knobs"): the spin before sleeping; default 200 us.
int64_t spin_microseconds() {
  if (const char* env = std::getenv("AWQ_POOL_SPIN_US")) {
    char* end = nullptr;
    const long long v = std::strtoll(env, &end, 10);
    if (end != env && *end == '\0' && v >= 0) return std::min<long long>(v, 1000000);
  }
  return 200;
}

class Pool {
 public:
  // Not through resize: the region lock is not needed yet, and taking it under pool()'s lock
  // would order the two locks against a nested parallel_for's (region, then pool()).
  explicit Pool(int threads) { start(threads); }
  ~Pool() { stop(); }

  // Read by num_threads() on any thread while a resize may be rebuilding workers_.
  int threads() const { return size_.load(std::memory_order_acquire); }

  // If the system refuses the threads, the pool goes back to its previous size and says so.
  void resize(int threads) {
    std::lock_guard<std::mutex> region(region_mutex_);
    const int before = this->threads();
    stop();
    try {
      start(threads);
    } catch (const std::system_error& e) {
      start(before);
      throw Error(ErrorCode::InvalidArgument, "threads: the system refused to start " + std::to_string(threads) +
                                                  " threads (" + e.what() + "); the pool keeps its " +
                                                  std::to_string(before));
    }
  }

  void run(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t, int)>& fn, int max_threads) {
    if (n <= 0) return;
    const auto participants = [&] { return max_threads > 0 ? std::min(threads(), max_threads) : threads(); };
    if (t_inside_region || participants() == 1 || n <= grain) {
      fn(0, n, 0);
      return;
    }
    std::lock_guard<std::mutex> region(region_mutex_);
    const int t = participants();  // workers with an index from t on wake and take no chunk
    // A few chunks per thread balance uneven work without much scheduling overhead.
    int64_t chunks = std::min<int64_t>(static_cast<int64_t>(t) * 4, (n + grain - 1) / grain);
    chunks = std::max<int64_t>(chunks, 1);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      fn_ = &fn;
      n_ = n;
      chunk_count_ = chunks;
      participants_ = t;
      next_chunk_.store(0);
      pending_.store(threads() - 1);
      error_ = nullptr;
      generation_.fetch_add(1, std::memory_order_release);  // under the lock: a sleeper cannot miss it
    }
    wake_.notify_all();  // no system call when every worker is still spinning
    run_chunks(0);
    spin_until([this] { return pending_.load(std::memory_order_acquire) == 0; });
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [this] { return pending_.load() == 0; });
    fn_ = nullptr;
    if (error_) std::rethrow_exception(error_);
  }

 private:
  void stop() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    for (auto& w : workers_) w.join();
    workers_.clear();
    size_.store(1, std::memory_order_release);
  }

  void run_chunks(int thread_index) {
    t_inside_region = true;
    for (;;) {
      const int64_t c = next_chunk_.fetch_add(1);
      if (c >= chunk_count_) break;
      const int64_t begin = n_ * c / chunk_count_;
      const int64_t end = n_ * (c + 1) / chunk_count_;
      try {
        (*fn_)(begin, end, thread_index);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mutex_);
        if (!error_) error_ = std::current_exception();
        next_chunk_.store(chunk_count_);  // stop handing out work
      }
    }
    t_inside_region = false;
  }

  // Spins up to spin_ for ready() before the caller blocks. A worker woken from a futex starts
  // ~50 us late on the development VM (a parallel_for round trip took 62 us median); decode
  // calls come back to back and last 0.3-3 ms, so both sides first spin briefly.
  template <typename Ready>
  void spin_until(const Ready& ready) const {
    if (spin_.count() == 0) return;
    const auto until = std::chrono::steady_clock::now() + spin_;
    while (!ready()) {
      for (int i = 0; i < 64; ++i) cpu_relax();
      if (std::chrono::steady_clock::now() >= until) return;
    }
  }

  // New workers start at the current generation: one that started at 0 after a resize ran the
  // last (finished) region's loop once more, racing the next region's setup and decrementing
  // its pending count (TSan found it).
  // All or nothing: when a thread cannot be created, the ones already started are stopped.
  void start(int threads) {
    stopping_ = false;
    const uint64_t now = generation_.load();
    try {
      for (int i = 1; i < threads; ++i) workers_.emplace_back([this, i, now] { work(i, now); });
    } catch (...) {
      stop();
      throw;
    }
    size_.store(threads, std::memory_order_release);
  }

  void work(int index, uint64_t seen) {
    for (;;) {
      bool take_chunks;
      spin_until([&] { return generation_.load(std::memory_order_acquire) != seen || stopping_.load(); });
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return stopping_.load() || generation_.load() != seen; });
        if (stopping_) return;
        seen = generation_.load();
        take_chunks = index < participants_;  // else this region wants fewer threads than the pool has
      }
      if (take_chunks) run_chunks(index);
      if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        std::lock_guard<std::mutex> lock(mutex_);  // the caller checks pending_ under it: no lost wake-up
        done_.notify_one();
      }
    }
  }

  std::vector<std::thread> workers_;
  std::mutex region_mutex_;
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  const std::chrono::microseconds spin_{spin_microseconds()};
  std::atomic<bool> stopping_{false};
  std::atomic<uint64_t> generation_{0};
  const std::function<void(int64_t, int64_t, int)>* fn_ = nullptr;
  int64_t n_ = 0, chunk_count_ = 0;
  int participants_ = 0;
  std::atomic<int> size_{1};
  std::atomic<int64_t> next_chunk_{0};
  std::atomic<int> pending_{0};
  std::exception_ptr error_;
};

int default_threads() {
  if (const char* env = std::getenv("AWQ_THREADS")) {
    const int n = std::atoi(env);
    if (n > 0) return std::min(n, kMaxThreads);
  }
  return available_cores();
}

std::mutex g_pool_mutex;
std::unique_ptr<Pool> g_pool;

Pool& pool() {
  std::lock_guard<std::mutex> lock(g_pool_mutex);
  if (!g_pool) g_pool = std::make_unique<Pool>(default_threads());
  return *g_pool;
}

}  // namespace

int available_cores() {
#if defined(__linux__)  // the cores this process may use (taskset, cgroup cpusets), not the machine's
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    const int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
#endif
  const unsigned hc = std::thread::hardware_concurrency();
  return hc > 0 ? static_cast<int>(hc) : 1;
}

int num_threads() { return pool().threads(); }

bool in_parallel_region() { return t_inside_region; }

void set_threads(int n) {
  if (n > kMaxThreads) {
    throw Error(ErrorCode::InvalidArgument,
                "threads: at most " + std::to_string(kMaxThreads) + ", got " + std::to_string(n));
  }
  const int want = n > 0 ? n : default_threads();
  Pool& p = pool();
  if (p.threads() != want) p.resize(want);
}

void parallel_for(int64_t n, int64_t grain,
                  const std::function<void(int64_t, int64_t, int)>& fn, int max_threads) {
  pool().run(n, std::max<int64_t>(grain, 1), fn, max_threads);
}

}  // namespace awq
