import pytest

from voxrender import backends


@pytest.fixture(autouse=True)
def _no_env_backend(monkeypatch):
    # Tests choose backends explicitly; a developer's VOXRENDER_BACKEND must not change them.
    monkeypatch.delenv(backends.ENV_VAR, raising=False)
