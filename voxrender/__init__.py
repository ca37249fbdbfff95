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
from .ops.antialias import antialias, face_adjacency
from .ops.rasterize import interpolate, rasterize
from .ops.volume_projection import VolumeProjector, project_volume
from .reference.rasterize import Fragments
from .mesh_io import load_mesh, load_obj, load_off, normalize_verts, save_mesh, save_obj
from .modules import DepthRenderer, MeshRasterizer, MeshRenderer
from .render import intrinsics_from_fov, render_depth, render_mesh, vertex_normals

__version__ = "0.1.0"

__all__ = [
    "BACKENDS",
    "DepthRenderer",
    "Fragments",
    "MeshRasterizer",
    "MeshRenderer",
    "VolumeProjector",
    "antialias",
    "available_backends",
    "depth_to_points",
    "euler_to_rotation",
    "face_adjacency",
    "grid_mesh_faces",
    "interpolate",
    "intrinsics_from_fov",
    "inverse_transform_points",
    "load_mesh",
    "load_obj",
    "load_off",
    "look_at",
    "normals_from_depth",
    "normalize_verts",
    "perspective",
    "project_volume",
    "rasterize",
    "render_depth",
    "render_mesh",
    "rotation_from_angles",
    "rotation_x",
    "rotation_y",
    "rotation_z",
    "save_mesh",
    "save_obj",
    "transform_points",
    "use_backend",
    "vertex_normals",
]
