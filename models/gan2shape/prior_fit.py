"""The ellipsoid prior whose relief fits a set of faces: the strongest fixed-shape baseline on synthetic faces.

GAN2Shape's ellipsoid prior (:func:`prior.ellipsoid_depth_prior`) is a spherical cap rising from ``far`` at
the rim of the object's box to ``near`` at its centre. Its rise (``far - near``) sets how deep a depth map
built from it is, and SIDE counts a relief too deep or too shallow; the bas-relief ambiguity leaves that
scale to the prior, so a reconstruction started from it tends to keep it. :func:`fit_prior` measures on
faces with ground truth (TRAINING faces: never the held-out ones it is scored on), for each rise, the
least-squares slope of log(prior) against log(true view depth) over Unsup3d's evaluation mask, takes the
median over the faces (1: the prior's relief has the faces' scale), finds by bisection the rise whose
median slope is 1, and places the cap so that its mean over the object masks equals the mean true canonical
depth there (what ``--depth-anchor`` holds a canonical depth to).

The cap's shape is fixed (a dome; a face is a plate with a nose), so the rise that fits the faces' bulk is
shallower than their nose tips: on the built-in faces 0.048, against 0.07 from rim to nose tip.
``eval-gan2shape`` scores this prior as the ``fitted_ellipsoid`` baseline beside GAN2Shape's own.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .metrics import evaluation_mask
from .prior import ellipsoid_depth_prior

# the rise is fitted with the rim at this depth (the slope hardly depends on it), then the cap is placed
FIT_FAR = 1.03

__all__ = ["FIT_FAR", "fit_prior", "fit_rise", "median_slope", "place_prior", "relief_slopes"]


def relief_slopes(depth: Tensor, gt_depth: Tensor) -> Tensor:
    """(B,) float64 least-squares slope of log(depth) on log(gt_depth), per map (B, H, W), over Unsup3d's
    evaluation mask with every pixel predicted (as the baselines are scored); NaN where that mask has fewer
    than 3 pixels. 1: the depth map's relief has the truth's scale in log depth."""
    m = evaluation_mask(depth.float(), gt_depth.float(), pred_mask=torch.ones_like(gt_depth)).double()
    x, y = gt_depth.double().log(), depth.double().log()
    cnt = m.sum((1, 2))
    mx = (x * m).sum((1, 2)) / cnt.clamp(min=1)
    my = (y * m).sum((1, 2)) / cnt.clamp(min=1)
    xc, yc = (x - mx[:, None, None]) * m, (y - my[:, None, None]) * m
    slope = (xc * yc).sum((1, 2)) / (xc * xc).sum((1, 2))
    return torch.where(cnt >= 3, slope, torch.full_like(slope, float("nan")))


def median_slope(masks: Tensor, gt_depth: Tensor, rise: float, far: float = FIT_FAR,
                 category: str | None = None) -> float:
    """The median over faces of :func:`relief_slopes` for the prior of ``masks`` with this rise and rim depth
    (``category``: the prior's box rule)."""
    prior = ellipsoid_depth_prior(masks, near=far - rise, far=far, category=category)
    return float(relief_slopes(prior, gt_depth).nanmedian())


def fit_rise(masks: Tensor, gt_depth: Tensor, category: str | None = None, far: float = FIT_FAR,
             lo: float = 0.005, hi: float = 0.2, iters: int = 30) -> float:
    """The rise whose median slope is 1, by bisection on [lo, hi] (the slope grows with the rise). Raises
    ValueError when the slope does not cross 1 there (faces flatter or deeper than any cap in range)."""
    s_lo, s_hi = median_slope(masks, gt_depth, lo, far, category), median_slope(masks, gt_depth, hi, far, category)
    if not s_lo < 1 < s_hi:
        raise ValueError(f"the median slope is {s_lo:.3f} at rise {lo} and {s_hi:.3f} at rise {hi}: no slope 1 between")
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if median_slope(masks, gt_depth, mid, far, category) < 1:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def place_prior(masks: Tensor, canon_depth: Tensor, rise: float, category: str | None = None) -> tuple[float, float]:
    """(near, far) of the cap with this rise whose mean over the object masks equals ``canon_depth``'s mean
    there (the cap moves rigidly with ``far``: mean(prior) = far + a constant)."""
    m = masks.double()
    target = float((canon_depth.double() * m).sum() / m.sum())
    p = ellipsoid_depth_prior(masks, near=1.0 - rise, far=1.0, category=category).double()
    far = target - (float((p * m).sum() / m.sum()) - 1.0)
    return far - rise, far


def fit_prior(masks: Tensor, gt_depth: Tensor, canon_depth: Tensor, category: str | None = None) -> dict:
    """The fitted prior of faces with object ``masks`` (B, H, W), true view depth ``gt_depth`` and canonical
    depth ``canon_depth``: ``{"rise", "near", "far"}`` (pass near / far as ``ellipsoid_depth_prior``'s)."""
    rise = fit_rise(masks, gt_depth, category)
    near, far = place_prior(masks, canon_depth, rise, category)
    return {"rise": rise, "near": near, "far": far}
