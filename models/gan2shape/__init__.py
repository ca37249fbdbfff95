"""GAN2Shape (Pan et al., ICLR 2021) on voxrender: the Unsup3d renderer (``renderer``), the ellipsoid shape
prior and threshold object mask (``prior``) and the SIDE / MAD evaluation (``metrics``)."""

from .metrics import evaluate_baselines, evaluate_depth, format_metrics
from .prior import ellipsoid_depth_prior, object_mask
from .renderer import (
    Reconstruction,
    depth_from_raw,
    get_inv_warped_2d_grid,
    intrinsics,
    light_from_raw,
    normals_from_depth,
    reconstruct,
    view_from_raw,
    warp_canon_depth,
)

__all__ = ["Reconstruction", "depth_from_raw", "ellipsoid_depth_prior", "evaluate_baselines", "evaluate_depth",
           "format_metrics", "get_inv_warped_2d_grid", "intrinsics", "light_from_raw", "normals_from_depth",
           "object_mask", "reconstruct", "view_from_raw", "warp_canon_depth"]
