"""``voxrender sample``: new shapes from a trained VAE: pictures, turntable, voxels, meshes."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from voxrender.io import image_grid, save_gif, save_png

from .eval import _shade
from .model import VoxelVAE


@torch.no_grad()
def sample(model: VoxelVAE, n: int, out, seed: int = 0, turntable: bool = False, export_mesh: bool = False,
           threshold: float = 0.5, frames: int = 36, device: str = "cpu", latent_stats=None) -> dict:
    """Decodes ``n`` shape latents z ~ N(0, I) (or N(mean, diag(std^2)) with ``latent_stats``) and writes OUT/samples.png (each shape seen from 30 degrees,
    slightly from above), OUT/voxels.npy (n, G, G, G occupancy in [0, 1]), with ``turntable``
    OUT/turntable.gif, with ``export_mesh`` OUT/sample_XX.obj (marching cubes at ``threshold``)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.eval()
    g = torch.Generator().manual_seed(seed)
    eps = torch.randn(n, model.cfg.z_dim, generator=g)
    if latent_stats is not None:
        mean, std = latent_stats
        eps = mean.cpu() + std.cpu() * eps
    z = eps.to(device)
    voxels, _ = model.decode(z)
    occ = model.occupancy(voxels).float().cpu()
    files = {}
    np.save(out / "voxels.npy", occ.numpy())
    files["voxels"] = out / "voxels.npy"
    ncol = min(n, 8)
    files["samples"] = save_png(image_grid(list(_shade(occ, math.radians(30), size=64)), ncol=ncol, scale=2),
                                out / "samples.png")
    if turntable:
        fr = [image_grid(list(_shade(occ, 2 * math.pi * k / frames, size=64)), ncol=ncol) for k in range(frames)]
        files["turntable"] = save_gif(fr, out / "turntable.gif", fps=12)
    if export_mesh:
        from voxrender.export import export_meshes

        files["meshes"] = export_meshes(occ[:n], out, threshold)
    return files


@torch.no_grad()
def latent_stats(model: VoxelVAE, dataset, n: int = 512, batch_size: int = 64, device: str = "cpu"):
    """Mean and standard deviation of the encoder's shape latents over ``n`` training images: the mu-VAE
    does not pull every latent to N(0, 1) (only the batch sums of mu and log sigma^2 to 0), so new shapes
    are drawn from this fitted diagonal Gaussian."""
    model.eval()
    mus = []
    for s in range(0, min(n, len(dataset)), batch_size):
        b = dataset.get_batch(range(s, min(s + batch_size, n, len(dataset))))
        mu, _ = model.encode(b["image"].to(device))
        mus.append(mu[:, :model.cfg.z_dim].cpu())
    mu = torch.cat(mus)
    return mu.mean(0), mu.std(0)
