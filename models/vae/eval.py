"""Evaluation and pictures of a trained voxel VAE on held-out built-in shapes (``voxrender eval``, ``demo``)."""

from __future__ import annotations

import math
from pathlib import Path

import torch

import voxrender as vr
from voxrender.data.voxel_shapes import VoxelShapes
from voxrender.io import image_grid, save_gif, save_png
from voxrender.metrics import evaluate_voxels, torch_threads, write_voxel_eval

from .model import VoxelVAE
from .train import load_model


def heldout_dataset(config: dict, n: int) -> VoxelShapes:
    """The held-out split matching a run's training data (same grid, image size, colour, dataset seed)."""
    d = config.get("data", {})
    vae = config["vae"]
    return VoxelShapes("test", size=vae["grid"], image_size=vae["image_size"], length=n, seed=d.get("seed", 0),
                       rgb=vae["channels"] == 3, kinds=tuple(d.get("kinds") or VoxelShapes().kinds))


@torch.no_grad()
def predict(model: VoxelVAE, ds: VoxelShapes, batch_size: int = 64, device: str = "cpu") -> dict:
    """Runs the model (eval mode, z = mu) over a dataset: predicted occupancy (N, G, G, G) in [0, 1] and
    azimuth, with the ground truth and inputs."""
    out = {k: [] for k in ("pred", "theta", "gt", "azimuth", "image", "recon", "kind")}
    model.eval()
    for s in range(0, len(ds), batch_size):
        b = ds.get_batch(range(s, min(s + batch_size, len(ds))))
        r = model.reconstruct(b["image"].to(device))
        out["pred"].append(model.occupancy(r["voxels"]).float().cpu())
        out["theta"].append(r["theta"].float().cpu())
        out["recon"].append(r["recon"].float().cpu())
        for k in ("gt", "azimuth", "image", "kind"):
            out[k].append(b["voxels" if k == "gt" else k])
    return {k: torch.cat(v) for k, v in out.items()}


def _table_rows(metrics: dict) -> list[tuple]:
    rows = [("model", metrics["model"])] + [(k.replace("_", " "), v) for k, v in metrics["baselines"].items()]
    return rows


