"""Depth-map evaluation of GAN2Shape / Unsup3d reconstructions: SIDE and MAD, and the baselines.

Both metrics are computed exactly as Unsup3d does (Wu et al. 2020, ``unsup3d/model.py``, the
``load_gt_depth`` branch of ``forward``, and ``unsup3d/utils.py`` ``compute_sc_inv_err`` /
``compute_angular_distance``; GAN2Shape's ``forward_step1`` repeats it):

- masks: ground truth ``gt_depth < gt_depth.max()`` per image (background at the largest depth), prediction
  the recon mask ``recon_depth < 1.2`` (see ``renderer.recon_mask``); each is eroded by one pixel with
  ``avg_pool2d(mask, 3, stride=1, padding=1) > 0.99`` (zero padding: the image's own one-pixel border is
  removed too), and the evaluation mask is their product.
- SIDE (scale-invariant depth error): with d = log(pred) - log(gt) over the mask,
  SIDE = sqrt(mean(d^2) - mean(d)^2) = sqrt(mean((d - mean d)^2)): 0 for any pred = c * gt. Papers report
  it x 10^-2 (table value = SIDE * 100, :data:`SIDE_SCALE`).
- MAD (mean angle deviation): the mean over the mask of the angle in DEGREES between the normals of the
  predicted and the ground-truth depth, both from Unsup3d's ``get_normal_from_depth``
  (``renderer.normals_from_depth``: central differences of the back-projected points, Unsup3d's camera).
  One deliberate difference: the normals are exactly unit length. Unsup3d divides by (|n| + 1e-7), which
  for its tiny un-normalised normals means |n| = 0.997 at 64 px and 0.987 at 128 px, so its MAD is 6.5 / 13
  degrees for a perfect prediction of a fronto-parallel surface (acos(|n|^2); a little less on slanted ones);
  ``normal_eps=1e-7`` reproduces it.
- per image, then mean +- std over images (population std, numpy's default; images whose mask is empty
  give NaN and are left out of the summary).

Baselines (:func:`evaluate_baselines`): a flat depth map, the mean ground-truth depth over a set, and the
ellipsoid prior alone (``prior.ellipsoid_depth_prior`` of the object mask), and optionally that prior with
its rise fitted to training faces (``prior_fit``), each taken as the predicted depth in the view.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .prior import ellipsoid_depth_prior, object_mask
from .renderer import DEPTH_MARGIN, MAX_DEPTH, normals_from_depth

SIDE_SCALE = 100.0  # SIDE is reported x 10^-2: the table shows SIDE * 100

__all__ = [
    "SIDE_SCALE",
    "erode",
    "evaluate_baselines",
    "evaluate_depth",
    "evaluation_mask",
    "flat_depth",
    "format_metrics",
    "format_paired",
    "gt_mask_from_depth",
    "mad",
    "mean_depth",
    "paired",
    "pred_mask_from_depth",
    "relief",
    "side",
    "summarize",
]


def _b(t: Tensor) -> Tensor:
    t = torch.as_tensor(t)
    return t[None] if t.dim() == 2 else t


def erode(mask: Tensor) -> Tensor:
    """Unsup3d's one-pixel erosion of (B, H, W) masks: avg_pool2d 3 x 3, stride 1, zero padding 1, > 0.99.
    A pixel survives only if its whole 3 x 3 neighbourhood is inside the mask and inside the image."""
    m = _b(mask).float()
    return (F.avg_pool2d(m[:, None], 3, stride=1, padding=1)[:, 0] > 0.99).float()


def gt_mask_from_depth(gt_depth: Tensor) -> Tensor:
    """Unsup3d's ground-truth mask: depth < the image's largest depth (the background), (B, H, W) float."""
    d = _b(gt_depth)
    return (d < d.flatten(1).amax(1)[:, None, None]).float()


def pred_mask_from_depth(pred_depth: Tensor) -> Tensor:
    """The recon mask of a (clamped) warped depth: depth < 1.2 (``renderer.recon_mask``)."""
    return (_b(pred_depth) < MAX_DEPTH + DEPTH_MARGIN).float()


def evaluation_mask(pred_depth: Tensor, gt_depth: Tensor, pred_mask: Tensor | None = None,
                    gt_mask: Tensor | None = None) -> Tensor:
    """erode(gt mask) * erode(pred mask), (B, H, W) float; masks default to Unsup3d's (see the module doc)."""
    gm = gt_mask_from_depth(gt_depth) if gt_mask is None else _b(gt_mask).float()
    pm = pred_mask_from_depth(pred_depth) if pred_mask is None else _b(pred_mask).float()
    return erode(gm) * erode(pm)


