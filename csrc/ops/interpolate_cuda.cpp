// CUDA glue of voxrender.interpolate: the argument checks shared with the CPU op (interpolate_checks.h),
// device guard and stream, output allocation, and the calls into the torch-free launchers of
// csrc/kernels/interpolate.cu. Compiled by the host compiler, and only in a CUDA build (setup.py drops
// *_cuda.cpp otherwise).
//
// No host synchronisation and no value checks (they would read values back from the device): face ids
// outside [-1, F) and vertex indices outside [-1, V) are read as background. attr and faces keep their
// strides (an expand()ed shared tensor is not copied per item).
#include <ATen/Context.h>
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <tuple>

#include "interpolate.cuh"
#include "interpolate_checks.h"

namespace voxrender {
namespace {

void check_launch(cudaError_t err, const char* kernel) {
  TORCH_CHECK(err == cudaSuccess, "voxrender: CUDA kernel ", kernel, " failed: ", cudaGetErrorString(err));
}

at::Tensor interpolate_cuda(const at::Tensor& attr, const at::Tensor& face_id_in, const at::Tensor& bary_in,
                            const at::Tensor& faces) {
  check_interpolate_inputs(attr, face_id_in, bary_in, faces);
  TORCH_CHECK_VALUE(attr.is_cuda(), "attr: expected a CUDA tensor, got device ", attr.device());
  const c10::cuda::CUDAGuard device_guard(attr.device());
  const at::Tensor face_id = face_id_in.contiguous(), bary = bary_in.contiguous();
  at::Tensor out = at::empty({attr.size(0), face_id.size(1), face_id.size(2), attr.size(2)}, attr.options());
  if (out.numel() == 0) return out;
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(attr.scalar_type(), "interpolate_cuda", [&] {
    scalar_t* o = out.data_ptr<scalar_t>();
    const cudaError_t err =
        faces.scalar_type() == at::kInt
            ? cuda::launch_interpolate_forward(make_interpolate_problem<scalar_t, int32_t>(attr, face_id, bary, faces),
                                               o, stream)
            : cuda::launch_interpolate_forward(make_interpolate_problem<scalar_t, int64_t>(attr, face_id, bary, faces),
                                               o, stream);
    check_launch(err, "interpolate forward");
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> interpolate_backward_cuda(const at::Tensor& grad_out_in, const at::Tensor& attr,
                                                             const at::Tensor& face_id_in, const at::Tensor& bary_in,
                                                             const at::Tensor& faces, bool attr_grad, bool bary_grad) {
  check_interpolate_inputs(attr, face_id_in, bary_in, faces);
  check_interpolate_grad(grad_out_in, attr, face_id_in);
  TORCH_CHECK_VALUE(attr.is_cuda(), "attr: expected a CUDA tensor, got device ", attr.device());
  const c10::cuda::CUDAGuard device_guard(attr.device());
  const at::Tensor face_id = face_id_in.contiguous(), bary = bary_in.contiguous(), grad_out = grad_out_in.contiguous();
  at::Tensor grad_attr = attr_grad ? at::zeros({attr.size(0), attr.size(1), attr.size(2)}, attr.options())
                                   : at::empty({0}, attr.options());
  at::Tensor grad_bary = bary_grad ? at::empty(bary.sizes(), bary.options()) : at::empty({0}, bary.options());
  if (face_id.numel() == 0 || (!attr_grad && !bary_grad)) return {grad_attr, grad_bary};
  // grad_attr is scattered with atomicAdd: its summation order varies from run to run.
  if (attr_grad && attr.size(2) > 0) at::globalContext().alertNotDeterministic("voxrender interpolate backward (cuda)");
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(attr.scalar_type(), "interpolate_backward_cuda", [&] {
    scalar_t* ga = attr_grad ? grad_attr.data_ptr<scalar_t>() : nullptr;
    scalar_t* gb = bary_grad ? grad_bary.data_ptr<scalar_t>() : nullptr;
    const scalar_t* g = grad_out.data_ptr<scalar_t>();
    const cudaError_t err =
        faces.scalar_type() == at::kInt
            ? cuda::launch_interpolate_backward(make_interpolate_problem<scalar_t, int32_t>(attr, face_id, bary, faces),
                                                g, ga, gb, stream)
            : cuda::launch_interpolate_backward(make_interpolate_problem<scalar_t, int64_t>(attr, face_id, bary, faces),
                                                g, ga, gb, stream);
    check_launch(err, "interpolate backward");
  });
  return {grad_attr, grad_bary};
}

}  // namespace
}  // namespace voxrender

TORCH_LIBRARY_IMPL(voxrender, CUDA, m) {
  m.impl("interpolate", &voxrender::interpolate_cuda);
  m.impl("interpolate_backward", &voxrender::interpolate_backward_cuda);
}
