"""SIDE / MAD on hand-made depth maps, the baselines, and the ellipsoid prior and threshold mask."""

import math

import numpy as np
import pytest
import torch

from voxrender.data import SyntheticFaces
from voxrender.models.gan2shape import metrics as M
from voxrender.models.gan2shape import prior_fit as PF
from voxrender.models.gan2shape import renderer as R
from voxrender.models.gan2shape.prior import ellipsoid_depth_prior, mask_range, object_mask

pytestmark = pytest.mark.usefixtures("one_thread")

D64 = torch.float64


def tilted_plane(s, tilt, dtype=D64):
    """The plane through (0, 0, 1) turned by ``tilt`` radians about the y axis, as a depth map."""
    K = R.intrinsics(s, dtype=dtype)
    a = (torch.arange(s, dtype=dtype) - K[0, 2]) / K[0, 0]
    return (1 / (1 + math.tan(tilt) * a)).expand(1, s, s).clone()


def face_depth(s=32):
    """A bump on a background at depth 10 (the dataset's convention)."""
    c = (s - 1) / 2
    y, x = torch.meshgrid(torch.arange(s, dtype=D64), torch.arange(s, dtype=D64), indexing="ij")
    r2 = ((x - c) ** 2 + (y - c) ** 2) / (0.35 * s) ** 2
    d = 1.04 - 0.06 * (1 - r2).clamp(min=0).sqrt()
    return torch.where(r2 < 1, d, torch.full_like(d, 10.0))[None]


def test_erosion_removes_the_boundary_ring():
    m = torch.zeros(1, 9, 9)
    m[0, 2:7, 2:7] = 1
    e = M.erode(m)
    ref = torch.zeros(1, 9, 9)
    ref[0, 3:6, 3:6] = 1
    assert torch.equal(e, ref)
    full = M.erode(torch.ones(2, 6, 6))  # zero padding: the image's own border goes too
    ref = torch.zeros(2, 6, 6)
    ref[:, 1:-1, 1:-1] = 1
    assert torch.equal(full, ref)
    twice = torch.zeros(1, 6, 6)
    twice[0, 2:4, 2:4] = 1
    assert torch.equal(M.erode(ref[0]), twice)


def test_side_is_scale_invariant_and_hand_computed():
    gt = face_depth()
    r = M.evaluate_depth(gt * 1.07, gt)
    assert r["side"].abs().max() < 1e-12 and r["mad"].abs().max() < 1e-5 and r["count"] == 1
    # log-difference a on one half of the mask and b on the other: SIDE = |a - b| / 2
    g = torch.full((1, 4, 6), 1.0, dtype=D64)
    p = g.clone()
    p[:, :2] *= math.exp(0.3)
    p[:, 2:] *= math.exp(-0.1)
    assert M.side(p, g, torch.ones(1, 4, 6)).item() == pytest.approx(0.2, abs=1e-12)
    # d = (0, 0, 3) on a 3-pixel mask: mean 1, sqrt(mean (d - 1)^2) = sqrt(2)
    p = torch.ones(1, 2, 3, dtype=D64)
    p[0, 0, 2] = math.exp(3)
    m = torch.zeros(1, 2, 3)
    m[0, 0] = 1
    assert M.side(p, torch.ones(1, 2, 3, dtype=D64), m).item() == pytest.approx(math.sqrt(2), abs=1e-12)
    assert math.isnan(M.side(p, p, torch.zeros(1, 2, 3)).item())


