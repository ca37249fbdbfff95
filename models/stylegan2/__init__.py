"""StyleGAN2 (``voxrender.models.stylegan2``): generator, discriminator and checkpoints in the format of
the widely used PyTorch port (rosinality/stylegan2-pytorch), in plain PyTorch (CPU and GPU, no compile
step), plus training with :mod:`voxrender.training` (``voxrender train stylegan2``).

    from voxrender.models.stylegan2 import Generator, Discriminator, load_checkpoint, save_checkpoint
    G, D = load_checkpoint("550000.pt")            # keys g_ema, d (optionally g, latent_avg)
    w = G.mapping(z)                               # (B, 512) -> (B, 512)
    img = G(z, randomize_noise=False, truncation=0.7)   # (B, 3, S, S) in about [-1, 1]
    img = G(w, input_is_latent=True, randomize_noise=False)
    logits, feats = D(img, return_features=True)

See :mod:`.networks` for what differs from the port (mainly: ``G(...)`` returns the image alone unless
``return_latents=True``).
"""

from .checkpoint import (checkpoint_dict, discriminator_config, discriminator_from_state_dict, generator_config,
                         generator_from_state_dict, load_checkpoint, save_checkpoint)
from .networks import (Discriminator, EqualConv2d, EqualLinear, Generator, ModulatedConv2d, default_channels,
                       fused_leaky_relu, resolve_channels, upfirdn2d)
from .pretrained import pretrained_info, pretrained_names, pretrained_path

__all__ = ["Discriminator", "EqualConv2d", "EqualLinear", "Generator", "ModulatedConv2d", "checkpoint_dict",
           "default_channels", "discriminator_config", "discriminator_from_state_dict", "fused_leaky_relu",
           "generator_config", "generator_from_state_dict", "load_checkpoint", "pretrained_info", "pretrained_names",
           "pretrained_path", "resolve_channels",
           "save_checkpoint", "upfirdn2d"]
