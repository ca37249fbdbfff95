"""Training data from ``--data`` specifications, and the paper's mixture of several sources.

A source is ``NAME`` or ``NAME:PATH``:

- ``synthetic``: the built-in procedural voxel shapes (:class:`voxrender.data.VoxelShapes`; no files);
- ``mnist:DIR``, ``fashion:DIR``: MNIST / Fashion-MNIST IDX files (:class:`voxrender.data.images.IDXImages`);
- ``folder:DIR``: every image under a folder (:class:`voxrender.data.images.ImageFolder`);
- ``celeba:DIR``: CelebA aligned faces, centre-cropped (:class:`voxrender.data.images.CelebA`);
- ``modelnet:DIR``: ModelNet40 meshes rendered with the rasterizer (:class:`voxrender.data.modelnet.ModelNetRenders`).

Several sources make a :class:`Mixture`: each item is drawn from one source with the given weights; by
default the paper's mixture, 1/4 MNIST, 1/4 Fashion-MNIST and 1/2 shared by the other sources (folders),
i.e. weight 1 for ``mnist``, 1 for ``fashion`` and 2 / (number of other sources) for each other source,
normalised.
"""

from __future__ import annotations

import numpy as np
import torch

SOURCES = ("synthetic", "mnist", "fashion", "folder", "celeba", "modelnet")
NEEDS_PATH = ("mnist", "fashion", "folder", "celeba", "modelnet")


def parse_source(spec: str) -> dict:
    """``"NAME[:PATH]"`` -> ``{"name": NAME, "path": PATH or None}`` (a clear ValueError otherwise)."""
    name, sep, path = str(spec).partition(":")
    name = name.strip().lower()
    if name not in SOURCES:
        raise ValueError(f"--data {spec}: unknown source {name!r}; expected synthetic, mnist:DIR, fashion:DIR, "
                         f"folder:DIR, celeba:DIR or modelnet:DIR")
    if name in NEEDS_PATH and not path:
        raise ValueError(f"--data {spec}: {name} needs the folder of its files, e.g. --data {name}:~/data/{name}")
    if name == "synthetic" and path:
        raise ValueError(f"--data {spec}: the built-in synthetic shapes take no path")
    return {"name": name, "path": path or None}


def paper_weights(names) -> list[float]:
    """The paper's mixture weights for a list of source names: 1/4 MNIST, 1/4 Fashion-MNIST, the rest
    shared equally by the other sources (weights 1, 1 and 2 / n_other, normalised)."""
    names = list(names)
    others = sum(n not in ("mnist", "fashion") for n in names)
    raw = [1.0 if n in ("mnist", "fashion") else 2.0 / others for n in names]
    s = sum(raw)
    return [w / s for w in raw]


def _mix(*xs: int) -> int:
    x = 0x2545F4914F6CDD1D
    for v in xs:
        x = ((x ^ (int(v) & ((1 << 64) - 1))) * 0xBF58476D1CE4E5B9) % (1 << 64)
        x = ((x ^ (x >> 29)) * 0x94D049BB133111EB) % (1 << 64)
    return x & ((1 << 63) - 1)


