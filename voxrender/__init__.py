"""voxrender: fast differentiable voxel projection (and, soon, triangle rasterization) for PyTorch.

Importing touches no GPU driver and compiles nothing: the C++ extension is loaded, and Triton imported,
only when an op first needs them.
"""

from .backends import BACKENDS, available_backends, use_backend
from .geometry import (
    depth_to_points,
    euler_to_rotation,
    grid_mesh_faces,
    inverse_transform_points,
    look_at,
    normals_from_depth,
    perspective,
    rotation_from_angles,
    rotation_x,
    rotation_y,
    rotation_z,
    transform_points,
)
from .ops.rasterize import interpolate, rasterize
from .ops.volume_projection import VolumeProjector, project_volume
from .reference.rasterize import Fragments

__version__ = "0.1.0"

__all__ = [
    "BACKENDS",
    "Fragments",
    "VolumeProjector",
    "available_backends",
    "depth_to_points",
    "euler_to_rotation",
    "grid_mesh_faces",
    "interpolate",
    "inverse_transform_points",
    "look_at",
    "normals_from_depth",
    "perspective",
    "project_volume",
    "rasterize",
    "rotation_from_angles",
    "rotation_x",
    "rotation_y",
    "rotation_z",
    "transform_points",
    "use_backend",
]
