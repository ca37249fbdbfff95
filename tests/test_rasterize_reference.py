"""The reference rasterizer against the spec's conventions and independent ground truth."""

import torch

import voxrender as vr
from voxrender.reference.rasterize import (_coverage_chunk, face_vertices, interpolate_reference, pixel_centres,
                                          rasterize_reference)

F64 = torch.float64


def ndc_centres(h, w):
    x = -1 + (2 * torch.arange(w, dtype=F64) + 1) / w
    y = -1 + (2 * torch.arange(h, dtype=F64) + 1) / h
    return torch.meshgrid(y, x, indexing="ij")[::-1]  # x, y


def clip(xy, z=0.0, w=1.0):
    """NDC (x, y) pairs -> clip vertices (N, 4) at depth z, scaled by w."""
    xy = torch.as_tensor(xy, dtype=F64)
    n = xy.shape[0]
    return torch.cat([xy * w, torch.full((n, 1), z * w, dtype=F64), torch.full((n, 1), w, dtype=F64)], 1)


def camera_scene(seed, n_faces=6, h=24, w=32):
    """Random camera-space triangles in front of (and partly behind) a pinhole camera."""
    g = torch.Generator().manual_seed(seed)
    K = torch.tensor([[30.0, 0, (w - 1) / 2], [0, 30.0, (h - 1) / 2], [0, 0, 1]], dtype=F64)
    P = vr.perspective(K, (h, w), near=0.5, far=20.0)
    pts = torch.randn(n_faces * 3, 3, generator=g, dtype=F64) * torch.tensor([2.0, 2.0, 3.0], dtype=F64)
    pts[:, 2] += 4.0
    verts_cam = pts
    verts = torch.cat([pts, torch.ones(len(pts), 1, dtype=F64)], 1) @ P.T
    faces = torch.arange(n_faces * 3).reshape(n_faces, 3)
    return verts_cam, verts, faces, K, P


def ray_cast(verts_cam, faces, K, h, w, near, far):
    """Independent ground truth: intersect each pixel's ray with every triangle (Moller-Trumbore)."""
    v, u = torch.meshgrid(torch.arange(h, dtype=F64), torch.arange(w, dtype=F64), indexing="ij")
    d = torch.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], torch.ones_like(u)], -1)  # z = 1
    best = torch.full((h, w), float("inf"), dtype=F64)
    fid = torch.full((h, w), -1, dtype=torch.int64)
    margin = torch.full((h, w), float("inf"), dtype=F64)  # distance of the hit from the triangle's edges
    for f, (i0, i1, i2) in enumerate(faces.tolist()):
        a, b, c = verts_cam[i0], verts_cam[i1], verts_cam[i2]
        e1, e2 = b - a, c - a
        pv = torch.cross(d, e2.expand_as(d), dim=-1)
        det = (pv * e1).sum(-1)
        inv = 1 / det
        tv = -a
        bu = (tv * pv).sum(-1) * inv
        qv = torch.cross(tv.expand_as(d), e1.expand_as(d), dim=-1)
        bv = (d * qv).sum(-1) * inv
        t = (e2 * qv).sum(-1) * inv  # depth z of the hit (d has z = 1)
        bw = 1 - bu - bv
        hit = (bu >= 0) & (bv >= 0) & (bw >= 0) & (t >= near) & (t <= far)
        closer = hit & (t < best)
        best = torch.where(closer, t, best)
        fid = torch.where(closer, torch.full_like(fid, f), fid)
        m = torch.minimum(torch.minimum(bu, bv), bw)
        margin = torch.where(closer, m, margin)
    return fid, best, margin


