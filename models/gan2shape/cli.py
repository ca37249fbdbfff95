"""The ``voxrender gan2shape``, ``eval-gan2shape`` and ``pretrain-gan2shape`` commands (registered on the main
parser by :func:`add_gan2shape_commands`). Heavy imports happen inside the commands, so ``voxrender --help`` stays fast."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from .prior import PRIOR_BOX_NAMES, box_category

PRESET_NAMES = ["synface", "celeba", "cat", "car", "church", "tiny"]


def _fail(cmd: str, msg: str) -> SystemExit:
    return SystemExit(f"voxrender {cmd}: error: {msg}")


def _device(cmd: str, name: str | None) -> str:
    import torch

    if name is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise _fail(cmd, f"--device: {e}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise _fail(cmd, f"--device {name}: CUDA is not available here")
    return name


def _setup(cmd: str, args, pretraining: bool = False):
    """(config, G, D, perceptual, stats, device, init) from the shared options, with clear errors; ``init``: the
    ``--pretrained`` networks or None. ``pretraining``: the preset's joint-pretraining schedule."""
    import torch

    from .model import GAN2ShapeConfig, ViewLightStats, check_pretrained
    from .pipeline import load_gan, load_pretrained, make_perceptual

    if args.steps_scale is not None and not args.steps_scale > 0:
        raise _fail(cmd, f"--steps-scale: expected a positive number, got {args.steps_scale}")
    for name, v, ok, want in (("--refine-steps", args.refine_steps, lambda v: v >= 0, ">= 0"),
                              ("--refine-lr", args.refine_lr, lambda v: v > 0, "> 0"),
                              ("--collect-iters", args.collect_iters, lambda v: v >= 1, ">= 1"),
                              ("--view-supervision", args.view_supervision, lambda v: v >= 0, ">= 0")):
        if v is not None and not ok(v):
            raise _fail(cmd, f"{name}: expected {want}, got {v}")
    if args.threads is not None:
        torch.set_num_threads(max(1, args.threads))
    device = _device(cmd, args.device)
    try:
        config = GAN2ShapeConfig.from_preset(args.preset, image_size=args.image_size, prior_near=args.prior_near,
                                             prior_far=args.prior_far, depth_anchor=args.depth_anchor,
                                             tilt_anchor=args.tilt_anchor, anchor_frame=args.anchor_frame)
        if args.prior_box is not None:  # "plain" is category None, which from_preset reads as "the preset's"
            config = dataclasses.replace(config, category=box_category(args.prior_box))
            config.validate()
        if pretraining:
            config = config.for_pretraining()
        if getattr(args, "nets_only", False):
            if args.pretrained is None:
                raise ValueError("--nets-only: needs --pretrained (the networks to score alone)")
            config = dataclasses.replace(config, num_stages=0)
        if args.steps_scale is not None and args.steps_scale != 1:
            config = config.scaled(args.steps_scale)
        extra = {k: v for k, v in (("refine_steps", args.refine_steps), ("refine_lr", args.refine_lr),
                                   ("collect_iters", args.collect_iters),
                                   ("view_supervision", args.view_supervision)) if v is not None}
        if extra:
            config = dataclasses.replace(config, **extra).validate()
        G, D = load_gan(args.gan, device)
        perceptual = make_perceptual(args.vgg)
        stats = None
        if (args.view_mvn is None) != (args.light_mvn is None):
            raise ValueError("--view-mvn and --light-mvn go together")
        if args.view_mvn is not None:
            stats = ViewLightStats.from_files(args.view_mvn, args.light_mvn)
        init = None
        if getattr(args, "pretrained", None) is not None:
            init = load_pretrained(args.pretrained)
            try:
                check_pretrained(init, config, G.style_dim)
            except ValueError as e:
                raise ValueError(f"--pretrained {args.pretrained}: {e}") from None
    except (FileNotFoundError, ValueError, OSError) as e:
        raise _fail(cmd, str(e)) from None
    return config, G, D, perceptual, stats, device, init


