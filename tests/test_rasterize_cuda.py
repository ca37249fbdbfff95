"""The CUDA rasterize_face_ids (csrc/kernels/rasterize.cu) against the CPU op, bit for bit.

Two layers:

* ``TestEmulated``: the real kernel source compiled for the CPU under a small emulation (tests/cuda_emu.py;
  each block's threads are std::threads, so the atomics race for real). Runs everywhere with g++ and checks
  the work distribution (tiles, prefix sum, the persistent grid's walk), the z-buffer encodings and the
  tie rule against the CPU op. nvcc's code generation is not exercised here.
* GPU tests (marked ``gpu``, skipped without CUDA): the op itself on a GPU, with the same assertions, plus
  large images, bad inputs, determinism, opcheck and ``vr.rasterize(..., backend="cuda")`` with gradients.

Both compare face ids exactly and depths bit for bit (sign of zero included): the kernels run the CPU op's
per-face and per-pixel functions (csrc/include/voxrender/raster.h) with FMA-free arithmetic.
"""

import pytest
import torch

import voxrender as vr
import voxrender.backends
from cuda_emu import unavailable_reason as emu_unavailable
from test_rasterize_cpu import camera_batch, smooth_depth_mesh
from vr_testing import needs_cuda

voxrender.backends.extension_status()  # loads the extension, which registers the op
HAVE_OP = hasattr(torch.ops.voxrender, "rasterize_face_ids")
pytestmark = pytest.mark.skipif(not HAVE_OP, reason="torch.ops.voxrender.rasterize_face_ids is not built")

F64 = torch.float64
INT_VIEW = {torch.float32: torch.int32, torch.float64: torch.int64}


def cpu_op(verts, faces, h, w, cull=False):
    return torch.ops.voxrender.rasterize_face_ids(verts.cpu(), faces.cpu(), h, w, cull)


def assert_bit_equal(got, want):
    fid, depth = (t.cpu() for t in got)
    fid_ref, depth_ref = want
    assert fid.dtype == torch.int32 and fid.shape == fid_ref.shape
    assert depth.dtype == depth_ref.dtype and depth.shape == depth_ref.shape
    assert torch.equal(fid, fid_ref), f"face_id differs on {(fid != fid_ref).sum().item()} pixels"
    view = INT_VIEW[depth.dtype]
    assert torch.equal(depth.view(view), depth_ref.view(view)), "depth differs (bitwise)"


def big_faces(dtype, B=2):
    """Screen-filling triangles: two crossing w = 0 (float path, whole-image boxes), one large in front."""
    v = torch.tensor([[-0.9, -0.8, 0.2, 1.0], [0.9, -0.7, 0.3, 1.0], [0.1, 0.9, 0.1, 1.0],
                      [-2.0, -1.5, 0.5, 1.0], [2.5, 0.2, -0.6, -0.5], [0.3, 3.0, 0.4, 0.8],
                      [-3.0, 2.0, 0.0, 0.5], [1.0, -2.0, 0.3, 1.0], [0.5, 0.5, -0.2, -0.3]], dtype=F64)
    verts = torch.stack([v * (1 + 0.1 * b) for b in range(B)]).to(dtype)
    verts[..., 3] = torch.stack([v[:, 3]] * B).to(dtype)
    faces = torch.tensor([[0, 1, 2], [3, 4, 5], [6, 7, 8], [2, 1, 0]]).expand(B, -1, -1)
    return verts, faces


def zero_depth_pair(first_negative: bool):
    """Two identical triangles at z = 0, one with z = -0.0 (depth -0.0): equal depths, lower index wins, and
    the depth keeps the winner's sign of zero."""
    tri = torch.tensor([[-0.8, -0.8, 0.0, 1.0], [0.8, -0.6, 0.0, 1.0], [0.0, 0.8, 0.0, 1.0]], dtype=F64)
    neg = tri.clone()
    neg[:, 2] = -0.0
    verts = torch.cat([neg, tri] if first_negative else [tri, neg])[None]
    return verts, torch.tensor([[[0, 1, 2], [3, 4, 5]]])


