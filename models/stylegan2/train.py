"""Training StyleGAN2 with :mod:`voxrender.training` (``voxrender train stylegan2``).

One trainer step follows the port's ``train.py`` (rosinality/stylegan2-pytorch), on a batch of B real
images mapped from [0, 1] to [-1, 1]:

1. D: fakes G(z) (style mixing with probability ``mixing``), non-saturating logistic loss
   softplus(D(fake)) + softplus(-D(real)); Adam step.
2. Every ``d_reg_every`` steps (lazy R1): ``r1 / 2 * d_reg_every * E|grad_x D(real)|^2``; Adam step.
3. G: fresh fakes, softplus(-D(G(z))); Adam step (D takes no gradient).
4. Every ``g_reg_every`` steps, when ``path_reg`` > 0 (off by default): path-length regularisation on
   B / ``path_batch_shrink`` fakes, weight ``path_reg * g_reg_every``; Adam step.
5. EMA: g_ema <- beta g_ema + (1 - beta) G, beta = 0.5 ** (B / (ema_kimg * 1000)) (the port: a half-life
   of 10k images), with the half-life limited to ``ema_rampup`` x the images seen so far (StyleGAN2-ADA's
   ramp-up; 0 or None: off), or a fixed ``ema_beta``.

Adam: lr x c and betas (0, 0.99 ** c) with c = every / (every + 1) (the port's lazy-regularisation
correction). z, per-layer noise and mixing come from generators seeded by (run seed, step, rank), so a
resumed run draws exactly what the uninterrupted run would have (the trainer restores everything else).
Mixed precision (``amp`` "bf16" or "fp16"): autocast around the adversarial passes on CUDA only (fp16 with
one GradScaler per network); R1 and path lengths stay in float32; on the CPU ``amp`` is ignored.

Files: OUT/last.ckpt (the trainer's, resumable bit for bit); OUT/stylegan2.pt, written with every
checkpoint: the port's format (``g_ema``, ``d``, ``g``, ``latent_avg`` = mean of g_ema's mapping over 4096
fixed samples), readable by :func:`load_checkpoint` and by the port's ``generate.py``; OUT/samples.png
(and OUT/samples/step_N.png): g_ema on 16 fixed z with the fixed noise buffers, every ``sample_every``
steps and at the end.

Defaults for small images: ``r1`` None means StyleGAN2-ADA's heuristic gamma = 0.0002 * size^2 / batch
(0.05 at 64 px, batch 16; the port's fixed default is 10, pass ``--r1 10`` for it).
"""

from __future__ import annotations

import contextlib
import copy
import math
import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F

from voxrender.training import (NonFiniteLoss, ProgressMonitor, Trainer, TrainTask, average_gradients, dist_info,
                                noise_seed)

from .checkpoint import save_checkpoint
from .networks import Discriminator, Generator

EXPORT_NAME = "stylegan2.pt"


