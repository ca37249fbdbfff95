"""The C++ backends against the reference: random inputs, forward and backward, gradcheck, opcheck, compile."""

import math

import pytest
import torch

import voxrender as vr
from vr_testing import assert_backward_refuses_determinism, backend_or_skip, needs_cuda, tol

MODES = ["absorption", "sum", "max", "emission_absorption"]
PROJECTIONS = ["orthographic", "perspective"]


def make_inputs(seed, dtype, device="cpu", shape=(3, 7, 9, 6), channels=5, mode="absorption", noncontig=False):
    g = torch.Generator().manual_seed(seed)
    b, d, h, w = shape
    if noncontig:
        # A permuted, sliced view: strides that are neither contiguous nor dense.
        dens = torch.rand(b, w, 2 * h, d, generator=g, dtype=dtype).permute(0, 3, 2, 1)[:, :, ::2]
    else:
        dens = torch.rand(b, d, h, w, generator=g, dtype=dtype)
    feats = torch.rand(b, channels, d, h, w, generator=g, dtype=dtype) if mode == "emission_absorption" else None
    az = torch.rand(b, generator=g, dtype=dtype) * 2 * math.pi
    el = (torch.rand(b, generator=g, dtype=dtype) - 0.5) * 1.5
    out = [dens, feats, az, el]
    return [x.to(device).requires_grad_() if x is not None else None for x in out]


def run(backend, dens, feats, az, el, mode, projection, **kw):
    out = vr.project_volume(dens, azimuth=az, elevation=el, features=feats, image_size=(5, 8), n_samples=11,
                            mode=mode, projection=projection, tau=0.8, backend=backend, **kw)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(123), dtype=out.dtype).to(out.device)
    inputs = [x for x in (dens, feats, az, el) if x is not None]
    grads = torch.autograd.grad((out * g).sum(), inputs)
    return out, grads


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("projection", PROJECTIONS)
@pytest.mark.parametrize("mode", MODES)
def test_cpu_matches_reference(mode, projection, dtype, seed):
    backend_or_skip("cpu", dtype=dtype)
    inputs = make_inputs(seed, dtype, mode=mode, noncontig=seed == 1)
    out_ref, g_ref = run("torch", *inputs, mode, projection)
    out, g = run("cpu", *inputs, mode, projection)
    rtol, atol = tol(dtype)
    torch.testing.assert_close(out, out_ref, rtol=rtol, atol=atol)
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol * 10)


@pytest.mark.parametrize("mode", MODES)
def test_cpu_larger_random_volume_float32(mode):
    backend_or_skip("cpu")
    inputs = make_inputs(7, torch.float32, shape=(2, 16, 12, 20), channels=3, mode=mode)
    kw = dict(image_size=(13, 17), n_samples=19, mode=mode, tau=0.3, backend=None)
    ref = vr.project_volume(inputs[0], azimuth=inputs[2], features=inputs[1], **{**kw, "backend": "torch"})
    out = vr.project_volume(inputs[0], azimuth=inputs[2], features=inputs[1], **{**kw, "backend": "cpu"})
    torch.testing.assert_close(out, ref, rtol=2e-5, atol=2e-5)


def test_cpu_rotation_matrix_gradient_and_shared_rotation():
    backend_or_skip("cpu", dtype=torch.float64)
    g = torch.Generator().manual_seed(3)
    dens = torch.rand(2, 6, 5, 7, generator=g, dtype=torch.float64)
    r = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))[0].requires_grad_()
    grads = []
    for backend in ("torch", "cpu"):
        out = vr.project_volume(dens, r, mode="absorption", image_size=6, backend=backend)
        grads.append(torch.autograd.grad(out.square().sum(), r)[0])
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-10, atol=1e-12)


def test_cpu_five_dim_density_and_extent():
    backend_or_skip("cpu", dtype=torch.float64)
    dens = torch.rand(2, 1, 6, 6, 6, dtype=torch.float64)
    for extent in (0.5, 1.7):
        a = vr.project_volume(dens, azimuth=0.4, extent=extent, backend="cpu")
        b = vr.project_volume(dens, azimuth=0.4, extent=extent, backend="torch")
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_cpu_max_mode_ties_take_the_first_sample():
    backend_or_skip("cpu", dtype=torch.float64)
    dens = torch.zeros(1, 4, 2, 2, dtype=torch.float64)
    dens[0, 1] = 0.5
    dens[0, 3] = 0.5  # the same maximum further back
    dens.requires_grad_()
    for backend in ("cpu", "torch"):
        out = vr.project_volume(dens, mode="max", backend=backend)
        (grad,) = torch.autograd.grad(out.sum(), dens)
        assert grad[0, 1].eq(1).all() and grad[0, 3].eq(0).all(), backend


