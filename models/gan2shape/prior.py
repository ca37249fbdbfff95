"""GAN2Shape's shape prior: an ellipsoid depth map built from an object mask, and the object mask itself.

GAN2Shape (Pan et al., ICLR 2021; ``gan2shape/model.py``, ``init_ellipsoid``) starts every image by fitting
the depth network to a convex "ellipsoid" depth: a spherical cap, stretched into an ellipse over the
bounding box of the object mask, from depth ``near`` (0.91) at its centre to ``far`` (1.02) at its rim, with
``far`` everywhere outside. The mask there comes from a pretrained parsing network (BiSeNet for faces,
PSPNet otherwise); offline we use :func:`object_mask`, a threshold on the distance from the background
colour (documented substitute).

Depth is camera z in the Unsup3d convention (see ``renderer``), pixels (i, j) = (row, column), y down.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

PRIOR_NEAR, PRIOR_FAR, PRIOR_RADIUS = 0.91, 1.02, 0.4
# the bounding-box rules of ellipsoid_depth_prior's ``category`` (None: the mask's box as is)
PRIOR_BOXES = (None, "synface", "face", "car", "church")
# the same rules by their command-line names (--prior-box): "plain" is None
PRIOR_BOX_NAMES = ("plain", *[k for k in PRIOR_BOXES if k])

__all__ = ["PRIOR_BOXES", "PRIOR_BOX_NAMES", "PRIOR_FAR", "PRIOR_NEAR", "PRIOR_RADIUS", "box_category",
           "ellipsoid_depth_prior", "mask_range", "object_mask"]


def box_category(name: str) -> str | None:
    """The ``category`` of ellipsoid_depth_prior for a --prior-box name (:data:`PRIOR_BOX_NAMES`)."""
    if name not in PRIOR_BOX_NAMES:
        raise ValueError(f"prior box: expected one of {', '.join(PRIOR_BOX_NAMES)}, got {name!r}")
    return None if name == "plain" else name


def _as_masks(mask: Tensor) -> Tensor:
    mask = torch.as_tensor(mask)
    if mask.dim() == 2:
        mask = mask[None]
    elif mask.dim() == 4:
        if mask.shape[1] != 1:
            raise ValueError(f"mask: expected (H, W), (B, H, W) or (B, 1, H, W), got {tuple(mask.shape)}")
        mask = mask[:, 0]
    if mask.dim() != 3:
        raise ValueError(f"mask: expected (H, W), (B, H, W) or (B, 1, H, W), got {tuple(mask.shape)}")
    return mask


def mask_range(mask: Tensor) -> tuple[float, float, float, float]:
    """(max_y, min_y, max_x, min_x): the row and column extent of the True pixels of an (H, W) bool mask
    (GAN2Shape's ``get_mask_range``). Raises ValueError on an empty mask."""
    rows = torch.nonzero(mask.any(1)).flatten()
    cols = torch.nonzero(mask.any(0)).flatten()
    if rows.numel() == 0:
        raise ValueError("mask: empty object mask (no pixel above the threshold); cannot build the ellipsoid prior")
    return float(rows.max()), float(rows.min()), float(cols.max()), float(cols.min())


def ellipsoid_depth_prior(mask: Tensor, *, near: float = PRIOR_NEAR, far: float = PRIOR_FAR,
                          radius: float = PRIOR_RADIUS, threshold: float = 0.7, category: str | None = None,
                          legacy_center: bool = False) -> Tensor:
    """GAN2Shape's ellipsoid depth prior from object masks.

    Args:
        mask: (H, W), (B, H, W) or (B, 1, H, W) object masks (bool or float; pixels >= ``threshold`` count).
        near, far: depth at the centre of the cap and at its rim (and everywhere outside it).
        radius: radius of the sphere the cap is cut from, in depth units (0.4: a shallow cap).
        threshold: mask level (GAN2Shape: 0.7 of the parsing mask).
        category: GAN2Shape's per-category bounding-box adjustments: ``"synface"`` extends the box up by a
            sixth of its height; ``"face"`` (CelebA) extends it to the bottom row and narrows it by a twelfth
            of its width on each side; ``"car"`` / ``"church"`` extend it down by a sixth; None: the box as is.
        legacy_center: reproduce GAN2Shape's code exactly, which stretches the rows about the image centre
            h / 2 instead of the box centre (moving the ellipse off the box vertically when the box is not
            centred); by default the ellipse is centred on the box.

    Returns:
        (B, H, W) depth: with (c_y, c_x) the box centre, r_pixel half the box width and ratio = box height /
        box width, a pixel at normalised distance rho = sqrt(((i - c_y) / ratio)^2 + (j - c_x)^2) / r_pixel
        gets, for rho <= 1, depth = radius - sqrt(radius^2 - (rho t)^2) + near with
        t = sqrt(radius^2 - (radius - (far - near))^2) (so depth goes from ``near`` at rho = 0 to exactly
        ``far`` at rho = 1), and ``far`` elsewhere.
    """
    if category not in PRIOR_BOXES:
        raise ValueError(f"category: expected None, 'synface', 'face', 'car' or 'church', got {category!r}")
    masks = _as_masks(mask)
    masks = masks >= threshold if masks.is_floating_point() else masks.bool()
    _, h, w = masks.shape
    if not far > near:
        raise ValueError(f"near, far: expected near < far, got {near}, {far}")
    if radius < far - near:
        raise ValueError(f"radius: expected at least far - near = {far - near}, got {radius}")
    temp = math.sqrt(radius ** 2 - (radius - (far - near)) ** 2)
    ii, jj = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    out = []
    for m in masks:
        max_y, min_y, max_x, min_x = mask_range(m)
        if category == "synface":
            min_y = min_y - (max_y - min_y) / 6
        elif category == "face":
            max_y = h - 1
            width = max_x - min_x
            max_x -= width / 12
            min_x += width / 12
        elif category in ("car", "church"):
            max_y = max_y + (max_y - min_y) / 6
        r_pixel = max((max_x - min_x) / 2, 0.5)
        ratio = max(max_y - min_y, 1.0) / max(max_x - min_x, 1.0)
        c_x, c_y = (max_x + min_x) / 2, (max_y + min_y) / 2
        if legacy_center:
            dy = (ii - h / 2) / ratio + h / 2 - c_y
        else:
            dy = (ii - c_y) / ratio
        dist = torch.sqrt(dy ** 2 + (jj - c_x) ** 2)
        rho_t = dist / r_pixel * temp
        depth = radius - torch.sqrt(torch.abs(radius ** 2 - rho_t ** 2)) + near
        out.append(torch.where(dist <= r_pixel, depth, torch.full_like(depth, far)))
    dtype = mask.dtype if isinstance(mask, Tensor) and mask.is_floating_point() else torch.float32
    device = mask.device if isinstance(mask, Tensor) else None
    return torch.stack(out).to(dtype=dtype, device=device)


def object_mask(image: Tensor, threshold: float = 0.02, background=None, *, clean: int = 1) -> Tensor:
    """A threshold object mask, the offline substitute for GAN2Shape's parsing networks.

    Args:
        image: (B, C, H, W) or (C, H, W) in [0, 1] on a (roughly) constant background.
        threshold: a pixel is object where max over channels |image - background| > threshold.
        background: the background colour: a number or (C,); None estimates it per image as the median
            colour of the one-pixel image border.
        clean: radius in pixels of a morphological opening then closing (removes specks, then fills small
            holes; the image's outside is ignored); 0 disables it.

    Returns:
        (B, H, W) float masks in {0, 1}.
    """
    x = torch.as_tensor(image)
    if x.dim() == 3:
        x = x[None]
    if x.dim() != 4:
        raise ValueError(f"image: expected (B, C, H, W) or (C, H, W), got {tuple(x.shape)}")
    x = x.float()
    if background is None:
        border = torch.cat([x[:, :, 0], x[:, :, -1], x[:, :, :, 0], x[:, :, :, -1]], -1)  # (B, C, 2H + 2W)
        bg = border.median(-1).values[:, :, None, None]
    else:
        bg = torch.as_tensor(background, dtype=x.dtype, device=x.device).reshape(1, -1, 1, 1)
    m = ((x - bg).abs().amax(1) > threshold).float()[:, None]
    if clean > 0:
        k = 2 * int(clean) + 1

        def dilate(t):
            return F.max_pool2d(t, k, stride=1, padding=clean)

        def erode(t):
            return -F.max_pool2d(-t, k, stride=1, padding=clean)

        m = erode(dilate(dilate(erode(m))))  # opening (specks), then closing (holes)
    return m[:, 0]
