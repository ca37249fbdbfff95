// CUDA kernels of project_volume: one thread per pixel, running the same per-ray functions as the CPU op
// (csrc/include/voxrender/volume.h), so both backends compute the same thing in the same order per ray.
// Torch-free: the glue in csrc/ops/volume_projection_cuda.cpp allocates, checks and calls the launchers.
//
// Launch shape. A block is a 16 x 16 pixel tile of ONE batch item: blockIdx.x = tile within the image,
// blockIdx.y = batch item (with a grid-stride loop over items when B > 65535, the gridDim.y limit). A
// block therefore never spans two items, which keeps the rotation-gradient reduction per item.
//
// Expected performance (not yet measured on a GPU):
// - Forward. Each sample reads the 8 corners of its trilinear cell (times 1 + C for emission_absorption).
//   One item's grid (64^3 float = 1 MiB) fits in L2 many times over, and the rays of a 2D tile walk
//   neighbouring cells at the same depth, so most corner loads hit L1 (the read-only/L1 path: the kernels
//   take const __restrict__ pointers) and DRAM traffic is close to one read of the grid per item plus
//   one write of the image. The kernel is bound by L1/L2 load throughput and latency (8 dependent-address
//   loads per sample), not by DRAM bandwidth; occupancy, not shared memory, hides that latency, so the
//   grid is not staged in shared memory (a rotated view's footprint per tile is not a box anyway).
//   emission_absorption renders kChannelChunk (4) colour channels per pass over the ray, so C > 4 costs
//   ceil(C / 4) passes, each re-sampling the density; C = 3 (RGB) is a single pass.
// - Backward. Recomputes the samples (nothing per sample is stored by the forward) and scatters each
//   sample's gradient to its 8 corners with atomicAdd; the results are unused, so ptxas can lower them to
//   fire-and-forget RED operations resolved in L2. Neighbouring rays mostly hit different voxels (in the default orthographic
//   view each voxel gets contributions from at most 4 rays per sample plane), so contention is low and
//   the cost is L2 atomic throughput: expect the backward to be a few times slower than the forward.
//   Atomics make the float summation order, hence the last bits of grad_density / grad_features,
//   run-to-run nondeterministic (the glue reports this to torch's deterministic-algorithms switch).
// - Rotation gradient. Each thread accumulates its 9 values in registers, a warp-shuffle + shared-memory
//   tree reduces them per block in a fixed order, and each block writes its 9 partial sums to a
//   (B, tiles, 9) buffer that the glue sums with torch: no atomics, deterministic. When no rotation
//   gradient is wanted a separate instantiation (kRotGrad = false) skips all of it.
#include "volume_projection.cuh"
#include "atomics.cuh"

#include <climits>

