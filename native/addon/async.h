// The one async pattern every heavy binding uses:
//  - arguments are unwrapped and validated on the JS thread (throws synchronously),
//  - inputs and outputs stay referenced until the Promise settles (zero-copy, no GC under us),
//  - the work runs on one of the addon's own job threads (job_runner.h), not on libuv's pool:
//    a model's forwards must not hold up fs, dns and crypto callbacks of the process,
//  - awq::Error codes become `err.code`, and the JS stack of the caller is attached.
#pragma once
#include <napi.h>

#include <functional>
#include <string>
#include <vector>

#include "../core/errors.h"

namespace awq::addon {

// Creates a JS Error carrying `code`; `stack` (frames of the caller) replaces the native one.
Napi::Error make_error(Napi::Env env, const std::string& code, const std::string& message,
                       const std::string& stack_frames = "");

// The stack frames of a JS Error (its stack without the first line).
std::string stack_frames_of(Napi::Object err);

// Runs a synchronous binding body, turning awq::Error and std::exception into JS exceptions.
template <typename F>
Napi::Value guarded(Napi::Env env, F&& body) {
  try {
    return body();
  } catch (const awq::Error& e) {
    make_error(env, error_code_name(e.code()), e.what()).ThrowAsJavaScriptException();
  } catch (const std::bad_alloc&) {
    make_error(env, "ERR_AWQ_OUT_OF_MEMORY", "out of memory").ThrowAsJavaScriptException();
  } catch (const Napi::Error&) {
    throw;
  } catch (const std::exception& e) {
    make_error(env, "ERR_AWQ_INTERNAL", e.what()).ThrowAsJavaScriptException();
  }
  return env.Undefined();
}

class AsyncJob {
 public:
  using Work = std::function<void()>;
  // `kept[i]` is keep[i] again (napi_values do not outlive the call that created them).
  using Result = std::function<Napi::Value(Napi::Env, const std::vector<Napi::Value>& kept)>;

  // `keep` are the JS values (TypedArrays) the work reads or writes; they stay alive until the
  // promise settles. `result` builds the resolution value on the JS thread.
  static Napi::Promise start(Napi::Env env, const char* name, std::vector<Napi::Value> keep,
                             Work work, Result result);

  // Runs the work on a job thread; exceptions become the rejection.
  void execute();
  // Settles the promise; on the JS thread of the environment that started the job.
  void settle(Napi::Env env);
  // Lets go of a job whose environment is being torn down without calling into it.
  void abandon();

 private:
  AsyncJob(Napi::Env env, Work work, Result result);

  Napi::Promise::Deferred deferred_;
  std::vector<Napi::Reference<Napi::Value>> keep_;
  Work work_;
  Result result_;
  // An Error made when the job started: V8 records the caller's frames then, and formats them
  // only if the job fails (formatting them for every call cost 45 us of a 75 us round trip).
  Napi::ObjectReference origin_;
  bool failed_ = false;
  std::string code_ = "ERR_AWQ_INTERNAL";
  std::string message_;
};

// An AsyncJob result for work that returns nothing: the promise resolves with undefined.
inline Napi::Value resolve_undefined(Napi::Env env, const std::vector<Napi::Value>&) { return env.Undefined(); }

}  // namespace awq::addon
