// Host entry point around the emulated fragments kernels (tests/test_fragments_op.py, via the CUDA emulation
// of tests/cuda_emu.py: csrc/kernels/fragments.cu compiled by g++ with its launches rewritten for emu::launch,
// each block's threads as std::threads so the vertex-gradient atomics race for real).
#include "fragments_emu.cpp"  // csrc/kernels/fragments.cu, launches rewritten

namespace {

template <typename T, typename I>
int run(int64_t B, int64_t V, int64_t F, int64_t H, int64_t W, const void* verts, const int64_t* vert_stride,
        const void* faces, const int64_t* face_stride, const int32_t* face_id, const void* grad_bary,
        const void* grad_depth, void* bary, void* depth, void* grad_verts) {
  voxrender::FragmentsProblem<T, I> p;
  p.B = B, p.V = V, p.F = F, p.H = H, p.W = W, p.P = H * W;
  p.verts = static_cast<const T*>(verts);
  p.faces = static_cast<const I*>(faces);
  p.face_id = face_id;
  for (int k = 0; k < 3; ++k) p.vert_stride[k] = vert_stride[k], p.face_stride[k] = face_stride[k];
  cudaError_t err;
  if (bary) {
    err = voxrender::cuda::launch_fragments_forward<T, I>(p, static_cast<T*>(bary), static_cast<T*>(depth), nullptr);
  } else {
    err = voxrender::cuda::launch_fragments_backward<T, I>(p, static_cast<const T*>(grad_bary),
                                                           static_cast<const T*>(grad_depth),
                                                           static_cast<T*>(grad_verts), nullptr);
  }
  return err == cudaSuccess ? 0 : 1;
}

}  // namespace

// bary != null: the forward into bary and depth. Else the backward: adds into grad_verts (zero-filled by the
// caller; grad_bary and grad_depth may be null). face_id, bary, depth, grads contiguous; verts and faces strided.
extern "C" int emu_fragments(int is_double, int is_int64, int64_t B, int64_t V, int64_t F, int64_t H, int64_t W,
                             const void* verts, const int64_t* vert_stride, const void* faces,
                             const int64_t* face_stride, const int32_t* face_id, const void* grad_bary,
                             const void* grad_depth, void* bary, void* depth, void* grad_verts, int multiprocessors) {
  emu::multiprocessors = multiprocessors;
#define VR_RUN(T, I) \
  run<T, I>(B, V, F, H, W, verts, vert_stride, faces, face_stride, face_id, grad_bary, grad_depth, bary, depth, grad_verts)
  if (is_double) return is_int64 ? VR_RUN(double, int64_t) : VR_RUN(double, int32_t);
  return is_int64 ? VR_RUN(float, int64_t) : VR_RUN(float, int32_t);
#undef VR_RUN
}
