#include "job_runner.h"

#include <algorithm>
#include <cstdlib>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "../core/errors.h"
#include "async.h"

namespace awq::addon {
namespace {

// As many jobs run at once as libuv's default pool let run: more would each hold their scratch
// buffers while they wait for the compute pool.
constexpr int kJobThreads = 4;

// One environment's jobs. Created with its first job; the thread-safe function's finalizer, which
// runs when teardown closes it, deletes it.
struct EnvJobs {
  napi_threadsafe_function settle_fn = nullptr;  // never released: teardown closes it
  int unsettled = 0;                             // JS thread only; settle_fn keeps the loop alive while > 0

  std::mutex mu;
  std::condition_variable none_in_flight;
  int in_flight = 0;     // queued or running on a job thread
  bool closing = false;  // teardown has begun: nothing more is started or settled
  int32_t torn_down = 0; // `closing` for the kernels' polls (CancelFlag), written atomically
};

struct QueuedJob {
  EnvJobs* env;
  AsyncJob* job;
};

void finish_on_job_thread(EnvJobs* env, AsyncJob* job);

// The environment of the job this thread runs (null outside a job).
thread_local EnvJobs* current_env = nullptr;
// Set by the exit handler: every running job's cancellation (the main thread's exit runs no
// environment teardown, so its jobs' own flags are never set).
int32_t g_exiting = 0;

class JobThreads {
 public:
  // Never destroyed (its threads are detached). Process exit on the main thread runs no cleanup
  // hook, so an exit handler, registered after the compute pool's destructor and so run before it,
  // drops the queued jobs, makes the running ones stop at their next cancellation poll, and waits
  // for them, as libuv's shutdown waited for its pool's work: a job still inside the pool when it
  // is destroyed never returned, and exit hung. Statics a job uses must be registered before the
  // handler (namespace scope) or never destroyed: a function-local static made during a job would
  // be destroyed before the wait.
  static JobThreads& get() {
    static JobThreads* threads = [] {
      auto* t = new JobThreads();
      std::atexit([] { get().finish_at_exit(); });
      return t;
    }();
    return *threads;
  }

  void post(EnvJobs* env, AsyncJob* job) {
    std::lock_guard<std::mutex> lock(mu_);
    if (exiting_) throw Error(ErrorCode::Aborted, "the process is exiting");
    queue_.push_back({env, job});
    if (static_cast<int>(queue_.size()) > idle_ && threads_ < kJobThreads) {
      try {
        std::thread(&JobThreads::loop, this).detach();
        threads_++;
      } catch (const std::system_error& e) {
        // The threads there are will get to it; with none, the job could never run.
        if (threads_ == 0) {
          queue_.pop_back();
          throw Error(ErrorCode::Internal, std::string("cannot start a native job thread: ") + e.what());
        }
      }
    }
    wake_.notify_one();
  }

  void finish_at_exit() {
    std::unique_lock<std::mutex> lock(mu_);
    queue_.clear();  // nothing can settle them any more; their memory goes with the process
    exiting_ = true;
    __atomic_store_n(&g_exiting, 1, __ATOMIC_RELAXED);
    const int self = current_env != nullptr ? 1 : 0;  // exit() called from inside a job
    none_running_.wait(lock, [&] { return running_ == self; });
  }

  // Takes `env`'s jobs that have not started out of the queue.
  std::vector<AsyncJob*> drop(EnvJobs* env) {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<AsyncJob*> dropped;
    auto keep = std::remove_if(queue_.begin(), queue_.end(), [&](const QueuedJob& q) {
      if (q.env != env) return false;
      dropped.push_back(q.job);
      return true;
    });
    queue_.erase(keep, queue_.end());
    return dropped;
  }

 private:
  void loop() {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      idle_++;
      wake_.wait(lock, [&] { return !queue_.empty() && !exiting_; });
      idle_--;
      QueuedJob next = queue_.front();
      queue_.pop_front();
      running_++;
      lock.unlock();
      finish_on_job_thread(next.env, next.job);
      lock.lock();
      if (--running_ <= 1 && exiting_) none_running_.notify_all();
    }
  }

