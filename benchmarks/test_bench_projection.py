"""pytest-benchmark suites of ``voxrender.project_volume``, beside the plain-PyTorch grid_sample pipeline.

    pytest benchmarks --benchmark-enable                          # everything this machine can run
    pytest benchmarks --benchmark-enable -k "cpu and absorption"  # a selection
    pytest benchmarks                                             # smoke: each case once, small size

Cases: device and size (CPU: B=16, 32^3 -> 32^2; GPU: B=64, 64^3 -> 64^2 and B=32, 128^3 -> 128^2)
x variant (the backends that run on that device, and ``grid_sample``) x mode x rotation (identity, or
random azimuth + elevation) x pass (``fwd``; ``fwd+bwd``: gradients of density, features and angles).
Each benchmark group holds the variants of one (device, size, mode, rotation, pass), so pytest-benchmark's
table compares them directly. GPU callables synchronise before returning and are warmed up first.
"""

from __future__ import annotations

import pytest
import torch

from bench_cases import (BASELINE, CPU_SIZES, GPU_SIZES, MODES, ROTATIONS, SMOKE, Size, floor_bytes, make_inputs,
                         make_step)
from voxrender import available_backends

WARMUP_CALLS = 3  # before timing, with benchmarks enabled: Triton JIT and autotuning, allocator caches

VARIANTS = {"cpu": ("cpu", "torch", BASELINE), "cuda": ("cuda", "triton", "torch", BASELINE)}


def skip_unless_runnable(variant: str, device: str, dtype=torch.float32) -> None:
    """Skips (with one message per reason, so ``-ra`` folds them) unless ``variant`` runs here.

    The reasons are voxrender's own (``available_backends``): a skip only ever means "not available".
    """
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("GPU benchmark: torch.cuda.is_available() is False")
    if variant == BASELINE:
        return
    reasons = available_backends(device, dtype)[variant]
    if reasons:
        pytest.skip(f"backend {variant!r} unavailable on {device}: " + "; ".join(reasons))


def _cases():
    cases = []
    for device, sizes in (("cpu", CPU_SIZES), ("cuda", GPU_SIZES)):
        marks = [pytest.mark.gpu] if device == "cuda" else []
        for size in sizes:
            for variant in VARIANTS[device]:
                vmarks = marks + ([pytest.mark.triton] if variant == "triton" else [])
                cases.append(pytest.param(device, size, variant, marks=vmarks,
                                          id=f"{device}-B{size.batch}-N{size.grid}-{variant}"))
    return cases


@pytest.mark.parametrize("pass_", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("rotation", ROTATIONS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("device,size,variant", _cases())
def test_projection(benchmark, benchmark_enabled, device, size, variant, mode, rotation, pass_):
    skip_unless_runnable(variant, device)
    size = size if benchmark_enabled else SMOKE
    inputs = make_inputs(size, mode, rotation, device)
    step = make_step(variant, inputs, mode, size, pass_)
    benchmark.group = f"{device} {size.label} {mode} {rotation} {pass_}"
    benchmark.extra_info.update(device=device, size=size.label, variant=variant, mode=mode, rotation=rotation,
                                pass_=pass_, floor_bytes=floor_bytes(size, mode, pass_))
    if benchmark_enabled:
        for _ in range(WARMUP_CALLS):
            step()
    result = benchmark(step)
    out = result[0] if isinstance(result, tuple) else result
    channels = 4 if mode == "emission_absorption" else 1
    assert out.shape == (size.batch, channels, size.image, size.image)
    assert torch.isfinite(out).all()
    if isinstance(result, tuple):
        assert all(torch.isfinite(g).all() for g in result[1])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("variant", ["torch", "cpu"])
def test_baseline_renders_what_voxrender_renders(variant, mode):
    """The comparison is like for like: the grid_sample baseline and voxrender give the same images and
    gradients on the same inputs (float64; random azimuth + elevation)."""
    skip_unless_runnable(variant, "cpu", torch.float64)
    size = Size(2, 10, 9, 11)
    inputs = make_inputs(size, mode, "random", "cpu", dtype=torch.float64, seed=3)
    got = make_step(variant, inputs, mode, size, "fwd+bwd")()
    want = make_step(BASELINE, inputs, mode, size, "fwd+bwd")()
    torch.testing.assert_close(got[0], want[0], rtol=1e-10, atol=1e-12)
    if mode != "max":  # max: the baseline (amax) splits the gradient between tied samples
        for g, w in zip(got[1], want[1]):
            torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-11)

