"""How much of an eval-gan2shape error is a tilt of the whole face? A developer diagnostic.

Reads the arrays `voxrender eval-gan2shape` writes (OUT/depth_pred.npy, depth_gt.npy, mask_gt.npy) and, per
image, fits the plane ``a + b x + c y`` (x, y the image coordinates in [-1, 1], y down) to the log-depth error
log(pred) - log(gt) over Unsup3d's evaluation mask (the one SIDE and MAD use). It prints SIDE (x 10^-2) and MAD
as evaluated, the plane's slopes, and SIDE / MAD again after dividing the prediction by exp(plane): what is
left when the predicted face is tilted back onto the truth. A slope of 0.06 in y is about the depth change of
a 35 degree lean over the half height of the image at fov 10 degrees (0.0875 camera units per unit of y).

    python tools/diag_depth_tilt.py runs/g2s-eval
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from voxrender.models.gan2shape.metrics import SIDE_SCALE, evaluate_depth, summarize


def _coords(H: int, W: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(y, x) float64 (H, W) image coordinates in [-1, 1], y down: the plane's variables."""
    return torch.meshgrid(torch.linspace(-1, 1, H, dtype=torch.float64), torch.linspace(-1, 1, W, dtype=torch.float64),
                          indexing="ij")


def fit_planes(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, 3) weighted least-squares coefficients (a, b, c) of log(pred) - log(gt) ~ a + b x + c y over masks
    (B, H, W); zeros where a mask has fewer than 3 pixels."""
    B, H, W = pred.shape
    y, x = _coords(H, W)
    basis = torch.stack([torch.ones_like(x), x, y], -1).reshape(-1, 3)
    out = torch.zeros(B, 3, dtype=torch.float64)
    for i in range(B):
        m = mask[i].reshape(-1).double() > 0
        if int(m.sum()) < 3:
            continue
        err = (pred[i].double().log() - gt[i].double().log()).reshape(-1)[m]
        out[i] = torch.linalg.lstsq(basis[m], err[:, None]).solution[:, 0]
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="Reads OUT/depth_pred.npy, depth_gt.npy, mask_gt.npy of eval-gan2shape.")
    p.add_argument("out", metavar="OUT", help="an eval-gan2shape output folder")
    args = p.parse_args(argv)
    arrays = {}
    for name in ("depth_pred", "depth_gt", "mask_gt"):
        path = Path(args.out) / f"{name}.npy"
        if not path.is_file():
            print(f"diag_depth_tilt: OUT: {path} not found (run `voxrender eval-gan2shape --out {args.out}`)",
                  file=sys.stderr)
            return 2
        arrays[name] = torch.from_numpy(np.load(path)).double()
    pred, gt, gt_mask = arrays["depth_pred"], arrays["depth_gt"], arrays["mask_gt"]
    ev = evaluate_depth(pred, gt, gt_mask=gt_mask)
    coef = fit_planes(pred, gt, ev["mask"])
    y, x = _coords(*pred.shape[-2:])
    plane = coef[:, :1, None] + coef[:, 1:2, None] * x + coef[:, 2:3, None] * y
    # the masks stay those of the prediction as evaluated (the plane moves depths by a few per cent only)
    ev2 = evaluate_depth(pred / plane.exp(), gt, pred_mask=(ev["mask"] > 0).double(), gt_mask=gt_mask)
    print(f"{'image':>5}  {'SIDE':>6} {'MAD':>6}  {'slope x':>8} {'slope y':>8}  {'SIDE untilted':>13} {'MAD untilted':>12}")
    for i in range(pred.shape[0]):
        print(f"{i:5d}  {float(ev['side'][i]) * SIDE_SCALE:6.2f} {float(ev['mad'][i]):6.1f}  {float(coef[i, 1]):8.4f} "
              f"{float(coef[i, 2]):8.4f}  {float(ev2['side'][i]) * SIDE_SCALE:13.2f} {float(ev2['mad'][i]):12.1f}")
    s, s2 = summarize(ev["side"] * SIDE_SCALE), summarize(ev2["side"] * SIDE_SCALE)
    a, a2 = summarize(ev["mad"]), summarize(ev2["mad"])
    print(f"mean   {s[0]:6.2f} {a[0]:6.1f}  {float(coef[:, 1].mean()):8.4f} {float(coef[:, 2].mean()):8.4f}  "
          f"{s2[0]:13.2f} {a2[0]:12.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