def cmd_gan2shape(args) -> int:
    import torch

    from .invert import invert, resize
    from .pipeline import generate, load_own_image, run_images, run_key, sample_latents
    from .records import ImageRecords, RecordMismatch, digest

    cmd = "gan2shape"
    if args.samples is not None and args.samples < 1:
        raise _fail(cmd, f"--samples: expected at least 1, got {args.samples}")
    config, G, D, perceptual, stats, device, init = _setup(cmd, args)
    out = Path(args.out)
    log = print
    torch.manual_seed(args.seed)
    records = ImageRecords(out, run_key(G, D, config, perceptual, stats, init), args.resume)

    def finished(name, key):  # (result, extra) of an image an earlier run finished, or None
        try:
            return records.load(name, key)
        except RecordMismatch as e:
            raise _fail(cmd, str(e)) from None

    done = []
    if args.image:
        imgs, ws, gan_ims, names, extra, keys = [], [], [], [], [], []
        for k, path in enumerate(args.image):
            try:
                img = load_own_image(path, G.size)
            except (FileNotFoundError, ValueError) as e:
                raise _fail(cmd, str(e)) from None
            name = f"{k:03d}_{Path(path).stem}"
            key = {"seed": args.seed + k, "image": digest(img), "invert": [args.invert_steps, args.invert_lr]}
            rec = finished(name, key)
            done.append(None if rec is None else rec[0])
            if rec is not None:  # its latent is in the record
                res, info = rec
                w, gan_im = res.w.to(device), res.gan_image.to(device)
            else:
                inv = invert(G, img.to(device), args.invert_steps, D=D, lr=args.invert_lr,
                             progress=not args.no_progress, desc=f"[{k + 1}/{len(args.image)}] invert")
                log(f"{path}: inverted into W in {args.invert_steps} steps (loss "
                    f"{inv.losses[0] if inv.losses else float('nan'):.4f} -> "
                    f"{inv.losses[-1] if inv.losses else float('nan'):.4f})")
                w, gan_im = inv.w[0], inv.image[0]
                info = {"source": str(path), "invert": {"steps": args.invert_steps, "lr": args.invert_lr,
                                                        "losses": inv.losses[:1] + inv.losses[-1:]}}
            imgs.append(resize(img[None], config.image_size)[0])
            ws.append(w)
            gan_ims.append(gan_im)
            names.append(name)
            extra.append(info)
            keys.append(key)
        images, latents, gan_images = torch.stack(imgs), torch.stack(ws), torch.stack(gan_ims)
    else:
        n = args.samples or 4
        latents = sample_latents(G, n, args.seed, args.truncation)
        gan_images = generate(G, latents).cpu()
        images = resize(gan_images, config.image_size)
        names = [f"sample_{k:03d}" for k in range(n)]
        extra = [{"source": "GAN sample", "seed": args.seed, "index": k, "truncation": args.truncation}
                 for k in range(n)]
        keys = [{"seed": args.seed + k, "sample": [args.seed, k, args.truncation]} for k in range(n)]
        done = [None if rec is None else rec[0] for rec in map(finished, names, keys)]
    log(f"GAN2Shape preset {config.preset}: {len(images)} image(s) at {config.image_size} px, "
        + (f"{config.num_stages} stage(s), steps {config.steps_first}" if config.num_stages else "no per-image steps")
        + (f" then {config.steps_later}" if config.num_stages > 1 else "") + f", device {device}"
        + (f", from the pretrained networks {args.pretrained} (no step 0)" if init is not None else ""))
    results = run_images(G, D, config, images, latents, out, names=names, gan_images=gan_images, device=device,
                         perceptual=perceptual, stats=stats, seed=args.seed, progress=not args.no_progress,
                         extra=extra, log=log, records=records, keys=keys, record_extra=extra, done=done, init=init)
    index = [{"name": nm, "seconds": r.times["steps"]["total"], "folder": str(out / nm)}
             for nm, r in zip(names, results)]
    (out / "index.json").write_text(json.dumps({"preset": config.preset, "images": index}, indent=1))
    log(f"wrote {len(results)} result folder(s) under {out}")
    return 0


