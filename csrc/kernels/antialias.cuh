// CUDA kernels of voxrender.antialias: torch-free launchers (raw pointers, sizes, cudaStream_t).
//
// Included by csrc/kernels/antialias.cu (nvcc) and by csrc/ops/antialias_cuda.cpp (the host compiler of a
// CUDA build). The per-pair math lives in csrc/include/voxrender/antialias.h and is shared with the CPU op.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "voxrender/antialias.h"

namespace voxrender {
namespace cuda {

// Forward: writes every element of out (B, H, W, C), contiguous. One thread per pixel gathers the deltas
// of the pairs it belongs to: no atomics, deterministic. Returns cudaGetLastError() after the launch, or
// cudaSuccess without launching when there is no pixel.
template <typename T>
cudaError_t launch_antialias_forward(const AntialiasProblem<T>& p, T* out, cudaStream_t stream);

// Backward: writes every element of grad_color (B, H, W, C) (a per-pixel gather, deterministic) and
// atomically ADDS into grad_verts (B, V, 4), which the caller zero-fills: each pixel's thread scatters
// the vertex gradients of the pairs it owns (its right and down pair) with atomicAdd, so the summation
// order, hence the last bits of grad_verts, varies from run to run.
template <typename T>
cudaError_t launch_antialias_backward(const AntialiasProblem<T>& p, const T* grad_out, T* grad_color, T* grad_verts,
                                      cudaStream_t stream);

}  // namespace cuda
}  // namespace voxrender
