"""The voxel VAE with the mu-VAE objective ("Inverse Graphics", Ucar 2019): ``voxrender.models.vae``."""

from .model import (POSES, Decoder, Encoder, PoseMLP, VAEConfig, VoxelVAE, clip_latents, gaussian_kl,
                    latent_loss, reconstruction_loss)

__all__ = ["POSES", "Decoder", "Encoder", "PoseMLP", "VAEConfig", "VoxelVAE", "clip_latents", "gaussian_kl",
           "latent_loss", "reconstruction_loss"]