def cmd_eval_gan2shape(args) -> int:
    from .pipeline import evaluate_synthetic
    from .records import RecordMismatch

    cmd = "eval-gan2shape"
    if args.n < 1:
        raise _fail(cmd, f"--n: expected at least 1 image, got {args.n}")
    if args.mean_depth_n < 1:
        raise _fail(cmd, f"--mean-depth-n: expected at least 1 training face, got {args.mean_depth_n}")
    config, G, D, perceptual, stats, device, init = _setup(cmd, args)
    print(f"eval-gan2shape: {args.n} held-out synthetic faces ({args.split}) at {config.image_size} px, preset {config.preset}, "
          f"device {device}" + (f", from the pretrained networks {args.pretrained}" if init is not None else "")
          + (" alone (no per-image steps)" if config.num_stages == 0 else ""))
    try:
        evaluate_synthetic(G, D, config, args.n, args.out, device=device, perceptual=perceptual, stats=stats,
                           seed=args.seed, invert_steps=args.invert_steps, invert_lr=args.invert_lr,
                           data_seed=args.data_seed, mean_depth_items=args.mean_depth_n,
                           save_images=args.save_images, progress=not args.no_progress, resume=args.resume,
                           oracle_samples=args.oracle_samples, init=init, split=args.split)
    except RecordMismatch as e:
        raise _fail(cmd, str(e)) from None
    print(f"wrote {Path(args.out) / 'metrics.json'}, depth_pred.npy, depth_gt.npy, mask_gt.npy")
    return 0


def _pretrain_data(args, G, D, config, device, log=print):
    """(images, latents, gan_images or None, oracles or None, key) of ``pretrain-gan2shape``'s --data."""
    import torch

    from voxrender.training import atomic_save

    from .invert import invert, resize
    from .pipeline import _face_oracle, generate, sample_latents
    from .records import digest

    n, S = args.n, config.image_size
    if args.data == "samples":
        latents = sample_latents(G, n, args.seed, args.truncation)
        gan_images = generate(G, latents).cpu()
        return resize(gan_images, S), latents, gan_images, None, {"data": ["samples", args.seed, args.truncation]}
    from voxrender.data.faces import SyntheticFaces

    batch = SyntheticFaces(n, size=S, seed=args.data_seed, split="train").get_batch(range(n))
    images, key = batch["image"], {"data": ["synthetic-faces", "train", args.data_seed]}
    if args.oracle_samples:  # the GAN is not used: any latents do
        return images, sample_latents(G, n, args.seed), None, [_face_oracle(batch, k) for k in range(n)], key
    # each face inverted into W; the latents are kept in OUT/inversions.pt (a resumed run reuses them; G(w) is
    # computed again from w, as the inversion computed it)
    path = Path(args.out) / "inversions.pt"
    inv_key = {"gan": digest(G), "images": digest(images), "invert": [args.invert_steps, args.invert_lr]}
    done = {}
    if args.resume and path.is_file():
        rec = torch.load(path, map_location="cpu", weights_only=False)
        if rec.get("key") == inv_key:
            done = rec["done"]
    for k in range(n):
        if k in done:
            continue
        inv = invert(G, images[k].to(device), args.invert_steps, D=D, lr=args.invert_lr, progress=not args.no_progress,
                     desc=f"[{k + 1}/{n}] invert")
        done[k] = inv.w[0].cpu()
        atomic_save({"key": inv_key, "done": done}, path)
    log(f"{n} training faces inverted into W ({path})")
    return images, torch.stack([done[k] for k in range(n)]), None, None, key


