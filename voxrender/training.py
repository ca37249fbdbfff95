"""Generic training machinery shared by the bundled models (VAE, GAN, later StyleGAN2).

- :class:`BatchStream`: the data position as state (epoch, offset): a per-epoch permutation from
  (seed, epoch), so a resumed run sees exactly the batches it would have seen.
- :class:`Trainer`: the loop: tqdm progress bar (loss, images/s), checkpoints written atomically (temp
  file + ``os.replace``) every N steps, at the end, on Ctrl-C / SIGTERM and when a time budget is spent;
  bit-for-bit resume (model, optimizers, the torch / numpy / python RNG states, data position, step); a
  NaN/inf loss stops the run with a clear message and a checkpoint of the last good state (the state before
  the failing step's update).
- :class:`TrainTask`: what a model supplies: ``compute_loss(batch) -> (loss, logs)`` and its optimizers.
  The default :meth:`TrainTask.training_step` does backward, gradient-norm clipping and the optimizer step;
  tasks with several optimizers (a GAN) override it and call ``trainer.check_finite`` themselves.
- torch.distributed: with ``WORLD_SIZE > 1`` (``torchrun``) each rank takes its slice of every global batch;
  the task wraps its modules with DDP (:func:`maybe_ddp`); only rank 0 writes checkpoints and bars, but a
  checkpoint holds every rank's RNG state (resume is bit-for-bit on every rank), and a NaN/inf loss or a
  Ctrl-C on any rank stops all of them after the same step.
"""

from __future__ import annotations

import abc
import math
import os
import random
import signal
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

CKPT_FORMAT = "voxrender-train-1"


class NonFiniteLoss(RuntimeError):
    """Raised by :meth:`Trainer.check_finite` when a loss is NaN or infinite."""


# ---------------------------------------------------------------------------------------------------------
# RNG state and atomic files


