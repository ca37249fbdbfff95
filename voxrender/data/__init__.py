"""Datasets: built-in procedural data (no download). Real-data loaders arrive with the models issue."""

from .shapes import demo_scene, ellipsoid, box, torus

__all__ = ["demo_scene", "ellipsoid", "box", "torus"]
