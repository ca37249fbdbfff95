// Host entry points around the emulated interpolate kernels (tests/cuda_emu.py).
#include "interpolate_emu.cpp"  // csrc/kernels/interpolate.cu with its launches rewritten for emu::launch

namespace {

template <typename T, typename I>
voxrender::InterpolateProblem<T, I> problem(int64_t B, int64_t V, int64_t F, int64_t C, int64_t P, const void* attr,
                                            const int64_t* attr_stride, const int32_t* face_id, const void* bary,
                                            const void* faces, const int64_t* face_stride) {
  voxrender::InterpolateProblem<T, I> p;
  p.B = B, p.V = V, p.F = F, p.C = C, p.P = P;
  p.attr = static_cast<const T*>(attr);
  p.face_id = face_id;
  p.bary = static_cast<const T*>(bary);
  p.faces = static_cast<const I*>(faces);
  for (int k = 0; k < 3; ++k) p.attr_stride[k] = attr_stride[k], p.face_stride[k] = face_stride[k];
  return p;
}

template <typename T, typename I>
int run(int64_t B, int64_t V, int64_t F, int64_t C, int64_t P, const void* attr, const int64_t* attr_stride,
        const int32_t* face_id, const void* bary, const void* faces, const int64_t* face_stride, const void* grad_out,
        void* out, void* grad_attr, void* grad_bary) {
  const auto p = problem<T, I>(B, V, F, C, P, attr, attr_stride, face_id, bary, faces, face_stride);
  if (out) {
    return voxrender::cuda::launch_interpolate_forward<T, I>(p, static_cast<T*>(out), nullptr) == cudaSuccess ? 0 : 1;
  }
  return voxrender::cuda::launch_interpolate_backward<T, I>(p, static_cast<const T*>(grad_out),
                                                            static_cast<T*>(grad_attr), static_cast<T*>(grad_bary),
                                                            nullptr) == cudaSuccess
             ? 0
             : 1;
}

}  // namespace

// out != null: forward into out. Else backward: adds into grad_attr (zero-filled by the caller) and writes
// grad_bary (either may be null).
extern "C" int emu_interpolate(int is_double, int is_int64, int64_t B, int64_t V, int64_t F, int64_t C, int64_t P,
                               const void* attr, const int64_t* attr_stride, const int32_t* face_id, const void* bary,
                               const void* faces, const int64_t* face_stride, const void* grad_out, void* out,
                               void* grad_attr, void* grad_bary, int multiprocessors) {
  emu::multiprocessors = multiprocessors;
#define VR_RUN(T, I) \
  run<T, I>(B, V, F, C, P, attr, attr_stride, face_id, bary, faces, face_stride, grad_out, out, grad_attr, grad_bary)
  if (is_double) return is_int64 ? VR_RUN(double, int64_t) : VR_RUN(double, int32_t);
  return is_int64 ? VR_RUN(float, int64_t) : VR_RUN(float, int32_t);
#undef VR_RUN
}