# ----------------------------------------------------------------------------------------------- emulated
@pytest.mark.skipif(bool(emu_unavailable()), reason=emu_unavailable() or "")
class TestEmulated:
    """The CUDA kernels' source, compiled for the CPU (tests/cuda_emu.py), against the CPU op."""

    @staticmethod
    def run(verts, faces, h, w, cull=False, sms=1):
        import cuda_emu

        return cuda_emu.rasterize_face_ids(verts, faces, h, w, cull, multiprocessors=sms)

    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
    def test_random_camera_scenes(self, dtype):
        for seed in range(4):
            h, w = (17, 23) if seed % 2 else (40, 33)
            verts, faces = camera_batch(seed, 30, h, w, dtype, pad=5)
            for cull in (False, True):
                want = cpu_op(verts, faces, h, w, cull)
                assert (want[0] >= 0).any()
                assert_bit_equal(self.run(verts, faces, h, w, cull, sms=1 + seed % 3), want)

    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
    def test_dense_grid_mesh(self, dtype):
        verts, faces = smooth_depth_mesh(1, 40, dtype, B=2)
        for (h, w) in [(40, 40), (29, 45)]:
            for cull in (False, True):
                assert_bit_equal(self.run(verts, faces, h, w, cull, sms=2), cpu_op(verts, faces, h, w, cull))

    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
    def test_large_faces(self, dtype):
        verts, faces = big_faces(dtype)
        for (h, w) in [(64, 48), (9, 70)]:
            want = cpu_op(verts, faces, h, w)
            assert (want[0] >= 0).float().mean() > 0.5
            assert_bit_equal(self.run(verts, faces, h, w, sms=3), want)

    def test_padding_empty_int32_and_strided_faces(self):
        verts, faces = camera_batch(3, 20, 19, 21, F64)
        want = cpu_op(verts, faces, 19, 21)
        assert_bit_equal(self.run(verts, faces.int(), 19, 21), want)
        assert_bit_equal(self.run(verts, faces.transpose(1, 2).contiguous().transpose(1, 2), 19, 21), want)
        shared = faces[0].expand(2, -1, -1)  # batch stride 0
        assert_bit_equal(self.run(verts, shared, 19, 21), cpu_op(verts, shared, 19, 21))
        for f in (torch.full_like(faces, -1), faces[:, :0]):
            fid, depth = self.run(verts, f, 19, 21)
            assert torch.all(fid == -1) and torch.all(depth == 1)
        fid, depth = self.run(verts[:, :0], torch.full((2, 4, 3), -1), 5, 6)
        assert torch.all(fid == -1) and torch.all(depth == 1)

    def test_out_of_range_rows_cover_nothing(self):
        """The CUDA op skips the host-side value check: a row with an index outside [0, V) is ignored."""
        verts, faces = camera_batch(4, 20, 16, 16, F64)
        bad = faces.clone()
        bad[:, ::4, 1] = verts.shape[1] + 7
        bad[:, 1::4, 2] = -3
        pad = faces.clone()
        pad[:, ::4] = -1
        pad[:, 1::4] = -1
        assert_bit_equal(self.run(verts, bad, 16, 16), cpu_op(verts, pad, 16, 16))

    def test_depth_ties_and_signed_zero(self):
        verts, faces = camera_batch(1, 10, 20, 20, F64, B=1)
        dup = torch.cat([faces, faces.flip(1)], 1)
        got = self.run(verts, dup, 20, 20)
        assert_bit_equal(got, cpu_op(verts, dup, 20, 20))
        assert torch.all(got[0][got[0] >= 0] < 10)
        for first_negative in (True, False):
            verts, faces = zero_depth_pair(first_negative)
            want = cpu_op(verts, faces, 12, 12)
            hit = want[0] >= 0
            assert hit.any() and torch.all(want[0][hit] == 0)
            assert bool(torch.signbit(want[1][hit]).all()) == first_negative
            assert_bit_equal(self.run(verts, faces, 12, 12), want)

    def test_grid_size_does_not_change_the_result(self):
        verts, faces = camera_batch(5, 60, 37, 29, torch.float32, B=3, pad=7)
        want = cpu_op(verts, faces, 37, 29)
        for sms in (1, 2, 5):
            assert_bit_equal(self.run(verts, faces, 37, 29, sms=sms), want)


