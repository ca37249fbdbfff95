"""The built-in procedural face dataset (no download, generated on the fly): ``SyntheticFaces``.

Every item is a random face-like height field with a procedural albedo, lit and seen from a random view
through the Unsup3d / GAN2Shape forward model (``voxrender.models.gan2shape.renderer.reconstruct``: the
canonical depth map becomes a grid mesh, is z-buffered in the view with :func:`voxrender.render_depth`, and
the shaded canonical image is sampled through the inverse warp). So ground-truth depth, albedo, view and
light are exactly those of the model GAN2Shape inverts.

Canonical face (the S x S canonical frame, x to the right, y down; normalised coordinates
x = (j - c) / c, y = (i - c) / c with c = (S - 1) / 2):

- depth: camera z of a height field in [0.9, 1.1] (Unsup3d's range); a flat background plane at
  ``CANON_BACKGROUND_DEPTH`` = 1.04 (Unsup3d's border depth) with the head on it: an elliptic cap
  (random semi-axes, random height 0.06..0.08, random flatness) rising towards the camera, plus a nose
  ridge and tip, brow ridge, eye sockets with eyeballs, cheeks, lips and chin, all with random sizes and
  positions. Exactly symmetric about the vertical axis (every term depends on x through |x| or x^2).
- albedo (3, S, S) in [0, 1]: a skin tone (light to dark), darker brows, eyes (sclera and iris), reddish
  lips and cheeks, a hair region at the top, and a symmetric low-frequency variation; also symmetric.
  The albedo is defined everywhere (the hair and skin continue outside the head) so that the bilinear
  sampling near the silhouette does not pull in a foreign colour.
- canonical object mask: the head's ellipse (r < 0.96 of the cap, whose rim is a steep wall that counts as
  background), evaluated analytically at the canonical position of every pixel (in the view too: through
  the inverse warp) and antialiased over one pixel (:func:`head_mask`).

View and light (independent uniform distributions, :data:`VIEW_RANGES`, :data:`LIGHT_RANGES`,
:func:`view_light_statistics`, :func:`sample_views_lights`):

- ``view`` (6,) = (rx, ry, rz, tx, ty, tz) in RADIANS and camera units, the renderer's convention:
  R = R_z(rz) R_y(ry) R_x(rx) about the point (0, 0, 1), then the shift t (x right, y down). Pitch
  rx in +-15 deg (rx > 0 brings the top of the head towards the camera), yaw ry in +-30 deg (ry > 0 brings the
  image-right side of the face towards the camera, i.e. the face turns towards image-left), roll rz in
  +-5 deg, tx, ty in +-0.008 (about +-2.9 px at 64 px, +-5.8 px at 128 px), tz = 0.
- ``light`` (4,) = (ambient, diffuse, lx, ly): ambient in [0.4, 0.65], diffuse in [0.35, 0.7], lx in
  [-0.9, 0.9], ly in [-0.2, 0.8]; direction d = normalize(lx, ly, 1) with Unsup3d's signs (lx > 0 lights the
  face from the image-left, ly > 0 from above), applied in the canonical frame (the light turns with the face).

Item (a dict of tensors): ``image`` (3, S, S) float32 in [0, 1]: albedo * (ambient + diffuse * max(0, n . d))
seen in the view, composited over a constant ``background`` colour (default black, 0) with the
antialiased object mask; ``mask`` (S, S) float32 in {0, 1}: the object (head) mask in the view (the
antialiased head mask seen through the inverse warp, > 0.5); ``depth`` (S, S) float32: camera z of the surface in the view where ``mask`` is 1,
``BACKGROUND_DEPTH`` = 10 (the depth renderer's far plane, Unsup3d's convention) elsewhere;
``canon_depth`` (S, S), ``canon_albedo`` (3, S, S), ``canon_mask`` (S, S) (float, antialiased), ``head``
(3,) (the head ellipse (hx, hy, y0) in normalised canonical coordinates); ``view`` (6,), ``light`` (4,)
float32; ``index`` (int64). Inside the mask,
``reconstruct(canon_depth, canon_albedo, view, light).image`` (clamped to [0, 1]) IS the image.

Each item is a pure function of ``(seed, split, index)`` (numpy PCG64 seeded by a splitmix64 mix of the
triple; the splits draw from disjoint streams), generated on the fly, identical in every process.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from .voxel_shapes import SPLITS, item_seed

DEG = math.pi / 180
CANON_BACKGROUND_DEPTH = 1.04  # depth of the canonical background plane (Unsup3d's border depth)
BACKGROUND_DEPTH = 10.0  # ground-truth view depth where no face is seen (the renderer's far plane)

# Independent uniform ranges of the sampler (low, high), in the units of the item's ``view`` / ``light``.
VIEW_RANGES = (
    ("rx", -15 * DEG, 15 * DEG),  # pitch
    ("ry", -30 * DEG, 30 * DEG),  # yaw
    ("rz", -5 * DEG, 5 * DEG),  # roll
    ("tx", -0.008, 0.008),
    ("ty", -0.008, 0.008),
    ("tz", 0.0, 0.0),
)
LIGHT_RANGES = (
    ("ambient", 0.4, 0.65),
    ("diffuse", 0.35, 0.7),
    ("lx", -0.9, 0.9),
    ("ly", -0.2, 0.8),
)

_SKIN_LIGHT = np.array([0.93, 0.78, 0.67])
_SKIN_DARK = np.array([0.42, 0.28, 0.20])
_HAIR = np.array([[0.15, 0.12, 0.11], [0.32, 0.2, 0.12], [0.55, 0.38, 0.2], [0.8, 0.66, 0.4], [0.55, 0.25, 0.12]])
_IRIS = np.array([[0.3, 0.18, 0.1], [0.22, 0.35, 0.55], [0.25, 0.38, 0.25], [0.15, 0.12, 0.1]])


def view_light_statistics(raw: bool = False) -> dict:
    """The sampler's view and light distributions, for GAN2Shape's pseudo-sample view / light sampling.

    Returns a dict of float32 tensors: ``view_low``, ``view_high`` (6,), ``view_mean`` (6,), ``view_cov``
    (6, 6) (diagonal: independent uniforms, variance (high - low)^2 / 12), and the same for ``light`` (4,).
    With ``raw=True`` everything is expressed in the networks' raw units (GAN2Shape's ``view_mvn`` /
    ``light_mvn``): view rotations / (60 deg), translations / 0.1; light (2 a - 1, 2 b - 1, lx, ly).
    """
    vlo = torch.tensor([r[1] for r in VIEW_RANGES], dtype=torch.float64)
    vhi = torch.tensor([r[2] for r in VIEW_RANGES], dtype=torch.float64)
    llo = torch.tensor([r[1] for r in LIGHT_RANGES], dtype=torch.float64)
    lhi = torch.tensor([r[2] for r in LIGHT_RANGES], dtype=torch.float64)
    if raw:
        vscale = torch.tensor([60 * DEG] * 3 + [0.1] * 3, dtype=torch.float64)
        vlo, vhi = vlo / vscale, vhi / vscale
        llo = torch.cat([2 * llo[:2] - 1, llo[2:]])
        lhi = torch.cat([2 * lhi[:2] - 1, lhi[2:]])
    # (tz is always 0: its variance is 0, so add a little jitter before building a MultivariateNormal)
    out = {}
    for name, lo, hi in (("view", vlo, vhi), ("light", llo, lhi)):
        out[f"{name}_low"], out[f"{name}_high"] = lo.float(), hi.float()
        out[f"{name}_mean"] = ((lo + hi) / 2).float()
        out[f"{name}_cov"] = torch.diag((hi - lo) ** 2 / 12).float()
    return out


def sample_views_lights(n: int, generator: torch.Generator | None = None, dtype=torch.float32, device=None):
    """Draws ``n`` views (n, 6) and lights (n, 4) from the dataset's own distributions (uniform in
    :data:`VIEW_RANGES` / :data:`LIGHT_RANGES`), in the item's units (radians, camera units; ambient,
    diffuse, lx, ly): GAN2Shape's pseudo-sample viewpoints "from the known sampler of the synthetic data"."""
    out = []
    for ranges in (VIEW_RANGES, LIGHT_RANGES):
        lo = torch.tensor([r[1] for r in ranges], dtype=dtype, device=device)
        hi = torch.tensor([r[2] for r in ranges], dtype=dtype, device=device)
        u = torch.rand(n, len(ranges), generator=generator, dtype=dtype, device=device)
        out.append(lo + (hi - lo) * u)
    return out[0], out[1]


