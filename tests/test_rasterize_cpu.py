"""The C++ CPU kernel torch.ops.voxrender.rasterize_face_ids against the reference rasterizer.

The kernel mirrors the reference's arithmetic operation by operation (the exact fixed-point coverage of faces
in front of the camera, the float homogeneous path of faces crossing w = 0), so face ids agree exactly
(float64 everywhere; float32 is allowed a tiny fraction of pixels, none observed), and depth agrees to
rounding.
"""

import pytest
import torch

import voxrender as vr
import voxrender.backends
from voxrender.reference.rasterize import rasterize_reference

voxrender.backends.extension_status()  # loads the extension, which registers the op
HAVE_OP = hasattr(torch.ops.voxrender, "rasterize_face_ids")
pytestmark = pytest.mark.skipif(not HAVE_OP, reason="torch.ops.voxrender.rasterize_face_ids is not built")

F64 = torch.float64
TOL = {torch.float32: dict(rtol=1e-6, atol=1e-7), torch.float64: dict(rtol=1e-12, atol=1e-14)}


def op(verts, faces, h, w, cull=False):
    return torch.ops.voxrender.rasterize_face_ids(verts, faces, h, w, cull)


def assert_matches_reference(verts, faces, h, w, cull, min_equal=None):
    ref = rasterize_reference(verts, faces, h, w, cull_backfaces=cull)
    fid, depth = op(verts, faces, h, w, cull)
    assert fid.dtype == torch.int32 and fid.shape == (verts.shape[0], h, w)
    assert depth.dtype == verts.dtype and depth.shape == fid.shape
    same = fid == ref.face_id
    if min_equal is None:
        min_equal = 0.995 if verts.dtype == torch.float32 else 1.0
    frac = same.double().mean().item()
    assert frac >= min_equal, f"face_id equal on {frac:.6f} of pixels"
    torch.testing.assert_close(depth[same], ref.depth[same], **TOL[verts.dtype])
    assert torch.all(depth[fid < 0] == 1)
    return fid, ref


def camera_batch(seed, n_faces, h, w, dtype, B=2, pad=0):
    """B different random camera-space meshes (as test_rasterize_reference's camera_scene: some triangles
    cross w = 0), in clip coordinates; item b > 0 gets ``pad`` padding rows."""
    g = torch.Generator().manual_seed(seed)
    K = torch.tensor([[30.0, 0, (w - 1) / 2], [0, 30.0, (h - 1) / 2], [0, 0, 1]], dtype=F64)
    P = vr.perspective(K, (h, w), near=0.5, far=20.0)
    nv = n_faces * 3
    pts = torch.randn(B, nv, 3, generator=g, dtype=F64) * torch.tensor([2.0, 2.0, 3.0], dtype=F64)
    pts[..., 2] += 4.0
    verts = torch.cat([pts, torch.ones(B, nv, 1, dtype=F64)], -1) @ P.T
    faces = torch.stack([torch.randint(0, nv, (n_faces, 3), generator=g) for _ in range(B)])
    for b in range(1, B):
        rows = torch.randperm(n_faces, generator=g)[:pad]
        faces[b, rows] = -1
    return verts.to(dtype), faces


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("cull", [False, True])
def test_random_camera_scenes(dtype, cull):
    crossings = 0
    for seed in range(6):
        h, w = (17, 23) if seed % 2 else (40, 33)
        verts, faces = camera_batch(seed, 30, h, w, dtype, pad=5)
        tri_w = verts[0][faces[0]][..., 3]
        crossings += int(((tri_w > 0).sum(-1) % 3 != 0).sum())
        fid, _ = assert_matches_reference(verts, faces, h, w, cull)
        assert (fid >= 0).any()
    assert crossings > 0


