"""Pictures: PNG grids and turntable GIFs (Pillow)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor


def to_uint8(img: Tensor) -> "numpy.ndarray":  # noqa: F821
    """(C, H, W) or (H, W) float in [0, 1] -> (H, W, 3) uint8 (grey images are repeated to RGB)."""
    img = img.detach().float().cpu()
    if img.dim() == 2:
        img = img[None]
    if img.shape[0] == 1:
        img = img.expand(3, -1, -1)
    return (img[:3].clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).contiguous().numpy()


def image_grid(images: list[Tensor], ncol: int, pad: int = 2, scale: int = 1) -> Tensor:
    """Tiles (C, H, W) images (all the same size) into one (3, H', W') image on a white background."""
    rgb = [(im[None] if im.dim() == 2 else im).detach().float().cpu() for im in images]
    rgb = [im.expand(3, -1, -1) if im.shape[0] == 1 else im[:3] for im in rgb]
    h, w = rgb[0].shape[1:]
    nrow = (len(rgb) + ncol - 1) // ncol
    out = torch.ones(3, nrow * (h + pad) + pad, ncol * (w + pad) + pad)
    for k, im in enumerate(rgb):
        r, c = divmod(k, ncol)
        out[:, pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = im
    if scale > 1:
        out = out.repeat_interleave(scale, 1).repeat_interleave(scale, 2)
    return out


def _atomic_target(path: str | os.PathLike) -> tuple[Path, Path]:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path, path.with_name(f".{path.name}.tmp")


def save_png(img: Tensor, path: str | os.PathLike) -> Path:
    """Writes a (C, H, W) / (H, W) float image in [0, 1] as PNG (temp file + rename: never half-written)."""
    from PIL import Image

    path, tmp = _atomic_target(path)
    Image.fromarray(to_uint8(img)).save(tmp, format="PNG")
    os.replace(tmp, path)
    return path


def save_gif(frames: list[Tensor], path: str | os.PathLike, fps: float = 15.0) -> Path:
    """Writes (C, H, W) float frames in [0, 1] as a looping GIF."""
    from PIL import Image

    path, tmp = _atomic_target(path)
    imgs = [Image.fromarray(to_uint8(f)) for f in frames]
    imgs[0].save(tmp, format="GIF", save_all=True, append_images=imgs[1:], duration=int(1000 / fps), loop=0)
    os.replace(tmp, path)
    return path
