"""Real image datasets from files on disk (nothing is downloaded): MNIST and Fashion-MNIST IDX files,
any folder of images, CelebA aligned.

Every dataset returns items ``{"image": (C, H, W) float32 in [0, 1], ...}`` at the model's image size and
channel count (grey images are repeated to RGB, RGB images are turned to grey with ITU-R 601 luma), and
has ``get_batch(indices)`` (what :mod:`voxrender.training` calls). A missing dataset raises
:class:`DatasetNotFoundError` (a ``FileNotFoundError``) whose message says what to download and where to
put it, with the exact file names expected.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are not where they were looked for; the message says what to get and where."""


class DatasetFormatError(ValueError):
    """A dataset file that exists but is not in the expected format."""


def _expand(path) -> Path:
    return Path(os.path.expandvars(os.path.expanduser(str(path))))


def _to_channels(img: Tensor, channels: int) -> Tensor:
    """(B, C, H, W) with C in {1, 3} to ``channels`` (1: ITU-R 601 luma; 3: grey repeated)."""
    c = img.shape[1]
    if c == channels:
        return img
    if channels == 1:
        w = torch.tensor([0.299, 0.587, 0.114], dtype=img.dtype, device=img.device).view(1, 3, 1, 1)
        return (img[:, :3] * w).sum(1, keepdim=True)
    return img.expand(-1, 3, -1, -1).contiguous()


def _resize(img: Tensor, size: int) -> Tensor:
    """(B, C, h, w) to (B, C, size, size): area-like downsampling (antialiased bilinear), bilinear upsampling."""
    if img.shape[-2:] == (size, size):
        return img
    down = size < min(img.shape[-2:])
    return F.interpolate(img, size=(size, size), mode="bilinear", align_corners=False, antialias=down).clamp(0, 1)


# ---------------------------------------------------------------------------------------------------------
# IDX (MNIST, Fashion-MNIST)

_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"),
              0x0E: np.dtype(">f8")}


def read_idx(path) -> np.ndarray:
    """Reads an IDX file (gzipped or raw; recognised by its content, not its name): the magic number
    0x00 0x00 <type> <ndim>, ndim big-endian uint32 sizes, then the big-endian data."""
    path = _expand(path)
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as e:
            raise DatasetFormatError(f"{path}: a damaged gzip file ({e}); download it again") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES:
        raise DatasetFormatError(f"{path}: not an IDX file (magic number {data[:4].hex() or 'missing'}; expected "
                                 f"00 00 <type 08/09/0b/0c/0d/0e> <ndim>)")
    dtype, ndim = np.dtype(_IDX_TYPES[data[2]]), data[3]
    head = 4 + 4 * ndim
    if len(data) < head:
        raise DatasetFormatError(f"{path}: the IDX header ends early")
    shape = tuple(int(x) for x in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    n = int(np.prod(shape, dtype=np.int64))
    if len(data) != head + n * dtype.itemsize:
        raise DatasetFormatError(f"{path}: {len(data) - head} data bytes for shape {shape} of {dtype} "
                                 f"({n * dtype.itemsize} expected): a truncated or damaged file")
    return np.frombuffer(data, dtype=dtype, count=n, offset=head).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path, array: np.ndarray, compress: bool | None = None) -> Path:
    """Writes an IDX file (gzipped when ``compress`` or the name ends in .gz). For tests and conversions."""
    path = Path(path)
    codes = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(np.int16): 0x0B,
             np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D, np.dtype(np.float64): 0x0E}
    a = np.asarray(array)
    if a.dtype not in codes:
        raise ValueError(f"write_idx: unsupported dtype {a.dtype}")
    body = bytes([0, 0, codes[a.dtype], a.ndim]) + np.asarray(a.shape, dtype=">u4").tobytes()
    body += a.astype(a.dtype.newbyteorder(">")).tobytes()
    if compress if compress is not None else path.suffix == ".gz":
        body = gzip.compress(body)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body)
    return path


IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
IDX_SOURCES = {
    "mnist": ("MNIST", "MNIST", "https://yann.lecun.com/exdb/mnist/ (mirror: "
                                "https://ossci-datasets.s3.amazonaws.com/mnist/)"),
    "fashion": ("Fashion-MNIST", "FashionMNIST", "https://github.com/zalandoresearch/fashion-mnist (the four "
                                                 "files of data/fashion/)"),
}


def _find_idx(root: Path, name: str, torchvision_dir: str) -> Path | None:
    """``name`` (or ``name`` with '.idx' instead of '-idx', gzipped or not) in root, root/raw or
    root/<torchvision dir>/raw (torchvision's download layout)."""
    names = [name, name.replace("-idx", ".idx")]
    for d in (root, root / "raw", root / torchvision_dir / "raw"):
        for n in names:
            for suffix in (".gz", ""):
                p = d / (n + suffix)
                if p.is_file():
                    return p
    return None


