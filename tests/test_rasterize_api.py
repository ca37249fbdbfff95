"""The public rasterize / interpolate API: input forms, bad input, backend reporting."""

import pytest
import torch

import voxrender as vr
from voxrender.reference.rasterize import rasterize_reference

TRI = torch.tensor([[-0.8, -0.8, 0.0, 1.0], [0.8, -0.6, 0.1, 1.0], [0.0, 0.9, 0.2, 1.0]])
FACES = torch.tensor([[0, 2, 1]])


def test_input_forms_agree():
    ref = rasterize_reference(TRI[None], FACES[None], 10, 12)
    for verts in (TRI, TRI[None], TRI[None, :, :3]):
        for faces in (FACES, FACES[None], FACES.int()):
            frags = vr.rasterize(verts, faces, (10, 12))
            assert frags.face_id.dtype == torch.int32 and frags.face_id.shape == (1, 10, 12)
            assert torch.equal(frags.face_id, ref.face_id)
            torch.testing.assert_close(frags.bary, ref.bary)
    square = vr.rasterize(TRI, FACES, 11)
    assert square.depth.shape == (1, 11, 11)


def test_interpolate_and_gradients_reach_vertices_and_attributes():
    verts = TRI.clone().requires_grad_()
    colours = torch.rand(3, 3, requires_grad=True)
    frags = vr.rasterize(verts, FACES, 16)
    rgb = vr.interpolate(colours, frags, FACES)
    assert rgb.shape == (1, 16, 16, 3)
    assert torch.all(rgb[0][frags.face_id[0] < 0] == 0)
    rgb.square().sum().backward()
    assert verts.grad.abs().sum() > 0 and colours.grad.abs().sum() > 0


def test_padding_rows_and_empty_meshes():
    faces = torch.tensor([[[0, 2, 1], [-1, -1, -1]], [[-1, -1, -1], [-1, -1, -1]]])
    frags = vr.rasterize(TRI.expand(2, 3, 4), faces, 8)
    assert (frags.face_id[0] >= 0).any() and torch.all(frags.face_id[1] == -1)
    empty = vr.rasterize(torch.zeros(1, 0, 4), torch.zeros(0, 3, dtype=torch.int64), 8)
    assert torch.all(empty.face_id == -1) and torch.all(empty.depth == 1)


def test_large_image_runs_without_a_size_cap():
    frags = vr.rasterize(TRI, FACES, (1024, 1536))
    assert frags.face_id.shape == (1, 1024, 1536) and (frags.face_id >= 0).sum() > 100000


@pytest.mark.parametrize(
    "call, exc, words",
    [
        (lambda: vr.rasterize(TRI.long(), FACES, 8), TypeError, "verts"),
        (lambda: vr.rasterize(TRI[:, :2], FACES, 8), ValueError, "verts"),
        (lambda: vr.rasterize(TRI, FACES.float(), 8), TypeError, "faces"),
        (lambda: vr.rasterize(TRI, FACES[0], 8), ValueError, "faces"),
        (lambda: vr.rasterize(TRI, torch.tensor([[0, 1, 3]]), 8), ValueError, "faces"),
        (lambda: vr.rasterize(TRI, torch.tensor([[0, 1, -2]]), 8), ValueError, "faces"),
        (lambda: vr.rasterize(TRI, torch.tensor([[0, -1, -1]]), 8), ValueError, "padding"),
        (lambda: vr.rasterize(TRI.expand(2, 3, 4), FACES.expand(3, 1, 3), 8), ValueError, "batch"),
        (lambda: vr.rasterize(TRI, FACES.to("meta"), 8), ValueError, "faces"),
        (lambda: vr.rasterize(TRI, FACES, 0), ValueError, "image_size"),
        (lambda: vr.rasterize(TRI, FACES, 8, backend="opengl"), ValueError, "backend"),
        (lambda: vr.rasterize(TRI, FACES, 8, backend="cuda"), RuntimeError, "backend 'cuda'.*cannot run here"),
        (lambda: vr.interpolate(torch.rand(3, 2).long(), vr.rasterize(TRI, FACES, 8), FACES), TypeError, "attr"),
        (lambda: vr.interpolate(torch.rand(2, 3, 2), vr.rasterize(TRI, FACES, 8), FACES), ValueError, "attr"),
        (lambda: vr.interpolate(torch.rand(3, 2), (1, 2, 3), FACES), TypeError, "frags"),
    ],
)
def test_bad_input_names_the_argument(call, exc, words):
    with pytest.raises(exc, match=words):
        call()


def _cpu_or_skip():
    from voxrender import backends

    reasons = backends.not_supported_reasons("cpu", torch.device("cpu"), torch.float32, op="rasterize")
    if reasons:
        pytest.skip("; ".join(reasons))


def test_cpu_backend_matches_reference_with_gradients():
    _cpu_or_skip()
    g = torch.Generator().manual_seed(4)
    verts = torch.randn(2, 40, 4, generator=g, dtype=torch.float64)
    verts[..., 3] = verts[..., 3].abs() + 0.5
    faces = torch.randint(0, 40, (2, 25, 3), generator=g)
    results = []
    for backend in ("torch", "cpu"):
        v = verts.clone().requires_grad_()
        frags = vr.rasterize(v, faces, (13, 17), backend=backend)
        (frags.bary.square().sum() + frags.depth.sum()).backward()
        results.append((frags, v.grad))
    (ref, g_ref), (out, g_out) = results
    assert torch.equal(out.face_id, ref.face_id)
    torch.testing.assert_close(out.bary, ref.bary, rtol=0, atol=0)
    torch.testing.assert_close(out.depth, ref.depth, rtol=0, atol=0)
    torch.testing.assert_close(g_out, g_ref)
    assert vr.rasterize(verts, faces, (13, 17)).face_id.equal(out.face_id)  # automatic choice: cpu


def test_cpu_backend_opcheck_and_compile():
    _cpu_or_skip()
    g = torch.Generator().manual_seed(5)
    verts = torch.randn(2, 30, 4, generator=g, dtype=torch.float64)
    verts[..., 3] = verts[..., 3].abs() + 1
    faces = torch.randint(0, 30, (2, 10, 3), generator=g)
    torch.library.opcheck(torch.ops.voxrender.rasterize_face_ids.default, (verts, faces, 9, 11, False))
    fn = lambda v: vr.rasterize(v, faces, (9, 11), backend="cpu").depth
    v = verts.clone().requires_grad_()
    out = torch.compile(fn, fullgraph=True, backend="aot_eager")(v)
    torch.testing.assert_close(out, fn(verts))
    out.sum().backward()
    assert v.grad.abs().sum() > 0
