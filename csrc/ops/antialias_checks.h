// Argument checks of the antialias ops, shared by the CPU and CUDA glue (defined in antialias_cpu.cpp,
// which every build compiles).
#pragma once

#include <ATen/core/Tensor.h>

namespace voxrender {

// Shapes, dtypes and devices of antialias_forward's inputs (and, when grad is given, of antialias_backward's
// incoming gradient). Raises ValueError / TypeError naming the argument. Does not read values.
void check_antialias_inputs(const at::Tensor& color, const at::Tensor& face_id, const at::Tensor& depth,
                            const at::Tensor& verts, const at::Tensor& faces, const at::Tensor& silhouette,
                            const at::Tensor& adjacency, const at::Tensor* grad = nullptr);

}  // namespace voxrender