# ------------------------------------------------------------------------------------------------- on GPU
def cuda_op_or_skip():
    reasons = voxrender.backends.not_supported_reasons("cuda", torch.device("cuda"), torch.float32, op="rasterize")
    if reasons:
        pytest.skip("; ".join(reasons))


def cuda_op(verts, faces, h, w, cull=False):
    return torch.ops.voxrender.rasterize_face_ids(verts.cuda(), faces.cuda(), h, w, cull)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("cull", [False, True])
def test_cuda_random_camera_scenes(dtype, cull):
    cuda_op_or_skip()
    for seed in range(6):
        h, w = (17, 23) if seed % 2 else (40, 33)
        verts, faces = camera_batch(seed, 30, h, w, dtype, pad=5)
        assert_bit_equal(cuda_op(verts, faces, h, w, cull), cpu_op(verts, faces, h, w, cull))


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_dense_grid_mesh(dtype):
    cuda_op_or_skip()
    verts, faces = smooth_depth_mesh(0, 128, dtype, B=2)  # 32k faces per item, about one per pixel
    for (h, w) in [(128, 128), (97, 161)]:
        for cull in (False, True):
            assert_bit_equal(cuda_op(verts, faces, h, w, cull), cpu_op(verts, faces, h, w, cull))


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_large_faces(dtype):
    cuda_op_or_skip()
    verts, faces = big_faces(dtype)
    for (h, w) in [(512, 384), (7, 1500), (1024, 1024)]:
        assert_bit_equal(cuda_op(verts, faces, h, w), cpu_op(verts, faces, h, w))


@pytest.mark.gpu
@needs_cuda
def test_cuda_2048_many_faces():
    cuda_op_or_skip()
    verts, faces = camera_batch(11, 20000, 2048, 2048, torch.float32, B=2, pad=100)
    big_v, big_f = big_faces(torch.float32)
    faces = torch.cat([faces, big_f + verts.shape[1]], 1)  # a few screen-filling faces as well
    verts = torch.cat([verts, big_v], 1)
    assert_bit_equal(cuda_op(verts, faces, 2048, 2048), cpu_op(verts, faces, 2048, 2048))
    verts, faces = smooth_depth_mesh(2, 512, torch.float32)  # 522k faces
    assert_bit_equal(cuda_op(verts, faces, 2048, 2048), cpu_op(verts, faces, 2048, 2048))


@pytest.mark.gpu
@needs_cuda
def test_cuda_padding_empty_and_int32_faces():
    cuda_op_or_skip()
    verts, faces = camera_batch(3, 20, 19, 21, F64)
    want = cpu_op(verts, faces, 19, 21)
    assert_bit_equal(cuda_op(verts, faces.int(), 19, 21), want)
    assert_bit_equal(cuda_op(verts.transpose(0, 1).contiguous().transpose(0, 1), faces, 19, 21), want)
    shared = faces[0].expand(2, -1, -1)
    assert_bit_equal(cuda_op(verts, shared, 19, 21), cpu_op(verts, shared, 19, 21))
    for f in (torch.full_like(faces, -1), faces[:, :0]):
        fid, depth = cuda_op(verts, f, 19, 21)
        assert torch.all(fid == -1) and torch.all(depth == 1)
    fid, depth = cuda_op(verts[:, :0], torch.full((2, 4, 3), -1), 5, 6)
    assert torch.all(fid == -1) and torch.all(depth == 1)
    fid, depth = cuda_op(verts[:0], faces[:0], 5, 6)
    assert fid.shape == (0, 5, 6) and depth.shape == (0, 5, 6)
    for first_negative in (True, False):
        v, f = zero_depth_pair(first_negative)
        assert_bit_equal(cuda_op(v, f, 12, 12), cpu_op(v, f, 12, 12))


