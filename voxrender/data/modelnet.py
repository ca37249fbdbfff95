"""ModelNet40 meshes rendered to images with voxrender's rasterizer (nothing is downloaded).

ModelNet40 (https://modelnet.cs.princeton.edu/) ships one ``.off`` file per model in
``<root>/<category>/<split>/<category>_NNNN.off`` (split ``train`` or ``test``); some files have the
malformed header ``OFF490 518 0`` (no line break after the keyword), which :func:`voxrender.load_off`
reads. The paper used six categories: chair, car, cup, bowl, person, airplane (:data:`PAPER_CATEGORIES`).

Each mesh is turned into the frame of :func:`voxrender.project_volume` (ModelNet's +z up becomes -y:
the library's y points down), centred on its bounding box and scaled so that its farthest vertex lies at
0.9 (inside the cube [-1, 1]^3 and seen whole from every azimuth, like the built-in voxel shapes), then
rendered with :func:`voxrender.render_mesh` by a distant camera (a nearly orthographic view that frames
[-1, 1]^2, the same frame as the voxel models' renderer) from ``views`` azimuths at elevation 0:
``mode="silhouette"`` gives the coverage mask (antialiased; a white object on black, like the absorption
images of the voxel models), ``mode="shaded"`` the Lambertian shading on black.

The renderings of a mesh are made the first time one of its items is asked for (all its views in one
batched call) and kept in memory (uint8) and, with ``cache_dir``, in ``.npy`` files reused by later runs.
``views=0`` renders every item on the fly at its own random azimuth instead (meshes kept in memory).
"""

from __future__ import annotations

import hashlib
import math
import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .images import DatasetNotFoundError, _expand, _to_channels

PAPER_CATEGORIES = ("chair", "car", "cup", "bowl", "person", "airplane")
MODELNET40_CATEGORIES = (
    "airplane", "bathtub", "bed", "bench", "bookshelf", "bottle", "bowl", "car", "chair", "cone", "cup", "curtain",
    "desk", "door", "dresser", "flower_pot", "glass_box", "guitar", "keyboard", "lamp", "laptop", "mantel", "monitor",
    "night_stand", "person", "piano", "plant", "radio", "range_hood", "sink", "sofa", "stairs", "stool", "table",
    "tent", "toilet", "tv_stand", "vase", "wardrobe", "xbox")
MODES = ("silhouette", "shaded")
_UP = {"z": ((1, 0, 0), (0, 0, -1), (0, 1, 0)),  # ModelNet's z up -> the library's -y
       "y": ((1, 0, 0), (0, -1, 0), (0, 0, -1)),
       "-y": ((1, 0, 0), (0, 1, 0), (0, 0, 1))}
_CAMERA_DISTANCE = 20.0


def _mix(*xs: int) -> int:
    x = 0x9E3779B97F4A7C15
    for v in xs:
        x = ((x ^ (int(v) & ((1 << 64) - 1))) * 0xBF58476D1CE4E5B9) % (1 << 64)
        x = ((x ^ (x >> 31)) * 0x94D049BB133111EB) % (1 << 64)
    return x & ((1 << 63) - 1)


def prepare_mesh(verts: Tensor, up: str = "z", radius: float = 0.9) -> Tensor:
    """A ModelNet mesh in the library's frame: the ``up`` axis turned to -y (a rotation), centred on its
    bounding box, farthest vertex at ``radius``."""
    from ..mesh_io import normalize_verts

    if up not in _UP:
        raise ValueError(f"up: expected one of {', '.join(_UP)}, got {up!r}")
    R = torch.tensor(_UP[up], dtype=verts.dtype)
    return normalize_verts(verts @ R.T, radius)


