"""Per-image checkpoints of a multi-image GAN2Shape run, so ``--resume`` continues an interrupted
``voxrender gan2shape`` / ``eval-gan2shape`` where it stopped (an image takes minutes on a GPU, hours on a
CPU): after each image its whole :class:`~.model.GAN2ShapeResult` (without the networks) and what the run
needs besides (the inversion's outputs) go atomically into ``OUT/progress/<name>.pt``, with a fingerprint of
everything that determines them: the configuration, the GAN's weights, the perceptual loss, the image, its
latent and its seed. A resumed run takes an image's record only when the fingerprint matches; a record made
with other settings is an error that names what differs (never a silent mix of two runs).
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import torch

from voxrender.training import atomic_save

from .model import GAN2ShapeResult

FORMAT = "voxrender-gan2shape-image-1"


class RecordMismatch(ValueError):
    """``--resume`` found a record made with other settings (the message names what differs)."""


def digest(*items) -> str:
    """A short SHA-256 of tensors (their bytes, shape and dtype), modules (their state dicts) and strings."""
    h = hashlib.sha256()

    def add(x):
        if isinstance(x, torch.nn.Module):
            for k, v in x.state_dict().items():
                h.update(k.encode())
                add(v)
        elif isinstance(x, torch.Tensor):
            t = x.detach().to("cpu").contiguous()
            h.update(f"{tuple(t.shape)}{t.dtype}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif x is None:
            h.update(b"None")
        else:
            h.update(repr(x).encode())

    for item in items:
        add(item)
    return h.hexdigest()[:20]


def check_key(path, have: dict, want: dict) -> None:
    """Raises :class:`RecordMismatch` naming the settings that differ when a record's key ``have`` is not
    ``want``."""
    if have != want:
        diff = sorted(k for k in set(want) | set(have) if want.get(k) != have.get(k))
        raise RecordMismatch(f"--resume: {path} was made with other settings ({', '.join(diff)} differ); resume "
                             f"with the same options and GAN, or write to another --out")


def result_to_dict(res: GAN2ShapeResult) -> dict:
    d = {f.name: getattr(res, f.name) for f in dataclasses.fields(res) if f.name != "nets"}
    return {k: (v.detach().cpu() if isinstance(v, torch.Tensor) else v) for k, v in d.items()}


class ImageRecords:
    """``OUT/progress/<name>.pt`` records of one run. ``run_key``: what every image shares (configuration,
    GAN digest, ...); each image adds its own key (image digest, latent, seed, ...). With ``resume=False``
    nothing is read (records are still written, so the run can be resumed later)."""

    def __init__(self, out, run_key: dict, resume: bool = False):
        self.folder = Path(out) / "progress"
        self.run_key, self.resume = dict(run_key), bool(resume)

    def path(self, name: str) -> Path:
        return self.folder / f"{name}.pt"

    def _key(self, key: dict) -> dict:
        return {**self.run_key, **key}

    def load(self, name: str, key: dict) -> tuple[GAN2ShapeResult, dict] | None:
        """(result, extra) of a finished image, or None (no record, or not resuming)."""
        path = self.path(name)
        if not (self.resume and path.is_file()):
            return None
        rec = torch.load(path, map_location="cpu", weights_only=False)
        want = self._key(key)
        if not isinstance(rec, dict) or rec.get("format") != FORMAT:
            raise RecordMismatch(f"--resume: {path} is not a GAN2Shape image record")
        check_key(path, rec["key"], want)
        return GAN2ShapeResult(**rec["result"]), rec.get("extra", {})

    def save(self, name: str, key: dict, res: GAN2ShapeResult, extra: dict | None = None) -> Path:
        return atomic_save({"format": FORMAT, "key": self._key(key), "result": result_to_dict(res),
                            "extra": extra or {}}, self.path(name))
