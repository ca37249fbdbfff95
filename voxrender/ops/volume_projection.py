"""``voxrender.project_volume``: argument checks, pose, backend choice, background."""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor, nn

from .. import backends
from ..camera import MODE_ID, MODES, PROJECTIONS, SQRT3, make_camera
from ..geometry import rotation_from_angles
from ..reference.volume_projection import project_volume_reference

OP = "project_volume"


def project_volume(
    density: Tensor,
    rotation: Tensor | None = None,
    *,
    azimuth: Tensor | float | None = None,
    elevation: Tensor | float | None = None,
    features: Tensor | None = None,
    image_size: int | tuple[int, int] | None = None,
    n_samples: int | None = None,
    mode: str = "absorption",
    tau: float = 1.0,
    projection: str = "orthographic",
    extent: float = 1.0,
    fov: float | None = None,
    distance: float | None = None,
    background: Tensor | float | None = None,
    backend: str | None = None,
) -> Tensor:
    """Renders a batch of voxel grids into images, differentiably.

    Args:
        density: (B, D, H, W) or (B, 1, D, H, W) float tensor. The volume fills the cube [-1, 1]^3 with
            ``grid_sample``'s index order (w <-> x, h <-> y, d <-> z) and voxel centres at
            -1 + (2i + 1) / N; sampling is trilinear with zeros outside. Values are not scanned: negative
            densities are used as given and NaN propagates to the pixels whose rays touch it.
        rotation: (B, 3, 3) or (3, 3), mapping the volume into the camera frame (a camera-frame point p
            reads the volume at R^T p). None (with no angles) is the identity view.
        azimuth, elevation: (B,) tensors or numbers, radians, an alternative to ``rotation``:
            R = R_x(elevation) @ R_y(azimuth). Gradients flow to them.
        features: (B, C, D, H, W) per-voxel colour, only with ``mode="emission_absorption"`` (required there).
        image_size: int or (Ho, Wo); default (H, W).
        n_samples: samples per ray K; default D.
        mode: ``"absorption"`` (1 - exp(-tau * delta * sum sigma)), ``"sum"`` (tau * delta * sum sigma),
            ``"max"`` (max sigma; gradient to the first arg-max sample) or ``"emission_absorption"``
            (front-to-back compositing, exclusive transmittance; returns colour then opacity).
        tau: density scale.
        projection: ``"orthographic"`` or ``"perspective"``.
        extent: orthographic half-size of the image plane and of the sample range, in volume units.
            Perspective ignores it except to pick the default ``fov``.
        fov: perspective vertical field of view in degrees; default 2 * atan(extent / distance), so the
            plane through the cube's centre spans [-extent, extent] vertically.
        distance: perspective camera distance from the cube's centre (> sqrt(3)); default 4.
        background: emission_absorption only: scalar or (C,) colour behind the volume (default 0);
            differentiable.
        backend: None (automatic), ``"torch"``, ``"cpu"``, ``"cuda"`` or ``"triton"``.

    Returns:
        (B, 1, Ho, Wo) for the scalar modes; (B, C + 1, Ho, Wo) for emission_absorption (C colour
        channels, then the opacity 1 - T_K).

    The camera looks along +z with x right and y down; pixel (i, j) is the ray through
    (extent * (-1 + (2j + 1) / Wo), extent * (-1 + (2i + 1) / Ho)), sampled front to back at
    z_k = extent * (-1 + (2k + 1) / K) with step delta = (2 extent / K) (D / 2) voxel units (orthographic;
    see :mod:`voxrender.camera` for the perspective rays). The fused backends keep only the output and a
    (B, Ho, Wo) per-pixel buffer for the backward pass.
    """
    density = _check_density(density)
    b, d, h, w = density.shape
    dev, dtype = density.device, density.dtype
    if mode not in MODES:
        raise ValueError(f"mode: unknown mode {mode!r}; expected one of {', '.join(MODES)}")
    if projection not in PROJECTIONS:
        raise ValueError(f"projection: unknown projection {projection!r}; expected one of {', '.join(PROJECTIONS)}")
    if backend is not None:
        backends.check_backend_name(backend)
    rotation = _pose(rotation, azimuth, elevation, b, dev, dtype)
    features = _check_features(features, mode, density)
    ho, wo = image_size_arg(image_size, (h, w))
    k = d if n_samples is None else n_samples
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise ValueError(f"n_samples: expected an integer >= 1, got {n_samples!r}")
    k = int(k)
    tau = _positive_number(tau, "tau", allow_zero=True)
    extent = _positive_number(extent, "extent")
    if projection == "perspective":
        _check_perspective(fov, distance)
    elif fov is not None or distance is not None:
        raise ValueError("fov, distance: only valid with projection='perspective'")
    if background is not None and mode != "emission_absorption":
        raise ValueError("background: only valid with mode='emission_absorption'")

    camera = make_camera(projection, d, (ho, wo), k, extent, fov, distance)
    name = backends.select_backend(OP, dev, dtype, backend)
    if name == "torch":
        out = project_volume_reference(density, features, rotation, ho, wo, k, mode, tau, camera)
    elif name in ("cpu", "cuda"):
        from ._cpp_ops import project_volume_cpp

        out = project_volume_cpp(density, features, rotation, ho, wo, k, MODE_ID[mode], tau, camera)
    else:
        from ..triton.volume_projection import project_volume_triton

        out = project_volume_triton(density, features, rotation, ho, wo, k, MODE_ID[mode], tau, camera)
    if background is not None:
        out = _add_background(out, background, features.shape[1])
    return out


