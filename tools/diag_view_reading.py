"""How much of each face's turn does the viewpoint net read, and how much is baked into the canonical depth?
A developer diagnostic, not GAN2Shape.

Reads the per-image records of ``voxrender eval-gan2shape`` (OUT/progress/<split>_<k>.pt, with OUT/metrics.json
for the split and data seed) and the held-out faces' TRUE views (``SyntheticFaces``, the renderer's
convention: radians, the same as V's output). Per rotation (pitch, yaw, roll): the least-squares slope of V's
reading against the truth (1: V reads the whole turn; 0.5: half of it), their correlation and the rms error in
degrees. Then the plane that the depth anchors see (``--depth-anchor`` / ``--tilt-anchor``): the canonical
depth less the prior, over the INPUT's object mask (``canonical - prior ~ a + b y + c x``, x and y in [-1, 1],
y down), its vertical slope b against the true pitch and horizontal slope c against the true yaw (slope per
radian, correlation, rms), for the prediction and for the face's TRUE canonical depth over the same mask and
prior. The truth's slopes follow the view: the mask and the prior are where the turned face is seen, not
where its canonical depth lies, so ``--tilt-anchor``, which holds b at 0, asks every pitched face for a lean
it does not have. Last, the truth over the mask ``--anchor-frame canonical`` holds it over
(``model.canonical_anchor_mask`` with the TRUE view and depth, and the prior of the run's settings built on
it): what that frame asks of the faces where V reads their views right.

    python tools/diag_view_reading.py runs/g2s-eval
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

ROTATIONS = ("pitch", "yaw", "roll")  # the view's first three numbers


def line_fit(truth: torch.Tensor, reading: torch.Tensor) -> tuple[float, float, float]:
    """(slope, correlation, rms error) of ``reading`` against ``truth`` (N,): the least-squares line's slope
    (with an intercept), Pearson's r (nan when either is constant), sqrt(mean((reading - truth)^2))."""
    t, r = truth.double(), reading.double()
    tc, rc = t - t.mean(), r - r.mean()
    var = float((tc * tc).sum())
    slope = float((tc * rc).sum()) / var if var > 0 else float("nan")
    den = float(tc.norm() * rc.norm())
    corr = float((tc * rc).sum()) / den if den > 0 else float("nan")
    return slope, corr, float((r - t).pow(2).mean().sqrt())


def canonical_slopes(canon: torch.Tensor, prior: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(N, 2) the (vertical, horizontal) slopes b, c of the least-squares plane a + b y + c x of canon - prior
    (N, H, W) over masks (N, H, W) (weights; x, y in [-1, 1], y down)."""
    N, H, W = canon.shape
    y, x = torch.meshgrid(torch.linspace(-1, 1, H, dtype=torch.float64),
                          torch.linspace(-1, 1, W, dtype=torch.float64), indexing="ij")
    basis = torch.stack([torch.ones_like(x), y, x], -1).reshape(-1, 3)
    out = torch.zeros(N, 2, dtype=torch.float64)
    for i in range(N):
        w = mask[i].reshape(-1).double().sqrt()
        r = (canon[i] - prior[i]).reshape(-1).double()
        out[i] = torch.linalg.lstsq(basis * w[:, None], (r * w)[:, None]).solution[1:, 0]
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="Reads OUT/metrics.json and OUT/progress/*.pt of eval-gan2shape.")
    p.add_argument("out", metavar="OUT", help="an eval-gan2shape output folder (on the built-in synthetic faces)")
    args = p.parse_args(argv)
    out = Path(args.out)
    try:
        meta = json.loads((out / "metrics.json").read_text())
        split, seed, n, S = meta["data"]["split"], int(meta["data"]["seed"]), int(meta["n"]), int(meta["image_size"])
    except (OSError, KeyError, ValueError) as e:
        print(f"diag_view_reading: OUT: {out / 'metrics.json'} unreadable ({e}); run `voxrender eval-gan2shape "
              f"--out {out}` first", file=sys.stderr)
        return 2
    recs = []
    for k in range(n):
        path = out / "progress" / f"{split}_{k:04d}.pt"
        if not path.is_file():
            print(f"diag_view_reading: OUT: {path} not found (the eval's per-image record)", file=sys.stderr)
            return 2
        recs.append(torch.load(path, map_location="cpu", weights_only=False)["result"])
    from voxrender.data.faces import SyntheticFaces
    from voxrender.models.gan2shape.model import canonical_anchor_mask
    from voxrender.models.gan2shape.prior import PRIOR_FAR, PRIOR_NEAR, ellipsoid_depth_prior

    batch = SyntheticFaces(n, size=S, seed=seed, split=split).get_batch(range(n))
    truth = batch["view"].double()
    view = torch.stack([r["view"].reshape(-1)[:6] for r in recs]).double()
    deg = 180 / math.pi
    print(f"{n} {split} faces: the viewpoint net's reading against the true view")
    print("rotation  slope   corr  rms err (deg)  truth std (deg)")
    for j, name in enumerate(ROTATIONS):
        slope, corr, rms = line_fit(truth[:, j], view[:, j])
        print(f"{name:8s} {slope:6.2f} {corr:6.2f} {rms * deg:14.1f} {float(truth[:, j].std()) * deg:16.1f}")
    prior = torch.stack([r["prior"].reshape(S, S) for r in recs])
    mask = torch.stack([r["object_mask"].reshape(S, S) for r in recs])
    slopes = {"predicted": canonical_slopes(torch.stack([r["canon_depth"].reshape(S, S) for r in recs]), prior, mask),
              "true": canonical_slopes(batch["canon_depth"].reshape(n, S, S), prior, mask)}
    cfg = meta.get("config", {})
    canon_mask = canonical_anchor_mask(mask, batch["canon_depth"].reshape(n, S, S).float(), truth.float())
    canon_prior = ellipsoid_depth_prior(canon_mask, near=cfg.get("prior_near", PRIOR_NEAR),
                                        far=cfg.get("prior_far", PRIOR_FAR), category=cfg.get("category"))
    slopes["true*"] = canonical_slopes(batch["canon_depth"].reshape(n, S, S), canon_prior.reshape(n, S, S),
                                       canon_mask.reshape(n, S, S))
    print("canonical depth - prior over the input's mask (true*: over the canonical anchor mask of the true view)")
    print("plane slope                          per radian   corr     rms")
    for j, (name, axis) in enumerate((("vertical b", 0), ("horizontal c", 1))):
        t = truth[:, axis]  # the vertical slope against the pitch, the horizontal against the yaw
        for who, sl in slopes.items():
            per_rad, corr, _ = line_fit(t, sl[:, j])
            print(f"{name:12s} vs true {ROTATIONS[axis]:5s} {who:9s} {per_rad:+19.4f} {corr:+6.2f} "
                  f"{float(sl[:, j].pow(2).mean().sqrt()):7.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
