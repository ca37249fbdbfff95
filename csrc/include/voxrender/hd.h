// VR_HD marks the torch-free math shared by the C++ CPU ops and the CUDA kernels: host + device and
// force-inlined under nvcc, plain always-inline C++ elsewhere.
#pragma once

#ifndef VR_HD
#if defined(__CUDACC__)
#define VR_HD __host__ __device__ __forceinline__
#else
#define VR_HD inline __attribute__((always_inline))
#endif
#endif
