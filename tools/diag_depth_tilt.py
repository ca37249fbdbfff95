"""How much of an eval-gan2shape error is a tilt of the whole face? A developer diagnostic.

Reads the arrays `voxrender eval-gan2shape` writes (OUT/depth_pred.npy, depth_gt.npy, mask_gt.npy) and, per
image, fits the plane ``a + b x + c y`` (x, y the image coordinates in [-1, 1], y down) to the log-depth error
log(pred) - log(gt) over Unsup3d's evaluation mask (the one SIDE and MAD use). It prints SIDE (x 10^-2) and MAD
as evaluated, the plane's slopes, and SIDE / MAD again after dividing the prediction by exp(plane): what is
left when the predicted face is tilted back onto the truth. Then the plane and a relief scale together
(``a + b x + c y + s log(gt)``): ``relief`` = 1 + s is the prediction's relief over the truth's in log depth
(1.3: 30 % too deep; SIDE does not forgive it, being invariant to a global scale of the depth only), and
the SIDE left after taking off both. A slope of 0.06 in y is about the depth change of
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


def fit_planes(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor, relief: bool = False) -> torch.Tensor:
    """(B, 3) least-squares coefficients (a, b, c) of log(pred) - log(gt) ~ a + b x + c y over masks
    (B, H, W); with ``relief``, (B, 4) (a, b, c, s) of ~ a + b x + c y + s log(gt). Zeros where a mask has
    fewer pixels than coefficients."""
    B, H, W = pred.shape
    y, x = _coords(H, W)
    k = 4 if relief else 3
    out = torch.zeros(B, k, dtype=torch.float64)
    for i in range(B):
        m = mask[i].reshape(-1).double() > 0
        if int(m.sum()) < k:
            continue
        lg = gt[i].double().log()
        basis = torch.stack([torch.ones_like(x), x, y, lg][:k], -1).reshape(-1, k)
        err = (pred[i].double().log() - lg).reshape(-1)[m]
        out[i] = torch.linalg.lstsq(basis[m], err[:, None]).solution[:, 0]
    return out


def fitted(coef: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """(B, H, W) the log-depth error :func:`fit_planes` fitted: a + b x + c y, plus s log(gt) for (B, 4)
    coefficients (the prediction divided by its exp is the prediction with the fit taken off)."""
    y, x = _coords(*gt.shape[-2:])
    out = coef[:, :1, None] + coef[:, 1:2, None] * x + coef[:, 2:3, None] * y
    if coef.shape[1] == 4:
        out = out + coef[:, 3:, None] * gt.double().clamp(1e-3, 1e3).log()
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
    # the masks stay those of the prediction as evaluated (the fits move depths by a few per cent only)
    keep = (ev["mask"] > 0).double()
    ev2 = evaluate_depth(pred / fitted(coef, gt).exp(), gt, pred_mask=keep, gt_mask=gt_mask)
    both = fit_planes(pred, gt, ev["mask"], relief=True)
    ev3 = evaluate_depth(pred / fitted(both, gt).exp(), gt, pred_mask=keep, gt_mask=gt_mask)
    print(f"{'image':>5}  {'SIDE':>6} {'MAD':>6}  {'slope x':>8} {'slope y':>8}  {'SIDE untilted':>13} "
          f"{'MAD untilted':>12}  {'relief':>6} {'SIDE untilted+rescaled':>22}")
    for i in range(pred.shape[0]):
        print(f"{i:5d}  {float(ev['side'][i]) * SIDE_SCALE:6.2f} {float(ev['mad'][i]):6.1f}  {float(coef[i, 1]):8.4f} "
              f"{float(coef[i, 2]):8.4f}  {float(ev2['side'][i]) * SIDE_SCALE:13.2f} {float(ev2['mad'][i]):12.1f}"
              f"  {1 + float(both[i, 3]):6.2f} {float(ev3['side'][i]) * SIDE_SCALE:22.2f}")
    s, s2, s3 = (summarize(e["side"] * SIDE_SCALE) for e in (ev, ev2, ev3))
    a, a2 = summarize(ev["mad"]), summarize(ev2["mad"])
    print(f"mean   {s[0]:6.2f} {a[0]:6.1f}  {float(coef[:, 1].mean()):8.4f} {float(coef[:, 2].mean()):8.4f}  "
          f"{s2[0]:13.2f} {a2[0]:12.1f}  {1 + float(both[:, 3].mean()):6.2f} {s3[0]:22.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
