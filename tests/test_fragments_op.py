"""The fused fragments ops (torch.ops.voxrender.fragments_forward / fragments_backward: barycentrics and
depth of the visible faces, and their analytic gradient) against the oracle
voxrender.reference.rasterize.fragments_from_face_ids (differentiated by autograd), plus gradcheck, opcheck,
torch.compile through vr.rasterize, determinism of the CPU backward, bad inputs, the CUDA kernels under the
CPU emulation of tests/cuda_emu.py, and (marked ``gpu``) the real CUDA op.

Visibility is held fixed: face_id comes from the C++ visibility pass (or is made up) and is an input.
"""

import pytest
import torch

import voxrender as vr
import voxrender.backends
from test_rasterize_cpu import camera_batch, smooth_depth_mesh
from voxrender.reference.rasterize import fragments_from_face_ids
from vr_testing import needs_cuda

voxrender.backends.extension_status()
HAVE_OP = hasattr(torch.ops.voxrender, "fragments_forward") and hasattr(torch.ops.voxrender, "fragments_backward")
pytestmark = pytest.mark.skipif(not HAVE_OP, reason="torch.ops.voxrender.fragments_forward is not built")

F32, F64 = torch.float32, torch.float64
# Forward: the op repeats the oracle's rounded operations one by one (equal bit for bit in practice; a few
# ulps allowed for other torch builds' reduction kernels). bary is in [0, 1] and depth in [-1, 1].
FWD_TOL = {F32: dict(rtol=1e-6, atol=1e-6), F64: dict(rtol=1e-14, atol=1e-14)}
# Backward: the analytic formula and autograd's chain round differently; per vertex the sums over pixels
# cancel, so the tolerance is relative to the gradient's magnitude (its largest entry in the item).
GRAD_RTOL = {F32: 1e-5, F64: 1e-12}


def fused(verts, faces, face_id):
    return torch.ops.voxrender.fragments_forward(verts, faces, face_id)


def visibility(verts, faces, h, w, cull=False):
    face_id, _ = torch.ops.voxrender.rasterize_face_ids(verts.detach(), faces, h, w, cull)
    return face_id


def weights(shape_bary, shape_depth, dtype, seed, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape_bary, generator=g, dtype=dtype).to(device),
            torch.randn(shape_depth, generator=g, dtype=dtype).to(device))


def grads_both(verts, faces, face_id, seed=0, use_bary=True, use_depth=True):
    """(bary, depth, grad_verts) of the fused op and of the oracle, for the loss
    sum(wb * bary) + sum(wd * depth) with random weights."""
    out = []
    for fn in (lambda v: fused(v, faces, face_id), lambda v: tuple(fragments_from_face_ids(v, faces, face_id)[1:])):
        v = verts.detach().clone().requires_grad_()
        bary, depth = fn(v)
        wb, wd = weights(bary.shape, depth.shape, verts.dtype, seed, verts.device)
        loss = 0
        if use_bary:
            loss = loss + (bary * wb).sum()
        if use_depth:
            loss = loss + (depth * wd).sum()
        loss.backward()
        out.append((bary.detach(), depth.detach(), v.grad))
    return out


def assert_grad_close(g, g_ref, dtype):
    """Per batch item: |g - g_ref| <= rtol (|g_ref| + max |g_ref|)."""
    assert g.shape == g_ref.shape
    for b in range(g.shape[0]):
        scale = g_ref[b].abs().max().item()
        torch.testing.assert_close(g[b], g_ref[b], rtol=GRAD_RTOL[dtype], atol=GRAD_RTOL[dtype] * scale)