@pytest.mark.gpu
@needs_cuda
def test_cuda_bad_inputs():
    cuda_op_or_skip()
    verts, faces = camera_batch(0, 4, 8, 8, torch.float32)
    verts, faces = verts.cuda(), faces.cuda()
    op = torch.ops.voxrender.rasterize_face_ids
    with pytest.raises(ValueError, match="verts"):
        op(verts[..., :3], faces, 8, 8, False)
    with pytest.raises(TypeError, match="verts"):
        op(verts.to(torch.int64), faces, 8, 8, False)
    with pytest.raises(TypeError, match="faces"):
        op(verts, faces.float(), 8, 8, False)
    with pytest.raises(ValueError, match="faces"):
        op(verts, faces[:1], 8, 8, False)
    with pytest.raises((ValueError, RuntimeError), match="faces"):
        op(verts, faces.cpu(), 8, 8, False)
    with pytest.raises(ValueError, match="image_size"):
        op(verts, faces, 0, 8, False)
    # Index values are checked by voxrender.rasterize (the op itself never syncs to read them back).
    with pytest.raises(ValueError, match="faces"):
        vr.rasterize(verts, faces + verts.shape[1], 8, backend="cuda")


@pytest.mark.gpu
@needs_cuda
def test_cuda_deterministic():
    cuda_op_or_skip()
    verts, faces = camera_batch(9, 3000, 300, 300, torch.float32, B=2)
    dup = torch.cat([faces, faces], 1)  # exact depth ties everywhere
    first = cuda_op(verts, dup, 300, 300)
    for _ in range(3):
        again = cuda_op(verts, dup, 300, 300)
        assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert torch.all(first[0][first[0] >= 0] < 3000)


@pytest.mark.gpu
@needs_cuda
def test_cuda_opcheck_and_compile():
    cuda_op_or_skip()
    g = torch.Generator().manual_seed(5)
    verts = torch.randn(2, 30, 4, generator=g, dtype=F64)
    verts[..., 3] = verts[..., 3].abs() + 1
    faces = torch.randint(0, 30, (2, 10, 3), generator=g)
    verts, faces = verts.cuda(), faces.cuda()
    torch.library.opcheck(torch.ops.voxrender.rasterize_face_ids.default, (verts, faces, 9, 11, False))
    fn = lambda v: vr.rasterize(v, faces, (9, 11), backend="cuda").depth
    v = verts.clone().requires_grad_()
    out = torch.compile(fn, fullgraph=True, backend="aot_eager")(v)
    torch.testing.assert_close(out, fn(verts))


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_backend_end_to_end_with_gradients(dtype):
    cuda_op_or_skip()
    verts, faces = camera_batch(2, 40, 33, 29, dtype, pad=4)
    verts, faces = verts.cuda(), faces.cuda()
    outs = {}
    for backend in ("cuda", "torch"):
        v = verts.clone().requires_grad_()
        frags = vr.rasterize(v, faces, (33, 29), backend=backend)
        w = torch.linspace(0.5, 1.5, 3, dtype=dtype, device="cuda")
        loss = (frags.bary * w).sum() + (frags.depth ** 2).sum()
        loss.backward()
        outs[backend] = (frags, v.grad)
    (fa, ga), (fb, gb) = outs["cuda"], outs["torch"]
    assert torch.equal(fa.face_id, fb.face_id)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(fa.bary, fb.bary, **tol)
    torch.testing.assert_close(fa.depth, fb.depth, **tol)
    torch.testing.assert_close(ga, gb, **tol)
    assert ga.abs().sum() > 0