def test_mad_of_a_plane_and_a_tilted_plane_is_the_tilt():
    s = 32
    flat = torch.ones(1, s, s, dtype=D64)
    every = torch.ones(1, s, s)
    for deg in (5.0, 20.0, 40.0):
        r = M.evaluate_depth(tilted_plane(s, math.radians(deg)), flat, gt_mask=every)
        assert r["mad"].item() == pytest.approx(deg, abs=1e-9)
        assert r["mask"].sum() == (s - 2) ** 2
    # two tilts compose about the same axis
    r = M.evaluate_depth(tilted_plane(s, math.radians(30)), tilted_plane(s, math.radians(-10)), gt_mask=every)
    assert r["mad"].item() == pytest.approx(40.0, abs=1e-9)
    # Unsup3d's eps shortens its normals: 6.5 degrees at 64 px for a perfect fronto-parallel prediction
    gt = face_depth(64)
    assert M.evaluate_depth(gt, gt)["mad"].item() < 1e-5
    assert 4 < M.evaluate_depth(gt, gt, normal_eps=1e-7)["mad"].item() < 6.6
    flat = torch.ones(1, 64, 64, dtype=D64)
    every = torch.ones(1, 64, 64)
    assert M.evaluate_depth(flat, flat, gt_mask=every, normal_eps=1e-7)["mad"].item() == pytest.approx(6.51, abs=0.01)


def test_masks_follow_unsup3d():
    gt = face_depth()
    gm = M.gt_mask_from_depth(gt)
    assert torch.equal(gm, (gt < 10).float())
    pred = gt.clamp(max=1.2)  # a clamped warped depth: 1.2 marks no surface
    m = M.evaluation_mask(pred, gt)
    assert torch.equal(m, M.erode(gm))
    pm = torch.ones_like(gm)
    pm[:, :, :16] = 0
    m2 = M.evaluation_mask(pred, gt, pred_mask=pm)
    assert torch.equal(m2, M.erode(gm) * M.erode(pm)) and m2[:, :, :17].sum() == 0


def test_summary_and_report():
    mean, std, n = M.summarize(torch.tensor([1.0, 3.0, float("nan")]))
    assert (mean, std, n) == (2.0, 1.0, 2)
    line = M.format_metrics({"side_mean": 0.00793, "side_std": 0.0014, "mad_mean": 16.51, "mad_std": 1.56,
                             "count": 3}, "unsup3d")
    assert line == "unsup3d SIDE (x10^-2) 0.793 +- 0.140  MAD (deg) 16.51 +- 1.56  (3 images)"