def cmd_pretrain_gan2shape(args) -> int:
    from .pipeline import pretrain_images
    from .records import RecordMismatch

    cmd = "pretrain-gan2shape"
    if args.n < 1:
        raise _fail(cmd, f"--n: expected at least 1 image, got {args.n}")
    if args.oracle_samples and args.data != "synthetic-faces":
        raise _fail(cmd, "--oracle-samples needs --data synthetic-faces (the oracle renders their ground truth)")
    if args.average_weights is not None and not 0.0 < args.average_weights < 1.0:
        raise _fail(cmd, f"--average-weights: expected a decay in (0, 1), e.g. 0.995, got {args.average_weights}")
    config, G, D, perceptual, stats, device, _ = _setup(cmd, args, pretraining=True)
    try:  # before the inversions, which take minutes
        config.check_joint_images(args.n)
    except ValueError as e:
        raise _fail(cmd, f"--n {args.n}: {e}") from None
    print(f"pretrain-gan2shape: {args.n} image(s) ({args.data}) at {config.image_size} px, preset {config.preset}, "
          f"{config.num_stages} stages, steps {config.steps_first} then {config.steps_later}, batch "
          f"{config.batch_size}, device {device}" + (" [ORACLE SAMPLES: a diagnostic]" if args.oracle_samples else ""))
    images, latents, gan_images, oracles, key = _pretrain_data(args, G, D, config, device)
    try:
        pretrain_images(G, D, config, images, latents, args.out, gan_images=gan_images, device=device,
                        perceptual=perceptual, stats=stats, seed=args.seed, progress=not args.no_progress,
                        oracles=oracles, resume=args.resume, key=key, average=args.average_weights)
    except RecordMismatch as e:
        raise _fail(cmd, str(e)) from None
    print(f"use it with: voxrender gan2shape --pretrained {Path(args.out) / 'pretrained.pt'} ... (the same --preset "
          f"and --gan)")
    return 0


def _pretrained_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pretrained", default=None, metavar="PATH",
                   help="start every image from these jointly pretrained networks (OUT/pretrained.pt of `voxrender "
                        "pretrain-gan2shape`, the same preset and GAN) and skip the ellipsoid step, as GAN2Shape's "
                        "own face and cat runs do (default: fresh networks fitted to the ellipsoid prior)")
    p.add_argument("--nets-only", action="store_true",
                   help="with --pretrained: no per-image steps at all, the pretrained networks alone predict each "
                        "image's depth, albedo, view and light in one forward pass (a feed-forward predictor, as "
                        "Unsup3d is used; not GAN2Shape's per-image optimisation; seconds per image)")