def rng_state() -> dict:
    """Every RNG a training step may touch: torch (CPU and CUDA), numpy's global, python's ``random``."""
    st = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict) -> None:
    torch.set_rng_state(st["torch"])
    np.random.set_state(st["numpy"])
    random.setstate(st["python"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def atomic_save(obj, path) -> Path:
    """``torch.save`` to a temporary file in the same folder, flushed, then ``os.replace``: a reader (or a
    crash) never sees a half-written checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def load_checkpoint(path, map_location="cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    ck = torch.load(path, map_location=map_location, weights_only=False)
    if not isinstance(ck, dict) or ck.get("format") != CKPT_FORMAT:
        raise ValueError(f"{path} is not a voxrender training checkpoint (format {CKPT_FORMAT})")
    return ck


# ---------------------------------------------------------------------------------------------------------
# distributed


def dist_info() -> tuple[int, int]:
    """(rank, world_size) of the current process group, (0, 1) without one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def init_distributed(device: str) -> tuple[int, int]:
    """Starts the process group when launched by ``torchrun`` (WORLD_SIZE > 1): NCCL on CUDA, gloo on CPU.
    Returns (rank, world_size)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        torch.distributed.init_process_group(backend)
        if device.startswith("cuda"):
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return dist_info()


def maybe_ddp(module: torch.nn.Module, device: str):
    """Wraps a module in DistributedDataParallel when a process group is running; else returns it."""
    rank, world = dist_info()
    if world == 1:
        return module
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [torch.device(device).index or 0] if device.startswith("cuda") else None
    return DDP(module, device_ids=ids)


def noise_seed(seed: int, step: int, rank: int = 0, stream: int = 0) -> int:
    """The seed of one step's random draws on one rank (splitmix-style mixing, 63 bits): models that draw
    their own noise per step (the GANs) seed a generator with it, so a resumed run draws the same noise and
    every DDP rank draws its own. ``stream`` separates independent draws within a step."""
    x = (int(seed) * 0x9E3779B97F4A7C15 + int(step) * 0xBF58476D1CE4E5B9 + int(rank) * 0x94D049BB133111EB
         + int(stream) * 0xD6E8FEB86659FD93 + 7)
    x %= 1 << 64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) % (1 << 64)
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) % (1 << 64)
    return (x ^ (x >> 31)) & ((1 << 63) - 1)


def any_rank_flags(flags, device="cpu") -> list[bool]:
    """For each of ``flags``: true when it is true on any process (one tiny all-reduce for all of them; the
    flags themselves with one process). Decisions that end the loop (a NaN/inf loss, Ctrl-C, a spent time
    budget) must be the same on every rank, or the ranks that go on wait forever in their next collective."""
    flags = [bool(f) for f in flags]
    _, world = dist_info()
    if world == 1:
        return flags
    t = torch.tensor([1.0 if f else 0.0 for f in flags], device=device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def any_rank(flag: bool, device="cpu") -> bool:
    """:func:`any_rank_flags` of one flag."""
    return any_rank_flags([flag], device)[0]


def gather_objects(obj) -> list:
    """Every process's ``obj`` (a list in rank order; ``[obj]`` with one process). A collective: every rank
    must call it."""
    _, world = dist_info()
    if world == 1:
        return [obj]
    objs = [None] * world
    torch.distributed.all_gather_object(objs, obj)
    return objs


def all_reduce_mean(tensors: list) -> None:
    """In place: each tensor becomes its mean over the processes (one flat all-reduce; no-op with one)."""
    _, world = dist_info()
    if world == 1 or not tensors:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    torch.distributed.all_reduce(flat)
    flat /= world
    k = 0
    for t in tensors:
        t.copy_(flat[k:k + t.numel()].view_as(t))
        k += t.numel()


def average_gradients(module: torch.nn.Module) -> None:
    """All-reduce mean of a module's gradients over the processes (for modules not wrapped in DDP)."""
    all_reduce_mean([p.grad for p in module.parameters() if p.grad is not None])


# ---------------------------------------------------------------------------------------------------------
# data position


class BatchStream:
    """Global batches of indices into a dataset of ``n`` items, reshuffled every epoch from (seed, epoch).

    The state is (epoch, offset): :meth:`state_dict` / :meth:`load_state_dict` restore the exact position.
    With ``world_size`` > 1 every rank gets its contiguous slice of each global batch (``batch_size`` is
    the global batch). Incomplete last batches are dropped.
    """

    def __init__(self, n: int, batch_size: int, seed: int = 0, shuffle: bool = True, rank: int = 0,
                 world_size: int = 1):
        if batch_size < 1 or batch_size > n:
            raise ValueError(f"batch size {batch_size} must be between 1 and the dataset size {n}")
        if batch_size % world_size:
            raise ValueError(f"batch size {batch_size} must be divisible by the number of processes {world_size}")
        self.n, self.batch_size, self.seed, self.shuffle = n, batch_size, seed, shuffle
        self.rank, self.world_size = rank, world_size
        self.epoch, self.offset = 0, 0
        self._perm, self._perm_epoch = None, None

    @property
    def batches_per_epoch(self) -> int:
        return self.n // self.batch_size

    def _order(self) -> torch.Tensor:
        if self._perm_epoch != self.epoch:
            if self.shuffle:
                g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
                self._perm = torch.randperm(self.n, generator=g)
            else:
                self._perm = torch.arange(self.n)
            self._perm_epoch = self.epoch
        return self._perm

    def next(self) -> list[int]:
        if self.offset + self.batch_size > self.n:
            self.epoch, self.offset = self.epoch + 1, 0
        idx = self._order()[self.offset:self.offset + self.batch_size]
        self.offset += self.batch_size
        per = self.batch_size // self.world_size
        return idx[self.rank * per:(self.rank + 1) * per].tolist()

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "offset": self.offset, "seed": self.seed, "n": self.n,
                "batch_size": self.batch_size}

    def load_state_dict(self, st: dict) -> None:
        self.epoch, self.offset = int(st["epoch"]), int(st["offset"])


def fetch_batch(dataset, indices: list[int]) -> dict:
    """A batch from a dataset: its ``get_batch(indices)`` when it has one (one batched render), else the
    default collate of its items."""
    if hasattr(dataset, "get_batch"):
        return dataset.get_batch(indices)
    from torch.utils.data import default_collate

    return default_collate([dataset[i] for i in indices])


def to_device(batch, device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


# ---------------------------------------------------------------------------------------------------------
# tasks


class TrainTask:
    """What the trainer needs from a model. Subclasses set ``self.modules`` (a dict of nn.Modules saved in
    checkpoints), ``self.optimizers`` (a dict of optimizers) and implement :meth:`compute_loss`."""

    grad_clip: float | None = None
    modules: dict
    optimizers: dict

    def compute_loss(self, batch: dict) -> tuple[torch.Tensor, dict]:
        raise NotImplementedError

    def batch_images(self, batch: dict) -> int:
        """How many images a batch holds (for images/s)."""
        return len(batch["image"])

    def parameters(self):
        for m in self.modules.values():
            yield from m.parameters()

    def training_step(self, batch: dict, trainer: "Trainer") -> dict:
        """Loss, finiteness check (before any update), backward, gradient-norm clipping, step."""
        loss, logs = self.compute_loss(batch)
        trainer.check_finite(loss, logs)
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip:
            logs["grad_norm"] = torch.nn.utils.clip_grad_norm_(list(self.parameters()), self.grad_clip).detach()
        for opt in self.optimizers.values():
            opt.step()
        return logs

    def buffers(self) -> list:
        """The modules' buffers (BatchNorm statistics): a forward pass changes them before the loss is known,
        so the trainer snapshots them to restore the last good state after a NaN/inf loss."""
        return [b for m in self.modules.values() for b in m.buffers()]

    def train(self, mode: bool = True) -> None:
        for m in self.modules.values():
            m.train(mode)

    def state_dict(self) -> dict:
        def plain(m):  # DDP-wrapped modules are saved without the wrapper's prefix
            return getattr(m, "module", m).state_dict()

        return {"modules": {k: plain(m) for k, m in self.modules.items()},
                "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()}}

    def load_state_dict(self, st: dict) -> None:
        for k, m in self.modules.items():
            getattr(m, "module", m).load_state_dict(st["modules"][k])
        for k, o in self.optimizers.items():
            o.load_state_dict(st["optimizers"][k])


# ---------------------------------------------------------------------------------------------------------
# starting a run (fresh or resumed): shared by every model's ``train_run``


def open_run(config: dict, out, device: str, seed: int, resume=None, model: str | None = None):
    """The first half of a run's setup: starts the process group (``torchrun``), loads the checkpoint when
    resuming (OUT/last.ckpt for ``resume=True``, else the path; its config and seed win over the given ones;
    with ``model`` it must be that model's) and seeds every RNG, so the model is built the same on every rank.
    Returns (config, seed, checkpoint or None, its path or None)."""
    out = Path(out)
    init_distributed(device)
    ck = path = None
    if resume:
        path = out / "last.ckpt" if resume is True else Path(resume)
        ck = load_checkpoint(path)
        if model is not None and ck["config"].get("model", "vae") != model:
            raise ValueError(f"{path}: a {ck['config'].get('model')!r} checkpoint, not a {model} one")
        config, seed = ck["config"], ck["seed"]
    seed_everything(seed)
    return config, seed, ck, path


def begin_run(trainer: "Trainer", ck: dict | None, path=None) -> None:
    """The second half, once the trainer exists: restores the checkpoint, or for a fresh run gives every rank
    > 0 its own noise (each rank draws from (seed, rank); the model was built identically before) and writes
    OUT/config.json (rank 0)."""
    if ck is not None:
        trainer.load(ck)
        if trainer.rank == 0:
            print(f"resumed from {path} at step {trainer.step}", file=sys.stderr)
        return
    if trainer.rank > 0:
        seed_everything(noise_seed(trainer.seed, 0, trainer.rank))
    if trainer.rank == 0:
        import json

        trainer.out.mkdir(parents=True, exist_ok=True)
        (trainer.out / "config.json").write_text(json.dumps(trainer.config, indent=2))


class ProgressMonitor(abc.ABC):
    """Base of the GANs' ``on_step`` callbacks (rank 0): a tqdm bar with the subclass's :meth:`postfix` and
    images/s (counted from the end of this process's first step), and every ``sample_every`` steps and at the
    last step the subclass's :meth:`sample_image` as OUT/samples/step_XXXXXX.png and OUT/samples.png."""

    desc = "train"

    def __init__(self, out, sample_every: int = 500, progress: bool = True, n_samples: int = 8):
        self.out, self.sample_every, self.progress = Path(out), int(sample_every), progress
        self.n_samples = n_samples
        self.bar, self.t0, self.n_img, self.z = None, None, 0, None

    def postfix(self, logs: dict) -> dict:
        """The bar's values (strings) for one step's logs."""
        return {}

    @abc.abstractmethod
    def sample_image(self, trainer):
        """A (3, H, W) picture in [0, 1] of the current model (fixed latents across the run)."""

    def __call__(self, trainer, logs: dict) -> None:
        if trainer.rank != 0:
            return
        if self.t0 is None:
            self.t0 = time.perf_counter()
            if self.progress:
                from tqdm.auto import tqdm

                self.bar = tqdm(total=trainer.steps, initial=trainer.step - 1, desc=self.desc, unit="step",
                                dynamic_ncols=True, file=sys.stderr)
        else:
            self.n_img += trainer.batch_size
        if self.bar is not None:
            self.bar.update(1)
            dt = max(time.perf_counter() - self.t0, 1e-9)
            self.bar.set_postfix({**self.postfix(logs), "img_s": f"{self.n_img / dt:.1f}"}, refresh=False)
        last = trainer.step == trainer.steps or trainer._stop_requested
        if (self.sample_every and trainer.step % self.sample_every == 0) or last:
            self.write_samples(trainer)
        if last:
            self.close()

    def write_samples(self, trainer) -> Path:
        from voxrender.io import save_png

        img = self.sample_image(trainer)
        path = save_png(img, self.out / "samples" / f"step_{trainer.step:06d}.png")
        save_png(img, self.out / "samples.png")
        return path

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


# ---------------------------------------------------------------------------------------------------------
# the loop


def summary_writer(log_dir):
    """A TensorBoard SummaryWriter on ``log_dir``; a clear error when the tensorboard package is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ImportError("--tensorboard: the tensorboard package is not installed (pip install tensorboard)") \
            from None
    return SummaryWriter(log_dir=str(log_dir))


class Trainer:
    """Runs a :class:`TrainTask` over a dataset up to ``steps`` optimizer steps.

    Args:
        task, dataset: the model task and a dataset (``get_batch(indices)`` or items + collate).
        out: folder of ``last.ckpt`` (and whatever the caller writes).
        steps: total number of steps (a resumed run continues up to it).
        batch_size: global batch size; seed: the run's seed (RNGs and data order).
        ckpt_every: checkpoint period in steps (0: only at the end / on interrupt / on NaN).
        config: a JSON-able dict stored in the checkpoint (what is needed to rebuild the task).
        device: where batches go. progress: show a tqdm bar (rank 0 only).
        on_step: optional callback ``on_step(trainer, logs)`` after every step (tests, logging).
        log_every: how often the bar's loss and images/s (and the TensorBoard scalars) are refreshed.
        tensorboard: a folder for TensorBoard event files (rank 0 writes every log as ``train/<name>``
            and images/s); needs the ``tensorboard`` package (``pip install tensorboard``).
        max_seconds: a wall-clock budget for this call of :meth:`fit` (a batch-system slot, a lease on a
            shared GPU): once it is spent, the step in progress finishes, a checkpoint is written and ``fit``
            returns ``"time_limit"``; ``--resume`` continues from there exactly. None: no limit.
    """

    def __init__(self, task: TrainTask, dataset, out, steps: int, batch_size: int, seed: int = 0,
                 ckpt_every: int = 500, config: dict | None = None, device: str = "cpu", progress: bool = True,
                 on_step=None, log_every: int = 1, desc: str = "train", tensorboard=None,
                 max_seconds: float | None = None):
        self.task, self.dataset, self.out = task, dataset, Path(out)
        self.steps, self.batch_size, self.seed = int(steps), int(batch_size), int(seed)
        self.ckpt_every, self.config, self.device = int(ckpt_every), dict(config or {}), device
        self.rank, self.world = dist_info()
        self.progress = progress and self.rank == 0
        self.on_step, self.log_every, self.desc = on_step, max(1, int(log_every)), desc
        self.tensorboard = tensorboard
        if max_seconds is not None and not max_seconds > 0:
            raise ValueError(f"max_seconds: expected a positive number of seconds or None, got {max_seconds}")
        self.max_seconds = max_seconds
        self.stream = BatchStream(len(dataset), batch_size, seed, rank=self.rank, world_size=self.world)
        self.step = 0
        self.history: list[dict] = []  # per-step float logs of this process's run
        self.last_logs: dict = {}
        self._stop_requested = False
        self._snapshot = None  # (rng, data position) at the start of the current step

    @property
    def ckpt_path(self) -> Path:
        return self.out / "last.ckpt"

    # -- checkpoints --------------------------------------------------------------------------------
    def state_dict(self, rng=None, data=None, rng_ranks=None) -> dict:
        """The checkpoint dict. ``rng`` is this process's RNG state (rank 0's in a run's checkpoint);
        ``rng_ranks``, with several processes, every rank's, in rank order."""
        rng = rng if rng is not None else rng_state()
        st = {"format": CKPT_FORMAT, "step": self.step, "config": self.config, "seed": self.seed,
              "task": self.task.state_dict(), "rng": rng,
              "data": data if data is not None else self.stream.state_dict(),
              "logs": {k: float(v) for k, v in self.last_logs.items()}, "time": time.time()}
        if rng_ranks is not None:
            st["rng_ranks"] = rng_ranks
        return st

    def save(self, path=None, rng=None, data=None, collective: bool = True) -> Path | None:
        """Writes the checkpoint atomically (rank 0 writes; returns its path, None on other ranks).

        With several processes every rank's RNG state goes in (``rng_ranks``), so a resumed run draws what
        each rank would have drawn: a collective, so every rank calls it. ``collective=False`` (an abort,
        where the other ranks may be anywhere) stores rank 0's alone and does not wait for the others."""
        rng = rng if rng is not None else rng_state()
        collective = collective and self.world > 1
        rng_ranks = gather_objects(rng) if collective else None
        written = atomic_save(self.state_dict(rng, data, rng_ranks), path or self.ckpt_path) if self.rank == 0 \
            else None
        if collective:  # when save returns, the file is there for every rank (a resume right after)
            torch.distributed.barrier()
        return written

    def load(self, ck: dict) -> None:
        """Restores task, data position, step and every RNG from a checkpoint dict.

        Each rank takes its own RNG state when the checkpoint has one per rank for this many processes;
        otherwise (a checkpoint of another world size, or of an abort) rank 0 takes the stored state and
        every other rank seeds its RNGs from (seed, step, rank): reproducible, but not the run that was
        interrupted."""
        self.task.load_state_dict(ck["task"])
        self.stream.load_state_dict(ck["data"])
        self.step = int(ck["step"])
        ranks = ck.get("rng_ranks")
        if ranks is not None and len(ranks) == self.world:
            set_rng_state(ranks[self.rank])
        elif self.rank == 0:
            set_rng_state(ck["rng"])
        else:
            seed_everything(noise_seed(self.seed, self.step, self.rank, stream=1))
        self.last_logs = dict(ck.get("logs", {}))

    def resume(self, path=None) -> int:
        """Loads ``path`` (default ``out/last.ckpt``); returns the step it continues from."""
        self.load(load_checkpoint(path or self.ckpt_path))
        return self.step

    # -- checks ---------------------------------------------------------------------------------------
    def check_finite(self, loss: torch.Tensor, logs: dict | None = None) -> None:
        """Raises :class:`NonFiniteLoss` when ``loss`` is NaN/inf (call it before any parameter update).
        With several processes it raises on every rank when the loss is bad on any (a collective)."""
        bad = not bool(torch.isfinite(loss.detach()).all())
        if any_rank(bad, loss.device) and not bad:
            raise NonFiniteLoss(f"loss is not finite on another process at step {self.step + 1}")
        if bad:
            parts = ", ".join(f"{k}={float(v):.4g}" for k, v in (logs or {}).items())
            raise NonFiniteLoss(f"loss is {float(loss.detach())} at step {self.step + 1}" + (f" ({parts})" if parts else ""))

    # -- loop -----------------------------------------------------------------------------------------
    @contextmanager
    def _signals(self):
        """First Ctrl-C (SIGINT) or SIGTERM (what batch systems and ``kill`` send before killing): finish the
        current step, checkpoint, stop. A second Ctrl-C interrupts at once; a second SIGTERM is the default
        one. A signal the process ignores (SIGINT of a ``nohup ... &`` job) stays ignored."""
        if not threading_main():
            yield
            return
        installed = {}

        def handler(signum, frame):
            if self._stop_requested:
                if signum == signal.SIGINT:
                    raise KeyboardInterrupt
                signal.signal(signum, signal.SIG_DFL)
                os.kill(os.getpid(), signum)
                return
            self._stop_requested = True
            if self.rank == 0:
                what = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
                again = "press again" if signum == signal.SIGINT else "send it again"
                print(f"\n{what}: stopping after this step and writing a checkpoint ({again} to abort at once)",
                      file=sys.stderr, flush=True)

        for sig, default in ((signal.SIGINT, signal.default_int_handler), (signal.SIGTERM, signal.SIG_DFL)):
            if signal.getsignal(sig) is default:
                installed[sig] = signal.signal(sig, handler)
        try:
            yield
        finally:
            for sig, old in installed.items():
                signal.signal(sig, old)

    def request_stop(self) -> None:
        self._stop_requested = True

    def fit(self) -> str:
        """Trains until ``steps``. Returns ``"done"``, ``"interrupted"`` (Ctrl-C or SIGTERM; checkpoint written),
        ``"time_limit"`` (``max_seconds`` spent; checkpoint written) or raises :class:`NonFiniteLoss` after
        writing the last good state."""
        bar = None
        writer = summary_writer(self.tensorboard) if self.tensorboard and self.rank == 0 else None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=self.steps, initial=self.step, desc=self.desc, unit="step", dynamic_ncols=True,
                       file=sys.stderr)
        self.task.train(True)
        status = "done"
        t0, n_img = time.perf_counter(), 0
        try:
            with self._signals():
                while self.step < self.steps:
                    self._snapshot = (rng_state(), self.stream.state_dict())
                    buffers = [(b, b.detach().clone()) for b in self.task.buffers()]
                    batch = to_device(fetch_batch(self.dataset, self.stream.next()), self.device)
                    try:
                        logs = self.task.training_step(batch, self)
                    except NonFiniteLoss as e:
                        # No update was applied: with the buffers restored the task is the last good state;
                        # the snapshot puts the data position and RNGs back to the start of the failing step.
                        with torch.no_grad():
                            for buf, old in buffers:
                                buf.copy_(old)
                        path = self.save(rng=self._snapshot[0], data=self._snapshot[1])
                        raise NonFiniteLoss(f"{e}. Training stopped; the last good state (step {self.step}) "
                                            f"is in {path}. Try a lower learning rate or check the data.") from None
                    self.step += 1
                    n_img += self.task.batch_images(batch) * self.world
                    logs = {k: float(v) for k, v in logs.items()}
                    self.last_logs = logs
                    self.history.append(logs)
                    refresh = self.step % self.log_every == 0 or self.step == self.steps
                    img_s = n_img / max(time.perf_counter() - t0, 1e-9)
                    if bar is not None:
                        bar.update(1)
                        if refresh:
                            bar.set_postfix(loss=f"{logs.get('loss', math.nan):.4g}", img_s=f"{img_s:.0f}",
                                            refresh=False)
                    if writer is not None and refresh:
                        for k, v in logs.items():
                            writer.add_scalar(f"train/{k}", v, self.step)
                        writer.add_scalar("train/images_per_s", img_s, self.step)
                    out_of_time = self.max_seconds is not None and time.perf_counter() - t0 >= self.max_seconds
                    # a Ctrl-C or a spent budget on one rank stops them all after the same step
                    self._stop_requested, out_of_time = any_rank_flags([self._stop_requested, out_of_time],
                                                                       self.device)
                    if self.ckpt_every and self.step % self.ckpt_every == 0 and self.step < self.steps:
                        self.save()
                    if self.on_step is not None:
                        self.on_step(self, logs)
                    if self._stop_requested or out_of_time:
                        status = "interrupted" if self._stop_requested else "time_limit"
                        break
        except KeyboardInterrupt:
            # A second Ctrl-C (or one outside the main thread) arrived mid-step: the update of this step may
            # not have happened; keep the model as it is and the snapshot of the step's start.
            status = "interrupted"
            if self._snapshot is not None:
                self.save(rng=self._snapshot[0], data=self._snapshot[1], collective=False)
            return status
        finally:
            if bar is not None:
                bar.close()
            if writer is not None:
                writer.close()
        self.save()
        return status


def threading_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