def _smoothstep(e0, e1, x):
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _gauss(d2):
    return np.exp(-0.5 * d2)


MASK_RADIUS = 0.96  # the object is the part r < 0.96 of the head's elliptic cap


def head_mask(xy: Tensor, head: Tensor) -> Tensor:
    """The antialiased object mask of heads ``head`` (B, 3) = (hx, hy, y0) (the cap's semi-axes and centre
    height in normalised canonical coordinates) evaluated at canonical positions ``xy`` (B, H, W, 2) laid out
    on a pixel grid (normalised coordinates x, y as ``grid_sample`` with align_corners=True reads them, e.g. a
    view's inverse-warp grid). The ellipse r = MASK_RADIUS is antialiased over one pixel of ``xy``'s grid:
    mask = clamp(0.5 + (MASK_RADIUS - r) / |grad r|, 0, 1), with grad r from finite differences across
    neighbouring pixels, so that edges stay sharp where the surface is stretched in the view."""
    X = xy[..., 0].abs() / head[:, 0, None, None]
    Y = (xy[..., 1] - head[:, 2, None, None]) / head[:, 1, None, None]
    r = torch.sqrt(X ** 2 + Y ** 2)

    def grad(t, dim):
        n = t.shape[dim]
        if n < 2:
            return torch.zeros_like(t)
        fwd = t.narrow(dim, 1, n - 1) - t.narrow(dim, 0, n - 1)
        first, last = fwd.narrow(dim, 0, 1), fwd.narrow(dim, n - 2, 1)
        mid = (fwd.narrow(dim, 1, n - 2) + fwd.narrow(dim, 0, n - 2)) / 2 if n > 2 else fwd.narrow(dim, 0, 0)
        return torch.cat([first, mid, last], dim)

    g = torch.sqrt(grad(r, 1) ** 2 + grad(r, 2) ** 2).clamp(min=1e-6)
    return (0.5 + (MASK_RADIUS - r) / g).clamp(0, 1)


