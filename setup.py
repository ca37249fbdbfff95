"""Build of voxrender's native extension (voxrender._C).

Decision, printed at build time and readable at run time (``voxrender info``):
- ``VOXRENDER_NO_EXTENSION=1``: no extension; the package works through the torch and triton backends.
- torch importable with CUDA and nvcc found (or ``FORCE_CUDA=1``): CPU + CUDA extension.
- otherwise (a CPU torch): CPU-only extension.
Install with ``pip install --no-build-isolation -e .`` so the extension is compiled against the torch
already installed (the build never downloads torch).
"""

import glob
import os
import sys

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _ext_modules():
    if os.environ.get("VOXRENDER_NO_EXTENSION", "0") == "1":
        print("voxrender setup: VOXRENDER_NO_EXTENSION=1, building no native extension")
        return [], {}
    try:
        import torch
        from torch.utils import cpp_extension as ce
    except ImportError:
        print("voxrender setup: torch is not importable (install it first and use --no-build-isolation); "
              "building no native extension")
        return [], {}

    force_cuda = os.environ.get("FORCE_CUDA", "0") == "1"
    with_cuda = force_cuda or (torch.version.cuda is not None and ce.CUDA_HOME is not None)
    sources = sorted(glob.glob(os.path.join("csrc", "ops", "*.cpp")))
    if not with_cuda:
        sources = [s for s in sources if not s.endswith("_cuda.cpp")]
    include_dirs = [os.path.join(ROOT, "csrc", "include"), os.path.join(ROOT, "csrc", "kernels")]
    cxx = ["-O3"]  # the C++ standard is the one torch's BuildExtension picks for its headers
    openmp = ["-fopenmp"] if sys.platform.startswith("linux") else []
    cxx += openmp
    define_macros = []
    if with_cuda:
        sources += sorted(glob.glob(os.path.join("csrc", "kernels", "*.cu")))
        nvcc = ["-O3", "-std=c++17", "-lineinfo"]  # no fast-math: float results stay within rounding of the CPU path
        cxx.append("-DVOXRENDER_WITH_CUDA")
        nvcc.append("-DVOXRENDER_WITH_CUDA")
        ext = ce.CUDAExtension("voxrender._C", sources, include_dirs=include_dirs,
                               extra_compile_args={"cxx": cxx, "nvcc": nvcc}, extra_link_args=openmp,
                               define_macros=define_macros)
        print(f"voxrender setup: building CPU + CUDA extension (torch {torch.__version__}, "
              f"CUDA {torch.version.cuda}, CUDA_HOME={ce.CUDA_HOME}, FORCE_CUDA={int(force_cuda)})")
    else:
        ext = ce.CppExtension("voxrender._C", sources, include_dirs=include_dirs,
                              extra_compile_args={"cxx": cxx}, extra_link_args=openmp,
                              define_macros=define_macros)
        why = "torch has no CUDA" if torch.version.cuda is None else "nvcc/CUDA_HOME not found"
        print(f"voxrender setup: building CPU-only extension (torch {torch.__version__}; {why})")
    return [ext], {"build_ext": ce.BuildExtension.with_options(no_python_abi_suffix=False)}


ext_modules, cmdclass = _ext_modules()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
