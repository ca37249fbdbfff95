"""The model commands of the ``voxrender`` command line: ``demo``, ``train``, ``eval``, ``sample``.

Registered on the main parser by :func:`add_model_commands` (``voxrender.cli``). The heavy imports (the
models) happen inside the commands, so ``voxrender --help`` stays fast.
"""

from __future__ import annotations

import argparse
import copy
import shutil
import sys
import time
from pathlib import Path

BACKENDS = ["torch", "cpu", "cuda", "triton"]


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _fail(msg: str) -> "SystemExit":
    return SystemExit(f"voxrender: error: {msg}")


def make_dataset(data: dict, vae: dict, split: str = "train"):
    """The training data of a run: ``data["name"] == "synthetic"`` is the built-in voxel shapes; a real
    source (mnist, fashion, folder, celeba, modelnet) or a mixture (``data["sources"]``, ``data["weights"]``)
    comes from :mod:`voxrender.data.sources`. ``vae``: the model's settings (grid, image_size, channels)."""
    from voxrender.data.voxel_shapes import KINDS, VoxelShapes

    if data["name"] == "synthetic":
        return VoxelShapes(split, size=vae["grid"], image_size=vae["image_size"], length=data.get("length"),
                           seed=data.get("seed", 0), rgb=vae.get("channels", 1) == 3,
                           kinds=tuple(data.get("kinds") or KINDS), backend=vae.get("backend"))
    from voxrender.data.sources import build_dataset

    sources = data.get("sources") or [{"name": data["name"], "path": data.get("path")}]
    return build_dataset(sources, data.get("weights"), image_size=vae["image_size"], channels=vae.get("channels", 1),
                         split=split, seed=data.get("seed", 0), length=data.get("length"), grid=vae["grid"],
                         kinds=data.get("kinds"), categories=data.get("categories"),
                         modelnet_mode=data.get("modelnet_mode", "silhouette"),
                         modelnet_views=data.get("modelnet_views", 24), cache_dir=data.get("cache_dir"),
                         backend=vae.get("backend"))


def parse_data(specs: list[str] | None, weights: list[float] | None = None) -> dict:
    """``--data`` (repeatable) and ``--data-weights`` -> the run config's ``data`` dict (paths made absolute)."""
    import os

    from voxrender.data.sources import parse_source

    specs = specs or ["synthetic"]
    try:
        sources = [parse_source(s) for s in specs]
    except ValueError as e:
        raise _fail(str(e)) from None
    for src in sources:
        if src["path"]:
            src["path"] = str(Path(os.path.expandvars(os.path.expanduser(src["path"]))).absolute())
    if weights is not None and len(weights) != len(sources):
        raise _fail(f"--data-weights: {len(weights)} weights for {len(sources)} --data sources")
    if weights is not None and (any(w < 0 for w in weights) or not sum(weights) > 0):
        raise _fail(f"--data-weights: expected non-negative weights with a positive sum, got {weights}")
    if len(sources) == 1:
        return dict(sources[0])
    return {"name": "mixture", "path": None, "sources": sources, "weights": weights}


def train_run(config: dict, out, steps: int, device: str = "cpu", resume=None, ckpt_every: int = 500,
              progress: bool = True, on_step=None, seed: int = 0, desc: str = "train vae", tensorboard=None,
              max_seconds: float | None = None):
    """Builds (or resumes) a VAE or GAN run (``config["model"]``) from ``config`` and trains it up to
    ``steps`` (or for ``max_seconds``). Returns the Trainer and the fit status ("done" / "interrupted" /
    "time_limit"); a NaN/inf loss raises NonFiniteLoss after writing the last good state."""
    import torch

    from voxrender.training import Trainer, begin_run, open_run

    out = Path(out)
    config, seed, ck, path = open_run(config, out, device, seed, resume)
    model = config.get("model", "vae")
    if model == "gan":
        from voxrender.models.gan.train import build_task
    else:
        from voxrender.models.vae.train import build_task
    task = build_task(config, device)
    ds = make_dataset(config["data"], config[model])
    trainer = Trainer(task, ds, out, steps=steps, batch_size=config["batch_size"], seed=seed,
                      ckpt_every=ckpt_every, config=config, device=device, progress=progress, on_step=on_step,
                      desc=desc, tensorboard=tensorboard, max_seconds=max_seconds)
    begin_run(trainer, ck, path)
    torch.set_grad_enabled(True)
    status = trainer.fit()
    return trainer, status