def random_face(size: int, seed: int) -> dict:
    """One random canonical face on an S x S grid from an integer seed: numpy float64 ``canon_depth`` (S, S),
    ``canon_albedo`` (3, S, S), ``canon_mask`` (S, S) in [0, 1], ``head`` (3,) = (hx, hy, y0) (the head
    ellipse, see :func:`head_mask`), ``view`` (6,), ``light`` (4,)."""
    g = np.random.Generator(np.random.PCG64(seed))

    def U(lo, hi):
        return lo + (hi - lo) * float(g.random())

    S = int(size)
    c = (S - 1) / 2
    ax_ = (np.arange(S, dtype=np.float64) - c) / c
    y, x = np.meshgrid(ax_, ax_, indexing="ij")
    ax2 = np.abs(x)  # symmetric: everything below depends on x only through |x| or x^2

    # --- head -------------------------------------------------------------------------------------------
    hx, hy, y0 = U(0.54, 0.64), U(0.66, 0.78), U(-0.04, 0.04)
    X, Y = ax2 / hx, (y - y0) / hy  # head-relative coordinates (X >= 0)
    r2 = X ** 2 + Y ** 2
    r = np.sqrt(r2)
    p = U(2.0, 3.2)  # flatness of the front of the face
    height = U(0.06, 0.08)
    cap = height * np.clip(1 - r ** p, 0, None) ** 0.6
    inside = _smoothstep(1.0, 0.85, r)  # features fade out towards the silhouette

    ex, ey = U(0.32, 0.42), U(-0.2, -0.08)  # eyes
    nt = U(0.16, 0.28)  # nose tip height (Y)
    ym = U(0.46, 0.56)  # mouth
    feat = np.zeros_like(x)
    # eye sockets and eyeballs
    esx, esy = U(0.13, 0.17), U(0.08, 0.11)
    feat -= U(0.008, 0.013) * _gauss(((X - ex) / esx) ** 2 + ((Y - ey) / esy) ** 2)
    feat += U(0.002, 0.004) * _gauss(((X - ex) / 0.08) ** 2 + ((Y - ey) / 0.05) ** 2)
    # brow ridge
    by = ey - U(0.14, 0.19)
    feat += U(0.004, 0.008) * _gauss(((Y - by) / 0.06) ** 2) * _gauss((X / 0.55) ** 4)
    # nose: ridge from the brow to the tip, tip blob, nostril wings
    nose_h = U(0.01, 0.018)
    nsig = U(0.07, 0.11)
    along = _smoothstep(ey - 0.05, nt, Y) ** 1.3 * (Y <= nt) + _gauss(((Y - nt) / 0.06) ** 2) * (Y > nt)
    feat += nose_h * along * _gauss((X / (nsig * (0.7 + 0.6 * np.clip(Y - ey, 0, 1)))) ** 2)
    feat += U(0.004, 0.007) * _gauss((X / 0.09) ** 2 + ((Y - nt) / 0.06) ** 2)
    feat += U(0.003, 0.006) * _gauss(((X - U(0.11, 0.15)) / 0.06) ** 2 + ((Y - nt - 0.02) / 0.05) ** 2)
    # cheeks
    feat += U(0.002, 0.006) * _gauss(((X - 0.45) / 0.17) ** 2 + ((Y - U(0.1, 0.25)) / 0.17) ** 2)
    # lips and mouth line, chin
    mw = U(0.2, 0.3)
    feat += U(0.004, 0.008) * _gauss((X / mw) ** 4 + ((Y - ym) / 0.07) ** 2)
    feat -= 0.003 * _gauss((X / mw) ** 4 + ((Y - ym) / 0.018) ** 2)
    feat += U(0.003, 0.007) * _gauss((X / 0.2) ** 2 + ((Y - U(0.76, 0.84)) / 0.08) ** 2)
    depth = CANON_BACKGROUND_DEPTH - cap - feat * inside
    depth = np.clip(depth, 0.9, 1.1)

    # Object mask: the ellipse r < 0.96, antialiased over one pixel. The cap's last 4 % in r is a steep
    # wall down to the background plane; it belongs to the background, so that seen from the side the
    # silhouette is the top of the wall, not a smear of the wall stretched over pixels.
    head = np.array([hx, hy, y0])
    mask = head_mask(torch.from_numpy(np.stack([x, y], -1))[None], torch.from_numpy(head)[None])[0].numpy()

    # --- albedo -----------------------------------------------------------------------------------------
    tone = U(0, 1)
    skin = (1 - tone) * _SKIN_LIGHT + tone * _SKIN_DARK + np.array([U(-0.03, 0.03) for _ in range(3)])
    # symmetric low-frequency variation (cosines are even in x)
    var = np.zeros_like(x)
    for _ in range(4):
        kx, ky, ph = U(0.5, 2.5), U(0.5, 2.5), U(0, 2 * math.pi)
        var += U(0.01, 0.035) * np.cos(kx * math.pi * x) * np.cos(ky * math.pi * y + ph)
    alb = skin[:, None, None] * (1 + var)[None]
    # cheeks' redness
    blush = U(0.0, 0.25) * _gauss(((X - 0.45) / 0.15) ** 2 + ((Y - 0.22) / 0.12) ** 2)
    alb = alb * (1 - blush) + blush * np.array([0.85, 0.4, 0.4])[:, None, None] * skin.mean() / 0.6

    def paint(a, col, w):
        return a * (1 - w)[None] + np.asarray(col)[:, None, None] * w[None]

    hair = _HAIR[int(g.integers(len(_HAIR)))] * U(0.85, 1.15)
    hair = np.clip(hair, 0.12, 1)
    lips = np.clip(skin * np.array([0.95, 0.55, 0.55]) * U(0.8, 1.0), 0.12, 1)
    iris = np.clip(_IRIS[int(g.integers(len(_IRIS)))] * U(0.8, 1.2), 0.12, 1)
    edge = 0.9 / (hy * c)  # about one pixel in Y units: antialiased painting
    # lips
    lip_w = _smoothstep(1 + edge * 4, 1 - edge * 4, (X / (mw * 0.95)) ** 2 + ((Y - ym) / 0.065) ** 2)
    alb = paint(alb, lips, lip_w * 0.9)
    alb = paint(alb, lips * 0.5, 0.6 * _gauss((X / (mw * 0.8)) ** 4 + ((Y - ym) / 0.016) ** 2))
    # eyes: sclera, iris
    sclera = _smoothstep(1 + edge * 6, 1 - edge * 6, ((X - ex) / 0.14) ** 2 + ((Y - ey) / 0.055) ** 2)
    alb = paint(alb, [0.88, 0.88, 0.86], sclera)
    iris_w = _smoothstep(0.055 + edge, 0.055 - edge, np.sqrt((X - ex) ** 2 + (Y - ey - 0.005) ** 2)) * sclera
    alb = paint(alb, iris, iris_w)
    # brows (arched)
    brow_y = ey - U(0.11, 0.15) - 1.5 * (0.16 ** 2 - (X - ex) ** 2)
    brow = _smoothstep(0.035 + edge, 0.035 - edge, np.abs(Y - brow_y)) * _smoothstep(0.2, 0.16, np.abs(X - ex))
    alb = paint(alb, hair * 0.8, brow * 0.9)
    # hair at the top of the head (and beyond the head: the albedo is defined everywhere)
    hairline = -U(0.5, 0.62) + U(0.2, 0.45) * X ** 2 + U(0.0, 0.03) * np.cos(U(5, 9) * math.pi * X)
    hair_w = _smoothstep(hairline + edge * 2, hairline - edge * 2, Y)
    side = _smoothstep(0.92, 1.02, X) * _smoothstep(0.3, -0.1, Y)  # hair over the temples
    alb = paint(alb, hair, np.maximum(hair_w, side))
    alb = np.clip(alb, 0.0, 1.0)

    view = np.array([U(lo, hi) for _, lo, hi in VIEW_RANGES])
    light = np.array([U(lo, hi) for _, lo, hi in LIGHT_RANGES])
    return {"canon_depth": depth, "canon_albedo": alb, "canon_mask": mask, "head": head, "view": view,
            "light": light}