@dataclass
class StyleGAN2Config:
    """Architecture and training settings of a run (stored in the checkpoint's config)."""

    size: int = 64
    channel_multiplier: int = 2
    channels_max: int | None = None  # cap on every layer's channels (small models); None: the port's table
    style_dim: int = 512
    n_mlp: int = 8
    lr: float = 0.002
    r1: float | None = None  # None: 0.0002 * size^2 / batch
    d_reg_every: int = 16
    path_reg: float = 0.0  # the port: 2
    path_batch_shrink: int = 2
    g_reg_every: int = 4
    mixing: float = 0.9
    ema_kimg: float = 10.0
    ema_rampup: float | None = 0.05
    ema_beta: float | None = None
    amp: str = "off"  # off | bf16 | fp16 (CUDA only)

    def __post_init__(self):
        if self.amp not in ("off", "bf16", "fp16"):
            raise ValueError(f"amp: expected off, bf16 or fp16, got {self.amp!r}")
        if self.channel_multiplier < 1:
            raise ValueError(f"channel multiplier must be >= 1, got {self.channel_multiplier}")
        if self.channels_max is not None and self.channels_max < 1:
            raise ValueError(f"channels max must be positive, got {self.channels_max}")
        if self.d_reg_every < 1 or self.g_reg_every < 1:
            raise ValueError("d_reg_every and g_reg_every must be >= 1")
        if self.ema_beta is not None and not 0 <= self.ema_beta < 1:
            raise ValueError(f"ema beta must be in [0, 1), got {self.ema_beta}")
        if not 0 <= self.mixing <= 1:
            raise ValueError(f"mixing probability must be in [0, 1], got {self.mixing}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "StyleGAN2Config":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def r1_gamma(self, batch_size: int) -> float:
        return float(self.r1) if self.r1 is not None else 0.0002 * self.size ** 2 / batch_size

    def build(self) -> tuple[Generator, Discriminator]:
        G = Generator(self.size, self.style_dim, self.n_mlp, channel_multiplier=self.channel_multiplier,
                      channels=self.channels_max)
        D = Discriminator(self.size, channel_multiplier=self.channel_multiplier, channels=self.channels_max)
        return G, D


# ---------------------------------------------------------------------------------------------------------
# losses (the port's)


def d_logistic_loss(real_pred, fake_pred):
    return F.softplus(-real_pred).mean() + F.softplus(fake_pred).mean()


def g_nonsaturating_loss(fake_pred):
    return F.softplus(-fake_pred).mean()


def d_r1_loss(real_pred, real_img):
    """E_x |grad_x sum D(x)|^2 (double-differentiable)."""
    (grad,) = torch.autograd.grad(real_pred.sum(), real_img, create_graph=True)
    return grad.pow(2).reshape(grad.shape[0], -1).sum(1).mean()


def g_path_regularize(fake_img, latents, mean_path_length, decay: float = 0.01, generator=None):
    """(penalty, new mean path length, path lengths): |J_w^T y| for y ~ N(0, I) / sqrt(H W)."""
    noise = torch.randn(fake_img.shape, generator=generator, device=fake_img.device, dtype=fake_img.dtype)
    noise = noise / math.sqrt(fake_img.shape[2] * fake_img.shape[3])
    (grad,) = torch.autograd.grad((fake_img * noise).sum(), latents, create_graph=True)
    lengths = torch.sqrt(grad.pow(2).sum(2).mean(1))
    path_mean = mean_path_length + decay * (lengths.mean() - mean_path_length)
    return (lengths - path_mean).pow(2).mean(), path_mean.detach(), lengths


# ---------------------------------------------------------------------------------------------------------
# helpers


def _clone_state(x):
    if torch.is_tensor(x):
        return x.detach().clone()
    if isinstance(x, dict):
        return {k: _clone_state(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_clone_state(v) for v in x]
    return copy.deepcopy(x)


class _Snapshot:
    """Parameters and optimizer (and grad scaler) state of one network, to undo an update."""

    def __init__(self, module, opt, scaler=None):
        self.module, self.opt, self.scaler = module, opt, scaler
        self.params = [p.detach().clone() for p in module.parameters()]
        self.opt_state = _clone_state(opt.state_dict())
        self.scaler_state = _clone_state(scaler.state_dict()) if scaler is not None else None

    def restore(self):
        with torch.no_grad():
            for p, old in zip(self.module.parameters(), self.params):
                p.copy_(old)
        self.opt.load_state_dict(self.opt_state)
        if self.scaler is not None:
            self.scaler.load_state_dict(self.scaler_state)


CACHE_AUTO_BYTES = 2 * 1024 ** 3  # --image-cache auto: keep the images in memory when they take at most this


class CachedImages(torch.utils.data.Dataset):
    """The ``image`` of every item of ``dataset``, rendered / decoded once and kept in memory as uint8
    (B, 3, S, S), as image files store them; batches are then a copy out of memory, so the data no longer
    bounds a GPU run (the synthetic faces are rendered at about 240 images/s per CPU core, a fast GPU trains
    several times faster). The images are the dataset's rounded to 1/255."""

    def __init__(self, dataset, chunk: int = 256, progress: bool = True):
        from voxrender.training import fetch_batch

        from tqdm.auto import tqdm

        n = len(dataset)
        self.images = torch.empty((0, 3, 1, 1), dtype=torch.uint8)
        with tqdm(total=n, desc="caching images", unit="img", dynamic_ncols=True, file=sys.stderr,
                  disable=not progress) as bar:
            for start in range(0, n, chunk):
                idx = list(range(start, min(n, start + chunk)))
                x = fetch_batch(dataset, idx)["image"]
                if start == 0:  # filled in place: the cache never needs twice its size
                    self.images = torch.empty((n, *x.shape[1:]), dtype=torch.uint8)
                self.images[start:start + len(idx)] = (x.float().clamp(0, 1) * 255).round_().to(torch.uint8)
                bar.update(len(idx))

    def __len__(self) -> int:
        return self.images.shape[0]

    def get_batch(self, indices) -> dict:
        return {"image": self.images[torch.as_tensor(list(indices), dtype=torch.long)].float() / 255}

    def __getitem__(self, i):
        return {"image": self.images[i].float() / 255}


def use_cache(mode: str | None, n: int, size: int) -> bool:
    """``--image-cache``: "on", "off", or "auto" (in memory when n uint8 RGB images of ``size`` take at most
    :data:`CACHE_AUTO_BYTES`); None (a run made before the option existed): off, so it resumes exactly."""
    if mode in (None, "off"):
        return False
    if mode == "on":
        return True
    if mode == "auto":
        return n * 3 * size * size <= CACHE_AUTO_BYTES
    raise ValueError(f"--image-cache: expected 'auto', 'on' or 'off', got {mode!r}")


class ImagesOnly(torch.utils.data.Dataset):
    """A dataset's ``image`` only (what the GAN uses: nothing else travels to the device)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def get_batch(self, indices) -> dict:
        from voxrender.training import fetch_batch

        return {"image": fetch_batch(self.dataset, indices)["image"]}

    def __getitem__(self, i):
        return {"image": self.dataset[i]["image"]}


# ---------------------------------------------------------------------------------------------------------
# the task


class StyleGAN2Task(TrainTask):
    """StyleGAN2 on image batches (``batch["image"]`` (B, 3, S, S) in [0, 1]). Modules ``g``, ``d``,
    ``g_ema``; optimizers ``g``, ``d``."""

    def __init__(self, cfg: StyleGAN2Config, batch_size: int, device: str = "cpu"):
        self.cfg, self.device, self.batch_size = cfg, device, int(batch_size)
        self.G, self.D = (m.to(device) for m in cfg.build())
        self.g_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.modules = {"g": self.G, "d": self.D, "g_ema": self.g_ema}
        g_c = cfg.g_reg_every / (cfg.g_reg_every + 1) if cfg.path_reg > 0 else 1.0
        d_c = cfg.d_reg_every / (cfg.d_reg_every + 1) if self.r1_gamma > 0 else 1.0
        self.optimizers = {
            "g": torch.optim.Adam(self.G.parameters(), lr=cfg.lr * g_c, betas=(0.0, 0.99 ** g_c)),
            "d": torch.optim.Adam(self.D.parameters(), lr=cfg.lr * d_c, betas=(0.0, 0.99 ** d_c)),
        }
        self.mean_path_length = torch.zeros((), device=device)
        # the last values of the lazy terms, logged at every step (as the port does)
        self.last_reg = {"r1": torch.zeros(()), "path": torch.zeros(()), "path_length": torch.zeros(())}
        on_cuda = torch.device(device).type == "cuda"
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.amp) if on_cuda else None
        self.scalers = {}
        if self.amp_dtype is torch.float16:
            self.scalers = {"g": torch.amp.GradScaler("cuda"), "d": torch.amp.GradScaler("cuda")}

    @property
    def r1_gamma(self) -> float:
        return self.cfg.r1_gamma(self.batch_size)

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=self.amp_dtype)

    # -- state ----------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        st = super().state_dict()
        st["mean_path_length"] = self.mean_path_length.detach().cpu().clone()
        st["scalers"] = {k: s.state_dict() for k, s in self.scalers.items()}
        st["last_reg"] = {k: v.detach().cpu().clone() for k, v in self.last_reg.items()}
        return st

    def load_state_dict(self, st: dict) -> None:
        super().load_state_dict(st)
        self.mean_path_length = st.get("mean_path_length", torch.zeros(())).to(self.device)
        for k, s in self.scalers.items():
            if k in st.get("scalers", {}):
                s.load_state_dict(st["scalers"][k])
        self.last_reg.update({k: v.clone() for k, v in st.get("last_reg", {}).items()})

    def train(self, mode: bool = True) -> None:
        self.G.train(mode)
        self.D.train(mode)
        self.g_ema.eval()

    # -- random draws ---------------------------------------------------------------------------------
    def draws(self, step: int, seed: int, stream: int):
        """(device generator, CPU generator) for one part of one step."""
        rank, _ = dist_info()
        s = noise_seed(seed, step, rank, stream)
        dev = torch.Generator(device=self.device).manual_seed(s)
        cpu = torch.Generator().manual_seed(s ^ 0x5DEECE66D)
        return dev, cpu

    def fake(self, n: int, gen: torch.Generator, cpu: torch.Generator, return_latents: bool = False):
        """G on n z's (mixed with probability ``mixing``) with fresh per-layer noise, all from ``gen``."""
        G = self.G
        mix = self.cfg.mixing > 0 and float(torch.rand((), generator=cpu)) < self.cfg.mixing
        z = torch.randn(2 if mix else 1, n, G.style_dim, generator=gen, device=self.device).unbind(0)
        inject = int(torch.randint(1, G.n_latent, (), generator=cpu)) if mix else None
        noise = G.make_noise(n, generator=gen, device=self.device)
        return G(list(z), inject_index=inject, noise=noise, return_latents=return_latents)

    def _backward_step(self, name: str, loss: torch.Tensor, module, scaled: bool):
        opt = self.optimizers[name]
        opt.zero_grad(set_to_none=True)
        scaler = self.scalers.get(name) if scaled else None
        if scaler is not None:
            scaler.scale(loss).backward()
            average_gradients(module)
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            average_gradients(module)
            opt.step()

    # -- one step -------------------------------------------------------------------------------------
    def training_step(self, batch: dict, trainer) -> dict:
        cfg, G, D = self.cfg, self.G, self.D
        step, seed = trainer.step, trainer.seed
        real = batch["image"].to(torch.float32) * 2 - 1
        n = real.shape[0]
        logs = {}

        # 1. D
        gen, cpu = self.draws(step, seed, 0)
        G.requires_grad_(False)
        D.requires_grad_(True)
        with self.autocast():
            with torch.no_grad():
                fake = self.fake(n, gen, cpu)
            fake_pred = D(fake)
            real_pred = D(real)
            d_loss = d_logistic_loss(real_pred.float(), fake_pred.float())
        logs.update(d_loss=d_loss.detach(), real_score=real_pred.detach().float().mean(),
                    fake_score=fake_pred.detach().float().mean())
        trainer.check_finite(d_loss, logs)
        d_snap = _Snapshot(D, self.optimizers["d"], self.scalers.get("d"))
        self._backward_step("d", d_loss, D, scaled=True)
        try:
            # 2. lazy R1
            if self.r1_gamma > 0 and step % cfg.d_reg_every == 0:
                real_r = real.detach().requires_grad_(True)
                r1 = d_r1_loss(D(real_r), real_r)
                logs["r1"] = r1.detach()
                trainer.check_finite(r1, logs)
                # (the port adds 0 * real_pred[0] to keep every parameter in the graph; not needed here)
                self._backward_step("d", self.r1_gamma / 2 * cfg.d_reg_every * r1, D, scaled=False)

            # 3. G
            gen, cpu = self.draws(step, seed, 1)
            G.requires_grad_(True)
            D.requires_grad_(False)
            with self.autocast():
                fake = self.fake(n, gen, cpu)
                g_loss = g_nonsaturating_loss(D(fake).float())
            logs.update(g_loss=g_loss.detach(), loss=(d_loss + g_loss).detach())
            trainer.check_finite(g_loss, logs)
            g_snap = None
            do_path = cfg.path_reg > 0 and step % cfg.g_reg_every == 0
            if do_path:
                g_snap = _Snapshot(G, self.optimizers["g"], self.scalers.get("g"))
            self._backward_step("g", g_loss, G, scaled=True)

            # 4. lazy path-length regularisation
            if do_path:
                try:
                    gen, cpu = self.draws(step, seed, 2)
                    m = max(1, n // cfg.path_batch_shrink)
                    img, latents = self.fake(m, gen, cpu, return_latents=True)
                    path_loss, path_mean, lengths = g_path_regularize(img, latents, self.mean_path_length,
                                                                      generator=gen)
                    logs.update(path=path_loss.detach(), path_length=lengths.detach().mean())
                    trainer.check_finite(path_loss, logs)
                    weighted = cfg.path_reg * cfg.g_reg_every * path_loss
                    if cfg.path_batch_shrink:
                        weighted = weighted + 0 * img[0, 0, 0, 0]
                    self._backward_step("g", weighted, G, scaled=False)
                    self.mean_path_length = path_mean.detach()
                except NonFiniteLoss:
                    g_snap.restore()
                    raise
        except NonFiniteLoss:
            d_snap.restore()
            raise
        finally:
            G.requires_grad_(True)
            D.requires_grad_(True)

        for k in self.last_reg:
            if k in logs:
                self.last_reg[k] = logs[k].detach().float().cpu()
            logs[k] = self.last_reg[k]

        # 5. EMA
        beta = self.ema_beta(step)
        with torch.no_grad():
            # one fused call over all parameters (one kernel launch per few tensors on a GPU, not one each)
            torch._foreach_lerp_(list(self.g_ema.parameters()), [p.detach() for p in G.parameters()], 1 - beta)
            for be, b in zip(self.g_ema.buffers(), G.buffers()):
                be.copy_(b)
        logs["ema_beta"] = torch.tensor(beta)
        return logs

    def ema_beta(self, step: int) -> float:
        """EMA decay after ``step`` + 1 steps (see the module docstring)."""
        cfg = self.cfg
        if cfg.ema_beta is not None:
            return float(cfg.ema_beta)
        batch = self.batch_size
        nimg = cfg.ema_kimg * 1000
        if cfg.ema_rampup:
            nimg = min(nimg, (step + 1) * batch * cfg.ema_rampup)
        return 0.5 ** (batch / max(nimg, 1e-8))

    def export(self, path) -> Path:
        """OUT/stylegan2.pt in the port's format (g_ema, d, g, latent_avg)."""
        G = getattr(self.g_ema, "module", self.g_ema)
        latent_avg = G.mean_latent(4096, torch.Generator().manual_seed(0))[0]
        return save_checkpoint(path, G, self.D, g=self.G, latent_avg=latent_avg)


# ---------------------------------------------------------------------------------------------------------
# trainer, data, monitor


class StyleGAN2Trainer(Trainer):
    """The voxrender Trainer that also writes OUT/stylegan2.pt (port format) with every checkpoint."""

    def save(self, path=None, rng=None, data=None, collective: bool = True):
        out = super().save(path, rng, data, collective)
        if out is not None:
            self.task.export(self.out / EXPORT_NAME)
        return out


def make_dataset(data: dict, size: int, progress: bool = True):
    """The images of a run: ``synthetic-faces`` (voxrender.data.faces.SyntheticFaces) or any source of
    :func:`voxrender.data.sources.build_dataset` (folder:DIR, celeba:DIR, mnist:DIR, ...), as RGB at
    ``size``; only the ``image`` key is kept, in memory (:class:`CachedImages`) when ``data["cache"]`` says so
    (:func:`use_cache`)."""
    name = data["name"]
    if name == "synthetic-faces":
        try:
            from voxrender.data.faces import SyntheticFaces
        except ImportError as e:
            raise ImportError(f"--data synthetic-faces needs voxrender.data.faces.SyntheticFaces, which could not "
                              f"be imported ({e}); use --data folder:DIR instead") from None
        ds = SyntheticFaces(data.get("length") or 10000, size=size, seed=data.get("seed", 0), split="train")
    else:
        from voxrender.data.sources import build_dataset

        ds = build_dataset([{"name": name, "path": data.get("path")}], image_size=size, channels=3,
                           seed=data.get("seed", 0), length=data.get("length"))
    if use_cache(data.get("cache"), len(ds), size):
        return CachedImages(ds, progress=progress)
    return ImagesOnly(ds)


def parse_data(spec: str | None) -> dict:
    """``--data`` -> {"name", "path"}: ``synthetic-faces`` (default) or NAME:PATH of voxrender's sources."""
    import os

    spec = spec or "synthetic-faces"
    if spec.strip().lower() == "synthetic-faces":
        return {"name": "synthetic-faces", "path": None}
    from voxrender.data.sources import parse_source

    src = parse_source(spec)
    if src["path"]:
        src["path"] = str(Path(os.path.expandvars(os.path.expanduser(src["path"]))).absolute())
    return src


@torch.no_grad()
def sample_grid(G: Generator, z: torch.Tensor, ncol: int = 4):
    """A (3, H', W') picture in [0, 1]: G(z) with the fixed noise buffers."""
    from voxrender.io import image_grid

    img = G(z, randomize_noise=False)
    tiles = list(((img.float().cpu() + 1) / 2).clamp(0, 1))
    return image_grid(tiles, ncol=ncol, scale=max(1, 128 // G.size))


class Monitor(ProgressMonitor):
    """``on_step`` callback (rank 0): a tqdm bar (D and G losses, R1, images/s) and, every
    ``sample_every`` steps and at the end, OUT/samples.png and OUT/samples/step_N.png (g_ema on 16 fixed z)."""

    desc = "train stylegan2"

    def __init__(self, out, sample_every: int = 500, progress: bool = True, n_samples: int = 16):
        super().__init__(out, sample_every, progress, n_samples)

    def postfix(self, logs: dict) -> dict:
        post = {"D": f"{logs['d_loss']:.3f}", "G": f"{logs['g_loss']:.3f}"}
        if "r1" in logs:
            post["r1"] = f"{logs['r1']:.3g}"
        return post

    def sample_image(self, trainer):
        G = trainer.task.g_ema
        if self.z is None:
            g = torch.Generator().manual_seed(trainer.seed + 12345)
            self.z = torch.randn(self.n_samples, G.style_dim, generator=g).to(trainer.task.device)
        return sample_grid(G, self.z, ncol=int(math.ceil(math.sqrt(self.n_samples))))


def build_task(config: dict, device: str = "cpu") -> StyleGAN2Task:
    return StyleGAN2Task(StyleGAN2Config.from_dict(config["stylegan2"]), config["batch_size"], device)


def train_run(config: dict, out, steps: int, device: str = "cpu", resume=None, ckpt_every: int = 500,
              sample_every: int = 500, progress: bool = True, seed: int = 0, on_step=None, tensorboard=None,
              max_seconds: float | None = None):
    """Builds (or resumes from OUT/last.ckpt or the path ``resume``) a StyleGAN2 run and trains it up to
    ``steps``. ``config``: {"model": "stylegan2", "stylegan2": StyleGAN2Config dict, "batch_size", "data"}.
    Returns (trainer, status)."""
    from voxrender.training import begin_run, open_run

    out = Path(out)
    config, seed, ck, path = open_run(config, out, device, seed, resume, model="stylegan2")
    task = build_task(config, device)
    ds = make_dataset(config["data"], config["stylegan2"]["size"], progress=progress and dist_info()[0] == 0)
    monitor = Monitor(out, sample_every=sample_every, progress=progress)

    def callback(trainer, logs):
        monitor(trainer, logs)
        if on_step is not None:
            on_step(trainer, logs)

    trainer = StyleGAN2Trainer(task, ds, out, steps=steps, batch_size=config["batch_size"], seed=seed,
                               ckpt_every=ckpt_every, config=config, device=device, progress=False,
                               on_step=callback, desc="train stylegan2", tensorboard=tensorboard,
                               max_seconds=max_seconds)
    begin_run(trainer, ck, path)
    torch.set_grad_enabled(True)
    try:
        status = trainer.fit()
    finally:
        monitor.close()
    return trainer, status


def config_from_args(args) -> dict:
    """The run config of ``voxrender train stylegan2`` from the parsed command line."""
    if args.data and len(args.data) > 1:
        raise ValueError("train stylegan2: one --data source (synthetic-faces, folder:DIR, celeba:DIR, ...)")
    data = parse_data(args.data[0] if args.data else None)
    data.update(length=args.dataset_size, seed=args.data_seed, cache=args.image_cache)
    cfg = StyleGAN2Config(size=args.size, channel_multiplier=args.channel_multiplier, channels_max=args.channels_max,
                          style_dim=args.style_dim, n_mlp=args.n_mlp, lr=0.002 if args.lr is None else args.lr,
                          r1=args.r1, d_reg_every=args.d_reg_every, path_reg=args.path_reg,
                          g_reg_every=args.g_reg_every, mixing=args.mixing, ema_kimg=args.ema_kimg,
                          ema_rampup=args.ema_rampup or None, ema_beta=args.ema_beta, amp=args.amp)
    if cfg.size not in (8, 16, 32, 64, 128, 256, 512, 1024):
        raise ValueError(f"--size must be a power of two from 8 to 1024, got {cfg.size}")
    return {"model": "stylegan2", "stylegan2": cfg.to_dict(), "batch_size": args.batch_size, "data": data}


def cmd_train(args) -> int:
    """``voxrender train stylegan2`` (dispatched from voxrender.model_cli.cmd_train)."""
    from voxrender.model_cli import end_message, max_seconds
    from voxrender.training import load_checkpoint

    def fail(msg):
        return SystemExit(f"voxrender: error: {msg}")

    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    out = Path(args.out or "runs/stylegan2")
    try:
        config = config_from_args(args)
    except ValueError as e:
        raise fail(str(e)) from None
    if args.resume:
        ck_path = out / "last.ckpt" if args.resume is True else Path(args.resume)
        try:
            ck_config = load_checkpoint(ck_path)["config"]
        except (FileNotFoundError, ValueError) as e:
            raise fail(str(e)) from None
        ck_model = ck_config.get("model", "vae")
        if ck_model != "stylegan2":
            raise fail(f"--resume {ck_path}: a {ck_model!r} checkpoint, not 'stylegan2' (use train {ck_model})")
        config = ck_config  # the checkpoint's settings win
    if args.steps is not None:
        steps = args.steps
    else:
        try:
            n = len(make_dataset({**config["data"], "cache": "off"}, config["stylegan2"]["size"]))
        except (FileNotFoundError, ValueError, ImportError) as e:
            raise fail(str(e)) from None
        steps = max(1, args.epochs * (n // config["batch_size"]))
    try:
        trainer, status = train_run(config, out, steps, device=device, resume=args.resume,
                                    ckpt_every=args.ckpt_every, sample_every=args.sample_every,
                                    progress=not args.no_progress, seed=args.seed, tensorboard=args.tensorboard,
                                    max_seconds=max_seconds(args))
    except NonFiniteLoss as e:
        print(f"voxrender train: {e}", file=sys.stderr)
        return 3
    except (FileNotFoundError, ValueError, ImportError) as e:
        raise fail(str(e)) from None
    if trainer.rank == 0:
        print(end_message(trainer, status, f"; port-format weights: {trainer.out / EXPORT_NAME}; samples: "
                                           f"{trainer.out / 'samples.png'}"))
    return 130 if status == "interrupted" else 0
