"""The Unsup3d / GAN2Shape renderer on analytic cases."""

import math

import pytest
import torch
import torch.nn.functional as F

import voxrender as vr
from voxrender.models.gan2shape import renderer as R

pytestmark = pytest.mark.usefixtures("one_thread")

D64 = torch.float64


def smooth_depth(s, b=1, dtype=D64, amp=0.03):
    """A smooth bump (B, S, S) around depth 1."""
    c = (s - 1) / 2
    y, x = torch.meshgrid(torch.arange(s, dtype=dtype), torch.arange(s, dtype=dtype), indexing="ij")
    x, y = (x - c) / c, (y - c) / c
    d = 1.02 - amp * torch.exp(-(x ** 2 + 1.5 * y ** 2) / 0.5) + 0.004 * torch.sin(2 * x + y)
    return d.expand(b, s, s).clone()


def plane_depth(s, n, point, dtype=D64):
    """Depth of the plane n . (p - point) = 0 seen through every pixel centre of Unsup3d's camera."""
    K = R.intrinsics(s, dtype=dtype)
    ij = torch.arange(s, dtype=dtype)
    v, u = torch.meshgrid(ij, ij, indexing="ij")
    ray = torch.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], torch.ones_like(u)], -1)
    return (n * point).sum() / (ray * n).sum(-1)


def test_intrinsics_and_parametrisation():
    K = R.intrinsics(64)
    f = 31.5 / math.tan(math.radians(5))
    assert torch.allclose(K, torch.tensor([[f, 0, 31.5], [0, f, 31.5], [0, 0, 1.0]]))
    raw = torch.randn(3, 8, 8, dtype=D64) * 3
    d = R.depth_from_raw(raw)
    assert d.min() > 0.9 and d.max() < 1.1
    assert torch.allclose(d, R.depth_from_raw(raw + 5.0))  # the mean is removed
    assert torch.allclose(R.depth_from_raw(torch.zeros(1, 4, 4)), torch.ones(1, 4, 4))
    assert torch.equal(R.depth_from_raw(raw[:, None]), d)
    v = torch.rand(4, 6, dtype=D64) * 2 - 1
    vv = R.view_from_raw(v)
    assert torch.allclose(vv[:, :3], v[:, :3] * math.pi / 3) and torch.allclose(vv[:, 3:], v[:, 3:] * 0.1)
    assert torch.allclose(R.view_to_raw(vv), v)
    light = torch.rand(4, 4, dtype=D64) * 2 - 1
    assert torch.allclose(R.light_to_raw(R.light_from_raw(light)), light)
    assert torch.allclose(R.light_from_raw(light)[:, :2], light[:, :2] / 2 + 0.5)
    cb = R.clamp_border_depth(torch.ones(1, 3, 8))
    assert torch.allclose(cb[0, :, :2], torch.full((3, 2), R.BORDER_DEPTH)) and torch.equal(cb[0, :, 2:6], torch.ones(3, 4))


def test_view_transform_matches_unsup3d_convention():
    view = torch.tensor([[0.1, -0.2, 0.3, 0.01, -0.02, 0.03]], dtype=D64)
    Rm, t = R.view_transform(view)
    assert torch.allclose(Rm[0], vr.rotation_z(torch.tensor(0.3, dtype=D64)) @ vr.rotation_y(torch.tensor(-0.2, dtype=D64))
                          @ vr.rotation_x(torch.tensor(0.1, dtype=D64)))
    assert torch.allclose(t[0], view[0, 3:])
    p = torch.randn(1, 5, 3, dtype=D64)
    c = torch.tensor([0, 0, 1.0], dtype=D64)
    assert torch.allclose(R.warp_points(p, view), (p - c) @ Rm[0].T + c + t[0])
    assert torch.allclose(R.unwarp_points(R.warp_points(p, view), view), p)
    # the 5- and 3-vectors (no tz / no translation)
    assert torch.allclose(R.warp_points(p, view[:, :5]), (p - c) @ Rm[0].T + c + torch.cat([t[0, :2], t.new_zeros(1)]))
    assert torch.allclose(R.warp_points(p, view[:, :3]), (p - c) @ Rm[0].T + c)
    with pytest.raises(ValueError, match="view"):
        R.warp_points(p, torch.zeros(1, 4))