def _common(p: argparse.ArgumentParser, default_preset: str, default_out: str, pretrain: bool = False) -> None:
    """The options every GAN2Shape command shares; ``pretrain``: the help texts of ``pretrain-gan2shape``."""
    p.add_argument("--gan", default="synface64", metavar="CKPT",
                   help="StyleGAN2 checkpoint in the format of rosinality/stylegan2-pytorch (keys g_ema and d; "
                        "e.g. the public CelebA / cat / car / church ones, or OUT/stylegan2.pt of `voxrender train "
                        "stylegan2`), or the name of one shipped with voxrender; the discriminator is required "
                        "(feature losses) (default: synface64, the shipped small 64 px generator of the built-in "
                        "synthetic faces, CPU-trained: a stand-in, see docs/gan2shape.md)")
    p.add_argument("--out", default=default_out, metavar="DIR", help=f"output folder (default {default_out})")
    schedules = ("the joint pretraining of synface (64 px, 8 stages 1500/1500/1500 then 700/1000/1000, batch 12), "
                 "celeba and cat (128 px, 4 stages, batch 8), tiny (32 px, a few steps: tests / CI); car and church "
                 "have none" if pretrain else
                 "synface (64 px, 1 stage 500/500/200), celeba and cat (128 px, 4 stages 600/600/400 then "
                 "200/500/300), car and church (128 px, 700/700/600 then 200/500/400), tiny (32 px, a few steps, "
                 "small nets: tests / CI)")
    p.add_argument("--preset", default=default_preset, choices=PRESET_NAMES,
                   help=f"published settings per dataset: {schedules} (default {default_preset})")
    p.add_argument("--image-size", type=int, default=None, metavar="S",
                   help="override the preset's image size of the networks and renderer (a power of two >= 32)")
    p.add_argument("--prior-near", type=float, default=None, metavar="Z",
                   help="depth of the ellipsoid prior at its centre (default: the preset's; GAN2Shape's 0.91 for "
                        "CelebA / cat / car / church, 0.95 for the built-in synthetic faces, whose heads rise about "
                        "0.07 above their rim)")
    p.add_argument("--prior-far", type=float, default=None, metavar="Z",
                   help="depth of the prior at its rim and outside (default: the preset's, 1.02; 1.0 for church)")
    p.add_argument("--prior-box", default=None, choices=PRIOR_BOX_NAMES,
                   help="the box the ellipsoid prior is stretched over: the object mask's box as is (plain) or "
                        "GAN2Shape's per-category rule: synface extends it up by a sixth of its height (its rule "
                        "for the BFM faces), face (CelebA) down to the bottom row and a twelfth "
                        "narrower each side, car / church down by a sixth (default: the preset's; synface for the "
                        "synface and tiny presets, whose built-in faces' masks include the forehead, so the box "
                        "rule leans the prior forward: docs/gan2shape.md). With --depth-anchor, pass the "
                        "pretraining's")
    p.add_argument("--depth-anchor", action="store_true", default=None,
                   help="keep the canonical depth's mean over the object mask at the prior's (not in GAN2Shape: "
                        "there nothing holds the object's distance from the rotation centre after step 0, and on "
                        "the built-in faces it drifts towards the camera, which turns the projected samples the "
                        "wrong way; see docs/gan2shape.md). Pass it to the pretraining and to the runs from it")
    p.add_argument("--tilt-anchor", action="store_true", default=None,
                   help="with --depth-anchor: also keep the canonical depth's vertical tilt (its slope over the object "
                        "mask) at the prior's (not in "
                        "GAN2Shape: a face leaning forward, lit from lower down, looks the same in one view as the "
                        "upright face, the bas-relief ambiguity that the symmetry does not remove; on the built-in "
                        "faces the pretraining leans it about 35 degrees; see docs/gan2shape.md). Pass it to the "
                        "pretraining and to the runs from it")
    p.add_argument("--anchor-frame", default=None, choices=("input", "canonical"),
                   help="with --depth-anchor: where the anchors hold the canonical depth: over the input's object "
                        "mask and its prior (input, the default), or over that mask carried into the canonical "
                        "frame with the current view and depth and made symmetric, and the prior built there "
                        "(canonical; not in GAN2Shape: over the input's mask the true canonical depth of a pitched "
                        "face has a vertical slope, which --tilt-anchor takes off; see docs/gan2shape.md). Pass "
                        "it to the pretraining and to the runs from it")
    p.add_argument("--refine-steps", type=int, default=None, metavar="K",
                   help="refine every collected projected sample by K Adam steps on its own latent, from E's w + dw, "
                        "on step 2's loss (not in GAN2Shape, default 0: E alone projects, as published; GAN2Shape "
                        "trained E on about 800 k pseudo samples, and an E trained on a CPU budget keeps the "
                        "input's view, so the viewpoint net learns a third of the yaw; see docs/gan2shape.md). "
                        "Costs K generator + discriminator passes per collected batch: see --collect-iters")
    p.add_argument("--refine-lr", type=float, default=None, metavar="LR",
                   help="learning rate of --refine-steps, cosine-decayed to 0 (default 0.05, the inversion's)")
    p.add_argument("--view-supervision", type=float, default=None, metavar="W",
                   help="weight of a term in step 3 that pulls the viewpoint net's reading of each projected sample "
                        "towards the view its pseudo sample was rendered in (not in GAN2Shape, default 0: V reads "
                        "them freely; on the built-in faces it reads about half the yaw and the face comes out 40 %% "
                        "too deep; see docs/gan2shape.md)")
    p.add_argument("--collect-iters", type=int, default=None, metavar="N",
                   help="batches of projected samples collected after step 2 (GAN2Shape's collect_iters; default: "
                        "the preset's, times --steps-scale; the pretraining shares them out over its images)")
    p.add_argument("--steps-scale", type=float, default=None, metavar="F",
                   help="multiply every step count (prior fit, steps 1-3, collected batches) by F, at least 1 "
                        "each: e.g. 0.1 for a quick run (default 1)")
    p.add_argument("--device", default=None, help="torch device, e.g. cpu, cuda, cuda:1 (default: cuda if "
                                                  "available, else cpu)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the networks' initialisation, of the pseudo samples and of the image order, and of "
                        "the GAN samples' z (default 0)" if pretrain else
                        "seed of the networks' initialisation and of the pseudo samples (image k uses seed + k; "
                        "default 0)")
    p.add_argument("--vgg", default=None, metavar="PATH",
                   help="VGG16 weights (a torchvision vgg16 state dict saved with torch.save) for Unsup3d's VGG "
                        "perceptual loss; default: the offline substitute, the discriminator's features")
    p.add_argument("--view-mvn", default=None, metavar="PATH",
                   help="GAN2Shape's view_mvn.pth ({'mean', 'cov'}, raw units) for the pseudo-sample views "
                        "(with --light-mvn); default: the synthetic faces' sampler (synface, tiny) or a Gaussian "
                        "fitted to the preset's view ranges")
    p.add_argument("--light-mvn", default=None, metavar="PATH", help="GAN2Shape's light_mvn.pth (with --view-mvn)")
    p.add_argument("--invert-steps", type=int, default=200, metavar="N",
                   help="Adam steps of the W-space inversion of images that are not GAN samples (default 200)")
    p.add_argument("--invert-lr", type=float, default=0.05, help="learning rate of the inversion (default 0.05)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted pretraining in the same --out from OUT/checkpoint.pt (written after "
                        "step 0 and after every stage; the result is the same as an uninterrupted run's; the other "
                        "options and the GAN must be the same, else it is an error)" if pretrain else
                        "continue an interrupted run in the same --out: every finished image is recorded in "
                        "OUT/progress/ and taken from there instead of being run again (the other options and "
                        "the GAN must be the same; a record made with other settings is an error)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def add_gan2shape_commands(sub) -> None:
    """Adds ``gan2shape``, ``eval-gan2shape`` and ``pretrain-gan2shape`` to the ``voxrender`` subcommands."""
    g = sub.add_parser(
        "gan2shape",
        help="recover 3D shape (depth, albedo, view, light) from a pretrained StyleGAN2 (GAN2Shape)",
        description="GAN2Shape (Pan et al. 2021) per image: fit the depth net to an ellipsoid prior, then per "
                    "stage train the albedo net on the image, the latent-offset encoder on pseudo samples "
                    "(re-rendered views / lights projected through StyleGAN2), and depth / albedo / view / light "
                    "nets on the image and the projected samples. Inputs: GAN samples (--samples N: z -> w, "
                    "image = G(w)) or own images (--image: centre square resized to the GAN's size and inverted "
                    "into W by optimisation). Writes per image OUT/<name>/: depth (npy, png), view depth, "
                    "normals, albedo, mesh.obj, relight.png, rotation.gif, samples.png, summary.png and "
                    "result.json (losses, timings per step and per part). See docs/gan2shape.md.",
    )
    _common(g, "synface", "gan2shape-out")
    src = g.add_mutually_exclusive_group()
    src.add_argument("--samples", type=int, default=None, metavar="N",
                     help="run on N GAN samples (default 4 when no --image is given)")
    src.add_argument("--image", nargs="+", default=None, metavar="PATH",
                     help="run on these image files (centre square; inverted into W with --invert-steps)")
    g.add_argument("--truncation", type=float, default=1.0,
                   help="truncation of the GAN samples' w towards the centre of W (default 1: none)")
    _pretrained_option(g)
    g.set_defaults(fn=cmd_gan2shape)

    e = sub.add_parser(
        "eval-gan2shape",
        help="SIDE / MAD of GAN2Shape on held-out synthetic faces with ground-truth depth, plus baselines",
        description="Runs GAN2Shape on N held-out built-in synthetic faces (SyntheticFaces split 'test', or "
                    "'val' with --split val), each "
                    "inverted into the GAN's W space, and compares the depth of the reconstruction in the "
                    "predicted view of the input with the ground-truth view depth as Unsup3d does: SIDE "
                    "(x 10^-2) and MAD (degrees) over the eroded intersection of the ground-truth and predicted "
                    "masks, per image, mean +- std; baselines flat depth, mean training depth, ellipsoid prior, and "
                    "the ellipsoid with its rise fitted to the training faces (fitted_ellipsoid). "
                    "Writes OUT/metrics.json, depth_pred.npy, depth_gt.npy, mask_gt.npy (N, S, S). The GAN "
                    "should be one trained on the synthetic faces (`voxrender train stylegan2`).",
    )
    _common(e, "synface", "gan2shape-eval")
    e.add_argument("--n", type=int, default=8, help="number of held-out faces (default 8)")
    e.add_argument("--data-seed", type=int, default=0, help="seed of the synthetic face dataset (default 0)")
    e.add_argument("--split", default="test", choices=["test", "val"],
                   help="the held-out faces: 'test' (the numbers to report) or 'val' (to choose settings on, so "
                        "that the test faces stay unseen) (default test)")
    e.add_argument("--mean-depth-n", type=int, default=256, metavar="N",
                   help="training faces for the mean-depth baseline and the fitted ellipsoid's fit (default 256)")
    e.add_argument("--save-images", action="store_true",
                   help="also write every image's GAN2Shape outputs under OUT/images/")
    e.add_argument("--oracle-samples", action="store_true",
                   help="DIAGNOSTIC, not GAN2Shape: replace the projected samples G(w + dw) by exact renderings of "
                        "each face's ground truth in the pseudo samples' random views and lights (what a perfect "
                        "GAN would give; no encoder training). Measures the renderer, networks, losses and schedule "
                        "without the GAN: an upper bound for a better generator")
    _pretrained_option(e)
    e.set_defaults(fn=cmd_eval_gan2shape)

    t = sub.add_parser(
        "pretrain-gan2shape",
        help="GAN2Shape's joint pretraining: one set of networks trained over many images (then --pretrained)",
        description="GAN2Shape's joint pretraining (its configs/*_pretrain.yml): the depth, albedo, view, light "
                    "and offset networks are trained together over N images with the preset's pretraining "
                    "schedule (synface: 8 stages, 1500/1500/1500 then 700/1000/1000 iterations, batch 12; celeba, "
                    "cat: 4 stages, batch 8), every iteration on the next image of a shuffled list; step 0 fits "
                    "the depth net to the first image's ellipsoid prior. Per-image runs (`gan2shape` / "
                    "`eval-gan2shape --pretrained OUT/pretrained.pt`) then start from these weights and skip the "
                    "ellipsoid step. Images: GAN samples (--data samples: w known exactly) or the built-in "
                    "synthetic training faces (--data synthetic-faces: each inverted into W). Writes "
                    "OUT/pretrained.pt, pretrain.json (losses, times), pretrained.png (input | recon | shape | "
                    "depth of the first 8 images) and checkpoint.pt after every stage (--resume continues from "
                    "it). The published runs used 200 images on 8 GPUs; --steps-scale shortens the schedule.",
    )
    _common(t, "synface", "gan2shape-pretrain", pretrain=True)
    t.add_argument("--n", type=int, default=200, help="number of training images (default 200, as published)")
    t.add_argument("--data", default="samples", choices=["samples", "synthetic-faces"],
                   help="the training images: GAN samples (z ~ N(0, I) seeded --seed) or the built-in synthetic "
                        "training faces (split 'train', inverted into W with --invert-steps) (default samples)")
    t.add_argument("--truncation", type=float, default=1.0, help="truncation of the GAN samples (default 1: none)")
    t.add_argument("--data-seed", type=int, default=0, help="seed of the synthetic face dataset (default 0)")
    t.add_argument("--oracle-samples", action="store_true",
                   help="DIAGNOSTIC (with --data synthetic-faces): exact renderings of each face's ground truth "
                        "replace the projected samples and the encoder is not trained (see eval-gan2shape)")
    t.add_argument("--average-weights", type=float, default=None, metavar="DECAY",
                   help="also write OUT/pretrained_avg.pt: the networks with an exponential moving average of their "
                        "weights over every optimiser step (avg <- DECAY avg + (1 - DECAY) weights; 0.995 averages "
                        "about the last 200 steps). Not in GAN2Shape; the training and pretrained.pt are the same "
                        "as without it. Pass it again with --resume")
    t.set_defaults(fn=cmd_pretrain_gan2shape)


if __name__ == "__main__":  # pragma: no cover
    ap = argparse.ArgumentParser(prog="voxrender")
    add_gan2shape_commands(ap.add_subparsers(dest="command", required=True))
    a = ap.parse_args()
    sys.exit(a.fn(a))
