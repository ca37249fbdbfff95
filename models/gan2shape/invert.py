"""GAN inversion into W by optimisation, for GAN2Shape on images that are not GAN samples.

GAN2Shape needs, for every image, a latent w with G(w) close to the image (its released data ship such
latents, found offline). :func:`invert` finds one: w starts at the centre of W (``G.latent_avg`` when the
checkpoint has it, else the mean of the mapping network over 4096 samples, :meth:`Generator.truncation_center`)
and is optimised with Adam (cosine-decayed learning rate) to minimise

    L1(G(w), image) + feat_weight * sum_k mean |D_k(G(w)) - D_k(image)|

with D_k the discriminator's feature maps after its first ``n_feats`` residual blocks (the same feature
distance as GAN2Shape's step 2, used here because no LPIPS / VGG weights are available offline). One w for
all layers (W, not W+), fixed noise buffers (``randomize_noise=False``), as GAN2Shape uses the generator.
The generator and discriminator are left untouched (their ``requires_grad`` flags are restored).
"""

from __future__ import annotations

import contextlib
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["Inversion", "cosine_adam", "discriminator_features", "frozen", "invert", "resize"]


class Inversion(NamedTuple):
    w: Tensor  # (B, style_dim) the latents found
    image: Tensor  # (B, 3, G.size, G.size) G(w) in [0, 1]
    losses: list  # the loss at every step (floats)


def resize(img: Tensor, size: int) -> Tensor:
    """(B, C, H, W) -> (B, C, size, size): area averaging down, bilinear up (GAN2Shape's ``utils.resize``)."""
    if img.shape[-1] == size and img.shape[-2] == size:
        return img
    if size < img.shape[-1]:
        return F.interpolate(img, size=(size, size), mode="area")
    return F.interpolate(img, size=(size, size), mode="bilinear", align_corners=False)


@contextlib.contextmanager
def frozen(*modules):
    """Sets ``requires_grad=False`` on the modules' parameters for the block, then restores the flags."""
    params = [p for m in modules if m is not None for p in m.parameters()]
    flags = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        for p, f in zip(params, flags):
            p.requires_grad_(f)


def discriminator_features(D, img: Tensor, n_feats: int = 4) -> list:
    """The feature maps of images (B, 3, H, W) in [-1, 1] after the first ``n_feats`` residual blocks of a
    StyleGAN2 discriminator (``D.convs[1:n_feats + 1]``, GAN2Shape's ``ftr_num`` features: the fromRGB layer's
    output is skipped). Only those blocks run, so any input size divisible by 2^n_feats works."""
    out, feats = img, []
    for k, block in enumerate(D.convs):
        out = block(out)
        if k > 0:
            feats.append(out)
        if len(feats) >= n_feats:
            break
    return feats


def invert(G, image: Tensor, steps: int = 200, *, D=None, lr: float = 0.05, feat_weight: float = 1.0,
           n_feats: int = 4, w_init: Tensor | None = None, progress: bool = False, desc: str = "invert") -> Inversion:
    """Finds w in W with G(w) ~ ``image`` by optimisation (see the module docstring).

    Args:
        G: a StyleGAN2 :class:`~voxrender.models.stylegan2.Generator`.
        image: (B, 3, H, W) or (3, H, W) in [0, 1] (resized to G.size: area down, bilinear up).
        steps: Adam steps (0: return the start point).
        D: the discriminator for the feature term (None: L1 only).
        lr: Adam learning rate (cosine-decayed to 0 over the steps).
        feat_weight: weight of the discriminator-feature term. n_feats: how many feature maps.
        w_init: (B, style_dim) or (style_dim,) start (default: the centre of W).

    Returns:
        :class:`Inversion` (w (B, style_dim) detached, G(w) in [0, 1], the per-step losses).
    """
    x = torch.as_tensor(image)
    if x.dim() == 3:
        x = x[None]
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"image: expected (B, 3, H, W) or (3, H, W), got {tuple(x.shape)}")
    if steps < 0:
        raise ValueError(f"steps: expected >= 0, got {steps}")
    dev = next(G.parameters()).device
    target = resize(x.to(dev, torch.float32), G.size) * 2 - 1
    b = target.shape[0]
    with torch.no_grad():
        start = G.truncation_center() if w_init is None else torch.as_tensor(w_init)
        start = start.to(dev, torch.float32).reshape(-1, G.style_dim).expand(b, -1)
    w = start.clone().requires_grad_(True)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(range(steps), desc=desc, unit="step", leave=False)
    with frozen(G, D):
        tfeats = None
        if D is not None and feat_weight > 0:
            with torch.no_grad():
                tfeats = discriminator_features(D, target, n_feats)

        def loss_fn(w):
            img = G(w, input_is_latent=True, randomize_noise=False)
            loss = (img - target).abs().mean()
            if tfeats is not None:
                feats = discriminator_features(D, img, n_feats)
                loss = loss + feat_weight * sum((f - t).abs().mean() for f, t in zip(feats, tfeats))
            return loss

        losses = cosine_adam(w, steps, lr, loss_fn, bar=bar)
        with torch.no_grad():
            out = G(w, input_is_latent=True, randomize_noise=False)
    return Inversion(w.detach(), ((out.clamp(-1, 1) + 1) / 2).detach(), losses)


def cosine_adam(param: Tensor, steps: int, lr: float, loss_fn, *, bar=None, backward_timer=None,
                record: bool = True) -> list:
    """Minimises ``loss_fn(param)`` over a leaf tensor ``param`` (requires_grad) by ``steps`` Adam steps whose
    learning rate decays from ``lr`` to 0 on a half cosine (step i: lr (1 + cos(pi i / steps)) / 2): the
    inversion's optimiser, and the projected samples' refinement's (``GAN2Shape.refine``). ``bar``: a tqdm
    over ``range(steps)`` to advance (its postfix shows the loss); ``backward_timer``: a callable giving a
    fresh context manager to put around each backward pass (for timings, e.g. ``lambda: timer("name")``); ``record``: return the per-step losses (one device sync each;
    else an empty list)."""
    opt = torch.optim.Adam([param], lr=lr)
    losses = []
    for i in (range(steps) if bar is None else bar):
        for group in opt.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * i / max(steps, 1)))
        loss = loss_fn(param)
        with backward_timer() if backward_timer is not None else contextlib.nullcontext():
            opt.zero_grad(set_to_none=True)
            loss.backward()
        opt.step()
        if record or bar is not None:
            losses.append(loss.item())
        if bar is not None:
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
    return losses if record else []
