"""Fixtures of the benchmark suites.

pyproject's ``addopts`` pass ``--benchmark-disable``: a plain ``pytest`` (CI) runs every benchmark once,
as a smoke test, at the small ``SMOKE`` size of ``bench_cases.py``. ``pytest benchmarks --benchmark-enable``
times the real sizes.
"""

from __future__ import annotations

import pytest


@pytest.fixture
def benchmark_enabled(request, benchmark) -> bool:
    """True when this run times (--benchmark-enable beats the --benchmark-disable of addopts, as in
    pytest-benchmark itself, which also disables timing under xdist)."""
    disabled = getattr(benchmark, "disabled", None)
    if disabled is None:
        opt = request.config.getoption
        disabled = opt("benchmark_disable") and not opt("benchmark_enable")
    return not disabled

