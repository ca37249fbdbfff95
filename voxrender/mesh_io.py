"""Triangle meshes from and to files: Wavefront OBJ and OFF (ModelNet40's format), numpy/torch only.

``load_mesh(path) -> (verts (V, 3) float32, faces (F, 3) int64)``; polygons are fan-triangulated
(v0, v_k, v_k+1), which keeps their winding. Malformed files raise :class:`MeshFormatError` (a
``ValueError``) naming the file and the line.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .io import _atomic_target

MESH_SUFFIXES = (".obj", ".off")


class MeshFormatError(ValueError):
    """A mesh file that cannot be parsed; the message names the file and the line."""


def _fail(path, line_no: int | None, msg: str):
    where = f"{path}:{line_no}" if line_no is not None else f"{path}"
    raise MeshFormatError(f"{where}: {msg}")


def _read_lines(path) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"mesh file not found: {path}")
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read().splitlines()


def _fan(poly: list[int]) -> list[tuple[int, int, int]]:
    return [(poly[0], poly[k], poly[k + 1]) for k in range(1, len(poly) - 1)]


def _result(path, verts: list, faces: list) -> tuple[Tensor, Tensor]:
    v = torch.tensor(np.asarray(verts, dtype=np.float32).reshape(-1, 3))
    f = torch.tensor(np.asarray(faces, dtype=np.int64).reshape(-1, 3))
    if v.numel() and not torch.isfinite(v).all():
        _fail(path, None, "vertex coordinates contain NaN or infinity")
    return v, f


def load_obj(path: str | os.PathLike) -> tuple[Tensor, Tensor]:
    """Reads a Wavefront OBJ file: (verts (V, 3) float32, faces (F, 3) int64, 0-based).

    Reads ``v x y z [w | r g b]`` (the first three numbers) and ``f`` lines in every index form
    (``v``, ``v/vt``, ``v/vt/vn``, ``v//vn``; 1-based, or negative = relative to the vertices read so
    far); polygons are fan-triangulated. ``#`` comments, blank lines, ``\\`` line continuations and all
    other statements (vt, vn, o, g, s, usemtl, mtllib, l, p, ...) are ignored.
    """
    verts: list[tuple[float, float, float]] = []
    faces: list[tuple[int, int, int]] = []
    lines = _read_lines(path)
    k = 0
    while k < len(lines):
        line_no, line = k + 1, lines[k]
        k += 1
        while line.rstrip().endswith("\\") and k < len(lines):
            line = line.rstrip()[:-1] + " " + lines[k]
            k += 1
        tok = line.split("#", 1)[0].split()
        if not tok:
            continue
        if tok[0] == "v":
            if len(tok) < 4:
                _fail(path, line_no, f"a vertex needs 3 coordinates: {line.strip()!r}")
            try:
                verts.append((float(tok[1]), float(tok[2]), float(tok[3])))
            except ValueError:
                _fail(path, line_no, f"bad vertex coordinates: {line.strip()!r}")
        elif tok[0] == "f":
            if len(tok) < 4:
                _fail(path, line_no, f"a face needs at least 3 vertices: {line.strip()!r}")
            poly = []
            n = len(verts)
            for t in tok[1:]:
                try:
                    i = int(t.split("/", 1)[0])
                except ValueError:
                    _fail(path, line_no, f"bad face index {t!r}")
                if i > 0 and i <= n:
                    poly.append(i - 1)
                elif i < 0 and -i <= n:
                    poly.append(n + i)
                else:
                    _fail(path, line_no, f"face index {i} out of range (1..{n}, or -1..-{n} relative, "
                                         f"with {n} vertices read so far)")
            faces.extend(_fan(poly))
    return _result(path, verts, faces)


_OFF_KEYWORD = re.compile(r"^(ST)?(C)?(N)?(4)?(n)?OFF")


def load_off(path: str | os.PathLike) -> tuple[Tensor, Tensor]:
    """Reads an OFF file: (verts (V, 3) float32, faces (F, 3) int64, 0-based).

    Header: ``OFF`` (also ``COFF``, ``NOFF``, ``CNOFF``, ``STOFF``...: extra per-vertex values are
    ignored), then ``nv nf [ne]`` on the same line or a later one, including ModelNet40's malformed
    ``OFF490 518 0`` with no space after the keyword. Then nv vertex lines and nf face lines
    ``n i_1 ... i_n [colour]``; polygons are fan-triangulated and face colours ignored. ``#`` comments
    and blank lines are skipped anywhere.
    """
    lines = _read_lines(path)
    it = ((k + 1, line.split("#", 1)[0].split()) for k, line in enumerate(lines))
    it = ((n, tok) for n, tok in it if tok)
    first = next(it, None)
    if first is None:
        _fail(path, None, "empty file (expected an 'OFF' header)")
    line_no, tok = first
    m = _OFF_KEYWORD.match(tok[0])
    if m is None:
        _fail(path, line_no, f"expected an 'OFF' header, got {' '.join(tok)[:40]!r}")
    if m.group(4) or m.group(5):
        _fail(path, line_no, f"{m.group(0)!r}: only 3D OFF files are supported (not 4OFF / nOFF)")
    rest = [tok[0][m.end():]] if len(tok[0]) > m.end() else []
    counts = rest + tok[1:]
    if not counts:
        nxt = next(it, None)
        if nxt is None:
            _fail(path, None, "the file ends before the vertex and face counts")
        line_no, counts = nxt
    try:
        nv, nf = int(counts[0]), int(counts[1]) if len(counts) > 1 else None
    except ValueError:
        nv = nf = None
    if nv is None or nf is None or nv < 0 or nf < 0:
        _fail(path, line_no, f"expected the counts 'nv nf [ne]', got {' '.join(counts)!r}")

    verts = np.empty((nv, 3), dtype=np.float32)
    for k in range(nv):
        nxt = next(it, None)
        if nxt is None:
            _fail(path, None, f"the file ends after {k} of {nv} vertices")
        line_no, tok = nxt
        if len(tok) < 3:
            _fail(path, line_no, f"vertex {k} needs 3 coordinates, got {' '.join(tok)!r}")
        try:
            verts[k] = (float(tok[0]), float(tok[1]), float(tok[2]))
        except ValueError:
            _fail(path, line_no, f"bad coordinates of vertex {k}: {' '.join(tok)!r}")
    faces: list[tuple[int, int, int]] = []
    for k in range(nf):
        nxt = next(it, None)
        if nxt is None:
            _fail(path, None, f"the file ends after {k} of {nf} faces")
        line_no, tok = nxt
        try:
            n = int(tok[0])
            poly = [int(t) for t in tok[1:1 + n]]
        except ValueError:
            _fail(path, line_no, f"bad face {k}: {' '.join(tok)!r}")
        if n < 3 or len(poly) != n:
            _fail(path, line_no, f"face {k}: expected 'n i_1 ... i_n' with n >= 3, got {' '.join(tok)!r}")
        bad = [i for i in poly if not 0 <= i < nv]
        if bad:
            _fail(path, line_no, f"face {k}: vertex index {bad[0]} out of range (0..{nv - 1})")
        faces.extend(_fan(poly))
    return _result(path, verts, faces)


def load_mesh(path: str | os.PathLike) -> tuple[Tensor, Tensor]:
    """:func:`load_obj` or :func:`load_off` by the file's suffix (case-insensitive)."""
    suffix = Path(path).suffix.lower()
    if suffix == ".obj":
        return load_obj(path)
    if suffix == ".off":
        return load_off(path)
    raise ValueError(f"{path}: unknown mesh format {suffix or '(no suffix)'!r}; "
                     f"expected one of {', '.join(MESH_SUFFIXES)}")


