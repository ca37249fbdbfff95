// CUDA kernels of voxrender.interpolate: torch-free launchers (raw pointers, sizes, cudaStream_t).
//
// Included by csrc/kernels/interpolate.cu (nvcc) and by csrc/ops/interpolate_cuda.cpp (the host compiler of
// a CUDA build). The per-pixel math lives in csrc/include/voxrender/interpolate.h and is shared with the CPU
// op. Face ids outside [-1, F) and vertex indices outside [-1, V) are read as background (no host-side
// value check, no out-of-bounds read).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "voxrender/interpolate.h"

namespace voxrender {
namespace cuda {

// Forward: writes every element of out (B, P, C), contiguous; one thread per element, so the writes are
// coalesced. Equal to the CPU op's forward bit for bit.
template <typename T, typename I>
cudaError_t launch_interpolate_forward(const InterpolateProblem<T, I>& p, T* out, cudaStream_t stream);

// Backward. grad_bary (B, P, 3) (null: not wanted): written, every element, one thread per element (a
// gather over the channels, deterministic, equal to the CPU's). grad_attr (B, V, C) contiguous (null: not
// wanted): atomically ADDED into (the caller zero-fills it), one thread per (pixel, channel), so the
// summation order, hence the last bits, varies from run to run.
template <typename T, typename I>
cudaError_t launch_interpolate_backward(const InterpolateProblem<T, I>& p, const T* grad_out, T* grad_attr,
                                        T* grad_bary, cudaStream_t stream);

}  // namespace cuda
}  // namespace voxrender
