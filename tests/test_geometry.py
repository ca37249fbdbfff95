"""Camera and depth-map helpers: conventions, exact identities, round trips, gradients."""

import math

import pytest
import torch

import voxrender as vr

F64 = torch.float64


def intrinsics(f=50.0, cx=31.5, cy=23.5):
    return torch.tensor([[f, 0, cx], [0, f * 1.1, cy], [0, 0, 1]], dtype=F64)


def test_perspective_maps_points_to_their_pixels():
    K = intrinsics()
    h, w = 48, 64
    P = vr.perspective(K, (h, w), near=0.5, far=20.0)
    g = torch.Generator().manual_seed(0)
    pts = torch.rand(100, 3, generator=g, dtype=F64) * torch.tensor([4.0, 3.0, 10.0], dtype=F64) + torch.tensor(
        [-2.0, -1.5, 1.0], dtype=F64)
    clip = torch.cat([pts, torch.ones(100, 1, dtype=F64)], 1) @ P.T
    ndc = clip[:, :3] / clip[:, 3:]
    # OpenCV pixel coordinates (pixel centres at integers) ...
    u = K[0, 0] * pts[:, 0] / pts[:, 2] + K[0, 2]
    v = K[1, 1] * pts[:, 1] / pts[:, 2] + K[1, 2]
    # ... land where the library's pixel-centre convention puts them: NDC -1 + (2u + 1) / W.
    torch.testing.assert_close(ndc[:, 0], -1 + (2 * u + 1) / w)
    torch.testing.assert_close(ndc[:, 1], -1 + (2 * v + 1) / h)
    torch.testing.assert_close(clip[:, 3], pts[:, 2])
    # near -> -1, far -> +1, monotone in between.
    z = torch.tensor([0.5, 1.0, 5.0, 20.0], dtype=F64)
    zc = torch.stack([torch.zeros_like(z), torch.zeros_like(z), z, torch.ones_like(z)], 1) @ P.T
    zn = zc[:, 2] / zc[:, 3]
    assert abs(zn[0] + 1) < 1e-12 and abs(zn[-1] - 1) < 1e-12 and torch.all(zn[1:] > zn[:-1])


def test_perspective_batched_and_errors():
    K = torch.stack([intrinsics(), intrinsics(f=80.0)])
    P = vr.perspective(K, 64, 0.1, 10)
    assert P.shape == (2, 4, 4)
    torch.testing.assert_close(P[1], vr.perspective(intrinsics(f=80.0), (64, 64), 0.1, 10))
    with pytest.raises(ValueError, match="near"):
        vr.perspective(intrinsics(), 64, 1.0, 0.5)
    with pytest.raises(ValueError, match="K"):
        vr.perspective(torch.eye(4), 64, 0.1, 1.0)


def test_look_at_frame():
    eye = torch.tensor([1.0, 2.0, -5.0], dtype=F64)
    at = torch.tensor([0.5, 0.0, 1.0], dtype=F64)
    up = torch.tensor([0.0, 1.0, 0.0], dtype=F64)
    R, t = vr.look_at(eye, at, up)
    torch.testing.assert_close(R @ R.T, torch.eye(3, dtype=F64))
    assert abs(torch.linalg.det(R) - 1) < 1e-12  # a rotation, right-handed frame
    torch.testing.assert_close(R @ eye + t, torch.zeros(3, dtype=F64))  # the eye is the camera centre
    a = R @ at + t
    assert a[2] > 0 and abs(a[0]) < 1e-12 and abs(a[1]) < 1e-12  # the target is straight ahead
    above = R @ (at + up) + t
    assert above[1] < 0  # world up appears towards the top of the image (y down)