def _check_density(density) -> Tensor:
    if not isinstance(density, Tensor):
        raise TypeError(f"density: expected a torch.Tensor, got {type(density).__name__}")
    if not density.is_floating_point():
        raise TypeError(f"density: expected a floating-point tensor, got dtype {density.dtype}")
    if density.dim() == 5:
        if density.shape[1] != 1:
            raise ValueError(f"density: expected (B, D, H, W) or (B, 1, D, H, W), got {tuple(density.shape)}")
        density = density[:, 0]
    elif density.dim() != 4:
        raise ValueError(f"density: expected (B, D, H, W) or (B, 1, D, H, W), got {tuple(density.shape)}")
    if min(density.shape[1:]) < 1:
        raise ValueError(f"density: grid sizes must be >= 1, got {tuple(density.shape)}")
    return density


def _angle(x, name: str, b: int, dev, dtype) -> Tensor:
    if isinstance(x, numbers.Real) and not isinstance(x, bool):
        return torch.full((b,), float(x), device=dev, dtype=dtype)
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: expected a (B,) tensor or a number, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got dtype {x.dtype}")
    if x.device != dev:
        raise ValueError(f"{name}: expected a tensor on {dev} (density's device), got {x.device}")
    if x.dim() == 0:
        x = x.expand(b)
    if x.shape != (b,):
        raise ValueError(f"{name}: expected shape ({b},) to match density's batch, got {tuple(x.shape)}")
    return x.to(dtype)


def _pose(rotation, azimuth, elevation, b: int, dev, dtype) -> Tensor:
    if rotation is not None:
        if azimuth is not None or elevation is not None:
            raise ValueError("rotation: give either rotation or azimuth/elevation, not both")
        if not isinstance(rotation, Tensor):
            raise TypeError(f"rotation: expected a (B, 3, 3) or (3, 3) tensor, got {type(rotation).__name__}")
        if not rotation.is_floating_point():
            raise TypeError(f"rotation: expected a floating-point tensor, got dtype {rotation.dtype}")
        if rotation.device != dev:
            raise ValueError(f"rotation: expected a tensor on {dev} (density's device), got {rotation.device}")
        if rotation.shape == (3, 3):
            rotation = rotation.expand(b, 3, 3)
        if rotation.shape != (b, 3, 3):
            raise ValueError(f"rotation: expected ({b}, 3, 3) or (3, 3), got {tuple(rotation.shape)}")
        return rotation.to(dtype)
    if azimuth is None and elevation is None:
        return torch.eye(3, device=dev, dtype=dtype).expand(b, 3, 3)
    az = _angle(0.0 if azimuth is None else azimuth, "azimuth", b, dev, dtype)
    el = None if elevation is None else _angle(elevation, "elevation", b, dev, dtype)
    return rotation_from_angles(az, el)


