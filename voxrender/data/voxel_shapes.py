"""The built-in procedural voxel shapes dataset (no download, generated on the fly).

Every item is a random solid (a box, an ellipsoid, a torus, a cylinder, an extruded glyph, or a union of
two or three of these) on an N^3 grid in the frame of :func:`voxrender.project_volume` (the cube
[-1, 1]^3, ``voxels[d, h, w]`` at (x, y, z) = (w, h, d) voxel centres, y down), seen from a random
azimuth (elevation 0) and rendered with ``project_volume``. The item is a pure function of
``(seed, split, index)``: the same triple gives the same shape, pose and image on every machine and in
every process, whatever was generated before, so training resumes bit-for-bit and held-out shapes never
appear in training (the splits draw from disjoint streams).

Shapes stay inside the vertical cylinder x^2 + z^2 <= 0.9^2 (and |y| <= 0.9), so every azimuth sees the
whole shape. Each shape has a canonical orientation (glyphs face the camera at azimuth 0, boxes and
cylinders are axis-aligned), so the azimuth is identifiable up to the shape's own symmetries.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor


KINDS = ("box", "ellipsoid", "torus", "cylinder", "glyph", "union")
SPLITS = {"train": 0, "test": 1, "val": 2}

# 5 x 5 glyphs (row 0 at the top: y is down in the library's frame), chosen without mirror symmetry so
# that the pose is identifiable from them.
GLYPHS = {
    "F": ["#####", "#....", "####.", "#....", "#...."],
    "L": ["#....", "#....", "#....", "#....", "#####"],
    "P": ["####.", "#...#", "####.", "#....", "#...."],
    "R": ["####.", "#...#", "####.", "#..#.", "#...#"],
    "J": ["..###", "...#.", "...#.", "#..#.", ".##.."],
    "Z": ["#####", "...#.", "..#..", ".#...", "#####"],
    "G": [".####", "#....", "#.###", "#...#", ".###."],
    "K": ["#...#", "#..#.", "###..", "#..#.", "#...#"],
}
GLYPH_NAMES = tuple(GLYPHS)

_RADIUS = 0.9  # shapes stay within x^2 + z^2 <= R^2 and |y| <= R


def item_seed(seed: int, split: str, index: int) -> int:
    """A 63-bit seed for one item, mixed (splitmix64) from (seed, split, index)."""
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {', '.join(SPLITS)}, got {split!r}")
    x = (int(seed) * 0x9E3779B97F4A7C15 + SPLITS[split] * 0xBF58476D1CE4E5B9 + int(index) + 1) % (1 << 64)
    for _ in range(2):
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) % (1 << 64)
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) % (1 << 64)
        x ^= x >> 31
    return x & ((1 << 63) - 1)


class _Rand:
    """Uniform numbers from a seeded numpy PCG64 generator (independent of every global RNG)."""

    def __init__(self, seed: int):
        self.g = np.random.Generator(np.random.PCG64(seed))

    def uniform(self, lo: float = 0.0, hi: float = 1.0) -> float:
        return lo + (hi - lo) * float(self.g.random())

    def integer(self, n: int) -> int:
        return int(self.g.integers(n))

    def colour(self) -> tuple[float, float, float]:
        # Saturated, bright colours: one channel high, the others random.
        c = [self.uniform(0.15, 0.9) for _ in range(3)]
        c[self.integer(3)] = 1.0
        return tuple(c)


# Primitives: each returns a bool numpy occupancy from the voxel-centre coordinates (z, y, x), broadcast
# views of shapes (n, 1, 1), (1, n, 1), (1, 1, n). numpy, not torch: single-threaded small ops are what
# a data generator wants (torch's intra-op threads only contend with the training step).

def _box(zyx, r: _Rand) -> Tensor:
    z, y, x = zyx
    cx, cy, cz = r.uniform(-0.15, 0.15), r.uniform(-0.15, 0.15), r.uniform(-0.15, 0.15)
    hx, hy, hz = r.uniform(0.15, 0.55), r.uniform(0.15, 0.6), r.uniform(0.1, 0.4)
    return (np.abs(x - cx) <= hx) & (np.abs(y - cy) <= hy) & (np.abs(z - cz) <= hz)


def _ellipsoid(zyx, r: _Rand) -> Tensor:
    z, y, x = zyx
    cx, cy, cz = r.uniform(-0.15, 0.15), r.uniform(-0.15, 0.15), r.uniform(-0.15, 0.15)
    ax, ay, az = r.uniform(0.25, 0.7), r.uniform(0.2, 0.7), r.uniform(0.15, 0.45)
    return ((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2 + ((z - cz) / az) ** 2 <= 1


def _torus(zyx, r: _Rand) -> Tensor:
    z, y, x = zyx
    major, minor = r.uniform(0.35, 0.6), r.uniform(0.1, 0.22)
    axis = r.integer(3)  # the ring's axis c: 0 = z (facing the camera), 1 = x, 2 = y (lying flat)
    a, b, c = [(x, y, z), (y, z, x), (z, x, y)][axis]
    return (np.sqrt(a ** 2 + b ** 2) - major) ** 2 + c ** 2 <= minor ** 2


def _cylinder(zyx, r: _Rand) -> Tensor:
    z, y, x = zyx
    radius, half = r.uniform(0.15, 0.45), r.uniform(0.3, 0.75)
    axis = r.integer(3)
    a, b, c = [(y, z, x), (x, z, y), (x, y, z)][axis]  # c is the axis
    cx = r.uniform(-0.15, 0.15)
    return ((a - cx * (axis != 0)) ** 2 + b ** 2 <= radius ** 2) & (np.abs(c) <= half)


def _glyph(zyx, r: _Rand) -> Tensor:
    z, y, x = zyx
    rows = GLYPHS[GLYPH_NAMES[r.integer(len(GLYPH_NAMES))]]
    size = r.uniform(0.9, 1.2)  # the glyph spans [-size / 2, size / 2] in x and y
    depth = r.uniform(0.12, 0.35)
    cell = size / 5
    col = np.floor((x + size / 2) / cell).astype(np.int64)
    row = np.floor((y + size / 2) / cell).astype(np.int64)
    inside = (col >= 0) & (col < 5) & (row >= 0) & (row < 5) & (np.abs(z) <= depth)
    bitmap = np.array([[ch == "#" for ch in line] for line in rows])
    return inside & bitmap[row.clip(0, 4), col.clip(0, 4)]


def _union(zyx, r: _Rand) -> Tensor:
    z, y, x = zyx
    occ = np.zeros((), dtype=bool)
    for _ in range(2 + r.integer(2)):
        kind = r.integer(3)
        cx, cy, cz = r.uniform(-0.45, 0.45), r.uniform(-0.45, 0.45), r.uniform(-0.35, 0.35)
        if kind == 0:  # small box
            hx, hy, hz = r.uniform(0.1, 0.3), r.uniform(0.1, 0.3), r.uniform(0.1, 0.3)
            part = (np.abs(x - cx) <= hx) & (np.abs(y - cy) <= hy) & (np.abs(z - cz) <= hz)
        elif kind == 1:  # ball
            rad = r.uniform(0.15, 0.35)
            part = (x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2 <= rad ** 2
        else:  # vertical post
            rad, half = r.uniform(0.08, 0.18), r.uniform(0.25, 0.5)
            part = ((x - cx) ** 2 + (z - cz) ** 2 <= rad ** 2) & (np.abs(y - cy) <= half)
        occ = occ | part
    return occ


_MAKERS = {"box": _box, "ellipsoid": _ellipsoid, "torus": _torus, "cylinder": _cylinder, "glyph": _glyph,
           "union": _union}


def random_shape(n: int, seed: int, kinds=KINDS, rgb: bool = False) -> dict:
    """One random shape on an n^3 grid from an integer seed.

    Returns a dict with ``voxels`` (n, n, n) float32 in {0, 1}, ``azimuth`` (float, radians, uniform in
    [0, 2 pi)), ``kind`` (index into ``KINDS``) and, with ``rgb``, ``colour`` (3, n, n, n) (one colour per
    shape, shaded from top to bottom so that the colour varies inside the image).
    """
    r = _Rand(seed)
    kind = kinds[r.integer(len(kinds))]
    if kind not in _MAKERS:
        raise ValueError(f"kinds: unknown shape kind {kind!r}; expected some of {', '.join(KINDS)}")
    azimuth = r.uniform(0.0, 2 * math.pi)
    c = (-1 + (2 * np.arange(n, dtype=np.float64) + 1) / n).astype(np.float32)  # voxel centres; broadcast views:
    zyx = (c[:, None, None], c[None, :, None], c[None, None, :])  # z (n,1,1), y (1,n,1), x (1,1,n)
    z, y, x = zyx
    occ = _MAKERS[kind](zyx, r)
    occ = np.broadcast_to(occ & (x ** 2 + z ** 2 <= _RADIUS ** 2) & (np.abs(y) <= _RADIUS), (n, n, n))
    occ = torch.from_numpy(occ.astype(np.float32))
    out = {"voxels": occ, "azimuth": azimuth, "kind": KINDS.index(kind)}
    if rgb:
        c0, c1 = np.array(r.colour(), np.float32), np.array(r.colour(), np.float32)
        t = ((y + 1) / 2)[None]  # 0 at the top, 1 at the bottom
        col = (c0[:, None, None, None] * (1 - t) + c1[:, None, None, None] * t) * occ.numpy()[None]
        out["colour"] = torch.from_numpy(np.ascontiguousarray(col, dtype=np.float32))
    return out


def render_shapes(voxels: Tensor, azimuth: Tensor, colour: Tensor | None = None, image_size: int | None = None,
                  backend: str | None = None) -> Tensor:
    """The dataset's images of (B, N, N, N) occupancies at (B,) azimuths: ``project_volume`` with
    absorption (tau = 1, so one voxel's thickness gives 1 - e^-1) and, with ``colour`` (B, 3, N, N, N),
    emission-absorption over a black background (returns the 3 colour channels). Same convention as
    the VAE's renderer (voxels 2 sigmoid(logits) with tau 0.5)."""
    from ..ops.volume_projection import project_volume

    if colour is None:
        return project_volume(voxels, azimuth=azimuth, tau=1.0, image_size=image_size, backend=backend)
    out = project_volume(voxels, azimuth=azimuth, tau=1.0, image_size=image_size, features=colour,
                         mode="emission_absorption", backend=backend)
    return out[:, :3]


class VoxelShapes(torch.utils.data.Dataset):
    """The procedural voxel shapes dataset.

    Args:
        split: ``"train"``, ``"test"`` (held out) or ``"val"``: disjoint random streams.
        size: grid size N of the ground-truth voxels (28, 32, 64, or any size >= 4).
        image_size: image height and width (default N).
        length: number of items (they are generated on the fly; default 60000 for train, 1000 otherwise).
        seed: dataset seed.
        rgb: colour images (emission-absorption) instead of grey absorption images.
        kinds: which shape kinds to draw from (default all of ``KINDS``).

    Items are dicts: ``image`` (C, H, W) in [0, 1], ``voxels`` (N, N, N) in {0, 1} (the canonical shape,
    in project_volume's frame), ``azimuth`` (scalar tensor, radians: ``image`` is
    ``render_shapes(voxels, azimuth)``), ``kind`` (int64). :meth:`get_batch` builds a batch with one
    batched render (what the training loop uses).
    """

    def __init__(self, split: str = "train", size: int = 28, image_size: int | None = None,
                 length: int | None = None, seed: int = 0, rgb: bool = False, kinds=KINDS, backend: str | None = None):
        if split not in SPLITS:
            raise ValueError(f"split: expected one of {', '.join(SPLITS)}, got {split!r}")
        if size < 4:
            raise ValueError(f"size: expected a grid size >= 4, got {size}")
        self.split, self.size, self.seed, self.rgb = split, int(size), int(seed), bool(rgb)
        self.image_size = int(image_size or size)
        self.length = int(length if length is not None else (60000 if split == "train" else 1000))
        self.kinds = tuple(kinds)
        for k in self.kinds:
            if k not in KINDS:
                raise ValueError(f"kinds: unknown shape kind {k!r}; expected some of {', '.join(KINDS)}")
        self.backend = backend
        self.channels = 3 if rgb else 1

    def __len__(self) -> int:
        return self.length

    def shape(self, index: int) -> dict:
        """The raw shape of item ``index`` (voxels, azimuth, kind[, colour]) without rendering."""
        if not -self.length <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} items")
        index = index % self.length
        return random_shape(self.size, item_seed(self.seed, self.split, index), self.kinds, self.rgb)

    def get_batch(self, indices) -> dict:
        """A batch of items with one batched render: image (B, C, H, W), voxels (B, N, N, N),
        azimuth (B,), kind (B,), index (B,)."""
        indices = [int(i) for i in indices]
        shapes = [self.shape(i) for i in indices]
        voxels = torch.stack([s["voxels"] for s in shapes])
        azimuth = torch.tensor([s["azimuth"] for s in shapes], dtype=torch.float32)
        colour = torch.stack([s["colour"] for s in shapes]) if self.rgb else None
        with torch.no_grad():
            image = render_shapes(voxels, azimuth, colour, self.image_size, self.backend).clamp(0, 1)
        return {"image": image, "voxels": voxels, "azimuth": azimuth,
                "kind": torch.tensor([s["kind"] for s in shapes]), "index": torch.tensor(indices)}

    def __getitem__(self, index: int) -> dict:
        b = self.get_batch([index])
        return {k: v[0] for k, v in b.items()}

    def mean_voxels(self, n: int = 512) -> Tensor:
        """The mean ground-truth occupancy of the first ``n`` items (the fixed-shape baseline)."""
        n = min(n, self.length)
        acc = torch.zeros(self.size, self.size, self.size)
        for i in range(n):
            acc += self.shape(i)["voxels"]
        return acc / n
