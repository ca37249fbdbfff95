"""The command line: info, render-modes, --help."""

import subprocess
import sys

from PIL import Image


def run(*args, **kw):
    return subprocess.run([sys.executable, "-m", "voxrender", *args], capture_output=True, text=True, check=True, **kw)


def test_info_lists_backends_per_device():
    out = run("info").stdout
    assert "torch" in out and "project_volume on cpu: uses" in out
    for backend in ("torch", "cpu", "cuda", "triton"):
        assert f"    {backend}" in out


def test_render_modes_writes_pictures(tmp_path):
    out = run("render-modes", "--out", str(tmp_path), "--size", "16", "--frames", "3", "--scale", "1").stdout
    assert "modes.png" in out
    png = Image.open(tmp_path / "modes.png")
    assert png.size[1] == 16 + 4 and png.size[0] == 4 * 16 + 5 * 2  # four tiles with 2-pixel gaps
    gif = Image.open(tmp_path / "turntable.gif")
    assert gif.n_frames == 3
    # The renders are not blank: the scene covers part of every tile.
    px = png.convert("L").getextrema()
    assert px[0] < 50 and px[1] > 200


def test_help_explains_commands():
    out = run("--help").stdout
    assert "info" in out and "render-modes" in out
    sub = run("render-modes", "--help").stdout
    for opt in ("--out", "--size", "--frames", "--backend"):
        assert opt in sub
