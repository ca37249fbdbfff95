"""Checkpoints in the format of the PyTorch port of StyleGAN2 (rosinality/stylegan2-pytorch): a dict with
``g_ema`` (the EMA generator's state dict), ``d`` (the discriminator's), optionally ``g`` (the trained
generator's) and ``latent_avg`` (the truncation centre, (style_dim,) or (1, style_dim)); the port's own
training checkpoints also hold ``g_optim``, ``d_optim``, ``args`` ... which are ignored here.

The architecture (size, style_dim, n_mlp, channels per resolution, hence channel_multiplier) is read from
the weights' names and shapes, so the public checkpoints (FFHQ, CelebA, cat, car, church, config-e/f) and
small models trained here load the same way. Loading is strict: a missing or unexpected key raises a
``ValueError`` that lists them.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import torch

from .networks import Discriminator, Generator, default_channels


def _load_file(path, map_location="cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        from .pretrained import pretrained_names

        raise FileNotFoundError(f"no StyleGAN2 checkpoint at {path} (a file, or the name of a generator shipped "
                                f"with voxrender; shipped: {', '.join(pretrained_names()) or 'none'})")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        # The port's training checkpoints pickle their argparse ``args``: only a full unpickling reads them
        # (do this only with files you trust).
        return torch.load(path, map_location=map_location, weights_only=False)


def _need(sd: dict, key: str, what: str) -> torch.Tensor:
    if key not in sd:
        raise ValueError(f"{what}: missing key {key!r} (not a StyleGAN2 state dict of the port's format?)")
    return sd[key]


def _channel_multiplier(ch: dict) -> int:
    """The port's table that ``ch`` equals (1 or 2), else the smallest one it fits under (a capped small
    model), else 2."""
    for cm in (1, 2):
        t = default_channels(cm)
        if all(t[r] == c for r, c in ch.items()):
            return cm
    for cm in (1, 2):
        t = default_channels(cm)
        if all(c <= t[r] for r, c in ch.items()):
            return cm
    return 2


def _strict_load(module: torch.nn.Module, sd: dict, what: str) -> None:
    expected = module.state_dict()
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys {missing}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected}")
        raise ValueError(f"{what}: the state dict does not match the architecture read from it: "
                         + "; ".join(parts))
    bad = [f"{k}: {tuple(sd[k].shape)} (expected {tuple(v.shape)})" for k, v in expected.items()
           if tuple(sd[k].shape) != tuple(v.shape)]
    if bad:
        raise ValueError(f"{what}: shape mismatch for keys {bad}")
    module.load_state_dict(sd, strict=True)


def generator_config(sd: dict, what: str = "g_ema") -> dict:
    """Generator(**config) arguments read from a generator state dict."""
    n_mlp = len({int(m.group(1)) for k in sd if (m := re.fullmatch(r"style\.(\d+)\.weight", k))})
    if n_mlp == 0:
        raise ValueError(f"{what}: missing keys 'style.1.weight' ... (no mapping network: not a StyleGAN2 "
                         f"generator state dict of the port's format?)")
    style_dim = int(_need(sd, "style.1.weight", what).shape[1])
    n_rgb = len({int(m.group(1)) for k in sd if (m := re.fullmatch(r"to_rgbs\.(\d+)\.conv\.weight", k))})
    log_size = n_rgb + 2
    if not 3 <= log_size <= 10:
        raise ValueError(f"{what}: {n_rgb} to_rgbs blocks (size {2 ** log_size}); expected a size 8 ... 1024")
    ch = {4: int(_need(sd, "input.input", what).shape[1])}
    for i in range(n_rgb):
        ch[2 ** (i + 3)] = int(_need(sd, f"convs.{2 * i}.conv.weight", what).shape[1])
    cm = _channel_multiplier(ch)
    size = 2 ** log_size
    std = {r: c for r, c in default_channels(cm).items() if r <= size}
    return {"size": size, "style_dim": style_dim, "n_mlp": n_mlp, "channel_multiplier": cm,
            "channels": None if std == ch else ch}


def discriminator_config(sd: dict, what: str = "d") -> dict:
    """Discriminator(**config) arguments read from a discriminator state dict."""
    n_res = len({int(m.group(1)) for k in sd if (m := re.fullmatch(r"convs\.(\d+)\.conv1\.0\.weight", k))})
    log_size = n_res + 2
    if not 3 <= log_size <= 10:
        raise ValueError(f"{what}: {n_res} residual blocks (size {2 ** log_size}); expected a size 8 ... 1024")
    size = 2 ** log_size
    ch = {size: int(_need(sd, "convs.0.0.weight", what).shape[0])}
    for k in range(1, n_res + 1):
        ch[2 ** (log_size - k)] = int(_need(sd, f"convs.{k}.conv2.1.weight", what).shape[0])
    cm = _channel_multiplier(ch)
    std = {r: c for r, c in default_channels(cm).items() if r <= size}
    return {"size": size, "channel_multiplier": cm, "channels": None if std == ch else ch}


def _with_nominal(cfg: dict, arch: dict | None, keys) -> dict:
    """``cfg`` (read from the weights) with the nominal settings of a saved ``arch`` (``config()`` of the
    saved module) when that describes the same channels: the channel multiplier of a capped small model,
    the mapping network's lr_mlp (neither is visible in the weights)."""
    if not arch:
        return cfg
    from .networks import resolve_channels

    try:
        same = resolve_channels(cfg["size"], cfg["channel_multiplier"], cfg["channels"]) == \
            {int(k): int(v) for k, v in arch["channels"].items()}
        if same:
            cm = int(arch["channel_multiplier"])
            std = {r: c for r, c in default_channels(cm).items() if r <= cfg["size"]}
            chans = resolve_channels(cfg["size"], cfg["channel_multiplier"], cfg["channels"])
            cfg = dict(cfg, channel_multiplier=cm, channels=None if std == chans else chans)
            cfg.update({k: arch[k] for k in keys if k in arch})
    except (KeyError, TypeError, ValueError):
        pass
    return cfg


