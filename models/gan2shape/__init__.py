"""GAN2Shape (Pan et al., ICLR 2021) on voxrender: the Unsup3d renderer (``renderer``), the ellipsoid shape
prior and threshold object mask (``prior``), that prior's rise fitted to faces with ground truth
(``prior_fit``), the SIDE / MAD evaluation (``metrics``), the networks
(``networks``), the per-image algorithm (``model``), W-space inversion (``invert``), the end-to-end runs and
outputs (``pipeline``) and the ``voxrender gan2shape`` / ``eval-gan2shape`` commands (``cli``)."""

from .invert import Inversion, invert
from .metrics import evaluate_baselines, evaluate_depth, format_metrics
from .model import (PRESETS, GAN2Shape, GAN2ShapeConfig, GAN2ShapeResult, ViewLightStats, VGGPerceptualLoss,
                    latent_offset)
from .networks import EDDeconv, Encoder, ResEncoder, build_networks
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

__all__ = ["PRESETS", "EDDeconv", "Encoder", "GAN2Shape", "GAN2ShapeConfig", "GAN2ShapeResult", "Inversion",
           "Reconstruction", "ResEncoder", "VGGPerceptualLoss", "ViewLightStats", "build_networks", "depth_from_raw",
           "ellipsoid_depth_prior", "evaluate_baselines", "evaluate_depth", "format_metrics",
           "get_inv_warped_2d_grid", "intrinsics", "invert", "latent_offset", "light_from_raw", "normals_from_depth",
           "object_mask", "reconstruct", "view_from_raw", "warp_canon_depth"]
