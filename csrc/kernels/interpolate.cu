// CUDA kernels of voxrender.interpolate, on the per-pixel math shared with the CPU op
// (csrc/include/voxrender/interpolate.h). Torch-free: csrc/ops/interpolate_cuda.cpp checks, allocates and
// calls the launchers.
//
// Grid-stride loops over int64 element indices (B * H * W * C can pass 2^31). The forward and grad_bary
// are gathers (one thread per output element, no atomics). grad_attr is a scatter with atomicAdd: three
// per (pixel, channel); neighbouring threads add to the same few vertices' rows, which L2 resolves.
#include "interpolate.cuh"
#include "atomics.cuh"

namespace voxrender {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxBlocksPerSM = 16;

template <typename T, typename I>
__global__ void __launch_bounds__(kThreads) forward_kernel(const InterpolateProblem<T, I> p, T* __restrict__ out) {
  const int64_t n = p.B * p.P * p.C;
  for (int64_t e = int64_t(blockIdx.x) * kThreads + threadIdx.x; e < n; e += int64_t(gridDim.x) * kThreads) {
    const int64_t q = e / p.C, c = e - q * p.C;
    int status = kInterpolateOk;
    InterpolateCorners f;
    out[e] = interpolate_pixel(p, q, &f, &status) ? interpolate_value(p, q, f, c) : T(0);
  }
}

template <typename T, typename I>
__global__ void __launch_bounds__(kThreads)
    grad_bary_kernel(const InterpolateProblem<T, I> p, const T* __restrict__ grad_out, T* __restrict__ grad_bary) {
  const int64_t n = p.B * p.P * 3;
  for (int64_t e = int64_t(blockIdx.x) * kThreads + threadIdx.x; e < n; e += int64_t(gridDim.x) * kThreads) {
    const int64_t q = e / 3;
    const int k = int(e - q * 3);
    int status = kInterpolateOk;
    InterpolateCorners f;
    grad_bary[e] = interpolate_pixel(p, q, &f, &status) ? interpolate_grad_bary(p, grad_out + q * p.C, f, k) : T(0);
  }
}

template <typename T, typename I>
__global__ void __launch_bounds__(kThreads)
    grad_attr_kernel(const InterpolateProblem<T, I> p, const T* __restrict__ grad_out, T* grad_attr) {
  const int64_t n = p.B * p.P * p.C;
  for (int64_t e = int64_t(blockIdx.x) * kThreads + threadIdx.x; e < n; e += int64_t(gridDim.x) * kThreads) {
    const int64_t q = e / p.C, c = e - q * p.C;
    int status = kInterpolateOk;
    InterpolateCorners f;
    if (!interpolate_pixel(p, q, &f, &status)) continue;
    const T g = grad_out[e];
    const T* bq = p.bary + 3 * q;
    for (int k = 0; k < 3; ++k) {
      atomic_add(grad_attr + (f.b * p.V + f.v[k]) * p.C + c, interpolate_grad_attr_term(bq[k], g));
    }
  }
}

int grid_for(int64_t n) {
  int dev = 0, sms = 0;
  if (cudaGetDevice(&dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess || sms <= 0) {
    cudaGetLastError();  // clear the failed query's error; the launch reports any real problem
    sms = 80;
  }
  const int64_t blocks = (n + kThreads - 1) / kThreads, cap = int64_t(sms) * kMaxBlocksPerSM;
  return int(blocks < cap ? blocks : cap);
}

}  // namespace

template <typename T, typename I>
cudaError_t launch_interpolate_forward(const InterpolateProblem<T, I>& p, T* out, cudaStream_t stream) {
  const int64_t n = p.B * p.P * p.C;
  if (n == 0) return cudaSuccess;
  forward_kernel<T, I><<<grid_for(n), kThreads, 0, stream>>>(p, out);
  return cudaGetLastError();
}

template <typename T, typename I>
cudaError_t launch_interpolate_backward(const InterpolateProblem<T, I>& p, const T* grad_out, T* grad_attr,
                                        T* grad_bary, cudaStream_t stream) {
  if (grad_bary && p.B * p.P > 0) {
    grad_bary_kernel<T, I><<<grid_for(p.B * p.P * 3), kThreads, 0, stream>>>(p, grad_out, grad_bary);
    const cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
  }
  const int64_t n = p.B * p.P * p.C;
  if (grad_attr && n > 0) {
    grad_attr_kernel<T, I><<<grid_for(n), kThreads, 0, stream>>>(p, grad_out, grad_attr);
    return cudaGetLastError();
  }
  return cudaSuccess;
}

#define VOXRENDER_INSTANTIATE_INTERPOLATE(T, I)                                                                  \
  template cudaError_t launch_interpolate_forward<T, I>(const InterpolateProblem<T, I>&, T*, cudaStream_t);    \
  template cudaError_t launch_interpolate_backward<T, I>(const InterpolateProblem<T, I>&, const T*, T*, T*,   \
                                                         cudaStream_t);
VOXRENDER_INSTANTIATE_INTERPOLATE(float, int32_t)
VOXRENDER_INSTANTIATE_INTERPOLATE(float, int64_t)
VOXRENDER_INSTANTIATE_INTERPOLATE(double, int32_t)
VOXRENDER_INSTANTIATE_INTERPOLATE(double, int64_t)
#undef VOXRENDER_INSTANTIATE_INTERPOLATE

}  // namespace cuda
}  // namespace voxrender