def test_camera_scenes_match_ray_casting_including_w_crossings():
    h, w = 24, 32
    crossings = 0
    for seed in range(6):
        verts_cam, verts, faces, K, P = camera_scene(seed, h=h, w=w)
        crossings += int(((verts[faces][..., 3] > 0).sum(-1) % 3 != 0).sum())
        frags = rasterize_reference(verts[None], faces[None], h, w)
        fid, depth_cam, margin = ray_cast(verts_cam, faces, K, h, w, 0.5, 20.0)
        # Away from edges (barycentric margin) and from depth ties, the two agree exactly.
        clear = (margin > 1e-6) | (fid < 0)
        assert torch.equal(frags.face_id[0][clear].long(), fid[clear]), seed
        hit = fid >= 0
        # The visible point's camera depth: z_ndc maps back through the projection.
        z_ndc = frags.depth[0][hit]
        z_cam = P[2, 3] / (z_ndc - P[2, 2])
        torch.testing.assert_close(z_cam, depth_cam[hit], rtol=1e-9, atol=1e-9)
        assert torch.all(frags.depth[0][~hit] == 1.0) and torch.all(frags.bary[0][~hit] == 0)
    assert crossings > 0  # the scenes include triangles that cross w = 0


def test_perspective_correct_barycentrics_reconstruct_the_pixel_ray():
    h, w = 24, 32
    verts_cam, verts, faces, K, _ = camera_scene(11, h=h, w=w)
    frags = rasterize_reference(verts[None], faces[None], h, w)
    pts = interpolate_reference(verts_cam[None], frags, faces[None])[0]  # camera-space surface points
    hit = frags.face_id[0] >= 0
    v, u = torch.meshgrid(torch.arange(h, dtype=F64), torch.arange(w, dtype=F64), indexing="ij")
    torch.testing.assert_close((K[0, 0] * pts[..., 0] / pts[..., 2] + K[0, 2])[hit], u[hit])
    torch.testing.assert_close((K[1, 1] * pts[..., 1] / pts[..., 2] + K[1, 2])[hit], v[hit])
    torch.testing.assert_close(frags.bary[0][hit].sum(-1), torch.ones(int(hit.sum()), dtype=F64))
    assert torch.all(interpolate_reference(verts_cam[None], frags, faces[None])[0][~hit] == 0)


def test_fill_rule_split_quads_cover_each_pixel_once():
    h, w = 9, 9  # odd: the lines x = 0 and y = 0 pass through pixel centres
    quads = {
        "diagonal": (clip([[-1, -1], [1, -1], [1, 1]]), clip([[-1, -1], [1, 1], [-1, 1]])),
        "vertical": (clip([[-1, -1], [0, -1], [0, 1]]), clip([[0, -1], [1, -1], [0, 1]])),
    }
    # A fan around the centre pixel: 4 triangles meeting at NDC (0, 0), a pixel centre.
    fan_pts = [[-0.7, -0.6], [0.8, -0.7], [0.7, 0.8], [-0.8, 0.6]]
    fan = tuple(clip([[0, 0], fan_pts[k], fan_pts[(k + 1) % 4]]) for k in range(4))
    for name, tris in list(quads.items()) + [("fan", fan)]:
        for flip in (False, True):  # either winding
            verts = torch.cat([t[[0, 2, 1]] if flip else t for t in tris])[None]
            faces = torch.arange(len(verts[0])).reshape(-1, 3)[None]
            counts = torch.zeros(h, w, dtype=torch.int64)
            for f in range(faces.shape[1]):
                frags = rasterize_reference(verts, faces[:, f:f + 1], h, w)
                counts += (frags.face_id[0] >= 0).long()
            union = rasterize_reference(verts, faces, h, w).face_id[0] >= 0
            assert counts.max() <= 1, (name, flip)
            assert torch.equal(counts == 1, union), (name, flip)
            if name == "diagonal":
                assert bool(union.all()), name  # the quad covers the whole image
            elif name == "vertical":
                assert bool(union[:, 4].all()), name  # the shared edge x = 0 runs through column 4
            else:
                assert counts[4, 4] == 1  # the shared vertex sits on the centre pixel


