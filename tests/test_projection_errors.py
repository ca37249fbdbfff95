"""Bad input gets a clear error naming the argument; backend selection follows the documented order."""

import os
import subprocess
import sys

import pytest
import torch

import voxrender as vr
from voxrender import backends

D = torch.rand(2, 4, 4, 4)


@pytest.mark.parametrize(
    "kwargs, exc, words",
    [
        (dict(density=torch.rand(4, 4, 4)), ValueError, "density"),
        (dict(density=torch.rand(2, 3, 4, 4, 4)), ValueError, "density"),
        (dict(density=torch.ones(2, 4, 4, 4, dtype=torch.int64)), TypeError, "density"),
        (dict(density=[[1.0]]), TypeError, "density"),
        (dict(rotation=torch.eye(3), azimuth=torch.zeros(2)), ValueError, "rotation"),
        (dict(rotation=torch.eye(3), elevation=0.1), ValueError, "rotation"),
        (dict(rotation=torch.eye(4)), ValueError, "rotation"),
        (dict(rotation=torch.eye(3).expand(3, 3, 3)), ValueError, "rotation"),
        (dict(rotation=torch.eye(3, dtype=torch.int32)), TypeError, "rotation"),
        (dict(azimuth=torch.zeros(3)), ValueError, "azimuth"),
        (dict(azimuth=torch.zeros(2, dtype=torch.int64)), TypeError, "azimuth"),
        (dict(azimuth="north"), TypeError, "azimuth"),
        (dict(elevation=torch.zeros(5)), ValueError, "elevation"),
        (dict(features=torch.rand(2, 3, 4, 4, 4)), ValueError, "features"),
        (dict(mode="emission_absorption"), ValueError, "features"),
        (dict(mode="emission_absorption", features=torch.rand(2, 3, 4, 4, 5)), ValueError, "features"),
        (dict(mode="emission_absorption", features=torch.rand(1, 3, 4, 4, 4)), ValueError, "features"),
        (dict(mode="emission_absorption", features=torch.ones(2, 3, 4, 4, 4, dtype=torch.int32)), TypeError, "features"),
        (dict(mode="emission_absorption", features=torch.rand(2, 3, 4, 4, 4), background=torch.zeros(2)), ValueError, "background"),
        (dict(background=1.0), ValueError, "background"),
        (dict(mode="mip"), ValueError, "mode"),
        (dict(projection="fisheye"), ValueError, "projection"),
        (dict(backend="vulkan"), ValueError, "backend"),
        (dict(n_samples=0), ValueError, "n_samples"),
        (dict(n_samples=2.5), ValueError, "n_samples"),
        (dict(image_size=0), ValueError, "image_size"),
        (dict(image_size=(4, 4, 4)), ValueError, "image_size"),
        (dict(tau=-1.0), ValueError, "tau"),
        (dict(tau="big"), TypeError, "tau"),
        (dict(extent=0.0), ValueError, "extent"),
        (dict(fov=30.0), ValueError, "fov"),
        (dict(projection="perspective", fov=190.0), ValueError, "fov"),
        (dict(projection="perspective", distance=1.0), ValueError, "distance"),
    ],
)
def test_bad_input_names_the_argument(kwargs, exc, words):
    kwargs = dict(kwargs)
    density = kwargs.pop("density", D)
    rotation = kwargs.pop("rotation", None)
    with pytest.raises(exc, match=words):
        vr.project_volume(density, rotation, **kwargs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a second device (CUDA) for a device mismatch")
def test_mixed_devices():
    with pytest.raises(ValueError, match="azimuth"):
        vr.project_volume(D, azimuth=torch.zeros(2, device="cuda"))
    with pytest.raises(ValueError, match="rotation"):
        vr.project_volume(D, torch.eye(3, device="cuda"))


def test_mixed_devices_meta():
    # The meta device stands in for a second device where there is no GPU.
    with pytest.raises(ValueError, match="azimuth"):
        vr.project_volume(D, azimuth=torch.zeros(2, device="meta"))
    with pytest.raises(ValueError, match="features"):
        vr.project_volume(D, mode="emission_absorption", features=torch.rand(2, 3, 4, 4, 4, device="meta"))


def test_cpp_op_checks_its_own_inputs():
    if backends.not_supported_reasons("cpu", torch.device("cpu"), torch.float32):
        pytest.skip("C++ extension not built")
    with pytest.raises(ValueError, match="rotation"):
        torch.ops.voxrender.project_volume_forward(D, None, torch.eye(3), 4, 4, 4, 0, 1.0, 0, [1.0] * 6)
    with pytest.raises(ValueError, match="n_samples"):
        torch.ops.voxrender.project_volume_forward(D, None, torch.eye(3).expand(2, 3, 3), 4, 4, 0, 0, 1.0, 0, [1.0] * 6)
    with pytest.raises(ValueError, match="features"):
        torch.ops.voxrender.project_volume_forward(D, None, torch.eye(3).expand(2, 3, 3), 4, 4, 4, 3, 1.0, 0, [1.0] * 6)


# ---- backend selection ------------------------------------------------------------------------------

def test_explicit_backend_that_cannot_run_lists_reasons():
    with pytest.raises(RuntimeError, match=r"backend 'cuda' \(requested by backend=\) cannot run.*cuda tensors"):
        vr.project_volume(D, backend="cuda")


def test_automatic_choice_on_cpu():
    expected = "cpu" if not backends.not_supported_reasons("cpu", torch.device("cpu"), torch.float32) else "torch"
    assert backends.select_backend("project_volume", torch.device("cpu"), torch.float32) == expected
    # Half precision is not supported by the C++ kernels: the automatic choice falls back to torch.
    assert backends.select_backend("project_volume", torch.device("cpu"), torch.float16) == "torch"


def test_selection_order(monkeypatch):
    dev, dt = torch.device("cpu"), torch.float32
    monkeypatch.setenv(backends.ENV_VAR, "torch")
    assert backends.select_backend("project_volume", dev, dt) == "torch"
    with vr.use_backend("cuda"):
        # context beats the environment, and an explicit request that cannot run raises
        with pytest.raises(RuntimeError, match="use_backend"):
            backends.select_backend("project_volume", dev, dt)
        # the argument beats the context
        assert backends.select_backend("project_volume", dev, dt, backend="torch") == "torch"
        with vr.use_backend("torch"):
            assert backends.select_backend("project_volume", dev, dt) == "torch"
    monkeypatch.setenv(backends.ENV_VAR, "cuda")
    with pytest.raises(RuntimeError, match=backends.ENV_VAR):
        backends.select_backend("project_volume", dev, dt)
    monkeypatch.setenv(backends.ENV_VAR, "opengl")
    with pytest.raises(ValueError, match=backends.ENV_VAR):
        backends.select_backend("project_volume", dev, dt)
    with pytest.raises(ValueError, match="use_backend"):
        with vr.use_backend("opengl"):
            pass


def test_context_selects_the_reference_for_real():
    # The reference and the fused path differ in rounding, so identical output shows which one ran.
    from voxrender.reference import project_volume_reference  # noqa: F401

    d = torch.rand(1, 5, 5, 5)
    with vr.use_backend("torch"):
        a = vr.project_volume(d, azimuth=0.3)
    b = vr.project_volume(d, azimuth=0.3, backend="torch")
    assert torch.equal(a, b)


def test_available_backends_reports_reasons():
    avail = vr.available_backends("cpu")
    assert avail["torch"] == []
    assert any("cuda" in r for r in avail["cuda"])
    if os.environ.get("TRITON_INTERPRET") != "1":
        assert any("TRITON_INTERPRET" in r or "triton" in r for r in avail["triton"])


def test_import_compiles_nothing_and_touches_no_driver():
    code = (
        "import sys, voxrender\n"
        "assert 'triton' not in sys.modules, 'triton imported at import time'\n"
        "assert 'voxrender._C' not in sys.modules, 'extension loaded at import time'\n"
        "import torch\n"
        "assert not torch.cuda.is_initialized()\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_no_extension_env_falls_back_to_torch():
    code = (
        "import torch, voxrender as vr\n"
        "from voxrender import backends\n"
        "assert backends.select_backend('project_volume', torch.device('cpu'), torch.float32) == 'torch'\n"
        "print(vr.project_volume(torch.rand(1, 4, 4, 4)).shape)\n"
    )
    env = dict(os.environ, VOXRENDER_NO_EXTENSION="1")
    out = subprocess.run([sys.executable, "-c", code], check=True, env=env, capture_output=True, text=True)
    assert "torch.Size([1, 1, 4, 4])" in out.stdout


def test_cpp_backward_checks_saved_tensors():
    if backends.not_supported_reasons("cpu", torch.device("cpu"), torch.float32):
        pytest.skip("C++ extension not built")
    rot = torch.eye(3)[None]
    d = torch.rand(1, 4, 4, 4)
    args = (d, None, rot, 4, 4, 4, 0, 1.0, 0, [1.0] * 6, False)
    with pytest.raises(ValueError, match="grad_out"):
        torch.ops.voxrender.project_volume_backward(torch.rand(1, 1, 4, 5), torch.rand(1, 1, 4, 4), torch.rand(1, 4, 4), *args)
    with pytest.raises(ValueError, match="aux"):
        torch.ops.voxrender.project_volume_backward(torch.rand(1, 1, 4, 4), torch.rand(1, 1, 4, 4), torch.rand(1, 4), *args)
    with pytest.raises(TypeError, match="out"):
        torch.ops.voxrender.project_volume_backward(torch.rand(1, 1, 4, 4), torch.rand(1, 1, 4, 4, dtype=torch.float64),
                                                    torch.rand(1, 4, 4), *args)