def test_paired_comparison_hand_computed():
    # differences -1, 0, -2, -0.5: mean -0.875, sample std sqrt(2.1875 / 3), t = mean / (std / 2)
    r = M.paired(torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([2.0, 2.0, 5.0, 4.5]))
    assert r["count"] == 4 and r["better"] == 3  # a tie is not a win
    assert r["mean_diff"] == pytest.approx(-0.875)
    assert r["t"] == pytest.approx(-0.875 / (math.sqrt(2.1875 / 3) / 2))
    # swapped: the same t with the other sign, the tie still counts for neither
    s = M.paired(torch.tensor([2.0, 2.0, 5.0, 4.5]), torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert s["better"] == 0 and s["t"] == pytest.approx(-r["t"])
    # images without a score (an empty evaluation mask: NaN) in either method leave the comparison
    n = M.paired(torch.tensor([1.0, float("nan"), 3.0, 4.0, 0.0]), torch.tensor([2.0, 2.0, 5.0, 4.5, float("nan")]))
    assert n["count"] == 3 and n["better"] == 3
    # no spread or a single image: no t statistic
    assert M.paired(torch.tensor([1.0, 2.0]), torch.tensor([2.0, 3.0]))["t"] is None
    assert M.paired(torch.tensor([1.0]), torch.tensor([2.0]))["t"] is None
    with pytest.raises(ValueError, match="ours"):
        M.paired(torch.zeros(3), torch.zeros(4))
    line = M.format_paired({"side": r, "mad": M.paired(torch.ones(2), torch.ones(2) * 2)}, "mean_depth")
    assert "mean_depth" in line and "SIDE better on 3/4 (t -2.0)" in line and "MAD better on 2/2 (t n/a)" in line


def test_baselines_on_synthetic_faces():
    b = SyntheticFaces(6, seed=3, split="test").get_batch(range(6))
    res = M.evaluate_baselines(b["depth"], b["mask"], b["image"])
    assert set(res) == {"flat", "mean_depth", "ellipsoid"}
    for r in res.values():
        assert r["count"] == 6 and math.isfinite(r["side_mean"]) and math.isfinite(r["mad_mean"])
        assert 0 < r["side_mean"] < 0.1 and 0 < r["mad_mean"] < 90
    # a flat map's normals are (0, 0, 1): its MAD is the mean slant of the faces
    assert res["mean_depth"]["mad_mean"] < res["flat"]["mad_mean"]
    md = M.mean_depth(b["depth"], b["mask"])
    assert md.shape == (64, 64) and 0.9 < md.min() and md.max() < 1.1


# --------------------------------------------------------------------------------------------------------
# the ellipsoid prior and the threshold mask


def disk(s, c, r):
    y, x = torch.meshgrid(torch.arange(s), torch.arange(s), indexing="ij")
    return ((x - c[1]) ** 2 + (y - c[0]) ** 2 <= r * r)


def test_ellipsoid_on_a_disk():
    m = disk(31, (15, 15), 10)
    assert mask_range(m) == (25.0, 5.0, 25.0, 5.0)
    d = ellipsoid_depth_prior(m)
    assert d.shape == (1, 31, 31) and d.dtype == torch.float32
    near, far = 0.91, 1.02
    assert d[0, 15, 15].item() == pytest.approx(near, abs=1e-6)
    assert d[0, 15, 25].item() == pytest.approx(far, abs=1e-6) and d[0, 5, 15].item() == pytest.approx(far, abs=1e-6)
    assert torch.allclose(d[0][~disk(31, (15, 15), 10)], torch.tensor(far))
    assert torch.equal(d, d.flip(-1)) and torch.equal(d, d.flip(-2))
    row = d[0, 15, 15:26]
    assert (row[1:] > row[:-1]).all()  # deepens monotonically towards the rim
    # the spherical cap: depth = radius - sqrt(radius^2 - (rho t)^2) + near
    t = math.sqrt(0.4 ** 2 - (0.4 - 0.11) ** 2)
    assert d[0, 15, 20].item() == pytest.approx(0.4 - math.sqrt(0.16 - (0.5 * t) ** 2) + near, abs=1e-6)


def test_ellipsoid_on_a_rectangle_and_options():
    m = torch.zeros(41, 41, dtype=torch.bool)
    m[10:31, 5:16] = True  # rows 10..30 (height 20), columns 5..15 (width 10): ratio 2
    d = ellipsoid_depth_prior(m)[0]
    assert d[20, 10].item() == pytest.approx(0.91, abs=1e-6)
    assert d[30, 10].item() == pytest.approx(1.02, abs=1e-6) and d[20, 15].item() == pytest.approx(1.02, abs=1e-6)
    # rho = 0.5 at 5 rows below the centre (rows count half: ratio 2) and at 2.5 columns beside it
    t = math.sqrt(0.4 ** 2 - (0.4 - 0.11) ** 2)
    cap = 0.4 - math.sqrt(0.16 - (0.5 * t) ** 2) + 0.91
    assert d[25, 10].item() == pytest.approx(cap, abs=1e-6) and d[15, 10].item() == pytest.approx(cap, abs=1e-6)
    # box centred on h / 2 (rows 10..30 of 41: centre 20, h / 2 = 20.5) vs GAN2Shape's exact code
    legacy = ellipsoid_depth_prior(m, legacy_center=True)[0]
    assert not torch.equal(legacy, d)
    m2 = torch.zeros(40, 41, dtype=torch.bool)
    m2[10:31, 5:16] = True  # centre row 20 = h / 2: identical
    assert torch.equal(ellipsoid_depth_prior(m2, legacy_center=True), ellipsoid_depth_prior(m2))
    # synface extends the box upwards by a sixth of its height
    syn = ellipsoid_depth_prior(m, category="synface")[0]
    assert syn[8, 10] < 1.02 and d[8, 10] == pytest.approx(1.02)
    # float masks use the threshold, batches work, empty masks fail clearly
    fm = m.float() * 0.8
    fm[0:3, 0:3] = 0.6
    assert torch.equal(ellipsoid_depth_prior(fm)[0], d)
    both = ellipsoid_depth_prior(torch.stack([m, m.flip(-1)]).float())
    assert both.shape == (2, 41, 41) and torch.equal(both[0], d) and torch.equal(both[1], d.flip(-1))
    with pytest.raises(ValueError, match="empty"):
        ellipsoid_depth_prior(torch.zeros(8, 8))
    with pytest.raises(ValueError, match="category"):
        ellipsoid_depth_prior(m, category="dog")


def test_threshold_object_mask():
    s = 24
    obj = torch.zeros(s, s, dtype=torch.bool)
    obj[6:18, 5:17] = True
    img = torch.tensor([0.3, 0.5, 0.7])[:, None, None].expand(3, s, s).clone()
    img[:, obj] = torch.tensor([0.8, 0.2, 0.1])[:, None]
    assert torch.equal(object_mask(img, clean=0)[0], obj.float())  # background estimated from the border
    assert torch.equal(object_mask(img, background=(0.3, 0.5, 0.7))[0], obj.float())
    noisy = img.clone()
    noisy[:, 1, 1] = 0.0  # a speck
    noisy[:, 10, 10] = torch.tensor([0.3, 0.5, 0.7])  # a hole
    assert torch.equal(object_mask(noisy)[0], obj.float())
    assert object_mask(noisy[None].expand(2, -1, -1, -1)).shape == (2, s, s)


def test_relief_analytic_and_sign():
    """rim - core depth of a paraboloid z = z0 - h (1 - rho^2) over an elliptic mask is 21 h / 32; the hollow
    (inverted) relief gives the opposite sign, a saddle a negative one, a tilted plane 0; empty masks give NaN."""
    s, h = 96, 0.07
    y, x = torch.meshgrid(torch.arange(s, dtype=D64), torch.arange(s, dtype=D64), indexing="ij")
    rho2 = ((x - 45.5) / 30) ** 2 + ((y - 50.0) / 38) ** 2  # an ellipse off the centre
    mask = rho2 <= 1
    z = torch.where(mask, 1.0 - h * (1 - rho2), torch.full_like(rho2, 1.04))
    hollow = torch.where(mask, 2 * 1.0 - h - z, z)  # the relief turned inside out about its mid-depth
    r = M.relief(torch.stack([z, hollow, z]), torch.stack([mask, mask, torch.zeros_like(mask)]))
    assert r.shape == (3,)
    assert math.isclose(r[0].item(), 21 * h / 32, rel_tol=0.02)
    assert math.isclose(r[1].item(), -21 * h / 32, rel_tol=0.02)
    assert math.isnan(r[2].item())
    # one (H, W) map; a flat or tilted map has no relief; a saddle (hollow across) counts as hollow
    assert M.relief(z, mask).shape == (1,)
    assert abs(M.relief(torch.ones(s, s, dtype=D64), mask).item()) < 1e-12
    assert abs(M.relief(1 + 0.002 * (y - 50.0), mask).item()) < 1e-12
    u2, v2 = ((x - 45.5) / 30) ** 2, ((y - 50.0) / 38) ** 2
    assert M.relief(1.0 + h * (u2 - v2), mask).item() < -0.02
    # the built-in faces' ground truth is convex
    b = SyntheticFaces(4, size=64, split="test").get_batch(range(4))
    assert torch.all(M.relief(b["canon_depth"], b["canon_mask"]) > 0.02)


def test_relief_line():
    from voxrender.models.gan2shape.pipeline import relief_line

    assert "1 of 3 concave" in relief_line([0.05, -0.01, 0.04]) and "WARNING" not in relief_line([0.05, -0.01, 0.04])
    line = relief_line([-0.05, -0.01, 0.04, None], [0.05, 0.06])
    assert "2 of 3 concave" in line and "WARNING" in line and "ground truth: median 0.0550" in line


def test_diag_depth_tilt_finds_and_removes_a_lean(tmp_path, capsys, load_tool):
    """tools/diag_depth_tilt.py: a ground-truth face leaned by exp(0.05 y + 0.01 x) is reported with those
    slopes, and tilting it back leaves no error; a relief 30 % too deep is reported as 1.30 and taken off too."""
    import numpy as np

    tool = load_tool("diag_depth_tilt")
    b = SyntheticFaces(2, size=32, split="test").get_batch(range(2))
    gt, mask = b["depth"].double(), b["mask"].double()
    axis = torch.linspace(-1, 1, 32, dtype=torch.float64)
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    pred = torch.where(mask > 0, gt * torch.exp(0.05 * y + 0.01 * x + 0.003), gt)
    for name, t in (("depth_pred", pred), ("depth_gt", gt), ("mask_gt", mask)):
        np.save(tmp_path / f"{name}.npy", t.float().numpy())
    coef = tool.fit_planes(pred, gt, M.evaluate_depth(pred, gt, gt_mask=mask)["mask"])
    torch.testing.assert_close(coef, torch.tensor([[0.003, 0.01, 0.05]] * 2, dtype=torch.float64), rtol=0, atol=2e-7)
    assert tool.main([str(tmp_path)]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:3]]
    for row in rows:
        side, slope_x, slope_y, side_untilted, mad_untilted = (float(row[k]) for k in (1, 3, 4, 5, 6))
        assert side > 1 and slope_x == pytest.approx(0.01, abs=1e-4) and slope_y == pytest.approx(0.05, abs=1e-4)
        assert side_untilted < 0.01 and mad_untilted < 0.5
        assert float(row[7]) == pytest.approx(1.0, abs=1e-4) and float(row[8]) < 0.01
    # a relief 30 % too deep on top of the lean: the plane + relief fit finds both and leaves no error
    deep = torch.where(mask > 0, gt ** 1.3 * torch.exp(0.05 * y + 0.01 * x + 0.003), gt)
    coef = tool.fit_planes(deep, gt, M.evaluate_depth(deep, gt, gt_mask=mask)["mask"], relief=True)
    torch.testing.assert_close(coef, torch.tensor([[0.003, 0.01, 0.05, 0.3]] * 2, dtype=torch.float64), rtol=0,
                               atol=1e-6)
    np.save(tmp_path / "depth_pred.npy", deep.float().numpy())
    assert tool.main([str(tmp_path)]) == 0
    for row in [line.split() for line in capsys.readouterr().out.splitlines()[1:3]]:
        assert float(row[5]) > 0.05 and float(row[7]) == pytest.approx(1.3, abs=1e-3) and float(row[8]) < 0.01
    assert tool.main([str(tmp_path / "missing")]) == 2


