// CUDA kernels of the fused fragments ops, on the per-pixel math shared with the CPU op
// (csrc/include/voxrender/fragments.h). Torch-free: csrc/ops/fragments_cuda.cpp checks, allocates and calls
// the launchers.
//
// Grid-stride loops over int64 pixel indices (B * H * W can pass 2^31), one thread per pixel. The forward is
// a gather (no atomics). The backward scatters each pixel's three corner gradients (x, y, z, w) into
// grad_verts with atomicAdd; neighbouring pixels mostly show the same few faces, whose rows L2 resolves.
#include "fragments.cuh"
#include "atomics.cuh"
#include "voxrender/raster.h"

namespace voxrender {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxBlocksPerSM = 16;

template <typename T, typename I>
__global__ void __launch_bounds__(kThreads)
    forward_kernel(const FragmentsProblem<T, I> p, T* __restrict__ bary, T* __restrict__ depth) {
  const int64_t n = p.B * p.P;
  for (int64_t q = int64_t(blockIdx.x) * kThreads + threadIdx.x; q < n; q += int64_t(gridDim.x) * kThreads) {
    int status = kFragmentsOk;
    FragmentCorners c;
    T* bq = bary + 3 * q;
    if (!fragment_corners(p, q, &c, &status)) {
      bq[0] = bq[1] = bq[2] = T(0);
      depth[q] = T(1);
      continue;
    }
    const int64_t r = q - c.b * p.P, i = r / p.W, j = r - i * p.W;
    FragmentGeometry<T> g;
    fragment_geometry(p, c, pixel_centre<T>(int(j), int(p.W)), pixel_centre<T>(int(i), int(p.H)), &g);
    bq[0] = g.bary[0], bq[1] = g.bary[1], bq[2] = g.bary[2];
    depth[q] = g.depth;
  }
}

template <typename T, typename I>
__global__ void __launch_bounds__(kThreads)
    backward_kernel(const FragmentsProblem<T, I> p, const T* __restrict__ grad_bary,
                    const T* __restrict__ grad_depth, T* grad_verts) {
  const int64_t n = p.B * p.P;
  for (int64_t q = int64_t(blockIdx.x) * kThreads + threadIdx.x; q < n; q += int64_t(gridDim.x) * kThreads) {
    int status = kFragmentsOk;
    FragmentCorners c;
    if (!fragment_corners(p, q, &c, &status)) continue;
    const int64_t r = q - c.b * p.P, i = r / p.W, j = r - i * p.W;
    const T px = pixel_centre<T>(int(j), int(p.W)), py = pixel_centre<T>(int(i), int(p.H));
    FragmentGeometry<T> g;
    fragment_geometry(p, c, px, py, &g);
    T out[3][4];
    fragment_vertex_grads(g, px, py, grad_bary ? grad_bary + 3 * q : nullptr, grad_depth ? grad_depth[q] : T(0),
                          out);
    for (int m = 0; m < 3; ++m) {
      T* row = grad_verts + (c.b * p.V + c.v[m]) * 4;
      for (int d = 0; d < 4; ++d) atomic_add(row + d, out[m][d]);
    }
  }
}

int grid_for(int64_t n) {
  int dev = 0, sms = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess ||
      sms <= 0) {
    cudaGetLastError();  // clear the failed query's error; the launch reports any real problem
    sms = 80;
  }
  const int64_t blocks = (n + kThreads - 1) / kThreads, cap = int64_t(sms) * kMaxBlocksPerSM;
  return int(blocks < cap ? blocks : cap);
}

}  // namespace

template <typename T, typename I>
cudaError_t launch_fragments_forward(const FragmentsProblem<T, I>& p, T* bary, T* depth, cudaStream_t stream) {
  const int64_t n = p.B * p.P;
  if (n == 0) return cudaSuccess;
  forward_kernel<T, I><<<grid_for(n), kThreads, 0, stream>>>(p, bary, depth);
  return cudaGetLastError();
}

template <typename T, typename I>
cudaError_t launch_fragments_backward(const FragmentsProblem<T, I>& p, const T* grad_bary, const T* grad_depth,
                                      T* grad_verts, cudaStream_t stream) {
  const int64_t n = p.B * p.P;
  if (n == 0 || p.V == 0 || (!grad_bary && !grad_depth)) return cudaSuccess;
  backward_kernel<T, I><<<grid_for(n), kThreads, 0, stream>>>(p, grad_bary, grad_depth, grad_verts);
  return cudaGetLastError();
}

#define VOXRENDER_INSTANTIATE_FRAGMENTS(T, I)                                                                    \
  template cudaError_t launch_fragments_forward<T, I>(const FragmentsProblem<T, I>&, T*, T*, cudaStream_t);     \
  template cudaError_t launch_fragments_backward<T, I>(const FragmentsProblem<T, I>&, const T*, const T*, T*,  \
                                                       cudaStream_t);
VOXRENDER_INSTANTIATE_FRAGMENTS(float, int32_t)
VOXRENDER_INSTANTIATE_FRAGMENTS(float, int64_t)
VOXRENDER_INSTANTIATE_FRAGMENTS(double, int32_t)
VOXRENDER_INSTANTIATE_FRAGMENTS(double, int64_t)
#undef VOXRENDER_INSTANTIATE_FRAGMENTS

}  // namespace cuda
}  // namespace voxrender
