"""How much of an eval-gan2shape error is the viewpoint net's? A developer diagnostic, not GAN2Shape.

Runs ``voxrender eval-gan2shape --nets-only`` (the pretrained networks alone, no per-image steps) with the view
that V predicts for each held-out synthetic face replaced by the face's TRUE view (``--replace all``), its true
yaw only (``yaw``) or its true rotations only (``rot``). The true view is in the renderer's convention (radians,
camera units), the same as V's output, so the true canonical depth rendered with it IS the face. Compare the
SIDE / MAD it prints with the same command without this tool.

    python tools/diag_oracle_view.py --replace all --out runs/ov -- --gan synface64 --n 32 \\
        --pretrained runs/pre/pretrained.pt --depth-anchor --tilt-anchor --prior-box plain

Everything after ``--`` goes to ``voxrender eval-gan2shape`` (``--nets-only`` is added). The faces are run in
order, one GAN2Shape.run each, which is how the true views are matched to them.
"""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                epilog="arguments after -- go to voxrender eval-gan2shape")
    p.add_argument("--replace", choices=("all", "yaw", "rot"), default="all",
                   help="which part of V's view becomes the true one (default: all six numbers)")
    p.add_argument("--out", required=True, help="the eval's output folder")
    argv = sys.argv[1:] if argv is None else argv
    ours, rest = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    args = p.parse_args(ours)
    eval_argv = ["eval-gan2shape", *rest, *([] if "--nets-only" in rest else ["--nets-only"]), "--out", args.out]
    # eval-gan2shape's own parser reads the faces it will run (--n, --split with its defaults)
    from voxrender.models.gan2shape.cli import add_gan2shape_commands

    top = argparse.ArgumentParser(prog="voxrender")
    add_gan2shape_commands(top.add_subparsers())
    known = top.parse_args(eval_argv)

    # the class eval-gan2shape runs (voxrender.models.gan2shape, not the top-level models package: two module
    # objects of the same file, patching one leaves the other alone)
    from voxrender.models.gan2shape import model as gm

    from voxrender.data.faces import SyntheticFaces

    state = {"k": -1, "truth": None}
    run0, predict0 = gm.GAN2Shape.run, gm.GAN2Shape.predict

    def run(self, *a, **kw):
        if state["truth"] is None:  # after the eval has checked its arguments (a face's view is the same at any size)
            state["truth"] = SyntheticFaces(known.n, size=32, split=known.split).get_batch(range(known.n))["view"]
        state["k"] += 1
        return run0(self, *a, **kw)

    def predict(self, x=None, train=()):
        out = predict0(self, x, train)
        if x is None:  # the input image's own view (pseudo / projected samples keep V's)
            v, t = out["view"].clone(), state["truth"][state["k"]].to(out["view"])
            cols = {"all": slice(0, 6), "yaw": slice(1, 2), "rot": slice(0, 3)}[args.replace]
            v[:, cols] = t[cols]
            out["view"] = v
        return out

    from voxrender.cli import main as cli_main

    gm.GAN2Shape.run, gm.GAN2Shape.predict = run, predict
    try:
        return cli_main(eval_argv)
    finally:  # the class as it was (the tool may run inside a test process)
        gm.GAN2Shape.run, gm.GAN2Shape.predict = run0, predict0


if __name__ == "__main__":
    sys.exit(main())