def render_faces(canon_depth: Tensor, canon_albedo: Tensor, head: Tensor, view: Tensor, light: Tensor,
                 background=0.0, backend: str | None = None) -> dict:
    """Renders canonical faces (depth (B, S, S), albedo (B, 3, S, S), head ellipses (B, 3)) under view (B, 6)
    and light (B, 4) with the GAN2Shape forward model; returns ``image`` (B, 3, S, S) in [0, 1] over
    ``background``, ``mask`` (B, S, S) in {0, 1}, ``depth`` (B, S, S) (``BACKGROUND_DEPTH`` outside the mask)."""
    from ..models.gan2shape.renderer import reconstruct

    rec = reconstruct(canon_depth, canon_albedo, view, light, clamp=True, backend=backend)
    soft = head_mask(rec.grid, head) * rec.mask
    bg = torch.as_tensor(background, dtype=canon_albedo.dtype, device=canon_albedo.device).reshape(-1, 1, 1)
    image = rec.image * soft[:, None] + bg * (1 - soft[:, None])
    mask = (soft > 0.5).to(canon_depth.dtype)
    depth = torch.where(mask > 0, rec.depth, torch.full_like(rec.depth, BACKGROUND_DEPTH))
    return {"image": image.clamp(0, 1), "mask": mask, "depth": depth}


