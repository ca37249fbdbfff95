"""Triton rasterizer visibility pass and interpolate against the reference (and the C++ op where built).

The visibility kernel mirrors the reference's arithmetic operation by operation, so face ids must agree
EXACTLY, in float64 and float32 alike. Each test runs on the CPU under ``TRITON_INTERPRET=1`` (set it before
Python starts: ``TRITON_INTERPRET=1 python -m pytest -m triton tests/test_triton_rasterize.py``) and, as a
``gpu``-marked variant, on a CUDA device when there is one; otherwise it is skipped with the reason. The
oracle always runs on the CPU. Sizes are tiny and odd on purpose: the interpreter is slow, and images that
are not multiples of the tile (8 x 16 pixels) exercise the partial tiles.
"""

from __future__ import annotations

import pytest
import torch

import voxrender as vr
from test_rasterize_cpu import camera_batch, smooth_depth_mesh
from voxrender import backends
from voxrender.reference.rasterize import Fragments, face_vertices, interpolate_reference, rasterize_reference

F64, F32 = torch.float64, torch.float32
DTYPES = (F32, F64)

pytestmark = pytest.mark.triton


def _device_param(name: str):
    marks = [pytest.mark.gpu] if name == "cuda" else []
    return pytest.param(name, marks=marks, id=name)


@pytest.fixture(params=[_device_param("cpu"), _device_param("cuda")])
def device(request):
    dev = torch.device(request.param)
    if dev.type == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    reasons = backends.not_supported_reasons("triton", dev, F64, op="rasterize")
    if reasons:
        pytest.skip("triton backend unavailable: " + "; ".join(reasons))
    return dev


def face_ids(verts, faces, h, w, cull=False):
    from voxrender.triton.rasterize import rasterize_face_ids_triton

    return rasterize_face_ids_triton(verts, faces, h, w, cull)


def assert_face_ids_exact(verts, faces, h, w, cull, device):
    """Triton face_id == the reference's (on the CPU) == the C++ CPU op's, pixel for pixel."""
    fid = face_ids(verts.to(device), faces.to(device), h, w, cull).cpu()
    ref = rasterize_reference(verts, faces, h, w, cull_backfaces=cull).face_id
    assert fid.dtype == torch.int32 and fid.shape == (verts.shape[0], h, w)
    diff = fid != ref
    assert not diff.any(), f"{int(diff.sum())} of {diff.numel()} pixels differ, first at {diff.nonzero()[0].tolist()}"
    if not backends.not_supported_reasons("cpu", torch.device("cpu"), verts.dtype, op="rasterize"):
        cpp, _ = torch.ops.voxrender.rasterize_face_ids(verts, faces, h, w, cull)
        assert torch.equal(fid, cpp)
    return fid


