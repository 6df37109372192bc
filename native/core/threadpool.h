// One process-wide pool of worker threads shared by every CPU kernel.
//
// parallel_for splits [0, n) into contiguous chunks, runs them on the pool and on the calling
// thread, and returns when all are done. Calls from different threads are serialized (one
// parallel region at a time), so kernels started by concurrent AsyncWorkers take turns instead
// of oversubscribing the cores. Nested parallel_for from inside a task runs inline. Between
// regions the workers (and a caller waiting for them) spin for AWQ_POOL_SPIN_US microseconds
// (default 200) before sleeping, so that back-to-back regions skip the wake-up.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>

namespace awq {

// Number of threads a parallel region uses (workers + caller). Defaults to the cores this
// process may run on; AWQ_THREADS in the environment overrides the default.
int num_threads();
// Resizes the pool; n <= 0 restores the default.
// The most threads set_threads accepts (more is a typed error, never an attempt).
constexpr int kMaxThreads = 1024;
void set_threads(int n);
// Cores available to this process (affinity mask aware).
int available_cores();

// True on a thread that is running a parallel_for task (a nested parallel_for would run inline),
// so a kernel can size its blocking for one thread instead of num_threads().
bool in_parallel_region();

// fn(begin, end, thread_index) over chunks of at least `grain` items, thread_index below
// max_threads when it is positive. A kernel that sizes per-thread buffers by num_threads() passes
// that same count as max_threads: set_threads on another thread (the addon's setThreads while an
// asynchronous call runs) may grow the pool between the two calls, and an index past the buffers
// would write out of bounds.
void parallel_for(int64_t n, int64_t grain,
                  const std::function<void(int64_t, int64_t, int)>& fn, int max_threads = 0);

}  // namespace awq