@pytest.mark.parametrize("backend", ["torch", "cpu"])
@pytest.mark.parametrize("projection", PROJECTIONS)
@pytest.mark.parametrize("mode", MODES)
def test_gradcheck_float64(backend, mode, projection):
    backend_or_skip(backend, dtype=torch.float64)
    dens, feats, az, el = make_inputs(11, torch.float64, shape=(2, 4, 5, 3), channels=2, mode=mode)

    def f(dens, az, el, *feats):
        return vr.project_volume(dens, azimuth=az, elevation=el, features=feats[0] if feats else None,
                                 image_size=(3, 4), n_samples=6, mode=mode, projection=projection, tau=0.9,
                                 backend=backend)

    args = (dens, az, el) + ((feats,) if feats is not None else ())
    assert torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-6, rtol=1e-5)


def test_background_gradient():
    backend_or_skip("cpu", dtype=torch.float64)
    dens, feats, az, el = make_inputs(2, torch.float64, shape=(2, 4, 4, 4), channels=3, mode="emission_absorption")
    bg = torch.rand(3, dtype=torch.float64, requires_grad=True)
    f = lambda bg, feats: vr.project_volume(dens, azimuth=az, features=feats, mode="emission_absorption",
                                            background=bg, backend="cpu")
    assert torch.autograd.gradcheck(f, (bg, feats), eps=1e-6, atol=1e-6)


def test_opcheck_cpp_forward():
    backend_or_skip("cpu", dtype=torch.float64)
    from voxrender.camera import make_camera

    g = torch.Generator().manual_seed(0)
    for mode, feats in ((0, None), (2, None), (3, torch.rand(2, 2, 3, 4, 5, generator=g, dtype=torch.float64))):
        dens = torch.rand(2, 3, 4, 5, generator=g, dtype=torch.float64, requires_grad=True)
        rot = vr.rotation_from_angles(torch.rand(2, dtype=torch.float64)).requires_grad_()
        if feats is not None:
            feats.requires_grad_()
        cam = make_camera("perspective", 3, (4, 6), 5, 1.0, None, None)
        args = (dens, feats, rot, 4, 6, 5, mode, 0.7, cam.projection, cam.floats())
        torch.library.opcheck(torch.ops.voxrender.project_volume_forward.default, args)


@pytest.mark.parametrize("backend", ["cpu", "torch"])
def test_torch_compile_fullgraph(backend):
    backend_or_skip(backend)
    dens, _, az, el = make_inputs(5, torch.float32, shape=(2, 6, 6, 6))
    fn = lambda d, a, e: vr.project_volume(d, azimuth=a, elevation=e, mode="absorption", backend=backend)
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    out = compiled(dens, az, el)
    torch.testing.assert_close(out, fn(dens, az, el))
    (g1,) = torch.autograd.grad(out.sum(), dens)
    (g2,) = torch.autograd.grad(fn(dens, az, el).sum(), dens)
    torch.testing.assert_close(g1, g2)


def test_torch_compile_inductor_cpu_backend():
    backend_or_skip("cpu")
    dens, _, az, _ = make_inputs(6, torch.float32, shape=(2, 6, 6, 6))
    fn = lambda d, a: vr.project_volume(d, azimuth=a, mode="sum", backend="cpu") * 2
    out = torch.compile(fn, fullgraph=True)(dens, az)
    torch.testing.assert_close(out, fn(dens, az))


def test_fused_backward_saves_only_per_pixel_state():
    """The cpu backend keeps O(B * Ho * Wo) for backward; the reference keeps every sample."""
    backend_or_skip("cpu")
    dens = torch.rand(2, 16, 16, 16, requires_grad=True)
    az = torch.rand(2, requires_grad=True)

    def saved_numel(backend):
        sizes = []

        def pack(t):
            sizes.append(t.numel())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            vr.project_volume(dens, azimuth=az, backend=backend)
        # Inputs are saved by reference; count what is not an input-sized tensor.
        return sum(s for s in sizes if s != dens.numel())

    image = 2 * 16 * 16
    assert saved_numel("cpu") <= 2 * image + 64  # output + per-pixel aux (+ a few pose scalars)
    assert saved_numel("torch") >= 16 * image  # the (B, K, Ho, Wo) samples


def test_empty_batch():
    backend_or_skip("cpu")
    out = vr.project_volume(torch.rand(0, 4, 4, 4), backend="cpu")
    assert out.shape == (0, 1, 4, 4)


def test_volume_projector_module():
    proj = vr.VolumeProjector(image_size=(6, 5), mode="sum", tau=0.5, backend="cpu" if vr.available_backends()["cpu"] == [] else "torch")
    dens = torch.rand(2, 4, 4, 4)
    out = proj(dens, azimuth=torch.zeros(2))
    assert out.shape == (2, 1, 6, 5)
    assert "mode='sum'" in repr(proj)


