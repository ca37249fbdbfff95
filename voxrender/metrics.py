"""Evaluation of voxel shape-and-pose models against ground truth (voxel grids in project_volume's frame).

A model that learns shape and pose without supervision picks its own canonical frame: its shapes may be
turned about the vertical axis, or mirrored, relative to the ground truth (an orthographic silhouette
cannot tell a shape from its mirror image in depth). The metrics therefore align before comparing:

- :func:`aligned_iou`: per shape, the best of ``n_offsets`` azimuth offsets (36: every 10 degrees) and a
  mirror flip, chosen by soft IoU; IoU at threshold 0.5 and at the best swept threshold (one threshold for
  the whole set); also the variant with one global offset and flip for the whole set.
- :func:`novel_view_iou`: silhouette IoU of the aligned prediction and the ground truth rendered from
  8 azimuths (every 45 degrees).
- :func:`azimuth_error`: mean absolute angular error after one global offset (and, where the shapes came
  out mirrored, a reversed direction).
- baselines: :func:`visual_hull_one_view` (the input silhouette extruded along the viewing direction) and
  the mean ground-truth shape (see :func:`evaluate_voxels`).
"""

from __future__ import annotations

import contextlib
import math
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

@contextlib.contextmanager
def torch_threads(n: int = 1):
    """Runs a block with ``n`` intra-op threads. The metrics are many small element-wise passes, which run
    fastest on one thread (with more, thread synchronisation dominates, badly so on a busy machine)."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


THRESHOLDS = tuple(round(0.05 * k, 2) for k in range(1, 20))  # 0.05 .. 0.95


def rotate_voxels_y(voxels: Tensor, angle) -> Tensor:
    """Turns (N, D, H, W) grids about the vertical (y) axis: the result V' satisfies
    ``project_volume(V', azimuth=b) == project_volume(V, azimuth=angle + b)`` (up to resampling):
    V'(q) = V(R_y(angle)^T q), trilinear, zeros outside. ``angle``: a number or (N,) radians."""
    n = voxels.shape[0]
    a = torch.as_tensor(angle, dtype=voxels.dtype, device=voxels.device).expand(n) if not (
        isinstance(angle, Tensor) and angle.dim() == 1) else angle.to(voxels)
    c, s = torch.cos(a), torch.sin(a)
    o, z = torch.ones_like(a), torch.zeros_like(a)
    # R_y^T = [[c, 0, -s], [0, 1, 0], [s, 0, c]] acting on (x, y, z) = grid_sample's (w, h, d) order.
    rt = torch.stack([c, z, -s, z, z, o, z, z, s, z, c, z], -1).view(n, 3, 4)
    grid = F.affine_grid(rt, (n, 1, *voxels.shape[1:]), align_corners=False)
    return F.grid_sample(voxels[:, None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[:, 0]


_PLANE_CACHE: dict = {}


def _plane_rotation(d: int, w: int, angle: float) -> Tensor:
    """The bilinear resampling of :func:`rotate_voxels_y` in the (d, w) plane as a sparse (D W, D W) matrix
    (rows: target voxels; zeros outside), cached: the alignment search applies it to many grids at once."""
    key = (d, w, round(angle, 12))
    if key not in _PLANE_CACHE:
        c, s = math.cos(angle), math.sin(angle)
        zc = -1 + (2 * torch.arange(d, dtype=torch.float64) + 1) / d
        xc = -1 + (2 * torch.arange(w, dtype=torch.float64) + 1) / w
        zq, xq = torch.meshgrid(zc, xc, indexing="ij")
        # source point R_y^T q: x' = c x - s z, z' = s x + c z; continuous indices (align_corners=False)
        xs, zs = c * xq - s * zq, s * xq + c * zq
        fi, fk = ((xs + 1) * w - 1) / 2, ((zs + 1) * d - 1) / 2
        i0, k0 = fi.floor(), fk.floor()
        rows, cols, vals = [], [], []
        target = torch.arange(d * w).view(d, w)
        for dk in (0, 1):
            for di in (0, 1):
                ii, kk = i0 + di, k0 + dk
                wt = (1 - (fi - ii).abs()) * (1 - (fk - kk).abs())
                ok = (ii >= 0) & (ii < w) & (kk >= 0) & (kk < d) & (wt > 0)
                rows.append(target[ok])
                cols.append((kk[ok] * w + ii[ok]).long())
                vals.append(wt[ok])
        idx = torch.stack([torch.cat(rows), torch.cat(cols)])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # sparse CSR is "beta"; this use is plain
            m = torch.sparse_coo_tensor(idx, torch.cat(vals).float(), (d * w, d * w), check_invariants=True)
            _PLANE_CACHE[key] = m.coalesce().to_sparse_csr()
    return _PLANE_CACHE[key]


def turn_voxels_y(voxels: Tensor, angle: float) -> Tensor:
    """:func:`rotate_voxels_y` for one angle shared by the batch, as a sparse matrix product (much faster on
    the CPU than ``grid_sample``; same bilinear weights in the horizontal plane)."""
    n, d, h, w = voxels.shape
    m = _plane_rotation(d, w, float(angle))
    x = voxels.float().permute(1, 3, 0, 2).reshape(d * w, n * h)  # (D W, N H)
    y = (m @ x).view(d, w, n, h).permute(2, 0, 3, 1)
    return y.to(voxels.dtype).contiguous()


def mirror_voxels(voxels: Tensor) -> Tensor:
    """Mirror image in x (w): with the 36 offsets this covers every vertical mirror plane."""
    return voxels.flip(-1)


def iou(pred: Tensor, gt: Tensor, threshold: float = 0.5, gt_threshold: float = 0.5) -> Tensor:
    """Per-item IoU of ``pred > threshold`` and ``gt > gt_threshold`` over all but the first dimension
    (two empty sets count as IoU 1)."""
    p = (pred > threshold).flatten(1)
    g = (gt > gt_threshold).flatten(1)
    inter = (p & g).sum(1).double()
    union = (p | g).sum(1).double()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


def soft_iou(pred: Tensor, gt: Tensor) -> Tensor:
    """sum min(p, g) / sum max(p, g) per item (values in [0, 1]); 1 for two empty grids."""
    p, g = pred.flatten(1).clamp(0, 1), gt.flatten(1).clamp(0, 1)
    den = torch.maximum(p, g).sum(1)
    return torch.where(den > 0, torch.minimum(p, g).sum(1) / den.clamp_min(1e-12), torch.ones_like(den))


def alignment_candidates(voxels: Tensor, n_offsets: int = 36, mirror: bool = True):
    """Yields (offset_index, flipped, angle, turned voxels) for every candidate alignment."""
    for flip in ((False, True) if mirror else (False,)):
        v = mirror_voxels(voxels) if flip else voxels
        for k in range(n_offsets):
            angle = 2 * math.pi * k / n_offsets
            yield k, flip, angle, (v if k == 0 else turn_voxels_y(v, angle))


def aligned_iou(pred: Tensor, gt: Tensor, n_offsets: int = 36, mirror: bool = True,
                thresholds=THRESHOLDS, chunk: int = 64) -> dict:
    """Voxel IoU after alignment. pred: (N, D, H, W) occupancy in [0, 1]; gt: (N, D, H, W) (> 0.5 is solid).

    Each shape is aligned by the candidate (offset, flip) with the best soft IoU; then IoU at 0.5 and at
    every threshold of ``thresholds`` (the best one reported). ``global_*``: the same with the one
    candidate that is best on average. Returns floats and per-shape numpy arrays.
    """
    if pred.shape != gt.shape or pred.dim() != 4:
        raise ValueError(f"pred and gt: expected equal (N, D, H, W) shapes, got {tuple(pred.shape)}, {tuple(gt.shape)}")
    with torch_threads(1), torch.no_grad():
        return _aligned_iou(pred.float().cpu(), gt.float().cpu(), n_offsets, mirror, thresholds, chunk)


def _aligned_iou(pred, gt, n_offsets, mirror, thresholds, chunk):
    n = pred.shape[0]
    n_cand = n_offsets * (2 if mirror else 1)
    soft = torch.empty(n, n_cand)
    best_vox = torch.empty_like(pred)
    best_soft = torch.full((n,), -1.0)
    best_cand = torch.zeros(n, dtype=torch.long)
    for s in range(0, n, chunk):
        p, g = pred[s:s + chunk], gt[s:s + chunk]
        for j, (k, flip, angle, v) in enumerate(alignment_candidates(p, n_offsets, mirror)):
            sc = soft_iou(v, g)
            soft[s:s + chunk, j] = sc
            better = sc > best_soft[s:s + chunk]
            best_soft[s:s + chunk] = torch.where(better, sc, best_soft[s:s + chunk])
            best_cand[s:s + chunk] = torch.where(better, torch.full_like(best_cand[s:s + chunk], j), best_cand[s:s + chunk])
            best_vox[s:s + chunk][better] = v[better]
    per_t = torch.stack([iou(best_vox, gt, t) for t in thresholds])  # (T, N)
    t_best = int(per_t.mean(1).argmax())
    iou05 = iou(best_vox, gt, 0.5)
    # One candidate for the whole set.
    g_cand = int(soft.mean(0).argmax())
    k, flip = g_cand % n_offsets, g_cand >= n_offsets
    v = mirror_voxels(pred) if flip else pred
    v = turn_voxels_y(v, 2 * math.pi * k / n_offsets) if k else v
    g_per_t = torch.stack([iou(v, gt, t) for t in thresholds])
    return {
        "iou@0.5": float(iou05.mean()),
        "iou@best": float(per_t[t_best].mean()),
        "best_threshold": float(thresholds[t_best]),
        "soft_iou": float(best_soft.mean()),
        "global_iou@0.5": float(iou(v, gt, 0.5).mean()),
        "global_iou@best": float(g_per_t.mean(1).max()),
        "global_offset_deg": 360.0 * k / n_offsets,
        "global_mirror": bool(flip),
        "per_shape_iou@0.5": iou05.numpy(),
        "per_shape_offset_deg": (360.0 * (best_cand % n_offsets).double() / n_offsets).numpy(),
        "per_shape_mirror": (best_cand >= n_offsets).numpy(),
        "aligned": best_vox,
    }


def silhouette_views(voxels: Tensor, azimuths, backend: str | None = None) -> Tensor:
    """(N, V, H, W) absorption images (tau = 1) of (N, D, H, W) occupancies at V azimuths."""
    from .ops.volume_projection import project_volume

    views = []
    for a in azimuths:
        az = torch.full((voxels.shape[0],), float(a), dtype=voxels.dtype)
        views.append(project_volume(voxels, azimuth=az, tau=1.0, backend=backend)[:, 0])
    return torch.stack(views, 1)


def novel_view_iou(aligned_pred: Tensor, gt: Tensor, n_views: int = 8, threshold: float = 0.5,
                   backend: str | None = None) -> float:
    """Mean silhouette IoU (images > ``threshold``) of the aligned prediction and the ground truth seen
    from ``n_views`` azimuths 2 pi k / n_views (occupancies rendered with absorption, tau = 1)."""
    az = [2 * math.pi * k / n_views for k in range(n_views)]
    with torch.no_grad():
        p = silhouette_views(aligned_pred.float().clamp(0, 1), az, backend)
        g = silhouette_views(gt.float(), az, backend)
    return float(iou(p.flatten(0, 1), g.flatten(0, 1), threshold, threshold).mean())


def wrap_angle(a):
    """Angles to (-pi, pi]."""
    return np.angle(np.exp(1j * np.asarray(a, dtype=np.float64)))


def azimuth_error(pred, gt, allow_reversed: bool = True, steps: int = 3600) -> dict:
    """Mean absolute azimuth error (degrees) after one global offset (searched on a 0.1 degree grid) and,
    if ``allow_reversed``, a global reversal of direction (pred -> -pred; a mirrored canonical frame turns
    the other way). Returns mean and median error, the offset, whether reversed, and the share of
    images within 15 and 30 degrees."""
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    offsets = np.linspace(0, 2 * np.pi, steps, endpoint=False)
    best = None
    for sign in ((1.0, -1.0) if allow_reversed else (1.0,)):
        d = sign * pred - gt  # pred ~ sign^-1 (gt + offset)
        err = np.abs(wrap_angle(d[None, :] - offsets[:, None]))  # (steps, N)
        j = int(err.mean(1).argmin())
        cand = (float(err[j].mean()), sign, offsets[j], err[j])
        if best is None or cand[0] < best[0] - 1e-12:
            best = cand
    _, sign, off, e = best
    deg = np.degrees(e)
    return {"mean_deg": float(deg.mean()), "median_deg": float(np.median(deg)), "offset_deg": float(np.degrees(off)),
            "reversed": bool(sign < 0), "within_15deg": float((deg <= 15).mean()), "within_30deg": float((deg <= 30).mean())}


def visual_hull_one_view(images: Tensor, depth: int | None = None, threshold: float = 0.5) -> Tensor:
    """The one-view visual hull: the silhouette (image > threshold) of (N, C, H, W) or (N, H, W) images
    extruded through the whole depth, as (N, D, H, W) grids in the camera frame (azimuth 0). Images of
    another size than the grid are resized (nearest) to (D, D) first."""
    img = images if images.dim() == 3 else images.amax(1)
    d = depth or img.shape[-1]
    if img.shape[-2:] != (d, d):
        img = F.interpolate(img[:, None].float(), size=(d, d), mode="nearest")[:, 0]
    sil = (img > threshold).float()
    return sil[:, None].expand(-1, d, -1, -1).contiguous()


def evaluate_voxels(pred: Tensor, gt: Tensor, azimuth_pred=None, azimuth_gt=None, images: Tensor | None = None,
                    mean_shape: Tensor | None = None, n_views: int = 8, backend: str | None = None) -> dict:
    """The full table: the model's aligned IoU (0.5 / best threshold), novel-view silhouette IoU and azimuth
    error, and the same voxel metrics for the baselines: ``fixed_shape`` (``mean_shape`` (D, H, W), the
    mean ground-truth occupancy, for every item) and ``visual_hull`` (one view, from ``images``)."""
    res = {"n": int(pred.shape[0])}
    a = aligned_iou(pred, gt)
    res["model"] = {k: v for k, v in a.items() if not isinstance(v, (np.ndarray, Tensor))}
    res["model"]["novel_view_iou"] = novel_view_iou(a["aligned"], gt, n_views, backend=backend)
    res["model"]["mean_occupancy"] = float((pred > 0.5).float().mean())
    if azimuth_pred is not None and azimuth_gt is not None:
        res["model"]["azimuth"] = azimuth_error(azimuth_pred, azimuth_gt)
    baselines = {}
    if mean_shape is not None:
        fixed = mean_shape.float()[None].expand_as(gt).contiguous()
        b = aligned_iou(fixed, gt)
        baselines["fixed_shape"] = {k: v for k, v in b.items() if not isinstance(v, (np.ndarray, Tensor))}
        baselines["fixed_shape"]["novel_view_iou"] = novel_view_iou(b["aligned"], gt, n_views, backend=backend)
    if images is not None:
        hull = visual_hull_one_view(images, gt.shape[-1])
        b = aligned_iou(hull, gt)
        baselines["visual_hull"] = {k: v for k, v in b.items() if not isinstance(v, (np.ndarray, Tensor))}
        baselines["visual_hull"]["novel_view_iou"] = novel_view_iou(b["aligned"], gt, n_views, backend=backend)
    res["baselines"] = baselines
    res["_aligned"] = a["aligned"]
    return res


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, (np.ndarray, Tensor)):
        return o.tolist()
    if isinstance(o, tuple):
        return list(o)
    return str(o)


def write_voxel_eval(out, metrics: dict, pred: Tensor, gt: Tensor, azimuth_pred: Tensor, azimuth_gt: Tensor) -> None:
    """The files of a voxel model's evaluation in ``out``: ``voxels_pred.npy`` / ``voxels_gt.npy`` (float32,
    (N, G, G, G)), ``azimuth_pred.npy`` / ``azimuth_gt.npy`` (float64, radians) and ``metrics.json``, written
    last and atomically (numpy / tensor values as JSON numbers and lists)."""
    import json
    from pathlib import Path

    out = Path(out)
    np.save(out / "voxels_pred.npy", pred.numpy().astype(np.float32))
    np.save(out / "voxels_gt.npy", gt.numpy().astype(np.float32))
    np.save(out / "azimuth_pred.npy", azimuth_pred.numpy().astype(np.float64))
    np.save(out / "azimuth_gt.npy", azimuth_gt.numpy().astype(np.float64))
    tmp = out / "metrics.json.tmp"
    with open(tmp, "w") as f:
        json.dump(metrics, f, indent=2, default=_json_default)
    tmp.replace(out / "metrics.json")
