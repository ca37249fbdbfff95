import sys

import pytest

from voxrender import backends


@pytest.fixture(autouse=True)
def _no_env_backend(monkeypatch):
    # Tests choose backends explicitly; a developer's VOXRENDER_BACKEND must not change them.
    monkeypatch.delenv(backends.ENV_VAR, raising=False)


@pytest.fixture
def one_thread():
    """One intra-op thread for the test: small ops run much faster (and steadier) than with several on a
    busy machine."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def load_tool():
    """Imports ``tools/NAME.py`` (the developer scripts are not a package) and returns the module."""
    import importlib.util
    from pathlib import Path

    def load(name: str):
        path = Path(__file__).resolve().parents[1] / "tools" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


class CliResult:
    def __init__(self, code, out, err):
        self.returncode, self.stdout, self.stderr = code, out, err


@pytest.fixture
def run_cli(capsys):
    """Runs ``voxrender ARGS`` in this process (no interpreter start-up: seconds saved per call) and
    returns its exit code, stdout and stderr."""
    from voxrender.cli import main

    def run(*args):
        try:
            code = main(list(args))
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            if isinstance(e.code, str):
                print(e.code, file=sys.stderr)
        out, err = capsys.readouterr()
        return CliResult(code, out, err)

    return run