def test_relief_slopes_match_a_per_face_least_squares_fit():
    """prior_fit.relief_slopes (batched) is the slope of numpy's line fit of log(depth) on log(gt) over
    Unsup3d's evaluation mask, face by face; NaN where that mask is (nearly) empty."""
    b = SyntheticFaces(3, size=32, split="train").get_batch(range(3))
    gt = b["depth"].double()
    pred = ellipsoid_depth_prior(object_mask(b["image"]).float(), near=0.97, far=1.02).double()
    pred = pred * (1 + 0.01 * torch.randn(pred.shape, generator=torch.Generator().manual_seed(0), dtype=D64))
    got = PF.relief_slopes(pred, gt)
    m = M.evaluation_mask(pred.float(), gt.float(), pred_mask=torch.ones_like(gt)).bool()
    for k in range(3):
        ref = np.polyfit(gt[k][m[k]].log().numpy(), pred[k][m[k]].log().numpy(), 1)[0]
        assert float(got[k]) == pytest.approx(ref, rel=1e-9)
    empty = torch.full_like(gt[:1], 10.0)  # no face: no evaluation pixel
    assert math.isnan(float(PF.relief_slopes(pred[:1], empty)[0]))


def test_fit_prior_recovers_a_known_rise(capsys, load_tool):
    """prior_fit: a prior scored against itself has slope 1; against 'faces' that ARE a cap of rise 0.05 the
    bisection finds 0.05; the placed cap's mean over the masks is the canonical mean. The tool prints it."""
    b = SyntheticFaces(3, size=32, split="train").get_batch(range(3))
    masks = object_mask(b["image"]).float()
    cap = ellipsoid_depth_prior(masks, near=0.98, far=1.03)
    torch.testing.assert_close(PF.relief_slopes(cap, cap), torch.ones(3, dtype=D64), rtol=0, atol=1e-9)
    assert PF.median_slope(masks, cap, 0.03) < 1 < PF.median_slope(masks, cap, 0.07)
    assert PF.fit_rise(masks, cap) == pytest.approx(0.05, abs=1e-6)
    near, far = PF.place_prior(masks, b["canon_depth"], 0.05)
    assert far - near == pytest.approx(0.05)
    placed = ellipsoid_depth_prior(masks, near=near, far=far).double()
    target = (b["canon_depth"].double() * masks).sum() / masks.sum()
    assert float((placed * masks).sum() / masks.sum()) == pytest.approx(float(target), abs=1e-6)
    fit = PF.fit_prior(masks, cap, b["canon_depth"])
    assert fit["rise"] == pytest.approx(0.05, abs=1e-6) and fit["far"] - fit["near"] == pytest.approx(fit["rise"])
    with pytest.raises(ValueError, match="no slope 1"):
        PF.fit_rise(masks, cap, lo=0.06, hi=0.2)
    tool = load_tool("fit_prior_relief")
    assert tool.main(["--n", "2", "--size", "32", "--rises", "0.05"]) == 0
    assert "--prior-near" in capsys.readouterr().out
    assert tool.main(["--n", "0"]) == 2