def _as_arrays(verts, faces) -> tuple[np.ndarray, np.ndarray]:
    v = verts.detach().cpu().numpy() if isinstance(verts, Tensor) else np.asarray(verts)
    f = faces.detach().cpu().numpy() if isinstance(faces, Tensor) else np.asarray(faces)
    if v.ndim != 2 or v.shape[1] != 3 or not np.issubdtype(v.dtype, np.number):
        raise ValueError(f"verts: expected (V, 3) numbers, got shape {v.shape}")
    if f.ndim != 2 or f.shape[1] != 3 or not np.issubdtype(f.dtype, np.integer):
        raise ValueError(f"faces: expected (F, 3) integers, got shape {f.shape} dtype {f.dtype}")
    if f.size and (f.min() < 0 or f.max() >= len(v)):
        raise ValueError(f"faces: indices must lie in [0, {len(v) - 1}], got min {f.min()}, max {f.max()}")
    return v, f.astype(np.int64)


def save_obj(path: str | os.PathLike, verts, faces) -> Path:
    """Writes verts (V, 3) and faces (F, 3) (0-based) as OBJ, atomically (temp file + rename).

    Coordinates are written with 9 significant digits, so float32 vertices read back exactly."""
    v, f = _as_arrays(verts, faces)
    path, tmp = _atomic_target(path)
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(f"# voxrender mesh: {len(v)} vertices, {len(f)} triangles\n")
        if len(v):
            np.savetxt(fh, v.astype(np.float64), fmt="v %.9g %.9g %.9g")
        if len(f):
            np.savetxt(fh, f + 1, fmt="f %d %d %d")
    os.replace(tmp, path)
    return path


def save_off(path: str | os.PathLike, verts, faces) -> Path:
    """Writes verts (V, 3) and faces (F, 3) (0-based) as OFF, atomically (temp file + rename)."""
    v, f = _as_arrays(verts, faces)
    path, tmp = _atomic_target(path)
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(f"OFF\n{len(v)} {len(f)} 0\n")
        if len(v):
            np.savetxt(fh, v.astype(np.float64), fmt="%.9g %.9g %.9g")
        if len(f):
            np.savetxt(fh, f, fmt="3 %d %d %d")
    os.replace(tmp, path)
    return path


def save_mesh(path: str | os.PathLike, verts, faces) -> Path:
    """:func:`save_obj` or :func:`save_off` by the file's suffix."""
    suffix = Path(path).suffix.lower()
    if suffix == ".obj":
        return save_obj(path, verts, faces)
    if suffix == ".off":
        return save_off(path, verts, faces)
    raise ValueError(f"{path}: unknown mesh format {suffix or '(no suffix)'!r}; "
                     f"expected one of {', '.join(MESH_SUFFIXES)}")


def normalize_verts(verts: Tensor, radius: float = 1.0) -> Tensor:
    """Centres verts (..., V, 3) on their bounding box's centre and scales them so that the farthest
    vertex lies at ``radius`` (differentiable; a single point or an empty mesh is only centred)."""
    lo, hi = verts.amin(-2, keepdim=True), verts.amax(-2, keepdim=True)
    v = verts - (lo + hi) / 2
    r = v.norm(dim=-1, keepdim=True).amax(-2, keepdim=True)
    return v * (radius / torch.where(r > 0, r, torch.ones_like(r)))