class SyntheticFaces(torch.utils.data.Dataset):
    """The procedural face dataset (see the module docstring for the model and conventions).

    Args:
        n: number of items (generated on the fly).
        size: image size S (64 default; 128 works; any S >= 16).
        seed: dataset seed.
        split: ``"train"``, ``"test"`` or ``"val"``: disjoint random streams.
        background: image background colour, a number or an RGB triple in [0, 1] (default 0, black).
        backend: rasterization backend (None: automatic).

    ``ds[i]`` is a dict (image, depth, mask, canon_depth, canon_albedo, canon_mask, head, view, light, index);
    :meth:`get_batch` renders a batch at once (what the training loop uses).
    """

    def __init__(self, n: int = 10000, size: int = 64, seed: int = 0, split: str = "train", *, background=0.0,
                 backend: str | None = None):
        if split not in SPLITS:
            raise ValueError(f"split: expected one of {', '.join(SPLITS)}, got {split!r}")
        if int(size) < 16:
            raise ValueError(f"size: expected an image size >= 16, got {size}")
        if int(n) < 0:
            raise ValueError(f"n: expected a number of items >= 0, got {n}")
        bg = torch.as_tensor(background, dtype=torch.float32)
        if bg.shape not in ((), (1,), (3,)):
            raise ValueError(f"background: expected a number or an RGB triple, got shape {tuple(bg.shape)}")
        self.n, self.size, self.seed, self.split = int(n), int(size), int(seed), split
        self.background = bg
        self.backend = backend
        self.channels = 3
        self.image_size = self.size

    def __len__(self) -> int:
        return self.n

    def _index(self, index: int) -> int:
        index = int(index)
        if not -self.n <= index < self.n:
            raise IndexError(f"index {index} out of range for {self.n} items")
        return index % self.n

    def canonical(self, index: int) -> dict:
        """The raw canonical face of item ``index`` (numpy float64, see :func:`random_face`), unrendered."""
        return random_face(self.size, item_seed(self.seed, self.split, self._index(index)))

    def get_batch(self, indices) -> dict:
        """A batch of items with one batched render: every item key with a leading batch dimension."""
        indices = [self._index(i) for i in indices]
        faces = [self.canonical(i) for i in indices]
        cat = {k: torch.from_numpy(np.stack([f[k] for f in faces])).float() for k in faces[0]} if faces else None
        if cat is None:
            raise ValueError("indices: expected at least one index")
        with torch.no_grad():
            out = render_faces(cat["canon_depth"], cat["canon_albedo"], cat["head"], cat["view"],
                               cat["light"], self.background, self.backend)
        out.update(cat)
        out["index"] = torch.tensor(indices, dtype=torch.int64)
        return out

    def __getitem__(self, index: int) -> dict:
        b = self.get_batch([index])
        return {k: v[0] for k, v in b.items()}

    @staticmethod
    def view_light_statistics(raw: bool = False) -> dict:
        """See :func:`view_light_statistics`."""
        return view_light_statistics(raw)

    def mean_depth(self, n: int = 256) -> Tensor:
        """The mean ground-truth VIEW depth over the face pixels of the first ``n`` items (S, S), filled
        with the mean face depth where no item has a face (the "mean depth" baseline)."""
        n = min(n, self.n)
        acc = torch.zeros(self.size, self.size, dtype=torch.float64)
        cnt = torch.zeros_like(acc)
        for start in range(0, n, 64):
            b = self.get_batch(range(start, min(n, start + 64)))
            m = b["mask"].double()
            acc += (b["depth"].double() * m).sum(0)
            cnt += m.sum(0)
        fill = acc.sum() / cnt.sum().clamp(min=1)
        return torch.where(cnt > 0, acc / cnt.clamp(min=1), fill).float()
