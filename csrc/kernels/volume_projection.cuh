// CUDA kernels of project_volume: torch-free launchers (raw pointers, sizes, cudaStream_t).
//
// Included by csrc/kernels/volume_projection.cu (nvcc) and by csrc/ops/volume_projection_cuda.cpp (the
// host compiler of a CUDA build), so everything here is plain host C++ plus the CUDA runtime types.
// The per-ray math lives in csrc/include/voxrender/volume.h and is shared with the CPU op.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "voxrender/volume.h"

namespace voxrender {
namespace cuda {

// One block renders a kTileH x kTileW tile of one batch item's image (one thread per pixel), so a
// block never spans two batch items and its per-block rotation-gradient partial belongs to one item.
constexpr int kTileW = 16;
constexpr int kTileH = 16;
constexpr int kThreads = kTileW * kTileH;

// Number of tiles (blocks) per batch item; the backward's rotation partial buffer is
// (B, project_tiles_per_item(Ho, Wo), 9).
inline int64_t project_tiles_per_item(int64_t Ho, int64_t Wo) {
  return ((Wo + kTileW - 1) / kTileW) * ((Ho + kTileH - 1) / kTileH);
}

// Sizes and scalar arguments of one call. Tensors are contiguous: density (B, D, H, W), features
// (B, C, D, H, W), rotation (B, 3, 3) row-major, out (B, oc, Ho, Wo) with oc = 1 for the scalar modes and
// C + 1 for emission_absorption, aux (B, Ho, Wo).
template <typename T>
struct ProjectProblem {
  int64_t B;   // batch items
  int C;       // colour channels (emission_absorption), else 0
  Grid g;      // D, H, W
  int Ho, Wo;  // image size
  int K;       // samples per ray
  int mode;    // voxrender::Mode
  T tau;
  Camera<T> cam;
};

// Forward: writes out and aux (every element). features may be null unless mode is emission_absorption.
// Returns cudaGetLastError() after the launch, or cudaSuccess without launching when there is no pixel.
template <typename T>
cudaError_t launch_project_volume_forward(const ProjectProblem<T>& p, const T* density, const T* features,
                                          const T* rotation, T* out, T* aux, cudaStream_t stream);

// Backward: atomically ADDS into grad_density (B, D, H, W) and grad_features (B, C, D, H, W), which the
// caller zero-fills. rot_partial: null for no rotation gradient, else a (B, project_tiles_per_item, 9)
// buffer that receives every block's partial sum of d loss / d R (row-major 3x3), written (not added)
// by exactly one block each; the caller sums it over dim 1.
template <typename T>
cudaError_t launch_project_volume_backward(const ProjectProblem<T>& p, const T* density, const T* features,
                                           const T* rotation, const T* grad_out, const T* out, const T* aux,
                                           T* grad_density, T* grad_features, T* rot_partial, cudaStream_t stream);

}  // namespace cuda
}  // namespace voxrender
