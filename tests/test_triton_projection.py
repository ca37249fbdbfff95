"""Triton backend of ``project_volume`` against the torch reference (and the C++ op where it is built).

Runs on a CUDA device when there is one, else on the CPU under ``TRITON_INTERPRET=1`` (set it before
Python starts: ``TRITON_INTERPRET=1 python -m pytest tests/test_triton_projection.py``); otherwise every
test is skipped with the reason. Sizes are small and odd on purpose: the interpreter is slow, and odd,
non-cubic grids catch index mix-ups.
"""

from __future__ import annotations

import math

import pytest
import torch

import voxrender
from voxrender import backends
from voxrender.camera import MODES, PROJECTIONS

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
_REASONS = backends.not_supported_reasons("triton", DEVICE, torch.float64)

pytestmark = [
    pytest.mark.triton,
    pytest.mark.skipif(bool(_REASONS), reason="triton backend unavailable: " + "; ".join(_REASONS)),
]

DTYPES = (torch.float32, torch.float64)
IMAGE = (5, 8)
K = 11
TAU = 0.8


def _rtol(dtype: torch.dtype) -> float:
    return 1e-10 if dtype == torch.float64 else 1e-5


def assert_close(actual: torch.Tensor, expected: torch.Tensor, name: str) -> None:
    """Elementwise, to the dtype's relative tolerance of the tensor's own scale (entries near zero are
    held to that absolute bound, not to a meaningless relative one)."""
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert actual.dtype == expected.dtype, f"{name}: dtype {actual.dtype} != {expected.dtype}"
    rtol = _rtol(expected.dtype)
    scale = max(expected.abs().max().item(), 1e-3)
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=rtol * scale, msg=lambda m: f"{name}: {m}")


def _inputs(seed: int, mode: str, dtype: torch.dtype, batch: int = 3, grid=(7, 9, 6), channels: int = 3):
    g = torch.Generator().manual_seed(seed)
    density = torch.rand(batch, *grid, generator=g, dtype=dtype)
    features = None
    if mode == "emission_absorption":
        features = torch.rand(batch, channels, *grid, generator=g, dtype=dtype)
    azimuth = (torch.rand(batch, generator=g, dtype=dtype) * 2 - 1) * math.pi
    elevation = (torch.rand(batch, generator=g, dtype=dtype) - 0.5) * 1.2
    return density, features, azimuth, elevation


def _render(backend, density, features, azimuth, elevation, grad_out=None, **kwargs):
    """Forward and backward on fresh leaves; returns (out, {name: grad})."""
    leaves = {"density": density, "features": features, "azimuth": azimuth, "elevation": elevation}
    leaves = {k: v.detach().to(DEVICE).requires_grad_() for k, v in leaves.items() if v is not None}
    out = voxrender.project_volume(
        leaves["density"], azimuth=leaves.get("azimuth"), elevation=leaves.get("elevation"),
        features=leaves.get("features"), image_size=IMAGE, n_samples=K, tau=TAU, backend=backend, **kwargs)
    if grad_out is None:
        grad_out = torch.ones_like(out)
    (out * grad_out.to(out.device)).sum().backward()
    return out.detach().cpu(), {k: v.grad.cpu() for k, v in leaves.items()}


def _grad_out(seed: int, shape, dtype) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed + 1000)
    grad = torch.randn(shape, generator=g, dtype=dtype)
    grad[torch.rand(shape, generator=g) < 0.2] = 0  # pixels whose upstream gradient is zero are skipped
    return grad


CASES = [(mode, proj, dtype) for mode in MODES for proj in PROJECTIONS for dtype in DTYPES]


@pytest.mark.parametrize("seed, mode, projection, dtype",
                         [(i, *case) for i, case in enumerate(CASES)],
                         ids=[f"{m}-{p}-{str(d)[6:]}" for m, p, d in CASES])
def test_matches_reference(seed, mode, projection, dtype):
    # (3, 7, 9, 6) grids; emission_absorption (the slowest in the interpreter) with a batch of 2.
    density, features, azimuth, elevation = _inputs(seed, mode, dtype, batch=2 if mode == "emission_absorption" else 3)
    channels = features.shape[1] + 1 if features is not None else 1
    grad_out = _grad_out(seed, (density.shape[0], channels, *IMAGE), dtype)
    kw = dict(mode=mode, projection=projection, grad_out=grad_out)
    out, grads = _render("triton", density, features, azimuth, elevation, **kw)
    ref_out, ref_grads = _render("torch", density, features, azimuth, elevation, **kw)
    assert out.abs().max() > 0.1, "degenerate test input: the rays miss the volume"
    assert_close(out, ref_out, "out")
    for name in ref_grads:
        assert grads[name].abs().max() > 0, f"{name}: gradient is identically zero"
        assert_close(grads[name], ref_grads[name], f"grad {name}")
    if not backends.not_supported_reasons(DEVICE.type, DEVICE, dtype):  # the C++ op, a second model
        cpp_out, cpp_grads = _render(DEVICE.type, density, features, azimuth, elevation, **kw)
        assert_close(out, cpp_out, "out vs C++")
        for name in cpp_grads:
            assert_close(grads[name], cpp_grads[name], f"grad {name} vs C++")


