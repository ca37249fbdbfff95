"""Evaluation of a voxel GAN on held-out built-in shapes (``voxrender eval`` with a GAN checkpoint).

A GAN has no encoder, so its shape for an image is found by inversion through the renderer:

1. retrieval: ``pool`` shapes generated from seeded latents, each rendered from the ``n_views`` training
   views; every held-out image takes the (latent, view) whose rendering is nearest (sum of squared errors);
2. refinement: ``refine_steps`` Adam steps on the latent (kept in [-1, 1]) and the azimuth, minimising the
   same error between the rendering and the image (the generator fixed, in eval mode).

The inverted shapes are then scored like the VAE's reconstructions (:func:`voxrender.metrics.evaluate_voxels`:
aligned voxel IoU at 0.5 and at the best threshold, novel-view IoU, azimuth error, the fixed-shape and
visual-hull baselines). ``samples`` in the metrics describe the generator's free samples (the pool):
mean occupancy (soft and > 0.5), the ground truth's for comparison.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from voxrender.io import image_grid, save_gif, save_png
from voxrender.metrics import evaluate_voxels, torch_threads, write_voxel_eval

from .model import VoxelGAN
from .train import load_model


def heldout_dataset(config: dict, n: int):
    """The held-out built-in shapes at the run's grid and image size (the data seed and kinds of the run
    when it trained on them)."""
    from voxrender.data.voxel_shapes import KINDS, VoxelShapes

    d, g = config.get("data", {}), config["gan"]
    synthetic = d.get("name") == "synthetic"
    return VoxelShapes("test", size=g["grid"], image_size=g["image_size"], length=n,
                       seed=d.get("seed", 0) if synthetic else 0,
                       kinds=tuple((d.get("kinds") if synthetic else None) or KINDS))


@torch.no_grad()
def generate_pool(model: VoxelGAN, pool: int, seed: int = 0, batch_size: int = 128, device: str = "cpu"):
    """``pool`` latents from a seeded generator and their eval-mode occupancies (on the CPU)."""
    g = torch.Generator().manual_seed(seed)
    z = model.sample_z(pool, generator=g)
    occ = torch.cat([model.generate(z[s:s + batch_size].to(device)).float().cpu() for s in range(0, pool, batch_size)])
    return z, occ


@torch.no_grad()
def retrieve(model: VoxelGAN, images: torch.Tensor, pool_z: torch.Tensor, pool_occ: torch.Tensor, n_views: int = 8,
             batch_size: int = 128, device: str = "cpu"):
    """For each image the nearest rendering among the pool's shapes at ``n_views`` azimuths:
    (latents (N, z_dim), azimuths (N,), errors (N,))."""
    x = images.flatten(1).float()
    best_err = torch.full((len(x),), float("inf"))
    best_i = torch.zeros(len(x), dtype=torch.int64)
    best_k = torch.zeros(len(x), dtype=torch.int64)
    for k in range(n_views):
        th = 2 * math.pi * k / n_views
        for s in range(0, len(pool_occ), batch_size):
            occ = pool_occ[s:s + batch_size].to(device)
            r = model.project(occ, torch.full((len(occ),), th, device=device)).flatten(1).float().cpu()
            d = (x ** 2).sum(1, keepdim=True) + (r ** 2).sum(1)[None] - 2 * x @ r.T  # (N, P)
            err, j = d.min(1)
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best_i = torch.where(better, j + s, best_i)
            best_k = torch.where(better, torch.full_like(best_k, k), best_k)
    return pool_z[best_i].clone(), best_k.float() * (2 * math.pi / n_views), best_err


def refine(model: VoxelGAN, images: torch.Tensor, z: torch.Tensor, theta: torch.Tensor, steps: int = 50,
           lr: float = 0.05, batch_size: int = 128, device: str = "cpu"):
    """Adam on (z, theta) per image to minimise the squared error of the rendering (z clamped to [-1, 1];
    the generator fixed, in eval mode). Returns (z, theta, final errors)."""
    model.eval()
    zs, ths, errs = [], [], []
    for s in range(0, len(images), batch_size):
        x = images[s:s + batch_size].to(device).float()
        zb = z[s:s + batch_size].to(device).clone().requires_grad_(True)
        tb = theta[s:s + batch_size].to(device).clone().requires_grad_(True)
        opt = torch.optim.Adam([zb, tb], lr=lr)
        for _ in range(steps):
            err = ((model.project(model.generator(zb), tb) - x) ** 2).flatten(1).sum(1)
            opt.zero_grad(set_to_none=True)
            err.sum().backward()
            opt.step()
            with torch.no_grad():
                zb.clamp_(-1, 1)
        with torch.no_grad():
            err = ((model.project(model.generator(zb), tb) - x) ** 2).flatten(1).sum(1)
        zs.append(zb.detach().cpu())
        ths.append(torch.remainder(tb.detach(), 2 * math.pi).cpu())
        errs.append(err.cpu())
    for p in model.parameters():
        p.grad = None
    return torch.cat(zs), torch.cat(ths), torch.cat(errs)


def invert(model: VoxelGAN, images: torch.Tensor, pool: int = 1024, refine_steps: int = 50, seed: int = 0,
           device: str = "cpu", pool_data=None) -> dict:
    """Retrieval (+ refinement) for a batch of images: ``pred`` occupancies (N, G, G, G) in [0, 1],
    ``theta``, ``recon`` renderings, ``z`` and the pool's occupancies."""
    model.eval()
    pz, pocc = pool_data if pool_data is not None else generate_pool(model, pool, seed, device=device)
    n_views = model.cfg.n_views if model.cfg.view == "discrete" else 8
    z, theta, _ = retrieve(model, images, pz, pocc, n_views, device=device)
    if refine_steps > 0:
        z, theta, _ = refine(model, images, z, theta, refine_steps, device=device)
    with torch.no_grad():
        pred = torch.cat([model.generate(z[s:s + 128].to(device)).float().cpu() for s in range(0, len(z), 128)])
        recon = torch.cat([model.project(pred[s:s + 128].to(device), theta[s:s + 128].to(device)).cpu()
                           for s in range(0, len(z), 128)])
    return {"pred": pred, "theta": theta, "recon": recon, "z": z, "pool_occ": pocc}