namespace voxrender {
namespace cuda {
namespace {

constexpr int kWarps = kThreads / 32;
constexpr int64_t kMaxGridY = 65535;

static_assert(kThreads % 32 == 0, "the block reduction assumes whole warps");

// The scatter functor handed to the shared math (the CPU op passes a plain +=).
struct AtomicAdd {
  template <typename T>
  __device__ __forceinline__ void operator()(T* p, T v) const { atomic_add(p, v); }
};

struct Pixel {
  int i, j;
  bool active;
};

// The pixel of this thread in the block's tile (blockIdx.x enumerates tiles row-major).
__device__ __forceinline__ Pixel tile_pixel(int Ho, int Wo) {
  const int tiles_x = (Wo + kTileW - 1) / kTileW;
  const int ty = int(blockIdx.x) / tiles_x;
  const int tx = int(blockIdx.x) - ty * tiles_x;
  Pixel px;
  px.i = ty * kTileH + int(threadIdx.y);
  px.j = tx * kTileW + int(threadIdx.x);
  px.active = px.i < Ho && px.j < Wo;
  return px;
}

// Copies item b's rotation into registers (sample_point reads it for every sample).
template <typename T>
__device__ __forceinline__ void load_rotation(const T* __restrict__ rotation, int64_t b, T R[9]) {
#pragma unroll
  for (int e = 0; e < 9; ++e) R[e] = __ldg(rotation + 9 * b + e);
}

// Sums v[0..9) over the block (every thread must call it) and writes the 9 sums to dst from threads
// 0..8. Fixed reduction order, so the result is deterministic.
template <typename T>
__device__ __forceinline__ void block_sum9_store(T v[9], T* __restrict__ dst) {
  __shared__ T partial[kWarps][9];
  const int tid = int(threadIdx.y) * kTileW + int(threadIdx.x);
  const int lane = tid & 31, warp = tid >> 5;
#pragma unroll
  for (int e = 0; e < 9; ++e) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) v[e] += __shfl_down_sync(0xffffffffu, v[e], off);
  }
  if (lane == 0) {
#pragma unroll
    for (int e = 0; e < 9; ++e) partial[warp][e] = v[e];
  }
  __syncthreads();
  if (tid < 9) {
    T s = T(0);
#pragma unroll
    for (int w = 0; w < kWarps; ++w) s += partial[w][tid];
    dst[tid] = s;
  }
  __syncthreads();  // `partial` is reused by the next batch item of the grid-stride loop
}

// ---------------------------------------------------------------------------------------------------
// Forward

template <typename T>
__global__ void __launch_bounds__(kThreads)
    forward_scalar_kernel(const ProjectProblem<T> p, const T* __restrict__ density, const T* __restrict__ rotation,
                          T* __restrict__ out, T* __restrict__ aux) {
  const Pixel px = tile_pixel(p.Ho, p.Wo);
  if (!px.active) return;  // no block-wide synchronisation in the forward
  const int64_t plane = int64_t(p.Ho) * p.Wo, pix = int64_t(px.i) * p.Wo + px.j, cs = p.g.numel();
  for (int64_t b = blockIdx.y; b < p.B; b += gridDim.y) {
    T R[9];
    load_rotation(rotation, b, R);
    // Scalar modes have one output channel: out is (B, 1, Ho, Wo).
    ray_forward_scalar(density + b * cs, p.g, R, p.cam, p.mode, p.tau, p.K, px.i, px.j, p.Ho, p.Wo,
                       out + b * plane + pix, aux + b * plane + pix);
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    forward_ea_kernel(const ProjectProblem<T> p, const T* __restrict__ density, const T* __restrict__ features,
                      const T* __restrict__ rotation, T* __restrict__ out, T* __restrict__ aux) {
  const Pixel px = tile_pixel(p.Ho, p.Wo);
  if (!px.active) return;
  const int64_t plane = int64_t(p.Ho) * p.Wo, pix = int64_t(px.i) * p.Wo + px.j, cs = p.g.numel();
  const int64_t oc = int64_t(p.C) + 1;
  const int passes_end = p.C > 1 ? p.C : 1;  // C = 0 still needs one pass for the opacity
  for (int64_t b = blockIdx.y; b < p.B; b += gridDim.y) {
    T R[9];
    load_rotation(rotation, b, R);
    const T* vb = density + b * cs;
    const T* fb = features + b * p.C * cs;
    T* op = out + b * oc * plane + pix;
    T* xp = aux + b * plane + pix;
    for (int c0 = 0; c0 < passes_end; c0 += kChannelChunk) {
      const int n = p.C - c0 < kChannelChunk ? p.C - c0 : kChannelChunk;
      ray_forward_ea(vb, fb, c0, n > 0 ? n : 0, p.g, R, p.cam, p.tau, p.K, px.i, px.j, p.Ho, p.Wo, c0 == 0, op,
                     plane, p.C, xp);
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// Backward. Threads outside the image stay alive (with zero rotation gradient) because the block
// reduction needs every thread.

template <typename T, bool kRotGrad>
__global__ void __launch_bounds__(kThreads)
    backward_scalar_kernel(const ProjectProblem<T> p, const T* __restrict__ density, const T* __restrict__ rotation,
                           const T* __restrict__ grad_out, const T* __restrict__ out, const T* __restrict__ aux,
                           T* __restrict__ grad_density, T* __restrict__ rot_partial) {
  const Pixel px = tile_pixel(p.Ho, p.Wo);
  const int64_t plane = int64_t(p.Ho) * p.Wo, pix = int64_t(px.i) * p.Wo + px.j, cs = p.g.numel();
  for (int64_t b = blockIdx.y; b < p.B; b += gridDim.y) {
    T gR[9];
#pragma unroll
    for (int e = 0; e < 9; ++e) gR[e] = T(0);
    if (px.active) {
      T R[9];
      load_rotation(rotation, b, R);
      const int64_t o = b * plane + pix;  // one output channel
      ray_backward_scalar(density + b * cs, p.g, R, p.cam, p.mode, p.tau, p.K, px.i, px.j, p.Ho, p.Wo,
                          __ldg(grad_out + o), __ldg(out + o), __ldg(aux + o), grad_density + b * cs,
                          kRotGrad ? gR : static_cast<T*>(nullptr), AtomicAdd{});
    }
    if (kRotGrad) block_sum9_store(gR, rot_partial + (b * int64_t(gridDim.x) + blockIdx.x) * 9);
  }
}

template <typename T, bool kRotGrad>
__global__ void __launch_bounds__(kThreads)
    backward_ea_kernel(const ProjectProblem<T> p, const T* __restrict__ density, const T* __restrict__ features,
                       const T* __restrict__ rotation, const T* __restrict__ grad_out, const T* __restrict__ aux,
                       T* __restrict__ grad_density, T* __restrict__ grad_features, T* __restrict__ rot_partial) {
  const Pixel px = tile_pixel(p.Ho, p.Wo);
  const int64_t plane = int64_t(p.Ho) * p.Wo, pix = int64_t(px.i) * p.Wo + px.j, cs = p.g.numel();
  const int64_t oc = int64_t(p.C) + 1;
  const int passes_end = p.C > 1 ? p.C : 1;
  for (int64_t b = blockIdx.y; b < p.B; b += gridDim.y) {
    T gR[9];
#pragma unroll
    for (int e = 0; e < 9; ++e) gR[e] = T(0);
    if (px.active) {
      T R[9];
      load_rotation(rotation, b, R);
      const T* vb = density + b * cs;
      const T* fb = features + b * p.C * cs;
      T* gdb = grad_density + b * cs;
      T* gfb = grad_features + b * p.C * cs;
      const T* gop = grad_out + b * oc * plane + pix;
      const T xv = __ldg(aux + b * plane + pix);
      for (int c0 = 0; c0 < passes_end; c0 += kChannelChunk) {
        const int n = p.C - c0 < kChannelChunk ? p.C - c0 : kChannelChunk;
        ray_backward_ea(vb, fb, c0, n > 0 ? n : 0, p.g, R, p.cam, p.tau, p.K, px.i, px.j, p.Ho, p.Wo, c0 == 0, gop,
                        plane, p.C, xv, gdb, gfb, kRotGrad ? gR : static_cast<T*>(nullptr), AtomicAdd{});
      }
    }
    if (kRotGrad) block_sum9_store(gR, rot_partial + (b * int64_t(gridDim.x) + blockIdx.x) * 9);
  }
}

// Grid of one call, or false when there is nothing to launch / the image has too many tiles.
template <typename T>
bool launch_grid(const ProjectProblem<T>& p, dim3& grid, cudaError_t& err) {
  err = cudaSuccess;
  if (p.B <= 0 || p.Ho <= 0 || p.Wo <= 0) return false;
  const int64_t tiles = project_tiles_per_item(p.Ho, p.Wo);
  if (tiles > int64_t(INT_MAX)) {
    err = cudaErrorInvalidConfiguration;
    return false;
  }
  grid = dim3(unsigned(tiles), unsigned(p.B < kMaxGridY ? p.B : kMaxGridY), 1u);
  return true;
}

}  // namespace

template <typename T>
cudaError_t launch_project_volume_forward(const ProjectProblem<T>& p, const T* density, const T* features,
                                          const T* rotation, T* out, T* aux, cudaStream_t stream) {
  dim3 grid;
  cudaError_t err;
  if (!launch_grid(p, grid, err)) return err;
  const dim3 block(kTileW, kTileH, 1);
  if (p.mode == kEmissionAbsorption) {
    forward_ea_kernel<T><<<grid, block, 0, stream>>>(p, density, features, rotation, out, aux);
  } else {
    forward_scalar_kernel<T><<<grid, block, 0, stream>>>(p, density, rotation, out, aux);
  }
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_project_volume_backward(const ProjectProblem<T>& p, const T* density, const T* features,
                                           const T* rotation, const T* grad_out, const T* out, const T* aux,
                                           T* grad_density, T* grad_features, T* rot_partial, cudaStream_t stream) {
  dim3 grid;
  cudaError_t err;
  if (!launch_grid(p, grid, err)) return err;
  const dim3 block(kTileW, kTileH, 1);
  if (p.mode == kEmissionAbsorption) {
    if (rot_partial) {
      backward_ea_kernel<T, true><<<grid, block, 0, stream>>>(p, density, features, rotation, grad_out, aux,
                                                              grad_density, grad_features, rot_partial);
    } else {
      backward_ea_kernel<T, false><<<grid, block, 0, stream>>>(p, density, features, rotation, grad_out, aux,
                                                               grad_density, grad_features, nullptr);
    }
  } else {
    if (rot_partial) {
      backward_scalar_kernel<T, true><<<grid, block, 0, stream>>>(p, density, rotation, grad_out, out, aux,
                                                                  grad_density, rot_partial);
    } else {
      backward_scalar_kernel<T, false><<<grid, block, 0, stream>>>(p, density, rotation, grad_out, out, aux,
                                                                   grad_density, nullptr);
    }
  }
  return cudaGetLastError();
}

#define VR_INSTANTIATE(T)                                                                                      \
  template cudaError_t launch_project_volume_forward<T>(const ProjectProblem<T>&, const T*, const T*, const T*, \
                                                        T*, T*, cudaStream_t);                                 \
  template cudaError_t launch_project_volume_backward<T>(const ProjectProblem<T>&, const T*, const T*,         \
                                                         const T*, const T*, const T*, const T*, T*, T*, T*,   \
                                                         cudaStream_t);
VR_INSTANTIATE(float)
VR_INSTANTIATE(double)
#undef VR_INSTANTIATE

}  // namespace cuda
}  // namespace voxrender