@pytest.mark.parametrize("channels", [1, 5])
@pytest.mark.parametrize("projection", PROJECTIONS)
def test_emission_absorption_channels(channels, projection):
    # C = 5 spans two channel chunks (programs); the background is added by the public op.
    dtype = torch.float64
    seed = 100 + channels + 10 * PROJECTIONS.index(projection)
    density, features, azimuth, elevation = _inputs(seed, "emission_absorption", dtype, batch=1,
                                                    channels=channels)
    density = density * 2
    grad_out = _grad_out(seed, (1, channels + 1, *IMAGE), dtype)
    background = torch.linspace(0.2, 0.9, channels, dtype=dtype, device=DEVICE)
    kw = dict(mode="emission_absorption", projection=projection, grad_out=grad_out, background=background)
    out, grads = _render("triton", density, features, azimuth, elevation, **kw)
    ref_out, ref_grads = _render("torch", density, features, azimuth, elevation, **kw)
    assert out.shape == (1, channels + 1, *IMAGE)
    assert_close(out, ref_out, "out")
    for name in ref_grads:
        assert_close(grads[name], ref_grads[name], f"grad {name}")


@pytest.mark.parametrize("mode", ["max", "emission_absorption"])
def test_several_pixel_blocks(mode):
    # 12 x 13 = 156 pixels: more than one program per image (BLOCK = 128), so per-program rotation
    # partials and the last, partly masked block are exercised; K = 3 keeps it quick.
    dtype = torch.float64
    density, features, azimuth, elevation = _inputs(40, mode, dtype, batch=2, grid=(4, 5, 3), channels=2)
    kw = dict(mode=mode, projection="perspective")
    leaves = [density, features, azimuth, elevation]
    results = []
    for backend in ("triton", "torch"):
        lv = [x.to(DEVICE).requires_grad_() if x is not None else None for x in leaves]
        out = voxrender.project_volume(lv[0], azimuth=lv[2], elevation=lv[3], features=lv[1], image_size=(12, 13),
                                       n_samples=3, tau=TAU, backend=backend, **kw)
        (out * torch.linspace(-1, 2, out.numel(), dtype=dtype, device=DEVICE).reshape(out.shape)).sum().backward()
        results.append([out.detach().cpu()] + [x.grad.cpu() for x in lv if x is not None])
    for i, (a, e) in enumerate(zip(*results)):
        assert_close(a, e, f"output/grad #{i}")


def test_noncontiguous_inputs():
    dtype = torch.float64
    g = torch.Generator().manual_seed(7)
    b, d, h, w, c = 2, 5, 6, 7, 2
    # (B, W, H, D) storage viewed as (B, D, H, W); every other channel of a wider feature tensor.
    density = torch.rand(b, w, h, d, generator=g, dtype=dtype).permute(0, 3, 2, 1)
    features = torch.rand(b, 2 * c, d, h, w, generator=g, dtype=dtype)[:, ::2]
    rotation = voxrender.rotation_from_angles(torch.tensor(0.7, dtype=dtype), torch.tensor(-0.3, dtype=dtype))
    assert not density.is_contiguous() and not features.is_contiguous()

    def run(backend, mode):
        dd = density.to(DEVICE).requires_grad_()
        ff = features.to(DEVICE).requires_grad_() if mode == "emission_absorption" else None
        rr = rotation.to(DEVICE).requires_grad_()  # (3, 3), expanded to the batch (stride 0)
        out = voxrender.project_volume(dd, rr, features=ff, image_size=IMAGE, n_samples=K, mode=mode, tau=TAU,
                                       projection="perspective", backend=backend)
        go = torch.linspace(-1, 1, out.numel(), dtype=dtype, device=DEVICE).reshape(out.shape)
        (out * go).sum().backward()
        grads = [dd.grad, rr.grad] + ([ff.grad] if ff is not None else [])
        return [out.detach().cpu()] + [x.cpu() for x in grads]

    for mode in ("absorption", "emission_absorption"):
        for i, (a, e) in enumerate(zip(run("triton", mode), run("torch", mode))):
            assert_close(a, e, f"{mode} output/grad #{i}")


