// Device memory, copies and event timing for the GEMM host API (cuda_gemm.h).
#include <cuda_runtime.h>

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "../core/errors.h"
#include "cuda_check.h"
#include "cuda_gemm.h"

namespace awq::cuda {

size_t dtype_size(Dtype t) { return t == Dtype::F32 ? 4 : 2; }

DeviceMemory::DeviceMemory(size_t bytes, const char* what) : size_(bytes) {
  if (bytes == 0) return;
  const cudaError_t err = cudaMalloc(&ptr_, bytes);
  if (err != cudaSuccess) {
    cudaGetLastError();
    ptr_ = nullptr;
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    cudaGetLastError();
    const std::string msg = std::string("CUDA: could not allocate ") + std::to_string(bytes) + " bytes for " + what +
                            " (" + std::to_string(free_b) + " of " + std::to_string(total_b) +
                            " bytes free): " + cudaGetErrorString(err);
    throw Error(err == cudaErrorMemoryAllocation ? ErrorCode::OutOfMemory : ErrorCode::Cuda, msg);
  }
}

// A failed free (a lost context) is not reported from a destructor; the error is cleared so that
// the next launch check on this thread does not report it as the launch's.
DeviceMemory::~DeviceMemory() {
  if (ptr_ && cudaFree(ptr_) != cudaSuccess) cudaGetLastError();
}

DeviceMemory::DeviceMemory(DeviceMemory&& o) noexcept : ptr_(o.ptr_), size_(o.size_) {
  o.ptr_ = nullptr;
  o.size_ = 0;
}

DeviceMemory& DeviceMemory::operator=(DeviceMemory&& o) noexcept {
  if (this != &o) {
    if (ptr_ && cudaFree(ptr_) != cudaSuccess) cudaGetLastError();
    ptr_ = std::exchange(o.ptr_, nullptr);
    size_ = std::exchange(o.size_, 0);
  }
  return *this;
}

DeviceStream::DeviceStream() {
  cudaStream_t s = nullptr;
  AWQ_CUDA_CHECK(cudaStreamCreate(&s));
  stream_ = s;
}

// Destroying a stream with work queued is allowed (the work completes first); errors of a lost
// context are cleared as in ~DeviceMemory.
DeviceStream::~DeviceStream() {
  if (stream_ && cudaStreamDestroy(static_cast<cudaStream_t>(stream_)) != cudaSuccess) cudaGetLastError();
}

DeviceStream::DeviceStream(DeviceStream&& o) noexcept : stream_(std::exchange(o.stream_, nullptr)) {}

DeviceStream& DeviceStream::operator=(DeviceStream&& o) noexcept {
  if (this != &o) {
    if (stream_ && cudaStreamDestroy(static_cast<cudaStream_t>(stream_)) != cudaSuccess) cudaGetLastError();
    stream_ = std::exchange(o.stream_, nullptr);
  }
  return *this;
}

void DeviceStream::synchronize() const {
  AWQ_CUDA_CHECK(cudaGetLastError());
  AWQ_CUDA_CHECK(cudaStreamSynchronize(static_cast<cudaStream_t>(stream_)));
}

void copy_to_device(void* dst, const void* src, size_t bytes) {
  if (bytes) AWQ_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
}
void copy_to_host(void* dst, const void* src, size_t bytes) {
  if (bytes) AWQ_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost));
}
void fill_zero(void* dst, size_t bytes, void* stream) {
  if (bytes) AWQ_CUDA_CHECK(cudaMemsetAsync(dst, 0, bytes, static_cast<cudaStream_t>(stream)));
}
void synchronize() {
  AWQ_CUDA_CHECK(cudaGetLastError());
  AWQ_CUDA_CHECK(cudaDeviceSynchronize());
}

double time_median_ms(void (*fn)(void*), void* ctx, int warmup, int reps, int batch, void* stream) {
  const auto st = static_cast<cudaStream_t>(stream);
  AWQ_CHECK_ARG(reps > 0 && warmup >= 0 && batch > 0, "time_median_ms: reps and batch must be positive");
  for (int i = 0; i < warmup; ++i) fn(ctx);
  synchronize();
  cudaEvent_t start, stop;
  AWQ_CUDA_CHECK(cudaEventCreate(&start));
  AWQ_CUDA_CHECK(cudaEventCreate(&stop));
  std::vector<double> ms(reps);
  try {
    for (int i = 0; i < reps; ++i) {
      AWQ_CUDA_CHECK(cudaEventRecord(start, st));
      for (int b = 0; b < batch; ++b) fn(ctx);
      AWQ_CUDA_CHECK(cudaEventRecord(stop, st));
      AWQ_CUDA_CHECK(cudaEventSynchronize(stop));
      float t = 0.f;
      AWQ_CUDA_CHECK(cudaEventElapsedTime(&t, start, stop));
      ms[i] = static_cast<double>(t) / batch;
    }
  } catch (...) {
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    throw;
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  std::nth_element(ms.begin(), ms.begin() + reps / 2, ms.end());
  return ms[reps / 2];
}

}  // namespace awq::cuda
