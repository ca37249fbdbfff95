// Argument checks of rasterize_face_ids, shared by the CPU op (rasterize_cpu.cpp) and the CUDA glue
// (rasterize_cuda.cpp), so both raise the same ValueError / TypeError naming the argument.
//
// check_rasterize_inputs reads shapes, dtypes and devices only (no tensor values). The index-range check
// (check_face_index_values) reads the values, which on a GPU means a host synchronisation: the CPU op calls
// it; the CUDA op does not (it stays free of host syncs, capturable in a CUDA graph), and its kernels treat
// a face row with any index outside [0, V) as covering nothing, so bad values never read out of bounds. The
// public voxrender.rasterize checks the index range once per call on every device (_check_faces in
// voxrender/ops/rasterize.py) outside torch.compile tracing.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/aminmax.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <tuple>

namespace voxrender {

inline void check_rasterize_inputs(const at::Tensor& verts, const at::Tensor& faces, int64_t height, int64_t width) {
  TORCH_CHECK_VALUE(verts.dim() == 3 && verts.size(2) == 4, "verts: expected (B, V, 4), got ", verts.sizes());
  TORCH_CHECK_TYPE(verts.scalar_type() == at::kFloat || verts.scalar_type() == at::kDouble,
                   "verts: expected float32 or float64, got ", verts.scalar_type());
  TORCH_CHECK_VALUE(faces.dim() == 3 && faces.size(2) == 3, "faces: expected (B, F, 3), got ", faces.sizes());
  TORCH_CHECK_TYPE(faces.scalar_type() == at::kLong || faces.scalar_type() == at::kInt,
                   "faces: expected int64 or int32, got ", faces.scalar_type());
  const int64_t B = verts.size(0), F = faces.size(1);
  TORCH_CHECK_VALUE(faces.size(0) == B, "faces: expected batch size ", B, " (that of verts), got ", faces.size(0));
  TORCH_CHECK_VALUE(faces.device() == verts.device(), "faces: expected device ", verts.device(), ", got ",
                    faces.device());
  TORCH_CHECK_VALUE(height >= 1 && width >= 1, "image_size: expected positive sizes, got (", height, ", ", width,
                    ")");
  TORCH_CHECK_VALUE(height <= (int64_t(1) << 30) && width <= (int64_t(1) << 30),
                    "image_size: at most 2^30 per side is supported, got (", height, ", ", width, ")");
  TORCH_CHECK_VALUE(F < (int64_t(1) << 31), "faces: at most 2^31 - 1 faces per item are supported, got ", F);
}

// Every index in [0, V), or -1 in padding rows. One min/max over the faces (a host sync on a GPU).
inline void check_face_index_values(const at::Tensor& faces, int64_t V) {
  if (faces.numel() == 0) return;
  const auto mm = at::aminmax(faces);
  const int64_t lo = std::get<0>(mm).item<int64_t>(), hi = std::get<1>(mm).item<int64_t>();
  TORCH_CHECK_VALUE(lo >= -1 && hi < V, "faces: indices must be in [0, ", V,
                    ") or -1 for padding rows, got values in [", lo, ", ", hi, "]");
}

}  // namespace voxrender