def generator_from_state_dict(sd: dict, what: str = "g_ema", arch: dict | None = None) -> Generator:
    """A Generator with the architecture read from ``sd``, loaded strictly (``arch``: see
    :func:`_with_nominal`)."""
    G = Generator(**_with_nominal(generator_config(sd, what), arch, ("lr_mlp",)))
    _strict_load(G, sd, what)
    return G


def discriminator_from_state_dict(sd: dict, what: str = "d", arch: dict | None = None) -> Discriminator:
    D = Discriminator(**_with_nominal(discriminator_config(sd, what), arch, ()))
    _strict_load(D, sd, what)
    return D


def load_checkpoint(ckpt, map_location="cpu", with_g: bool = False):
    """``(G, D)`` from a port-format checkpoint (a path, the loaded dict, or the name of a generator that
    ships with voxrender, see :mod:`.pretrained`): G is built from ``g_ema``
    (with ``G.latent_avg`` from ``latent_avg`` when present), D from ``d`` (None when the checkpoint has no
    ``d``, as in the port's converted official weights). Both in eval mode, on ``map_location``'s device.
    ``with_g=True``: ``(G, D, g)``, g the non-EMA generator of ``g`` (or None)."""
    from .pretrained import resolve

    ckpt = resolve(ckpt)  # a shipped generator's name ("synface64") is its file
    src = ckpt if isinstance(ckpt, dict) else _load_file(ckpt, map_location)
    name = "checkpoint" if isinstance(ckpt, dict) else str(ckpt)
    if not isinstance(src, dict) or "g_ema" not in src:
        keys = sorted(src) if isinstance(src, dict) else type(src).__name__
        raise ValueError(f"{name}: missing key 'g_ema' (a StyleGAN2 checkpoint of the port's format has "
                         f"'g_ema', 'd' and optionally 'g', 'latent_avg'; found {keys})")
    arch = src.get("arch") if isinstance(src.get("arch"), dict) else {}
    G = generator_from_state_dict(src["g_ema"], f"{name}['g_ema']", arch.get("g_ema"))
    if src.get("latent_avg") is not None:
        G.latent_avg = torch.as_tensor(src["latent_avg"]).detach().clone().float()
    D = discriminator_from_state_dict(src["d"], f"{name}['d']", arch.get("d")) if src.get("d") is not None else None
    dev = torch.device(map_location) if isinstance(map_location, (str, torch.device)) else None
    mods = [G, D]
    if with_g:
        g = generator_from_state_dict(src["g"], f"{name}['g']", arch.get("g_ema")) if src.get("g") is not None \
            else None
        mods.append(g)
    out = []
    for m in mods:
        if m is not None:
            m.eval()
            if dev is not None:
                m.to(dev)
        out.append(m)
    return tuple(out)


def checkpoint_dict(G: Generator, D: Discriminator | None = None, g: Generator | None = None, latent_avg=None,
                    extra: dict | None = None) -> dict:
    """The port-format dict (tensors detached, on the CPU): ``g_ema`` (G), ``d``, ``g``, ``latent_avg``
    (argument, else ``G.latent_avg`` when set), ``arch`` (the modules' ``config()``: plain numbers that
    keep the nominal channel multiplier and lr_mlp of small models; the port ignores it), then
    ``extra``'s keys."""

    def plain(m):
        m = getattr(m, "module", m)  # DDP
        return {k: v.detach().cpu().clone() for k, v in m.state_dict().items()}

    out = {"g_ema": plain(G)}
    arch = {"g_ema": getattr(G, "module", G).config()}
    if D is not None:
        out["d"] = plain(D)
        arch["d"] = getattr(D, "module", D).config()
    if g is not None:
        out["g"] = plain(g)
    la = latent_avg if latent_avg is not None else getattr(G, "latent_avg", None)
    if la is not None:
        out["latent_avg"] = torch.as_tensor(la).detach().cpu().clone()
    out["arch"] = arch
    out.update(extra or {})
    return out


def save_checkpoint(path, G: Generator, D: Discriminator | None = None, g: Generator | None = None,
                    latent_avg=None, extra: dict | None = None) -> Path:
    """Writes :func:`checkpoint_dict` atomically (temp file + ``os.replace``); :func:`load_checkpoint`
    reads it back exactly."""
    from voxrender.training import atomic_save

    return atomic_save(checkpoint_dict(G, D, g, latent_avg, extra), path)
