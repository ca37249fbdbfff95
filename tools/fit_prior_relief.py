"""Which ellipsoid prior fits the built-in faces? A developer tool for ``--prior-near`` / ``--prior-far``.

GAN2Shape's ellipsoid prior (``prior.ellipsoid_depth_prior``) is a spherical cap rising from ``far`` at the
rim of the object's box to ``near`` at its centre. Its rise (far - near) sets how deep the recovered faces
come out: the shape learnt from it keeps its relief (the bas-relief ambiguity leaves the depth scale to the
prior), and SIDE counts a relief too deep or too shallow. This tool measures, on TRAINING faces (never the
held-out ones), for each rise the least-squares slope of log(prior) against log(true view depth) over
Unsup3d's evaluation mask, the median over the faces (1: the prior's relief has the faces' scale), and
finds by bisection the rise whose median slope is 1. It then places the cap so that its mean over the
object mask equals the mean true canonical depth there (what ``--depth-anchor`` holds the canonical depth
to), and prints the ``--prior-near`` / ``--prior-far`` to pass.

    python tools/fit_prior_relief.py --n 200 --prior-box plain

The slope is what SIDE is sensitive to; the cap's shape (a dome, the faces a plate with a nose) is fixed, so
the rise that matches the faces' nose tip (0.07 above the rim on average) is too deep for their bulk.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from voxrender.data.faces import SyntheticFaces
from voxrender.models.gan2shape.metrics import evaluation_mask
from voxrender.models.gan2shape.prior import PRIOR_BOXES, ellipsoid_depth_prior, object_mask

# the rise is fitted with the rim at this depth (the slope hardly depends on it), then the cap is placed
FIT_FAR = 1.03


def relief_slopes(prior: torch.Tensor, gt_depth: torch.Tensor) -> torch.Tensor:
    """(B,) least-squares slope of log(prior) on log(gt_depth) over Unsup3d's evaluation mask (prediction
    mask: everything, as the baselines are scored). NaN where the mask has fewer than 3 pixels."""
    m = evaluation_mask(prior.float(), gt_depth.float(), pred_mask=torch.ones_like(gt_depth))
    out = []
    for p, g, mk in zip(prior.double(), gt_depth.double(), m.bool()):
        if int(mk.sum()) < 3:
            out.append(float("nan"))
            continue
        x, y = g[mk].log(), p[mk].log()
        x, y = x - x.mean(), y - y.mean()
        out.append(float((x * y).sum() / (x * x).sum()))
    return torch.tensor(out, dtype=torch.float64)


def median_slope(masks: torch.Tensor, gt_depth: torch.Tensor, rise: float, far: float, box: str | None) -> float:
    """The median over faces of :func:`relief_slopes` for the prior of ``masks`` with this rise and far."""
    prior = ellipsoid_depth_prior(masks, near=far - rise, far=far, category=box)
    return float(np.nanmedian(relief_slopes(prior, gt_depth).numpy()))


def fit_rise(masks: torch.Tensor, gt_depth: torch.Tensor, box: str | None, far: float = FIT_FAR, lo: float = 0.005,
             hi: float = 0.2, iters: int = 30) -> float:
    """The rise whose median slope is 1, by bisection on [lo, hi] (the slope grows with the rise)."""
    s_lo, s_hi = median_slope(masks, gt_depth, lo, far, box), median_slope(masks, gt_depth, hi, far, box)
    if not s_lo < 1 < s_hi:
        raise ValueError(f"the median slope is {s_lo:.3f} at rise {lo} and {s_hi:.3f} at rise {hi}: no slope 1 between")
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if median_slope(masks, gt_depth, mid, far, box) < 1:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def place(masks: torch.Tensor, canon_depth: torch.Tensor, rise: float, box: str | None) -> tuple[float, float]:
    """(near, far) of the cap with this rise whose mean over the object masks equals the true canonical
    depth's mean there (the prior moves rigidly with far: mean(prior) = far + const)."""
    m = masks.double()
    target = float((canon_depth.double() * m).sum() / m.sum())
    p = ellipsoid_depth_prior(masks, near=1.0 - rise, far=1.0, category=box).double()
    offset = float((p * m).sum() / m.sum()) - 1.0
    far = target - offset
    return far - rise, far


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog="python tools/fit_prior_relief.py --n 200")
    p.add_argument("--n", type=int, default=200, help="training faces to fit on (default 200)")
    p.add_argument("--size", type=int, default=64, help="image size (default 64)")
    p.add_argument("--data-seed", type=int, default=0, help="SyntheticFaces seed (default 0, eval-gan2shape's)")
    p.add_argument("--prior-box", default="plain", choices=["plain", *[k for k in PRIOR_BOXES if k]],
                   help="the prior's box rule, as eval-gan2shape's --prior-box (default plain: the mask's own box)")
    p.add_argument("--rises", default="0.04,0.05,0.06,0.07", help="rises to tabulate (comma-separated)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.n < 1:
        print(f"--n: expected at least 1 face, got {args.n}", file=sys.stderr)
        return 2
    box = None if args.prior_box == "plain" else args.prior_box
    b = SyntheticFaces(args.n, size=args.size, seed=args.data_seed, split="train").get_batch(range(args.n))
    masks, gt, canon = object_mask(b["image"]).float(), b["depth"], b["canon_depth"]
    print(f"{args.n} training faces, {args.size} px, prior box {args.prior_box}")
    print("rise    median slope of log(prior) on log(true depth)")
    for r in (float(v) for v in args.rises.split(",")):
        print(f"{r:.3f}   {median_slope(masks, gt, r, FIT_FAR, box):.3f}")
    rise = fit_rise(masks, gt, box)
    near, far = place(masks, canon, rise, box)
    print(f"slope 1 at rise {rise:.4f}; placed on the mean canonical depth: "
          f"--prior-near {near:.4f} --prior-far {far:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