def assert_matches_oracle(verts, faces, face_id, seed=0, **kw):
    (b, d, g), (b_r, d_r, g_r) = grads_both(verts, faces, face_id, seed, **kw)
    assert b.shape == b_r.shape and d.shape == d_r.shape and b.dtype == verts.dtype
    torch.testing.assert_close(b, b_r, **FWD_TOL[verts.dtype])
    torch.testing.assert_close(d, d_r, **FWD_TOL[verts.dtype])
    bg = face_id < 0
    assert torch.all(b[bg] == 0) and torch.all(d[bg] == 1)
    assert_grad_close(g, g_r, verts.dtype)
    return g, g_r


def crossing_pixels(verts, faces, face_id):
    """Pixels whose visible face crosses w = 0 (some corner w <= 0)."""
    B = verts.shape[0]
    hit = face_id >= 0
    rows = faces.long().gather(1, face_id.clamp(min=0).long().reshape(B, -1, 1).expand(-1, -1, 3))
    w = verts[..., 3].gather(1, rows.clamp(min=0).reshape(B, -1)).reshape(B, *face_id.shape[1:], 3)
    return hit & (w <= 0).any(-1)


# ------------------------------------------------------------------------------------ against the oracle
@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("faces_dtype", [torch.int32, torch.int64])
def test_random_camera_scenes_match_oracle(dtype, faces_dtype):
    """Random camera-space triangle soups (some cross w = 0), items b > 0 with padding rows."""
    crossing = background = 0
    for seed in range(5):
        h, w = (17, 23) if seed % 2 else (40, 33)
        verts, faces = camera_batch(seed, 30, h, w, dtype, B=2, pad=5)
        faces = faces.to(faces_dtype)
        face_id = visibility(verts, faces, h, w)
        assert (face_id >= 0).any()
        crossing += int(crossing_pixels(verts, faces, face_id).sum())
        background += int((face_id < 0).sum())
        g, _ = assert_matches_oracle(verts, faces, face_id, seed)
        assert g.abs().sum() > 0
    assert crossing > 0 and background > 0  # w-crossing faces and background are seen somewhere


@pytest.mark.parametrize("dtype", [F32, F64])
def test_shared_expanded_faces_and_bary_or_depth_alone(dtype):
    verts, faces = camera_batch(11, 40, 29, 31, dtype, B=3)
    shared = faces[0][None].expand(3, -1, -1)  # an expand()ed (F, 3): batch stride 0
    assert shared.stride(0) == 0
    face_id = visibility(verts, shared, 29, 31)
    assert_matches_oracle(verts, shared, face_id, seed=1)
    assert_matches_oracle(verts, shared.int(), face_id, seed=2, use_depth=False)  # grad_depth None
    assert_matches_oracle(verts, shared, face_id, seed=3, use_bary=False)  # grad_bary None
    # The same as the contiguous copy, bit for bit.
    (b1, d1, g1), _ = grads_both(verts, shared, face_id, seed=4)
    (b2, d2, g2), _ = grads_both(verts, shared.contiguous(), face_id, seed=4)
    assert torch.equal(b1, b2) and torch.equal(d1, d2) and torch.equal(g1, g2)


@pytest.mark.parametrize("dtype", [F32, F64])
def test_dense_grid_mesh_large_image(dtype):
    """A smooth depth-map mesh at 256 x 192: many pixels per vertex, so the CPU backward splits each item
    into several pixel chunks with their own buffers (and the reduction in chunk order is exercised)."""
    verts, faces = smooth_depth_mesh(3, 40, dtype, B=2)
    face_id = visibility(verts, faces, 256, 192)
    assert (face_id >= 0).float().mean() > 0.5
    assert_matches_oracle(verts, faces, face_id, seed=5)


