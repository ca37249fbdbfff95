"""Fixtures of the benchmark suites.

pyproject's ``addopts`` pass ``--benchmark-disable``: a plain ``pytest`` (CI) runs every benchmark once,
as a smoke test, at the small ``SMOKE`` size. ``pytest benchmarks --benchmark-enable`` times the real
sizes.
"""

from __future__ import annotations

import pytest
import torch

from voxrender import available_backends

from bench_cases import BASELINE, Size

# Real sizes (with --benchmark-enable) and the smoke size (benchmarks disabled, the default).
CPU_SIZES = (Size(16, 32, 32, 32),)
GPU_SIZES = (Size(64, 64, 64, 64), Size(32, 128, 128, 128))
SMOKE = Size(2, 12, 12, 12)

WARMUP_CALLS = 3  # before timing, with benchmarks enabled: Triton JIT and autotuning, allocator caches


@pytest.fixture
def benchmark_enabled(request) -> bool:
    return not request.config.getoption("benchmark_disable")


def skip_unless_runnable(variant: str, device: str, dtype=torch.float32) -> None:
    """Skips (with the same message for every case, so ``-ra`` folds them) unless ``variant`` runs here.

    The reasons are voxrender's own (``available_backends``): a skip only ever means "not available".
    """
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("GPU benchmark: torch.cuda.is_available() is False")
    if variant == BASELINE:
        return
    reasons = available_backends(device, dtype)[variant]
    if reasons:
        pytest.skip(f"backend {variant!r} unavailable on {device}: " + "; ".join(reasons))