class Mixture(torch.utils.data.Dataset):
    """Items drawn from several datasets with given weights: item ``i`` takes source k with probability
    ``weights[k]`` and a uniformly random item of it, both a function of (seed, i) only (so a resumed run
    sees the same items). Items: ``image`` and ``source`` (the source's index); every source must give
    images of the same size and channels. ``length`` defaults to the sum of the sources' lengths."""

    def __init__(self, datasets, weights=None, length: int | None = None, seed: int = 0, names=None):
        self.datasets = list(datasets)
        if not self.datasets:
            raise ValueError("a mixture needs at least one dataset")
        w = np.asarray([1.0] * len(self.datasets) if weights is None else weights, dtype=np.float64)
        if w.shape != (len(self.datasets),) or (w < 0).any() or not w.sum() > 0:
            raise ValueError(f"weights: expected {len(self.datasets)} non-negative numbers with a positive sum, "
                             f"got {list(np.atleast_1d(w))}")
        if any(len(d) == 0 for d in self.datasets):
            raise ValueError("a mixture source has no items")
        self.weights = w / w.sum()
        self.cum = np.cumsum(self.weights)
        self.seed = int(seed)
        self.names = list(names) if names is not None else [type(d).__name__ for d in self.datasets]
        self.length = int(length) if length is not None else sum(len(d) for d in self.datasets)

    def __len__(self) -> int:
        return self.length

    def locate(self, i: int) -> tuple[int, int]:
        """(source, index in the source) of item ``i``."""
        g = np.random.Generator(np.random.PCG64(_mix(self.seed, i)))
        k = min(int(np.searchsorted(self.cum, g.random(), side="right")), len(self.datasets) - 1)
        while self.weights[k] == 0:  # only reachable through rounding at the end of cum
            k -= 1
        return k, int(g.integers(len(self.datasets[k])))

    def get_batch(self, indices) -> dict:
        from voxrender.training import fetch_batch

        idx = [int(i) % max(self.length, 1) for i in indices]
        where = [self.locate(i) for i in idx]
        images = [None] * len(idx)
        for k in sorted({k for k, _ in where}):
            pos = [p for p, (kk, _) in enumerate(where) if kk == k]
            b = fetch_batch(self.datasets[k], [where[p][1] for p in pos])["image"]
            for j, p in enumerate(pos):
                images[p] = b[j]
        shapes = {tuple(im.shape) for im in images}
        if len(shapes) > 1:
            raise ValueError(f"mixture sources give images of different shapes: {sorted(shapes)}")
        return {"image": torch.stack(images), "source": torch.tensor([k for k, _ in where]),
                "index": torch.tensor(idx)}

    def __getitem__(self, index: int) -> dict:
        return {k: v[0] for k, v in self.get_batch([index]).items()}


def open_source(source: dict, image_size: int, channels: int = 1, split: str = "train", grid: int | None = None,
                seed: int = 0, length: int | None = None, kinds=None, categories=None,
                modelnet_mode: str = "silhouette", modelnet_views: int = 24, cache_dir=None, backend: str | None = None):
    """One dataset from a parsed source (see :func:`parse_source`), giving (channels, image_size,
    image_size) images. ``grid``, ``kinds``: the synthetic shapes' grid and kinds; ``categories``,
    ``modelnet_mode``, ``modelnet_views``, ``cache_dir``: ModelNet40's."""
    name, path = source["name"], source.get("path")
    if name == "synthetic":
        from .voxel_shapes import KINDS, VoxelShapes

        return VoxelShapes(split, size=grid or image_size, image_size=image_size, length=length, seed=seed,
                           rgb=channels == 3, kinds=tuple(kinds or KINDS), backend=backend)
    if name in ("mnist", "fashion"):
        from .images import IDXImages

        return IDXImages(path, kind=name, split="test" if split == "test" else "train", image_size=image_size,
                         channels=channels, length=length)
    if name == "folder":
        from .images import ImageFolder

        return ImageFolder(path, image_size=image_size, channels=channels, length=length)
    if name == "celeba":
        from .images import CelebA

        return CelebA(path, image_size=image_size, channels=channels, split=split, length=length)
    if name == "modelnet":
        from .modelnet import PAPER_CATEGORIES, ModelNetRenders

        return ModelNetRenders(path, categories=tuple(categories or PAPER_CATEGORIES),
                               split="test" if split == "test" else "train", image_size=image_size, channels=channels,
                               mode=modelnet_mode, views=modelnet_views, seed=seed, cache_dir=cache_dir, length=length,
                               backend=backend)
    raise ValueError(f"unknown source {name!r}")


def build_dataset(sources, weights=None, image_size: int = 28, channels: int = 1, split: str = "train",
                  seed: int = 0, length: int | None = None, **kw):
    """The dataset of one or several parsed sources: one source as it is (``length`` caps it, or sets the
    synthetic set's size), several as a :class:`Mixture` (``weights`` default :func:`paper_weights`;
    ``length`` default the sum of their lengths)."""
    sources = [parse_source(s) if isinstance(s, str) else s for s in sources]
    if len(sources) == 1:
        if weights is not None and len(weights) != 1:
            raise ValueError(f"--data-weights: {len(weights)} weights for 1 source")
        return open_source(sources[0], image_size, channels, split, seed=seed, length=length, **kw)
    if weights is not None and len(weights) != len(sources):
        raise ValueError(f"--data-weights: {len(weights)} weights for {len(sources)} --data sources")
    names = [s["name"] for s in sources]
    datasets = [open_source(s, image_size, channels, split, seed=seed, **kw) for s in sources]
    return Mixture(datasets, weights if weights is not None else paper_weights(names), length=length, seed=seed,
                   names=[f"{s['name']}:{s['path']}" if s.get("path") else s["name"] for s in sources])
