"""Backend availability, not-supported reasons and selection.

Every op has up to four implementations:

=========  ============================================  ===============================================
backend    runs on                                       role
=========  ============================================  ===============================================
torch      anywhere                                      readable reference, autograd-derived; the oracle
cpu        CPU tensors, when the C++ extension is built  the fast CPU path
cuda       CUDA tensors, when built with nvcc            shares its per-pixel math with ``cpu``
triton     CUDA tensors; CPU under ``TRITON_INTERPRET=1``  the zero-build GPU path
=========  ============================================  ===============================================

Selection order: the ``backend=`` argument, then the innermost :func:`use_backend` context, then the
``VOXRENDER_BACKEND`` environment variable, then a priority list for the input's device. Any of the first
three is an explicit request: if it cannot run on the inputs, a RuntimeError lists why. The automatic
choice takes the first backend of the priority list with no not-supported reason.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os

import torch

BACKENDS = ("torch", "cpu", "cuda", "triton")
ENV_VAR = "VOXRENDER_BACKEND"

# Automatic choice per device type. On CUDA the C++ kernels come first: they need no JIT warm-up;
# triton is the zero-build fallback. The Triton interpreter is never chosen automatically on the CPU
# (it is a correctness tool, far slower than the C++ path).
PRIORITY = {"cuda": ("cuda", "triton", "torch"), "cpu": ("cpu", "torch")}

FLOAT_DTYPES = (torch.float32, torch.float64)

# Backends each op has so far.
IMPLEMENTED = {
    "project_volume": BACKENDS,
    "rasterize": ("torch", "cpu", "cuda", "triton"),
    "interpolate": ("torch", "cpu", "cuda", "triton"),
    "antialias": ("torch", "cpu", "cuda"),
}

_context_stack: list[str] = []


@contextlib.contextmanager
def use_backend(name: str):
    """Within the block, ops without an explicit ``backend=`` use ``name`` (contexts nest)."""
    check_backend_name(name, "use_backend")
    _context_stack.append(name)
    try:
        yield
    finally:
        _context_stack.pop()


def check_backend_name(name, arg: str = "backend") -> None:
    if name not in BACKENDS:
        raise ValueError(f"{arg}: unknown backend {name!r}; expected one of {', '.join(BACKENDS)}")


# Probed once per process (a plain dict rather than functools.lru_cache, which torch.compile traces through).
_probe: dict[str, object] = {}


def extension_status() -> tuple[object | None, str]:
    """(the voxrender._C module or None, why not)."""
    if "ext" not in _probe:
        _probe["ext"] = _load_extension()
    return _probe["ext"]


def _load_extension() -> tuple[object | None, str]:
    if os.environ.get("VOXRENDER_NO_EXTENSION", "0") == "1":
        return None, "VOXRENDER_NO_EXTENSION=1 is set"
    try:
        from . import _C  # noqa: F401  (registers the torch.ops.voxrender schemas and kernels)
    except ImportError as e:
        return None, f"the C++ extension voxrender._C is not built or failed to load ({e})"
    from .ops import _cpp_ops  # noqa: F401  (fake kernels and autograd for the C++ ops)

    return _C, ""


def extension_built_with_cuda() -> bool:
    ext, _ = extension_status()
    return bool(ext is not None and ext.with_cuda())


def triton_interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def triton_import_error() -> str:
    if "triton" not in _probe:
        _probe["triton"] = _import_triton()
    return _probe["triton"]


def _import_triton() -> str:
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed (pip install triton; Linux x86-64 only)"
    try:
        import triton  # noqa: F401
    except Exception as e:  # a broken install should read as a reason, not a crash
        return f"triton failed to import ({e})"
    return ""


def not_supported_reasons(backend: str, device: torch.device, dtype: torch.dtype,
                          op: str = "project_volume") -> list[str]:
    """Why ``backend`` cannot run ``op`` on tensors of this device and dtype (empty list: it can)."""
    reasons: list[str] = []
    if backend not in IMPLEMENTED[op]:
        return [f"{op} has no {backend} implementation yet (available: {', '.join(IMPLEMENTED[op])})"]
    if backend == "torch":
        return reasons
    if dtype not in FLOAT_DTYPES:
        reasons.append(f"dtype {dtype} is not supported (float32, float64); the torch backend handles it")
    if backend in ("cpu", "cuda"):
        ext, why = extension_status()
        if ext is None:
            reasons.append(why)
        elif backend == "cuda" and not ext.with_cuda():
            reasons.append("the C++ extension was built without CUDA (rebuild with a CUDA torch and nvcc, or FORCE_CUDA=1)")
        if device.type != backend:
            reasons.append(f"inputs are on {device}, the {backend} backend needs {backend} tensors")
    elif backend == "triton":
        err = triton_import_error()
        if err:
            reasons.append(err)
        if device.type == "cpu" and not triton_interpret():
            reasons.append("inputs are on the CPU: triton runs on CUDA tensors, or on CPU tensors only under TRITON_INTERPRET=1")
        elif device.type not in ("cpu", "cuda"):
            reasons.append(f"inputs are on {device}; triton needs CUDA tensors")
    return reasons


def requested_backend(backend: str | None) -> tuple[str | None, str]:
    """The explicitly requested backend, if any, and where the request came from."""
    if backend is not None:
        check_backend_name(backend)
        return backend, "backend="
    if _context_stack:
        return _context_stack[-1], "voxrender.use_backend(...)"
    env = os.environ.get(ENV_VAR)
    if env:
        check_backend_name(env, ENV_VAR)
        return env, ENV_VAR
    return None, ""


def select_backend(op: str, device: torch.device, dtype: torch.dtype, backend: str | None = None) -> str:
    """Chooses the backend that runs ``op`` (see the module docstring for the rules)."""
    name, source = requested_backend(backend)
    if name is not None:
        reasons = not_supported_reasons(name, device, dtype, op)
        if reasons:
            raise RuntimeError(
                f"{op}: backend {name!r} (requested by {source}) cannot run here: " + "; ".join(reasons)
            )
        return name
    for candidate in PRIORITY.get(device.type, ("torch",)):
        if not not_supported_reasons(candidate, device, dtype, op):
            return candidate
    return "torch"


def available_backends(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                       op: str = "project_volume") -> dict[str, list[str]]:
    """{backend: reasons it cannot run ``op``} for tensors of this device and dtype (empty list = available)."""
    device = torch.device(device)
    return {b: not_supported_reasons(b, device, dtype, op) for b in BACKENDS}
