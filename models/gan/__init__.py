"""The voxel GAN (PrGAN-style: a 3D generator, renderings by project_volume, a 2D discriminator with
feature matching): ``voxrender.models.gan``."""

from .model import (VIEWS, Discriminator, GANConfig, Generator, VoxelGAN, d_loss_and_accuracy,
                    feature_matching_loss, g_adversarial_loss, sample_z)

__all__ = ["VIEWS", "Discriminator", "GANConfig", "Generator", "VoxelGAN", "d_loss_and_accuracy",
           "feature_matching_loss", "g_adversarial_loss", "sample_z"]
