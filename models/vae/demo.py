"""``voxrender demo``: train the voxel VAE on the built-in shapes (minutes on a 2-core CPU), evaluate on
held-out shapes, write the pictures and metrics."""

from __future__ import annotations

# Settings that finish in a few minutes on a 2-core CPU (measurements in docs/models.md): a smaller
# network than the published one (64 channels, a 16^3 grid rendered to 28 px images), batch 32, a larger
# learning rate, the pose as an encoder latent (the paper's general approach) and the novel-view
# adversarial term: without it this short run collapses to a constant pose and flat "billboard" shapes,
# and the uniform pose prior instead gives solids of revolution (+0.09 IoU over the fixed shape against
# +0.17..+0.18 with the adversarial term; see docs/models.md). Its weight is 1: in full demo runs (two
# seeds; 1 and 2 threads) weight 1 gave +0.172..+0.183, weight 10 +0.146..+0.168 (seed 1 missed +0.15).
# Same mu-VAE objective, latent clipping, renderer and evaluation as the full configuration.
DEMO = {
    "vae": {"image_size": 28, "channels": 1, "grid": 16, "z_dim": 19, "pose": "encoder", "enc_channels": 64,
            "dec_channels": [64], "pose_hidden": 32, "tau": 0.5, "beta": 1.0, "clip_latents": True,
            "texture": False, "texture_hidden": 1000, "init_occupancy": 0.05, "adversarial": 1.0,
            "adv_width": 0.125, "adv_lr": 2e-4, "adv_fm": 1.0, "adv_gate": 0.8, "backend": None},
    "lr": 2e-3,
    "grad_clip": 1.0,
    "batch_size": 32,
    "steps": 1500,
    "data": {"name": "synthetic", "length": 60000, "seed": 0, "kinds": None},
    "eval_n": 256,
}
