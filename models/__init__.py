"""voxrender's bundled models, installed as ``voxrender.models`` (the top-level ``models/`` folder).

The voxel VAE / GAN and GAN2Shape arrive with their own issues; they are built only on the public API.
"""