def test_fitted_ellipsoid_baseline():
    """evaluate_baselines' fitted_ellipsoid: with the ellipsoid's own near / far it scores the same; with the
    rise fitted on training faces it beats GAN2Shape's default prior (rise 0.11, far too deep for them)."""
    b = SyntheticFaces(6, seed=3, split="test").get_batch(range(6))
    same = M.evaluate_baselines(b["depth"], b["mask"], b["image"], prior_kwargs={"near": 0.95, "far": 1.02},
                                fitted_prior={"near": 0.95, "far": 1.02})
    assert set(same) == {"flat", "mean_depth", "ellipsoid", "fitted_ellipsoid"}
    for key in ("side_mean", "mad_mean", "count"):
        assert same["fitted_ellipsoid"][key] == same["ellipsoid"][key]
    t = SyntheticFaces(24, split="train").get_batch(range(24))
    fit = PF.fit_prior(object_mask(t["image"]).float(), t["depth"], t["canon_depth"])
    assert 0.02 < fit["rise"] < 0.08
    res = M.evaluate_baselines(b["depth"], b["mask"], b["image"], fitted_prior=fit)
    assert res["fitted_ellipsoid"]["side_mean"] < res["ellipsoid"]["side_mean"]
    assert res["fitted_ellipsoid"]["mad_mean"] < res["ellipsoid"]["mad_mean"]