def test_w_crossing_and_guard_band_faces():
    """Large triangles crossing w = 0 and a vertex far beyond the guard band (the float path)."""
    v = torch.tensor([[[-0.5, -0.5, 0.0, 1.0], [3e6, -0.4, 0.1, 1.0], [0.2, 0.7, 0.2, 1.0],
                       [-0.9, 0.2, 0.3, 1.0], [0.1, -0.9, 0.2, 1.0], [0.8, 0.9, -0.1, -0.5],
                       [-2.0, 1.5, 0.5, 1.5], [1.2, -0.3, -0.2, -0.8], [0.3, 2.5, 1.0, 2.0]]], dtype=F64)
    faces = torch.tensor([[[0, 1, 2], [3, 4, 5], [6, 7, 8]]])
    for dtype in (F32, F64):
        verts = v.to(dtype)
        face_id = visibility(verts, faces, 31, 29)
        assert crossing_pixels(verts, faces, face_id).sum() > 10
        assert_matches_oracle(verts, faces, face_id, seed=6)


def test_background_padding_rows_and_unused_vertices():
    verts, faces = camera_batch(2, 20, 19, 21, F64, B=2, pad=6)
    face_id = visibility(verts, faces, 19, 21)
    bg = face_id < 0
    assert bg.any()
    v = verts.clone().requires_grad_()
    bary, depth = fused(v, faces, face_id)
    assert torch.all(bary[bg] == 0) and torch.all(depth[bg] == 1)
    # Weights on the background only: no gradient at all.
    (bary * bg[..., None]).sum().add((depth * bg).sum()).backward()
    assert torch.all(v.grad == 0)
    # Vertices no visible face uses get no gradient.
    g = assert_matches_oracle(verts, faces, face_id, seed=7)[0]
    for b in range(2):
        used = torch.zeros(verts.shape[1], dtype=torch.bool)
        used[faces[b][face_id[b][face_id[b] >= 0].long()].reshape(-1)] = True
        assert torch.all(g[b][~used] == 0) and g[b][used].abs().sum() > 0
    # A face id pointing at a padding row (the visibility pass never gives one) reads as background.
    pad_row = int(torch.nonzero((faces[1] < 0).all(-1))[0])
    fid = face_id.clone()
    fid[1, :3, :3] = pad_row
    bary, depth = fused(verts, faces, fid)
    assert torch.all(bary[1, :3, :3] == 0) and torch.all(depth[1, :3, :3] == 1)


def test_noncontiguous_verts_and_faces():
    verts, faces = camera_batch(4, 25, 15, 18, F64, B=2)
    face_id = visibility(verts, faces, 15, 18)
    b, d = fused(verts, faces, face_id)
    v_nc = verts.transpose(0, 1).contiguous().transpose(0, 1)
    f_nc = faces.transpose(1, 2).contiguous().transpose(1, 2)
    assert not v_nc.is_contiguous() and not f_nc.is_contiguous()
    b2, d2 = fused(v_nc, f_nc, face_id)
    assert torch.equal(b, b2) and torch.equal(d, d2)
    g = torch.ops.voxrender.fragments_backward(torch.ones_like(b), torch.ones_like(d), verts, faces, face_id)
    g2 = torch.ops.voxrender.fragments_backward(torch.ones_like(b), torch.ones_like(d), v_nc, f_nc, face_id)
    assert g.is_contiguous() and torch.equal(g, g2)


