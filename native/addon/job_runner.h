// Where AsyncJob work runs: the addon's own job threads, not libuv's pool.
//
// libuv's pool (4 threads by default) also serves fs, dns.lookup, zlib and crypto for the whole
// process. Jobs there made a serving process's file reads wait for its prefills (8 queued forwards
// delayed an fs.readFile by 620 ms). The kernels inside a job take turns on the one compute pool
// (threadpool.h) anyway, so the job threads only wait their turn, as libuv's threads did.
//
// Each environment (the main thread, each worker_thread) settles its jobs through one thread-safe
// function. When an environment is torn down (worker.terminate(), a worker's process.exit()), its
// jobs that have not started are dropped, and teardown waits for those running: their arrays are
// the environment's memory. That matches what Node does for its own thread-pool work.
#pragma once
#include <napi.h>

#include <cstdint>

#include "../core/cancel.h"

namespace awq::addon {

class AsyncJob;

// Queues `job` to run on a job thread and be settled on `env`'s JS thread. Called on that JS
// thread. Throws an awq::Error naming the call (`name`) when no job thread can be started.
void run_job(Napi::Env env, const char* name, AsyncJob* job);

// On a job thread, inside AsyncJob work: true once the environment that started the job is being
// torn down. Its JS thread then waits for the job and runs nothing, so work that waits for a JS
// callback (a progress report) must stop waiting.
bool job_env_closing();

// On a job thread, inside AsyncJob work: the cancellation a long kernel polls, from the caller's
// abort flag (may be null) and the job's environment being torn down, so that worker.terminate()
// during a layer's quantization waits for the next poll, not for the whole layer.
CancelFlag job_cancel_flag(const int32_t* abort_flag);

}  // namespace awq::addon
