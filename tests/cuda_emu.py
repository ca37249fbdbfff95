"""The CUDA kernels of rasterize and interpolate, compiled for the CPU and run under a small emulation.

Machines without a GPU (CI, the developers' machines) cannot run csrc/kernels/*.cu, but their logic (the
work distribution, index math, prefix-sum walk, barriers, atomics, encodings) is what is most likely to be
wrong. This module rewrites the launches (``k<<<grid, block, 0, stream>>>(args)`` becomes
``emu::launch(grid, block, [&] { k(args); })``), compiles the real kernel source with g++ against the shim
in tests/cuda_emu_src/cuda_runtime_api.h (each block's threads are std::threads, so the atomics race for
real), and exposes the launchers through ctypes. It does not replace the GPU tests (tests marked ``gpu``):
nvcc's code generation (FMA contraction, intrinsics) is only exercised there.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(ROOT, "tests", "cuda_emu_src")
KERNELS = os.path.join(ROOT, "csrc", "kernels")
INCLUDE = os.path.join(ROOT, "csrc", "include")

_lib: list = []


def _split_top_level(text: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch in "(<[":
            depth += 1
        elif ch in ")>]":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    return parts + [cur.strip()]


def _rewrite(path: str) -> str:
    """Rewrites ``kernel<...><<<grid, block, smem, stream>>>(args);`` as
    ``::emu::launch(grid, block, [&] { kernel<...>(args); });``."""
    text = open(path).read()
    out, pos, n = "", 0, 0
    while (start := text.find("<<<", pos)) >= 0:
        end = text.index(">>>", start)
        call_end = text.index(";", end)
        # The kernel name (with template arguments) runs back from <<< to the start of the statement.
        stmt_start = max(text.rfind(c, 0, start) for c in ";{}\n") + 1
        kernel = text[stmt_start:start].strip()
        config = _split_top_level(text[start + 3:end])
        args = text[end + 3:call_end].strip()
        out += text[pos:stmt_start] + f" ::emu::launch({config[0]}, {config[1]}, [&] {{ {kernel}{args}; }})"
        pos, n = call_end, n + 1
    if n == 0:
        raise RuntimeError(f"no kernel launch found in {path}")
    return out + text[pos:]


def unavailable_reason() -> str:
    if shutil.which(os.environ.get("CXX", "g++")) is None:
        return "no host C++ compiler (g++) to build the CUDA-kernel emulation"
    return ""


def build(kernels: list[str], harnesses: list[str], tag: str) -> ctypes.CDLL:
    """csrc/kernels/<kernel>.cu for each of ``kernels``, rewritten for the emulation and compiled with the
    ``harnesses`` (C++ entry points) into one shared library: built once per source version (every
    harness, shim, header and kernel file is hashed), cached in the temp folder."""
    sources = {name: _rewrite(os.path.join(KERNELS, name + ".cu")) for name in kernels}
    digest = hashlib.sha1()
    for name in sorted(sources):
        digest.update(sources[name].encode())
    for path in harnesses:
        digest.update(open(path, "rb").read())
    for folder in (SRC, INCLUDE, os.path.join(INCLUDE, "voxrender"), KERNELS):
        for f in sorted(os.listdir(folder)):
            if f.endswith((".h", ".cuh", ".cpp")):
                digest.update(open(os.path.join(folder, f), "rb").read())
    build_dir = os.path.join(tempfile.gettempdir(), f"voxrender_{tag}_emu_{digest.hexdigest()[:16]}")
    so = os.path.join(build_dir, f"lib{tag}_emu.so")
    if not os.path.exists(so):
        os.makedirs(build_dir, exist_ok=True)
        for name, text in sources.items():
            with open(os.path.join(build_dir, f"{name}_emu.cpp"), "w") as f:
                f.write(text)
        tmp = so + f".{os.getpid()}.tmp"
        cmd = [os.environ.get("CXX", "g++"), "-std=c++20", "-O1", "-ffp-contract=off", "-fPIC", "-shared", "-pthread",
               "-I", SRC, "-I", build_dir, "-I", KERNELS, "-I", INCLUDE, *harnesses, "-o", tmp]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(f"building the {tag} kernel emulation failed:\n" + res.stderr[-4000:])
        os.replace(tmp, so)
    return ctypes.CDLL(so)


def library():
    """The compiled emulation of the rasterize and interpolate kernels."""
    if _lib:
        return _lib[0]
    lib = build(["rasterize", "interpolate"],
                [os.path.join(SRC, "harness_rasterize.cpp"), os.path.join(SRC, "harness_interpolate.cpp")], "cuda")
    i64, i32, ptr = ctypes.c_int64, ctypes.c_int, ctypes.c_void_p
    lib.emu_rasterize.argtypes = [i32, i32, i64, i64, i64, i32, i32, i32, ptr, ptr, ptr, ptr, ptr, i32]
    lib.emu_rasterize.restype = i32
    lib.emu_interpolate.argtypes = [i32, i32, i64, i64, i64, i64, i64, ptr, ptr, ptr, ptr, ptr, ptr, ptr, ptr,
                                    ptr, ptr, i32]
    lib.emu_interpolate.restype = i32
    _lib.append(lib)
    return lib


def _strides(t: torch.Tensor) -> torch.Tensor:
    return torch.tensor(t.stride(), dtype=torch.int64)


def rasterize_face_ids(verts, faces, height, width, cull_backfaces=False, multiprocessors=1):
    """The CUDA rasterize_face_ids kernels on CPU tensors (same argument conventions as the op; faces keep
    their strides and dtype, as the CUDA glue passes them)."""
    lib = library()
    verts = verts.contiguous()
    B, V = verts.shape[:2]
    F = faces.shape[1]
    face_id = torch.empty(B, height, width, dtype=torch.int32)
    depth = torch.empty(B, height, width, dtype=verts.dtype)
    fs = _strides(faces)
    rc = lib.emu_rasterize(int(verts.dtype == torch.float64), int(faces.dtype == torch.int64), B, V, F, height, width,
                           int(cull_backfaces), verts.data_ptr(), faces.data_ptr() if faces.numel() else None,
                           fs.data_ptr(), face_id.data_ptr(), depth.data_ptr(), multiprocessors)
    assert rc == 0
    return face_id, depth


def _interp_args(attr, face_id, bary, faces):
    face_id, bary = face_id.contiguous(), bary.contiguous()
    B, V, C = attr.shape
    F = faces.shape[1]
    P = face_id.shape[1] * face_id.shape[2]
    return (int(attr.dtype == torch.float64), int(faces.dtype == torch.int64), B, V, F, C, P), face_id, bary


def interpolate(attr, face_id, bary, faces, multiprocessors=1):
    lib = library()
    head, face_id, bary = _interp_args(attr, face_id, bary, faces)
    B, H, W = face_id.shape
    out = torch.empty(B, H, W, attr.shape[2], dtype=attr.dtype)
    as_, fs = _strides(attr), _strides(faces)
    rc = lib.emu_interpolate(*head, attr.data_ptr(), as_.data_ptr(), face_id.data_ptr(), bary.data_ptr(),
                             faces.data_ptr(), fs.data_ptr(), None, out.data_ptr(), None, None, multiprocessors)
    assert rc == 0
    return out


def interpolate_backward(grad_out, attr, face_id, bary, faces, multiprocessors=1):
    lib = library()
    head, face_id, bary = _interp_args(attr, face_id, bary, faces)
    grad_out = grad_out.contiguous()
    grad_attr = torch.zeros(attr.shape, dtype=attr.dtype)
    grad_bary = torch.empty(bary.shape, dtype=bary.dtype)
    as_, fs = _strides(attr), _strides(faces)
    rc = lib.emu_interpolate(*head, attr.data_ptr(), as_.data_ptr(), face_id.data_ptr(), bary.data_ptr(),
                             faces.data_ptr(), fs.data_ptr(), grad_out.data_ptr(), None, grad_attr.data_ptr(),
                             grad_bary.data_ptr(), multiprocessors)
    assert rc == 0
    return grad_attr, grad_bary