def test_backward_op_with_none_grads():
    verts, faces = camera_batch(5, 20, 13, 17, F64, B=2)
    face_id = visibility(verts, faces, 13, 17)
    gb, gd = weights((2, 13, 17, 3), (2, 13, 17), F64, 8)
    bwd = torch.ops.voxrender.fragments_backward
    both = bwd(gb, gd, verts, faces, face_id)
    only_b, only_d = bwd(gb, None, verts, faces, face_id), bwd(None, gd, verts, faces, face_id)
    torch.testing.assert_close(both, only_b + only_d, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(only_b, bwd(gb, torch.zeros_like(gd), verts, faces, face_id), rtol=0, atol=0)
    assert torch.all(bwd(None, None, verts, faces, face_id) == 0)


# --------------------------------------------------------------------------------------- vr.rasterize
@pytest.mark.parametrize("dtype", [F32, F64])
def test_rasterize_cpu_uses_the_fused_op_and_matches_torch_backend(dtype):
    verts, faces = camera_batch(6, 30, 21, 26, dtype, B=2, pad=4)
    res = {}
    for backend in ("cpu", "torch"):
        v = verts.clone().requires_grad_()
        frags = vr.rasterize(v, faces, (21, 26), backend=backend)
        if backend == "cpu":
            assert "fragments_forward" in type(frags.bary.grad_fn).__name__
        wb, wd = weights(frags.bary.shape, frags.depth.shape, dtype, 9)
        ((frags.bary * wb).sum() + (frags.depth * wd).sum()).backward()
        res[backend] = (frags, v.grad)
    (f, g), (f_r, g_r) = res["cpu"], res["torch"]
    same = f.face_id == f_r.face_id
    assert same.all() if dtype == F64 else same.float().mean() > 0.995
    if same.all():
        torch.testing.assert_close(f.bary, f_r.bary, **FWD_TOL[dtype])
        torch.testing.assert_close(f.depth, f_r.depth, **FWD_TOL[dtype])
        assert_grad_close(g, g_r, dtype)


def test_rasterize_zero_faces_and_vertices_is_background_connected_to_verts():
    for nv in (5, 0):
        v = torch.randn(2, nv, 4, dtype=F64, requires_grad=True)
        frags = vr.rasterize(v, torch.zeros(0, 3, dtype=torch.int64), (6, 7), backend="cpu")
        assert torch.all(frags.face_id == -1) and torch.all(frags.bary == 0) and torch.all(frags.depth == 1)
        assert frags.bary.requires_grad and frags.depth.requires_grad
        (frags.bary.sum() + frags.depth.sum()).backward()
        assert v.grad is not None and v.grad.shape == v.shape and torch.all(v.grad == 0)


def test_compile_through_rasterize():
    verts, faces = camera_batch(7, 25, 14, 19, F32, B=2, pad=3)
    wb, wd = weights((2, 14, 19, 3), (2, 14, 19), F32, 10)

    def fn(v):
        frags = vr.rasterize(v, faces, (14, 19), backend="cpu")
        return (frags.bary * wb).sum() + (frags.depth * wd).sum(), frags.depth

    v1, v2 = verts.clone().requires_grad_(), verts.clone().requires_grad_()
    loss, depth = torch.compile(fn, fullgraph=True, backend="aot_eager")(v1)
    loss_e, depth_e = fn(v2)
    torch.testing.assert_close(depth, depth_e, rtol=0, atol=0)
    torch.testing.assert_close(loss, loss_e)
    loss.backward()
    loss_e.backward()
    torch.testing.assert_close(v1.grad, v2.grad, rtol=0, atol=0)


# ------------------------------------------------------------------------------ gradcheck and opcheck
def small_scene(seed=0, B=2, h=9, w=11):
    verts, faces = camera_batch(seed, 6, h, w, F64, B=B, pad=1)
    face_id = visibility(verts, faces, h, w)
    assert (face_id >= 0).sum() > 10
    return verts, faces, face_id


def test_gradcheck():
    verts, faces, face_id = small_scene(1)
    v = verts.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda x: fused(x, faces, face_id), (v,), eps=1e-7, atol=1e-7, rtol=1e-6)
    assert torch.autograd.gradcheck(lambda x: fused(x, faces.int(), face_id)[1], (v,), eps=1e-7, atol=1e-7,
                                    rtol=1e-6)


def test_opcheck():
    verts, faces, face_id = small_scene(2)
    v = verts.clone().requires_grad_()
    torch.library.opcheck(torch.ops.voxrender.fragments_forward.default, (v, faces, face_id))
    torch.library.opcheck(torch.ops.voxrender.fragments_forward.default,
                          (v.float().detach().requires_grad_(), faces[0][None].expand(2, -1, -1).int(), face_id))
    gb, gd = weights((2, 9, 11, 3), (2, 9, 11), F64, 11)
    bwd = torch.ops.voxrender.fragments_backward.default
    for args in ((gb, gd), (None, gd), (gb, None)):
        torch.library.opcheck(bwd, (*args, verts, faces, face_id))


