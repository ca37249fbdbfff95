"""GAN2Shape (Pan et al., ICLR 2021): per-image recovery of depth, albedo, viewpoint and light from a pretrained
StyleGAN2, on the Unsup3d representation and renderer (``renderer``).

Written from the paper and the published code (``gan2shape/model.py``, ``trainer.py``, ``configs/*.yml``); per
image (:meth:`GAN2Shape.run`):

- **step 0** (:meth:`GAN2Shape.fit_prior`): the depth net D is fitted to the ellipsoid prior built from the
  object mask (``prior.ellipsoid_depth_prior``; MSE of ``depth_from_raw(D(I))``, Adam, 1000 steps published).
- then ``num_stages`` stages of
  - **step 1** (:meth:`GAN2Shape.step1`, ``forward_step1``): train the albedo net A only, to reconstruct the
    input image through the renderer: masked L1 + ``lam_perc`` (0.5) x perceptual + ``lam_smooth`` (0.01) x
    (second-order smoothness of the canonical depth + of the diffuse shading). With ``flip1`` the
    horizontally flipped (depth, albedo) must explain the image too (Unsup3d's symmetry term; off in every
    published config).
  - **step 2** (:meth:`GAN2Shape.step2`): "pseudo samples": the current canonical depth and albedo are
    re-rendered under random views (a Gaussian of views, yaw enlarged by ``view_scale``) and random lights
    (GAN2Shape's uniform ``rand_light`` scheme: direction (lx, ly) uniform, ambient and diffuse strengths
    shifted together by a uniform amount); the offset encoder E is trained so that G(w + dw) reproduces each
    pseudo sample: masked L1 + masked L1 on the first ``n_feats`` (4) discriminator feature maps +
    ``lam_regular`` (0.01) x mean(dw^2). Then ``collect_iters`` batches of pseudo samples are projected
    with the trained E (no gradient) into the "projected samples" G(w + dw).
  - **step 3** (:meth:`GAN2Shape.step3`): train D, A, V and L (not E) on the input image (the step 1 loss,
    with the flip term when ``flip3`` is set for the stage) plus, for a batch of projected samples, the masked
    L1 + ``lam_perc`` x perceptual loss of their reconstruction from the shared canonical depth and albedo
    seen with V(sample)'s view and L(sample)'s light (flipped too under ``flip3``).

Every optimiser is Adam, lr 1e-4, betas (0.9, 0.999), weight decay 5e-4, re-created at the start of each step
as in the published trainer. Network outputs: depth ``clamp_border_depth(depth_from_raw(D(I)))``; albedo
``A(I) / 2 + 1 / 2``; view ``view_from_raw(V(I) + view_mean)``; light ``light_from_raw(L(I) + light_mean)``
(``add_mean_V`` / ``add_mean_L`` of every published config: the nets predict offsets from the mean of the view
and light statistics); z translation range 0 (the published configs). Images enter the nets, the
photometric losses and the discriminator in [-1, 1] (so the loss weights keep their published balance).

**The latent offset** (:func:`latent_offset`, GAN2Shape's ``latent_project`` and the generator's
``style_forward``): E(x) is an offset of the HIDDEN activation of the mapping network before its last
``offset_layers`` layers, taken about the hidden code of z = 0:

    h0 = mapping_layers(0, 0, n_mlp - k)           (k = offset_layers)
    e  = E(x) - E(G(w))                            (relative encoding, ``relative_enc``; else e = E(x))
    dw = mapping_layers(h0 + e, n_mlp - k, n_mlp) - mapping_layers(h0, n_mlp - k, n_mlp)
    projected sample = G(w + dw)

So e = 0 gives dw = 0 exactly, and with relative encoding the image G(w) itself projects onto w. The published
``F1_d`` = 2 (CelebA, cat, car, church) makes the offset pass through the last 3 of the 8 mapping layers
(k = 3, the default); ``F1_d`` = 8 (synthetic faces) passes it through the whole mapping network, PixelNorm
included (k = 8 = n_mlp: dw = mapping(e) - mapping(0)). Relative encoding is on for synthetic faces, CelebA
and cat, off for car and church.

Offline substitutes (documented in docs/gan2shape.md): the perceptual loss is the discriminator-feature L1
(:class:`DiscriminatorFeatureLoss`) unless VGG16 weights are given (:class:`VGGPerceptualLoss`, Unsup3d's
relu3_3 L1; GAN2Shape used LPIPS); the object mask is ``prior.object_mask`` (a threshold) instead of a
parsing network; the view / light statistics come from the synthetic-face sampler (``synface``) or from a
Gaussian moment-matched to a preset's uniform view ranges (GAN2Shape's fitted ``view_mvn.pth`` /
``light_mvn.pth`` files load with :meth:`ViewLightStats.from_files`). GAN2Shape's published pretrained D / A /
V / L / E weights are not available offline: by default every image starts from fresh networks, D from the
ellipsoid prior (as GAN2Shape does for cars and churches); :meth:`GAN2Shape.pretrain` is GAN2Shape's joint
pretraining over many images (its faces and cats start from such weights), and ``run(..., init=...)`` starts
an image from its result and skips step 0.

Not in GAN2Shape, off by default: ``depth_anchor`` moves every canonical depth along z so that its mean over
the object mask is the ellipsoid prior's (``renderer.anchor_depth``). GAN2Shape fixes the object's distance
from the rotation centre only through step 0; afterwards nothing holds it, and on the built-in faces it drifts
towards the camera until the pseudo samples' outlines move the wrong way and the GAN projects them turned
against their views. ``tilt_anchor`` (with it) also holds the canonical depth's vertical slope over the
mask at the prior's (``renderer.anchor_depth_tilt``): the symmetry leaves the bas-relief ambiguity's vertical
shear open (a face leaning forward, lit from lower down, looks the same in one view), and the pretraining on
the built-in faces leans every face about 35 degrees. ``anchor_frame="canonical"`` holds both over the object
mask carried into the canonical frame (:func:`canonical_anchor_mask`) instead of the input's own mask: over
the latter the true depth of a pitched face has a vertical slope, which the tilt anchor took off.
Pretrained networks must have been made with the same anchors (:func:`check_pretrained`). ``view_supervision``
(a weight) adds to step 3 the squared error between V's raw reading of each projected sample and the view its
pseudo sample was rendered in: there V reads them freely, and a deeper face explains a turned sample with less
yaw.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections import defaultdict
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from .invert import cosine_adam, discriminator_features, frozen, resize
from .networks import build_networks, num_stages
from .prior import PRIOR_BOXES, ellipsoid_depth_prior, object_mask
from .renderer import (
    anchor_depth,
    anchor_depth_tilt,
    clamp_border_depth,
    depth_from_raw,
    get_warped_2d_grid,
    light_from_raw,
    masked_mean,
    reconstruct,
    view_from_raw,
    view_to_raw,
)

__all__ = ["PRESETS", "PRETRAIN", "SYNFACE_PRIOR_NEAR", "DiscriminatorFeatureLoss", "GAN2Shape", "GAN2ShapeConfig",
           "GAN2ShapeResult", "Timer", "VGGPerceptualLoss", "ViewLightStats", "canonical_anchor_mask",
           "check_pretrained", "latent_offset", "masked_l1", "offset_start", "smooth_loss"]

_FACE_LIGHT = (-1.0, 1.0, -0.2, 0.8, -0.1, 0.6, -0.6)  # GAN2Shape's default rand_light
# uniform half-ranges of the default view Gaussians: pitch, yaw, roll (degrees), tx, ty (camera units)
_FACE_VIEW_RANGE = (15.0, 30.0, 5.0, 0.008, 0.008)

# The ellipsoid prior's centre depth for the built-in synthetic faces: their far rim is at about 1.02 like
# GAN2Shape's prior, and their heads rise 0.071 above it on average (0.059-0.082 inside the object mask, 200
# TRAINING faces), so near = 1.02 - 0.07. GAN2Shape's 0.91 (a rise of 0.11) fits faces that fill the frame
# (CelebA; its BFM runs started from pretrained networks, not from the prior); on the built-in faces, which
# fill about 60 % of the width, it makes every start twice as deep as the faces, and 200 steps of step 3 do
# not undo that even with exact multi-view samples (eval-gan2shape --oracle-samples, docs/gan2shape.md).
SYNFACE_PRIOR_NEAR = 0.95

# Published settings per dataset (configs/*.yml of GAN2Shape), plus ``tiny`` for tests / CI.
PRESETS: dict[str, dict] = {
    "synface": dict(image_size=64, category="synface", num_stages=1, steps_first=(500, 500, 200),
                    steps_later=(500, 500, 200), flip3=(True,), relative_enc=True, use_mask=False, view_scale=1.2,
                    batch_size=16, rand_light=(-0.9, 0.9, -0.3, 0.8, -0.1, 0.7, -0.4), offset_layers=8,
                    view_stats="synface", rotate_yaw=70.0, prior_near=SYNFACE_PRIOR_NEAR),
    "celeba": dict(image_size=128, category="face", num_stages=4, steps_first=(600, 600, 400),
                   steps_later=(200, 500, 300), flip3=(True, False, False, False), relative_enc=True, use_mask=False,
                   view_scale=1.2, batch_size=16, offset_layers=3, rotate_yaw=70.0),
    "cat": dict(image_size=128, category=None, num_stages=4, steps_first=(600, 600, 400),
                steps_later=(200, 500, 300), flip3=(True, False, False, False), relative_enc=True, use_mask=False,
                view_scale=1.2, batch_size=16, offset_layers=3, rotate_yaw=70.0),
    "car": dict(image_size=128, category="car", num_stages=4, steps_first=(700, 700, 600),
                steps_later=(200, 500, 400), flip3=(False,) * 4, relative_enc=False, use_mask=True, view_scale=1.0,
                batch_size=8, offset_layers=3, view_range=(10.0, 45.0, 5.0, 0.008, 0.008), rotate_yaw=45.0),
    "church": dict(image_size=128, category="church", num_stages=4, steps_first=(700, 700, 600),
                   steps_later=(200, 500, 400), flip3=(False,) * 4, relative_enc=False, use_mask=True, view_scale=1.0,
                   batch_size=8, offset_layers=3, prior_far=1.0, view_range=(10.0, 30.0, 5.0, 0.008, 0.008),
                   rotate_yaw=45.0),
    "tiny": dict(image_size=32, category="synface", num_stages=2, prior_steps=8, steps_first=(3, 3, 3),
                 steps_later=(2, 2, 2), flip3=(True, False), relative_enc=True, use_mask=True, view_scale=1.2,
                 batch_size=2, collect_iters=2, offset_layers=3, view_stats="synface", nf=4, enc_nf=4, zdim=16,
                 rotate_yaw=45.0, rotate_frames=6),
}


# GAN2Shape's joint pretraining schedules (configs/{synface,celeba,cat}_pretrain.yml), applied on top of the
# preset by GAN2ShapeConfig.for_pretraining; the published runs used 200 images and 8 GPUs (batch 12 / 8 each).
PRETRAIN: dict[str, dict] = {
    "synface": dict(num_stages=8, steps_first=(1500, 1500, 1500), steps_later=(700, 1000, 1000),
                    flip1=(False,) + (True,) * 7, flip3=(True,) * 8, batch_size=12, collect_iters=1000),
    "celeba": dict(num_stages=4, steps_first=(1500, 1500, 1500), steps_later=(700, 1000, 1000),
                   flip1=(False, True, True, True), flip3=(True,) * 4, batch_size=8, collect_iters=800),
    "cat": dict(num_stages=4, steps_first=(1500, 1500, 1500), steps_later=(700, 1000, 1000),
                flip1=(False, True, True, True), flip3=(True,) * 4, batch_size=8, collect_iters=800),
    "tiny": dict(num_stages=2, steps_first=(3, 3, 3), steps_later=(2, 2, 2), flip1=(False, True),
                 flip3=(True, True), batch_size=2, collect_iters=4),
}

# One image's inputs and working state; the joint pretraining keeps one set per image (GAN2Shape._select).
_PER_IMAGE = ("image", "w", "gan_image", "x", "gan_x", "mask", "prior", "canon", "canon_mask", "proj", "proj_mask",
              "proj_view", "_proj_idx", "pseudo_keep", "oracle")
# The settings that shape the networks: pretrained weights fit a run only if these agree.
_NET_SHAPE = ("image_size", "nf", "zdim", "enc_nf")


@dataclass
class GAN2ShapeConfig:
    """Every setting of a GAN2Shape run; :meth:`from_preset` gives the published ones (:data:`PRESETS`)."""

    preset: str = "custom"
    image_size: int = 64  # S: the renderer's and the networks' image size (64 or 128 published)
    category: str | None = "synface"  # the ellipsoid prior's box rule (prior.ellipsoid_depth_prior)
    num_stages: int = 1  # 0: no per-image steps (from pretrained networks: them alone, --nets-only)
    prior_steps: int = 1000  # step 0
    steps_first: tuple = (500, 500, 200)  # (step 1, step 2, step 3) of the first stage
    steps_later: tuple = (500, 500, 200)  # ... of the later stages
    flip1: tuple = ()  # per stage: flip term in step 1 (False where missing)
    flip3: tuple = ()  # per stage: flip term in step 3
    relative_enc: bool = True
    use_mask: bool = False  # carry the object mask to the canonical frame and mask the pseudo samples with it
    add_mean_view: bool = True
    add_mean_light: bool = True
    view_scale: float = 1.2  # yaw of the sampled pseudo views x this
    rand_light: tuple = _FACE_LIGHT  # (lx min, lx max, ly min, ly max, strength min, max, ambient factor)
    collect_iters: int = 100  # batches of projected samples collected after step 2
    batch_size: int = 16  # pseudo / projected samples per step 2 / step 3 iteration
    lr: float = 1e-4
    weight_decay: float = 5e-4
    lam_perc: float = 0.5
    lam_smooth: float = 0.01
    lam_regular: float = 0.01
    n_feats: int = 4  # discriminator feature maps in the step 2 loss (and the substitute perceptual loss)
    offset_layers: int = 3  # k: the offset enters before the last k mapping layers (>= n_mlp: all + PixelNorm)
    prior_near: float = 0.91
    prior_far: float = 1.02
    xyz_rotation_range: float = 60.0
    xy_translation_range: float = 0.1
    z_translation_range: float = 0.0
    nf: int | None = None  # width of D, A, V, L (None: max(4096 // S, 16))
    enc_nf: int = 32  # width of E
    zdim: int = 256
    view_stats: str = "gaussian"  # "synface": the synthetic faces' sampler; "gaussian": from view_range
    view_range: tuple = _FACE_VIEW_RANGE  # uniform half-ranges the default Gaussian is moment-matched to
    light_mean: tuple = (0.0, 0.0, 0.0, 0.3)  # raw light mean of the "gaussian" statistics
    mask_threshold: float = 0.02  # prior.object_mask threshold
    # Shift the predicted canonical depth so its mean over the object mask is the ellipsoid prior's there
    # (renderer.anchor_depth). Not in GAN2Shape: nothing there fixes how far the object sits from the rotation
    # centre after step 0, and on the built-in faces it drifts about 0.04 towards the camera, which turns the
    # projected samples the wrong way (docs/gan2shape.md).
    depth_anchor: bool = False
    # With depth_anchor: also hold the canonical depth's vertical tilt (its least-squares slope in y over the
    # object mask) at the ellipsoid prior's (renderer.anchor_depth_tilt). Not in GAN2Shape: a forward lean of
    # the face with the light turned to match (the bas-relief ambiguity's vertical shear) explains one view as
    # well as the upright face; on the built-in faces the pretraining leans it about 35 degrees
    # (docs/gan2shape.md).
    tilt_anchor: bool = False
    # Where the anchors hold the canonical depth: "input", over the input's object mask and the prior built on
    # it (where the turned face is SEEN; on the built-in faces the true canonical depth's vertical slope over
    # it follows the pitch, so tilt_anchor asks a pitched face for a lean it does not have), or "canonical",
    # over that mask carried into the canonical frame with the current view and depth and made symmetric, and
    # the prior built there (canonical_anchor_mask). Not in GAN2Shape (docs/gan2shape.md).
    anchor_frame: str = "input"
    # Refine every collected projected sample by this many Adam steps on its own latent (from E's w + dw, step
    # 2's image loss, learning rate refine_lr cosine-decayed to 0). Not in GAN2Shape: there E alone projects,
    # trained on ~800 k pseudo samples; with a CPU budget's E the projections keep the input's view (E
    # predicts about the mean offset), so step 3 learns a third of the yaw (docs/gan2shape.md).
    refine_steps: int = 0
    refine_lr: float = 0.05
    # Weight of a view-supervision term in step 3: the viewpoint net's raw reading of each projected sample
    # (rotations and xy translation) pulled towards the view its pseudo sample was rendered in (mean squared
    # error in raw units: radians x 60 / 180 x pi, translations / 0.1). Not in GAN2Shape, where V reads the
    # projected samples freely: a deeper face explains a turned sample with less yaw (the bas-relief
    # trade-off), and on the built-in faces V settles at about half the yaw with the face 40 % too deep
    # (docs/gan2shape.md). 0: off (GAN2Shape).
    view_supervision: float = 0.0
    rotate_yaw: float = 70.0  # outputs: the rotation GIF sweeps yaw in +- this (degrees)
    rotate_frames: int = 24

    @classmethod
    def from_preset(cls, name: str, **overrides) -> GAN2ShapeConfig:
        if name not in PRESETS:
            raise ValueError(f"preset: expected one of {', '.join(PRESETS)}, got {name!r}")
        kw = dict(PRESETS[name], preset=name)
        kw.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**kw).validate()

    def validate(self) -> GAN2ShapeConfig:
        num_stages(self.image_size)  # raises on a bad size
        if self.num_stages < 0:
            raise ValueError(f"num_stages: expected >= 0, got {self.num_stages}")
        for name in ("steps_first", "steps_later"):
            v = getattr(self, name)
            if len(v) != 3 or any(int(s) < 0 for s in v):
                raise ValueError(f"{name}: expected three step counts >= 0, got {v}")
        if self.batch_size < 1 or self.collect_iters < 1:
            raise ValueError("batch_size and collect_iters must be >= 1")
        if self.tilt_anchor and not self.depth_anchor:
            raise ValueError("tilt_anchor: needs depth_anchor (--tilt-anchor goes with --depth-anchor)")
        if self.anchor_frame not in ("input", "canonical"):
            raise ValueError(f"anchor_frame: expected 'input' or 'canonical', got {self.anchor_frame!r}")
        if self.anchor_frame != "input" and not self.depth_anchor:
            raise ValueError("anchor_frame: 'canonical' needs depth_anchor (--anchor-frame goes with --depth-anchor)")
        if not self.view_supervision >= 0:
            raise ValueError(f"view_supervision: expected >= 0, got {self.view_supervision}")
        if self.refine_steps < 0 or not self.refine_lr > 0:
            raise ValueError(f"refine_steps, refine_lr: expected >= 0 and > 0, got {self.refine_steps}, {self.refine_lr}")
        if self.view_stats not in ("synface", "gaussian"):
            raise ValueError(f"view_stats: expected 'synface' or 'gaussian', got {self.view_stats!r}")
        if len(self.rand_light) != 7:
            raise ValueError(f"rand_light: expected 7 numbers, got {self.rand_light}")
        if self.category not in PRIOR_BOXES:
            raise ValueError(f"category: expected one of {', '.join(map(repr, PRIOR_BOXES))}, got {self.category!r}")
        if not 0 < self.prior_near < self.prior_far:
            raise ValueError(f"prior_near, prior_far: expected 0 < near < far, got {self.prior_near}, {self.prior_far}")
        return self

    def steps(self, stage: int) -> tuple:
        """(step 1, step 2, step 3) iterations of ``stage`` (0-based)."""
        return tuple(int(s) for s in (self.steps_first if stage == 0 else self.steps_later))

    def flip(self, which: str, stage: int) -> bool:
        flags = self.flip1 if which == "flip1" else self.flip3
        return bool(flags[stage]) if stage < len(flags) else False

    def for_pretraining(self) -> GAN2ShapeConfig:
        """This configuration with the preset's joint-pretraining schedule (:data:`PRETRAIN`): stages, step
        counts, flips, batch size and collected batches; everything else (losses, views, prior, sizes) kept."""
        if self.preset not in PRETRAIN:
            raise ValueError(f"preset {self.preset!r}: GAN2Shape published no joint pretraining for it (there is "
                             f"one for {', '.join(PRETRAIN)})")
        return dataclasses.replace(self, **PRETRAIN[self.preset]).validate()

    def check_joint_images(self, n: int) -> None:
        """The joint pretraining shares the ``collect_iters`` collected batches out over its ``n`` images: a
        ValueError unless each gets at least one."""
        if self.collect_iters < n:
            raise ValueError(f"collect_iters: the joint pretraining shares its {self.collect_iters} collected batches "
                             f"of projected samples out over the images, so it needs at least one per image ({n}); "
                             f"use fewer images or more steps (--steps-scale)")

    def scaled(self, factor: float) -> GAN2ShapeConfig:
        """Every step count (prior, steps 1-3, collected batches) times ``factor`` (at least 1; 0 stays 0)."""
        if not factor > 0:
            raise ValueError(f"steps scale: expected a positive factor, got {factor}")

        def sc(n):
            return 0 if int(n) == 0 else max(1, int(round(int(n) * factor)))

        return dataclasses.replace(self, prior_steps=sc(self.prior_steps),
                                   steps_first=tuple(sc(s) for s in self.steps_first),
                                   steps_later=tuple(sc(s) for s in self.steps_later),
                                   collect_iters=sc(self.collect_iters))

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}


# ---------------------------------------------------------------------------------------------------------
# timing


class Timer:
    """Wall-clock totals per named part (``time.perf_counter``; CUDA is synchronised around each part so the
    GPU's time is charged to the part that queued it)."""

    def __init__(self, device=None):
        self.totals: dict = defaultdict(float)
        self.counts: dict = defaultdict(int)
        dev = torch.device(device) if device is not None else torch.device("cpu")
        self.cuda = dev.type == "cuda"

    def _sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    @contextlib.contextmanager
    def __call__(self, name: str):
        self._sync()
        t = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.totals[name] += time.perf_counter() - t
            self.counts[name] += 1

    def summary(self) -> dict:
        return {k: {"seconds": round(v, 4), "calls": self.counts[k]} for k, v in sorted(self.totals.items())}


# ---------------------------------------------------------------------------------------------------------
# losses


def masked_l1(a: Tensor, b: Tensor, mask: Tensor | None = None) -> Tensor:
    """GAN2Shape's ``photometric_loss``: mean |a - b| over the mask (B, 1, H, W) expanded over channels."""
    d = (a - b).abs()
    if mask is None:
        return d.mean()
    m = mask.expand_as(d)
    return (d * m).sum() / m.sum().clamp(min=1e-8)


def smooth_loss(x: Tensor) -> Tensor:
    """Second-order smoothness (GAN2Shape / Unsup3d ``smooth_loss``): mean |d2/dx2| + |d2/dxdy| + |d2/dydx| +
    |d2/dy2| of (B, H, W) or (B, C, H, W) maps."""
    x = x.reshape(-1, x.shape[-2], x.shape[-1])
    dy = x[:, 1:] - x[:, :-1]
    dx = x[:, :, 1:] - x[:, :, :-1]
    return ((dx[:, :, 1:] - dx[:, :, :-1]).abs().mean() + (dx[:, 1:] - dx[:, :-1]).abs().mean()
            + (dy[:, :, 1:] - dy[:, :, :-1]).abs().mean() + (dy[:, 1:] - dy[:, :-1]).abs().mean())


def _pooled_mask_l1(fa: Tensor, fb: Tensor, mask: Tensor | None) -> Tensor:
    d = (fa - fb).abs()
    if mask is None:
        return d.mean()
    s = max(mask.shape[-1] // d.shape[-1], 1)
    m = F.avg_pool2d(mask, s, s) if s > 1 else mask
    m = m.expand_as(d)
    return (d * m).sum() / m.sum().clamp(min=1e-8)


class DiscriminatorFeatureLoss:
    """GAN2Shape's ``DiscriminatorLoss(ftr_num=4)``: sum over the first ``n_feats`` discriminator feature maps
    (after the residual blocks, :func:`invert.discriminator_features`) of the L1 distance, the mask (B, 1, H,
    W) average-pooled to each map's resolution. Images in [-1, 1]; the target's features carry no gradient.
    Also the offline substitute for the perceptual (VGG / LPIPS) loss."""

    name = "discriminator-features"

    def __init__(self, D, n_feats: int = 4):
        if D is None:
            raise ValueError("GAN2Shape needs the StyleGAN2 discriminator (checkpoint key 'd') for its feature "
                             "losses; this checkpoint has none")
        self.D, self.n_feats = D, int(n_feats)

    def __call__(self, x: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        with torch.no_grad():
            ft = discriminator_features(self.D, target.detach(), self.n_feats)
        fx = discriminator_features(self.D, x, self.n_feats)
        return sum(_pooled_mask_l1(a, b, mask) for a, b in zip(fx, ft))


class VGGPerceptualLoss(torch.nn.Module):
    """Unsup3d's perceptual loss: L1 between VGG16 relu3_3 features (ImageNet normalisation), images in
    [-1, 1]. The VGG16 convolutions are built here (no torchvision needed) and load a torchvision
    ``vgg16`` state dict (``features.N.weight`` / ``.bias`` keys, or the same without ``features.``) from
    ``path``: e.g. ``torch.save(torchvision.models.vgg16(weights="IMAGENET1K_V1").state_dict(), path)``.
    (GAN2Shape uses LPIPS, whose learned linear heads are not available offline.)"""

    name = "vgg16-relu3_3"
    _CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256)  # features[0:16], up to relu3_3

    def __init__(self, path):
        super().__init__()
        from pathlib import Path

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"--vgg: no VGG16 weights at {path} (a torchvision vgg16 state dict saved "
                                    f"with torch.save)")
        layers, c = [], 3
        for v in self._CFG:
            if v == "M":
                layers.append(torch.nn.MaxPool2d(2, 2))
            else:
                layers += [torch.nn.Conv2d(c, v, 3, padding=1), torch.nn.ReLU(inplace=False)]
                c = v
        self.features = torch.nn.Sequential(*layers)
        sd = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(sd, dict) and "state_dict" in sd:
            sd = sd["state_dict"]
        want = self.features.state_dict()
        got = {}
        for k in want:
            for cand in (f"features.{k}", k):
                if cand in sd:
                    got[k] = sd[cand]
                    break
        missing = sorted(set(want) - set(got))
        if missing:
            raise ValueError(f"--vgg {path}: not a VGG16 state dict (missing {missing[:4]}...)")
        bad = [k for k in want if tuple(got[k].shape) != tuple(want[k].shape)]
        if bad:
            raise ValueError(f"--vgg {path}: shape mismatch for {bad} (not VGG16?)")
        self.features.load_state_dict(got)
        self.requires_grad_(False)
        self.eval()
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def forward(self, x: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        im = (torch.cat([x, target.detach()], 0) / 2 + 0.5 - self.mean) / self.std
        fa, fb = self.features(im).chunk(2, 0)
        return _pooled_mask_l1(fa, fb, mask)


# ---------------------------------------------------------------------------------------------------------
# view and light statistics


@dataclass
class ViewLightStats:
    """Means and covariances of the view (6) and light (4) in the networks' RAW units (GAN2Shape's
    ``view_mvn`` / ``light_mvn``): view rotations / 60 deg, translations / 0.1; light (2 a - 1, 2 b - 1, lx,
    ly)."""

    view_mean: Tensor
    view_cov: Tensor
    light_mean: Tensor
    light_cov: Tensor
    source: str = ""

    @classmethod
    def synface(cls) -> ViewLightStats:
        """The synthetic faces' own sampler (``voxrender.data.faces.view_light_statistics(raw=True)``): the
        means and (diagonal) covariances of its independent uniform distributions."""
        from voxrender.data.faces import view_light_statistics

        s = view_light_statistics(raw=True)
        return cls(s["view_mean"], s["view_cov"], s["light_mean"], s["light_cov"], "synthetic-faces sampler")

    @classmethod
    def gaussian(cls, view_range=_FACE_VIEW_RANGE, light_mean=(0.0, 0.0, 0.0, 0.3)) -> ViewLightStats:
        """A Gaussian moment-matched to uniform views in +-``view_range`` = (pitch, yaw, roll degrees, tx, ty):
        mean 0, variance r^2 / 3 (raw units), tz 0; light: mean ``light_mean`` (raw), covariance of uniform
        ambient / diffuse in [0.4, 0.65] / [0.35, 0.7] and a direction in [-1, 1] x [-0.2, 0.8]."""
        p, y, r, tx, ty = (float(v) for v in view_range)
        half = torch.tensor([p / 60, y / 60, r / 60, tx / 0.1, ty / 0.1, 0.0], dtype=torch.float64)
        vcov = torch.diag(half ** 2 / 3)
        lw = torch.tensor([0.5, 0.7, 2.0, 1.0], dtype=torch.float64)  # widths of the uniform light ranges (raw)
        return cls(torch.zeros(6), vcov.float(), torch.tensor(light_mean, dtype=torch.float32),
                   torch.diag(lw ** 2 / 12).float(), f"Gaussian fitted to uniform views +-{tuple(view_range)}")

    @classmethod
    def from_files(cls, view_path, light_path) -> ViewLightStats:
        """GAN2Shape's ``view_mvn.pth`` / ``light_mvn.pth`` ({'mean', 'cov'} in raw units)."""
        out = []
        for path in (view_path, light_path):
            d = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(d, dict) or "mean" not in d or "cov" not in d:
                raise ValueError(f"{path}: expected a dict with 'mean' and 'cov' (GAN2Shape's *_mvn.pth)")
            out += [torch.as_tensor(d["mean"]).float().flatten(), torch.as_tensor(d["cov"]).float()]
        if out[0].numel() < 6:
            out[0] = torch.cat([out[0], out[0].new_zeros(6 - out[0].numel())])
            c = torch.zeros(6, 6)
            c[:out[1].shape[0], :out[1].shape[1]] = out[1]
            out[1] = c
        return cls(*out, source=f"{view_path}, {light_path}")

    @classmethod
    def for_config(cls, cfg: GAN2ShapeConfig) -> ViewLightStats:
        if cfg.view_stats == "synface":
            return cls.synface()
        return cls.gaussian(cfg.view_range, cfg.light_mean)

    def sample_views(self, n: int, generator: torch.Generator | None = None, view_scale: float = 1.0) -> Tensor:
        """(n, 6) raw views ~ N(view_mean, view_cov), the yaw (index 1) times ``view_scale`` (GAN2Shape's
        ``sample_view_light``), drawn on the CPU from ``generator``."""
        cov = self.view_cov.double() + 1e-10 * torch.eye(6, dtype=torch.float64)
        L = torch.linalg.cholesky(cov)
        eps = torch.randn(n, 6, generator=generator, dtype=torch.float64)
        v = self.view_mean.double() + eps @ L.T
        v[:, 1] *= view_scale
        return v.float()


# ---------------------------------------------------------------------------------------------------------
# the latent offset


def offset_start(G, offset_layers: int) -> int:
    """The mapping layer the offset enters before: n_mlp - k, or 0 (the whole network, PixelNorm included)
    when k >= n_mlp."""
    return max(0, int(G.n_mlp) - int(offset_layers))


def latent_offset(G, e: Tensor, offset_layers: int = 3) -> Tensor:
    """dw = mapping_layers(h0 + e, s, n_mlp) - mapping_layers(h0, s, n_mlp) with h0 = mapping_layers(0, 0, s),
    s = :func:`offset_start` (GAN2Shape's ``latent_project``; see the module docstring). e (B, style_dim)."""
    s = offset_start(G, offset_layers)
    zero = e.new_zeros(1, G.style_dim)
    h0 = G.mapping_layers(zero, 0, s) if s > 0 else zero
    w0 = G.mapping_layers(h0, s, G.n_mlp)
    return G.mapping_layers(h0 + e, s, G.n_mlp) - w0


# ---------------------------------------------------------------------------------------------------------
# the model


def canonical_anchor_mask(mask: Tensor, depth: Tensor, view: Tensor) -> Tensor:
    """Object masks (B, 1, S, S) or (B, S, S) of images seen in ``view`` (B, 6) carried into the canonical frame
    with the canonical ``depth`` (B, S, S) (as GAN2Shape carries the input's mask for the pseudo samples), made
    symmetric (their union with their mirror image: the part the view hides is the mirror of a part it shows)
    and thresholded at 0.5: (B, 1, S, S) in {0, 1}, all ones where that leaves nothing. The region the
    ``anchor_frame="canonical"`` anchors hold the depth over."""
    B, S = depth.shape[0], depth.shape[-1]
    grid = get_warped_2d_grid(depth, view)
    m = F.grid_sample(mask.reshape(B, 1, S, S).to(depth), grid, mode="bilinear", padding_mode="zeros",
                      align_corners=True)
    return GAN2Shape._mask_or_all((torch.maximum(m, m.flip(-1)) > 0.5).to(depth))


def check_pretrained(init: dict, cfg: GAN2ShapeConfig, style_dim: int) -> None:
    """Raises a ValueError naming what differs when pretrained networks (:meth:`GAN2Shape.pretrain`'s result)
    do not fit a run with ``cfg`` and a GAN of ``style_dim``."""
    if not isinstance(init, dict) or "nets" not in init or "config" not in init:
        raise ValueError("pretrained: expected the result of GAN2Shape.pretrain (a dict with 'nets' and 'config')")
    have = {k: init["config"].get(k) for k in _NET_SHAPE}
    want = {k: getattr(cfg, k) for k in _NET_SHAPE}
    bad = [f"{k} {have[k]} (run: {want[k]})" for k in _NET_SHAPE if have[k] != want[k]]
    if int(init.get("style_dim", style_dim)) != int(style_dim):
        bad.append(f"style_dim {init.get('style_dim')} (GAN: {style_dim})")
    # the depth frame: networks pretrained with the anchor learned views for the face where the prior holds it,
    # those without it for wherever it drifted; mixing them misplaces the albedo (docs/gan2shape.md)
    anchored = bool(init["config"].get("depth_anchor", False))
    if anchored != cfg.depth_anchor:
        bad.append(f"depth_anchor {anchored} (run: {cfg.depth_anchor}; --depth-anchor must match the pretraining's)")
    elif anchored:
        bad += [f"{k} {init['config'].get(k)} (run: {getattr(cfg, k)}; the anchor holds the depth at the prior's)"
                for k in ("prior_near", "prior_far", "category") if init["config"].get(k) != getattr(cfg, k)]
    # the tilt: networks pretrained with or without it learned lights and views for their lean
    tilted = bool(init["config"].get("tilt_anchor", False))
    if tilted != cfg.tilt_anchor:
        bad.append(f"tilt_anchor {tilted} (run: {cfg.tilt_anchor}; --tilt-anchor must match the pretraining's)")
    frame = init["config"].get("anchor_frame", "input")
    if anchored and frame != cfg.anchor_frame:
        bad.append(f"anchor_frame {frame} (run: {cfg.anchor_frame}; --anchor-frame must match the pretraining's)")
    if bad:
        raise ValueError(f"pretrained: networks made for other settings: {', '.join(bad)}")


def cpu_state_copy(state: dict) -> dict:
    """A CPU copy of a state dict (``.cpu()`` alone would alias tensors that already live on the CPU)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


class WeightAverage:
    """An exponential moving average of networks' weights (Polyak averaging; not in GAN2Shape): after every
    optimiser step ``avg <- decay * avg + (1 - decay) * weights`` for the floating-point tensors of the state
    dict, integer buffers copied. It only reads the networks: the training itself is unchanged.

    ``state``: a saved average (a state dict, e.g. from a checkpoint) to continue from; else it starts at the
    networks' current weights."""

    def __init__(self, nets: torch.nn.Module, decay: float, state: dict | None = None):
        decay = float(decay)
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay: expected a number in (0, 1), got {decay}")
        self.decay = decay
        cur = nets.state_dict()
        src = cur if state is None else state
        if src.keys() != cur.keys():
            raise ValueError("state: a weight average of other networks (its keys differ from the networks')")
        self.state = {k: v.detach().to(cur[k].device, copy=True) for k, v in src.items()}

    @torch.no_grad()
    def update(self, nets: torch.nn.Module) -> None:
        cur = nets.state_dict()
        avg, new = [], []
        for k, v in self.state.items():
            if v.is_floating_point():
                avg.append(v)
                new.append(cur[k].detach())
            else:
                v.copy_(cur[k])
        torch._foreach_lerp_(avg, new, 1.0 - self.decay)

    def copy(self) -> dict:
        """A CPU copy of the averaged state dict."""
        return cpu_state_copy(self.state)


@dataclass
class GAN2ShapeResult:
    """What :meth:`GAN2Shape.run` returns (tensors on the CPU; images in [0, 1])."""

    image: Tensor  # (3, S, S) the input image
    gan_image: Tensor  # (3, S, S) G(w)
    w: Tensor  # (style_dim,)
    object_mask: Tensor  # (S, S) the threshold mask of the input
    prior: Tensor  # (S, S) the ellipsoid prior depth
    canon_depth: Tensor  # (S, S) canonical depth
    canon_albedo: Tensor  # (3, S, S)
    canon_normal: Tensor  # (S, S, 3) Unsup3d sign
    canon_image: Tensor  # (3, S, S) albedo x shading, canonical frame
    canon_mask: Tensor  # (S, S) the object mask carried to the canonical frame
    view: Tensor  # (6,) radians / camera units
    light: Tensor  # (4,) ambient, diffuse, lx, ly
    view_depth: Tensor  # (S, S) the reconstruction's depth in the input view (1.2 where no surface)
    view_mask: Tensor  # (S, S) 1 where the view sees the surface
    recon: Tensor  # (3, S, S) the reconstructed input image
    pseudo: Tensor  # (n, 3, S, S) some pseudo samples of the last stage
    projected: Tensor  # (n, 3, S, S) their projected samples G(w + dw)
    losses: dict = field(default_factory=dict)  # "step0", "stage1/step1", ... -> per-iteration losses
    times: dict = field(default_factory=dict)  # per part and per step, seconds
    nets: object = None  # the trained torch.nn.ModuleDict (depth, albedo, view, light, offset)


def _as_image(img: Tensor, size: int, device) -> Tensor:
    x = torch.as_tensor(img)
    if x.dim() == 3:
        x = x[None]
    if x.dim() != 4 or x.shape[0] != 1 or x.shape[1] != 3:
        raise ValueError(f"image: expected (3, H, W) or (1, 3, H, W) in [0, 1], got {tuple(x.shape)}")
    return resize(x.to(device, torch.float32), size).clamp(0, 1)


class GAN2Shape:
    """Per-image GAN2Shape on a StyleGAN2 ``G`` and its discriminator ``D`` (see the module docstring).

    Args:
        G, D: :class:`voxrender.models.stylegan2.Generator` / ``Discriminator`` (frozen here: their
            ``requires_grad`` flags are switched off while a run is in progress, and restored).
        config: :class:`GAN2ShapeConfig`.
        device: where everything runs (default: G's device); G and D are moved there.
        perceptual: a callable (x, target, mask=None) on [-1, 1] images (default
            :class:`DiscriminatorFeatureLoss`; :class:`VGGPerceptualLoss` with VGG16 weights).
        stats: :class:`ViewLightStats` (default :meth:`ViewLightStats.for_config`).
        progress: tqdm bars per step (to stderr).

    ``timer`` (a :class:`Timer`) collects the per-part times of the current run (a new one per :meth:`run`).
    """

    def __init__(self, G, D, config: GAN2ShapeConfig, *, device=None, perceptual=None,
                 stats: ViewLightStats | None = None, progress: bool = False):
        self.cfg = config.validate()
        self.device = torch.device(device) if device is not None else next(G.parameters()).device
        self.G = G.to(self.device).eval()
        self.D = D.to(self.device).eval() if D is not None else None
        self.dfeat = DiscriminatorFeatureLoss(self.D, self.cfg.n_feats)
        self.perceptual = perceptual if perceptual is not None else self.dfeat
        if isinstance(self.perceptual, torch.nn.Module):
            self.perceptual.to(self.device)
        self.stats = stats if stats is not None else ViewLightStats.for_config(self.cfg)
        self.progress = progress
        self.timer = Timer(self.device)
        self.S = int(self.cfg.image_size)
        self.desc = ""
        self.oracle = None  # see run()
        self.average: WeightAverage | None = None  # see pretrain()

    # -- set-up -------------------------------------------------------------------------------------------
    def _bar(self, n: int, desc: str):
        if not self.progress:
            return range(n)
        from tqdm import tqdm

        return tqdm(range(n), desc=f"{self.desc}{desc}", unit="it", leave=False, dynamic_ncols=True)

    def _frozen(self):
        """G, D and a module perceptual loss without gradients while a run is in progress (restored after)."""
        return frozen(self.G, self.D, self.perceptual if isinstance(self.perceptual, torch.nn.Module) else None)

    def _times(self, wall: dict) -> dict:
        """A run's ``times``: the wall time per step and the per-part totals of :attr:`timer`."""
        return {"steps": {k: round(v, 4) for k, v in wall.items()}, "parts": self.timer.summary()}

    def _adam(self, *names):
        params = [p for n in names for p in self.nets[n].parameters()]
        return torch.optim.Adam(params, lr=self.cfg.lr, betas=(0.9, 0.999), weight_decay=self.cfg.weight_decay)

    def _stepped(self, opt) -> None:
        """``opt.step()``, then the weight average (when a pretraining keeps one) takes in the new weights."""
        opt.step()
        if self.average is not None:
            self.average.update(self.nets)

    def _image_state(self, image: Tensor, w: Tensor, gan_image: Tensor | None = None,
                     mask: Tensor | None = None, oracle=None) -> dict:
        """One image's inputs and working state (the attributes listed in :data:`_PER_IMAGE`): the image (3, H,
        W) in [0, 1] (resized to S), its latent w (style_dim,) / (1, style_dim), G(w) (computed when None), the
        object mask (default the threshold mask of the image), its ellipsoid prior; no canonical prediction or
        projected samples yet."""
        cfg, dev = self.cfg, self.device
        st = {"image": _as_image(image, self.S, dev),
              "w": torch.as_tensor(w).to(dev, torch.float32).reshape(1, -1)}
        if st["w"].shape[1] != self.G.style_dim:
            raise ValueError(f"w: expected {self.G.style_dim} values, got {st['w'].shape[1]}")
        if gan_image is None:
            with torch.no_grad(), self.timer("stylegan2_forward"):
                gan_image = (self.G(st["w"], input_is_latent=True, randomize_noise=False).clamp(-1, 1) + 1) / 2
        st["gan_image"] = _as_image(gan_image, self.S, dev)
        st["x"] = st["image"] * 2 - 1  # the nets' input, [-1, 1]
        st["gan_x"] = st["gan_image"] * 2 - 1
        if mask is None:
            mask = object_mask(st["image"], threshold=cfg.mask_threshold)
        # nothing above the threshold: use the whole image for the prior
        m = self._mask_or_all(torch.as_tensor(mask).to(dev, torch.float32).reshape(1, 1, self.S, self.S))
        st["mask"] = m
        st["prior"] = self._prior(m).to(dev)
        st.update(canon=None, canon_mask=None, proj=None, proj_mask=None, proj_view=None, _proj_idx=0, pseudo_keep=None,
                  oracle=oracle)
        return st

    def _build_nets(self, seed: int, init: dict | None = None) -> None:
        """Fresh networks (seeded), or ``init``'s weights (a ``nets`` state dict of :meth:`pretrain`)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            self.nets = build_networks(self.S, self.G.style_dim, self.cfg.nf, self.cfg.zdim,
                                       self.cfg.enc_nf).to(self.device)
        if init is not None:
            check_pretrained(init, self.cfg, self.G.style_dim)
            self.nets.load_state_dict(init["nets"])

    def _reset_run_state(self, seed: int) -> None:
        dev = self.device
        self.gen = torch.Generator().manual_seed(int(seed))
        self.view_mean = self.stats.view_mean.to(dev) if self.cfg.add_mean_view else torch.zeros(6, device=dev)
        self.light_mean = self.stats.light_mean.to(dev) if self.cfg.add_mean_light else torch.zeros(4, device=dev)
        self.losses: dict = {}
        self._states, self._cur = None, None

    def setup(self, image: Tensor, w: Tensor, gan_image: Tensor | None = None, mask: Tensor | None = None,
              seed: int = 0, init: dict | None = None) -> None:
        """Networks (fresh and seeded, or ``init``'s pretrained weights) and the per-image inputs (see
        :meth:`_image_state`)."""
        self.__dict__.update(self._image_state(image, w, gan_image, mask, self.oracle))
        self._build_nets(seed, init)
        self._reset_run_state(seed)

    # -- several images (joint pretraining) ---------------------------------------------------------------
    def _select(self, k: int) -> None:
        """Makes image ``k`` of the joint set the current one (its working state is kept for the next visit;
        GAN2Shape's ``next_image``). No-op for a single image."""
        if self._states is None or k == self._cur:
            return
        if self._cur is not None:
            self._states[self._cur].update({a: getattr(self, a) for a in _PER_IMAGE})
        self.__dict__.update(self._states[k])
        self._cur = k

    def _advance(self) -> None:
        """Joint mode: the next image of a random order, reshuffled after every pass (GAN2Shape's
        ``next_image``); called at the start of every iteration of steps 1, 2 and 3. No-op for one image."""
        if self._states is None:
            return
        self._pos += 1
        if self._pos >= len(self._order):
            self._pos = 0
            self._order = torch.randperm(len(self._states), generator=self.gen).tolist()
        self._select(self._order[self._pos])

    def _indices(self) -> list:
        return [None] if self._states is None else list(range(len(self._states)))

    # -- forward pieces -----------------------------------------------------------------------------------
    def _view(self, raw: Tensor) -> Tensor:
        c = self.cfg
        return view_from_raw(raw + self.view_mean, c.xyz_rotation_range, c.xy_translation_range,
                             c.z_translation_range)

    def _light(self, raw: Tensor) -> Tensor:
        return light_from_raw(raw + self.light_mean)

    def _depth(self, x: Tensor, own: bool, view: Tensor) -> Tensor:
        """The canonical depth (B, S, S) of ``x`` in [-1, 1] (``own``: the input image, whose mask and prior
        are known; ``view`` (B, 6): V's reading of ``x``): ``depth_from_raw(D(x))``, anchored to the prior under
        ``depth_anchor``, border clamped. With ``anchor_frame`` "canonical" the anchors hold it over the object
        mask carried into the canonical frame with ``view`` (:func:`canonical_anchor_mask`) and the prior built
        on that mask instead."""
        depth = depth_from_raw(self.nets["depth"](x))
        if self.cfg.depth_anchor:
            if own:
                mask, prior = self.mask, self.prior
            else:
                mask = self._mask_or_all(object_mask((x.detach() + 1) / 2, threshold=self.cfg.mask_threshold))
                prior = self._prior(mask).to(depth)
            depth = self._anchor(depth, mask.reshape(depth.shape), prior)
            if self.cfg.anchor_frame == "canonical":
                mask = canonical_anchor_mask(mask, depth.detach(), view.detach())
                depth = self._anchor(depth, mask.reshape(depth.shape), self._prior(mask).to(depth))
        return clamp_border_depth(depth)

    def _prior(self, mask: Tensor) -> Tensor:
        """The ellipsoid depth prior of object masks (B, 1, S, S) with this run's near / far / box rule."""
        return ellipsoid_depth_prior(mask, near=self.cfg.prior_near, far=self.cfg.prior_far, category=self.cfg.category)

    def _anchor(self, depth: Tensor, mask: Tensor, prior: Tensor) -> Tensor:
        """``depth`` (B, S, S) moved so that its mean (and under ``tilt_anchor`` its vertical slope) over
        ``mask`` (B, S, S) is ``prior``'s (renderer.anchor_depth / anchor_depth_tilt)."""
        if self.cfg.tilt_anchor:
            return anchor_depth_tilt(depth, mask, prior)
        return anchor_depth(depth, mask, masked_mean(prior.reshape(depth.shape), mask))

    @staticmethod
    def _mask_or_all(m: Tensor) -> Tensor:
        """Object masks (B, ..., S, S), each all ones where it is empty (nothing above the threshold)."""
        empty = m.flatten(1).sum(1) == 0
        return torch.where(empty.reshape(-1, *[1] * (m.dim() - 1)), torch.ones_like(m), m)

    def predict(self, x: Tensor | None = None, train=()) -> dict:
        """Canonical depth (B, S, S) (border clamped), albedo (B, 3, S, S) in [0, 1], view (B, 6), light (B, 4)
        of the input image (or of images ``x`` in [-1, 1]); only the nets named in ``train`` get gradients."""
        own = x is None
        x = self.x if own else x
        out = {}
        with self.timer("networks_forward"):
            with torch.set_grad_enabled("view" in train and torch.is_grad_enabled()):
                out["view"] = self._view(self.nets["view"](x))
            with torch.set_grad_enabled("depth" in train and torch.is_grad_enabled()):
                out["depth"] = self._depth(x, own, out["view"])  # (the view places the canonical anchor frame)
            with torch.set_grad_enabled("albedo" in train and torch.is_grad_enabled()):
                out["albedo"] = self.nets["albedo"](x) / 2 + 0.5
            with torch.set_grad_enabled("light" in train and torch.is_grad_enabled()):
                out["light"] = self._light(self.nets["light"](x))
        return out

    def _photo_loss(self, recon: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        """L1 + lam_perc x perceptual of [0, 1] images (B, 3, S, S), computed in [-1, 1], mask (B, 1, S, S)."""
        r, t = recon * 2 - 1, target * 2 - 1
        with self.timer("perceptual_forward"):
            perc = self.perceptual(r * mask, t * mask)
        return masked_l1(r, t, mask) + self.cfg.lam_perc * perc

    def forward_step1(self, flip: bool, train=("albedo",)) -> tuple[Tensor, dict]:
        """The image-reconstruction loss (GAN2Shape's ``forward_step1``) and the canonical prediction."""
        p = self.predict(train=train)
        depth, albedo, view, light = p["depth"], p["albedo"], p["view"], p["light"]
        if flip:
            depth = torch.cat([depth, depth.flip(-1)], 0)
            albedo = torch.cat([albedo, albedo.flip(-1)], 0)
            view, light = view.expand(2, -1), light.expand(2, -1)
        with self.timer("renderer_forward"):
            rec = reconstruct(depth, albedo, view, light, clamp=True)
        m = rec.mask
        if flip:
            m = (m[:1] * m[1:]).expand(2, -1, -1)
        m = m[:, None]
        target = self.image.expand(depth.shape[0], -1, -1, -1)
        loss = self._photo_loss(rec.image[:1], target[:1], m[:1])
        if flip:
            loss = loss + self._photo_loss(rec.image[1:], target[1:], m[1:])
        loss = loss + self.cfg.lam_smooth * (smooth_loss(depth) + smooth_loss(rec.diffuse))
        p.update(depth2=depth, albedo2=albedo, rec=rec)
        return loss, p

    # -- step 0 -------------------------------------------------------------------------------------------
    def fit_prior(self, steps: int | None = None) -> list:
        """Step 0: fits D to the ellipsoid prior (MSE of depth_from_raw(D(I)), no border clamp)."""
        steps = self.cfg.prior_steps if steps is None else steps
        opt = self._adam("depth")
        hist = []
        for _ in self._bar(steps, "step 0 (depth <- ellipsoid prior)"):
            with self.timer("networks_forward"):
                depth = depth_from_raw(self.nets["depth"](self.x))
            loss = F.mse_loss(depth, self.prior)
            with self.timer("backward_step0"):
                opt.zero_grad(set_to_none=True)
                loss.backward()
            self._stepped(opt)
            hist.append(loss.item())
        self.losses["step0"] = hist
        return hist

    # -- step 1 -------------------------------------------------------------------------------------------
    def step1(self, steps: int, flip: bool = False, key: str = "step1") -> list:
        """Step 1: trains A only on the image-reconstruction loss."""
        return self._optimize(("albedo",), steps, key, "backward_step1",
                              lambda: self.forward_step1(flip, train=("albedo",))[0])

    def _optimize(self, names: tuple, steps: int, key: str, timer: str, loss_fn) -> list:
        """``steps`` Adam steps of the networks ``names`` on ``loss_fn()``; the losses go to ``self.losses[key]``."""
        opt = self._adam(*names)
        hist = []
        for _ in self._bar(steps, f"{key} ({', '.join(names)})"):
            self._advance()
            loss = loss_fn()
            with self.timer(timer):
                opt.zero_grad(set_to_none=True)
                loss.backward()
            self._stepped(opt)
            hist.append(loss.item())
        self.losses[key] = hist
        return hist

    # -- step 2 -------------------------------------------------------------------------------------------
    @torch.no_grad()
    def _prepare_canonical(self) -> None:
        """The current canonical depth / albedo / light (and the canonical object mask) for the pseudo
        samples."""
        p = self.predict()
        self.canon = p
        if self.cfg.use_mask:
            grid = get_warped_2d_grid(p["depth"], p["view"])
            self.canon_mask = F.grid_sample(self.mask, grid, mode="bilinear", padding_mode="zeros",
                                            align_corners=True)
        else:
            self.canon_mask = None

    @torch.no_grad()
    def sample_pseudo(self, n: int) -> tuple[Tensor, Tensor]:
        """``n`` pseudo samples (n, 3, S, S) in [0, 1] and their masks (n, 1, S, S): the canonical depth and
        albedo re-rendered with random views (the statistics' Gaussian, yaw x view_scale) and random lights
        (GAN2Shape's ``rand_light``: direction uniform, ambient + alpha r, diffuse + r with r uniform)."""
        views, lights = self._random_views_lights(n)
        return self._render_pseudo(views, lights)

    @torch.no_grad()
    def _random_views_lights(self, n: int) -> tuple[Tensor, Tensor]:
        """The random views (n, 6) and lights (n, 4) of ``n`` pseudo samples (see :meth:`sample_pseudo`)."""
        c, dev = self.cfg, self.device
        views = self._view_raw_to_view(self.stats.sample_views(n, self.gen, c.view_scale).to(dev))
        x0, x1, y0, y1, r0, r1, alpha = c.rand_light
        u = torch.rand(n, 3, generator=self.gen).to(dev)
        lx, ly, r = x0 + (x1 - x0) * u[:, 0], y0 + (y1 - y0) * u[:, 1], r0 + (r1 - r0) * u[:, 2]
        lt = self.canon["light"]
        lights = torch.stack([lt[0, 0] + alpha * r, lt[0, 1] + r, lx, ly], 1)
        return views, lights

    @torch.no_grad()
    def _render_pseudo(self, views: Tensor, lights: Tensor) -> tuple[Tensor, Tensor]:
        """The current canonical depth and albedo rendered in ``views`` under ``lights``, and their masks."""
        n = views.shape[0]
        with self.timer("renderer_forward"):
            rec = reconstruct(self.canon["depth"], self.canon["albedo"], views, lights, clamp=True)
        mask = rec.mask[:, None]
        if self.canon_mask is not None:
            mask = mask * F.grid_sample(self.canon_mask.expand(n, -1, -1, -1), rec.grid, mode="nearest",
                                        padding_mode="zeros", align_corners=True)
        return rec.image, mask

    def _view_raw_to_view(self, raw: Tensor) -> Tensor:
        c = self.cfg
        return view_from_raw(raw, c.xyz_rotation_range, c.xy_translation_range, c.z_translation_range)

    def project(self, images: Tensor, parts: bool = False):
        """Projected samples of images (B, 3, S, S) in [0, 1]: G(w + dw) resized to S, in [0, 1], and dw
        (B, style_dim) (:func:`latent_offset` of E's output, relative to E(G(w)) with ``relative_enc``).
        ``parts=True`` also returns the generator's input w + dw and raw output (for the split backward)."""
        with self.timer("networks_forward"):
            e = self.nets["offset"](images * 2 - 1)
            if self.cfg.relative_enc:
                e = e - self.nets["offset"](self.gan_x)
        with self.timer("stylegan2_forward"):
            dw = latent_offset(self.G, e, self.cfg.offset_layers)
            latent = self.w + dw
            img = self.G(latent, input_is_latent=True, randomize_noise=False)
            proj = resize((img.clamp(-1, 1) + 1) / 2, self.S)
        return (proj, dw, latent, img) if parts else (proj, dw)

    def step2_loss(self, pseudo: Tensor, mask: Tensor, parts: bool = False):
        """Step 2's loss of pseudo samples (B, 3, S, S) and masks (B, 1, S, S): (loss, projected samples);
        ``parts=True``: (image term, regulariser, latent, G's raw output) for :meth:`_step2_backward`."""
        proj, dw, latent, img = self.project(pseudo, parts=True)
        a, b = proj * 2 - 1, pseudo * 2 - 1
        with self.timer("discriminator_forward"):
            feat = self.dfeat(a, b, mask)
        l_img = masked_l1(a, b, mask) + feat
        reg = self.cfg.lam_regular * dw.pow(2).mean()
        if parts:
            return l_img, reg, latent, img
        return l_img + reg, proj

    def _step2_backward(self, l_img: Tensor, reg: Tensor, latent: Tensor, img: Tensor) -> None:
        """``(l_img + reg).backward()`` in three timed parts (the same gradients): the discriminator
        features and L1 down to G's output; the StyleGAN2 synthesis network down to w + dw; the mapping layers
        of the offset and E."""
        with self.timer("discriminator_backward"):
            g_img, = torch.autograd.grad(l_img, img, retain_graph=True)
        with self.timer("stylegan2_backward"):
            g_lat, = torch.autograd.grad(img, latent, g_img)
        with self.timer("encoder_backward"):
            torch.autograd.backward([latent, reg], [g_lat, torch.ones_like(reg)])

    def step2(self, steps: int, key: str = "step2") -> list:
        """Step 2: trains E on pseudo samples, then collects ``collect_iters`` batches of projected samples.
        With an ``oracle`` (:meth:`run`) E is not trained and the projected samples are the oracle's images
        in the pseudo samples' random views and lights. Joint mode: every image's canonical prediction is
        recorded first (GAN2Shape's ``step1_collect``), each training iteration takes the next image, and the
        collected batches are shared out over the images (each keeps its own projected samples)."""
        c = self.cfg
        for k in self._indices():
            self._select(k)
            self._prepare_canonical()
        hist = []
        if self.oracle is None:
            opt = self._adam("offset")
            for _ in self._bar(steps, f"{key} (offset encoder)"):
                self._advance()
                pseudo, mask = self.sample_pseudo(c.batch_size)
                l_img, reg, latent, img = self.step2_loss(pseudo, mask, parts=True)
                opt.zero_grad(set_to_none=True)
                self._step2_backward(l_img, reg, latent, img)
                self._stepped(opt)
                hist.append(l_img.item() + reg.item())
        self.losses[key] = hist
        ks = self._indices()
        share = [c.collect_iters // len(ks) + (i < c.collect_iters % len(ks)) for i in range(len(ks))]
        bar = iter(self._bar(c.collect_iters, f"{key} collect" + (" (oracle)" if self.oracle else "")))
        for k, n in zip(ks, share):
            self._select(k)
            self._collect(n, bar)
        next(bar, None)  # (closes the bar)
        return hist

    @torch.no_grad()
    def _collect(self, n: int, bar) -> None:
        """``n`` batches of projected samples of the current image (the oracle's images with an oracle), with
        the raw views (rotations, xy translation) their pseudo samples were rendered in."""
        c = self.cfg
        projs, masks, raws, keep = [], [], [], None
        for _ in range(n):
            next(bar, None)
            views, lights = self._random_views_lights(self.cfg.batch_size)
            pseudo, mask = self._render_pseudo(views, lights)
            if self.oracle is None:
                proj = self.refine(pseudo, mask) if self.cfg.refine_steps else self.project(pseudo)[0]
            else:
                proj, mask = self.oracle(views, lights)
                proj, mask = proj.to(self.device), mask.to(self.device).reshape(proj.shape[0], 1, self.S, self.S)
            projs.append(proj)
            masks.append(mask)
            raws.append(view_to_raw(views[:, :5], c.xyz_rotation_range, c.xy_translation_range))
            if keep is None:
                keep = (pseudo[:8].cpu(), proj[:8].cpu())
        self.proj, self.proj_mask, self.proj_view = torch.cat(projs), torch.cat(masks), torch.cat(raws)
        self.pseudo_keep = keep
        self._proj_idx = 0

    def refine(self, pseudo: Tensor, mask: Tensor) -> Tensor:
        """Projected samples of pseudo samples (B, 3, S, S) refined per sample (``refine_steps``; not in
        GAN2Shape): each latent starts at E's w + dw and takes Adam steps (learning rate ``refine_lr``,
        cosine-decayed to 0) on step 2's image loss (masked L1 + discriminator features) of its own sample."""
        c = self.cfg
        with torch.no_grad():
            start = self.project(pseudo, parts=True)[2]
        latent = start.detach().clone().requires_grad_(True)
        target = pseudo * 2 - 1

        def loss_fn(latent):
            with self.timer("stylegan2_forward"):
                img = resize(self.G(latent, input_is_latent=True, randomize_noise=False).clamp(-1, 1), self.S)
            with self.timer("discriminator_forward"):
                # (each latent reaches only its own sample's terms; Adam's steps do not depend on the scale)
                return masked_l1(img, target, mask) + self.dfeat(img, target, mask)

        with torch.enable_grad():
            cosine_adam(latent, c.refine_steps, c.refine_lr, loss_fn, backward_timer=lambda: self.timer("refine_backward"),
                        record=False)
        with torch.no_grad(), self.timer("stylegan2_forward"):
            img = self.G(latent, input_is_latent=True, randomize_noise=False)
            return resize((img.clamp(-1, 1) + 1) / 2, self.S)

    # -- step 3 -------------------------------------------------------------------------------------------
    def _proj_batch(self) -> tuple[Tensor, Tensor, Tensor]:
        """The next batch of projected samples, their masks and their pseudo samples' raw views (GAN2Shape's
        ``load_proj_images``: in order, reshuffled after each pass)."""
        b, n = self.cfg.batch_size, self.proj.shape[0]
        b = min(b, n)
        if self._proj_idx + b > n:
            perm = torch.randperm(n, generator=self.gen).to(self.proj.device)
            self.proj, self.proj_mask, self.proj_view = self.proj[perm], self.proj_mask[perm], self.proj_view[perm]
            self._proj_idx = 0
        sl = slice(self._proj_idx, self._proj_idx + b)
        self._proj_idx += b
        return self.proj[sl], self.proj_mask[sl], self.proj_view[sl]

    def step3_loss(self, flip: bool) -> Tensor:
        loss, p = self.forward_step1(flip, train=("depth", "albedo", "view", "light"))
        proj, pmask, pview = self._proj_batch()
        b = proj.shape[0]
        with self.timer("networks_forward"):
            raw_view = self.nets["view"](proj * 2 - 1)
            view = self._view(raw_view)
            light = self._light(self.nets["light"](proj * 2 - 1))
        if self.cfg.view_supervision:
            loss = loss + self.cfg.view_supervision * (raw_view[:, :5] + self.view_mean[:5] - pview).pow(2).mean()
        depth, albedo = p["depth2"], p["albedo2"]
        if flip:
            depth = torch.cat([depth[:1].expand(b, -1, -1), depth[1:].expand(b, -1, -1)])
            albedo = torch.cat([albedo[:1].expand(b, -1, -1, -1), albedo[1:].expand(b, -1, -1, -1)])
            view, light = view.repeat(2, 1), light.repeat(2, 1)
        with self.timer("renderer_forward"):
            rec = reconstruct(depth, albedo, view, light, clamp=True)
        m = rec.mask
        if flip:
            m = (m[:b] * m[b:]).repeat(2, 1, 1)
        m = m[:, None] * (pmask.repeat(2, 1, 1, 1) if flip else pmask)
        loss = loss + self._photo_loss(rec.image[:b], proj, m[:b])
        if flip:
            loss = loss + self._photo_loss(rec.image[b:], proj, m[b:])
        return loss

    def step3(self, steps: int, flip: bool = False, key: str = "step3") -> list:
        """Step 3: trains D, A, V and L on the image and the projected samples."""
        if self.proj is None:
            raise RuntimeError("step3 needs projected samples: run step2 first")
        return self._optimize(("depth", "albedo", "view", "light"), steps, key, "backward_step3",
                              lambda: self.step3_loss(flip))

    # -- the whole run ------------------------------------------------------------------------------------
    @torch.no_grad()
    def result(self) -> GAN2ShapeResult:
        """The current reconstruction of the image (no flip)."""
        p = self.predict()
        with self.timer("renderer_forward"):
            rec = reconstruct(p["depth"], p["albedo"], p["view"], p["light"], clamp=True)
        if self.cfg.use_mask or self.canon_mask is None:
            grid = get_warped_2d_grid(p["depth"], p["view"])
            cm = F.grid_sample(self.mask, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        else:
            cm = self.canon_mask
        pseudo, proj = self.pseudo_keep if self.pseudo_keep is not None else (torch.zeros(0, 3, self.S, self.S),) * 2
        return GAN2ShapeResult(
            image=self.image[0].cpu(), gan_image=self.gan_image[0].cpu(), w=self.w[0].cpu(),
            object_mask=self.mask[0, 0].cpu(), prior=self.prior[0].cpu(), canon_depth=p["depth"][0].cpu(),
            canon_albedo=p["albedo"][0].cpu(), canon_normal=rec.canon_normal[0].cpu(),
            canon_image=rec.canon_image[0].clamp(0, 1).cpu(), canon_mask=cm[0, 0].cpu(), view=p["view"][0].cpu(),
            light=p["light"][0].cpu(), view_depth=rec.depth[0].cpu(), view_mask=rec.mask[0].cpu(),
            recon=rec.image[0].cpu(), pseudo=pseudo, projected=proj, losses=dict(self.losses),
            times={}, nets=self.nets)

    def run(self, image: Tensor, w: Tensor, gan_image: Tensor | None = None, mask: Tensor | None = None,
            seed: int = 0, oracle=None, init: dict | None = None) -> GAN2ShapeResult:
        """The whole per-image algorithm (step 0, then ``num_stages`` x steps 1, 2, 3); see :meth:`setup` for
        the inputs. The result's ``times`` has the per-part totals (``Timer``) and the per-step wall times.

        ``oracle``: a DIAGNOSTIC, not GAN2Shape: ``oracle(views (n, 6), lights (n, 4)) -> (images (n, 3, S, S)
        in [0, 1], masks (n, S, S))`` replaces the projected samples G(w + dw) by these images (e.g. exact
        renderings of the true object: what a perfect GAN would give), and step 2 trains no encoder. It
        separates what the pipeline can do from what the GAN gives it.

        ``init``: pretrained networks (:meth:`pretrain`'s result): the run starts from them and skips step 0
        (the ellipsoid prior), as GAN2Shape's per-image runs with ``pretrain`` and ``reset_weight`` do."""
        self.oracle = oracle
        self.average = None  # (only a pretraining keeps one)
        self.timer = Timer(self.device)
        wall = {}
        t_all = time.perf_counter()
        with self._frozen():
            self.setup(image, w, gan_image, mask, seed, init)
            if init is None:
                t = time.perf_counter()
                self.fit_prior()
                wall["step0"] = time.perf_counter() - t
            for stage in range(self.cfg.num_stages):
                self._stage(stage, wall)
            res = self.result()
        wall["total"] = time.perf_counter() - t_all
        res.times = self._times(wall)
        return res

    def _stage(self, stage: int, wall: dict) -> None:
        """Steps 1, 2 and 3 of ``stage`` (0-based); their wall times go into ``wall``."""
        s1, s2, s3 = self.cfg.steps(stage)
        pre = f"stage{stage + 1}/"
        for name, fn in (("step1", lambda: self.step1(s1, self.cfg.flip("flip1", stage), key=pre + "step1")),
                         ("step2", lambda: self.step2(s2, key=pre + "step2")),
                         ("step3", lambda: self.step3(s3, self.cfg.flip("flip3", stage), key=pre + "step3"))):
            t = time.perf_counter()
            fn()
            wall[pre + name] = time.perf_counter() - t

    def pretrain(self, images: Tensor, latents: Tensor, gan_images: Tensor | None = None, seed: int = 0,
                 oracles: list | None = None, resume: dict | None = None, on_stage=None,
                 average: float | None = None) -> dict:
        """GAN2Shape's JOINT PRETRAINING (``joint_train``; ``configs/*_pretrain.yml``): one set of D, A, V, L, E
        networks trained on a list of images (n, 3, H, W) in [0, 1] with their latents (n, style_dim), with
        the schedule of ``self.cfg`` (:meth:`GAN2ShapeConfig.for_pretraining`):

        - step 0 fits D to the ellipsoid prior of the FIRST image only;
        - every iteration of steps 1, 2 and 3 takes the next image of a random order reshuffled after each
          pass (``next_image``); before step 2 every image's canonical depth, albedo and light are recorded
          (``step1_collect``) and each image's pseudo samples come from its own record; the ``collect_iters``
          collected batches are shared out over the images (each needs at least one: collect_iters >= n), and
          step 3 takes the current image's projected samples.

        (The published step 2 drew every image's pseudo samples with the ambient / diffuse light of the last
        image of ``step1_collect``, an oversight; here each image uses its own.) ``oracles[k]``: the
        diagnostic oracle of image k (:meth:`run`; then E is not trained). ``resume``: a checkpoint given to
        ``on_stage`` by an interrupted call with the same inputs: the finished stages are skipped.
        ``on_stage(checkpoint)`` is called after step 0 and after every stage with a dict of everything needed
        to resume (for an atomic save).

        ``average``: also keep an exponential moving average of the weights over every optimiser step with this
        decay (:class:`WeightAverage`; not in GAN2Shape); the result's ``nets_avg`` has it, and the training
        (``nets``) is the same as without it.

        Returns ``{"nets": state dict, "config": ..., "style_dim": ..., "losses": ..., "times": ...}``, the
        ``init`` of :meth:`run` (per-image runs then start from these weights and skip step 0)."""
        n = len(images)
        if n < 1:
            raise ValueError("pretrain: expected at least one image")
        if len(latents) != n or (gan_images is not None and len(gan_images) != n):
            raise ValueError(f"pretrain: {n} images but {len(latents)} latents"
                             + ("" if gan_images is None else f" and {len(gan_images)} GAN images"))
        if oracles is not None and len(oracles) != n:
            raise ValueError(f"pretrain: {n} images but {len(oracles)} oracles")
        self.cfg.check_joint_images(n)
        self.average = None
        self.timer = Timer(self.device)
        self.desc = f"[pretraining, {n} images, {self.cfg.num_stages} stages] "
        wall: dict = {}
        # the wall clock of an interrupted call counts too: its total is in the checkpoint
        t_all = time.perf_counter() - (float(resume["wall"].get("total", 0.0)) if resume else 0.0)
        with self._frozen():
            states = [self._image_state(images[k], latents[k], None if gan_images is None else gan_images[k],
                                        oracle=None if oracles is None else oracles[k]) for k in range(n)]
            self._build_nets(seed)
            self._reset_run_state(seed)
            self._states, self._order, self._pos = states, list(range(n)), -1
            self._select(0)
            first_stage = 0
            if resume is not None and (average is None) == ("nets_avg" in resume):
                has = "keeps a weight average" if "nets_avg" in resume else "keeps no weight average"
                raise ValueError(f"resume: the checkpoint {has}; pass the interrupted call's average")
            if resume is not None:
                self.nets.load_state_dict(resume["nets"])
                self.gen.set_state(resume["gen"])
                self._order, self._pos = list(resume["order"]), int(resume["pos"])
                self.losses = dict(resume["losses"])
                wall.update(resume["wall"])
                first_stage = int(resume["stages_done"])
            if average is not None:
                self.average = WeightAverage(self.nets, average, None if resume is None else resume["nets_avg"])
            if resume is None:
                t = time.perf_counter()
                self.fit_prior()
                wall["step0"] = time.perf_counter() - t
                if on_stage is not None:
                    on_stage(self._pretrain_checkpoint(0, wall, t_all))
            for stage in range(first_stage, self.cfg.num_stages):
                self._stage(stage, wall)
                if on_stage is not None:
                    on_stage(self._pretrain_checkpoint(stage + 1, wall, t_all))
            self._select(0)
            self._states = None
        wall["total"] = time.perf_counter() - t_all
        res = {"nets": self._nets_copy(), "config": self.cfg.to_dict(), "style_dim": int(self.G.style_dim),
               "images": n, "losses": dict(self.losses), "times": self._times(wall)}
        if self.average is not None:
            res["nets_avg"] = self.average.copy()
            self.average = None
        return res

    def _nets_copy(self) -> dict:
        """A CPU copy of the networks' state."""
        return cpu_state_copy(self.nets.state_dict())

    def _pretrain_checkpoint(self, stages_done: int, wall: dict, t_all: float) -> dict:
        ck = {"stages_done": stages_done, "nets": self._nets_copy(),
              "gen": self.gen.get_state(), "order": list(self._order), "pos": self._pos,
              "losses": dict(self.losses), "wall": dict(wall, total=time.perf_counter() - t_all)}
        if self.average is not None:
            ck["nets_avg"] = self.average.copy()
        return ck
