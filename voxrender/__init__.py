"""voxrender: fast differentiable voxel projection (and, soon, triangle rasterization) for PyTorch.

Importing touches no GPU driver and compiles nothing: the C++ extension is loaded, and Triton imported,
only when an op first needs them.
"""

from .backends import BACKENDS, available_backends, use_backend
from .geometry import rotation_from_angles, rotation_x, rotation_y
from .ops.volume_projection import VolumeProjector, project_volume

__version__ = "0.1.0"

__all__ = [
    "BACKENDS",
    "VolumeProjector",
    "available_backends",
    "project_volume",
    "rotation_from_angles",
    "rotation_x",
    "rotation_y",
    "use_backend",
]
