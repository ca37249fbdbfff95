// Host entry points around the emulated rasterize kernels (tests/cuda_emu.py): the same steps as the CUDA
// glue (csrc/ops/rasterize_cuda.cpp): count, inclusive prefix sum, z-buffer passes.
#include "rasterize_emu.cpp"  // csrc/kernels/rasterize.cu with its launches rewritten for emu::launch

#include <vector>

namespace {

template <typename T, typename I>
int run(int64_t B, int64_t V, int64_t F, int H, int W, int cull, const void* verts, const void* faces,
        const int64_t* face_stride, int32_t* face_id, void* depth) {
  voxrender::cuda::RasterProblem<T, I> p;
  p.B = B, p.V = V, p.F = F, p.H = H, p.W = W, p.cull = cull != 0;
  p.verts = static_cast<const T*>(verts);
  p.faces = static_cast<const I*>(faces);
  for (int k = 0; k < 3; ++k) p.face_stride[k] = face_stride[k];
  std::vector<int64_t> offsets(size_t(B * F));
  if (B * F > 0) {
    if (voxrender::cuda::launch_rasterize_count<T, I>(p, offsets.data(), nullptr) != cudaSuccess) return 1;
    for (size_t g = 1; g < offsets.size(); ++g) offsets[g] += offsets[g - 1];
  }
  return voxrender::cuda::launch_rasterize_faces<T, I>(p, B * F > 0 ? offsets.data() : nullptr, face_id,
                                                       static_cast<T*>(depth), nullptr) == cudaSuccess
             ? 0
             : 1;
}

}  // namespace

extern "C" int emu_rasterize(int is_double, int is_int64, int64_t B, int64_t V, int64_t F, int H, int W, int cull,
                             const void* verts, const void* faces, const int64_t* face_stride, int32_t* face_id,
                             void* depth, int multiprocessors) {
  emu::multiprocessors = multiprocessors;
  if (is_double) {
    return is_int64 ? run<double, int64_t>(B, V, F, H, W, cull, verts, faces, face_stride, face_id, depth)
                    : run<double, int32_t>(B, V, F, H, W, cull, verts, faces, face_stride, face_id, depth);
  }
  return is_int64 ? run<float, int64_t>(B, V, F, H, W, cull, verts, faces, face_stride, face_id, depth)
                  : run<float, int32_t>(B, V, F, H, W, cull, verts, faces, face_stride, face_id, depth);
}
