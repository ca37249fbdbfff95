"""``voxrender sample`` for a GAN checkpoint: new shapes: pictures, turntable, voxels, meshes."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from voxrender.io import image_grid, save_gif, save_png

from .model import VoxelGAN
from .train import view_grid


def _shade(occ: torch.Tensor, azimuth: float, size: int = 64) -> torch.Tensor:
    # The VAE's shaded picture (colour follows height and depth, seen from above), so both models'
    # samples look alike.
    from voxrender.models.vae.eval import _shade as shade

    return shade(occ, azimuth, size=size)


@torch.no_grad()
def sample(model: VoxelGAN, n: int, out, seed: int = 0, turntable: bool = False, export_mesh: bool = False,
           threshold: float = 0.5, frames: int = 36, device: str = "cpu") -> dict:
    """Generates ``n`` shapes from z ~ U(-1, 1)^z_dim (seeded; eval-mode generator) and writes
    OUT/samples.png (each shape shaded, seen from 30 degrees, slightly from above), OUT/views.png (one row
    per shape: its renderings from the 8 training views, what the discriminator sees), OUT/voxels.npy
    (n, G, G, G occupancy in [0, 1]), with ``turntable`` OUT/turntable.gif, with ``export_mesh``
    OUT/sample_XX.obj (marching cubes at ``threshold``)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.eval()
    g = torch.Generator().manual_seed(seed)
    z = model.sample_z(n, generator=g).to(device)
    occ = model.generate(z).float().cpu()
    files = {}
    np.save(out / "voxels.npy", occ.numpy())
    files["voxels"] = out / "voxels.npy"
    ncol = min(n, 8)
    files["samples"] = save_png(image_grid(list(_shade(occ, math.radians(30))), ncol=ncol, scale=2),
                                out / "samples.png")
    files["views"] = save_png(view_grid(model, z[:16]), out / "views.png")
    if turntable:
        fr = [image_grid(list(_shade(occ, 2 * math.pi * k / frames)), ncol=ncol) for k in range(frames)]
        files["turntable"] = save_gif(fr, out / "turntable.gif", fps=12)
    if export_mesh:
        from voxrender.export import export_meshes

        files["meshes"] = export_meshes(occ[:n], out, threshold)
    return files
