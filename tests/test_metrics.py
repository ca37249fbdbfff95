"""Evaluation metrics on hand-made cases."""

import math

import numpy as np
import pytest
import torch

import voxrender as vr
from voxrender.data.shapes import box
from voxrender.data.voxel_shapes import VoxelShapes
from voxrender.metrics import (aligned_iou, azimuth_error, evaluate_voxels, iou, mirror_voxels, novel_view_iou,
                               rotate_voxels_y, soft_iou, turn_voxels_y, visual_hull_one_view)


pytestmark = pytest.mark.usefixtures("one_thread")  # small ops: one thread is faster and steadier


@pytest.fixture(scope="module")
def shapes():
    ds = VoxelShapes("test", 16, length=12, kinds=("glyph", "union", "box"))
    return ds.get_batch(range(12))


def test_iou_hand_computed():
    a = torch.zeros(1, 2, 2, 2)
    b = torch.zeros(1, 2, 2, 2)
    a[0, 0, 0, :] = 1  # 2 voxels
    b[0, 0, :, 0] = 1  # 2 voxels, 1 shared
    assert float(iou(a, b)[0]) == pytest.approx(1 / 3)
    assert float(iou(a, a)[0]) == 1.0
    assert float(iou(torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 2, 2))[0]) == 1.0  # both empty
    p = a * 0.4  # below 0.5, above 0.3
    assert float(iou(p, a)[0]) == 0.0 and float(iou(p, a, threshold=0.3)[0]) == 1.0
    assert float(soft_iou(p, a)[0]) == pytest.approx(0.4)


def test_rotation_matches_the_renderer(shapes):
    v = shapes["voxels"][:3]
    a, b = 0.7, torch.tensor([0.3, 1.0, 2.5])
    lhs = vr.project_volume(rotate_voxels_y(v, a), azimuth=b, tau=1.0, backend="torch")
    rhs = vr.project_volume(v, azimuth=b + a, tau=1.0, backend="torch")
    other = vr.project_volume(v, azimuth=b - a, tau=1.0, backend="torch")
    assert (lhs - rhs).abs().mean() < 0.25 * (lhs - other).abs().mean()  # resampling blur only
    for angle in (0.3, math.pi / 2, 4.0):
        torch.testing.assert_close(turn_voxels_y(v, angle), rotate_voxels_y(v, angle), atol=1e-5, rtol=0)


def test_aligned_iou_recovers_a_known_offset(shapes):
    gt = shapes["voxels"]
    # a quarter turn is exact on the grid: IoU 1 after alignment, offset found for the whole set
    pred = torch.rot90(gt, 1, dims=(1, 3))  # turn in the (d, w) = (z, x) plane
    r = aligned_iou(pred, gt)
    assert r["iou@0.5"] == pytest.approx(1.0) and r["global_iou@0.5"] == pytest.approx(1.0)
    assert r["global_offset_deg"] in (90.0, 270.0) and not r["global_mirror"]
    assert iou(pred, gt).mean() < 0.9  # unaligned it is worse
    # an off-grid offset of 40 degrees: aligned up to resampling
    r = aligned_iou(rotate_voxels_y(gt, -math.radians(40)), gt)
    assert r["global_offset_deg"] == 40.0 and r["iou@best"] > 0.85


def test_aligned_iou_mirror(shapes):
    gt = shapes["voxels"]
    r = aligned_iou(mirror_voxels(gt), gt)
    assert r["iou@0.5"] == pytest.approx(1.0)
    assert r["global_mirror"] and r["global_iou@0.5"] == pytest.approx(1.0)
    r = aligned_iou(mirror_voxels(gt), gt, mirror=False)
    assert r["iou@0.5"] < 1.0  # glyphs are not mirror-symmetric under any turn


def test_aligned_iou_best_threshold_and_disjoint():
    gt = box(16, half=(0.3, 0.3, 0.3))[None]
    faint = gt * 0.3  # right shape, low confidence
    r = aligned_iou(faint, gt)
    assert r["iou@0.5"] == 0.0 and r["iou@best"] == pytest.approx(1.0) and r["best_threshold"] < 0.3
    far = box(16, center=(0.0, 0.6, 0.0), half=(0.2, 0.2, 0.2))[None]  # above it: no turn makes them meet
    near = box(16, center=(0.0, -0.6, 0.0), half=(0.2, 0.2, 0.2))[None]
    assert aligned_iou(far, near)["iou@best"] == 0.0


def test_azimuth_error_known_cases():
    rng = np.random.default_rng(0)
    gt = rng.uniform(0, 2 * np.pi, 50)
    r = azimuth_error(gt + 1.0, gt)  # a global offset costs nothing
    assert r["mean_deg"] < 0.1 and r["offset_deg"] == pytest.approx(np.degrees(1.0), abs=0.1)
    err = np.where(np.arange(50) % 2 == 0, np.radians(10.0), 0.0)
    r = azimuth_error(gt + 2.0 + err, gt)
    assert r["mean_deg"] == pytest.approx(5.0, abs=0.11)
    r = azimuth_error(-(gt + 0.5), gt)  # turning the other way (a mirrored frame)
    assert r["mean_deg"] < 0.1 and r["reversed"]
    assert azimuth_error(-(gt + 0.5), gt, allow_reversed=False)["mean_deg"] > 30
    r = azimuth_error(gt + np.pi, gt)
    assert r["within_15deg"] == 1.0


def test_visual_hull_and_novel_views(shapes):
    gt = shapes["voxels"]
    # an extruded shape (constant along depth) seen from the front is its own one-view hull
    ext = gt.amax(1, keepdim=True).expand_as(gt).contiguous()
    img = vr.project_volume(ext, tau=1.0)
    hull = visual_hull_one_view(img)
    assert iou(hull, ext).min() == 1.0
    assert novel_view_iou(gt, gt) == pytest.approx(1.0)
    assert novel_view_iou(torch.zeros_like(gt), gt) == 0.0


def test_evaluate_voxels_table(shapes):
    gt, img = shapes["voxels"], shapes["image"]
    res = evaluate_voxels(gt, gt, shapes["azimuth"].numpy(), shapes["azimuth"].numpy(), img, gt.mean(0))
    assert res["model"]["iou@0.5"] == pytest.approx(1.0)
    assert res["model"]["azimuth"]["mean_deg"] < 0.1
    assert set(res["baselines"]) == {"fixed_shape", "visual_hull"}
    assert res["baselines"]["fixed_shape"]["iou@best"] < 1.0
