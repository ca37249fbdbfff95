// Host entry points around the emulated antialias kernels (tests/test_antialias.py, via the CUDA emulation
// of tests/cuda_emu.py: csrc/kernels/antialias.cu compiled by g++ with its launches rewritten for
// emu::launch, each block's threads as std::threads so the vertex-gradient atomics race for real).
#include "antialias_emu.cpp"  // csrc/kernels/antialias.cu, launches rewritten

namespace {

template <typename T>
int run(int64_t B, int H, int W, int C, int64_t V, int64_t F, const void* color, const int32_t* face_id,
        const void* depth, const void* verts, const int64_t* faces, const bool* silhouette, const int64_t* adjacency,
        const void* grad_out, void* out, void* grad_color, void* grad_verts) {
  voxrender::AntialiasProblem<T> p;
  p.B = B, p.V = V, p.F = F, p.H = H, p.W = W, p.C = C;
  p.color = static_cast<const T*>(color);
  p.face_id = face_id;
  p.depth = static_cast<const T*>(depth);
  p.verts = static_cast<const T*>(verts);
  p.faces = faces;
  p.silhouette = silhouette;
  p.adjacency = adjacency;
  cudaError_t err;
  if (out) {
    err = voxrender::cuda::launch_antialias_forward<T>(p, static_cast<T*>(out), nullptr);
  } else {
    err = voxrender::cuda::launch_antialias_backward<T>(p, static_cast<const T*>(grad_out), static_cast<T*>(grad_color),
                                                        static_cast<T*>(grad_verts), nullptr);
  }
  return err == cudaSuccess ? 0 : 1;
}

}  // namespace

// out != null: the forward into out. Else the backward: writes grad_color and adds into grad_verts (zero-filled
// by the caller). All tensors contiguous; faces and adjacency int64.
extern "C" int emu_antialias(int is_double, int64_t B, int H, int W, int C, int64_t V, int64_t F, const void* color,
                             const int32_t* face_id, const void* depth, const void* verts, const int64_t* faces,
                             const bool* silhouette, const int64_t* adjacency, const void* grad_out, void* out,
                             void* grad_color, void* grad_verts) {
  if (is_double)
    return run<double>(B, H, W, C, V, F, color, face_id, depth, verts, faces, silhouette, adjacency, grad_out, out,
                       grad_color, grad_verts);
  return run<float>(B, H, W, C, V, F, color, face_id, depth, verts, faces, silhouette, adjacency, grad_out, out,
                    grad_color, grad_verts);
}
