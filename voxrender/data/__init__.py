"""Datasets: built-in procedural data (no download): the voxel shapes dataset (``VoxelShapes``) and the
scenes and meshes of the pictures and tests. Real-data loaders arrive with the models issue."""

from .shapes import demo_scene, ellipsoid, box, torus
from .voxel_shapes import VoxelShapes, render_shapes

__all__ = ["demo_scene", "ellipsoid", "box", "torus", "VoxelShapes", "render_shapes"]
