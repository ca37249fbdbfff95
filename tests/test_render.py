"""render_depth (the z-buffer), render_mesh (shaded preview) and their nn.Module wrappers."""

import math

import pytest
import torch

import voxrender as vr
from voxrender.data.meshes import icosphere
from vr_testing import backend_or_skip

F64 = torch.float64
RASTER_BACKENDS = ["torch", "cpu"]


@pytest.fixture(params=RASTER_BACKENDS)
def backend(request):
    backend_or_skip(request.param)
    return request.param


def intrinsics(f=30.0, h=24, w=32, dtype=F64):
    return torch.tensor([[f, 0, (w - 1) / 2 + 0.3], [0, f * 1.1, (h - 1) / 2 - 0.2], [0, 0, 1]], dtype=dtype)


def quad(corners):
    """Two front-facing triangles over 4 corners given top-left, top-right, bottom-left, bottom-right."""
    return torch.stack(corners), torch.tensor([[0, 2, 1], [1, 2, 3]])


def pixel_rays(K, h, w):
    """(H, W, 3) directions (x/z, y/z, 1) through the pixel centres (pixel (i, j) at u = j, v = i)."""
    v, u = torch.meshgrid(torch.arange(h, dtype=K.dtype), torch.arange(w, dtype=K.dtype), indexing="ij")
    return torch.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], torch.ones_like(u)], -1)


# ---------------------------------------------------------------------------------------------------
# render_depth


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_fronto_parallel_plane_gives_its_depth(backend, dtype):
    h, w = 24, 32
    z = 2.5
    verts, faces = quad([torch.tensor(c, dtype=dtype) for c in
                         ([-5, -5, z], [5, -5, z], [-5, 5, z], [5, 5, z])])
    depth = vr.render_depth(verts, faces, intrinsics(dtype=dtype), (h, w), backend=backend)
    assert depth.shape == (1, h, w) and depth.dtype == dtype
    # sum_k b_k z with sum_k b_k = 1 up to rounding: z to a few ulps.
    eps = torch.finfo(dtype).eps
    torch.testing.assert_close(depth, torch.full_like(depth, z), rtol=4 * eps, atol=0)


def test_tilted_plane_matches_ray_plane_intersection(backend):
    h, w = 24, 32
    K = intrinsics()
    n = torch.tensor([0.3, -0.2, 1.0], dtype=F64)
    d = 3.0  # plane n . p = d
    # A big quad on the plane, covering the whole view.
    corners = []
    for y in (-4.0, 4.0):
        for x in (-4.0, 4.0):
            z = (d - n[0] * x - n[1] * y) / n[2]
            corners.append(torch.tensor([x, y, float(z)], dtype=F64))
    verts, faces = quad(corners)
    depth = vr.render_depth(verts, faces, K, (h, w), backend=backend)[0]
    rays = pixel_rays(K, h, w)
    expected = d / (rays @ n)  # z of the intersection of the pixel's ray with the plane
    torch.testing.assert_close(depth, expected, rtol=1e-12, atol=1e-12)


