"""``voxrender demo``: train the voxel VAE on the built-in shapes (minutes on a 2-core CPU), evaluate on
held-out shapes, write the pictures and metrics."""

from __future__ import annotations

# Settings that finish in a few minutes on a 2-core CPU (measurements in docs/models.md): a smaller
# network than the published one (64 channels, a 16^3 grid rendered to 28 px images), batch 32, a larger
# learning rate, and the paper's uniform pose prior (with the encoder-predicted pose, this short run
# collapses to a constant pose and a flat "billboard" shape; see docs/models.md). Same objective, latent
# clipping, renderer and evaluation as the full configuration.
DEMO = {
    "vae": {"image_size": 28, "channels": 1, "grid": 16, "z_dim": 19, "pose": "uniform", "enc_channels": 64,
            "dec_channels": [64], "pose_hidden": 32, "tau": 0.5, "beta": 1.0, "clip_latents": True,
            "texture": False, "texture_hidden": 1000, "init_occupancy": 0.05, "backend": None},
    "lr": 2e-3,
    "grad_clip": 1.0,
    "batch_size": 32,
    "steps": 1500,
    "data": {"name": "synthetic", "length": 60000, "seed": 0, "kinds": None},
    "eval_n": 256,
}
