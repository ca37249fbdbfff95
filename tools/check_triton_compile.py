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
    failed = 0
    for fn, dt, constexprs in variants:
        start = time.time()
        try:
            k = triton.compile(ASTSource(fn=fn, signature=signature(fn, dt, constexprs), constexprs=constexprs),
                               target=target, options={"num_warps": vp.NUM_WARPS})
            print(f"OK   {fn.__name__:24s} {dt} {constexprs} ({time.time() - start:.1f} s, cubin {len(k.asm['cubin'])} B)")
        except Exception as e:  # report every variant, then fail
            failed += 1
            print(f"FAIL {fn.__name__:24s} {dt} {constexprs}: {type(e).__name__}: {e}")
    print(f"{len(variants) - failed}/{len(variants)} Triton kernel variants compiled for sm_{args.arch}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