  std::mutex mu_;
  std::condition_variable wake_;
  std::deque<QueuedJob> queue_;
  int threads_ = 0;
  int idle_ = 0;
  int running_ = 0;
  bool exiting_ = false;
  std::condition_variable none_running_;
};

void finish_on_job_thread(EnvJobs* env, AsyncJob* job) {
  bool closing;
  {
    std::lock_guard<std::mutex> lock(env->mu);
    closing = env->closing;
  }
  if (!closing) {
    current_env = env;
    job->execute();
    current_env = nullptr;
  }
  std::lock_guard<std::mutex> lock(env->mu);
  // settle_fn is open while `closing` is false: teardown closes it only after wait_for_jobs.
  if (env->closing || napi_call_threadsafe_function(env->settle_fn, job, napi_tsfn_nonblocking) != napi_ok) {
    job->abandon();
    delete job;
  }
  if (--env->in_flight == 0) env->none_in_flight.notify_all();
}

// settle_fn's callback, on the JS thread; env is null when teardown empties its queue.
void settle_on_js_thread(napi_env env, napi_value, void* context, void* data) {
  auto* job = static_cast<AsyncJob*>(data);
  if (env == nullptr) {
    job->abandon();
    delete job;
    return;
  }
  job->settle(Napi::Env(env));
  delete job;
  auto* jobs = static_cast<EnvJobs*>(context);
  if (--jobs->unsettled == 0) napi_unref_threadsafe_function(env, jobs->settle_fn);
}

// A cleanup hook of the environment: drops its jobs not started and waits for those running,
// whose arrays the environment is about to free.
void wait_for_jobs(void* arg) {
  auto* env = static_cast<EnvJobs*>(arg);
  std::vector<AsyncJob*> dropped = JobThreads::get().drop(env);
  std::unique_lock<std::mutex> lock(env->mu);
  env->closing = true;
  __atomic_store_n(&env->torn_down, 1, __ATOMIC_RELAXED);
  env->in_flight -= static_cast<int>(dropped.size());
  for (AsyncJob* job : dropped) {
    job->abandon();
    delete job;
  }
  env->none_in_flight.wait(lock, [&] { return env->in_flight == 0; });
}

// settle_fn's finalizer, when teardown closes it (after wait_for_jobs).
void forget_jobs(napi_env env, void* data, void*) {
  napi_set_instance_data(env, nullptr, nullptr, nullptr);
  delete static_cast<EnvJobs*>(data);
}

void check(napi_status status, const char* what) {
  if (status != napi_ok) throw Error(ErrorCode::Internal, std::string("cannot set up native jobs: ") + what + " failed");
}

EnvJobs* jobs_of(Napi::Env env) {
  void* data = nullptr;
  check(napi_get_instance_data(env, &data), "napi_get_instance_data");
  if (data != nullptr) return static_cast<EnvJobs*>(data);
  auto* jobs = new EnvJobs();
  napi_value name = Napi::String::New(env, "awq native job");
  napi_status created = napi_create_threadsafe_function(
      env, nullptr, nullptr, name, 0, 1, jobs, forget_jobs, jobs, settle_on_js_thread, &jobs->settle_fn);
  if (created != napi_ok) {
    delete jobs;
    check(created, "napi_create_threadsafe_function");
  }
  check(napi_unref_threadsafe_function(env, jobs->settle_fn), "napi_unref_threadsafe_function");
  check(napi_set_instance_data(env, jobs, nullptr, nullptr), "napi_set_instance_data");
  return jobs;
}

// Cleanup hooks run last-added first, and wait_for_jobs must run before the hook of any
// thread-safe function a job uses (settle_fn, a call's progress callback), which deletes it: so it
// is added again after each of them, at every job's start.
void wait_for_jobs_first(Napi::Env env, EnvJobs* jobs) {
  napi_remove_env_cleanup_hook(env, wait_for_jobs, jobs);  // not there the first time: a no-op (adding twice aborts)
  check(napi_add_env_cleanup_hook(env, wait_for_jobs, jobs), "napi_add_env_cleanup_hook");
}

}  // namespace

bool job_env_closing() {
  if (__atomic_load_n(&g_exiting, __ATOMIC_RELAXED) != 0) return true;
  if (current_env == nullptr) return false;
  std::lock_guard<std::mutex> lock(current_env->mu);
  return current_env->closing;
}

CancelFlag job_cancel_flag(const int32_t* abort_flag) {
  return CancelFlag(abort_flag, current_env ? &current_env->torn_down : nullptr, &g_exiting);
}

void run_job(Napi::Env env, const char* name, AsyncJob* job) {
  EnvJobs* jobs = jobs_of(env);
  wait_for_jobs_first(env, jobs);
  {
    std::lock_guard<std::mutex> lock(jobs->mu);
    jobs->in_flight++;
  }
  try {
    JobThreads::get().post(jobs, job);
  } catch (...) {
    {
      std::lock_guard<std::mutex> lock(jobs->mu);
      jobs->in_flight--;
    }
    try {
      throw;
    } catch (const Error& e) {
      throw Error(e.code(), std::string(name) + ": " + e.what());
    }
  }
  if (jobs->unsettled++ == 0) napi_ref_threadsafe_function(env, jobs->settle_fn);
}

}  // namespace awq::addon