@needs_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("projection", PROJECTIONS)
@pytest.mark.parametrize("mode", MODES)
def test_cuda_matches_reference(mode, projection, dtype):
    backend_or_skip("cuda", "cuda", dtype)
    for seed in range(2):
        inputs = make_inputs(seed, dtype, device="cuda", mode=mode, noncontig=seed == 1)
        out_ref, g_ref = run("torch", *inputs, mode, projection)
        out, g = run("cuda", *inputs, mode, projection)
        rtol, atol = tol(dtype)
        torch.testing.assert_close(out, out_ref, rtol=rtol, atol=atol)
        for a, b in zip(g, g_ref):
            torch.testing.assert_close(a, b, rtol=rtol, atol=atol * 10)


@needs_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("mode", MODES)
def test_cuda_gradcheck_float64(mode):
    backend_or_skip("cuda", "cuda", torch.float64)
    dens, feats, az, el = make_inputs(11, torch.float64, device="cuda", shape=(2, 4, 5, 3), channels=2, mode=mode)
    f = lambda d, a, e, *fe: vr.project_volume(d, azimuth=a, elevation=e, features=fe[0] if fe else None,
                                               image_size=(3, 4), n_samples=6, mode=mode, backend="cuda")
    args = (dens, az, el) + ((feats,) if feats is not None else ())
    assert torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-6, rtol=1e-5)


@needs_cuda
@pytest.mark.gpu
def test_cuda_larger_volume_and_opcheck():
    backend_or_skip("cuda", "cuda")
    inputs = make_inputs(4, torch.float32, device="cuda", shape=(4, 64, 48, 40), mode="absorption")
    ref = vr.project_volume(inputs[0], azimuth=inputs[2], image_size=(37, 53), backend="torch")
    out = vr.project_volume(inputs[0], azimuth=inputs[2], image_size=(37, 53), backend="cuda")
    torch.testing.assert_close(out, ref, rtol=2e-5, atol=2e-5)
    from voxrender.camera import make_camera

    cam = make_camera("orthographic", 3, (4, 6), 5, 1.0, None, None)
    dens = torch.rand(2, 3, 4, 5, device="cuda", dtype=torch.float64, requires_grad=True)
    rot = vr.rotation_from_angles(torch.rand(2, device="cuda", dtype=torch.float64)).requires_grad_()
    torch.library.opcheck(torch.ops.voxrender.project_volume_forward.default,
                          (dens, None, rot, 4, 6, 5, 0, 0.7, cam.projection, cam.floats()))


def test_cpu_baseline_copy_matches_reference():
    """The portable (non-AVX2) copy of the CPU kernels, forced by VOXRENDER_CPU_BASELINE=1."""
    backend_or_skip("cpu", dtype=torch.float64)
    import os
    import subprocess
    import sys

    code = (
        "import math, torch, voxrender as vr\n"
        "from voxrender.backends import extension_status\n"
        "assert extension_status()[0].cpu_isa() == 'baseline'\n"
        "g = torch.Generator().manual_seed(5)\n"
        "for mode in ('absorption', 'max', 'emission_absorption'):\n"
        "    for dt in (torch.float32, torch.float64):\n"
        "        d = torch.rand(2, 7, 9, 6, generator=g, dtype=dt, requires_grad=True)\n"
        "        f = torch.rand(2, 3, 7, 9, 6, generator=g, dtype=dt, requires_grad=True) if mode == 'emission_absorption' else None\n"
        "        az = (torch.rand(2, generator=g, dtype=dt) * 6).requires_grad_()\n"
        "        res = []\n"
        "        for be in ('torch', 'cpu'):\n"
        "            o = vr.project_volume(d, azimuth=az, elevation=0.3, features=f, image_size=(5, 11), n_samples=13, mode=mode, backend=be)\n"
        "            res.append([o] + list(torch.autograd.grad(o.square().sum(), [d, az])))\n"
        "        tol = dict(rtol=1e-10, atol=1e-12) if dt == torch.float64 else dict(rtol=2e-5, atol=2e-5)\n"
        "        for a, b in zip(*res):\n"
        "            torch.testing.assert_close(a, b, **tol)\n"
        "print('baseline ok')\n"
    )
    env = dict(os.environ, VOXRENDER_CPU_BASELINE="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "baseline ok" in out.stdout


def test_cpu_backward_is_deterministic():
    backend_or_skip("cpu")
    dens, feats, az, el = make_inputs(3, torch.float32, shape=(3, 12, 10, 11), mode="emission_absorption")
    try:
        torch.use_deterministic_algorithms(True)  # the cpu backend has no atomics: allowed
        runs = [run("cpu", dens, feats, az, el, "emission_absorption", "orthographic") for _ in range(2)]
    finally:
        torch.use_deterministic_algorithms(False)
    for a, b in zip(runs[0][1], runs[1][1]):
        assert torch.equal(a, b)


@needs_cuda
@pytest.mark.gpu
def test_cuda_backward_alerts_in_deterministic_mode():
    backend_or_skip("cuda", "cuda")
    assert_backward_refuses_determinism("cuda", "cuda")