def _steps_from(args, config: dict, n_items: int, batch: int) -> int:
    if args.steps is not None:
        return args.steps
    return max(1, args.epochs * (n_items // batch))


def _gan_config(args, data: dict) -> dict:
    """The run config of ``voxrender train gan`` (published defaults unless an option says otherwise)."""
    from voxrender.models.gan.model import GANConfig

    if args.rgb or args.texture:
        raise ValueError("train gan: --rgb and --texture are VAE options (the voxel GAN renders grey "
                         "absorption images)")
    grid = args.grid or 32
    cfg = GANConfig.for_grid(grid, image_size=args.image_size or grid, z_dim=args.z_dim or 200, width=args.width,
                             view=args.view, fm_weight=args.fm_weight, d_acc_max=args.d_acc_max,
                             backend=args.backend)
    return {"model": "gan", "gan": cfg.to_dict(), "lr_g": 2.5e-3 if args.lr is None else args.lr,
            "lr_d": args.lr_d, "beta1": args.beta1, "batch_size": args.batch_size, "data": data}


DEFAULT_BATCH = {"vae": 64, "gan": 64, "stylegan2": 16}  # the papers' / the StyleGAN2 port's batch sizes


def cmd_train(args) -> int:
    import torch

    from voxrender.models.vae.model import VAEConfig
    from voxrender.training import NonFiniteLoss

    if args.batch_size is None:  # the published batch of each model
        args.batch_size = DEFAULT_BATCH[args.model]
    if args.model == "stylegan2":  # its own data sources, config and files: models/stylegan2/train.py
        from voxrender.models.stylegan2.train import cmd_train as cmd_train_stylegan2

        return cmd_train_stylegan2(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device or _default_device()
    data = parse_data(args.data, args.data_weights)
    data.update(length=args.dataset_size, seed=args.data_seed, kinds=args.kinds)
    if data["name"] != "synthetic":
        data.update(categories=args.categories, modelnet_mode=args.modelnet_mode, modelnet_views=args.modelnet_views,
                    cache_dir=str(Path(args.cache_dir).expanduser().absolute()) if args.cache_dir else None)
    out = args.out or f"runs/{args.model}"
    monitor = None
    try:
        if args.model == "gan":
            config = _gan_config(args, data)
        else:
            cfg = VAEConfig.for_grid(args.grid or 28, image_size=args.image_size or args.grid or 28,
                                     channels=3 if args.rgb else 1, z_dim=args.z_dim or 19, pose=args.pose,
                                     texture=args.texture, adversarial=args.adversarial, adv_width=args.adv_width,
                                     backend=args.backend)
            config = {"model": "vae", "vae": cfg.to_dict(), "lr": 1e-3 if args.lr is None else args.lr,
                      "grad_clip": args.grad_clip, "batch_size": args.batch_size, "data": data}
    except ValueError as e:
        raise _fail(str(e)) from None
    ds_len = args.dataset_size or 60000
    if data["name"] != "synthetic" and args.steps is None and not args.resume:
        try:  # epochs of a real dataset: its size (this also reports missing files before anything starts)
            ds_len = len(make_dataset(data, config[args.model]))
        except (FileNotFoundError, ValueError) as e:
            raise _fail(str(e)) from None
    steps = _steps_from(args, config, ds_len, args.batch_size)
    if args.resume:  # the checkpoint's settings win; its model must be the one asked for
        from voxrender.training import load_checkpoint

        ck_path = Path(out) / "last.ckpt" if args.resume is True else Path(args.resume)
        try:
            ck_model = load_checkpoint(ck_path)["config"].get("model", "vae")
        except (FileNotFoundError, ValueError) as e:
            raise _fail(str(e)) from None
        if ck_model != args.model:
            raise _fail(f"--resume {ck_path}: a {ck_model!r} checkpoint, not {args.model!r} (use train {ck_model})")
    if args.model == "gan":
        from voxrender.models.gan.train import GANMonitor

        monitor = GANMonitor(out, sample_every=args.sample_every, progress=not args.no_progress)
    try:
        trainer, status = train_run(config, out, steps, device=device, resume=args.resume,
                                    ckpt_every=args.ckpt_every, seed=args.seed, on_step=monitor,
                                    progress=not args.no_progress and monitor is None, tensorboard=args.tensorboard,
                                    max_seconds=max_seconds(args))
    except NonFiniteLoss as e:
        print(f"voxrender train: {e}", file=sys.stderr)
        return 3
    except (FileNotFoundError, ValueError, ImportError) as e:
        raise _fail(str(e)) from None
    finally:
        if monitor is not None:
            monitor.close()
    if trainer.rank == 0:
        print(end_message(trainer, status))
    return 130 if status == "interrupted" else 0


def max_seconds(args) -> float | None:
    """``--max-minutes`` in seconds (None: no limit); a clear error for a non-positive value."""
    if args.max_minutes is None:
        return None
    if not args.max_minutes > 0:
        raise _fail(f"--max-minutes: expected a positive number of minutes, got {args.max_minutes}")
    return 60.0 * args.max_minutes


def end_message(trainer, status: str, files: str = "") -> str:
    """What ``train`` prints at the end: how it stopped, the last losses and the files."""
    logs = ", ".join(f"{k} {v:.4g}" for k, v in trainer.last_logs.items())
    word = {"interrupted": "stopped (Ctrl-C / SIGTERM)",
            "time_limit": "stopped at the --max-minutes limit"}.get(status, "finished")
    return (f"{word} at step {trainer.step}/{trainer.steps}: {logs}\ncheckpoint: {trainer.ckpt_path}{files}"
            + ("  (continue with --resume)" if status in ("interrupted", "time_limit") else ""))


def cmd_eval(args) -> int:
    import torch

    from voxrender.models.vae.eval import evaluate_checkpoint, summary_table

    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device or _default_device()
    from voxrender.training import load_checkpoint

    try:
        kind = load_checkpoint(args.checkpoint)["config"].get("model")
        if kind == "gan":
            from voxrender.models.gan.eval import evaluate_checkpoint as evaluate_gan

            m = evaluate_gan(args.checkpoint, args.out, n=args.n, device=device, backend=args.backend,
                             pictures=not args.no_pictures, pool=args.pool, refine_steps=args.refine_steps)
        else:
            m = evaluate_checkpoint(args.checkpoint, args.out, n=args.n, device=device, backend=args.backend,
                                    pictures=not args.no_pictures)
    except (FileNotFoundError, ValueError) as e:
        raise _fail(str(e)) from None
    print(summary_table(m))
    if kind == "gan":
        smp = m["samples"]
        print(f"GAN shapes found by inversion (nearest of {m['inversion']['pool']} samples x 8 views, then "
              f"{m['inversion']['refine_steps']} refinement steps). Free samples: mean occupancy "
              f"{smp['mean_occupancy']:.4f} (> 0.5), {smp['mean_occupancy_soft']:.4f} (soft); ground truth "
              f"{smp['mean_occupancy_gt']:.4f}")
    print(f"wrote {args.out}/metrics.json, voxels_pred.npy, voxels_gt.npy, azimuth_pred.npy, azimuth_gt.npy"
          + ("" if args.no_pictures else ", reconstructions.png, turntable.gif"))
    return 0


def cmd_demo(args) -> int:
    import torch

    from voxrender.models.vae.demo import DEMO
    from voxrender.models.vae.eval import evaluate, summary_table
    from voxrender.models.vae.train import load_model
    from voxrender.training import NonFiniteLoss, load_checkpoint

    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device or _default_device()
    config = copy.deepcopy(DEMO)
    steps = args.steps if args.steps is not None else config.pop("steps")
    config.pop("steps", None)
    eval_n = args.eval_n if args.eval_n is not None else config.pop("eval_n")
    config.pop("eval_n", None)
    config["model"] = "vae"
    config["vae"]["backend"] = args.backend
    out = Path(args.out)
    t0 = time.perf_counter()
    print(f"voxrender demo: training the voxel VAE on built-in procedural shapes for {steps} steps "
          f"(batch {config['batch_size']}, {config['vae']['grid']}^3 grid, {config['vae']['image_size']} px) "
          f"on {device}", flush=True)
    try:
        trainer, status = train_run(config, out, steps, device=device, ckpt_every=0, progress=not args.no_progress,
                                    seed=args.seed, desc="demo: train vae")
    except NonFiniteLoss as e:
        print(f"voxrender demo: {e}", file=sys.stderr)
        return 3
    t_train = time.perf_counter() - t0
    if status == "interrupted":
        print(f"stopped at step {trainer.step}; checkpoint {trainer.ckpt_path}")
        return 130
    print(f"trained in {t_train:.0f} s; evaluating on {eval_n} held-out shapes ...", flush=True)
    model = load_model(load_checkpoint(trainer.ckpt_path), device)
    m = evaluate(model, config, out / "eval", n=eval_n, device=device, backend=args.backend,
                 extra={"checkpoint": str(trainer.ckpt_path), "step": trainer.step, "train_seconds": t_train})
    for name in ("reconstructions.png", "turntable.gif", "metrics.json"):
        shutil.copyfile(out / "eval" / name, out / name)
    shutil.copyfile(out / "eval" / "voxels_pred.npy", out / "voxels.npy")
    total = time.perf_counter() - t0
    fixed = m["baselines"]["fixed_shape"]["iou@best"]
    gain = m["model"]["iou@best"] - fixed
    print()
    print(summary_table(m))
    print()
    print(f"aligned IoU (best threshold) {m['model']['iou@best']:.3f} vs best fixed shape {fixed:.3f}: "
          f"{gain:+.3f}; mean occupancy {m['model']['mean_occupancy']:.3f} (ground truth "
          f"{m['model']['mean_occupancy_gt']:.3f}); total {total:.0f} s")
    print(f"pictures: {out / 'reconstructions.png'} (rows: input, reconstruction, 3 novel views, ground truth "
          f"from the same views), {out / 'turntable.gif'} (learned shapes above, ground truth below)")
    print(f"voxels: {out / 'voxels.npy'}; metrics: {out / 'metrics.json'}; evaluation files: {out / 'eval'}; "
          f"checkpoint: {trainer.ckpt_path}")
    return 0


def cmd_sample(args) -> int:
    import torch

    from voxrender.models.vae.sample import sample
    from voxrender.models.vae.train import load_model
    from voxrender.training import load_checkpoint

    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device or _default_device()
    if args.n < 1:
        raise _fail(f"--n must be positive, got {args.n}")
    try:
        ck = load_checkpoint(args.checkpoint)
    except (FileNotFoundError, ValueError) as e:
        raise _fail(str(e)) from None
    kind = ck["config"].get("model")
    if kind not in ("vae", "gan"):
        raise _fail(f"{args.checkpoint}: a {kind!r} checkpoint; sample handles the VAE and the GAN")
    if args.export_mesh:
        from voxrender.export import MISSING

        try:
            import skimage.measure  # noqa: F401
        except ImportError:
            raise _fail(MISSING) from None
    config = dict(ck["config"])
    config[kind] = dict(config[kind], backend=args.backend)
    if kind == "gan":
        from voxrender.models.gan.sample import sample as gan_sample
        from voxrender.models.gan.train import load_model as gan_load_model

        model = gan_load_model({**ck, "config": config}, device)
        files = gan_sample(model, args.n, args.out, seed=args.seed, turntable=args.turntable,
                           export_mesh=args.export_mesh, threshold=args.threshold, device=device)
    else:
        model = load_model({**ck, "config": config}, device)
        from voxrender.models.vae.sample import latent_stats

        stats = latent_stats(model, make_dataset(config["data"], config["vae"]), device=device)
        files = sample(model, args.n, args.out, seed=args.seed, turntable=args.turntable,
                       export_mesh=args.export_mesh, threshold=args.threshold, device=device, latent_stats=stats)
    if args.export_mesh:
        import numpy as np

        occ = np.load(files["voxels"])
        empty = [i for i in range(len(occ)) if not (occ[i] > args.threshold).any()]
        if empty:
            print(f"note: {len(empty)} of {len(occ)} meshes are empty at --threshold {args.threshold} (largest "
                  f"occupancy {float(occ.max()):.2f}); a lower --threshold (e.g. the best_threshold of "
                  f"`voxrender eval`) gives surfaces", file=sys.stderr)
    for k, v in files.items():
        if k == "meshes":
            print(f"wrote {len(v)} meshes: {v[0]} ... {v[-1]}")
        else:
            print(f"wrote {v}")
    return 0


def _common(p: argparse.ArgumentParser, threads: bool = True) -> None:
    p.add_argument("--device", default=None, help="torch device, e.g. cpu, cuda, cuda:1 (default: cuda if "
                                                  "available, else cpu)")
    p.add_argument("--backend", default=None, choices=BACKENDS,
                   help="force the project_volume backend (default: automatic, see `voxrender info`)")
    if threads:
        p.add_argument("--threads", type=int, default=None,
                       help="torch intra-op CPU threads (default: torch's choice; 1 can be faster on a busy machine)")


def add_model_commands(sub) -> None:
    """Adds ``demo``, ``train``, ``eval`` and ``sample`` to the ``voxrender`` subcommand parsers."""
    fmt = argparse.ArgumentDefaultsHelpFormatter
    # -- demo -------------------------------------------------------------------------------------------
    demo = sub.add_parser(
        "demo", formatter_class=fmt,
        help="train the voxel VAE on built-in shapes (minutes on a CPU), evaluate it, write pictures and metrics",
        description="Trains the voxel VAE (mu-VAE objective, pose as a latent variable learned through "
                    "project_volume) on the built-in procedural voxel shapes with settings that finish in a few "
                    "minutes on a 2-core CPU, evaluates it on held-out shapes (aligned voxel IoU, novel-view "
                    "silhouette IoU, azimuth error, fixed-shape and one-view visual-hull baselines), and writes "
                    "OUT/reconstructions.png, OUT/turntable.gif, OUT/voxels.npy, OUT/metrics.json, OUT/eval/ and "
                    "OUT/last.ckpt.")
    demo.add_argument("--out", default="voxrender-demo", help="output folder")
    demo.add_argument("--seed", type=int, default=0, help="random seed of the run")
    demo.add_argument("--steps", type=int, default=None,
                      help="training steps (default: the demo's setting; small values make a quick smoke run)")
    demo.add_argument("--eval-n", type=int, default=None, help="held-out shapes to evaluate (default 256)")
    demo.add_argument("--no-progress", action="store_true", help="no progress bar")
    _common(demo)
    demo.set_defaults(fn=cmd_demo)
    # -- train ------------------------------------------------------------------------------------------
    tr = sub.add_parser(
        "train", formatter_class=fmt, help="train a model (vae, gan, stylegan2) with checkpoints, resume and progress bars",
        description="Trains a bundled model. Progress bar with loss and images/s; OUT/last.ckpt is written "
                    "atomically every --ckpt-every steps, at the end and on Ctrl-C; --resume continues "
                    "bit-for-bit (same losses as an uninterrupted run); a NaN/inf loss stops the run with a "
                    "message and keeps the last good state. Several processes: torchrun --nproc_per_node N -m "
                    "voxrender train ... (gloo on CPU, NCCL on GPUs; --batch-size is the global batch).")
    tr.add_argument("model", choices=["vae", "gan", "stylegan2"],
                    help="vae: the mu-VAE voxel model (encoder, voxel decoder, pose through the renderer); gan: the "
                         "PrGAN-style voxel GAN (3D generator, renderings, 2D discriminator with feature matching); "
                         "stylegan2: a 2D StyleGAN2 on RGB images (writes OUT/stylegan2.pt in the format of "
                         "rosinality's PyTorch port, and OUT/samples.png)")
    tr.add_argument("--data", action="append", default=None, metavar="SOURCE",
                    help="training data, repeatable (several make a mixture): synthetic (built-in procedural voxel "
                         "shapes; the default), mnist:DIR or fashion:DIR (the IDX files train-images-idx3-ubyte[.gz] "
                         "and train-labels-idx1-ubyte[.gz] in DIR), folder:DIR (every PNG/JPG/... image under DIR, "
                         "centre square resized), celeba:DIR (img_align_celeba, centre 108 px crop), modelnet:DIR "
                         "(ModelNet40 DIR/<category>/train/*.off rendered by the rasterizer from random azimuths); "
                         "stylegan2: one source, synthetic-faces (built-in procedural faces; its default) or one of "
                         "the real sources above as RGB. "
                         "Nothing is downloaded: a missing dataset says what to get and where to put it")
    tr.add_argument("--data-weights", type=float, nargs="+", default=None, metavar="W",
                    help="mixture weights, one per --data (default: the paper's mixture, 1/4 mnist, 1/4 fashion, "
                         "1/2 shared by the other sources)")
    tr.add_argument("--categories", nargs="+", default=None,
                    help="modelnet: categories (default the paper's six: chair car cup bowl person airplane)")
    tr.add_argument("--modelnet-mode", default="silhouette", choices=["silhouette", "shaded"],
                    help="modelnet: render silhouettes (white on black, like the voxel models) or Lambertian shading")
    tr.add_argument("--modelnet-views", type=int, default=24,
                    help="modelnet: renderings per mesh (random azimuth offset per mesh, then every 360/N degrees; "
                         "rendered once and cached), 0: a fresh random azimuth per item, rendered on the fly")
    tr.add_argument("--cache-dir", default=None,
                    help="modelnet: keep the renderings in this folder between runs (default: in memory only)")
    tr.add_argument("--out", default=None, help="run folder (last.ckpt, config.json; default runs/MODEL)")
    tr.add_argument("--steps", type=int, default=None, help="total optimizer steps (overrides --epochs)")
    tr.add_argument("--tensorboard", default=None, metavar="DIR",
                    help="also write the step logs (losses, images/s) as TensorBoard event files into DIR "
                         "(needs: pip install tensorboard; view with: tensorboard --logdir DIR)")
    tr.add_argument("--epochs", type=int, default=15, help="epochs over the training set (vae, published: 15)")
    tr.add_argument("--batch-size", type=int, default=None,
                    help="global batch size (default: the published one, 64 for vae and gan, 16 for stylegan2)")
    tr.add_argument("--lr", type=float, default=None,
                    help="Adam learning rate (vae, published: 1e-3); gan: the generator's (published: 2.5e-3); "
                         "stylegan2: both networks' (the port: 0.002)")
    tr.add_argument("--grad-clip", type=float, default=1.0, help="vae: gradient-norm clip, 0 for none (published: 1.0)")
    tr.add_argument("--seed", type=int, default=0, help="seed of the run (weights, sampling, data order)")
    tr.add_argument("--resume", nargs="?", const=True, default=None, metavar="CKPT",
                    help="continue from OUT/last.ckpt (or CKPT) up to --steps/--epochs; the model settings "
                         "come from the checkpoint")
    tr.add_argument("--ckpt-every", type=int, default=500, help="checkpoint period in steps (0: only at the end)")
    tr.add_argument("--max-minutes", type=float, default=None, metavar="M",
                    help="stop after M minutes of training (a batch-job slot, a lease on a shared GPU): the step "
                         "in progress finishes and a checkpoint is written; --resume continues it exactly")
    tr.add_argument("--grid", type=int, default=None,
                    help="voxel grid size G of the G^3 decoder / generator output (vae: 28 (default), 32, 64; "
                         "gan: 32 (default) or 64)")
    tr.add_argument("--image-size", type=int, default=None, help="image size (default: the grid size)")
    tr.add_argument("--rgb", action="store_true", help="colour images, emission-absorption rendering")
    tr.add_argument("--pose", default="encoder", choices=["encoder", "uniform"],
                    help="encoder: azimuth predicted from the image as a latent variable; uniform: azimuth "
                         "drawn from U(0, 2 pi)")
    tr.add_argument("--texture", action="store_true", help="add the texture head (MLP on the rendering, second loss)")
    tr.add_argument("--adversarial", type=float, default=0.0, metavar="W",
                    help="vae: weight of the novel-view adversarial term (0: the published objective; the demo "
                         "uses 1): renderings of the reconstructions from random azimuths are judged against "
                         "the training images by a small image discriminator, which keeps the encoder-pose model "
                         "from drawing flat billboards (grey, or RGB with --rgb)")
    tr.add_argument("--adv-width", type=float, default=0.125,
                    help="vae --adversarial: channel multiplier of the discriminator (1 = the voxel GAN's 256-512-1024)")
    tr.add_argument("--z-dim", type=int, default=None,
                    help="shape latents (vae, published: 19, plus 1 pose latent; gan: 200, z ~ U(-1, 1))")
    gan = tr.add_argument_group("gan options")
    gan.add_argument("--lr-d", type=float, default=1e-4, help="gan: the discriminator's Adam learning rate")
    gan.add_argument("--beta1", type=float, default=0.5, help="gan: Adam beta1 of both optimizers")
    gan.add_argument("--width", type=float, default=1.0,
                     help="gan: channel multiplier of generator and discriminator (1: published 256-128-64 / "
                          "256-512-1024; 0.125 or 0.25 for CPU-size runs)")
    gan.add_argument("--view", default="discrete", choices=["discrete", "continuous"],
                     help="gan: views of the fakes: discrete = one of 8 azimuths k * 45 degrees (PrGAN), "
                          "continuous = azimuth uniform in [0, 360)")
    gan.add_argument("--fm-weight", type=float, default=1.0,
                     help="gan: weight of feature matching (batch mean and variance of D's last conv features)")
    gan.add_argument("--d-acc-max", type=float, default=0.8,
                     help="gan: the discriminator is updated only while its batch accuracy is <= this")
    gan.add_argument("--sample-every", type=int, default=500,
                     help="gan: write OUT/samples/step_N.png (8 fixed latents x 8 views) every N steps, 0: only "
                          "at the end; stylegan2: OUT/samples.png and OUT/samples/step_N.png (g_ema on 16 fixed z)")
    sg = tr.add_argument_group(
        "stylegan2 options", "StyleGAN2 as in rosinality's stylegan2-pytorch train.py (non-saturating logistic loss, "
        "lazy R1, optional path-length regularisation, style mixing, EMA generator, Adam betas (0, 0.99) with the "
        "lazy-regularisation corrections; --lr default 0.002). Also uses --data, --steps/--epochs, --batch-size, "
        "--seed, --resume, --out, --ckpt-every, --max-minutes, --sample-every, --dataset-size, --device, --threads. "
        "OUT/stylegan2.pt (keys g_ema, d, g, latent_avg) is written with every checkpoint; load it with "
        "voxrender.models.stylegan2.load_checkpoint")
    sg.add_argument("--image-cache", default="auto", choices=["auto", "on", "off"],
                    help="stylegan2: render / decode every training image once and keep them in memory as uint8 "
                         "(on), stream them (off), or keep them when they take at most 2 GiB (auto; the 10000 "
                         "synthetic faces take 123 MB at 64 px). A GPU run needs it: the synthetic faces render at "
                         "about 240 images/s per CPU core")
    sg.add_argument("--size", type=int, default=64, help="stylegan2: image size, a power of two from 8 to 1024")
    sg.add_argument("--channel-multiplier", type=int, default=2,
                    help="stylegan2: the port's channel multiplier (2 = config-f; 1 = half the channels from 64 px up)")
    sg.add_argument("--channels-max", type=int, default=None,
                    help="stylegan2: cap every layer's channels at this (e.g. 32 or 64 for a small model that trains "
                         "on a CPU; default: the port's table, 512 up to 32 px)")
    sg.add_argument("--style-dim", type=int, default=512, help="stylegan2: size of z and w (the port: 512)")
    sg.add_argument("--n-mlp", type=int, default=8, help="stylegan2: layers of the mapping network (the port: 8)")
    sg.add_argument("--r1", type=float, default=None,
                    help="stylegan2: R1 weight gamma (0: off; default StyleGAN2-ADA's 0.0002 * size^2 / batch, "
                         "e.g. 0.05 at 64 px and batch 16; the port's default is 10)")
    sg.add_argument("--d-reg-every", type=int, default=16, help="stylegan2: R1 every N steps (lazy regularisation)")
    sg.add_argument("--path-reg", type=float, default=0.0,
                    help="stylegan2: path-length regularisation weight (0: off; the port uses 2)")
    sg.add_argument("--g-reg-every", type=int, default=4, help="stylegan2: path-length term every N steps")
    sg.add_argument("--mixing", type=float, default=0.9, help="stylegan2: probability of style mixing per batch")
    sg.add_argument("--ema-kimg", type=float, default=10.0,
                    help="stylegan2: half-life of the EMA generator g_ema in thousands of images (the port: 10)")
    sg.add_argument("--ema-rampup", type=float, default=0.05,
                    help="stylegan2: limit the EMA half-life to this fraction of the images seen so far "
                         "(StyleGAN2-ADA; 0: off, as in the port)")
    sg.add_argument("--ema-beta", type=float, default=None,
                    help="stylegan2: a fixed EMA decay per step instead of --ema-kimg/--ema-rampup")
    sg.add_argument("--amp", default="off", choices=["off", "bf16", "fp16"],
                    help="stylegan2: mixed precision for the adversarial passes, CUDA only (ignored on the CPU)")
    tr.add_argument("--dataset-size", type=int, default=None, help="items in the synthetic training set (60000)")
    tr.add_argument("--data-seed", type=int, default=0, help="seed of the synthetic dataset")
    tr.add_argument("--kinds", nargs="+", default=None,
                    help="synthetic shape kinds (box ellipsoid torus cylinder glyph union; default all)")
    tr.add_argument("--no-progress", action="store_true", help="no progress bar")
    _common(tr)
    tr.set_defaults(fn=cmd_train)
    # -- eval -------------------------------------------------------------------------------------------
    ev = sub.add_parser(
        "eval", formatter_class=fmt, help="evaluate a VAE or GAN checkpoint on held-out built-in shapes",
        description="A VAE reconstructs each held-out image with its encoder; a GAN's shape for an image is "
                    "found by inversion (the nearest rendering among --pool generated shapes x 8 views, then "
                    "--refine-steps of Adam on the latent and the azimuth). Voxel IoU against the ground truth "
                    "after the best of 36 azimuth offsets and a mirror "
                    "flip (threshold 0.5 and the best swept threshold), novel-view silhouette IoU, azimuth error "
                    "after one global offset; baselines: the best single fixed shape (mean ground-truth voxels) "
                    "and the visual hull of one view. Writes OUT/metrics.json, voxels_pred.npy, voxels_gt.npy "
                    "(N, D, H, W in [0, 1], project_volume's frame), azimuth_pred.npy, azimuth_gt.npy (radians), "
                    "reconstructions.png and turntable.gif.")
    ev.add_argument("checkpoint", help="a checkpoint written by `voxrender train` or `demo` (last.ckpt)")
    ev.add_argument("--out", required=True, help="output folder")
    ev.add_argument("--n", type=int, default=256, help="held-out shapes")
    ev.add_argument("--no-pictures", action="store_true", help="metrics and arrays only")
    ev.add_argument("--pool", type=int, default=1024,
                    help="gan: generated shapes (x 8 views) searched for the nearest rendering of each held-out image")
    ev.add_argument("--refine-steps", type=int, default=50,
                    help="gan: Adam steps on the latent and the azimuth after the search (0: search only)")
    _common(ev)
    ev.set_defaults(fn=cmd_eval)
    # -- sample -----------------------------------------------------------------------------------------
    sa = sub.add_parser(
        "sample", formatter_class=fmt, help="new shapes from a trained VAE or GAN: pictures, turntable, voxels, meshes",
        description="Decodes N shape latents of a VAE checkpoint (drawn from a diagonal Gaussian fitted to the "
                    "encoder's latents of 512 training images), or generates N shapes of a GAN checkpoint "
                    "(z ~ U(-1, 1), plus OUT/views.png: each shape from the 8 training views), and writes "
                    "OUT/samples.png, "
                    "OUT/voxels.npy (N, G, G, G occupancy in [0, 1]), with --turntable OUT/turntable.gif, "
                    "with --export-mesh OUT/sample_XX.obj (marching cubes; needs scikit-image).")
    sa.add_argument("checkpoint", help="a checkpoint written by `voxrender train` or `demo` (last.ckpt)")
    sa.add_argument("--out", required=True, help="output folder")
    sa.add_argument("--n", type=int, default=16, help="number of shapes")
    sa.add_argument("--seed", type=int, default=0, help="seed of the latent samples")
    sa.add_argument("--turntable", action="store_true", help="also write a turntable GIF")
    sa.add_argument("--export-mesh", action="store_true", help="also write one .obj mesh per shape")
    sa.add_argument("--threshold", type=float, default=0.5, help="occupancy iso-level of the meshes")
    _common(sa)
    sa.set_defaults(fn=cmd_sample)
