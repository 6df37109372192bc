#include "async.h"

#include <memory>

#include "job_runner.h"

namespace awq::addon {

std::string stack_frames_of(Napi::Object err) {
  Napi::Value stack = err.Get("stack");
  if (!stack.IsString()) return "";
  std::string s = stack.As<Napi::String>().Utf8Value();
  const size_t nl = s.find('\n');
  return nl == std::string::npos ? "" : s.substr(nl + 1);
}

Napi::Error make_error(Napi::Env env, const std::string& code, const std::string& message,
                       const std::string& stack_frames) {
  Napi::Error err = Napi::Error::New(env, message);
  err.Set("code", Napi::String::New(env, code));
  if (!stack_frames.empty()) {
    err.Set("stack", Napi::String::New(env, "Error: " + message + "\n" + stack_frames));
  }
  return err;
}

AsyncJob::AsyncJob(Napi::Env env, Work work, Result result)
    : deferred_(Napi::Promise::Deferred::New(env)),
      work_(std::move(work)),
      result_(std::move(result)),
      origin_(Napi::Persistent(Napi::Error::New(env, "").Value())) {}

Napi::Promise AsyncJob::start(Napi::Env env, const char* name, std::vector<Napi::Value> keep,
                              Work work, Result result) {
  std::unique_ptr<AsyncJob> job(new AsyncJob(env, std::move(work), std::move(result)));
  for (auto& v : keep) job->keep_.push_back(Napi::Persistent(v));
  Napi::Promise promise = job->deferred_.Promise();
  run_job(env, name, job.get());  // from here the job runner owns it
  job.release();
  return promise;
}

void AsyncJob::execute() {
  try {
    work_();
    return;
  } catch (const awq::Error& e) {
    code_ = error_code_name(e.code());
    message_ = e.what();
  } catch (const std::bad_alloc&) {
    code_ = "ERR_AWQ_OUT_OF_MEMORY";
    message_ = "out of memory";
  } catch (const std::exception& e) {
    code_ = "ERR_AWQ_INTERNAL";
    message_ = e.what();
  }
  failed_ = true;
}

// A worker thread's environment that is shutting down (worker.terminate(), process.exit() inside
// a worker) refuses to run JS: every N-API call then fails and node-addon-api throws, and an
// exception leaving a thread-safe function's callback terminates the whole process. Nobody can
// wait for the promise then, so the result is dropped.
void AsyncJob::settle(Napi::Env env) {
  try {
    try {
      if (failed_) {
        deferred_.Reject(make_error(env, code_, message_, stack_frames_of(origin_.Value())).Value());
        return;
      }
      std::vector<Napi::Value> kept;
      for (auto& r : keep_) kept.push_back(r.Value());
      deferred_.Resolve(result_(env, kept));
    } catch (const Napi::Error& e) {
      deferred_.Reject(e.Value());
    }
  } catch (...) {
  }
}

// Off the JS thread or during teardown no N-API call is allowed: the references (and the
// unsettled deferred) are left behind, a small leak per job of an environment torn down mid-call.
void AsyncJob::abandon() {
  for (auto& r : keep_) r.SuppressDestruct();
  origin_.SuppressDestruct();
}

}  // namespace awq::addon