def test_identity_view_reproduces_the_canonical_image():
    s = 12
    depth = smooth_depth(s, 2)
    albedo = torch.rand(2, 3, s, s, dtype=D64)
    light = torch.tensor([[0.4, 0.6, 0.3, -0.2], [0.7, 0.2, -0.5, 0.5]], dtype=D64)
    rec = R.reconstruct(depth, albedo, torch.zeros(2, 6, dtype=D64), light)
    # the last row and column lie on the mesh's right / bottom boundary edges: the fill rule leaves them out
    inner = (slice(None), slice(0, s - 1), slice(0, s - 1))
    assert torch.allclose(rec.depth[inner], depth[inner], atol=1e-12)
    assert torch.equal(rec.mask[inner], torch.ones(2, s - 1, s - 1, dtype=D64))
    assert rec.mask[:, -1].sum() == 0 and rec.mask[:, :, -1].sum() == 0
    assert torch.allclose(rec.depth[:, -1], torch.full((2, s), 1.2, dtype=D64))
    ij = torch.arange(s, dtype=D64) / (s - 1) * 2 - 1
    assert torch.allclose(rec.grid[inner][..., 0], ij[:-1].expand(2, s - 1, s - 1), atol=1e-12)
    assert torch.allclose(rec.grid[inner][..., 1], ij[:-1, None].expand(2, s - 1, s - 1), atol=1e-12)
    img = rec.canon_image.permute(0, 2, 3, 1)[inner]
    assert torch.allclose(rec.image.permute(0, 2, 3, 1)[inner], img, atol=1e-12)
    # the canonical image is albedo * (ambient + diffuse * max(0, n . d))
    d = F.normalize(torch.cat([light[:, 2:], torch.ones(2, 1, dtype=D64)], 1), dim=1)
    n = R.normals_from_depth(depth)
    shading = light[:, 0, None, None] + light[:, 1, None, None] * (n * d[:, None, None]).sum(-1).clamp(min=0)
    assert torch.allclose(rec.canon_image, albedo * shading[:, None])
    # float32 too
    rec32 = R.reconstruct(depth.float(), albedo.float(), torch.zeros(6), light[0].float())
    assert torch.allclose(rec32.image[0][:, :-1, :-1], rec.canon_image[0].float()[:, :-1, :-1], atol=1e-5)


def test_flat_plane_normals_point_away_from_the_camera():
    n = R.normals_from_depth(torch.ones(2, 6, 7, dtype=D64))
    assert torch.allclose(n, torch.tensor([0, 0, 1.0], dtype=D64).expand(2, 6, 7, 3))
    # a tilted plane: the exact plane normal (interior), Unsup3d's sign = minus voxrender's camera-facing one
    nrm = F.normalize(torch.tensor([0.3, -0.2, 1.0], dtype=D64), dim=0)
    d = plane_depth(9, nrm, torch.tensor([0, 0, 1.0], dtype=D64))[None]
    n = R.normals_from_depth(d)
    assert torch.allclose(n[:, 1:-1, 1:-1], nrm.expand(1, 7, 7, 3), atol=1e-12)
    assert torch.allclose(n[:, 0], torch.tensor([0, 0, 1.0], dtype=D64).expand(1, 9, 3))  # border: (0, 0, 1)
    K = R.intrinsics(9, dtype=D64)
    assert torch.allclose(vr.normals_from_depth(d, K)[:, 1:-1, 1:-1], -n[:, 1:-1, 1:-1], atol=1e-12)


def test_lambertian_shading_signs():
    # normal (0, 0, 1); light (lx, ly) = (0, 0): frontal, n . d = 1
    albedo = torch.full((1, 3, 4, 4), 0.5, dtype=D64)
    normal = torch.tensor([0, 0, 1.0], dtype=D64).expand(1, 4, 4, 3)
    img, diff = R.shade(albedo, normal, torch.tensor([0.2, 0.6, 0.0, 0.0], dtype=D64))
    assert torch.allclose(img, torch.full_like(img, 0.5 * 0.8)) and torch.allclose(diff, torch.ones_like(diff))
    # a surface facing image-left (outward normal -x, so Unsup3d normal +x) is lit by lx > 0
    n_left = F.normalize(torch.tensor([1.0, 0, 1.0], dtype=D64), dim=0).expand(1, 4, 4, 3)
    lit = R.shade(albedo, n_left, torch.tensor([0.0, 1.0, 1.0, 0.0], dtype=D64))[1]
    dark = R.shade(albedo, n_left, torch.tensor([0.0, 1.0, -1.0, 0.0], dtype=D64))[1]
    assert torch.allclose(lit, torch.ones_like(lit)) and torch.allclose(dark, torch.zeros_like(dark))


