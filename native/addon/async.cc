#include "async.h"

namespace awq::addon {

std::string capture_stack(Napi::Env env) {
  Napi::Object err = Napi::Error::New(env, "").Value();
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

AsyncJob::AsyncJob(Napi::Env env, const char* name, Work work, Result result)
    : Napi::AsyncWorker(env, name),
      deferred_(Napi::Promise::Deferred::New(env)),
      work_(std::move(work)),
      result_(std::move(result)),
      stack_(capture_stack(env)) {}

Napi::Promise AsyncJob::start(Napi::Env env, const char* name, std::vector<Napi::Value> keep,
                              Work work, Result result) {
  auto* job = new AsyncJob(env, name, std::move(work), std::move(result));
  for (auto& v : keep) job->keep_.push_back(Napi::Persistent(v));
  Napi::Promise promise = job->deferred_.Promise();
  job->Queue();  // the worker deletes itself after OnOK / OnError
  return promise;
}

void AsyncJob::Execute() {
  try {
    work_();
  } catch (const awq::Error& e) {
    code_ = error_code_name(e.code());
    SetError(e.what());
  } catch (const std::bad_alloc&) {
    code_ = "ERR_AWQ_OUT_OF_MEMORY";
    SetError("out of memory");
  } catch (const std::exception& e) {
    code_ = "ERR_AWQ_INTERNAL";
    SetError(e.what());
  }
}

// Both settle the promise on the JS thread. A worker thread's environment that is shutting down
// (worker.terminate(), process.exit() inside a worker) refuses to run JS: every N-API call then
// fails and node-addon-api throws, and an exception leaving these callbacks terminates the whole
// process. Nobody can wait for the promise then, so the result is dropped.
void AsyncJob::OnOK() {
  Napi::Env env = Env();
  try {
    try {
      std::vector<Napi::Value> kept;
      for (auto& r : keep_) kept.push_back(r.Value());
      deferred_.Resolve(result_(env, kept));
    } catch (const Napi::Error& e) {
      deferred_.Reject(e.Value());
    }
  } catch (...) {
  }
}

void AsyncJob::OnError(const Napi::Error& e) {
  Napi::Env env = Env();
  try {
    deferred_.Reject(make_error(env, code_, e.Message(), stack_).Value());
  } catch (...) {
  }
}

}  // namespace awq::addon
