"""Voxel grids to triangle meshes (marching cubes from scikit-image, an optional dependency:
``pip install "voxrender[mesh]"`` or ``pip install scikit-image``)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

MISSING = ("mesh export needs scikit-image (marching cubes): pip install scikit-image  "
           "(or pip install -e \".[mesh]\" in a checkout)")


def _marching_cubes():
    try:
        from skimage.measure import marching_cubes
    except ImportError:
        raise ImportError(MISSING) from None
    return marching_cubes


def voxels_to_mesh(voxels, threshold: float = 0.5) -> tuple[Tensor, Tensor]:
    """The ``threshold`` iso-surface of a (D, H, W) grid as (verts (V, 3) float32, faces (F, 3) int64) in
    project_volume's frame ((x, y, z) = (w, h, d) voxel centres at -1 + (2 i + 1) / N), closed (the grid is
    padded with empty space) and wound outwards (right-hand normals point out of the solid)."""
    marching_cubes = _marching_cubes()
    v = voxels.detach().float().cpu().numpy() if isinstance(voxels, Tensor) else np.asarray(voxels, np.float32)
    if v.ndim != 3:
        raise ValueError(f"voxels: expected (D, H, W), got shape {v.shape}")
    if not (v > threshold).any():
        return torch.zeros(0, 3), torch.zeros(0, 3, dtype=torch.int64)
    d, h, w = v.shape
    verts, faces, _, _ = marching_cubes(np.pad(v, 1), level=threshold)
    idx = verts - 1  # undo the padding: continuous (d, h, w) indices
    size = np.array([d, h, w], np.float64)
    dhw = -1 + (2 * idx + 1) / size
    xyz = dhw[:, ::-1].copy()  # (x, y, z) = (w, h, d)
    faces = faces.astype(np.int64)
    # Orientation from the signed volume (positive when the normals point out).
    a, b, c = xyz[faces[:, 0]], xyz[faces[:, 1]], xyz[faces[:, 2]]
    if np.einsum("ij,ij->i", a, np.cross(b, c)).sum() < 0:
        faces = faces[:, ::-1].copy()
    return torch.from_numpy(xyz.astype(np.float32)), torch.from_numpy(faces)


def export_meshes(voxels, out, threshold: float = 0.5, prefix: str = "sample") -> list:
    """Writes the ``threshold`` iso-surface of each grid of ``voxels`` (N, D, H, W) to
    ``out/<prefix>_<i>.obj`` (atomically) and returns the paths."""
    from pathlib import Path

    from .mesh_io import save_obj

    paths = []
    for i in range(len(voxels)):
        v, f = voxels_to_mesh(voxels[i], threshold)
        paths.append(save_obj(Path(out) / f"{prefix}_{i:02d}.obj", v, f))
    return paths
