"""Compiles every Triton kernel variant of voxrender for an NVIDIA target without a GPU (ahead-of-time
lowering to PTX and cubin with Triton's bundled ptxas), so CI catches kernels that the interpreter runs
but the real compiler rejects. Usage: python tools/check_triton_compile.py [--arch 90]
"""

import argparse
import itertools
import os
import sys
import time

if os.environ.get("TRITON_INTERPRET", "0") == "1":
    sys.exit("check_triton_compile: unset TRITON_INTERPRET (this compiles for the GPU)")

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

import voxrender.triton.interpolate as ip
import voxrender.triton.rasterize as rz
import voxrender.triton.volume_projection as vp


def signature(fn, dtype, constexprs):
    sig = {}
    for name in fn.arg_names:
        if name in constexprs:
            sig[name] = "constexpr"
        elif name.endswith("_ptr"):
            sig[name] = "*" + dtype
        else:
            sig[name] = "i32"
    return sig


def typed_signature(fn, types, constexprs):
    """Like signature(), with each argument's type given explicitly (constexprs, then 'types', else i32)."""
    return {n: "constexpr" if n in constexprs else types.get(n, "i32") for n in fn.arg_names}


def raster_variants():
    """The rasterizer's visibility kernel and the interpolate kernels, every variant the launchers use
    (float32/float64, int32/int64 faces, each channel chunk, each gradient selection), with their launch
    options (no FMA contraction)."""
    out = []
    for dt in ("fp32", "fp64"):
        ptr = "*" + dt
        cx = {"TILE_H": rz.TILE_H, "TILE_W": rz.TILE_W}
        types = {"fprm_ptr": ptr, "iprm_ptr": "*i64", "px_ptr": ptr, "py_ptr": ptr, "tile_start_ptr": "*i64",
                 "pair_face_ptr": "*i32", "out_ptr": "*i32"}
        fn = rz._raster_tile_kernel
        out.append((fn, dt, cx, typed_signature(fn, types, cx), dict(rz._LAUNCH)))
        for fdt in ("i32", "i64"):
            for cc in (1, 2, 4, 8, ip.MAX_CC):
                cx = {"BLOCK": ip.BLOCK, "CC": cc}
                types = {"attr_ptr": ptr, "fid_ptr": "*i32", "bary_ptr": ptr, "faces_ptr": "*" + fdt,
                         "out_ptr": ptr, "go_ptr": ptr, "gattr_ptr": ptr, "gbary_ptr": ptr}
                fn = ip._interp_forward_kernel
                out.append((fn, f"{dt}/{fdt}", cx, typed_signature(fn, types, cx), dict(ip._LAUNCH)))
                fn = ip._interp_backward_kernel
                for ag, bg in ((True, True), (True, False), (False, True)):
                    cxb = {**cx, "ATTR_GRAD": ag, "BARY_GRAD": bg}
                    out.append((fn, f"{dt}/{fdt}", cxb, typed_signature(fn, types, cxb), dict(ip._LAUNCH)))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--arch", type=int, default=90, help="compute capability, e.g. 90 (H100) or 80 (A100)")
    args = ap.parse_args()
    target = GPUTarget("cuda", args.arch, 32)
    variants = []
    for dt in ("fp32", "fp64"):
        for mode, persp in itertools.product((0, 1, 2), (False, True)):
            variants.append((vp._forward_scalar_kernel, dt, {"MODE": mode, "PERSPECTIVE": persp, "BLOCK": vp.BLOCK}))
            for rg in (False, True):
                variants.append((vp._backward_scalar_kernel, dt,
                                 {"MODE": mode, "PERSPECTIVE": persp, "ROT_GRAD": rg, "BLOCK": vp.BLOCK}))
        for persp, cc in itertools.product((False, True), (1, 4)):
            variants.append((vp._forward_ea_kernel, dt, {"PERSPECTIVE": persp, "BLOCK": vp.BLOCK, "CC": cc}))
            for rg in (False, True):
                variants.append((vp._backward_ea_kernel, dt,
                                 {"PERSPECTIVE": persp, "ROT_GRAD": rg, "BLOCK": vp.BLOCK, "CC": cc}))
    variants += raster_variants()
    failed = 0
    for fn, dt, constexprs, *typed in variants:
        # Entries with explicit pointer types carry (signature, options) as well.
        sig, options = typed if typed else (signature(fn, dt, constexprs), {"num_warps": vp.NUM_WARPS})
        start = time.time()
        try:
            k = triton.compile(ASTSource(fn=fn, signature=sig, constexprs=constexprs),
                               target=target, options=options)
            print(f"OK   {fn.__name__:24s} {dt} {constexprs} ({time.time() - start:.1f} s, cubin {len(k.asm['cubin'])} B)")
        except Exception as e:  # report every variant, then fail
            failed += 1
            print(f"FAIL {fn.__name__:24s} {dt} {constexprs}: {type(e).__name__}: {e}")
    print(f"{len(variants) - failed}/{len(variants)} Triton kernel variants compiled for sm_{args.arch}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