# ------------------------------------------------------------------------------------- determinism
def test_cpu_backward_bitwise_deterministic_across_runs_and_threads():
    """Each item's pixels are split into chunks fixed by the shapes (not the thread count) and reduced in
    chunk order: bitwise repeatable with 1, 2 or more threads, for B = 1 (chunked) and B = 3."""
    verts, faces = smooth_depth_mesh(1, 30, F32, B=3)
    threads = torch.get_num_threads()
    for B in (1, 3):
        v, f = verts[:B], faces[:B]
        face_id = visibility(v, f, 300, 280)
        gb, gd = weights((B, 300, 280, 3), (B, 300, 280), F32, 12)
        results = []
        try:
            for n in (1, 2, 1, 3, 4, threads):
                torch.set_num_threads(n)
                for _ in range(2):
                    results.append(torch.ops.voxrender.fragments_backward(gb, gd, v, f, face_id))
        finally:
            torch.set_num_threads(threads)
        assert results[0].abs().sum() > 0
        for r in results[1:]:
            assert torch.equal(r, results[0])
        torch.use_deterministic_algorithms(True)  # the cpu backward has no atomics: allowed
        try:
            assert torch.equal(torch.ops.voxrender.fragments_backward(gb, gd, v, f, face_id), results[0])
        finally:
            torch.use_deterministic_algorithms(False)


# ---------------------------------------------------------------------------------------- bad inputs
def test_bad_inputs():
    verts, faces, face_id = small_scene(3)
    fwd, bwd = torch.ops.voxrender.fragments_forward, torch.ops.voxrender.fragments_backward
    with pytest.raises(ValueError, match="verts"):
        fwd(verts[..., :3], faces, face_id)
    with pytest.raises(TypeError, match="verts"):
        fwd(verts.long(), faces, face_id)
    with pytest.raises(TypeError, match="faces"):
        fwd(verts, faces.float(), face_id)
    with pytest.raises(ValueError, match="faces"):
        fwd(verts, faces[:1], face_id)
    with pytest.raises(TypeError, match="face_id"):
        fwd(verts, faces, face_id.long())
    with pytest.raises(ValueError, match="face_id"):
        fwd(verts, faces, face_id[:1])
    bad = face_id.clone()
    bad[0, 0, 0] = faces.shape[1]
    with pytest.raises(ValueError, match="face_id"):
        fwd(verts, faces, bad)
    bad[0, 0, 0] = -2
    with pytest.raises(ValueError, match="face_id"):
        fwd(verts, faces, bad)
    bad_faces = faces.clone()
    bad_faces[:, :, 0] = verts.shape[1]
    with pytest.raises(ValueError, match="faces"):
        fwd(verts, bad_faces, face_id)
    gb, gd = weights((2, 9, 11, 3), (2, 9, 11), F64, 13)
    with pytest.raises(ValueError, match="grad_bary"):
        bwd(gb[..., :2], gd, verts, faces, face_id)
    with pytest.raises(TypeError, match="grad_depth"):
        bwd(gb, gd.float(), verts, faces, face_id)
    with pytest.raises(ValueError, match="faces"):
        bwd(gb, gd, verts, bad_faces, face_id)


