// Argument checks of the interpolate ops, shared by the CPU op (interpolate_cpu.cpp) and the CUDA glue
// (interpolate_cuda.cpp). Shapes, dtypes and devices only (no values: on a GPU that would mean a host
// sync; the kernels read bad ids and indices as background, and the CPU op raises on them as it meets them).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <utility>
#include <vector>

#include "voxrender/interpolate.h"

namespace voxrender {

inline void check_interpolate_inputs(const at::Tensor& attr, const at::Tensor& face_id, const at::Tensor& bary,
                                     const at::Tensor& faces) {
  TORCH_CHECK_VALUE(attr.dim() == 3, "attr: expected (B, V, C), got ", attr.sizes());
  TORCH_CHECK_TYPE(attr.scalar_type() == at::kFloat || attr.scalar_type() == at::kDouble,
                   "attr: expected float32 or float64, got ", attr.scalar_type());
  const int64_t B = attr.size(0);
  TORCH_CHECK_VALUE(face_id.dim() == 3 && face_id.size(0) == B, "face_id: expected (", B, ", H, W), got ",
                    face_id.sizes());
  TORCH_CHECK_TYPE(face_id.scalar_type() == at::kInt, "face_id: expected int32, got ", face_id.scalar_type());
  const int64_t H = face_id.size(1), W = face_id.size(2);
  TORCH_CHECK_VALUE(bary.dim() == 4 && bary.size(0) == B && bary.size(1) == H && bary.size(2) == W &&
                        bary.size(3) == 3,
                    "bary: expected (", B, ", ", H, ", ", W, ", 3), got ", bary.sizes());
  TORCH_CHECK_TYPE(bary.scalar_type() == attr.scalar_type(), "bary: expected dtype ", attr.scalar_type(),
                   " (that of attr), got ", bary.scalar_type());
  TORCH_CHECK_VALUE(faces.dim() == 3 && faces.size(0) == B && faces.size(2) == 3, "faces: expected (", B,
                    ", F, 3), got ", faces.sizes());
  TORCH_CHECK_TYPE(faces.scalar_type() == at::kLong || faces.scalar_type() == at::kInt,
                   "faces: expected int64 or int32, got ", faces.scalar_type());
  for (const auto& [t, name] : {std::pair<const at::Tensor*, const char*>{&face_id, "face_id"}, {&bary, "bary"},
                                {&faces, "faces"}}) {
    TORCH_CHECK_VALUE(t->device() == attr.device(), name, ": expected device ", attr.device(), " (that of attr), got ",
                      t->device());
  }
}

inline void check_interpolate_grad(const at::Tensor& grad_out, const at::Tensor& attr, const at::Tensor& face_id) {
  const std::vector<int64_t> shape{attr.size(0), face_id.size(1), face_id.size(2), attr.size(2)};
  TORCH_CHECK_VALUE(grad_out.sizes() == at::IntArrayRef(shape), "grad_out: expected ", at::IntArrayRef(shape),
                    ", got ", grad_out.sizes());
  TORCH_CHECK_TYPE(grad_out.scalar_type() == attr.scalar_type(), "grad_out: expected dtype ", attr.scalar_type(),
                   ", got ", grad_out.scalar_type());
  TORCH_CHECK_VALUE(grad_out.device() == attr.device(), "grad_out: expected device ", attr.device(), ", got ",
                    grad_out.device());
}

// The problem struct of the shared math (csrc/include/voxrender/interpolate.h); face_id and bary must be
// contiguous, attr and faces may have any strides.
template <typename T, typename I>
InterpolateProblem<T, I> make_interpolate_problem(const at::Tensor& attr, const at::Tensor& face_id,
                                                  const at::Tensor& bary, const at::Tensor& faces) {
  InterpolateProblem<T, I> p;
  p.B = attr.size(0), p.V = attr.size(1), p.C = attr.size(2), p.F = faces.size(1);
  p.P = face_id.size(1) * face_id.size(2);
  p.attr = attr.data_ptr<T>();
  p.face_id = face_id.data_ptr<int32_t>();
  p.bary = bary.data_ptr<T>();
  p.faces = faces.data_ptr<I>();
  for (int k = 0; k < 3; ++k) p.attr_stride[k] = attr.stride(k), p.face_stride[k] = faces.stride(k);
  return p;
}

}  // namespace voxrender
