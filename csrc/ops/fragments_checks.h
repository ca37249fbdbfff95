// Argument checks of the fused fragments ops (fragments_forward / fragments_backward), shared by the CPU op
// (fragments_cpu.cpp) and the CUDA glue (fragments_cuda.cpp), so both raise the same ValueError / TypeError
// naming the argument. Shapes, dtypes and devices only (no values: on a GPU that would mean a host sync; the
// kernels read bad face ids and vertex indices as background, and the CPU op raises on them as it meets
// them).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

#include "voxrender/fragments.h"

namespace voxrender {

inline void check_fragments_inputs(const at::Tensor& verts, const at::Tensor& faces, const at::Tensor& face_id) {
  TORCH_CHECK_VALUE(verts.dim() == 3 && verts.size(2) == 4, "verts: expected (B, V, 4), got ", verts.sizes());
  TORCH_CHECK_TYPE(verts.scalar_type() == at::kFloat || verts.scalar_type() == at::kDouble,
                   "verts: expected float32 or float64, got ", verts.scalar_type());
  const int64_t B = verts.size(0);
  TORCH_CHECK_VALUE(faces.dim() == 3 && faces.size(0) == B && faces.size(2) == 3, "faces: expected (", B,
                    ", F, 3), got ", faces.sizes());
  TORCH_CHECK_TYPE(faces.scalar_type() == at::kLong || faces.scalar_type() == at::kInt,
                   "faces: expected int64 or int32, got ", faces.scalar_type());
  TORCH_CHECK_VALUE(face_id.dim() == 3 && face_id.size(0) == B, "face_id: expected (", B, ", H, W), got ",
                    face_id.sizes());
  TORCH_CHECK_TYPE(face_id.scalar_type() == at::kInt, "face_id: expected int32, got ", face_id.scalar_type());
  for (const auto& [t, name] : {std::pair<const at::Tensor*, const char*>{&faces, "faces"}, {&face_id, "face_id"}}) {
    TORCH_CHECK_VALUE(t->device() == verts.device(), name, ": expected device ", verts.device(),
                      " (that of verts), got ", t->device());
  }
}

// grad_bary (B, H, W, 3) and grad_depth (B, H, W), each optional (absent: zero), of verts' dtype and device.
inline void check_fragments_grads(const std::optional<at::Tensor>& grad_bary, const std::optional<at::Tensor>& grad_depth,
                                  const at::Tensor& verts, const at::Tensor& face_id) {
  const int64_t B = face_id.size(0), H = face_id.size(1), W = face_id.size(2);
  const std::vector<int64_t> bshape{B, H, W, 3}, dshape{B, H, W};
  const std::pair<const std::optional<at::Tensor>*, const char*> grads[] = {{&grad_bary, "grad_bary"},
                                                                            {&grad_depth, "grad_depth"}};
  for (const auto& [g, name] : grads) {
    if (!g->has_value() || !(*g)->defined()) continue;
    const at::Tensor& t = **g;
    const at::IntArrayRef shape = g == &grad_bary ? at::IntArrayRef(bshape) : at::IntArrayRef(dshape);
    TORCH_CHECK_VALUE(t.sizes() == shape, name, ": expected ", shape, ", got ", t.sizes());
    TORCH_CHECK_TYPE(t.scalar_type() == verts.scalar_type(), name, ": expected dtype ", verts.scalar_type(),
                     " (that of verts), got ", t.scalar_type());
    TORCH_CHECK_VALUE(t.device() == verts.device(), name, ": expected device ", verts.device(), ", got ", t.device());
  }
}

// The problem struct of the shared math (csrc/include/voxrender/fragments.h); face_id must be contiguous,
// verts and faces may have any strides.
template <typename T, typename I>
FragmentsProblem<T, I> make_fragments_problem(const at::Tensor& verts, const at::Tensor& faces, const at::Tensor& face_id) {
  FragmentsProblem<T, I> p;
  p.B = verts.size(0), p.V = verts.size(1), p.F = faces.size(1);
  p.H = face_id.size(1), p.W = face_id.size(2), p.P = p.H * p.W;
  p.verts = verts.data_ptr<T>();
  p.faces = faces.data_ptr<I>();
  p.face_id = face_id.data_ptr<int32_t>();
  for (int k = 0; k < 3; ++k) p.vert_stride[k] = verts.stride(k), p.face_stride[k] = faces.stride(k);
  return p;
}

// A defined tensor, contiguous, or an undefined one.
inline at::Tensor contiguous_or_undefined(const std::optional<at::Tensor>& t) {
  return t.has_value() && t->defined() ? t->contiguous() : at::Tensor();
}

}  // namespace voxrender