# ------------------------------------------------------------------------ CUDA kernels under emulation
def emu_library():
    """csrc/kernels/fragments.cu compiled for the CPU under the emulation of tests/cuda_emu.py (its launch
    rewrite and runtime shim), with tests/fragments_emu_harness.cpp as the entry point. Built once per
    source version in the temp folder."""
    import ctypes
    import os

    cuda_emu = pytest.importorskip("cuda_emu", reason="tests/cuda_emu.py (the CUDA-kernel emulation) is not present")
    why = cuda_emu.unavailable_reason()
    if why:
        pytest.skip(why)
    harness = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fragments_emu_harness.cpp")
    lib = cuda_emu.build(["fragments"], [harness], "fragments")
    i64, i32, ptr = ctypes.c_int64, ctypes.c_int, ctypes.c_void_p
    lib.emu_fragments.argtypes = [i32, i32, i64, i64, i64, i64, i64] + [ptr] * 10 + [i32]
    lib.emu_fragments.restype = i32
    return lib


def emu_fragments(verts, faces, face_id, grads=None, multiprocessors=1):
    """The CUDA kernels (emulated) on CPU tensors: (bary, depth), or grad_verts for grads (gb, gd)."""
    lib = emu_library()
    face_id = face_id.contiguous()
    B, H, W = face_id.shape
    vs = torch.tensor(verts.stride(), dtype=torch.int64)
    fs = torch.tensor(faces.stride(), dtype=torch.int64)
    head = (int(verts.dtype == F64), int(faces.dtype == torch.int64), B, verts.shape[1], faces.shape[1], H, W,
            verts.data_ptr(), vs.data_ptr(), faces.data_ptr() if faces.numel() else None, fs.data_ptr(),
            face_id.data_ptr())
    if grads is None:
        bary = torch.empty(B, H, W, 3, dtype=verts.dtype)
        depth = torch.empty(B, H, W, dtype=verts.dtype)
        assert lib.emu_fragments(*head, None, None, bary.data_ptr(), depth.data_ptr(), None, multiprocessors) == 0
        return bary, depth
    gb, gd = (g.contiguous() if g is not None else None for g in grads)
    gv = torch.zeros(B, verts.shape[1], 4, dtype=verts.dtype)
    assert lib.emu_fragments(*head, gb.data_ptr() if gb is not None else None,
                             gd.data_ptr() if gd is not None else None, None, None, gv.data_ptr(), multiprocessors) == 0
    return gv


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("faces_dtype", [torch.int32, torch.int64])
def test_cuda_kernels_emulated_match_cpu(dtype, faces_dtype):
    """The CUDA kernels' source on the CPU under emulation: the forward equals the CPU op's bit for bit (the
    same rounded operations per pixel), the vertex gradient (atomics) up to summation order. Checks the
    grid-stride loop, the pixel index math and the strided (expanded) faces."""
    verts, faces = camera_batch(12, 30, 23, 45, dtype, B=2, pad=4)
    faces = faces.to(faces_dtype)
    shared = faces[0][None].expand(2, -1, -1)
    for f in (faces, shared):
        face_id = visibility(verts, f, 23, 45)
        bary, depth = emu_fragments(verts, f, face_id, multiprocessors=2)
        b_ref, d_ref = fused(verts, f, face_id)
        assert torch.equal(bary, b_ref) and torch.equal(depth, d_ref)
        gb, gd = weights(bary.shape, depth.shape, dtype, 14)
        for grads in ((gb, gd), (None, gd), (gb, None)):
            gv = emu_fragments(verts, f, face_id, grads)
            gv_ref = torch.ops.voxrender.fragments_backward(*grads, verts, f, face_id)
            assert gv_ref.abs().sum() > 0
            assert_grad_close(gv, gv_ref, dtype)
    # Bad face ids and vertex indices read as background (no out-of-bounds read, no error on the device).
    face_id = visibility(verts, faces, 23, 45)
    bad = face_id.clone()
    bad[0, :2] = 10_000
    bary, depth = emu_fragments(verts, faces, bad)
    assert torch.all(bary[0, :2] == 0) and torch.all(depth[0, :2] == 1)


