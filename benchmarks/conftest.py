"""Fixtures of the benchmark suites.

pyproject's ``addopts`` pass ``--benchmark-disable``: a plain ``pytest`` (CI) runs every benchmark once,
as a smoke test, at the small ``SMOKE`` size of ``bench_cases.py``. ``pytest benchmarks --benchmark-enable``
times the real sizes.
"""

from __future__ import annotations

import pytest


@pytest.fixture
def benchmark_enabled(request) -> bool:
    return not request.config.getoption("benchmark_disable")