def test_density_grad_without_pose_grad():
    # The rotation needs no gradient here, which compiles the kernels without the rotation partials.
    dtype = torch.float64
    density, _, azimuth, elevation = _inputs(11, "sum", dtype)
    for mode in ("sum", "max"):
        outs = []
        for backend in ("triton", "torch"):
            dd = density.to(DEVICE).requires_grad_()
            out = voxrender.project_volume(dd, azimuth=azimuth.to(DEVICE), elevation=elevation.to(DEVICE),
                                           image_size=IMAGE, n_samples=K, mode=mode, tau=TAU, backend=backend)
            out.square().sum().backward()
            outs.append((out.detach().cpu(), dd.grad.cpu()))
        assert_close(outs[0][0], outs[1][0], f"{mode} out")
        assert_close(outs[0][1], outs[1][1], f"{mode} grad density")


@pytest.mark.parametrize("dtype", DTYPES)
def test_max_ties_pick_first(dtype):
    # Power-of-two sizes with the identity view put every sample exactly on a voxel centre, so equal
    # voxel values are exact ties; the value and the whole gradient go to the first (front) maximum.
    g = torch.Generator().manual_seed(3)
    density = torch.randint(0, 3, (2, 4, 4, 4), generator=g).to(dtype)
    dd = density.to(DEVICE).requires_grad_()
    out = voxrender.project_volume(dd, mode="max", backend="triton")
    out.sum().backward()
    first = density.argmax(1, keepdim=True)  # torch.argmax returns the first maximal index
    expected_grad = torch.zeros_like(density).scatter_(1, first, 1.0)
    assert torch.equal(out.detach().cpu()[:, 0], density.amax(1))
    assert torch.equal(dd.grad.cpu(), expected_grad)
    ties = (density == density.amax(1, keepdim=True)).sum(1) > 1
    assert ties.float().mean() > 0.3, "the test should exercise many ties"


def test_identity_consequences():
    # The spec's identities: sum = tau * sum_d density, absorption = 1 - exp(-tau * sum_d density).
    dtype = torch.float64
    density = torch.rand(2, 5, 6, 7, generator=torch.Generator().manual_seed(5), dtype=dtype).to(DEVICE)
    total = density.sum(1, keepdim=True)
    for mode, expected in (("sum", TAU * total), ("absorption", 1 - torch.exp(-TAU * total))):
        out = voxrender.project_volume(density, mode=mode, tau=TAU, backend="triton")
        assert_close(out.cpu(), expected.cpu(), mode)


@pytest.mark.parametrize("mode, projection", [("absorption", "perspective"), ("max", "orthographic"),
                                              ("emission_absorption", "orthographic")])
def test_opcheck_forward(mode, projection):
    from voxrender.camera import MODE_ID, PROJECTION_ID, make_camera
    from voxrender.triton import volume_projection  # noqa: F401  (registers the op)

    dtype = torch.float64
    g = torch.Generator().manual_seed(17)
    density = torch.rand(1, 3, 4, 5, generator=g, dtype=dtype).to(DEVICE).requires_grad_()
    features = None
    if mode == "emission_absorption":
        features = torch.rand(1, 2, 3, 4, 5, generator=g, dtype=dtype).to(DEVICE).requires_grad_()
    rotation = voxrender.rotation_from_angles(torch.tensor([0.4], dtype=dtype)).to(DEVICE).requires_grad_()
    cam = make_camera(projection, 3, (3, 4), 5, 1.0, None, None)
    args = (density, features, rotation, 3, 4, 5, MODE_ID[mode], TAU, PROJECTION_ID[projection], cam.floats())
    torch.library.opcheck(torch.ops.voxrender.project_volume_forward_triton.default, args)


def test_torch_compile_fullgraph_triton():
    g = torch.Generator().manual_seed(9)
    dens = torch.rand(2, 5, 6, 7, generator=g).to(DEVICE).requires_grad_()
    az = (torch.rand(2, generator=g) * 6).to(DEVICE).requires_grad_()
    fn = lambda d, a: voxrender.project_volume(d, azimuth=a, mode="absorption", backend="triton")
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    out = compiled(dens, az)
    torch.testing.assert_close(out, fn(dens, az))
    g1 = torch.autograd.grad(out.sum(), [dens, az])
    g2 = torch.autograd.grad(fn(dens, az).sum(), [dens, az])
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b)


def test_deterministic_mode_refuses_the_atomic_backward():
    from vr_testing import assert_backward_refuses_determinism

    assert_backward_refuses_determinism("triton", DEVICE)