def side(pred_depth: Tensor, gt_depth: Tensor, mask: Tensor) -> Tensor:
    """Per-image scale-invariant depth error (B,): sqrt(sum m (d - avg)^2 / sum m), d = log pred - log gt,
    avg = sum m d / sum m (Unsup3d's ``compute_sc_inv_err``). NaN where the mask is empty."""
    p, g, m = _b(pred_depth).double(), _b(gt_depth).double(), _b(mask).double()
    ones = m > 0
    d = torch.where(ones, torch.log(torch.where(ones, p, 1.0)) - torch.log(torch.where(ones, g, 1.0)), 0.0) * m
    n = m.flatten(1).sum(1)
    avg = d.flatten(1).sum(1) / n
    score = ((d - avg[:, None, None]) ** 2 * m).flatten(1).sum(1)
    return torch.sqrt(score / n)


def mad(pred_normal: Tensor, gt_normal: Tensor, mask: Tensor) -> Tensor:
    """Per-image mean angle (degrees) between unit normals (B, H, W, 3) over the mask (B,); NaN where empty.
    (Unsup3d's ``compute_angular_distance``: acos of the clamped dot product, in degrees.)"""
    m = _b(mask).double()
    dot = (pred_normal.double() * gt_normal.double()).sum(-1).clamp(-1, 1)
    ang = torch.rad2deg(torch.acos(dot)) * m
    return ang.flatten(1).sum(1) / m.flatten(1).sum(1)


def summarize(values: Tensor) -> tuple[float, float, int]:
    """(mean, population std, count) over the finite entries of a (N,) tensor."""
    v = values[torch.isfinite(values)].double()
    if v.numel() == 0:
        return math.nan, math.nan, 0
    return float(v.mean()), float(((v - v.mean()) ** 2).mean().sqrt()), int(v.numel())


def evaluate_depth(pred_depth: Tensor, gt_depth: Tensor, *, pred_mask: Tensor | None = None,
                   gt_mask: Tensor | None = None, K: Tensor | None = None, normal_eps: float = 0.0) -> dict:
    """SIDE and MAD of predicted view depths against ground truth, Unsup3d's protocol.

    Args:
        pred_depth, gt_depth: (B, H, W) (or (H, W)) camera depths of the same view (e.g. the model's
            ``warp_canon_depth`` output, and the dataset's ``depth``).
        pred_mask, gt_mask: optional (B, H, W) masks replacing Unsup3d's defaults (pred < 1.2, gt < max).
        K: intrinsics for the normals (default Unsup3d's, fov 10 deg).
        normal_eps: 0: unit normals; 1e-7: Unsup3d's exact normals (see the module doc).

    Returns:
        dict: ``side`` (B,) raw SIDE, ``mad`` (B,) degrees, ``mask`` (B, H, W) the evaluation mask,
        ``side_mean``, ``side_std``, ``mad_mean``, ``mad_std`` (floats, raw SIDE / degrees; the table shows
        ``side_mean * SIDE_SCALE``), ``count`` (images with a non-empty mask).
    """
    p, g = _b(pred_depth), _b(gt_depth)
    if p.shape != g.shape:
        raise ValueError(f"pred_depth {tuple(p.shape)} and gt_depth {tuple(g.shape)} differ in shape")
    m = evaluation_mask(p, g, pred_mask, gt_mask)
    # (the clamp only guards the normals against zero / infinite background fills; the eroded mask never
    # reads a neighbour outside the un-eroded masks)
    pn = normals_from_depth(p.double().clamp(1e-3, 1e3), K, eps=normal_eps)
    gn = normals_from_depth(g.double().clamp(1e-3, 1e3), K, eps=normal_eps)
    s, a = side(p, g, m), mad(pn, gn, m)
    sm, ss, n = summarize(s)
    am, as_, _ = summarize(a)
    return {"side": s, "mad": a, "mask": m, "side_mean": sm, "side_std": ss, "mad_mean": am, "mad_std": as_,
            "count": n}


