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


def test_render_mesh_writes_shaded_and_depth_tiles(tmp_path):
    out = run("render-mesh", "--out", str(tmp_path), "--size", "24").stdout
    assert "mesh.png" in out and "shaded | depth" in out
    png = Image.open(tmp_path / "mesh.png").convert("RGB")
    assert png.size == (2 * 24 + 3 * 2, 24 + 2 * 2)  # two tiles with 2-pixel gaps
    shaded = png.crop((2, 2, 26, 26))
    depth = png.crop((28, 2, 52, 26))
    # Not blank: the mesh covers the middle of both tiles over a white background.
    assert shaded.getpixel((0, 0)) == (255, 255, 255) and depth.getpixel((0, 0)) == (255, 255, 255)
    assert shaded.getpixel((12, 12)) != (255, 255, 255) and depth.getpixel((12, 12)) != (255, 255, 255)
    r, g, b = shaded.getpixel((12, 12))
    assert r == g == b  # grey shading
    r, g, b = depth.getpixel((12, 12))
    assert r > b  # the depth colour map (warm)


def test_render_mesh_from_files_right_way_up(tmp_path):
    # An OBJ tetrahedron-ish spike, +y up (the OBJ convention): the apex must appear in the top rows.
    obj = tmp_path / "spike.obj"
    obj.write_text("v 0 2 0\nv -1 -1 1\nv 1 -1 1\nv 0 -1 -1\nf 1 2 3\nf 1 3 4\nf 1 4 2\nf 2 4 3\n")
    run("render-mesh", "--mesh", str(obj), "--out", str(tmp_path), "--size", "32", "--elevation", "0")
    png = Image.open(tmp_path / "mesh.png").convert("L").crop((2, 2, 34, 34))
    rows = [i for i in range(32) if any(png.getpixel((j, i)) < 250 for j in range(32))]
    widths = [sum(png.getpixel((j, i)) < 250 for j in range(32)) for i in rows]
    # Narrow apex at the top, wide base in the lower half (antialiasing may add a thin partly covered
    # row below the base's edge, so compare with the widest row rather than the last).
    widest = max(range(len(widths)), key=widths.__getitem__)
    assert widths[0] < widths[widest] / 3 and widest > len(widths) / 2, widths
    # OFF with ModelNet40's header and +z up.
    off = tmp_path / "spike.off"
    off.write_text("OFF4 4 0\n0 0 2\n-1 1 -1\n1 1 -1\n0 -1 -1\n3 0 1 2\n3 0 2 3\n3 0 3 1\n3 1 3 2\n")
    out = run("render-mesh", "--mesh", str(off), "--up", "+z", "--out", str(tmp_path), "--size", "16").stdout
    assert "4 vertices, 4 triangles" in out


def test_render_mesh_bad_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.off"
    bad.write_text("OFF\n3 1 0\n0 0 0\n1 0 0\n")
    r = subprocess.run([sys.executable, "-m", "voxrender", "render-mesh", "--mesh", str(bad), "--out", str(tmp_path)],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "bad.off" in r.stderr and "ends after 2 of 3 vertices" in r.stderr
    assert "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "voxrender", "render-mesh", "--mesh", str(tmp_path / "m.stl")],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "unknown mesh format" in r.stderr


def test_render_mesh_help():
    from voxrender.cli import build_parser

    assert "render-mesh" in build_parser().format_help()
    sub = run("render-mesh", "--help").stdout
    for opt in ("--mesh", "--size", "--out", "--up", "--azimuth", "--elevation", "--backend"):
        assert opt in sub
