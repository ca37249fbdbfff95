"""The C++ interpolate op (cpu, cuda: torch.ops.voxrender.interpolate / interpolate_backward) against the
torch reference, forward and backward, plus its autograd, fake-kernel and error behaviour.

The CUDA kernels also run here under the CPU emulation of tests/cuda_emu.py (their forward and grad_bary
equal the CPU op's bit for bit; grad_attr sums with atomics, so it agrees to rounding); on a GPU the tests
marked ``gpu`` run the real op.
"""

import pytest
import torch

import voxrender as vr
import voxrender.backends
from cuda_emu import unavailable_reason as emu_unavailable
from test_rasterize_cpu import camera_batch
from vr_testing import needs_cuda

voxrender.backends.extension_status()
HAVE_OP = hasattr(torch.ops.voxrender, "interpolate") and hasattr(torch.ops.voxrender, "interpolate_backward")
pytestmark = pytest.mark.skipif(not HAVE_OP, reason="torch.ops.voxrender.interpolate is not built")

F64 = torch.float64
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-6), torch.float64: dict(rtol=1e-12, atol=1e-12)}
op = torch.ops.voxrender.interpolate
op_backward = torch.ops.voxrender.interpolate_backward


def scene(seed, dtype, B=2, h=23, w=19, n_faces=40, pad=5, device="cpu"):
    """Clip-space vertices and faces (with padding rows in items b > 0) and their fragments."""
    verts, faces = camera_batch(seed, n_faces, h, w, dtype, B=B, pad=pad)
    verts, faces = verts.to(device), faces.to(device)
    frags = vr.rasterize(verts, faces, (h, w), backend="cpu" if device == "cpu" else "cuda")
    assert (frags.face_id >= 0).any()
    return verts, faces, frags


def run_backends(dtype, C, shared, backends=("cpu", "torch"), device="cpu", seed=0):
    """Forward and gradients (to attr and, through bary, to the vertices) of each backend."""
    verts, faces = camera_batch(seed, 40, 23, 19, dtype, B=2, pad=5)
    verts, faces = verts.to(device), faces.to(device)
    g = torch.Generator().manual_seed(seed + 100)
    attr0 = torch.randn((verts.shape[1], C) if shared else (2, verts.shape[1], C), generator=g, dtype=dtype)
    gout = torch.randn(2, 23, 19, C, generator=g, dtype=dtype).to(device)
    res = {}
    for backend in backends:
        v = verts.clone().requires_grad_()
        attr = attr0.to(device).requires_grad_()
        frags = vr.rasterize(v, faces, (23, 19), backend="cpu" if device == "cpu" else "cuda")
        out = vr.interpolate(attr, frags, faces, backend=backend)
        (out * gout).sum().backward()
        res[backend] = (out.detach(), attr.grad, v.grad)
    return res


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("C", [1, 3, 5])
@pytest.mark.parametrize("shared", [False, True])
def test_cpu_matches_reference_forward_and_backward(dtype, C, shared):
    res = run_backends(dtype, C, shared)
    (out, ga, gv), (out_r, ga_r, gv_r) = res["cpu"], res["torch"]
    assert out.shape == (2, 23, 19, C)
    torch.testing.assert_close(out, out_r, **TOL[dtype])
    assert ga.shape == ga_r.shape
    torch.testing.assert_close(ga, ga_r, **TOL[dtype])
    torch.testing.assert_close(gv, gv_r, **TOL[dtype])
    assert ga.abs().sum() > 0 and gv.abs().sum() > 0


def test_background_is_zero_and_gets_no_gradient():
    verts, faces, frags = scene(1, F64, n_faces=12)
    attr = torch.randn(2, verts.shape[1], 4, dtype=F64, requires_grad=True)
    bary = frags.bary.detach().requires_grad_()
    out = op(attr, frags.face_id, bary, faces)
    bg = frags.face_id < 0
    assert bg.any() and torch.all(out[bg] == 0) and torch.any(out[~bg] != 0)
    out.sum().backward()
    assert torch.all(bary.grad[bg] == 0)
    # Vertices that no visible face uses get no gradient.
    used = torch.zeros(2, verts.shape[1], dtype=torch.bool)
    for b in range(2):
        ids = frags.face_id[b][frags.face_id[b] >= 0].long().unique()
        used[b, faces[b, ids].flatten()] = True
    assert torch.all(attr.grad[~used] == 0) and torch.all(attr.grad[used].abs().sum(-1) > 0)


