"""Hypothesis fuzzing of shapes, sizes and poses: the cpu backend against the reference."""

import pytest
import torch

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis is a dev dependency (pip install -e '.[dev]')")
from hypothesis import given, settings, strategies as st  # noqa: E402

import voxrender as vr  # noqa: E402
from vr_testing import backend_or_skip  # noqa: E402

MODES = ["absorption", "sum", "max", "emission_absorption"]


@settings(max_examples=40, deadline=None, derandomize=False)
@given(
    b=st.integers(1, 3),
    d=st.integers(1, 9),
    h=st.integers(1, 9),
    w=st.integers(1, 9),
    ho=st.integers(1, 19),
    wo=st.integers(1, 19),
    k=st.integers(1, 23),
    channels=st.integers(1, 6),
    mode=st.sampled_from(MODES),
    projection=st.sampled_from(["orthographic", "perspective"]),
    extent=st.floats(0.3, 2.0),
    seed=st.integers(0, 2**31 - 1),
)
def test_cpu_matches_reference_on_fuzzed_shapes(b, d, h, w, ho, wo, k, channels, mode, projection, extent, seed):
    backend_or_skip("cpu", dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    dens = torch.rand(b, d, h, w, generator=g, dtype=torch.float64, requires_grad=True)
    feats = None
    if mode == "emission_absorption":
        feats = torch.rand(b, channels, d, h, w, generator=g, dtype=torch.float64, requires_grad=True)
    rot = torch.linalg.qr(torch.randn(b, 3, 3, generator=g, dtype=torch.float64))[0].requires_grad_()
    kw = dict(features=feats, image_size=(ho, wo), n_samples=k, mode=mode, projection=projection, extent=extent)
    outs, grads = [], []
    for backend in ("torch", "cpu"):
        out = vr.project_volume(dens, rot, backend=backend, **kw)
        gout = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed + 1), dtype=out.dtype)
        inputs = [dens, rot] + ([feats] if feats is not None else [])
        outs.append(out)
        grads.append(torch.autograd.grad((out * gout).sum(), inputs))
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-10, atol=1e-12)
    for a, r in zip(grads[1], grads[0]):
        torch.testing.assert_close(a, r, rtol=1e-9, atol=1e-10)
