"""Pure-PyTorch implementations: readable, autograd-derived, the oracle every other backend is tested
against and the fallback that runs anywhere."""

from .volume_projection import project_volume_reference, sample_points

__all__ = ["project_volume_reference", "sample_points"]