class IDXImages(torch.utils.data.Dataset):
    """MNIST or Fashion-MNIST from their IDX files (``kind="mnist"`` or ``"fashion"``; the two use the same
    file names): ``train-images-idx3-ubyte[.gz]`` + ``train-labels-idx1-ubyte[.gz]`` (split "train",
    60000 images) or ``t10k-images-idx3-ubyte[.gz]`` + ``t10k-labels-idx1-ubyte[.gz]`` (split "test"), in
    ``root``, ``root/raw`` or torchvision's ``root/MNIST/raw`` / ``root/FashionMNIST/raw``. The labels file
    is optional. Items: ``image`` (C, image_size, image_size) in [0, 1] (28 x 28 grey resized, white
    strokes on black as in the files), ``label`` (int64, -1 without a labels file)."""

    def __init__(self, root, kind: str = "mnist", split: str = "train", image_size: int = 28, channels: int = 1,
                 length: int | None = None):
        if kind not in IDX_SOURCES:
            raise ValueError(f"kind: expected one of {', '.join(IDX_SOURCES)}, got {kind!r}")
        if split not in IDX_FILES:
            raise ValueError(f"split: expected one of {', '.join(IDX_FILES)}, got {split!r}")
        self.root, self.kind, self.split = _expand(root), kind, split
        self.image_size, self.channels = int(image_size), int(channels)
        title, tv_dir, url = IDX_SOURCES[kind]
        img_name, lbl_name = IDX_FILES[split]
        img_path = _find_idx(self.root, img_name, tv_dir)
        if img_path is None:
            files = ", ".join(f"{a}.gz" for a in IDX_FILES["train"] + IDX_FILES["test"])
            raise DatasetNotFoundError(
                f"{title} not found: no {img_name}.gz (or {img_name}) in {self.root}. Download the IDX files "
                f"from {url} and put them in that folder: {files} (gzipped or unpacked; only the {split} images "
                f"are required for split '{split}'; the labels are optional)")
        images = read_idx(img_path)
        if images.ndim != 3 or images.dtype != np.uint8:
            raise DatasetFormatError(f"{img_path}: expected (N, H, W) uint8 images, got shape {images.shape} of "
                                     f"{images.dtype} (is this a labels file?)")
        self.image_path = img_path
        self.images = torch.from_numpy(images.copy())
        lbl_path = _find_idx(self.root, lbl_name, tv_dir)
        self.labels = None
        if lbl_path is not None:
            labels = read_idx(lbl_path)
            if labels.shape != (len(images),):
                raise DatasetFormatError(f"{lbl_path}: {labels.shape} labels for {len(images)} images")
            self.labels = torch.from_numpy(labels.astype(np.int64))
        self.length = len(self.images) if length is None else min(int(length), len(self.images))

    def __len__(self) -> int:
        return self.length

    def get_batch(self, indices) -> dict:
        idx = torch.as_tensor([int(i) for i in indices], dtype=torch.int64)
        if len(idx) and (idx.min() < -self.length or idx.max() >= self.length):
            raise IndexError(f"index out of range for {self.length} items")
        idx = idx % max(self.length, 1)
        img = self.images[idx].float().div_(255)[:, None]
        img = _to_channels(_resize(img, self.image_size), self.channels)
        label = self.labels[idx] if self.labels is not None else torch.full((len(idx),), -1, dtype=torch.int64)
        return {"image": img, "label": label, "index": idx}

    def __getitem__(self, index: int) -> dict:
        return {k: v[0] for k, v in self.get_batch([index]).items()}


# ---------------------------------------------------------------------------------------------------------
# image folders and CelebA

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def list_images(root) -> list[Path]:
    """Image files under ``root`` (recursive, hidden folders skipped), sorted by relative path."""
    root = _expand(root)
    out = []
    for d, dirs, files in os.walk(root):
        dirs[:] = sorted(x for x in dirs if not x.startswith("."))
        out += [Path(d) / f for f in files if Path(f).suffix.lower() in IMAGE_SUFFIXES and not f.startswith(".")]
    return sorted(out, key=lambda p: p.relative_to(root).as_posix())


def load_image(path, image_size: int, channels: int = 1, crop: int | None = None, invert: bool = False) -> Tensor:
    """One image file as (channels, image_size, image_size) float32 in [0, 1]: the centre square of side
    ``crop`` pixels (None: the largest centre square), resized (antialiased). Transparent pixels are
    composited over black."""
    from PIL import Image

    with Image.open(path) as im:
        w, h = im.size
        side = min(w, h) if crop is None else min(int(crop), w, h)
        if im.format == "JPEG" and side > 2 * image_size:  # decode at a reduced scale (much faster)
            need = max(1, int(image_size * max(w, h) / side))
            im.draft("L" if channels == 1 else "RGB", (need, need))
            s = im.size[0] / w
            w, h, side = im.size[0], im.size[1], max(1, int(round(side * s)))
        left, top = (w - side) // 2, (h - side) // 2
        if im.mode in ("RGBA", "LA", "P", "PA"):
            im = im.convert("RGBA")
            bg = Image.new("RGBA", im.size, (0, 0, 0, 255))
            im = Image.alpha_composite(bg, im)
        im = im.convert("L" if channels == 1 else "RGB").crop((left, top, left + side, top + side))
        im = im.resize((image_size, image_size), Image.Resampling.BILINEAR, reducing_gap=None if side <= 2 * image_size
                       else 2.0)
        a = np.asarray(im, dtype=np.float32) / 255.0
    t = torch.from_numpy(a.copy())
    t = t[None] if t.dim() == 2 else t.permute(2, 0, 1)
    return 1 - t if invert else t