def render_views(verts: Tensor, faces: Tensor, azimuth: Tensor, image_size: int, mode: str = "silhouette",
                 elevation: float = 0.0, channels: int = 1, backend: str | None = None) -> Tensor:
    """(B, channels, S, S) renderings in [0, 1] of one mesh (already in the library's frame) at (B,)
    azimuths: a distant camera framing [-1, 1]^2 through the origin (nearly orthographic)."""
    from ..render import render_mesh

    if mode not in MODES:
        raise ValueError(f"mode: expected one of {', '.join(MODES)}, got {mode!r}")
    d = _CAMERA_DISTANCE
    fov = math.degrees(2 * math.atan(1.0 / d))
    az = azimuth.to(verts.dtype).reshape(-1)
    el = torch.full_like(az, float(elevation))
    with torch.no_grad():
        rgb, mask = render_mesh(verts, faces, azimuth=az, elevation=el, distance=d, fov=fov, image_size=image_size,
                                near=d - 2, far=d + 2, background=0.0, return_mask=True, backend=backend)
    img = mask[:, None] if mode == "silhouette" else rgb.permute(0, 3, 1, 2)
    return _to_channels(img.clamp(0, 1), channels)


class ModelNetRenders(torch.utils.data.Dataset):
    """ModelNet40 meshes of some categories rendered from random azimuths.

    Args:
        root: the ModelNet40 folder (``<root>/<category>/<split>/*.off``), or a folder containing it.
        categories: which categories (default the paper's six, :data:`PAPER_CATEGORIES`).
        split: ``"train"`` or ``"test"``.
        image_size, channels: of the images (grey silhouettes by default).
        mode: ``"silhouette"`` or ``"shaded"``.
        views: renderings per mesh, at azimuths 2 pi (k + u) / views with a per-mesh random u (item
            ``i`` is view ``i % views`` of mesh ``i // views``); 0: one mesh per item, each item at its own
            random azimuth, rendered on the fly.
        elevation: camera elevation (radians; 0 as in the voxel models).
        up: the meshes' up axis ("z" for ModelNet40).
        seed: azimuths are a function of (seed, mesh, view).
        cache_dir: where to keep the renderings between runs (None: memory only).
        length: use only the first ``length`` items.

    Items: ``image`` (C, S, S) in [0, 1], ``azimuth`` (radians, in project_volume's convention),
    ``label`` (index into ``categories``), ``index``.
    """

    def __init__(self, root, categories=PAPER_CATEGORIES, split: str = "train", image_size: int = 32,
                 channels: int = 1, mode: str = "silhouette", views: int = 24, elevation: float = 0.0, up: str = "z",
                 seed: int = 0, cache_dir=None, length: int | None = None, backend: str | None = None,
                 max_meshes_in_memory: int = 64):
        if mode not in MODES:
            raise ValueError(f"mode: expected one of {', '.join(MODES)}, got {mode!r}")
        if split not in ("train", "test"):
            raise ValueError(f"split: expected 'train' or 'test', got {split!r}")
        if up not in _UP:
            raise ValueError(f"up: expected one of {', '.join(_UP)}, got {up!r}")
        root = _expand(root)
        if not (root / categories[0]).is_dir() and (root / "ModelNet40").is_dir():
            root = root / "ModelNet40"
        self.root, self.categories, self.split = root, tuple(categories), split
        self.image_size, self.channels, self.mode = int(image_size), int(channels), mode
        self.views, self.elevation, self.up, self.seed = int(views), float(elevation), up, int(seed)
        self.backend = backend
        self.cache_dir = _expand(cache_dir) if cache_dir else None
        self.files, self.labels = [], []
        missing = []
        for k, cat in enumerate(self.categories):
            folder = root / cat / split
            found = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".off") if folder.is_dir() else []
            if not found:
                missing.append(cat)
            self.files += found
            self.labels += [k] * len(found)
        if missing:
            extra = "" if set(self.categories) <= set(MODELNET40_CATEGORIES) else \
                " (not all of these are ModelNet40 categories: " + ", ".join(MODELNET40_CATEGORIES) + ")"
            raise DatasetNotFoundError(
                f"ModelNet40 not found: no .off meshes in "
                f"{', '.join(str(root / c / split) for c in missing)}{extra}. Download ModelNet40.zip from "
                f"https://modelnet.cs.princeton.edu/ (http://modelnet.cs.princeton.edu/ModelNet40.zip), unzip it "
                f"and point modelnet:PATH at the ModelNet40 folder: the meshes must be at "
                f"PATH/<category>/{split}/<category>_0001.off for the categories {', '.join(self.categories)}")
        per = self.views if self.views > 0 else 1
        self.n_items = len(self.files) * per
        self.length = self.n_items if length is None else min(int(length), self.n_items)
        self._renders: dict[int, np.ndarray] = {}
        self._meshes: OrderedDict[int, tuple[Tensor, Tensor]] = OrderedDict()
        self._max_meshes = int(max_meshes_in_memory)

    def __len__(self) -> int:
        return self.length

    # -- meshes and renders -----------------------------------------------------------------------------
    def mesh(self, m: int) -> tuple[Tensor, Tensor]:
        """Mesh ``m`` (verts in the library's frame, normalised; faces), loaded once and kept (LRU)."""
        if m in self._meshes:
            self._meshes.move_to_end(m)
            return self._meshes[m]
        from ..mesh_io import load_off

        v, f = load_off(self.files[m])
        out = (prepare_mesh(v, self.up), f)
        self._meshes[m] = out
        while len(self._meshes) > self._max_meshes:
            self._meshes.popitem(last=False)
        return out

    def mesh_azimuths(self, m: int) -> Tensor:
        """The ``views`` azimuths of mesh ``m``: 2 pi (k + u_m) / views."""
        u = np.random.Generator(np.random.PCG64(_mix(self.seed, m, 1))).random()
        return (torch.arange(self.views, dtype=torch.float64) + u) * (2 * math.pi / self.views)

    def _cache_file(self, m: int) -> Path | None:
        if self.cache_dir is None:
            return None
        f = self.files[m]
        key = f"{self.image_size}-{self.channels}-{self.mode}-{self.views}-{self.elevation:.6f}-{self.up}-{self.seed}"
        st = f.stat()
        tag = hashlib.sha1(f"{key}|{f.resolve()}|{st.st_size}|{int(st.st_mtime)}".encode()).hexdigest()[:16]
        return self.cache_dir / f.parent.parent.name / f.parent.name / f"{f.stem}.{tag}.npy"

    def renders(self, m: int) -> np.ndarray:
        """All ``views`` renderings of mesh ``m``: (views, C, S, S) uint8."""
        if m in self._renders:
            return self._renders[m]
        path = self._cache_file(m)
        arr = None
        if path is not None and path.is_file():
            try:
                arr = np.load(path)
                if arr.shape != (self.views, self.channels, self.image_size, self.image_size):
                    arr = None
            except (OSError, ValueError):
                arr = None
        if arr is None:
            v, f = self.mesh(m)
            img = render_views(v, f, self.mesh_azimuths(m), self.image_size, self.mode, self.elevation, self.channels,
                               self.backend)
            arr = (img * 255 + 0.5).to(torch.uint8).numpy()
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
                with open(tmp, "wb") as fh:
                    np.save(fh, arr)
                os.replace(tmp, path)
        self._renders[m] = arr
        return arr

    def prepare(self, progress: bool = True) -> None:
        """Renders (or loads from the cache) every mesh's views now instead of during training."""
        ms = range(len(self.files))
        if progress:
            from tqdm.auto import tqdm

            ms = tqdm(ms, desc="rendering ModelNet40", unit="mesh")
        for m in ms:
            self.renders(m)

    # -- items -----------------------------------------------------------------------------------------
    def get_batch(self, indices) -> dict:
        idx = [int(i) % max(self.length, 1) for i in indices]
        images, az, labels = [], [], []
        for i in idx:
            if self.views > 0:
                m, k = divmod(i, self.views)
                images.append(torch.from_numpy(self.renders(m)[k]).float() / 255)
                az.append(float(self.mesh_azimuths(m)[k]))
            else:
                m = i
                a = np.random.Generator(np.random.PCG64(_mix(self.seed, i, 2))).random() * 2 * math.pi
                v, f = self.mesh(m)
                images.append(render_views(v, f, torch.tensor([a]), self.image_size, self.mode, self.elevation,
                                           self.channels, self.backend)[0])
                az.append(a)
            labels.append(self.labels[m])
        return {"image": torch.stack(images), "azimuth": torch.tensor(az, dtype=torch.float32),
                "label": torch.tensor(labels, dtype=torch.int64), "index": torch.tensor(idx)}

    def __getitem__(self, index: int) -> dict:
        return {k: v[0] for k, v in self.get_batch([index]).items()}