def test_padding_empty_and_int32_faces():
    verts, faces = camera_batch(3, 20, 19, 21, F64)
    # int32 faces and non-contiguous verts give the same result.
    fid, depth = op(verts, faces, 19, 21)
    fid2, depth2 = op(verts.transpose(0, 1).contiguous().transpose(0, 1), faces.int(), 19, 21)
    assert torch.equal(fid, fid2) and torch.equal(depth, depth2)
    # All-padding, zero faces, zero vertices: background.
    for f in (torch.full_like(faces, -1), faces[:, :0]):
        fid, depth = op(verts, f, 19, 21)
        assert torch.all(fid == -1) and torch.all(depth == 1)
    fid, depth = op(verts[:, :0], torch.full((2, 4, 3), -1), 5, 6)
    assert torch.all(fid == -1) and torch.all(depth == 1)
    fid, depth = op(verts[:, :0], faces[:, :0], 5, 6)
    assert fid.shape == (2, 5, 6) and torch.all(fid == -1)
    # Padding rows are skipped: same ids as the mesh with those rows removed, renumbered.
    keep = torch.arange(20) % 3 != 0
    padded = faces.clone()
    padded[:, ~keep] = -1
    fid_p, _ = op(verts, padded, 19, 21)
    fid_k, _ = op(verts, faces[:, keep], 19, 21)
    idx = torch.nonzero(keep)[:, 0].to(torch.int32)
    assert torch.equal(fid_p, torch.where(fid_k >= 0, idx[fid_k.clamp(min=0).long()], fid_k))


def smooth_depth_mesh(seed, n, dtype, B=1):
    """Grid mesh over a random smooth n x n depth map, back-projected and projected again."""
    g = torch.Generator().manual_seed(seed)
    K = torch.tensor([[1.2 * n, 0, (n - 1) / 2], [0, 1.2 * n, (n - 1) / 2], [0, 0, 1]], dtype=F64)
    coarse = torch.rand(B, 1, 5, 5, generator=g, dtype=F64)
    depth = 3.0 + 1.5 * torch.nn.functional.interpolate(coarse, size=(n, n), mode="bicubic", align_corners=True)[:, 0]
    pts = vr.depth_to_points(depth, K).reshape(B, -1, 3)
    P = vr.perspective(K, (n, n), near=0.5, far=20.0)
    verts = torch.cat([pts, torch.ones_like(pts[..., :1])], -1) @ P.T
    faces = vr.grid_mesh_faces(n, n)[None].expand(B, -1, -1)
    return verts.to(dtype), faces


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dense_grid_mesh(dtype):
    verts, faces = smooth_depth_mesh(0, 48, dtype, B=2)
    for (h, w) in [(48, 48), (37, 53)]:
        for cull in (False, True):
            fid, _ = assert_matches_reference(verts, faces, h, w, cull)
            # Watertight, also at (48, 48) where every vertex sits exactly on a pixel centre: coverage is
            # decided by exact fixed-point edge functions, so the fill rule holds along shared edges and
            # at shared vertices alike.
            assert bool((fid[:, 1:-1, 1:-1] >= 0).all())
    # Faces finer than the pixels: most have an empty box or a one-pixel box (tested exactly while binning).
    for (h, w) in [(20, 26), (13, 13)]:
        fid, _ = assert_matches_reference(verts, faces, h, w, False)
        assert bool((fid[:, 1:-1, 1:-1] >= 0).all())
    # Ties between sub-pixel faces: each face twice (bit-identical depths); the first copy wins.
    dup = torch.cat([faces, faces], 1)
    fid, _ = assert_matches_reference(verts, dup, 20, 26, False)
    assert bool((fid[fid >= 0] < faces.shape[1]).all())


def test_fill_rule_split_quads_cover_each_pixel_once():
    """A lattice of vertices at pixel centres (every edge passes through pixel centres), with each
    vertex scaled by w in {1, 2, 4}: rendering the faces one by one, every pixel centre inside the hull is
    covered by exactly one face, and the whole mesh matches the reference."""
    n, h, w = 5, 16, 16
    g = torch.Generator().manual_seed(0)
    i, j = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    px = -1 + (2 * (3 + 2 * j) + 1) / w  # pixel-centre columns 3, 5, .., 11
    py = -1 + (2 * (3 + 2 * i) + 1) / h
    v = torch.stack([px, py, torch.zeros_like(px), torch.ones_like(px)], -1).reshape(-1, 4).to(F64)
    v = v * (2.0 ** torch.randint(0, 3, (n * n, 1), generator=g)).to(F64)
    faces = vr.grid_mesh_faces(n, n)
    F = faces.shape[0]
    fid, _ = op(v[None].expand(F, -1, -1), faces[:, None], h, w)
    count = (fid >= 0).sum(0)
    inside = torch.zeros(h, w, dtype=torch.bool)
    inside[3:12, 3:12] = True  # the hull's pixel centres, border included
    assert torch.all(count[~inside] == 0)
    # Pixels on the hull's outer border are covered or not by the fill rule; inside, exactly once.
    assert torch.all(count[4:11, 4:11] == 1)
    assert torch.all(count <= 1)
    assert_matches_reference(v[None], faces[None], h, w, False)
    assert_matches_reference(v[None], faces[None], h, w, True)


