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


# Hand-picked anchors of the depth colour map, near (0) to far (1): light yellow, orange, crimson, plum.
_DEPTH_ANCHORS = ((0.99, 0.92, 0.50), (0.97, 0.58, 0.25), (0.78, 0.23, 0.36), (0.25, 0.10, 0.38))


def colorize(values: Tensor, mask: Tensor | None = None, vmin: float | None = None, vmax: float | None = None,
             background: float = 1.0) -> Tensor:
    """(H, W) values (a depth map) -> (3, H, W) colour image in [0, 1] for viewing.

    ``vmin`` (default: the smallest masked value) is light yellow, ``vmax`` (default: the largest) dark
    plum, piecewise linear in between; pixels outside ``mask`` (bool (H, W); default: all finite values)
    get ``background`` (white by default)."""
    x = values.detach().float().cpu()
    m = torch.isfinite(x) if mask is None else (mask.detach().cpu().bool() & torch.isfinite(x))
    sel = x[m]
    lo = float(sel.min()) if vmin is None and sel.numel() else (0.0 if vmin is None else float(vmin))
    hi = float(sel.max()) if vmax is None and sel.numel() else (1.0 if vmax is None else float(vmax))
    t = ((x - lo) / max(hi - lo, 1e-12)).clamp(0, 1).nan_to_num(0.0)
    anchors = torch.tensor(_DEPTH_ANCHORS)  # (A, 3)
    s = t * (len(anchors) - 1)
    k = s.floor().clamp(max=len(anchors) - 2).long()
    f = (s - k)[..., None]
    rgb = anchors[k] * (1 - f) + anchors[k + 1] * f  # (H, W, 3)
    rgb = torch.where(m[..., None], rgb, torch.full_like(rgb, float(background)))
    return rgb.permute(2, 0, 1).contiguous()