def test_depth_map_mesh_with_vertices_on_pixel_centres_is_covered_once():
    """A depth map's mesh, re-rendered by the camera that took it, has a vertex exactly on every pixel
    centre (up to rounding of the back-projection). Every pixel centre inside the mesh's outline (all but
    the last row and column, which lie on its bottom and right edges) is covered by exactly one face, in
    float32 and float64: coverage is exact fixed-point arithmetic, where float edge functions disagree in
    sign at shared vertices and leave holes."""
    h, w = 13, 17
    K = torch.tensor([[20.0, 0, (w - 1) / 2], [0, 22.0, (h - 1) / 2], [0, 0, 1]], dtype=F64)
    g = torch.Generator().manual_seed(3)
    depth = 1 + 0.2 * torch.rand(1, h, w, generator=g, dtype=F64)
    pts = vr.depth_to_points(depth, K).reshape(1, -1, 3)
    P = vr.perspective(K, (h, w), near=0.1, far=10.0)
    verts = torch.cat([pts, torch.ones_like(pts[..., :1])], -1) @ P.T
    faces = vr.grid_mesh_faces(h, w)[None]
    for dtype in (torch.float32, torch.float64):
        px, py = pixel_centres(h, w, verts.to(dtype))
        covered, _ = _coverage_chunk(face_vertices(verts.to(dtype), faces), (faces >= 0).all(-1), px, py, False)
        counts = covered.sum(1)[0]
        expected = torch.zeros(h, w, dtype=counts.dtype)
        expected[:-1, :-1] = 1
        assert torch.equal(counts, expected), dtype


def test_depth_ties_lower_face_wins_and_culling():
    tri = clip([[-0.9, -0.9], [0.9, -0.8], [0.0, 0.9]], z=0.2)
    behind = clip([[-0.9, -0.9], [0.9, -0.8], [0.0, 0.9]], z=0.5)
    # NDC signed area of this triangle is positive: back-facing under the spec's rule. Faces 0 and 1
    # are identical (a depth tie); face 2 is the front-facing copy, further away.
    verts = torch.cat([tri, tri, behind[[0, 2, 1]]])[None]
    faces = torch.tensor([[[0, 1, 2], [3, 4, 5], [6, 7, 8]]])
    frags = rasterize_reference(verts, faces, 16, 16)
    covered = frags.face_id[0] >= 0
    assert covered.any() and torch.all(frags.face_id[0][covered] == 0)
    culled = rasterize_reference(verts, faces, 16, 16, cull_backfaces=True)
    assert torch.equal(culled.face_id[0] >= 0, covered)  # only the front-facing copy is left ...
    assert torch.all(culled.face_id[0][covered] == 2)  # ... face 2, the flipped one


def test_near_far_degenerate_padding_and_empty():
    far = clip([[-1, -1], [1, -1], [0, 1]], z=1.5)  # beyond the far plane
    flat = clip([[-1, -1], [1, 1], [0, 0]])  # zero area
    ok = clip([[-0.5, -0.5], [0.5, -0.5], [0, 0.5]], z=-0.5)
    verts = torch.cat([far, flat, ok])[None]
    faces = torch.tensor([[[0, 1, 2], [3, 4, 5], [-1, -1, -1], [6, 7, 8]]])
    frags = rasterize_reference(verts, faces, 12, 12)
    ids = frags.face_id[0]
    assert set(ids.unique().tolist()) <= {-1, 3}
    assert (ids == 3).any()
    assert torch.isfinite(frags.bary).all() and torch.isfinite(frags.depth).all()
    empty = rasterize_reference(verts, faces[:, :0], 5, 7)
    assert torch.all(empty.face_id == -1) and torch.all(empty.depth == 1) and torch.all(empty.bary == 0)


def test_bary_and_depth_gradients_match_finite_differences():
    tri = torch.tensor([[-0.83, -0.71, 0.1, 1.1], [0.92, -0.55, 0.3, 0.9], [0.05, 0.88, -0.2, 1.3]], dtype=F64)
    faces = torch.tensor([[[0, 1, 2]]])

    def f(v):
        frags = rasterize_reference(v[None], faces, 7, 9)
        return frags.bary, frags.depth

    v = tri.clone().requires_grad_()
    base = rasterize_reference(tri[None], faces, 7, 9).face_id
    assert (base >= 0).sum() > 10
    # Small steps keep every pixel's visibility (the pixel centres are > 1e-3 from the edges here).
    assert torch.autograd.gradcheck(f, (v,), eps=1e-7, atol=1e-6)
