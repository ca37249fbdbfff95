"""Ray geometry of `project_volume`: the single place where pixels become rays.

Every backend (torch reference, C++/CUDA through ``csrc/include/voxrender/volume.h``, Triton) reads the
same few numbers, computed here once, and builds the ray of pixel (i, j) and its k-th sample as

    u = -1 + (2 j + 1) / Wo,   v = -1 + (2 i + 1) / Ho          (pixel centre, NDC, y down)
    orthographic: origin = (sx u, sy v, 0),     direction = (0, 0, 1)
    perspective:  origin = (0, 0, cam_z),       direction = (sx u, sy v, 1)
    t_k = t0 + (k + 1/2) dt,   p_k = origin + t_k direction   (camera frame, front to back)
    q_k = R^T p_k                                               (volume frame, the cube [-1, 1]^3)
    delta = dt * |direction| * step_scale                       (step length in voxel units)

Orthographic: sx = sy = extent, t0 = -extent, dt = 2 extent / K, step_scale = D / 2, so with the
defaults the identity view samples voxel centres and delta = 1 (the spec's identity).
Perspective: the camera sits at (0, 0, -distance) looking at the origin, sx = tan(fov_x / 2) and
sy = tan(fov / 2) (square pixels: sx = sy * Wo / Ho), the K samples are spaced evenly in camera depth
over [distance - sqrt(3), distance + sqrt(3)] (the cube in any rotation), and delta is the Euclidean
length of one step along the pixel's ray, so absorption is a true line integral for off-axis rays too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MODES = ("absorption", "sum", "max", "emission_absorption")
PROJECTIONS = ("orthographic", "perspective")
MODE_ID = {name: i for i, name in enumerate(MODES)}
PROJECTION_ID = {name: i for i, name in enumerate(PROJECTIONS)}

SQRT3 = math.sqrt(3.0)


@dataclass(frozen=True)
class RayCamera:
    """Per-call ray parameters shared by every backend (see the module docstring)."""

    projection: int  # 0 orthographic, 1 perspective
    sx: float
    sy: float
    cam_z: float
    t0: float
    dt: float
    step_scale: float

    def floats(self) -> list[float]:
        """The float parameters in the order the C++ and Triton kernels take them."""
        return [self.sx, self.sy, self.cam_z, self.t0, self.dt, self.step_scale]


def make_camera(
    projection: str,
    depth: int,
    image_size: tuple[int, int],
    n_samples: int,
    extent: float,
    fov: float | None,
    distance: float | None,
) -> RayCamera:
    """Builds the :class:`RayCamera` for a call (arguments already validated)."""
    ho, wo = image_size
    step_scale = depth / 2.0
    if projection == "orthographic":
        return RayCamera(0, extent, extent, 0.0, -extent, 2.0 * extent / n_samples, step_scale)
    dist, fov_deg = perspective_defaults(extent, fov, distance)
    ty = math.tan(math.radians(fov_deg) / 2.0)
    tx = ty * wo / ho
    return RayCamera(1, tx, ty, -dist, dist - SQRT3, 2.0 * SQRT3 / n_samples, step_scale)


DEFAULT_DISTANCE = 4.0


def perspective_defaults(extent: float, fov: float | None, distance: float | None) -> tuple[float, float]:
    """Fills in the perspective camera's defaults.

    distance defaults to 4 (volume units; the cube's centre is at the origin). fov defaults to the
    vertical angle under which the plane through the cube's centre spans [-extent, extent], i.e. the
    perspective counterpart of the orthographic framing: tan(fov / 2) = extent / distance.
    """
    dist = DEFAULT_DISTANCE if distance is None else float(distance)
    fov_deg = math.degrees(2.0 * math.atan(extent / dist)) if fov is None else float(fov)
    return dist, fov_deg