def test_zero_faces_and_padding_rows_are_background():
    verts, faces, frags = scene(2, F64)
    attr = torch.randn(2, verts.shape[1], 3, dtype=F64)
    out = op(attr, torch.full_like(frags.face_id, -1), frags.bary, faces[:, :0])
    assert out.shape == (2, 23, 19, 3) and torch.all(out == 0)
    padded = faces.clone()
    padded[:, :] = -1  # every visible face now points at a padding row
    assert torch.all(op(attr, frags.face_id, frags.bary, padded) == 0)


@pytest.mark.parametrize("faces_dtype", [torch.int32, torch.int64])
def test_strided_and_expanded_inputs(faces_dtype):
    """attr expanded from (V, C) (batch stride 0), transposed attr, faces expanded from (F, 3)."""
    verts, faces = camera_batch(3, 30, 17, 21, F64, B=1)
    verts = verts.expand(3, -1, -1)
    shared_faces = faces[0].to(faces_dtype)
    frags = vr.rasterize(verts, shared_faces, (17, 21), backend="cpu")
    base = torch.randn(verts.shape[1], 4, dtype=F64)
    for attr in (base.expand(3, -1, -1), base.t().contiguous().t().expand(3, -1, -1),
                 torch.randn(3, 4, verts.shape[1], dtype=F64).transpose(1, 2)):
        want = vr.interpolate(attr, frags, shared_faces, backend="torch")
        got = op(attr, frags.face_id, frags.bary, shared_faces.expand(3, -1, -1))
        torch.testing.assert_close(got, want, **TOL[F64])
    # The gradient of a shared (V, C) attr sums over the batch.
    grads = {}
    for backend in ("cpu", "torch"):
        a = base.clone().requires_grad_()
        vr.interpolate(a, frags, shared_faces, backend=backend).square().sum().backward()
        grads[backend] = a.grad
    assert grads["cpu"].shape == base.shape
    torch.testing.assert_close(grads["cpu"], grads["torch"], **TOL[F64])


def test_gradcheck_float64():
    verts, faces, frags = scene(4, F64, h=7, w=6, n_faces=12, pad=2)
    attr = torch.randn(2, verts.shape[1], 2, dtype=F64, requires_grad=True)
    bary = frags.bary.detach().clone().requires_grad_()
    fid = frags.face_id
    assert torch.autograd.gradcheck(lambda a, b: op(a, fid, b, faces), (attr, bary))
    # Shared attr through the public function (expand, then the op; the expand's backward sums).
    shared = torch.randn(verts.shape[1], 2, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: vr.interpolate(a, frags._replace(bary=b), faces, backend="cpu"),
                                    (shared, bary))


def test_opcheck():
    verts, faces, frags = scene(5, F64, h=9, w=8, n_faces=15, pad=3)
    attr = torch.randn(2, verts.shape[1], 3, dtype=F64, requires_grad=True)
    bary = frags.bary.detach().clone().requires_grad_()
    torch.library.opcheck(op.default, (attr, frags.face_id, bary, faces))
    torch.library.opcheck(op.default, (attr.detach()[:1].expand(2, -1, -1).requires_grad_(), frags.face_id,
                                       bary, faces.int()))


def test_compile_fullgraph():
    verts, faces = camera_batch(6, 30, 15, 13, torch.float32, B=2, pad=3)
    attr = torch.randn(verts.shape[1], 3)

    def fn(v, a):
        frags = vr.rasterize(v, faces, (15, 13), backend="cpu")
        return vr.interpolate(a, frags, faces, backend="cpu")

    v1, a1 = verts.clone().requires_grad_(), attr.clone().requires_grad_()
    out = torch.compile(fn, fullgraph=True, backend="aot_eager")(v1, a1)
    v2, a2 = verts.clone().requires_grad_(), attr.clone().requires_grad_()
    want = fn(v2, a2)
    torch.testing.assert_close(out, want)
    out.square().sum().backward()
    want.square().sum().backward()
    torch.testing.assert_close(a1.grad, a2.grad)
    torch.testing.assert_close(v1.grad, v2.grad)
    assert v1.grad.abs().sum() > 0


