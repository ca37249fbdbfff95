"""Pure-PyTorch implementations: readable, autograd-derived, the oracle every other backend is tested
against and the fallback that runs anywhere."""

from .rasterize import Fragments, interpolate_reference, rasterize_reference
from .volume_projection import project_volume_reference, sample_points

__all__ = ["Fragments", "interpolate_reference", "project_volume_reference", "rasterize_reference", "sample_points"]