def _check_features(features, mode: str, density: Tensor) -> Tensor | None:
    if mode != "emission_absorption":
        if features is not None:
            raise ValueError(f"features: only valid with mode='emission_absorption' (got mode={mode!r})")
        return None
    if features is None:
        raise ValueError("features: required with mode='emission_absorption' (per-voxel colour, (B, C, D, H, W))")
    if not isinstance(features, Tensor):
        raise TypeError(f"features: expected a torch.Tensor, got {type(features).__name__}")
    if not features.is_floating_point():
        raise TypeError(f"features: expected a floating-point tensor, got dtype {features.dtype}")
    if features.device != density.device:
        raise ValueError(f"features: expected a tensor on {density.device} (density's device), got {features.device}")
    b, d, h, w = density.shape
    if features.dim() != 5 or features.shape[0] != b or tuple(features.shape[2:]) != (d, h, w) or features.shape[1] < 1:
        raise ValueError(f"features: expected ({b}, C, {d}, {h}, {w}) with C >= 1, got {tuple(features.shape)}")
    return features.to(density.dtype)


def image_size_arg(image_size, default: tuple[int, int] | None = None) -> tuple[int, int]:
    """An ``image_size`` argument (int or (H, W), positive) as (H, W); None gives ``default``."""
    if image_size is None and default is not None:
        return default
    size = (image_size, image_size) if isinstance(image_size, numbers.Integral) else image_size
    try:
        ho, wo = size
    except (TypeError, ValueError):
        raise ValueError(f"image_size: expected an int or (H, W), got {image_size!r}") from None
    for s in (ho, wo):
        if isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 1:
            raise ValueError(f"image_size: expected positive integers, got {image_size!r}")
    return int(ho), int(wo)


def _positive_number(x, name: str, allow_zero: bool = False) -> float:
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        raise TypeError(f"{name}: expected a number, got {type(x).__name__}")
    x = float(x)
    if not math.isfinite(x) or x < 0 or (x == 0 and not allow_zero):
        raise ValueError(f"{name}: expected a finite {'non-negative' if allow_zero else 'positive'} number, got {x}")
    return x


def _check_perspective(fov, distance) -> None:
    if fov is not None:
        f = _positive_number(fov, "fov")
        if f >= 180:
            raise ValueError(f"fov: expected degrees in (0, 180), got {f}")
    if distance is not None:
        dist = _positive_number(distance, "distance")
        if dist <= SQRT3:
            raise ValueError(f"distance: the camera must be outside the cube's bounding sphere (> sqrt(3)), got {dist}")


def _add_background(out: Tensor, background, channels: int) -> Tensor:
    if isinstance(background, numbers.Real) and not isinstance(background, bool):
        bg = out.new_full((channels,), float(background))
    elif isinstance(background, Tensor) and background.is_floating_point():
        if background.device != out.device:
            raise ValueError(f"background: expected a tensor on {out.device}, got {background.device}")
        bg = background.to(out.dtype)
        if bg.dim() == 0:
            bg = bg.expand(channels)
        if bg.shape != (channels,):
            raise ValueError(f"background: expected a scalar or ({channels},), got {tuple(bg.shape)}")
    else:
        raise TypeError(f"background: expected a number or a floating-point tensor, got {type(background).__name__}")
    colour, alpha = out[:, :channels], out[:, channels:]
    return torch.cat([colour + (1 - alpha) * bg[None, :, None, None], alpha], 1)


class VolumeProjector(nn.Module):
    """``project_volume`` as a module: the rendering settings are fixed at construction.

    ``forward(density, rotation=None, azimuth=None, elevation=None, features=None, background=None)``.
    """

    def __init__(self, image_size=None, *, n_samples=None, mode="absorption", tau=1.0,
                 projection="orthographic", extent=1.0, fov=None, distance=None, backend=None):
        super().__init__()
        self.settings = dict(image_size=image_size, n_samples=n_samples, mode=mode, tau=tau,
                             projection=projection, extent=extent, fov=fov, distance=distance, backend=backend)

    def forward(self, density, rotation=None, azimuth=None, elevation=None, features=None, background=None):
        return project_volume(density, rotation, azimuth=azimuth, elevation=elevation, features=features,
                              background=background, **self.settings)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.settings.items() if v is not None)