class ImageFolder(torch.utils.data.Dataset):
    """Every image under a folder (PNG, JPG, BMP, GIF, WebP, TIFF; recursive, sorted), decoded lazily with
    Pillow, grey or RGB as asked (``channels``), the centre square (of ``crop`` pixels, or the largest)
    resized to ``image_size``. ``invert=True`` for dark objects on a light background (the voxel models
    draw bright objects on black). Items: ``image`` (C, S, S) in [0, 1], ``index``."""

    what = "image folder"

    def __init__(self, root, image_size: int = 64, channels: int = 1, crop: int | None = None, invert: bool = False,
                 length: int | None = None, files: list | None = None):
        self.root = _expand(root)
        self.image_size, self.channels, self.crop, self.invert = int(image_size), int(channels), crop, bool(invert)
        if files is None:
            if not self.root.is_dir():
                raise DatasetNotFoundError(self._missing(f"{self.root} is not a folder"))
            files = list_images(self.root)
            if not files:
                raise DatasetNotFoundError(self._missing(f"no images in {self.root}"))
        self.files = list(files)
        self.length = len(self.files) if length is None else min(int(length), len(self.files))

    def _missing(self, why: str) -> str:
        return (f"{self.what}: {why}. Point folder:PATH at a folder of images (PNG, JPG, BMP, GIF, WebP or TIFF; "
                f"sub-folders are searched too)")

    def __len__(self) -> int:
        return self.length

    def get_batch(self, indices) -> dict:
        idx = [int(i) % max(self.length, 1) for i in indices]
        imgs = []
        for i in idx:
            try:
                imgs.append(load_image(self.files[i], self.image_size, self.channels, self.crop, self.invert))
            except (OSError, ValueError) as e:
                raise DatasetFormatError(f"{self.files[i]}: cannot read the image ({e})") from None
        return {"image": torch.stack(imgs), "index": torch.tensor(idx)}

    def __getitem__(self, index: int) -> dict:
        return {k: v[0] for k, v in self.get_batch([index]).items()}


CELEBA_SPLITS = {"train": 0, "val": 1, "test": 2}


class CelebA(ImageFolder):
    """CelebA's aligned and cropped faces (``img_align_celeba``: 202599 JPGs of 178 x 218, 000001.jpg ...):
    ``root`` is that folder or a folder that contains it. The centre ``crop`` (108 px by default: the face)
    is resized to ``image_size``. With ``list_eval_partition.txt`` next to the images (or in ``root``), only
    the images of ``split`` are used (train / val / test); otherwise all of them."""

    what = "CelebA"

    def __init__(self, root, image_size: int = 64, channels: int = 3, crop: int | None = 108, split: str = "train",
                 length: int | None = None):
        root = _expand(root)
        folder = root / "img_align_celeba" if (root / "img_align_celeba").is_dir() else root
        if folder.is_dir() and (folder / "img_align_celeba").is_dir():  # the zip unpacked twice
            folder = folder / "img_align_celeba"
        files = list_images(folder) if folder.is_dir() else []
        if not files:
            raise DatasetNotFoundError(
                f"CelebA not found: no images in {folder}. Download img_align_celeba.zip (\"Align&Cropped Images\") "
                f"from https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html and unzip it so that "
                f"{root / 'img_align_celeba' / '000001.jpg'} exists (optional: list_eval_partition.txt in {root} "
                f"for the train/val/test split)")
        if split not in CELEBA_SPLITS:
            raise ValueError(f"split: expected one of {', '.join(CELEBA_SPLITS)}, got {split!r}")
        for part in (root / "list_eval_partition.txt", folder / "list_eval_partition.txt",
                     folder.parent / "list_eval_partition.txt", root / "Eval" / "list_eval_partition.txt"):
            if part.is_file():
                keep = set()
                for line in part.read_text().split("\n"):
                    tok = line.split()
                    if len(tok) == 2 and tok[1].isdigit() and int(tok[1]) == CELEBA_SPLITS[split]:
                        keep.add(tok[0])
                files = [f for f in files if f.name in keep]
                break
        super().__init__(folder, image_size=image_size, channels=channels, crop=crop, length=length, files=files)
