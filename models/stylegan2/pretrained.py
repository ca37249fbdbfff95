"""Generators that ship with voxrender (package data in ``weights/``), loadable by name:

    from voxrender.models.stylegan2 import load_checkpoint
    G, D = load_checkpoint("NAME")            # models/stylegan2/weights/NAME.pt

Each ``weights/NAME.pt`` is a checkpoint in the port's format (``g_ema``, ``d``, ``latent_avg``; no ``g``)
and ``weights/NAME.json`` records how it was trained (command, steps, machine, time) and what it scores;
``tools/ship_stylegan2.py RUN_DIR NAME`` writes both from a ``voxrender train stylegan2`` run.

Shipped: ``synface64``, a small 64 px generator of the built-in synthetic faces (0.7 M parameters, 3.4 MB),
trained on 184k images (about 2.7 hours) on a 2-core CPU because no GPU was available: a stand-in that makes
``voxrender gan2shape`` work out of the box; the benchmark's generator is meant to be trained on a GPU.
"""

from __future__ import annotations

import json
from pathlib import Path

WEIGHTS = Path(__file__).resolve().parent / "weights"


def pretrained_names() -> list[str]:
    """The names of the shipped generators."""
    return sorted(p.stem for p in WEIGHTS.glob("*.pt"))


def pretrained_path(name: str) -> Path:
    """The file of a shipped generator; a clear error listing the names for an unknown one."""
    path = WEIGHTS / f"{name}.pt"
    if not path.is_file():
        raise FileNotFoundError(f"no shipped StyleGAN2 named {name!r} (shipped: {', '.join(pretrained_names()) or 'none'}); "
                                "pass a checkpoint file instead")
    return path


def pretrained_info(name: str) -> dict:
    """The training record of a shipped generator (``weights/NAME.json``)."""
    pretrained_path(name)
    info = WEIGHTS / f"{name}.json"
    return json.loads(info.read_text()) if info.is_file() else {}


def resolve(ckpt):
    """A path or a loaded dict as given; a string that is not an existing file but a shipped name: its file."""
    if isinstance(ckpt, (str, Path)) and not Path(ckpt).exists() and str(ckpt) in pretrained_names():
        return pretrained_path(str(ckpt))
    return ckpt