def test_pure_translation_shifts_the_image():
    s = 16
    K = R.intrinsics(s, dtype=D64)
    depth = torch.ones(1, s, s, dtype=D64)  # a plane at depth 1: a shift of t moves it by f t pixels
    albedo = torch.rand(1, 3, s, s, dtype=D64)
    view = torch.tensor([[0, 0, 0, 3 / K[0, 0], -2 / K[1, 1], 0]], dtype=D64)  # 3 px right, 2 px up
    rec = R.reconstruct(depth, albedo, view, torch.tensor([1.0, 0, 0, 0], dtype=D64))
    expect = torch.zeros_like(albedo)
    expect[:, :, : s - 2, 3:] = albedo[:, :, 2:, : s - 3]
    m = torch.zeros(1, s, s, dtype=D64)
    m[:, : s - 3, 3:] = 1  # the mesh's bottom boundary edge lands on row s - 3: left out (fill rule)
    assert torch.equal(rec.mask, m)
    assert torch.allclose(rec.image * m[:, None], expect * m[:, None], atol=1e-9)
    assert torch.allclose(rec.depth[m > 0], torch.ones(int(m.sum()), dtype=D64), atol=1e-12)


@pytest.mark.parametrize("view", [(0.0, math.radians(20), 0.0, 0.0, 0.0, 0.0),
                                  (0.15, -0.3, 0.2, 0.01, -0.005, 0.02)])
def test_rotated_plane_has_the_analytic_depth(view):
    s = 24
    view = torch.tensor([view], dtype=D64)
    depth = R.warp_canon_depth(torch.ones(1, s, s, dtype=D64), view)
    Rm, t = R.view_transform(view)
    n = Rm[0] @ torch.tensor([0, 0, 1.0], dtype=D64)  # the plane z = 1 through the centre, turned and moved
    expect = plane_depth(s, n, torch.tensor([0, 0, 1.0], dtype=D64) + t[0])[None]
    m = R.recon_mask(depth) > 0
    assert m.sum() > 0.6 * s * s
    assert torch.allclose(depth[m], expect[m], atol=1e-12)
    if view[0, 0] == 0:  # pure yaw about (0, 0, 1): z = 1 / (1 + tan(yaw) (u - cx) / fx)
        K = R.intrinsics(s, dtype=D64)
        a = (torch.arange(s, dtype=D64) - K[0, 2]) / K[0, 0]
        assert torch.allclose(depth[m], (1 / (1 + math.tan(view[0, 1]) * a)).expand(1, s, s)[m], atol=1e-12)


def test_round_trip_canonical_view_canonical():
    s = 24
    depth = smooth_depth(s)
    view = torch.tensor([[0.1, 0.25, -0.05, 0.004, 0.002, 0.0]], dtype=D64)
    K = R.intrinsics(s, dtype=D64)
    recon = R.warp_canon_depth(depth, view)
    m = R.recon_mask(recon) > 0
    # each view pixel's canonical point lies on the canonical surface
    pc = R.unwarp_points(vr.depth_to_points(recon, K), view)
    grid = R.get_inv_warped_2d_grid(recon, view)
    assert torch.allclose(R.points_to_grid(pc, K, s), grid)
    zs = F.grid_sample(depth[:, None], grid, align_corners=True)[:, 0]
    assert (zs - pc[..., 2])[m].abs().max() < 2e-4  # bilinear vs the mesh's triangles
    # canonical -> view -> canonical: the forward grid, read back through the inverse grid, is the identity
    fwd = R.get_warped_2d_grid(depth, view)
    back = F.grid_sample(grid.permute(0, 3, 1, 2), fwd, align_corners=True).permute(0, 2, 3, 1)
    ij = torch.arange(s, dtype=D64) / (s - 1) * 2 - 1
    ident = torch.stack(torch.meshgrid(ij, ij, indexing="xy"), -1)[None]
    # canonical pixels seen in the view (not occluded, well inside the covered area)
    fwd_px = (fwd + 1) / 2 * (s - 1)
    seen = (fwd_px > 2).all(-1) & (fwd_px < s - 3).all(-1)
    z_view = R.warp_points(vr.depth_to_points(depth, K), view)[..., 2]
    z_seen = F.grid_sample(recon[:, None], fwd, align_corners=True)[:, 0]
    seen &= (z_view - z_seen).abs() < 1e-3
    assert seen.sum() > 0.5 * s * s
    err_px = ((back - ident)[seen].abs() * (s - 1) / 2).max()
    assert err_px < 0.05