def test_bad_inputs_name_the_argument():
    verts, faces, frags = scene(7, torch.float32)
    fid, bary = frags.face_id, frags.bary.detach()
    attr = torch.randn(2, verts.shape[1], 3)
    cases = [
        ((attr[0], fid, bary, faces), ValueError, "attr"),
        ((attr.long(), fid, bary, faces), TypeError, "attr"),
        ((attr, fid.long(), bary, faces), TypeError, "face_id"),
        ((attr, fid[:1], bary, faces), ValueError, "face_id"),
        ((attr, fid, bary[..., :2], faces), ValueError, "bary"),
        ((attr, fid, bary.double(), faces), TypeError, "bary"),
        ((attr, fid, bary, faces.float()), TypeError, "faces"),
        ((attr, fid, bary, faces[..., :2]), ValueError, "faces"),
        ((attr, fid, bary, faces[:1]), ValueError, "faces"),
        ((attr, fid + faces.shape[1], bary, faces), ValueError, "face_id"),
        ((attr, torch.full_like(fid, -3), bary, faces), ValueError, "face_id"),
        ((attr, fid, bary, faces + verts.shape[1]), ValueError, "faces"),
        ((attr, fid, bary, torch.where(faces >= 0, -2, faces)), ValueError, "faces"),
    ]
    for k, (args, exc, name) in enumerate(cases):
        with pytest.raises(exc, match=name):
            op(*args)
            pytest.fail(f"case {k} did not raise")
    g = torch.randn(2, 23, 19, 3)
    with pytest.raises(ValueError, match="grad_out"):
        op_backward(g[..., :2], attr, fid, bary, faces, True, True)
    with pytest.raises(TypeError, match="grad_out"):
        op_backward(g.double(), attr, fid, bary, faces, True, True)
    with pytest.raises(TypeError, match="attr"):
        vr.interpolate(attr.long(), frags, faces, backend="cpu")


def test_cpu_is_the_automatic_choice_on_cpu():
    assert voxrender.backends.select_backend("interpolate", torch.device("cpu"), torch.float32, None) == "cpu"


def test_backward_flags_and_shapes():
    verts, faces, frags = scene(8, F64)
    attr = torch.randn(2, verts.shape[1], 3, dtype=F64)
    g = torch.randn(2, 23, 19, 3, dtype=F64)
    ga, gb = op_backward(g, attr, frags.face_id, frags.bary, faces, True, True)
    assert ga.shape == attr.shape and gb.shape == frags.bary.shape
    ga2, gb2 = op_backward(g, attr, frags.face_id, frags.bary, faces, True, False)
    assert torch.equal(ga, ga2) and gb2.numel() == 0
    ga3, gb3 = op_backward(g, attr, frags.face_id, frags.bary, faces, False, True)
    assert ga3.numel() == 0 and torch.equal(gb, gb3)


def test_cpu_backward_is_deterministic():
    """Bitwise repeatable, whatever the number of threads (each grad_attr element is summed in pixel
    order; the vertices of a closed mesh collect many pixels each)."""
    from voxrender.data.meshes import icosphere

    v, f = icosphere(3, dtype=torch.float32)
    verts = torch.cat([v * 0.8, torch.ones_like(v[:, :1])], -1)
    verts[:, 2] = verts[:, 2] * 0.4
    frags = vr.rasterize(verts[None].expand(3, -1, -1), f, (96, 80), backend="cpu")
    attr = torch.randn(3, v.shape[0], 5)
    g = torch.randn(3, 96, 80, 5)
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (threads, 1, threads, max(2, threads)):
            torch.set_num_threads(n)
            results.append(op_backward(g, attr, frags.face_id, frags.bary, f.expand(3, -1, -1), True, True))
    finally:
        torch.set_num_threads(threads)
    for ga, gb in results[1:]:
        assert torch.equal(ga, results[0][0]) and torch.equal(gb, results[0][1])