def test_nearest_surface_wins_and_background(backend):
    h, w = 24, 32
    K = intrinsics()
    a, b = 0.21, 0.53  # half sizes that put no pixel centre exactly on an edge
    near_v, f = quad([torch.tensor(c, dtype=F64) for c in ([-a, -a, 2.0], [a, -a, 2.0], [-a, a, 2.0], [a, a, 2.0])])
    far_v, _ = quad([torch.tensor(c, dtype=F64) for c in ([-b, -b, 3.0], [b, -b, 3.0], [-b, b, 3.0], [b, b, 3.0])])
    for order in ((far_v, near_v), (near_v, far_v)):  # face order does not matter
        verts = torch.cat(order)
        faces = torch.cat([f, f + 4])
        depth = vr.render_depth(verts, faces, K, (h, w), far=8.0, backend=backend)[0]
        # Analytic footprints: u = fx x / z + cx.
        u = torch.arange(w, dtype=F64)
        v = torch.arange(h, dtype=F64)[:, None]
        inside = lambda s, z: (((u - K[0, 2]) * z / K[0, 0]).abs() < s) & (((v - K[1, 2]) * z / K[1, 1]).abs() < s)
        expected = torch.where(inside(a, 2.0), 2.0, torch.where(inside(b, 3.0), 3.0, 8.0)).to(F64)
        torch.testing.assert_close(depth, expected, rtol=0, atol=1e-12)
    # The background value: far by default, or as given (a number or a broadcastable tensor).
    d0 = vr.render_depth(near_v, f, K, (h, w), backend=backend)[0]
    assert d0[0, 0] == 10.0  # DEFAULT_FAR
    d1 = vr.render_depth(near_v, f, K, (h, w), background=-1.0, backend=backend)[0]
    assert d1[0, 0] == -1.0 and d1[h // 2, w // 2] == 2.0
    d2 = vr.render_depth(near_v, f, K, (h, w), background=float("nan"), backend=backend)[0]
    assert torch.isnan(d2[0, 0]) and torch.equal(torch.isnan(d2), d0 == 10.0)
    bg = torch.arange(w, dtype=F64)
    d3 = vr.render_depth(near_v, f, K, (h, w), background=bg, backend=backend)[0]
    torch.testing.assert_close(d3[0], bg)


def test_near_far_clip_and_backface_culling(backend):
    h, w = 24, 32
    K = intrinsics()
    verts, faces = quad([torch.tensor(c, dtype=F64) for c in ([-3, -3, 5.0], [3, -3, 5.0], [-3, 3, 5.0], [3, 3, 5.0])])
    assert (vr.render_depth(verts, faces, K, (h, w), near=0.1, far=4.0, backend=backend) == 4.0).all()
    assert (vr.render_depth(verts, faces, K, (h, w), near=6.0, far=9.0, backend=backend) == 9.0).all()
    back = faces[:, [0, 2, 1]]  # reversed winding: seen from behind
    five = torch.full((1, h, w), 5.0, dtype=F64)
    torch.testing.assert_close(vr.render_depth(verts, back, K, (h, w), backend=backend), five)  # both sides
    assert (vr.render_depth(verts, back, K, (h, w), cull_backfaces=True, backend=backend) == 10.0).all()
    torch.testing.assert_close(vr.render_depth(verts, faces, K, (h, w), cull_backfaces=True, backend=backend), five)


def _depth_map(h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.linspace(-1, 1, h, dtype=F64), torch.linspace(-1, 1, w, dtype=F64), indexing="ij")
    return (1.0 + 0.1 * torch.sin(3 * x + 1) * torch.cos(2 * y) + 0.02 * torch.rand(h, w, generator=g,
                                                                                       dtype=F64))[None]


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_depth_map_round_trip_values(backend, dtype):
    """depth_to_points -> grid_mesh_faces -> render_depth gives the depth map back where the mesh covers
    the pixel centres (each centre is a vertex, so exactly that vertex's depth up to rounding)."""
    h, w = 20, 28
    K = intrinsics(f=25.0, h=h, w=w, dtype=dtype)
    depth = _depth_map(h, w).to(dtype)
    pts = vr.depth_to_points(depth, K).reshape(1, -1, 3)
    out = vr.render_depth(pts, vr.grid_mesh_faces(h, w), K, (h, w), background=float("nan"), backend=backend)
    covered = ~torch.isnan(out)
    assert covered[0, 1:-1, 1:-1].float().mean() > 0.9
    tol = 1e-12 if dtype == F64 else 2e-6
    torch.testing.assert_close(out[covered], depth[covered], rtol=tol, atol=tol)
    # The mesh ends at the outer pixel centres: nothing is drawn beyond them.
    assert covered.sum() <= h * w


def test_depth_map_round_trip_covers_the_interior(backend):
    """Every interior pixel centre is a mesh vertex; none may be left empty (the fill rule at a vertex
    shared by six faces)."""
    h, w = 20, 28
    K = intrinsics(f=25.0, h=h, w=w, dtype=torch.float32)
    depth = _depth_map(h, w).float()
    pts = vr.depth_to_points(depth, K).reshape(1, -1, 3)
    out = vr.render_depth(pts, vr.grid_mesh_faces(h, w), K, (h, w), background=float("nan"), backend=backend)
    holes = torch.isnan(out[0, 1:-1, 1:-1])
    assert not holes.any(), f"{int(holes.sum())} of {holes.numel()} interior pixels empty"


def test_batch_and_shared_forms(backend):
    h, w = 16, 20
    g = torch.Generator().manual_seed(4)
    B = 3
    verts = torch.randn(B, 12, 3, generator=g, dtype=F64) * 0.6 + torch.tensor([0, 0, 3.0], dtype=F64)
    faces = torch.randint(0, 12, (10, 3), generator=g)
    Ks = torch.stack([intrinsics(f=12.0 + 3 * k, h=h, w=w) for k in range(B)])
    single = torch.stack([vr.render_depth(verts[k], faces, Ks[k], (h, w), backend=backend)[0] for k in range(B)])
    torch.testing.assert_close(vr.render_depth(verts, faces, Ks, (h, w), backend=backend), single)
    # Shared K over a batch of points; shared points over a batch of K.
    shared_k = vr.render_depth(verts, faces, Ks[0], (h, w), backend=backend)
    torch.testing.assert_close(shared_k[1], vr.render_depth(verts[1], faces, Ks[0], (h, w), backend=backend)[0])
    shared_p = vr.render_depth(verts[0], faces, Ks, (h, w), backend=backend)
    assert shared_p.shape == (B, h, w)
    torch.testing.assert_close(shared_p[2], vr.render_depth(verts[0], faces, Ks[2], (h, w), backend=backend)[0])
    # Per-item faces with -1 padding rows: the padded item renders like its unpadded faces.
    fb = faces[None].repeat(B, 1, 1)
    fb[1, 5:] = -1
    out = vr.render_depth(verts, fb, Ks, (h, w), backend=backend)
    torch.testing.assert_close(out[1], vr.render_depth(verts[1], faces[:5], Ks[1], (h, w), backend=backend)[0])
    torch.testing.assert_close(out[0], single[0])
    # K as a nested list.
    torch.testing.assert_close(vr.render_depth(verts[0], faces, Ks[0].tolist(), (h, w), backend=backend)[0], single[0])


def test_gradients_to_points_and_K(backend):
    """float64 finite differences, with the visibility fixed (no pixel centre near an edge)."""
    h, w = 10, 12
    g = torch.Generator().manual_seed(7)
    pts = torch.randn(6, 3, generator=g, dtype=F64) * 0.5 + torch.tensor([0, 0, 2.5], dtype=F64)
    pts.requires_grad_(True)
    faces = torch.tensor([[0, 1, 2], [3, 4, 5], [0, 2, 4]])
    K = intrinsics(f=10.0, h=h, w=w).requires_grad_(True)
    with torch.no_grad():
        assert (vr.render_depth(pts, faces, K, (h, w), backend=backend) < 10).sum() >= 15  # many pixels hit

    def f(p, k):
        return vr.render_depth(p, faces, k, (h, w), backend=backend)

    assert torch.autograd.gradcheck(f, (pts, K), eps=1e-7, atol=1e-7)
    # The gradient of the depth at a pixel seen through a fronto-parallel plane is (0, 0, 1) split over
    # the face's vertices by their barycentrics: the total z-gradient equals the number of hit pixels.
    verts, quad_faces = quad([torch.tensor(c, dtype=F64) for c in ([-5, -5, 2.0], [5, -5, 2.0], [-5, 5, 2.0],
                                                                    [5, 5, 2.0])])
    verts.requires_grad_(True)
    vr.render_depth(verts, quad_faces, intrinsics(h=h, w=w), (h, w), backend=backend).sum().backward()
    torch.testing.assert_close(verts.grad[:, 2].sum(), torch.tensor(float(h * w), dtype=F64))
    torch.testing.assert_close(verts.grad[:, :2], torch.zeros(4, 2, dtype=F64), atol=1e-9, rtol=0)


def test_render_depth_errors():
    K = intrinsics()
    pts = torch.rand(5, 3) + torch.tensor([0, 0, 2.0])
    faces = torch.tensor([[0, 1, 2]])
    with pytest.raises(TypeError, match="points_cam"):
        vr.render_depth(pts.numpy(), faces, K, 8)
    with pytest.raises(TypeError, match="points_cam"):
        vr.render_depth(pts.long(), faces, K, 8)
    with pytest.raises(ValueError, match="points_cam"):
        vr.render_depth(pts[:, :2], faces, K, 8)
    with pytest.raises(ValueError, match="K"):
        vr.render_depth(pts, faces, torch.eye(4), 8)
    with pytest.raises(ValueError, match="K"):
        vr.render_depth(pts, faces, K.to("meta"), 8)
    with pytest.raises(ValueError, match="batch sizes disagree: points_cam 2, K 3"):
        vr.render_depth(pts.expand(2, -1, -1), faces, K.expand(3, -1, -1), 8)
    with pytest.raises(ValueError, match="near, far"):
        vr.render_depth(pts, faces, K, 8, near=2.0, far=1.0)
    with pytest.raises(ValueError, match="image_size"):
        vr.render_depth(pts, faces, K, (8, 0))
    with pytest.raises(ValueError, match="faces"):
        vr.render_depth(pts, torch.tensor([[0, 1, 5]]), K, 8)
    with pytest.raises(TypeError, match="faces"):
        vr.render_depth(pts, faces.float(), K, 8)
    with pytest.raises(TypeError, match="faces"):
        vr.render_depth(pts, [[0, 1, 2]], K, 8)
    # Zero faces: all background.
    assert (vr.render_depth(pts, torch.zeros(0, 3, dtype=torch.long), K, 8) == 10.0).all()


def test_depth_renderer_module(backend):
    h, w = 16, 20
    K = intrinsics(h=h, w=w, dtype=torch.float32)
    m = vr.DepthRenderer(K, (h, w), near=0.5, far=6.0, background=0.0, backend=backend)
    assert "K" in m.state_dict() and m.image_size == (h, w)
    verts, faces = icosphere(1)
    verts = verts * 0.5 + torch.tensor([0, 0, 3.0])
    torch.testing.assert_close(m(verts, faces), vr.render_depth(verts, faces, K, (h, w), near=0.5, far=6.0,
                                                                background=0.0, backend=backend))
    m64 = m.double()
    assert m64.K.dtype == F64 and m64(verts.double(), faces).dtype == F64
    with pytest.raises(ValueError, match="K"):
        vr.DepthRenderer(torch.eye(2), 8)
    with pytest.raises(ValueError, match="near, far"):
        vr.DepthRenderer(K, 8, near=1.0, far=0.5)


# ---------------------------------------------------------------------------------------------------
# render_mesh


def test_intrinsics_from_fov_frames_the_image_edges():
    K = vr.intrinsics_from_fov(40.0, (30, 50), dtype=F64)
    t = math.tan(math.radians(20.0))
    # A ray at the top edge of the field of view lands on the top image edge, v = -0.5.
    v = K[1, 1] * (-t) + K[1, 2]
    torch.testing.assert_close(v, torch.tensor(-0.5, dtype=F64))
    assert K[0, 2] == 24.5 and K[1, 2] == 14.5 and K[0, 0] == K[1, 1]
    with pytest.raises(ValueError, match="fov"):
        vr.intrinsics_from_fov(180.0, 8)


def test_vertex_normals_of_a_sphere_point_outwards():
    v, f = icosphere(2, dtype=F64)
    n = vr.vertex_normals(v, f)
    assert n.shape == v.shape
    assert ((n * v).sum(-1) > 0.995).all()
    nb = vr.vertex_normals(torch.stack([v, 2 * v]), f)
    torch.testing.assert_close(nb[1], n)


@pytest.fixture(scope="module")
def ball():
    return icosphere(3)


def test_render_mesh_default_ball(ball):
    img, mask = vr.render_mesh(*ball, image_size=64, return_mask=True)
    assert img.shape == (1, 64, 64, 3) and mask.shape == (1, 64, 64)
    assert img.min() >= 0 and img.max() <= 1 and mask.min() >= 0 and mask.max() <= 1
    # The unit ball at distance 4: silhouette radius f tan(asin(1/4)) pixels around the centre.
    K = vr.intrinsics_from_fov(40.0, 64)
    r = K[0, 0] * math.tan(math.asin(0.25))
    area = mask.sum()
    assert abs(area / (math.pi * r * r) - 1) < 0.04
    assert (img[0, 0, 0] == 1).all()  # white background
    grey = img[0][mask[0] == 1]
    assert (grey.max(-1).values - grey.min(-1).values).abs().max() < 1e-6  # neutral grey albedo
    # Lit from the upper left: the upper-left quarter of the ball is brighter than the lower-right one.
    assert img[0, 16:32, 16:32].mean() > img[0, 32:48, 32:48].mean() + 0.1


def test_render_mesh_is_right_way_up(backend):
    # World up is -y (y down). A triangle above and to the right of the centre appears at the top right.
    verts = torch.tensor([[0.2, -0.8, 0.0], [0.8, -0.8, 0.0], [0.5, -0.2, 0.0]])
    faces = torch.tensor([[0, 2, 1]])
    _, mask = vr.render_mesh(verts, faces, image_size=32, return_mask=True, antialias=False, backend=backend)
    rows, cols = torch.nonzero(mask[0] > 0.5, as_tuple=True)
    assert len(rows) > 5 and rows.float().mean() < 16 and cols.float().mean() > 16


@pytest.mark.parametrize("normals", ["face", "vertex"])
def test_lambertian_shading_of_a_flat_quad(backend, normals):
    verts, faces = quad([torch.tensor(c, dtype=F64) for c in ([-3, -3, 0.0], [3, -3, 0.0], [-3, 3, 0.0],
                                                            [3, 3, 0.0])])
    c = torch.tensor([0.2, 0.5, 0.9], dtype=F64)
    kw = dict(colors=c, image_size=8, ambient=0.3, diffuse=0.6, normals=normals, antialias=False, backend=backend)
    img = vr.render_mesh(verts, faces, light_dir=(0.0, 0.0, -1.0), **kw)  # light towards the camera
    torch.testing.assert_close(img, (c * 0.9).expand(1, 8, 8, 3))
    img = vr.render_mesh(verts, faces, light_dir=(1.0, 0.0, 0.0), **kw)  # grazing: ambient only
    torch.testing.assert_close(img, (c * 0.3).expand(1, 8, 8, 3))
    tilted = (0.0, -1.0, -1.0)  # 45 degrees
    img = vr.render_mesh(verts, faces, light_dir=tilted, **kw)
    torch.testing.assert_close(img, (c * (0.3 + 0.6 / math.sqrt(2))).expand(1, 8, 8, 3))
    # Seen from behind, the face is lit on that side too (both sides drawn), or culled.
    back = faces[:, [0, 2, 1]]
    img = vr.render_mesh(verts, back, light_dir=(0.0, 0.0, -1.0), **kw)
    torch.testing.assert_close(img, (c * 0.9).expand(1, 8, 8, 3))
    img = vr.render_mesh(verts, back, light_dir=(0.0, 0.0, -1.0), cull_backfaces=True, background=(0.1, 0.2, 0.3),
                         **kw)
    torch.testing.assert_close(img, torch.tensor([0.1, 0.2, 0.3], dtype=F64).expand(1, 8, 8, 3))


def test_render_mesh_gradients_reach_verts_colors_and_light(ball):
    v = ball[0].clone().requires_grad_(True)
    colors = torch.full_like(v, 0.6).requires_grad_(True)
    light = torch.tensor([-0.3, -0.5, -1.0], requires_grad=True)
    img, mask = vr.render_mesh(v, ball[1], colors=colors, light_dir=light, image_size=32, return_mask=True)
    (img.sum() + mask.sum()).backward()
    for t in (v, colors, light):
        assert torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0
    # Per-vertex colours: only vertices of visible faces get a gradient.
    assert (colors.grad.abs().sum(-1) == 0).any()


def test_render_mesh_batch_camera_and_errors(ball):
    v, f = ball
    az = torch.tensor([0.0, 1.0, 2.0])
    imgs = vr.render_mesh(v, f, azimuth=az, elevation=0.3, image_size=24, antialias=False)
    assert imgs.shape == (3, 24, 24, 3)
    one = vr.render_mesh(v, f, azimuth=1.0, elevation=0.3, image_size=24, antialias=False)
    torch.testing.assert_close(imgs[1], one[0])
    # Explicit R, t give the same camera as the angles.
    R = vr.rotation_from_angles(torch.tensor([1.0]), torch.tensor([0.3]))
    torch.testing.assert_close(vr.render_mesh(v, f, R=R, t=(0, 0, 4.0), image_size=24, antialias=False), one)
    # A batch of meshes with per-vertex colours.
    vb = torch.stack([v, v * 0.5])
    out = vr.render_mesh(vb, f, colors=torch.rand(2, len(v), 3), image_size=(20, 30), antialias=False)
    assert out.shape == (2, 20, 30, 3)
    # int32 faces; per-item faces (B, F, 3) over shared vertices; zero faces give the background.
    torch.testing.assert_close(vr.render_mesh(v, f.int(), azimuth=1.0, elevation=0.3, image_size=24,
                                              antialias=False), one)
    fb = f[None].repeat(2, 1, 1)
    fb[1] = -1
    out = vr.render_mesh(v, fb, image_size=12, antialias=False)
    assert out.shape == (2, 12, 12, 3) and (out[1] == 1).all() and (out[0] < 1).any()
    empty, mask = vr.render_mesh(v, f[:0], image_size=12, return_mask=True)
    assert (empty == 1).all() and (mask == 0).all()
    with pytest.raises(ValueError, match="normals"):
        vr.render_mesh(v, f, normals="phong")
    with pytest.raises(ValueError, match="colors"):
        vr.render_mesh(v, f, colors=torch.rand(5, 3))
    with pytest.raises(ValueError, match="R"):
        vr.render_mesh(v, f, R=torch.eye(3), azimuth=0.5)
    with pytest.raises(ValueError, match="light_dir"):
        vr.render_mesh(v, f, light_dir=(1.0, 0.0))
    with pytest.raises(ValueError, match="background"):
        vr.render_mesh(v, f, background=(1.0, 1.0))
    with pytest.raises(ValueError, match="distance"):
        vr.render_mesh(v, f, distance=-1.0)
    with pytest.raises(ValueError, match="batch sizes disagree"):
        vr.render_mesh(vb, f, azimuth=az)
    with pytest.raises(ValueError, match="verts"):
        vr.render_mesh(v[:, :2], f)


def test_mesh_modules(backend):
    v, f = icosphere(1)
    P = vr.perspective(vr.intrinsics_from_fov(40.0, 16), 16, 0.1, 10.0)
    clip = torch.cat([v + torch.tensor([0, 0, 4.0]), torch.ones(len(v), 1)], 1) @ P.T
    frags = vr.MeshRasterizer(16, cull_backfaces=True, backend=backend)(clip, f)
    ref = vr.rasterize(clip, f, 16, cull_backfaces=True, backend=backend)
    assert torch.equal(frags.face_id, ref.face_id)
    r = vr.MeshRenderer(image_size=16, ambient=0.5, antialias=False, backend=backend)
    torch.testing.assert_close(r(v, f), vr.render_mesh(v, f, image_size=16, ambient=0.5, antialias=False,
                                                       backend=backend))
    torch.testing.assert_close(r(v, f, azimuth=0.4), vr.render_mesh(v, f, image_size=16, ambient=0.5, azimuth=0.4,
                                                                    antialias=False, backend=backend))
    rk = vr.MeshRenderer(image_size=16, K=vr.intrinsics_from_fov(30.0, 16), antialias=False, backend=backend)
    assert "K" in rk.state_dict() and rk(v, f).shape == (1, 16, 16, 3)
    with pytest.raises(TypeError, match="lightdir"):
        vr.MeshRenderer(lightdir=(0, 0, 1))