def paired(ours: Tensor, theirs: Tensor) -> dict:
    """Face-by-face comparison of two methods' per-image errors (N,) on the same images (lower is better).

    Over the images where both are finite: ``count``, ``better`` (images where ``ours`` is strictly lower),
    ``mean_diff`` (mean of ours - theirs) and ``t``, the paired t statistic mean_diff / (s / sqrt(count)) with s
    the sample (n - 1) standard deviation of the differences (negative: ours lower; |t| > 2 is the usual
    "clearly", about p < 0.05 two-sided at 30 images). Why: the means +- std over a set hide whether one method
    wins on most images or on a few; the spread between faces is shared by both methods and cancels here.
    ``t`` is None with fewer than 2 images or identical differences (a zero spread)."""
    a, b = torch.as_tensor(ours).double().flatten(), torch.as_tensor(theirs).double().flatten()
    if a.shape != b.shape:
        raise ValueError(f"ours {tuple(a.shape)} and theirs {tuple(b.shape)} differ in shape")
    keep = torch.isfinite(a) & torch.isfinite(b)
    d = a[keep] - b[keep]
    n = int(d.numel())
    mean = float(d.mean()) if n else None
    sd = float(d.std(unbiased=True)) if n > 1 else 0.0
    t = mean / (sd / math.sqrt(n)) if n > 1 and sd > 0 else None
    return {"count": n, "better": int((d < 0).sum()), "mean_diff": mean, "t": t}


def format_paired(comparisons: dict, name: str = "") -> str:
    """One report line of :func:`paired` results {"side": ..., "mad": ...}: ``vs mean_depth  SIDE better on
    20/32 (t -1.5)  MAD better on 30/32 (t -8.4)``."""
    def part(label, r):
        t = "n/a" if r["t"] is None else f"{r['t']:.1f}"
        return f"{label} better on {r['better']}/{r['count']} (t {t})"
    return f"vs {name:16s} {part('SIDE', comparisons['side'])}  {part('MAD', comparisons['mad'])}"


def format_metrics(results: dict, name: str = "") -> str:
    """One report line: ``name SIDE (x10^-2) 0.793 +- 0.140  MAD (deg) 16.51 +- 1.56  (n images)``."""
    head = f"{name} " if name else ""
    return (f"{head}SIDE (x10^-2) {results['side_mean'] * SIDE_SCALE:.3f} +- {results['side_std'] * SIDE_SCALE:.3f}"
            f"  MAD (deg) {results['mad_mean']:.2f} +- {results['mad_std']:.2f}  ({results['count']} images)")


def flat_depth(like: Tensor, value: float = 1.0) -> Tensor:
    """The flat-depth baseline: a constant depth map shaped like ``like`` (any constant gives the same
    SIDE, and normals (0, 0, 1) everywhere)."""
    return torch.full_like(_b(like).float(), value)


def mean_depth(gt_depths: Tensor, gt_masks: Tensor | None = None) -> Tensor:
    """The mean ground-truth depth baseline: the per-pixel mean of (N, H, W) ground-truth depths over the
    pixels inside their masks (default Unsup3d's gt masks), filled with the mean object depth where no
    image has the object. Returns (H, W)."""
    d = _b(gt_depths).double()
    m = gt_mask_from_depth(d).double() if gt_masks is None else _b(gt_masks).double()
    cnt = m.sum(0)
    acc = (torch.where(m > 0, d, 0.0)).sum(0)
    fill = acc.sum() / cnt.sum().clamp(min=1)
    return torch.where(cnt > 0, acc / cnt.clamp(min=1), fill).float()