def test_fitted_prior_on_training_faces_and_when_none_fits():
    """pipeline.fitted_prior_on: the fit on a batch of faces with the face count; faces no cap fits (flat:
    slope 0 at every rise) leave the baseline out with the reason logged, not a crash or a made-up prior."""
    from voxrender.models.gan2shape.pipeline import fitted_prior_on

    b = SyntheticFaces(6, size=32, split="train").get_batch(range(4))
    fit = fitted_prior_on(b, None, log=lambda m: None)
    assert fit == {**PF.fit_prior(object_mask(b["image"]).float(), b["depth"], b["canon_depth"]), "faces": 4}

    flat = {**b, "depth": torch.where(b["mask"] > 0, 1.0, 10.0)}
    said = []
    assert fitted_prior_on(flat, None, log=said.append) is None
    assert len(said) == 1 and "fitted_ellipsoid baseline left out" in said[0] and "no slope 1" in said[0]


def test_diag_view_reading_reports_the_share_of_the_turn(tmp_path, capsys, load_tool):
    """tools/diag_view_reading.py on hand-made eval records: a viewpoint net that reads half of every rotation
    is reported with slope 0.50 and correlation 1.00, and a canonical depth tilted sideways by 0.03 x per radian
    of true yaw with that slope per radian (vertical: 0.01 y per radian of pitch)."""
    import json

    tool = load_tool("diag_view_reading")
    n, S = 6, 16
    truth = SyntheticFaces(n, size=S, seed=3, split="val").get_batch(range(n))["view"].double()
    (tmp_path / "metrics.json").write_text(json.dumps({"n": n, "image_size": S,
                                                       "data": {"dataset": "SyntheticFaces", "split": "val",
                                                                "seed": 3}}))
    (tmp_path / "progress").mkdir()
    y, x = torch.meshgrid(torch.linspace(-1, 1, S, dtype=torch.float64), torch.linspace(-1, 1, S, dtype=torch.float64),
                          indexing="ij")
    for k in range(n):
        prior = 1.0 - 0.05 * (1 - x * x - y * y).clamp(min=0)
        canon = prior + 0.03 * truth[k, 1] * x + 0.01 * truth[k, 0] * y + 0.002
        view = truth[k].clone()
        view[:3] *= 0.5
        torch.save({"result": {"view": view[None].float(), "canon_depth": canon[None], "prior": prior[None, None],
                               "object_mask": (x.abs() < 0.8).double()[None, None]}},
                   tmp_path / "progress" / f"val_{k:04d}.pt")
    assert tool.main([str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line.split() for line in lines[2:5]}
    for name in ("pitch", "yaw", "roll"):
        assert float(rows[name][1]) == pytest.approx(0.5, abs=0.01) and float(rows[name][2]) == pytest.approx(1.0)
    assert float(rows["yaw"][3]) == pytest.approx(0.5 * float(truth[:, 1].pow(2).mean().sqrt()) * 180 / math.pi,
                                                  abs=0.06)
    planes = {(line.split()[0], line.split()[5]): [float(v) for v in line.split()[6:]] for line in lines
              if " vs true " in line}
    assert len(planes) == 6
    assert planes[("horizontal", "predicted")][:2] == pytest.approx([0.03, 1.0], abs=1e-3)
    assert planes[("vertical", "predicted")][:2] == pytest.approx([0.01, 1.0], abs=1e-3)
    # the true canonical depths over the same masks and priors: the tool's own fit of them
    faces = SyntheticFaces(n, size=S, seed=3, split="val").get_batch(range(n))
    true = tool.canonical_slopes(faces["canon_depth"].reshape(n, S, S), prior.expand(n, S, S),
                                 (x.abs() < 0.8).double().expand(n, S, S))
    assert planes[("horizontal", "true")][0] == pytest.approx(tool.line_fit(truth[:, 1], true[:, 1])[0], abs=1e-4)
    assert planes[("vertical", "true")][2] == pytest.approx(float(true[:, 0].pow(2).mean().sqrt()), abs=1e-4)
    assert planes[("horizontal", "true*")][2] < 1e-4  # a symmetric face over a symmetric mask: no sideways slope
    # a missing record is an error naming it
    (tmp_path / "progress" / "val_0003.pt").unlink()
    assert tool.main([str(tmp_path)]) == 2 and "val_0003.pt" in capsys.readouterr().err