# ----------------------------------------------------------------------------------------------- emulated
@pytest.mark.skipif(bool(emu_unavailable()), reason=emu_unavailable() or "")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("faces_dtype", [torch.int32, torch.int64])
def test_emulated_cuda_kernels_match_cpu(dtype, faces_dtype):
    import cuda_emu

    verts, faces, frags = scene(9, dtype, h=13, w=11, n_faces=25, pad=4)
    faces = faces.to(faces_dtype)
    for attr in (torch.randn(2, verts.shape[1], 3, dtype=dtype),
                 torch.randn(verts.shape[1], 2, dtype=dtype).expand(2, -1, -1)):
        want = op(attr, frags.face_id, frags.bary, faces)
        got = cuda_emu.interpolate(attr, frags.face_id, frags.bary, faces, multiprocessors=2)
        assert torch.equal(got, want)
        g = torch.randn(want.shape, dtype=dtype)
        ga, gb = op_backward(g, attr, frags.face_id, frags.bary, faces, True, True)
        ga_e, gb_e = cuda_emu.interpolate_backward(g, attr, frags.face_id, frags.bary, faces, multiprocessors=2)
        assert torch.equal(gb_e, gb)
        torch.testing.assert_close(ga_e, ga, **TOL[dtype])
    # Bad ids and indices are read as background (the CUDA op checks no values).
    bad_fid = frags.face_id.clone()
    bad_fid[:, :3] = faces.shape[1] + 5
    bad_fid[:, 3:5] = -7
    clean = frags.face_id.clone()
    clean[:, :5] = -1
    attr = torch.randn(2, verts.shape[1], 3, dtype=dtype)
    assert torch.equal(cuda_emu.interpolate(attr, bad_fid, frags.bary, faces),
                       op(attr, clean, frags.bary, faces))


# ------------------------------------------------------------------------------------------------- on GPU
def cuda_or_skip():
    reasons = voxrender.backends.not_supported_reasons("cuda", torch.device("cuda"), torch.float32, op="interpolate")
    if reasons:
        pytest.skip("; ".join(reasons))


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shared", [False, True])
def test_cuda_matches_cpu(dtype, shared):
    cuda_or_skip()
    res_cpu = run_backends(dtype, 3, shared, backends=("cpu",))["cpu"]
    res_cuda = run_backends(dtype, 3, shared, backends=("cuda",), device="cuda")["cuda"]
    out, ga, gv = (t.cpu() for t in res_cuda)
    # (bary comes from torch ops on each device, so not bit for bit here; see the direct test below.)
    torch.testing.assert_close(out, res_cpu[0], **TOL[dtype])
    torch.testing.assert_close(ga, res_cpu[1], **TOL[dtype])
    torch.testing.assert_close(gv, res_cpu[2], **TOL[dtype])


@pytest.mark.gpu
@needs_cuda
def test_cuda_ops_direct_and_opcheck():
    cuda_or_skip()
    verts, faces, frags = scene(10, F64, device="cuda")
    attr = torch.randn(2, verts.shape[1], 3, dtype=F64, device="cuda")
    g = torch.randn(2, 23, 19, 3, dtype=F64, device="cuda")
    cpu = [t.cpu() for t in (attr, frags.face_id, frags.bary, faces)]
    assert torch.equal(op(attr, frags.face_id, frags.bary, faces).cpu(), op(*cpu))  # same inputs: bit for bit
    ga, gb = op_backward(g, attr, frags.face_id, frags.bary, faces, True, True)
    ga_c, gb_c = op_backward(g.cpu(), *cpu, True, True)
    assert torch.equal(gb.cpu(), gb_c)
    torch.testing.assert_close(ga.cpu(), ga_c, **TOL[F64])
    torch.library.opcheck(op.default, (attr.requires_grad_(), frags.face_id,
                                       frags.bary.detach().clone().requires_grad_(), faces.int()))
    with pytest.raises(ValueError, match="face_id"):
        op(attr.detach(), frags.face_id.cpu(), frags.bary, faces)


@pytest.mark.gpu
@needs_cuda
def test_cuda_backward_refuses_deterministic_mode():
    cuda_or_skip()
    verts, faces, frags = scene(11, torch.float32, device="cuda")
    attr = torch.randn(2, verts.shape[1], 3, device="cuda", requires_grad=True)
    out = vr.interpolate(attr, frags, faces, backend="cuda")
    try:
        torch.use_deterministic_algorithms(True)
        with pytest.raises(RuntimeError, match="deterministic"):
            out.sum().backward()
    finally:
        torch.use_deterministic_algorithms(False)