def test_gradients_reach_depth_through_the_rendered_depth_and_the_grid():
    s = 7
    depth = smooth_depth(s, amp=0.01).requires_grad_()
    albedo = (0.3 + 0.5 * torch.rand(1, 3, s, s, dtype=D64, generator=torch.Generator().manual_seed(0)))
    view = torch.tensor([[0.06, 0.11, 0.03, 0.002, -0.001, 0.0]], dtype=D64, requires_grad=True)
    light = torch.tensor([[0.5, 0.5, 0.05, 0.1]], dtype=D64)
    w = torch.rand(1, 3, s, s, dtype=D64, generator=torch.Generator().manual_seed(1))

    def f(d, v):
        return (R.reconstruct(d, albedo, v, light).image * w).sum()

    assert torch.autograd.gradcheck(f, (depth, view), eps=1e-6, atol=1e-6, rtol=1e-4)
    # the geometric path alone (no shading): gradients to depth through the rendered depth and the grid
    def g(d):
        rec = R.reconstruct(d, albedo, view.detach(), torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=D64))
        return (rec.image * w).sum()

    assert torch.autograd.gradcheck(g, (depth,), eps=1e-6, atol=1e-6, rtol=1e-4)
    depth.grad = None
    g(depth).backward()
    assert depth.grad.abs().sum() > 0
    # and the warped depth itself
    assert torch.autograd.gradcheck(lambda d: (R.warp_canon_depth(d, view.detach()) * w[:, 0]).sum(), (depth,),
                                    eps=1e-6, atol=1e-6, rtol=1e-4)


def test_batches_broadcast_and_float32():
    s = 16
    depth = smooth_depth(s, 1, torch.float32)
    albedo = torch.rand(3, 3, s, s)
    view = torch.tensor([[0.0, 0.2, 0, 0, 0, 0], [0.1, 0, 0, 0, 0, 0], [0, 0, 0.3, 0, 0, 0]])
    rec = R.reconstruct(depth, albedo, view, torch.tensor([0.5, 0.5, 0.0, 0.0]))
    assert rec.image.shape == (3, 3, s, s) and rec.mask.shape == (3, s, s) and rec.grid.shape == (3, s, s, 2)
    one = R.reconstruct(depth, albedo[1:2], view[1:2], torch.tensor([[0.5, 0.5, 0.0, 0.0]]))
    assert torch.allclose(one.image[0], rec.image[1], atol=1e-6)
    many = R.reconstruct(depth, albedo[1:2], view, torch.tensor([0.5, 0.5, 0.0, 0.0]))  # one face, 3 views
    assert many.image.shape == (3, 3, s, s) and torch.allclose(many.image[1], rec.image[1], atol=1e-6)
    assert R.warp_canon_depth(depth, view).shape == (3, s, s)
    with pytest.raises(ValueError, match="batch sizes"):
        R.reconstruct(depth, torch.rand(2, 3, s, s), view, torch.zeros(4))
    with pytest.raises(ValueError, match="canon_albedo"):
        R.reconstruct(depth, torch.rand(1, 3, 8, 8), view, torch.zeros(4))


