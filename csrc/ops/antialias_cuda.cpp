// CUDA glue of voxrender.antialias: checks, contiguity, device guard and stream, output allocation, and the
// calls into the torch-free launchers of csrc/kernels/antialias.cu. Compiled by the host compiler, and only
// in a CUDA build (setup.py drops *_cuda.cpp otherwise).
//
// No value checks here (they would synchronise with the device): the Python wrapper checks the index
// ranges once per call, and the kernels read face ids outside [0, F) as background, skip faces with an
// index outside [0, V) and end the walk at an adjacency entry outside [0, F), so bad values never lead to
// out-of-bounds reads.
#include <ATen/Context.h>
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <tuple>

#include "antialias.cuh"
#include "antialias_checks.h"

namespace voxrender {
namespace {

void check_launch(cudaError_t err, const char* kernel) {
  TORCH_CHECK(err == cudaSuccess, "voxrender: CUDA kernel ", kernel, " failed: ", cudaGetErrorString(err));
}

struct Inputs {
  at::Tensor color, face_id, depth, verts, faces, silhouette, adjacency;
};

Inputs contiguous_inputs(const at::Tensor& color, const at::Tensor& face_id, const at::Tensor& depth,
                         const at::Tensor& verts, const at::Tensor& faces, const at::Tensor& silhouette,
                         const at::Tensor& adjacency) {
  TORCH_CHECK_VALUE(color.is_cuda(), "color: expected a CUDA tensor, got device ", color.device());
  return {color.contiguous(),
          face_id.contiguous(),
          depth.contiguous(),
          verts.contiguous(),
          faces.to(at::kLong).contiguous(),
          silhouette.contiguous(),
          adjacency.to(at::kLong).contiguous()};
}

template <typename T>
AntialiasProblem<T> make_problem(const Inputs& in) {
  AntialiasProblem<T> P;
  P.B = in.color.size(0), P.H = int(in.color.size(1)), P.W = int(in.color.size(2)), P.C = int(in.color.size(3));
  P.V = in.verts.size(1), P.F = in.faces.size(1);
  P.color = in.color.data_ptr<T>();
  P.face_id = in.face_id.data_ptr<int32_t>();
  P.depth = in.depth.data_ptr<T>();
  P.verts = in.verts.data_ptr<T>();
  P.faces = in.faces.data_ptr<int64_t>();
  P.silhouette = in.silhouette.data_ptr<bool>();
  P.adjacency = in.adjacency.data_ptr<int64_t>();
  return P;
}

at::Tensor antialias_forward_cuda(const at::Tensor& color, const at::Tensor& face_id, const at::Tensor& depth,
                                  const at::Tensor& verts, const at::Tensor& faces, const at::Tensor& silhouette,
                                  const at::Tensor& adjacency) {
  check_antialias_inputs(color, face_id, depth, verts, faces, silhouette, adjacency);
  const c10::cuda::CUDAGuard device_guard(color.device());
  const Inputs in = contiguous_inputs(color, face_id, depth, verts, faces, silhouette, adjacency);
  at::Tensor out = at::empty(in.color.sizes(), in.color.options());
  if (out.numel() == 0) return out;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(in.color.scalar_type(), "antialias_forward_cuda", [&] {
    check_launch(cuda::launch_antialias_forward<scalar_t>(make_problem<scalar_t>(in), out.data_ptr<scalar_t>(), stream),
                 "antialias forward");
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> antialias_backward_cuda(const at::Tensor& grad_out, const at::Tensor& color,
                                                           const at::Tensor& face_id, const at::Tensor& depth,
                                                           const at::Tensor& verts, const at::Tensor& faces,
                                                           const at::Tensor& silhouette,
                                                           const at::Tensor& adjacency) {
  check_antialias_inputs(color, face_id, depth, verts, faces, silhouette, adjacency, &grad_out);
  const c10::cuda::CUDAGuard device_guard(color.device());
  const Inputs in = contiguous_inputs(color, face_id, depth, verts, faces, silhouette, adjacency);
  const at::Tensor grad = grad_out.contiguous();
  at::Tensor grad_color = at::empty(in.color.sizes(), in.color.options());
  at::Tensor grad_verts = at::zeros(in.verts.sizes(), in.verts.options());
  if (grad_color.numel() == 0) return {grad_color, grad_verts};
  // The vertex gradients are scattered with atomicAdd: the summation order varies run to run.
  at::globalContext().alertNotDeterministic("voxrender antialias backward (cuda)");
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(in.color.scalar_type(), "antialias_backward_cuda", [&] {
    check_launch(cuda::launch_antialias_backward<scalar_t>(make_problem<scalar_t>(in), grad.data_ptr<scalar_t>(),
                                                           grad_color.data_ptr<scalar_t>(),
                                                           grad_verts.data_ptr<scalar_t>(), stream),
                 "antialias backward");
  });
  return {grad_color, grad_verts};
}

}  // namespace

TORCH_LIBRARY_IMPL(voxrender, CUDA, m) {
  m.impl("antialias_forward", &antialias_forward_cuda);
  m.impl("antialias_backward", &antialias_backward_cuda);
}

}  // namespace voxrender
