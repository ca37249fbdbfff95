// CUDA kernels of voxrender.antialias: one thread per pixel, running the same per-pair functions as the
// CPU op (csrc/include/voxrender/antialias.h). Torch-free: the glue in csrc/ops/antialias_cuda.cpp checks,
// allocates and calls the launchers.
//
// Launch shape: a 1D grid-stride loop over the B * H * W pixels (256 threads per block), so consecutive
// threads handle consecutive pixels of a row and their face_id / depth / color loads coalesce.
//
// Expected performance (not yet measured on a GPU): most pixels see four neighbours with their own face id
// and exit after four int32 loads (one of which is their own), so the kernels run at about the bandwidth of
// reading face_id once and streaming color -> out (forward) or grad -> grad_color (backward). Pairs that
// differ read the depths and walk: per face of the walk its three vertex indices, vertices (12 floats,
// gathered: L2 hits for meshes that fit) and the silhouette flag and adjacency entry of its exit edge, a
// chain of dependent loads. A pair between two faces of one surface usually walks two faces (out of the
// front face, then past t = 1 in the next); a silhouette pair a few more on finely tessellated meshes,
// 16 at most. No walk filter here (the CPU op's antialias_reach_* would need one launch per round): every
// differing pair walks. Each pair is evaluated by both of its pixels in the gathers (twice the work on the
// discontinuity pixels, no atomics in the image). The vertex gradient is scattered with atomicAdd, at most
// 2 pairs x 2 vertices x 3 components per pixel and only on silhouettes: low contention, but a
// nondeterministic summation order (the glue reports it to torch's deterministic-algorithms switch).
#include "antialias.cuh"
#include "atomics.cuh"

namespace voxrender {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = int64_t(1) << 20;

template <typename T>
__global__ void __launch_bounds__(kThreads) antialias_forward_kernel(const AntialiasProblem<T> p, T* __restrict__ out) {
  const int64_t n = p.B * int64_t(p.H) * p.W;
  for (int64_t pix = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; pix < n;
       pix += int64_t(gridDim.x) * blockDim.x) {
    const int64_t row = pix / p.W;
    const int j = int(pix - row * p.W);
    const int64_t b = row / p.H;
    const int i = int(row - b * p.H);
    antialias_forward_pixel(p, b, i, j, out + pix * p.C);
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    antialias_backward_kernel(const AntialiasProblem<T> p, const T* __restrict__ grad, T* __restrict__ grad_color,
                              T* __restrict__ grad_verts) {
  const int64_t n = p.B * int64_t(p.H) * p.W;
  for (int64_t pix = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; pix < n;
       pix += int64_t(gridDim.x) * blockDim.x) {
    const int64_t row = pix / p.W;
    const int j = int(pix - row * p.W);
    const int64_t b = row / p.H;
    const int i = int(row - b * p.H);
    antialias_color_grad_pixel(p, grad, b, i, j, grad_color + pix * p.C);
    for (int axis = 0; axis < 2; ++axis) {
      if (axis == 0 ? j + 1 >= p.W : i + 1 >= p.H) continue;
      AntialiasHit<T> h;
      if (!antialias_pair(p, b, i, j, axis, &h)) continue;
      const T gt = antialias_grad_t(p, grad, b, h);
      T ga[3], gb[3];
      antialias_vertex_grad(p, b, h, gt, ga, gb);
      T* va = grad_verts + (b * p.V + h.va) * 4;
      T* vb = grad_verts + (b * p.V + h.vb) * 4;
      atomic_add(va + 0, ga[0]);
      atomic_add(va + 1, ga[1]);
      atomic_add(va + 3, ga[2]);
      atomic_add(vb + 0, gb[0]);
      atomic_add(vb + 1, gb[1]);
      atomic_add(vb + 3, gb[2]);
    }
  }
}

// Number of blocks for n pixels (0: nothing to launch).
unsigned blocks_for(int64_t n) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  return unsigned(blocks < kMaxBlocks ? blocks : kMaxBlocks);
}

}  // namespace

template <typename T>
cudaError_t launch_antialias_forward(const AntialiasProblem<T>& p, T* out, cudaStream_t stream) {
  const int64_t n = p.B * int64_t(p.H) * p.W;
  if (n <= 0 || p.C <= 0) return cudaSuccess;
  antialias_forward_kernel<T><<<blocks_for(n), kThreads, 0, stream>>>(p, out);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_antialias_backward(const AntialiasProblem<T>& p, const T* grad_out, T* grad_color, T* grad_verts,
                                      cudaStream_t stream) {
  const int64_t n = p.B * int64_t(p.H) * p.W;
  if (n <= 0 || p.C <= 0) return cudaSuccess;
  antialias_backward_kernel<T><<<blocks_for(n), kThreads, 0, stream>>>(p, grad_out, grad_color, grad_verts);
  return cudaGetLastError();
}

#define VR_INSTANTIATE(T)                                                                                    \
  template cudaError_t launch_antialias_forward<T>(const AntialiasProblem<T>&, T*, cudaStream_t);           \
  template cudaError_t launch_antialias_backward<T>(const AntialiasProblem<T>&, const T*, T*, T*, cudaStream_t);
VR_INSTANTIATE(float)
VR_INSTANTIATE(double)
#undef VR_INSTANTIATE

}  // namespace cuda
}  // namespace voxrender