def summary_table(metrics: dict) -> str:
    """A small Markdown table of the evaluation (model and baselines)."""
    lines = ["| shapes: " + str(metrics["n"]) + " held out | IoU@0.5 | IoU@best (t) | novel-view IoU | azimuth error |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for name, m in _table_rows(metrics):
        az = m.get("azimuth")
        azs = f"{az['mean_deg']:.1f} deg (median {az['median_deg']:.1f})" if az else "-"
        lines.append(f"| {name} | {m['iou@0.5']:.3f} | {m['iou@best']:.3f} ({m['best_threshold']:.2f}) | "
                     f"{m['novel_view_iou']:.3f} | {azs} |")
    return "\n".join(lines)


def evaluate(model: VoxelVAE, config: dict, out, n: int = 256, device: str = "cpu", batch_size: int = 64,
             backend: str | None = None, extra: dict | None = None, pictures: bool = True) -> dict:
    """Evaluates on ``n`` held-out shapes and writes into ``out``: metrics.json, voxels_pred.npy,
    voxels_gt.npy (N, D, H, W float in [0, 1], project_volume's frame), azimuth_gt.npy, azimuth_pred.npy
    (N, radians), and (with ``pictures``) reconstructions.png and turntable.gif."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ds = heldout_dataset(config, n)
    p = predict(model, ds, batch_size, device)
    train = VoxelShapes("train", size=ds.size, image_size=ds.image_size, seed=ds.seed, kinds=ds.kinds)
    mean_shape = train.mean_voxels(512)
    with torch_threads(1):
        m = evaluate_voxels(p["pred"], p["gt"], p["theta"].numpy(), p["azimuth"].numpy(), p["image"], mean_shape,
                            backend=backend)
    aligned = m.pop("_aligned")
    m["model"]["mean_occupancy_gt"] = float((p["gt"] > 0.5).float().mean())
    m["model"]["mean_occupancy_soft"] = float(p["pred"].mean())
    m["model"]["recon_sse"] = float(((p["recon"] - p["image"]) ** 2).flatten(1).sum(1).mean())
    m["config"] = config
    if extra:
        m.update(extra)
    write_voxel_eval(out, m, p["pred"], p["gt"], p["theta"], p["azimuth"])
    if pictures:
        write_pictures(model, p, aligned, m, out, backend=backend)
    return m



def _shade(occ: torch.Tensor, azimuth: float, elevation: float = -0.35, size: int | None = None,
           backend=None) -> torch.Tensor:
    """A picture of (B, G, G, G) occupancies: emission-absorption with a colour that follows height and
    depth (so that the 3D form reads), white background, seen from above at ``azimuth``."""
    b, g = occ.shape[0], occ.shape[-1]
    c = -1 + (2 * torch.arange(g, dtype=torch.float32) + 1) / g
    z, y, x = torch.meshgrid(c, c, c, indexing="ij")
    colour = torch.stack([0.55 + 0.4 * x, 0.45 - 0.35 * y, 0.75 - 0.25 * z]).clamp(0, 1)
    feats = colour[None].expand(b, -1, -1, -1, -1).contiguous()
    az = torch.full((b,), float(azimuth))
    el = torch.full((b,), float(elevation))
    img = vr.project_volume(occ.clamp(0, 1) * 2.0, azimuth=az, elevation=el, features=feats,
                            mode="emission_absorption", tau=1.0, background=1.0, image_size=size, backend=backend)
    return img[:, :3]


@torch.no_grad()
def write_pictures(model: VoxelVAE, p: dict, aligned: torch.Tensor, metrics: dict, out, n: int = 8,
                   backend=None, frames: int = 36, scale: int = 3) -> dict:
    """reconstructions.png: columns = 8 held-out shapes; rows = input, reconstruction, the predicted shape
    from three novel views (theta + 90, 180, 270 degrees), the ground truth from the matching views.
    turntable.gif: the learned shapes (aligned to the ground truth) and the ground truth below them,
    turning, seen slightly from above."""
    out = Path(out)
    n = min(n, len(p["pred"]))
    az_info = metrics["model"].get("azimuth", {})
    sign = -1.0 if az_info.get("reversed") else 1.0
    dev = next(model.parameters()).device
    r = model.reconstruct(p["image"][:n].to(dev))
    rows = [list(p["image"][:n]), list(r["recon"].cpu().clamp(0, 1))]
    gt = p["gt"][:n]
    for k in (1, 2, 3):
        th = r["theta"] + sign * k * math.pi / 2
        rows.append(list(model.project(r["voxels"], th, r["colour"]).cpu().clamp(0, 1)))
    for k in (1, 2, 3):
        th = p["azimuth"][:n] + k * math.pi / 2
        rows.append(list(vr.project_volume(gt, azimuth=th, tau=1.0, image_size=p["image"].shape[-1],
                                           backend=backend).clamp(0, 1)))
    tiles = [t if t.shape[0] in (1, 3) else t[:1] for row in rows for t in row]
    tiles = [t.expand(3, -1, -1) if t.shape[0] == 1 else t for t in tiles]
    recon = save_png(image_grid(tiles, ncol=n, scale=scale), out / "reconstructions.png")
    frames_out = []
    for f in range(frames):
        a = 2 * math.pi * f / frames
        top = _shade(aligned[:n], a, size=64, backend=backend)
        bottom = _shade(gt, a, size=64, backend=backend)
        frames_out.append(image_grid(list(top) + list(bottom), ncol=n))
    gif = save_gif(frames_out, out / "turntable.gif", fps=12)
    return {"reconstructions": recon, "turntable": gif}


def evaluate_checkpoint(path, out, n: int = 256, device: str = "cpu", backend: str | None = None,
                        pictures: bool = True) -> dict:
    """``voxrender eval``: loads a training checkpoint and runs :func:`evaluate`."""
    from voxrender.training import load_checkpoint

    ck = load_checkpoint(path)
    if ck["config"].get("model") != "vae":
        raise ValueError(f"{path}: a {ck['config'].get('model')!r} checkpoint; eval handles the VAE")
    config = dict(ck["config"])
    if backend is not None:
        config["vae"] = dict(config["vae"], backend=backend)
    model = load_model({**ck, "config": config}, device)
    return evaluate(model, config, out, n=n, device=device, backend=backend, pictures=pictures,
                    extra={"checkpoint": str(path), "step": ck["step"]})


__all__ = ["evaluate", "evaluate_checkpoint", "heldout_dataset", "predict", "summary_table", "write_pictures"]
