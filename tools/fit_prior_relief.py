"""Which ellipsoid prior fits the built-in faces? A developer tool for ``--prior-near`` / ``--prior-far``.

On TRAINING faces (never the held-out ones) it tabulates, per rise of GAN2Shape's ellipsoid prior, the
median slope of log(prior) on log(true view depth) over Unsup3d's evaluation mask (1: the prior's relief
has the faces' scale; SIDE counts a relief too deep or too shallow), then prints the fitted rise placed on
the mean canonical depth as ``--prior-near`` / ``--prior-far``. The fit is
``voxrender.models.gan2shape.prior_fit`` (its docstring says how and why); ``eval-gan2shape`` scores the
same fit, on its mean-depth training faces, as the ``fitted_ellipsoid`` baseline.

    python tools/fit_prior_relief.py --n 200 --prior-box plain
"""

from __future__ import annotations

import argparse
import sys

from voxrender.data.faces import SyntheticFaces
from voxrender.models.gan2shape.prior import PRIOR_BOX_NAMES, box_category, object_mask
from voxrender.models.gan2shape.prior_fit import FIT_FAR, fit_prior, median_slope


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog="python tools/fit_prior_relief.py --n 200")
    p.add_argument("--n", type=int, default=200, help="training faces to fit on (default 200)")
    p.add_argument("--size", type=int, default=64, help="image size (default 64)")
    p.add_argument("--data-seed", type=int, default=0, help="SyntheticFaces seed (default 0, eval-gan2shape's)")
    p.add_argument("--prior-box", default="plain", choices=PRIOR_BOX_NAMES,
                   help="the prior's box rule, as eval-gan2shape's --prior-box (default plain: the mask's own box)")
    p.add_argument("--rises", default="0.04,0.05,0.06,0.07", help="rises to tabulate (comma-separated)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.n < 1:
        print(f"--n: expected at least 1 face, got {args.n}", file=sys.stderr)
        return 2
    box = box_category(args.prior_box)
    b = SyntheticFaces(args.n, size=args.size, seed=args.data_seed, split="train").get_batch(range(args.n))
    masks, gt, canon = object_mask(b["image"]).float(), b["depth"], b["canon_depth"]
    print(f"{args.n} training faces, {args.size} px, prior box {args.prior_box}")
    print("rise    median slope of log(prior) on log(true depth)")
    for r in (float(v) for v in args.rises.split(",")):
        print(f"{r:.3f}   {median_slope(masks, gt, r, FIT_FAR, box):.3f}")
    fit = fit_prior(masks, gt, canon, box)
    print(f"slope 1 at rise {fit['rise']:.4f}; placed on the mean canonical depth: "
          f"--prior-near {fit['near']:.4f} --prior-far {fit['far']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
