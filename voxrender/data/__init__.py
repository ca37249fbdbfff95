"""Datasets: built-in procedural data (no download): the voxel shapes dataset (``VoxelShapes``) and the
scenes and meshes of the pictures and tests; loaders of real data on disk (nothing is downloaded): MNIST /
Fashion-MNIST IDX files, image folders, CelebA (``images``), ModelNet40 meshes rendered by the rasterizer
(``modelnet``), and mixtures of sources (``sources``)."""

from .shapes import demo_scene, ellipsoid, box, torus
from .voxel_shapes import VoxelShapes, render_shapes
from .faces import SyntheticFaces
from .images import CelebA, DatasetNotFoundError, IDXImages, ImageFolder, read_idx, write_idx
from .modelnet import PAPER_CATEGORIES, ModelNetRenders
from .sources import Mixture, build_dataset, paper_weights, parse_source

__all__ = ["demo_scene", "ellipsoid", "box", "torus", "VoxelShapes", "render_shapes", "SyntheticFaces",
           "CelebA", "DatasetNotFoundError", "IDXImages", "ImageFolder", "read_idx", "write_idx", "PAPER_CATEGORIES",
           "ModelNetRenders", "Mixture", "build_dataset", "paper_weights", "parse_source"]