def test_depth_ties_lower_index_wins():
    verts, faces = camera_batch(1, 10, 20, 20, F64, B=1)
    dup = torch.cat([faces, faces.flip(1)], 1)  # each face twice, in the other order
    fid, ref = assert_matches_reference(verts, dup, 20, 20, False)
    hit = fid >= 0
    # Face k (k < 10) and 19 - k are the same triangle at bit-identical depths: the first copy wins.
    assert hit.any() and torch.all(fid[hit] < 10)


def test_large_band_boundaries_and_tall_image():
    verts, faces = camera_batch(7, 60, 70, 9, torch.float32, pad=10)
    assert_matches_reference(verts, faces, 70, 9, False)
    verts, faces = camera_batch(8, 60, 3, 90, torch.float64, pad=10)
    assert_matches_reference(verts, faces, 3, 90, True)


def test_bad_inputs():
    verts, faces = camera_batch(0, 4, 8, 8, torch.float32)
    with pytest.raises(ValueError, match="verts"):
        op(verts[..., :3], faces, 8, 8)
    with pytest.raises(ValueError, match="verts"):
        op(verts[0], faces, 8, 8)
    with pytest.raises(TypeError, match="verts"):
        op(verts.to(torch.int64), faces, 8, 8)
    with pytest.raises(TypeError, match="faces"):
        op(verts, faces.float(), 8, 8)
    with pytest.raises(ValueError, match="faces"):
        op(verts, faces[..., :2], 8, 8)
    with pytest.raises(ValueError, match="faces"):
        op(verts, faces[:1], 8, 8)
    with pytest.raises(ValueError, match="faces"):
        op(verts, faces + verts.shape[1], 8, 8)
    bad = faces.clone()
    bad[0, 0, 0] = -2
    with pytest.raises(ValueError, match="faces"):
        op(verts, bad, 8, 8)
    with pytest.raises(ValueError, match="image_size"):
        op(verts, faces, 0, 8)


def test_guard_band_faces_take_the_float_path():
    """Faces with a vertex far off screen (beyond the fixed-point guard band) or crossing w = 0 use the
    float homogeneous edge functions; next to fixed-point faces, all agree with the reference."""
    big = torch.tensor([[[-0.5, -0.5, 0.0, 1.0], [3e6, -0.4, 0.1, 1.0], [0.2, 0.7, 0.2, 1.0],
                         [-0.9, 0.2, 0.3, 1.0], [0.1, -0.9, 0.2, 1.0], [0.8, 0.9, -0.1, -0.5]]], dtype=F64)
    faces = torch.tensor([[[0, 1, 2], [3, 4, 2], [3, 4, 5]]])
    for dtype in (torch.float32, torch.float64):
        fid, _ = assert_matches_reference(big.to(dtype), faces, 31, 29, False, min_equal=1.0)
        assert set(fid.unique().tolist()) >= {0, 1}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_snapping_rounds_half_to_even_like_the_reference(dtype):
    """A vertex exactly halfway between two sub-pixel positions snaps to the even one, in the C++ kernel
    (its own round-half-even) as in the reference (torch.round). A quad split by a vertical edge at
    s = 896.5 sub-pixel units (W = 8: 1024 units per NDC unit): rounding half to even puts the edge
    exactly on the centre of column 3 (896 = 7 * 128), where the fill rule gives it to the right face;
    rounding half away from zero would put it at 897, and column 3 would belong to the left face."""
    x = -1 + 896.5 / 1024
    verts = torch.tensor([[[-1.0, -1.0, 0, 1], [x, -1.0, 0, 1], [x, 1.0, 0, 1], [-1.0, 1.0, 0, 1],
                           [1.0, -1.0, 0, 1], [1.0, 1.0, 0, 1]]], dtype=F64)
    faces = torch.tensor([[[0, 1, 2], [0, 2, 3], [1, 4, 5], [1, 5, 2]]])
    fid, _ = assert_matches_reference(verts.to(dtype), faces, 8, 8, False, min_equal=1.0)
    assert torch.all(fid[0, :, 3] >= 2) and torch.all(fid[0, :, 2] <= 1)  # column 3 is the right face's
