// CUDA kernels of rasterize_face_ids (the z-buffer visibility pass of voxrender.rasterize): torch-free
// launchers (raw pointers, sizes, cudaStream_t).
//
// Included by csrc/kernels/rasterize.cu (nvcc) and by csrc/ops/rasterize_cuda.cpp (the host compiler of a
// CUDA build), so everything here is plain host C++ plus the CUDA runtime types. The per-face and
// per-pixel math lives in csrc/include/voxrender/raster.h and is shared with the CPU op, so both give the
// same face ids and depths bit for bit.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace voxrender {
namespace cuda {

// Faces are split into work items: the kRasterTile x kRasterTile pixel tiles of the image grid that their
// pixel bounding box overlaps (one item per tile, processed by one thread).
constexpr int kRasterTile = 8;

// One call. verts: (B, V, 4) contiguous. faces: (B, F, 3) of I (int32 or int64) with element strides
// face_stride[0..2] (an expand()ed (F, 3) is fine: batch stride 0). A row with an index outside [0, V)
// (e.g. -1 padding) covers nothing.
template <typename T, typename I>
struct RasterProblem {
  int64_t B, V, F;
  int H, W;
  bool cull;
  const T* verts;
  const I* faces;
  int64_t face_stride[3];
};

// Pass 0: writes tile_count[b * F + f] (int64, B * F entries) = number of work items of face f of item b
// (0 for faces that cover nothing: padding, degenerate, culled, off screen). The caller then forms the
// inclusive prefix sum `offsets` of tile_count (e.g. torch.cumsum, on the device: no host sync).
template <typename T, typename I>
cudaError_t launch_rasterize_count(const RasterProblem<T, I>& p, int64_t* tile_count, cudaStream_t stream);

// Passes 1-3: given the inclusive prefix sum `offsets` (B * F int64, on the device; may be null when
// B * F == 0), writes every element of face_id (B, H, W) int32 and depth (B, H, W) T, contiguous (used as
// the z-buffer while the kernels run). A fixed-size grid reads the number of work items from
// offsets[B * F - 1] on the device: no host synchronisation. Returns the first launch error.
template <typename T, typename I>
cudaError_t launch_rasterize_faces(const RasterProblem<T, I>& p, const int64_t* offsets, int32_t* face_id, T* depth,
                                   cudaStream_t stream);

}  // namespace cuda
}  // namespace voxrender