def tol(dtype):
    return dict(rtol=1e-12, atol=1e-12) if dtype == F64 else dict(rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------------
# Visibility: exactly the reference's face ids.


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("cull", [False, True], ids=["all", "cull"])
def test_random_camera_scenes(device, dtype, cull):
    # Random triangles in front of, around and behind a perspective camera: some cross w = 0 (the float
    # homogeneous path, whole-image boxes), the rest take the exact fixed-point path. Item 1 has padding.
    crossings = 0
    for seed, (h, w) in ((0, (17, 23)), (1, (9, 35))):
        verts, faces = camera_batch(seed, 12, h, w, dtype, pad=3)
        tri_w = face_vertices(verts, faces)[..., 3]
        crossings += int((((tri_w > 0).sum(-1) % 3 != 0) & (faces >= 0).all(-1)).sum())
        fid = assert_face_ids_exact(verts, faces, h, w, cull, device)
        assert (fid >= 0).sum() > 20
    assert crossings > 0, "the scenes should include triangles crossing w = 0"


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_depth_map_mesh_is_watertight(device, dtype):
    # A grid mesh over a smooth depth map, re-rendered at its own resolution: every vertex sits exactly on
    # a pixel centre, and the exact fixed-point edge functions cover each pixel exactly once (no holes).
    # Also at a non-square size that is not a multiple of the tile, with culling.
    verts, faces = smooth_depth_mesh(0, 12, dtype)
    fid = assert_face_ids_exact(verts, faces, 12, 12, False, device)
    assert bool((fid[:, 1:-1, 1:-1] >= 0).all())
    fid = assert_face_ids_exact(verts, faces, 11, 19, True, device)
    assert bool((fid[:, 1:-1, 1:-1] >= 0).all())


def test_fill_rule_shared_edges_and_vertices(device):
    # A lattice of vertices on pixel centres (each scaled by w in {1, 2, 4}); every face rendered alone
    # (one batch item per face): inside the hull each pixel centre is covered by exactly one face.
    n, h, w = 4, 11, 17
    g = torch.Generator().manual_seed(0)
    i, j = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    px = -1 + (2 * (3 + 2 * j) + 1) / w  # pixel-centre columns 3, 5, 7, 9
    py = -1 + (2 * (1 + 2 * i) + 1) / h  # rows 1, 3, 5, 7
    v = torch.stack([px, py, torch.zeros_like(px), torch.ones_like(px)], -1).reshape(-1, 4).to(F64)
    v = v * (2.0 ** torch.randint(0, 3, (n * n, 1), generator=g)).to(F64)
    faces = vr.grid_mesh_faces(n, n)
    n_faces = faces.shape[0]
    fid = assert_face_ids_exact(v[None].expand(n_faces, -1, -1), faces[:, None], h, w, False, device)
    count = (fid >= 0).sum(0)
    assert torch.all(count <= 1)
    assert torch.all(count[2:7, 4:9] == 1)
    assert_face_ids_exact(v[None], faces[None], h, w, True, device)


def test_depth_ties_go_to_the_lower_index(device):
    verts, faces = camera_batch(1, 6, 12, 20, F64, B=1)
    dup = torch.cat([faces, faces.flip(1)], 1)  # each face twice, in the other order
    fid = assert_face_ids_exact(verts, dup, 12, 20, False, device)
    hit = fid >= 0
    assert hit.any() and torch.all(fid[hit] < 6)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_guard_band_and_w_crossing_faces(device, dtype):
    big = torch.tensor([[[-0.5, -0.5, 0.0, 1.0], [3e6, -0.4, 0.1, 1.0], [0.2, 0.7, 0.2, 1.0],
                         [-0.9, 0.2, 0.3, 1.0], [0.1, -0.9, 0.2, 1.0], [0.8, 0.9, -0.1, -0.5]]], dtype=dtype)
    faces = torch.tensor([[[0, 1, 2], [3, 4, 2], [3, 4, 5]]])
    fid = assert_face_ids_exact(big, faces, 13, 18, False, device)
    assert set(fid.unique().tolist()) >= {0, 1}


def test_padding_empty_meshes_and_int32_faces(device):
    verts, faces = camera_batch(3, 10, 10, 19, F64)
    fid = face_ids(verts.to(device), faces.to(device), 10, 19)
    # int32 faces and non-contiguous verts: the same ids.
    nc = verts.transpose(0, 1).contiguous().transpose(0, 1)
    assert torch.equal(face_ids(nc.to(device), faces.int().to(device), 10, 19), fid)
    # Padding rows are skipped: the same ids as the mesh without them, renumbered.
    keep = torch.arange(10) % 3 != 0
    padded = faces.clone()
    padded[:, ~keep] = -1
    fid_p = face_ids(verts.to(device), padded.to(device), 10, 19).cpu()
    fid_k = face_ids(verts.to(device), faces[:, keep].to(device), 10, 19).cpu()
    idx = torch.nonzero(keep)[:, 0].to(torch.int32)
    assert torch.equal(fid_p, torch.where(fid_k >= 0, idx[fid_k.clamp(min=0).long()], fid_k))
    # All padding, zero faces, zero vertices, a batch of zero: background.
    for v, f in ((verts, torch.full_like(faces, -1)), (verts, faces[:, :0]), (verts[:, :0], faces[:, :0]),
                 (verts[:, :0], torch.full((2, 4, 3), -1)), (verts[:0], faces[:0])):
        out = face_ids(v.to(device), f.to(device), 5, 6)
        assert out.shape == (v.shape[0], 5, 6) and torch.all(out == -1)


def test_bad_face_indices_raise(device):
    verts, faces = camera_batch(0, 4, 8, 8, F32)
    for bad_value in (verts.shape[1], -2):
        bad = faces.clone()
        bad[1, 2, 0] = bad_value
        with pytest.raises(ValueError, match="faces"):
            face_ids(verts.to(device), bad.to(device), 8, 8)
    with pytest.raises(TypeError, match="faces"):
        face_ids(verts.to(device), faces.float().to(device), 8, 8)
    with pytest.raises(ValueError, match="image_size"):
        face_ids(verts.to(device), faces.to(device), 0, 8)


# ---------------------------------------------------------------------------------------------------
# The public ops with backend="triton".


def _leaf(x, device):
    return x.detach().to(device).requires_grad_()


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_rasterize_and_interpolate_match_the_torch_backend(device, dtype):
    verts, faces = camera_batch(5, 10, 9, 21, dtype, pad=2)
    attr = torch.randn(2, verts.shape[1], 3, generator=torch.Generator().manual_seed(1), dtype=dtype)
    results = []
    for backend, dev in (("triton", device), ("torch", torch.device("cpu"))):
        v, a = _leaf(verts, dev), _leaf(attr, dev)
        frags = vr.rasterize(v, faces.to(dev), (9, 21), backend=backend)
        out = vr.interpolate(a, frags, faces.to(dev), backend=backend)
        g = torch.linspace(-1, 1, out.numel(), dtype=dtype).reshape(out.shape).to(dev)
        loss = (out * g).sum() + (frags.depth * frags.depth).sum() + frags.bary[..., 1].sum()
        loss.backward()
        results.append([frags.face_id, frags.bary, frags.depth, out, v.grad, a.grad])
    names = ["face_id", "bary", "depth", "interpolate", "grad verts", "grad attr"]
    assert (results[1][0] >= 0).sum() > 20
    for name, x, y in zip(names, *results):
        torch.testing.assert_close(x.detach().cpu(), y.detach(), **tol(dtype), msg=lambda m: f"{name}: {m}")
    assert torch.equal(results[0][0].cpu(), results[1][0])


def _random_frags(seed, dtype, device, shape=(2, 7, 10), n_faces=5, n_verts=6):
    g = torch.Generator().manual_seed(seed)
    face_id = torch.randint(-1, n_faces, shape, generator=g).to(torch.int32)
    bary = torch.rand(*shape, 3, generator=g, dtype=dtype)
    bary = torch.where((face_id >= 0)[..., None], bary / bary.sum(-1, keepdim=True), 0)
    faces = torch.randint(0, n_verts, (shape[0], n_faces, 3), generator=g)
    return face_id, bary, faces


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("shared", [False, True], ids=["per_item", "shared"])
@pytest.mark.parametrize("channels", [3, 21])
def test_interpolate_forward_backward(device, dtype, shared, channels):
    # 21 channels: two channel chunks (16 + 5); 70 pixels: one partly masked pixel block.
    from voxrender.triton.interpolate import interpolate_triton

    face_id, bary, faces = _random_frags(channels + shared, dtype, device)
    g = torch.Generator().manual_seed(2)
    attr = torch.randn(6, channels, generator=g, dtype=dtype) if shared else \
        torch.randn(2, channels, 6, generator=g, dtype=dtype).transpose(1, 2)  # non-contiguous
    grad_out = torch.randn(*face_id.shape, channels, generator=g, dtype=dtype)
    grad_out[..., 0] = 0  # zero upstream gradients skip their atomics
    results = []
    for dev in (device, torch.device("cpu")):
        a, q = _leaf(attr, dev), _leaf(bary, dev)
        a_b = a[None].expand(2, -1, -1) if shared else a
        if dev == device:
            out = interpolate_triton(a_b, face_id.to(dev), q, faces.to(dev))
        else:
            out = interpolate_reference(a_b, Fragments(face_id, q, None), faces)
        (out * grad_out.to(dev)).sum().backward()
        results.append([out, a.grad, q.grad])
    for name, x, y in zip(["out", "grad attr", "grad bary"], *results):
        torch.testing.assert_close(x.detach().cpu(), y, **tol(dtype), msg=lambda m: f"{name}: {m}")
    assert torch.equal(results[0][0].detach().cpu(), results[1][0].detach()), "the forward rounds as the reference"
    assert torch.all(results[0][0].detach().cpu()[face_id < 0] == 0)


def test_interpolate_out_of_range_face_ids_read_as_background(device):
    from voxrender.triton.interpolate import interpolate_triton

    face_id, bary, faces = _random_frags(3, F64, device, shape=(2, 3, 5))
    face_id[0, 1] = faces.shape[1]  # one past the end: never read
    attr = torch.randn(2, 6, 2, dtype=F64)
    out = interpolate_triton(attr.to(device), face_id.to(device), bary.to(device), faces.to(device)).cpu()
    assert torch.all(out[0, 1] == 0)
    ok = (face_id >= 0) & (face_id < faces.shape[1])
    ref = interpolate_reference(attr, Fragments(face_id.clamp(max=faces.shape[1] - 1), bary, None), faces)
    torch.testing.assert_close(out[ok], ref[ok], **tol(F64))


def test_deterministic_mode_refuses_the_atomic_backward(device):
    verts, faces = camera_batch(2, 6, 8, 9, F64, B=1)
    v = _leaf(verts, device)
    attr = torch.rand(verts.shape[1], 2, dtype=F64, device=device, requires_grad=True)
    try:
        torch.use_deterministic_algorithms(True)
        frags = vr.rasterize(v, faces.to(device), (8, 9), backend="triton")  # the forward has no atomics
        out = vr.interpolate(attr, frags, faces.to(device), backend="triton")
        with pytest.raises(RuntimeError, match="deterministic"):
            out.sum().backward()
        # An attribute table that needs no gradient: the barycentric gradient alone needs no atomics.
        out = vr.interpolate(attr.detach(), frags, faces.to(device), backend="triton")
        out.sum().backward()
        assert v.grad.abs().sum() > 0
    finally:
        torch.use_deterministic_algorithms(False)


# ---------------------------------------------------------------------------------------------------
# Custom-op registration: opcheck and torch.compile.


def test_opcheck_rasterize(device):
    from voxrender.triton.rasterize import rasterize_face_ids_triton_op

    verts, faces = camera_batch(4, 5, 6, 7, F64, pad=1)
    for f in (faces, faces.int()):
        torch.library.opcheck(rasterize_face_ids_triton_op, (verts.to(device), f.to(device), 6, 7, False))


def test_opcheck_interpolate(device):
    from voxrender.triton.interpolate import interpolate_backward_triton, interpolate_forward_triton

    face_id, bary, faces = _random_frags(7, F64, device, shape=(2, 3, 5))
    attr = torch.randn(2, 6, 2, dtype=F64)
    args = (attr.to(device).requires_grad_(), face_id.to(device), bary.to(device).requires_grad_(), faces.to(device))
    torch.library.opcheck(interpolate_forward_triton, args)
    grad_out = torch.randn(2, 3, 5, 2, dtype=F64).to(device)
    torch.library.opcheck(interpolate_backward_triton, (grad_out, *[a.detach() for a in args], True, True))


def test_torch_compile_fullgraph(device):
    verts, faces = camera_batch(6, 6, 8, 11, F64, B=1)
    attr = torch.rand(verts.shape[1], 2, dtype=F64)
    faces = faces.to(device)

    def fn(v, a):
        frags = vr.rasterize(v, faces, (8, 11), backend="triton")
        return vr.interpolate(a, frags, faces, backend="triton") + frags.depth[..., None]

    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    v1, a1, v2, a2 = _leaf(verts, device), _leaf(attr, device), _leaf(verts, device), _leaf(attr, device)
    out = compiled(v1, a1)
    expected = fn(v2, a2)
    torch.testing.assert_close(out, expected)
    out.square().sum().backward()
    expected.square().sum().backward()
    torch.testing.assert_close(v1.grad, v2.grad)
    torch.testing.assert_close(a1.grad, a2.grad)
