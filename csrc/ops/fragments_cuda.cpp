// CUDA glue of the fused fragments ops: the argument checks shared with the CPU op (fragments_checks.h),
// device guard and stream, output allocation, and the calls into the torch-free launchers of
// csrc/kernels/fragments.cu. Compiled by the host compiler, and only in a CUDA build (setup.py drops
// *_cuda.cpp otherwise).
//
// No host synchronisation and no value checks (they would read values back from the device): face ids
// outside [-1, F) and vertex indices outside [-1, V) are read as background. verts and faces keep their
// strides (an expand()ed shared faces is not copied per item). The backward scatters with atomicAdd, so it
// alerts under torch.use_deterministic_algorithms(True).
#include <ATen/Context.h>
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "fragments.cuh"
#include "fragments_checks.h"

namespace voxrender {
namespace {

void check_launch(cudaError_t err, const char* kernel) {
  TORCH_CHECK(err == cudaSuccess, "voxrender: CUDA kernel ", kernel, " failed: ", cudaGetErrorString(err));
}

std::tuple<at::Tensor, at::Tensor> fragments_forward_cuda(const at::Tensor& verts, const at::Tensor& faces,
                                                          const at::Tensor& face_id_in) {
  check_fragments_inputs(verts, faces, face_id_in);
  TORCH_CHECK_VALUE(verts.is_cuda(), "verts: expected a CUDA tensor, got device ", verts.device());
  const c10::cuda::CUDAGuard device_guard(verts.device());
  const at::Tensor face_id = face_id_in.contiguous();
  const int64_t B = face_id.size(0), H = face_id.size(1), W = face_id.size(2);
  at::Tensor bary = at::empty({B, H, W, 3}, verts.options());
  at::Tensor depth = at::empty({B, H, W}, verts.options());
  if (depth.numel() == 0) return {bary, depth};
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(verts.scalar_type(), "fragments_forward_cuda", [&] {
    if (faces.scalar_type() == at::kInt) {
      check_launch(cuda::launch_fragments_forward(make_fragments_problem<scalar_t, int32_t>(verts, faces, face_id),
                                                  bary.data_ptr<scalar_t>(), depth.data_ptr<scalar_t>(), stream),
                   "fragments forward");
    } else {
      check_launch(cuda::launch_fragments_forward(make_fragments_problem<scalar_t, int64_t>(verts, faces, face_id),
                                                  bary.data_ptr<scalar_t>(), depth.data_ptr<scalar_t>(), stream),
                   "fragments forward");
    }
  });
  return {bary, depth};
}

at::Tensor fragments_backward_cuda(const std::optional<at::Tensor>& grad_bary_in,
                                   const std::optional<at::Tensor>& grad_depth_in, const at::Tensor& verts,
                                   const at::Tensor& faces, const at::Tensor& face_id_in) {
  check_fragments_inputs(verts, faces, face_id_in);
  check_fragments_grads(grad_bary_in, grad_depth_in, verts, face_id_in);
  TORCH_CHECK_VALUE(verts.is_cuda(), "verts: expected a CUDA tensor, got device ", verts.device());
  const c10::cuda::CUDAGuard device_guard(verts.device());
  const at::Tensor face_id = face_id_in.contiguous();
  const at::Tensor grad_bary = contiguous_or_undefined(grad_bary_in);
  const at::Tensor grad_depth = contiguous_or_undefined(grad_depth_in);
  at::Tensor grad_verts = at::zeros({verts.size(0), verts.size(1), 4}, verts.options());
  if (face_id.numel() == 0 || grad_verts.numel() == 0 || (!grad_bary.defined() && !grad_depth.defined()))
    return grad_verts;
  // grad_verts is scattered with atomicAdd: its summation order varies from run to run.
  at::globalContext().alertNotDeterministic("voxrender rasterize backward (cuda)");
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(verts.scalar_type(), "fragments_backward_cuda", [&] {
    const scalar_t* gb = grad_bary.defined() ? grad_bary.data_ptr<scalar_t>() : nullptr;
    const scalar_t* gd = grad_depth.defined() ? grad_depth.data_ptr<scalar_t>() : nullptr;
    if (faces.scalar_type() == at::kInt) {
      check_launch(cuda::launch_fragments_backward(make_fragments_problem<scalar_t, int32_t>(verts, faces, face_id), gb,
                                                   gd, grad_verts.data_ptr<scalar_t>(), stream),
                   "fragments backward");
    } else {
      check_launch(cuda::launch_fragments_backward(make_fragments_problem<scalar_t, int64_t>(verts, faces, face_id), gb,
                                                   gd, grad_verts.data_ptr<scalar_t>(), stream),
                   "fragments backward");
    }
  });
  return grad_verts;
}

}  // namespace
}  // namespace voxrender

TORCH_LIBRARY_IMPL(voxrender, CUDA, m) {
  m.impl("fragments_forward", &voxrender::fragments_forward_cuda);
  m.impl("fragments_backward", &voxrender::fragments_backward_cuda);
}
