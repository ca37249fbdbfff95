"""Voxel -> mesh export (marching cubes from the optional scikit-image)."""

import sys

import pytest
import torch

from voxrender.data.shapes import box
from voxrender.export import MISSING, voxels_to_mesh


def test_box_mesh_is_closed_outward_and_in_the_frame():
    pytest.importorskip("skimage")
    occ = box(16, center=(0.25, 0.0, 0.0), half=(0.5, 0.25, 0.25))  # x in [-0.25, 0.75]
    v, f = voxels_to_mesh(occ)
    assert v.dtype == torch.float32 and f.dtype == torch.int64 and f.shape[1] == 3
    # the iso-surface lies half a voxel outside the outermost solid voxel centres
    lo, hi = v.min(0).values, v.max(0).values
    torch.testing.assert_close(lo, torch.tensor([-0.25, -0.25, -0.25]), atol=0.07, rtol=0)
    torch.testing.assert_close(hi, torch.tensor([0.75, 0.25, 0.25]), atol=0.07, rtol=0)
    a, b, c = v[f[:, 0]].double(), v[f[:, 1]].double(), v[f[:, 2]].double()
    vol = float((a * torch.cross(b, c, dim=1)).sum() / 6)
    assert vol == pytest.approx(1.0 * 0.5 * 0.5, rel=0.1)  # positive: normals point out
    # closed: every edge is shared by exactly two faces
    e = torch.cat([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]).sort(1).values
    _, counts = torch.unique(e, dim=0, return_counts=True)
    assert (counts == 2).all()
    v0, f0 = voxels_to_mesh(torch.zeros(8, 8, 8))
    assert v0.shape == (0, 3) and f0.shape == (0, 3)


def test_missing_scikit_image_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "skimage", None)
    monkeypatch.setitem(sys.modules, "skimage.measure", None)
    with pytest.raises(ImportError, match="pip install scikit-image"):
        voxels_to_mesh(torch.ones(4, 4, 4))
    assert "scikit-image" in MISSING