def test_euler_to_rotation_order():
    g = torch.Generator().manual_seed(1)
    rx, ry, rz = (torch.rand(4, generator=g, dtype=F64) * 2 - 1 for _ in range(3))
    R = vr.euler_to_rotation(rx, ry, rz)
    torch.testing.assert_close(R, vr.rotation_z(rz) @ vr.rotation_y(ry) @ vr.rotation_x(rx))
    c, s = math.cos(0.4), math.sin(0.4)
    torch.testing.assert_close(vr.rotation_z(torch.tensor(0.4, dtype=F64)),
                               torch.tensor([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=F64))
    torch.testing.assert_close(R @ R.transpose(1, 2), torch.eye(3, dtype=F64).expand(4, 3, 3))


def test_transform_points_round_trip_and_gradients():
    g = torch.Generator().manual_seed(2)
    pts = torch.randn(2, 7, 3, generator=g, dtype=F64, requires_grad=True)
    angles = torch.randn(3, 2, generator=g, dtype=F64, requires_grad=True)
    t = torch.randn(2, 3, generator=g, dtype=F64, requires_grad=True)
    center = torch.tensor([0.0, 0.0, 1.0], dtype=F64)
    R = vr.euler_to_rotation(*angles)
    q = vr.transform_points(pts, R, t, center)
    # Rotation about the centre: the centre itself only moves by t.
    c_moved = vr.transform_points(center.expand(2, 1, 3), R, t, center)
    torch.testing.assert_close(c_moved[:, 0], center + t)
    torch.testing.assert_close(vr.inverse_transform_points(q, R, t, center), pts)
    f = lambda p, a, tt: vr.transform_points(p, vr.euler_to_rotation(*a), tt, center)
    assert torch.autograd.gradcheck(f, (pts, angles, t))


def test_depth_to_points_projects_back_to_pixel_centres():
    K = intrinsics()
    g = torch.Generator().manual_seed(3)
    depth = 1 + torch.rand(2, 5, 7, generator=g, dtype=F64)
    p = vr.depth_to_points(depth, K)
    assert p.shape == (2, 5, 7, 3)
    u = K[0, 0] * p[..., 0] / p[..., 2] + K[0, 2]
    v = K[1, 1] * p[..., 1] / p[..., 2] + K[1, 2]
    torch.testing.assert_close(u, torch.arange(7, dtype=F64).expand(2, 5, 7))
    torch.testing.assert_close(v, torch.arange(5, dtype=F64)[:, None].expand(2, 5, 7))
    torch.testing.assert_close(p[..., 2], depth)
    with pytest.raises(ValueError, match="depth"):
        vr.depth_to_points(depth[0], K)


def test_grid_mesh_faces_count_and_front_facing():
    h, w = 4, 6
    f = vr.grid_mesh_faces(h, w)
    assert f.shape == (2 * (h - 1) * (w - 1), 3) and f.dtype == torch.int64
    assert f.min() == 0 and f.max() == h * w - 1
    assert f[0].tolist() == [0, w, 1] and f[1].tolist() == [1, w, w + 1]
    # Vertex k sits at pixel (k // w, k % w); in NDC (y down) front-facing means a negative signed area.
    y, x = (f // w).double(), (f % w).double()
    area = (x[:, 1] - x[:, 0]) * (y[:, 2] - y[:, 0]) - (x[:, 2] - x[:, 0]) * (y[:, 1] - y[:, 0])
    assert torch.all(area < 0)
    # Every cell is covered by its two triangles exactly: total area = (h - 1)(w - 1).
    assert area.abs().sum() / 2 == (h - 1) * (w - 1)


def test_normals_from_depth_plane_and_sphere():
    K = intrinsics(f=40.0, cx=15.5, cy=15.5)
    flat = torch.full((1, 32, 32), 3.0, dtype=F64)
    n = vr.normals_from_depth(flat, K)
    torch.testing.assert_close(n, torch.tensor([0, 0, -1.0], dtype=F64).expand(1, 32, 32, 3))
    # A tilted plane z = 3 + 0.5 x: normal proportional to (0.5, 0, -1), facing the camera.
    u = torch.arange(32, dtype=F64)
    x_over_z = (u - 15.5) / 40.0
    tilted = (3.0 / (1 - 0.5 * x_over_z))[None, None, :].expand(1, 32, 32)
    n = vr.normals_from_depth(tilted.contiguous(), K)
    expected = torch.nn.functional.normalize(torch.tensor([0.5, 0.0, -1.0], dtype=F64), dim=0)
    torch.testing.assert_close(n[0, 1:-1, 1:-1], expected.expand(30, 30, 3), rtol=1e-9, atol=1e-9)