def evaluate(model: VoxelGAN, config: dict, out, n: int = 256, device: str = "cpu", pool: int = 1024,
             refine_steps: int = 50, seed: int = 0, backend: str | None = None, extra: dict | None = None,
             pictures: bool = True) -> dict:
    """Inverts ``n`` held-out built-in shapes and writes into ``out``: metrics.json, voxels_pred.npy,
    voxels_gt.npy (N, D, H, W float in [0, 1], project_volume's frame), azimuth_pred.npy, azimuth_gt.npy
    (N, radians), and (with ``pictures``) reconstructions.png and turntable.gif."""
    from voxrender.data.voxel_shapes import VoxelShapes

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ds = heldout_dataset(config, n)
    b = ds.get_batch(range(len(ds)))
    inv = invert(model, b["image"], pool=pool, refine_steps=refine_steps, seed=seed, device=device)
    train = VoxelShapes("train", size=ds.size, image_size=ds.image_size, seed=ds.seed, kinds=ds.kinds)
    with torch_threads(1):
        m = evaluate_voxels(inv["pred"], b["voxels"], inv["theta"].numpy(), b["azimuth"].numpy(), b["image"],
                            train.mean_voxels(512), backend=backend)
    aligned = m.pop("_aligned")
    gt_occ = float((b["voxels"] > 0.5).float().mean())
    m["model"]["mean_occupancy_gt"] = gt_occ
    m["model"]["mean_occupancy_soft"] = float(inv["pred"].mean())
    m["model"]["recon_sse"] = float(((inv["recon"] - b["image"]) ** 2).flatten(1).sum(1).mean())
    pocc = inv["pool_occ"]
    m["samples"] = {"n": int(len(pocc)), "mean_occupancy": float((pocc > 0.5).float().mean()),
                    "mean_occupancy_soft": float(pocc.mean()), "mean_occupancy_gt": gt_occ,
                    "confident_mass": float(pocc[pocc > 0.5].sum() / pocc.sum().clamp_min(1e-12))}
    m["inversion"] = {"pool": pool, "refine_steps": refine_steps, "seed": seed}
    m["config"] = config
    if extra:
        m.update(extra)
    write_voxel_eval(out, m, inv["pred"], b["voxels"], inv["theta"], b["azimuth"])
    if pictures:
        write_pictures(model, b, inv, aligned, out, device=device, backend=backend)
    return m


@torch.no_grad()
def write_pictures(model: VoxelGAN, batch: dict, inv: dict, aligned: torch.Tensor, out, n: int = 8,
                   frames: int = 36, scale: int = 3, device: str = "cpu", backend=None) -> dict:
    """reconstructions.png: columns = 8 held-out shapes; rows = input, the inverted shape's rendering, its
    three novel views (+90, 180, 270 degrees), the ground truth from the matching views. turntable.gif:
    the inverted shapes (aligned to the ground truth) above the ground truth, turning."""
    import voxrender as vr
    from voxrender.models.vae.eval import _shade

    out = Path(out)
    n = min(n, len(inv["pred"]))
    pred, th = inv["pred"][:n].to(device), inv["theta"][:n].to(device)
    rows = [list(batch["image"][:n]), list(inv["recon"][:n].clamp(0, 1))]
    for k in (1, 2, 3):
        rows.append(list(model.project(pred, th + k * math.pi / 2).cpu().clamp(0, 1)))
    gt = batch["voxels"][:n]
    for k in (1, 2, 3):
        rows.append(list(vr.project_volume(gt, azimuth=batch["azimuth"][:n] + k * math.pi / 2, tau=1.0,
                                           image_size=batch["image"].shape[-1], backend=backend).clamp(0, 1)))
    recon = save_png(image_grid([t for row in rows for t in row], ncol=n, scale=scale), out / "reconstructions.png")
    fr = []
    for f in range(frames):
        a = 2 * math.pi * f / frames
        fr.append(image_grid(list(_shade(aligned[:n], a, size=64)) + list(_shade(gt, a, size=64)), ncol=n))
    gif = save_gif(fr, out / "turntable.gif", fps=12)
    return {"reconstructions": recon, "turntable": gif}


def evaluate_checkpoint(path, out, n: int = 256, device: str = "cpu", backend: str | None = None,
                        pictures: bool = True, pool: int = 1024, refine_steps: int = 50) -> dict:
    """``voxrender eval`` for a GAN checkpoint."""
    from voxrender.training import load_checkpoint

    ck = load_checkpoint(path)
    if ck["config"].get("model") != "gan":
        raise ValueError(f"{path}: a {ck['config'].get('model')!r} checkpoint, not a GAN")
    config = dict(ck["config"])
    if backend is not None:
        config["gan"] = dict(config["gan"], backend=backend)
    model = load_model({**ck, "config": config}, device)
    return evaluate(model, config, out, n=n, device=device, pool=pool, refine_steps=refine_steps, backend=backend,
                    pictures=pictures, extra={"checkpoint": str(path), "step": ck["step"]})


__all__ = ["evaluate", "evaluate_checkpoint", "generate_pool", "heldout_dataset", "invert", "refine", "retrieve"]
