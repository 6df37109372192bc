// The one async pattern every heavy binding uses:
//  - arguments are unwrapped and validated on the JS thread (throws synchronously),
//  - inputs and outputs stay referenced until the Promise settles (zero-copy, no GC under us),
//  - the work runs on a libuv worker thread and touches no JS,
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

// The caller's JS stack frames (without the first line), captured on the JS thread.
std::string capture_stack(Napi::Env env);

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

class AsyncJob : public Napi::AsyncWorker {
 public:
  using Work = std::function<void()>;
  // `kept[i]` is keep[i] again (napi_values do not outlive the call that created them).
  using Result = std::function<Napi::Value(Napi::Env, const std::vector<Napi::Value>& kept)>;

  // `keep` are the JS values (TypedArrays) the work reads or writes; they stay alive until the
  // promise settles. `result` builds the resolution value on the JS thread.
  static Napi::Promise start(Napi::Env env, const char* name, std::vector<Napi::Value> keep,
                             Work work, Result result);

 protected:
  void Execute() override;
  void OnOK() override;
  void OnError(const Napi::Error& e) override;

 private:
  AsyncJob(Napi::Env env, const char* name, Work work, Result result);

  Napi::Promise::Deferred deferred_;
  std::vector<Napi::Reference<Napi::Value>> keep_;
  Work work_;
  Result result_;
  std::string stack_;
  std::string code_ = "ERR_AWQ_INTERNAL";
};

// An AsyncJob result for work that returns nothing: the promise resolves with undefined.
inline Napi::Value resolve_undefined(Napi::Env env, const std::vector<Napi::Value>&) { return env.Undefined(); }

}  // namespace awq::addon
