// CUDA glue of rasterize_face_ids: the argument checks shared with the CPU op (rasterize_checks.h), device
// guard and stream, output allocation, the per-face prefix sum, and the calls into the torch-free launchers
// of csrc/kernels/rasterize.cu. Compiled by the host compiler, and only in a CUDA build (setup.py drops
// *_cuda.cpp otherwise).
//
// No host synchronisation: the index values are not checked here (that would read them back from the
// device); a face row with an index outside [0, V) covers nothing, and voxrender.rasterize checks the
// range once per call before calling the op. faces keep their strides and dtype (an expand()ed shared
// (F, 3) tensor is not copied B times).
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/cumsum.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <tuple>

#include "rasterize.cuh"
#include "rasterize_checks.h"

namespace voxrender {
namespace {

void check_launch(cudaError_t err, const char* kernel) {
  TORCH_CHECK(err == cudaSuccess, "voxrender: CUDA kernel ", kernel, " failed: ", cudaGetErrorString(err));
}

template <typename T, typename I>
void rasterize_cuda_impl(const at::Tensor& verts, const at::Tensor& faces, int H, int W, bool cull,
                         at::Tensor& face_id, at::Tensor& depth) {
  cuda::RasterProblem<T, I> p;
  p.B = verts.size(0), p.V = verts.size(1), p.F = faces.size(1);
  p.H = H, p.W = W, p.cull = cull;
  p.verts = verts.data_ptr<T>();
  p.faces = faces.data_ptr<I>();
  for (int k = 0; k < 3; ++k) p.face_stride[k] = faces.stride(k);
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  at::Tensor offsets;
  if (p.B * p.F > 0) {
    at::Tensor tile_count = at::empty({p.B * p.F}, verts.options().dtype(at::kLong));
    check_launch(cuda::launch_rasterize_count<T, I>(p, tile_count.data_ptr<int64_t>(), stream),
                 "rasterize_face_ids (count)");
    offsets = at::cumsum(tile_count, 0);  // int64, on the device: the host never sees the total
  }
  check_launch(cuda::launch_rasterize_faces<T, I>(p, offsets.defined() ? offsets.data_ptr<int64_t>() : nullptr,
                                                  face_id.data_ptr<int32_t>(), depth.data_ptr<T>(), stream),
               "rasterize_face_ids (z-buffer)");
}

std::tuple<at::Tensor, at::Tensor> rasterize_face_ids_cuda(const at::Tensor& verts_in, const at::Tensor& faces_in,
                                                           int64_t height, int64_t width, bool cull_backfaces) {
  check_rasterize_inputs(verts_in, faces_in, height, width);
  TORCH_CHECK_VALUE(verts_in.is_cuda(), "verts: expected a CUDA tensor, got device ", verts_in.device());
  const c10::cuda::CUDAGuard device_guard(verts_in.device());
  const at::Tensor verts = verts_in.contiguous();
  const int64_t B = verts.size(0);
  at::Tensor face_id = at::empty({B, height, width}, verts.options().dtype(at::kInt));
  at::Tensor depth = at::empty({B, height, width}, verts.options());
  if (face_id.numel() == 0) return {face_id, depth};
  AT_DISPATCH_FLOATING_TYPES(verts.scalar_type(), "rasterize_face_ids_cuda", [&] {
    if (faces_in.scalar_type() == at::kInt) {
      rasterize_cuda_impl<scalar_t, int32_t>(verts, faces_in, int(height), int(width), cull_backfaces, face_id, depth);
    } else {
      rasterize_cuda_impl<scalar_t, int64_t>(verts, faces_in, int(height), int(width), cull_backfaces, face_id, depth);
    }
  });
  return {face_id, depth};
}

}  // namespace
}  // namespace voxrender

TORCH_LIBRARY_IMPL(voxrender, CUDA, m) { m.impl("rasterize_face_ids", &voxrender::rasterize_face_ids_cuda); }