# ------------------------------------------------------------------------------------------------ GPU
def cuda_op_or_skip():
    from vr_testing import backend_or_skip

    backend_or_skip("cuda", "cuda")


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("dtype", [F32, F64])
def test_cuda_matches_cpu(dtype):
    cuda_op_or_skip()
    for seed in range(3):
        verts, faces = camera_batch(20 + seed, 200, 120, 150, dtype, B=2, pad=10)
        face_id = visibility(verts, faces, 120, 150)
        for f in (faces, faces[0][None].expand(2, -1, -1).int()):
            b, d = fused(verts, f, face_id)
            b_c, d_c = fused(verts.cuda(), f.cuda(), face_id.cuda())
            torch.testing.assert_close(b_c.cpu(), b, rtol=0, atol=0)  # same rounded operations, no FMA
            torch.testing.assert_close(d_c.cpu(), d, rtol=0, atol=0)
            gb, gd = weights(b.shape, d.shape, dtype, seed)
            for grads in ((gb, gd), (None, gd), (gb, None)):
                g = torch.ops.voxrender.fragments_backward(*grads, verts, f, face_id)
                g_c = torch.ops.voxrender.fragments_backward(*(x.cuda() if x is not None else None for x in grads),
                                                             verts.cuda(), f.cuda(), face_id.cuda())
                assert_grad_close(g_c.cpu(), g, dtype)


@pytest.mark.gpu
@needs_cuda
def test_cuda_rasterize_backward_and_deterministic_mode():
    cuda_op_or_skip()
    verts, faces = camera_batch(30, 100, 64, 80, F64, B=2, pad=5)
    res = {}
    for backend, device in (("cpu", "cpu"), ("cuda", "cuda")):
        v = verts.to(device).requires_grad_()
        frags = vr.rasterize(v, faces.to(device), (64, 80), backend=backend)
        assert "fragments_forward" in type(frags.bary.grad_fn).__name__
        wb, wd = weights(frags.bary.shape, frags.depth.shape, F64, 15, device)
        ((frags.bary * wb).sum() + (frags.depth * wd).sum()).backward()
        res[backend] = v.grad.cpu()
    assert_grad_close(res["cuda"], res["cpu"], F64)
    # The op's atomic backward alerts under deterministic mode ...
    v = verts.cuda().requires_grad_()
    frags = vr.rasterize(v, faces.cuda(), (64, 80), backend="cuda")
    try:
        torch.use_deterministic_algorithms(True)
        with pytest.raises(RuntimeError, match="deterministic"):
            frags.depth.sum().backward()
        # ... and vr.rasterize then selects the deterministic torch formula (fragments_from_face_ids).
        v = verts.cuda().requires_grad_()
        frags = vr.rasterize(v, faces.cuda(), (64, 80), backend="cuda")
        assert "fragments_forward" not in type(frags.bary.grad_fn).__name__
        (frags.depth.sum() + frags.bary.sum()).backward()
        assert v.grad.abs().sum() > 0
    finally:
        torch.use_deterministic_algorithms(False)


@pytest.mark.gpu
@needs_cuda
def test_cuda_opcheck_and_compile():
    cuda_op_or_skip()
    verts, faces, face_id = small_scene(4)
    verts, faces, face_id = verts.cuda(), faces.cuda(), face_id.cuda()
    torch.library.opcheck(torch.ops.voxrender.fragments_forward.default, (verts.requires_grad_(), faces, face_id))
    gb, gd = weights((2, 9, 11, 3), (2, 9, 11), F64, 16, "cuda")
    for args in ((gb, gd), (None, gd)):
        torch.library.opcheck(torch.ops.voxrender.fragments_backward.default, (*args, verts.detach(), faces, face_id))
    fn = lambda v: vr.rasterize(v, faces, (9, 11), backend="cuda").depth
    v = verts.detach().clone().requires_grad_()
    out = torch.compile(fn, fullgraph=True, backend="aot_eager")(v)
    torch.testing.assert_close(out, fn(verts.detach()))
