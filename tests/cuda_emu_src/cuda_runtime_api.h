// Host emulation of the few CUDA runtime and device features used by csrc/kernels/{rasterize,interpolate}.cu,
// so that their kernels run on a CPU in the tests (tests/cuda_emu.py): a compile of the real kernel source
// with g++, each block's threads as std::threads (real concurrency for the atomics, a std::barrier for
// __syncthreads), blocks one after another (so __shared__ variables can be plain statics). Found before the
// toolkit's header because tests/cuda_emu_src comes first on the include path. Not a CUDA implementation:
// just enough for these kernels' index math, work distribution, barriers and atomics to be exercised.
#pragma once

#include <algorithm>
#include <atomic>
#include <barrier>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static

enum cudaError_t { cudaSuccess = 0, cudaErrorInvalidValue = 1 };
typedef struct CUstream_st* cudaStream_t;
enum cudaDeviceAttr { cudaDevAttrMultiProcessorCount = 16 };

struct dim3 {
  unsigned int x = 1, y = 1, z = 1;
};

namespace emu {
inline thread_local dim3 block_idx, thread_idx, grid_dim, block_dim;
inline thread_local std::barrier<>* block_barrier = nullptr;
inline int multiprocessors = 1;  // what cudaDeviceGetAttribute reports: sizes the persistent grids

// kernel<<<grid, block>>>(args) becomes emu::launch(grid, block, [&] { kernel(args); }).
template <class Fn>
void launch(long long grid, long long block, Fn&& fn) {
  for (long long b = 0; b < grid; ++b) {
    std::barrier<> bar(block);
    std::vector<std::thread> threads;
    threads.reserve(size_t(block));
    for (long long t = 0; t < block; ++t) {
      threads.emplace_back([&, b, t] {
        block_idx.x = unsigned(b), thread_idx.x = unsigned(t);
        grid_dim.x = unsigned(grid), block_dim.x = unsigned(block);
        block_barrier = &bar;
        fn();
      });
    }
    for (auto& th : threads) th.join();
  }
}
}  // namespace emu

#define blockIdx (::emu::block_idx)
#define threadIdx (::emu::thread_idx)
#define gridDim (::emu::grid_dim)
#define blockDim (::emu::block_dim)

inline void __syncthreads() { ::emu::block_barrier->arrive_and_wait(); }

inline cudaError_t cudaGetDevice(int* d) {
  *d = 0;
  return cudaSuccess;
}
inline cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr, int) {
  *v = ::emu::multiprocessors;
  return cudaSuccess;
}
template <typename Kernel>
inline cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* blocks, Kernel, int, size_t) {
  *blocks = 2;
  return cudaSuccess;
}
inline cudaError_t cudaMemsetAsync(void* p, int v, size_t n, cudaStream_t) {
  std::memset(p, v, n);
  return cudaSuccess;
}
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
inline const char* cudaGetErrorString(cudaError_t) { return "emulated"; }

inline unsigned int __float_as_uint(float f) {
  unsigned int u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}
inline float __uint_as_float(unsigned int u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}
inline long long __double_as_longlong(double d) {
  long long u;
  std::memcpy(&u, &d, sizeof u);
  return u;
}
inline double __longlong_as_double(long long u) {
  double d;
  std::memcpy(&d, &u, sizeof d);
  return d;
}

template <typename U>
inline U emu_atomic_min(U* p, U v) {
  std::atomic_ref<U> a(*p);
  U old = a.load();
  while (v < old && !a.compare_exchange_weak(old, v)) {
  }
  return old;
}
inline unsigned int atomicMin(unsigned int* p, unsigned int v) { return emu_atomic_min(p, v); }
inline unsigned long long atomicMin(unsigned long long* p, unsigned long long v) { return emu_atomic_min(p, v); }
inline float atomicAdd(float* p, float v) { return std::atomic_ref<float>(*p).fetch_add(v); }
inline double atomicAdd(double* p, double v) { return std::atomic_ref<double>(*p).fetch_add(v); }

using std::max;
using std::min;
using std::signbit;