def test_anchor_depth_moves_the_masked_mean_and_keeps_the_shape():
    g = torch.Generator().manual_seed(0)
    depth = 0.95 + 0.1 * torch.rand(3, 8, 8, generator=g, dtype=torch.float64)
    mask = torch.zeros(3, 8, 8, dtype=torch.float64)
    mask[0, 2:6, 2:6] = 1
    mask[1] = 1
    mask[2, 0, 0] = 0.5  # a soft weight: the one pixel's depth becomes the target
    target = torch.tensor([1.0, 0.97, 1.03], dtype=torch.float64)
    out = R.anchor_depth(depth, mask, target)
    mean = (out * mask).sum((-2, -1)) / mask.sum((-2, -1))
    torch.testing.assert_close(mean, target, rtol=0, atol=1e-12)
    torch.testing.assert_close(out - out[:, :1, :1], depth - depth[:, :1, :1], rtol=0, atol=1e-12)  # a z shift only
    assert float(out[2, 0, 0]) == pytest.approx(1.03, abs=1e-12)
    # a number as the target; (B, 1, H, W) masks; the gradient of a shift-invariant loss is untouched
    d = depth.clone().requires_grad_(True)
    R.anchor_depth(d, mask[:, None], 1.0).diff(dim=-1).pow(2).sum().backward()
    torch.testing.assert_close(d.grad, torch.func.grad(lambda x: x.diff(dim=-1).pow(2).sum())(depth))
    with pytest.raises(ValueError, match="mask"):
        R.anchor_depth(depth, torch.zeros_like(mask), target)


def test_anchor_depth_tilt_zeroes_the_mean_and_vertical_slope_against_the_reference():
    g = torch.Generator().manual_seed(0)
    depth = 0.95 + 0.1 * torch.rand(3, 10, 8, generator=g, dtype=torch.float64)
    ref = 0.95 + 0.1 * torch.rand(3, 10, 8, generator=g, dtype=torch.float64)
    mask = (torch.rand(3, 10, 8, generator=g) > 0.4).double()
    mask[1] *= torch.rand(10, 8, generator=g, dtype=torch.float64)  # soft weights
    mask[2] = 0
    mask[2, 4, 1:7] = 1  # one row: no slope is defined there, only the mean moves
    out = R.anchor_depth_tilt(depth, mask, ref)
    y = torch.linspace(-1, 1, 10, dtype=torch.float64)[:, None]  # the row coordinate, top row -1
    r = out - ref
    torch.testing.assert_close((mask * r).sum((-2, -1)), torch.zeros(3, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close((mask * r * y).sum((-2, -1))[:2], torch.zeros(2, dtype=torch.float64), rtol=0,
                               atol=1e-12)
    # only a plane a + b y was taken off: a plane added to the input changes nothing (where a slope is defined)
    torch.testing.assert_close(R.anchor_depth_tilt(depth + 0.02 - 0.03 * y, mask, ref)[:2], out[:2], rtol=0,
                               atol=1e-12)
    plane = depth - out
    torch.testing.assert_close(plane, plane[:, :, :1].expand_as(plane), rtol=0, atol=1e-12)
    torch.testing.assert_close(plane.diff(dim=-2).diff(dim=-2), torch.zeros(3, 8, 8, dtype=torch.float64), rtol=0,
                               atol=1e-12)
    # the single-row map: anchor_depth's shift to the reference's mean exactly; (B, 1, H, W) masks
    target = (ref[2] * mask[2]).sum() / mask[2].sum()
    torch.testing.assert_close(out[2], R.anchor_depth(depth[2:], mask[2:], target)[0], rtol=0, atol=1e-12)
    torch.testing.assert_close(R.anchor_depth_tilt(depth, mask[:, None], ref), out, rtol=0, atol=1e-12)
    # the reference itself is left as it is; gradients of a loss that does not see planes in y pass untouched
    torch.testing.assert_close(R.anchor_depth_tilt(ref, mask, ref), ref, rtol=0, atol=1e-12)
    d = depth.clone().requires_grad_(True)
    R.anchor_depth_tilt(d, mask, ref).diff(dim=-1).pow(2).sum().backward()
    torch.testing.assert_close(d.grad, torch.func.grad(lambda x: x.diff(dim=-1).pow(2).sum())(depth))
    with pytest.raises(ValueError, match="mask"):
        R.anchor_depth_tilt(depth, torch.zeros_like(mask), ref)
