// CUDA kernels of the fused fragments ops (barycentrics and depth of the visible faces, and their gradient
// with respect to the vertices): torch-free launchers (raw pointers, sizes, cudaStream_t).
//
// Included by csrc/kernels/fragments.cu (nvcc) and by csrc/ops/fragments_cuda.cpp (the host compiler of a
// CUDA build). The per-pixel math lives in csrc/include/voxrender/fragments.h and is shared with the CPU op.
// Face ids outside [-1, F) and vertex indices outside [-1, V) are read as background (no host-side value
// check, no out-of-bounds read).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "voxrender/fragments.h"

namespace voxrender {
namespace cuda {

// Forward: writes every element of bary (B, P, 3) and depth (B, P), contiguous; one thread per pixel. Equal
// to the CPU op's forward bit for bit (same rounded operations, no FMA contraction).
template <typename T, typename I>
cudaError_t launch_fragments_forward(const FragmentsProblem<T, I>& p, T* bary, T* depth, cudaStream_t stream);

// Backward: grad_bary (B, P, 3) and grad_depth (B, P), contiguous, either null (zero). The per-pixel vertex
// gradients are atomically ADDED into grad_verts (B, V, 4) contiguous (the caller zero-fills it): one thread
// per pixel, so the summation order, hence the last bits, varies from run to run.
template <typename T, typename I>
cudaError_t launch_fragments_backward(const FragmentsProblem<T, I>& p, const T* grad_bary, const T* grad_depth,
                                      T* grad_verts, cudaStream_t stream);

}  // namespace cuda
}  // namespace voxrender
