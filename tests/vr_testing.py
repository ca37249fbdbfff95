"""Helpers shared by the test modules (a plain module: ``conftest`` names clash between tests/ and benchmarks/)."""

import pytest
import torch

from voxrender import backends


def cuda_available() -> bool:
    return torch.cuda.is_available()


needs_cuda = pytest.mark.skipif(not cuda_available(), reason="needs a CUDA GPU")


def backend_or_skip(name: str, device: str = "cpu", dtype=torch.float32):
    """Skips with the backend's own not-supported reasons (never hides a failure: only unavailability)."""
    reasons = backends.not_supported_reasons(name, torch.device(device), dtype)
    if reasons:
        pytest.skip(f"backend {name} unavailable on {device}: " + "; ".join(reasons))


def tol(dtype):
    """(rtol, atol) from the dtype: a few hundred ulps of accumulated rounding over K samples."""
    return (1e-10, 1e-12) if dtype == torch.float64 else (2e-5, 2e-6)


def assert_backward_refuses_determinism(backend: str, device) -> None:
    """A backward that sums with atomics must refuse under torch.use_deterministic_algorithms(True)."""
    import voxrender

    dens = torch.rand(1, 4, 4, 4, device=device, requires_grad=True)
    out = voxrender.project_volume(dens, backend=backend)
    try:
        torch.use_deterministic_algorithms(True)
        with pytest.raises(RuntimeError, match="deterministic"):
            out.sum().backward()
    finally:
        torch.use_deterministic_algorithms(False)