def evaluate_baselines(gt_depth: Tensor, gt_mask: Tensor | None = None, images: Tensor | None = None, *,
                       mean_gt_depth: Tensor | None = None, object_masks: Tensor | None = None,
                       prior_kwargs: dict | None = None, fitted_prior: dict | None = None,
                       K: Tensor | None = None) -> dict:
    """SIDE / MAD of the baselines on ground-truth view depths (B, H, W).

    - ``"flat"``: :func:`flat_depth` (prediction mask: everything).
    - ``"mean_depth"``: ``mean_gt_depth`` (H, W) (by default :func:`mean_depth` of ``gt_depth`` itself; pass
      the mean over a training set for a fair baseline), mask everything.
    - ``"ellipsoid"``: :func:`prior.ellipsoid_depth_prior` of ``object_masks`` (default: the threshold
      :func:`prior.object_mask` of ``images`` when given, else the ground-truth mask), mask everything.
    - ``"fitted_ellipsoid"`` (only with ``fitted_prior``, a dict with ``near`` and ``far``, e.g.
      :func:`prior_fit.fit_prior` on training faces): the same prior with that rise and placement.

    Returns {name: :func:`evaluate_depth` results}.
    """
    g = _b(gt_depth).float()
    gm = gt_mask_from_depth(g) if gt_mask is None else _b(gt_mask).float()
    every = torch.ones_like(g)
    out = {"flat": evaluate_depth(flat_depth(g), g, pred_mask=every, gt_mask=gm, K=K)}
    md = mean_depth(g, gm) if mean_gt_depth is None else torch.as_tensor(mean_gt_depth).float()
    out["mean_depth"] = evaluate_depth(md.expand_as(g).contiguous(), g, pred_mask=every, gt_mask=gm, K=K)
    if object_masks is None:
        object_masks = object_mask(images) if images is not None else gm
    om = _b(object_masks).float()
    prior = ellipsoid_depth_prior(om, **(prior_kwargs or {}))
    out["ellipsoid"] = evaluate_depth(prior, g, pred_mask=every, gt_mask=gm, K=K)
    if fitted_prior is not None:
        kw = {**(prior_kwargs or {}), "near": fitted_prior["near"], "far": fitted_prior["far"]}
        fitted = ellipsoid_depth_prior(om, **kw)
        out["fitted_ellipsoid"] = evaluate_depth(fitted, g, pred_mask=every, gt_mask=gm, K=K)
    return out


def relief(depth: Tensor, mask: Tensor) -> Tensor:
    """How far the middle of an object stands out of its rim, per depth map (B, H, W) or (H, W) inside its
    object mask, in camera z (> 0: the middle is nearer the camera, as on a face; < 0: hollow). Returns (B,)
    (NaN where the mask is too small).

    With u = (x - mean x) / (2 std x), v = (y - mean y) / (2 std y) over the mask pixels (rho^2 = u^2 + v^2 is 1
    on the boundary of an axis-aligned elliptic mask), the core is rho < 1/2 and the rim band 3/4 <= rho <= 1;
    the rim is split into its left / right part (|u| >= |v|) and its top / bottom part, and the relief is the
    smaller of (mean rim-part depth - mean core depth) over the two: a surface hollow across either axis
    (a saddle) counts as hollow, a tilted plane as flat (0). For a paraboloid z = z0 - h (1 - rho^2) it is
    21 h / 32 (either part: the mean of rho^2 over any sector of the band is 25 / 32, over the core 1 / 8).

    Why: Unsup3d's photo-geometric model has a convex / concave ambiguity (the hollow-face illusion: the
    relief turned inside out, seen from the mirrored view under a mirrored light, gives nearly the same
    image), so a reconstruction can settle on a hollow solution; its normals are then off by tens of degrees
    everywhere. The sign of this number tells them apart."""
    d, m = _b(depth).double(), _b(mask).double() > 0.5
    h, w = d.shape[-2:]
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64),
                            indexing="ij")
    out = []
    for dk, mk in zip(d, m):
        if int(mk.sum()) < 3:
            out.append(float("nan"))
            continue
        xs, ys = xx[mk], yy[mk]
        u = (xx - xs.mean()) / (2 * xs.std(unbiased=False).clamp(min=1e-9))
        v = (yy - ys.mean()) / (2 * ys.std(unbiased=False).clamp(min=1e-9))
        rho = (u * u + v * v).sqrt()
        core, band = mk & (rho < 0.5), mk & (rho >= 0.75) & (rho <= 1)
        sides, ends = band & (u.abs() >= v.abs()), band & (u.abs() < v.abs())
        if not (core.any() and sides.any() and ends.any()):
            out.append(float("nan"))
            continue
        c = dk[core].mean()
        out.append(float(torch.minimum(dk[sides].mean() - c, dk[ends].mean() - c)))
    return torch.tensor(out, dtype=torch.float64)
