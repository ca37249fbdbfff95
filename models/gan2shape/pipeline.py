"""GAN2Shape end to end: loading the GAN, choosing the inputs (GAN samples, an own image inverted into W, the
synthetic test faces), running :class:`~.model.GAN2Shape` per image, writing the outputs, and the SIDE / MAD
evaluation. The ``voxrender gan2shape`` / ``eval-gan2shape`` commands (``cli``) are thin wrappers.

Outputs per image (:func:`save_result`, in ``OUT/<name>/``):

- ``input.png``, ``gan_image.png`` (G(w)), ``recon.png`` (the reconstruction in the predicted view),
  ``summary.png`` (input | G(w) | recon | albedo | shape | normals | depth, enlarged);
- ``depth.npy`` / ``depth.png`` (canonical depth, camera z; the PNG colour-mapped inside the canonical object
  mask), ``view_depth.npy`` / ``view_depth.png`` (the depth seen in the input's predicted view, 1.2 where the
  view sees no surface: what the evaluation compares), ``normal.png`` (canonical normals, (n + 1) / 2,
  Unsup3d's sign), ``albedo.png``, ``canonical_image.png`` (albedo x shading), ``shape.png`` (the shape
  lit from the camera);
- ``mesh.obj``: the canonical depth map as a grid mesh (``voxrender.depth_to_points`` +
  ``voxrender.grid_mesh_faces``), triangles whose three vertices lie inside the canonical object mask (and
  off the 2-pixel clamped border), in a y-up frame centred on the rotation centre: (x, -y, 1 - z), so the
  camera looks down -z and front faces wind counter-clockwise;
- ``relight.png``: the object in the predicted view under 10 light directions (GAN2Shape's dx in {-1.5, -0.7,
  0, 0.7, 1.5}, dy in {0, 0.6});
- ``rotation.gif``: the object turned through yaw in +-``rotate_yaw`` degrees (textured | shape);
- ``samples.png``: pseudo samples (top) and their projected samples G(w + dw) (bottom), last stage;
- ``result.json``: view, light, losses (first / last / every value), the configuration and the timings
  (``time.perf_counter``, CUDA synchronised): per step (wall) and per part: ``renderer_forward`` (the
  Unsup3d renderer: z-buffer rasterization of the depth mesh, shading, inverse warp), ``stylegan2_forward``
  (mapping layers of the offset + synthesis), ``stylegan2_backward`` (the synthesis network's backward in
  step 2), ``discriminator_forward`` / ``discriminator_backward`` (the step 2 feature loss),
  ``encoder_backward`` (step 2: the offset's mapping layers and E), ``networks_forward`` (D, A, V, L, E),
  ``perceptual_forward``, ``backward_step0`` / ``backward_step1`` / ``backward_step3`` (the whole backward of
  those steps: networks, renderer and perceptual loss together), ``save_outputs``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

import voxrender as vr

from .invert import invert, resize
from .model import (
    GAN2Shape,
    GAN2ShapeConfig,
    GAN2ShapeResult,
    VGGPerceptualLoss,
    ViewLightStats,
)
from .records import ImageRecords, digest
from .renderer import BORDER_DEPTH, intrinsics, reconstruct

__all__ = ["PRETRAIN_FORMAT", "canonical_relief", "evaluate_synthetic", "generate", "load_gan", "load_own_image",
           "load_pretrained", "make_perceptual", "mesh_from_depth", "multiview_inversion", "pretrain_images",
           "pretrained_digest", "relief_line", "relight_images", "rotation_frames", "run_images", "sample_latents",
           "save_result"]


def load_gan(path, device="cpu"):
    """``(G, D)`` from a StyleGAN2 checkpoint in the port's format; a clear error for a missing file or a
    checkpoint without a discriminator (GAN2Shape's feature losses need it)."""
    from voxrender.models.stylegan2 import load_checkpoint, pretrained_names
    from voxrender.models.stylegan2.pretrained import resolve

    p = Path(resolve(Path(path).expanduser()))  # a shipped generator's name ("synface64") is its file
    if not p.is_file():
        raise FileNotFoundError(f"--gan: no StyleGAN2 checkpoint at {p} (a .pt file in the format of "
                                f"rosinality/stylegan2-pytorch, or one written by `voxrender train stylegan2`, or "
                                f"the name of one shipped with voxrender: {', '.join(pretrained_names()) or 'none'})")
    G, D = load_checkpoint(p, map_location=device)
    if D is None:
        raise ValueError(f"--gan {p}: the checkpoint has no discriminator ('d'); GAN2Shape needs it for its "
                         f"feature losses (use a training checkpoint that holds 'g_ema' and 'd')")
    return G, D


def make_perceptual(vgg=None):
    """None (the discriminator-feature substitute) or :class:`VGGPerceptualLoss` from a VGG16 weights file."""
    return None if vgg is None else VGGPerceptualLoss(vgg)


def sample_latents(G, n: int, seed: int = 0, truncation: float = 1.0) -> torch.Tensor:
    """(n, style_dim) latents w = mapping(z), z ~ N(0, I) from a CPU generator seeded ``seed`` (the same on
    every device), truncated towards the centre of W when ``truncation`` < 1."""
    dev = next(G.parameters()).device
    z = torch.randn(n, G.style_dim, generator=torch.Generator().manual_seed(int(seed))).to(dev)
    with torch.no_grad():
        w = G.mapping(z)
        if truncation != 1:
            c = G.truncation_center()
            w = c + truncation * (w - c)
    return w


@torch.no_grad()
def generate(G, w: torch.Tensor, batch: int = 8) -> torch.Tensor:
    """G(w) (fixed noise) in [0, 1], (n, 3, G.size, G.size)."""
    out = [G(w[i:i + batch], input_is_latent=True, randomize_noise=False) for i in range(0, len(w), batch)]
    return ((torch.cat(out).clamp(-1, 1) + 1) / 2)


def load_own_image(path, size: int) -> torch.Tensor:
    """An image file as (3, size, size) in [0, 1]: the largest centre square, resized (antialiased);
    transparent pixels over black."""
    from voxrender.data.images import load_image

    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"--image: no image file at {p}")
    try:
        return load_image(p, size, channels=3)
    except OSError as e:
        raise ValueError(f"--image {p}: cannot read it as an image ({e})") from None


# ---------------------------------------------------------------------------------------------------------
# outputs


def mesh_from_depth(depth: torch.Tensor, mask: torch.Tensor | None = None, border: int = 2):
    """The canonical depth map (S, S) as a mesh: vertices (V, 3) in the y-up frame (x, -y, 1 - z) and faces
    (F, 3), keeping the triangles whose vertices are all inside ``mask`` (S, S) (> 0.5) and off the
    ``border`` clamped columns; unused vertices are dropped. An empty mask keeps everything but the border."""
    S = depth.shape[-1]
    K = intrinsics(S, dtype=torch.float32)
    pts = vr.depth_to_points(depth[None].float(), K)[0].reshape(-1, 3)
    faces = vr.grid_mesh_faces(S, S)
    keep = torch.ones(S, S, dtype=torch.bool)
    if border > 0:
        keep[:, :border] = False
        keep[:, S - border:] = False
    if mask is not None and bool(((mask > 0.5) & keep).any()):
        keep &= mask > 0.5
    ok = keep.reshape(-1)[faces].all(1)
    faces = faces[ok]
    used = torch.unique(faces)
    remap = torch.full((S * S,), -1, dtype=torch.long)
    remap[used] = torch.arange(len(used))
    verts = pts[used] * torch.tensor([1.0, -1.0, -1.0]) + torch.tensor([0.0, 0.0, 1.0])
    return verts, remap[faces]


def shape_image(normal: torch.Tensor) -> torch.Tensor:
    """Grey shading (3, H, W) of canonical normals (H, W, 3) lit from the camera: 0.7 max(0, n_z) (GAN2Shape's
    ``shape_im``)."""
    return (normal[..., 2].clamp(min=0) * 0.7)[None].expand(3, -1, -1)


@torch.no_grad()
def relight_images(res: GAN2ShapeResult) -> list:
    """The object in its predicted view under GAN2Shape's 10 relighting directions (own ambient / diffuse)."""
    a, b = float(res.light[0]), float(res.light[1])
    lights = torch.tensor([[a, b, dx, dy] for dy in (0.0, 0.6) for dx in (-1.5, -0.7, 0.0, 0.7, 1.5)])
    n = len(lights)
    rec = reconstruct(res.canon_depth[None], res.canon_albedo[None], res.view[None].expand(n, -1), lights,
                      clamp=True)
    return list(rec.image)


@torch.no_grad()
def rotation_frames(res: GAN2ShapeResult, max_yaw: float = 70.0, frames: int = 24) -> list:
    """Frames (3, S, 2 S) of the object turned through yaw = max_yaw sin(t) (degrees), pitch from the
    predicted view: textured (own light) | shape (lit from the camera)."""
    frames = max(int(frames), 2)
    t = torch.arange(frames, dtype=torch.float32) / frames * 2 * math.pi
    views = torch.zeros(frames, 6)
    views[:, 1] = torch.deg2rad(torch.tensor(max_yaw)) * torch.sin(t)
    light = res.light[None].expand(frames, -1)
    tex = reconstruct(res.canon_depth[None], res.canon_albedo[None], views, light, clamp=True).image
    S = res.canon_depth.shape[-1]
    grey = torch.tensor([0.0, 1.0, 0.0, 0.0]).expand(frames, -1)  # ambient 0, diffuse 1, light from the front
    shp = reconstruct(res.canon_depth[None], torch.full((1, 3, S, S), 0.85), views, grey, clamp=True).image
    return [torch.cat([tex[k], shp[k]], -1) for k in range(frames)]


def _losses_json(losses: dict) -> dict:
    return {k: {"first": v[0] if v else None, "last": v[-1] if v else None, "all": [round(x, 6) for x in v]}
            for k, v in losses.items()}


def _finite_or_none(x) -> float | None:
    """A float, or None where it is NaN / inf (JSON has none of them; e.g. an empty mask's metric)."""
    x = float(x)
    return x if math.isfinite(x) else None


def _canonical_mask(res: GAN2ShapeResult) -> torch.Tensor:
    """The canonical object mask of a result (the input's mask seen in the canonical frame), or where the
    canonical depth is off its clamped border when that is empty."""
    cm = res.canon_mask > 0.5
    return cm if bool(cm.any()) else res.canon_depth < BORDER_DEPTH - 1e-4


def canonical_relief(res: GAN2ShapeResult) -> float | None:
    """:func:`metrics.relief` of a result's canonical depth in its canonical object mask (> 0: convex, < 0:
    the hollow solution of the convex / concave ambiguity); None when the mask is too small to tell."""
    from .metrics import relief

    return _finite_or_none(relief(res.canon_depth, _canonical_mask(res))[0])


def save_result(res: GAN2ShapeResult, out, config: GAN2ShapeConfig, extra: dict | None = None) -> Path:
    """Writes every output of one image into the folder ``out`` (see the module docstring); returns the path
    of ``result.json``."""
    from voxrender.io import colorize, image_grid, save_gif, save_png

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    S = res.canon_depth.shape[-1]
    cm = _canonical_mask(res)
    depth_png = colorize(res.canon_depth, cm)
    view_ok = res.view_mask > 0.5
    view_png = colorize(res.view_depth, view_ok)
    normal_png = (res.canon_normal.permute(2, 0, 1) + 1) / 2
    shape = shape_image(res.canon_normal)
    save_png(res.image, out / "input.png")
    save_png(res.gan_image, out / "gan_image.png")
    save_png(res.recon, out / "recon.png")
    save_png(res.canon_albedo, out / "albedo.png")
    save_png(res.canon_image, out / "canonical_image.png")
    save_png(normal_png, out / "normal.png")
    save_png(shape, out / "shape.png")
    save_png(depth_png, out / "depth.png")
    save_png(view_png, out / "view_depth.png")
    np.save(out / "depth.npy", res.canon_depth.numpy().astype(np.float32))
    np.save(out / "view_depth.npy", res.view_depth.numpy().astype(np.float32))
    scale = max(1, 128 // S)
    save_png(image_grid([res.image, res.gan_image, res.recon, res.canon_albedo, shape, normal_png, depth_png], 7,
                        scale=scale), out / "summary.png")
    verts, faces = mesh_from_depth(res.canon_depth, res.canon_mask)
    vr.save_obj(out / "mesh.obj", verts, faces)
    save_png(image_grid(relight_images(res), 5, scale=scale), out / "relight.png")
    frames = rotation_frames(res, config.rotate_yaw, config.rotate_frames)
    save_gif([image_grid([f], 1, pad=0, scale=scale) for f in frames], out / "rotation.gif", fps=12)
    if len(res.pseudo):
        n = len(res.pseudo)
        save_png(image_grid(list(res.pseudo) + list(res.projected), n, scale=scale), out / "samples.png")
    times = dict(res.times)
    times["save_outputs"] = round(time.perf_counter() - t0, 4)
    info = {
        "view": {"rotation_deg": [round(math.degrees(float(x)), 4) for x in res.view[:3]],
                 "translation": [round(float(x), 6) for x in res.view[3:]]},
        "light": {"ambient": float(res.light[0]), "diffuse": float(res.light[1]), "lx": float(res.light[2]),
                  "ly": float(res.light[3])},
        "depth_range": [float(res.canon_depth.min()), float(res.canon_depth.max())],
        "relief": canonical_relief(res),
        "mesh": {"vertices": len(verts), "triangles": len(faces)},
        "times": times,
        "losses": _losses_json(res.losses),
        "config": config.to_dict(),
    }
    info.update(extra or {})
    path = out / "result.json"
    path.write_text(json.dumps(info, indent=1))
    return path


# ---------------------------------------------------------------------------------------------------------
# drivers


def _describe_times(times: dict) -> str:
    parts = times.get("parts", {})
    top = sorted(parts.items(), key=lambda kv: -kv[1]["seconds"])[:4]
    return ", ".join(f"{k} {v['seconds']:.2f}s" for k, v in top)


def run_key(G, D, config: GAN2ShapeConfig, perceptual=None, stats: ViewLightStats | None = None,
            init: dict | None = None) -> dict:
    """What every image of a run shares, for the resume records (:mod:`.records`); ``init``: the pretrained
    networks the images start from."""
    return {"config": config.to_dict(), "gan": digest(G, D), "perceptual": digest(perceptual),
            "stats": digest(*(dataclasses.astuple(stats) if stats is not None else ())),
            "pretrained": pretrained_digest(init)}


def run_images(G, D, config: GAN2ShapeConfig, images: torch.Tensor, latents: torch.Tensor, out, *,
               names: list | None = None, gan_images: torch.Tensor | None = None, device=None,
               perceptual=None, stats: ViewLightStats | None = None, seed: int = 0, progress: bool = True,
               extra: list | None = None, save: bool = True, log=print, records: ImageRecords | None = None,
               keys: list | None = None, record_extra: list | None = None, done: list | None = None,
               oracles: list | None = None, init: dict | None = None) -> list:
    """Runs GAN2Shape on each image (n, 3, H, W) in [0, 1] with its latent (n, style_dim); writes the outputs
    of image k to ``out/names[k]`` (default ``image_000`` ...) when ``save``. The seed of image k is
    ``seed + k``. Returns the :class:`GAN2ShapeResult` list.

    ``records``: after each image its result goes into ``records`` under ``keys[k]`` (with
    ``record_extra[k]``). ``done[k]``: a result found there by the caller (``--resume``; the caller loads
    the records because it skips the image's inversion too): taken as it is instead of running the image.
    ``oracles[k]``: the diagnostic oracle of image k (:meth:`GAN2Shape.run`). ``init``: pretrained networks
    (:func:`load_pretrained`) every image starts from (then step 0 is skipped)."""
    if records is not None and keys is None:
        raise ValueError("run_images: records need the images' keys")
    model = GAN2Shape(G, D, config, device=device, perceptual=perceptual, stats=stats, progress=progress)
    names = names or [f"image_{k:03d}" for k in range(len(images))]
    results = []
    for k in range(len(images)):
        if done is not None and done[k] is not None:
            res = done[k]
            log(f"{names[k]}: taken from its record in {records.folder} ({res.times['steps']['total']:.1f} s in "
                f"an earlier run)")
            results.append(res)
            continue
        model.desc = f"[{k + 1}/{len(images)}] "
        res = model.run(images[k], latents[k], None if gan_images is None else gan_images[k], seed=seed + k,
                        oracle=None if oracles is None else oracles[k], init=init)
        res.nets = None  # free the networks
        if save:
            path = save_result(res, Path(out) / names[k], config, None if extra is None else extra[k])
            log(f"{names[k]}: {res.times['steps']['total']:.1f} s ({_describe_times(res.times)}) -> {path.parent}")
        if records is not None:
            records.save(names[k], keys[k], res, None if record_extra is None else record_extra[k])
        results.append(res)
    return results


PRETRAIN_FORMAT = "voxrender-gan2shape-pretrained-1"


def load_pretrained(path) -> dict:
    """Pretrained GAN2Shape networks written by :func:`pretrain_images` (``OUT/pretrained.pt``), with clear
    errors for a missing or foreign file."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"--pretrained: no file at {p} (OUT/pretrained.pt of `voxrender pretrain-gan2shape`)")
    d = torch.load(p, map_location="cpu", weights_only=False)
    if not isinstance(d, dict) or d.get("format") != PRETRAIN_FORMAT:
        raise ValueError(f"--pretrained {p}: not pretrained GAN2Shape networks (OUT/pretrained.pt of "
                         f"`voxrender pretrain-gan2shape`)")
    return d


def pretrained_digest(init: dict | None) -> str | None:
    """A short fingerprint of pretrained networks (for the resume records of the runs that start from them)."""
    return None if init is None else digest(*init["nets"].values())


def relief_line(reliefs: list, truth: list | None = None) -> str:
    """A report line on the sign of the recovered relief (:func:`metrics.relief`), with a warning when most
    shapes came out hollow (the convex / concave ambiguity)."""
    ok = [r for r in reliefs if r is not None and math.isfinite(r)]
    concave = sum(r < 0 for r in ok)
    line = (f"relief (rim - core depth, > 0 convex): median {float(np.median(ok)) if ok else float('nan'):.4f}, "
            f"{concave} of {len(ok)} concave")
    if truth is not None:
        line += f" (ground truth: median {float(np.median(truth)):.4f})"
    if ok and concave > len(ok) / 2:
        line += ("; WARNING: most shapes are hollow, the concave solution of the convex / concave ambiguity "
                 "(docs/gan2shape.md, 'Why GAN2Shape fails with synface64', 3)")
    return line


@torch.no_grad()
def _pretrained_reliefs(model: GAN2Shape, images: torch.Tensor, batch: int = 16) -> list:
    """The relief (:func:`metrics.relief`; None where it cannot tell) of the pretrained networks' canonical
    depth of every training image, in the threshold mask of the image (the object's canonical mask is not
    known before a per-image run; it is close for near-frontal views)."""
    from .metrics import relief
    from .prior import object_mask

    reliefs = []
    for i in range(0, len(images), batch):
        x = resize(images[i:i + batch].to(model.device), model.S)
        d = model.predict(x * 2 - 1)["depth"]
        reliefs += [_finite_or_none(r) for r in relief(d.cpu(), object_mask(x).cpu())]
    return reliefs


@torch.no_grad()
def _pretrain_picture(model: GAN2Shape, images: torch.Tensor, path, n: int = 8) -> None:
    """A PNG grid of the pretrained networks on the first ``n`` training images, one column each; rows: input,
    reconstruction (predicted view and light), canonical shape, canonical depth."""
    from voxrender.io import colorize, image_grid, save_png

    k = min(n, len(images))
    x = resize(images[:k].to(model.device), model.S) * 2 - 1
    p = model.predict(x)
    rec = reconstruct(p["depth"], p["albedo"], p["view"], p["light"], clamp=True)
    rows = [list((x.cpu() + 1) / 2), list(rec.image.clamp(0, 1).cpu()),
            [shape_image(nrm) for nrm in rec.canon_normal.cpu()],
            [colorize(d, d < BORDER_DEPTH - 1e-4) for d in p["depth"].cpu()]]
    save_png(image_grid([c for row in rows for c in row], k, scale=max(1, 128 // model.S)), path)


def pretrain_images(G, D, config: GAN2ShapeConfig, images: torch.Tensor, latents: torch.Tensor, out, *,
                    gan_images: torch.Tensor | None = None, device=None, perceptual=None,
                    stats: ViewLightStats | None = None, seed: int = 0, progress: bool = True, oracles=None,
                    resume: bool = False, key: dict | None = None, average: float | None = None,
                    log=print) -> dict:
    """GAN2Shape's joint pretraining (:meth:`GAN2Shape.pretrain`, ``config`` already with the pretraining
    schedule) on ``images`` (n, 3, H, W) in [0, 1] with their latents; writes into ``out``:

    - ``pretrained.pt``: the networks (``--pretrained`` of ``gan2shape`` / ``eval-gan2shape``), the
      configuration, the losses and times;
    - ``pretrain.json``: the same without the weights (losses first / last per step, times, settings);
    - ``pretrained.png``: the networks on the first 8 training images (input | recon | shape | depth);
    - ``checkpoint.pt`` after step 0 and after every stage (atomic): ``resume=True`` continues from it
      when it was made with the same settings (``key``: what else identifies the run, e.g. the images'
      digest), else it is an error that names what differs;
    - with ``average`` (a decay per optimiser step; not in GAN2Shape): ``pretrained_avg.pt``, the same file
      with the exponential moving average of the weights (:class:`WeightAverage`) as its networks; the
      training, and so ``pretrained.pt``, is the same as without it.

    Returns the pretrained dict (with ``nets_avg`` when averaging)."""
    from voxrender.training import atomic_save

    from .records import RecordMismatch, check_key

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    full_key = {**run_key(G, D, config, perceptual, stats), "seed": seed, "images": digest(images),
                "latents": digest(latents), "oracle_samples": oracles is not None, **(key or {}),
                **({} if average is None else {"average": float(average)})}
    ck_path = out / "checkpoint.pt"
    ck = None
    if resume and ck_path.is_file():
        ck = torch.load(ck_path, map_location="cpu", weights_only=False)
        if not isinstance(ck, dict) or ck.get("format") != PRETRAIN_FORMAT + "-checkpoint":
            raise RecordMismatch(f"--resume: {ck_path} is not a GAN2Shape pretraining checkpoint")
        check_key(ck_path, ck["key"], full_key)
        log(f"resuming the pretraining from {ck_path}: {ck['stages_done']} of {config.num_stages} stage(s) done")

    def save(c):
        atomic_save({"format": PRETRAIN_FORMAT + "-checkpoint", "key": full_key, **c}, ck_path)

    model = GAN2Shape(G, D, config, device=device, perceptual=perceptual, stats=stats, progress=progress)
    res = model.pretrain(images, latents, gan_images, seed=seed, oracles=oracles, resume=ck, on_stage=save,
                         average=average)
    nets_avg = res.pop("nets_avg", None)
    res = {"format": PRETRAIN_FORMAT, "key": full_key, **res}
    atomic_save(res, out / "pretrained.pt")
    if nets_avg is not None:
        atomic_save({**res, "nets": nets_avg, "average": float(average)}, out / "pretrained_avg.pt")
        log(f"the weights' moving average (decay {average} per step) -> {out / 'pretrained_avg.pt'}")
    info = {k: v for k, v in res.items() if k not in ("nets", "losses")}
    info["losses"] = _losses_json(res["losses"])
    info["relief"] = reliefs = _pretrained_reliefs(model, images)
    (out / "pretrain.json").write_text(json.dumps(info, indent=1))
    _pretrain_picture(model, images, out / "pretrained.png")
    log(relief_line(reliefs))
    log(f"pretrained on {len(images)} image(s) in {res['times']['steps']['total']:.1f} s "
        f"({_describe_times(res['times'])}) -> {out / 'pretrained.pt'}")
    return res if nets_avg is None else {**res, "nets_avg": nets_avg}


def _face_oracle(batch: dict, k: int):
    """The oracle of test face k (:meth:`GAN2Shape.run`): its ground-truth canonical face rendered by the
    dataset's own renderer in the given views and lights."""
    from voxrender.data.faces import render_faces

    depth, albedo, head = batch["canon_depth"][k:k + 1], batch["canon_albedo"][k:k + 1], batch["head"][k:k + 1]

    def oracle(views, lights):
        n, dev = views.shape[0], views.device
        r = render_faces(depth.expand(n, -1, -1).to(dev), albedo.expand(n, -1, -1, -1).to(dev),
                         head.expand(n, -1).to(dev), views, lights)
        return r["image"], r["mask"]

    return oracle


def multiview_inversion(G, D, n: int = 4, yaws=(-30.0, -15.0, 0.0, 15.0, 30.0), *, steps: int = 200,
                        lr: float = 0.05, data_seed: int = 0, device=None, progress: bool = False) -> dict:
    """How well a generator reproduces the same face seen from several sides: what GAN2Shape's projected
    samples need (the oracle diagnostic of :func:`evaluate_synthetic` is the perfect case).

    Each of ``n`` held-out synthetic faces (``SyntheticFaces(split="test", seed=data_seed)`` at G's size) is
    rendered with its own pitch, roll, shift and light at every yaw in ``yaws`` (degrees), and every picture
    is inverted into W on its own (:func:`invert.invert`, ``steps`` steps, the discriminator-feature term
    with D). Returns ``target`` and ``image`` (n, M, 3, S, S) in [0, 1] (M = len(yaws)), ``mask`` (n, M, S, S)
    (the face), ``l1`` (n, M) the mean |G(w) - target| over the picture and ``l1_face`` (n, M) over the face
    only, ``l1_face_still`` (n, M) the face error of the picture at the yaw nearest 0 in place of G(w) (what a
    generator that reproduced every face exactly but could not turn it would score), and ``yaws``. A
    generator that can turn a face keeps ``l1_face`` flat across the yaws and well below ``l1_face_still``
    away from 0."""
    from voxrender.data.faces import DEG, SyntheticFaces, render_faces

    if n < 1:
        raise ValueError(f"n: expected at least one face, got {n}")
    yaws = [float(y) for y in yaws]
    if not yaws:
        raise ValueError("yaws: expected at least one yaw")
    m = len(yaws)
    b = SyntheticFaces(n, size=G.size, seed=data_seed, split="test").get_batch(range(n))
    view = b["view"].repeat_interleave(m, 0)
    view[:, 1] = torch.tensor(yaws).repeat(n) * DEG
    rep = {k: b[k].repeat_interleave(m, 0) for k in ("canon_depth", "canon_albedo", "head", "light")}
    with torch.no_grad():
        r = render_faces(rep["canon_depth"], rep["canon_albedo"], rep["head"], view, rep["light"])
    dev = device or next(G.parameters()).device
    inv = invert(G, r["image"].to(dev), steps, D=D, lr=lr, progress=progress, desc="multi-view invert")
    S = G.size
    image, target, mask = inv.image.cpu().reshape(n, m, 3, S, S), r["image"].reshape(n, m, 3, S, S), r["mask"]
    mask = mask.reshape(n, m, S, S)

    def face_l1(a):
        err = (a - target).abs().mean(2)
        return err.mean((2, 3)), (err * mask).sum((2, 3)) / mask.sum((2, 3)).clamp(min=1)

    l1, l1_face = face_l1(image)
    still = min(range(m), key=lambda j: abs(yaws[j]))
    return {"target": target, "image": image, "mask": mask, "l1": l1, "l1_face": l1_face,
            "l1_face_still": face_l1(target[:, still:still + 1])[1], "yaws": yaws}


def fitted_prior_on(b: dict, category: str | None, log=print) -> dict | None:
    """``prior_fit.fit_prior`` on a batch of TRAINING faces (``SyntheticFaces.get_batch``: image, depth,
    canon_depth; the prior is built from the images' threshold object mask), with the number of faces; None
    (and a logged reason) when no rise fits."""
    from .prior import object_mask
    from .prior_fit import fit_prior

    try:
        fit = fit_prior(object_mask(b["image"]).float(), b["depth"], b["canon_depth"], category)
    except ValueError as e:
        log(f"fitted_ellipsoid baseline left out: {e}")
        return None
    return {**fit, "faces": int(b["depth"].shape[0])}


def evaluate_synthetic(G, D, config: GAN2ShapeConfig, n: int, out, *, device=None, perceptual=None,
                       stats: ViewLightStats | None = None, seed: int = 0, invert_steps: int = 200,
                       invert_lr: float = 0.05, data_seed: int = 0, mean_depth_items: int = 256,
                       save_images: bool = False, progress: bool = True, log=print, resume: bool = False,
                       oracle_samples: bool = False, init: dict | None = None, split: str = "test") -> dict:
    """SIDE / MAD of GAN2Shape on ``n`` held-out synthetic faces (``SyntheticFaces(split=split)``, "test" or
    "val" (to choose settings on while the test faces stay unseen), at the
    config's image size), each inverted into W (:func:`invert.invert`, ``invert_steps`` steps), against the
    ground-truth view depth, as Unsup3d evaluates: the predicted depth is the reconstruction's depth in the
    predicted view of the input (``recon_depth``), the mask the eroded intersection of the ground-truth mask
    (depth < its maximum) and the predicted one (recon depth < 1.2) (``metrics.evaluate_depth``). Also the
    baselines (flat, the mean ground-truth depth over ``mean_depth_items`` TRAINING faces, the ellipsoid
    prior of the threshold mask, and that prior with its rise fitted to the same training faces,
    :func:`fitted_prior_on`, recorded under ``fitted_prior``) with ``metrics.evaluate_baselines``.

    Writes ``metrics.json``, ``depth_pred.npy``, ``depth_gt.npy``, ``mask_gt.npy`` (n, S, S) (and the
    per-image outputs under ``images/`` with ``save_images``); returns the metrics dict. Every finished image
    is recorded in ``OUT/progress/``; ``resume=True`` takes the images recorded with the same settings from
    there (their inversion too) and runs the rest.

    ``oracle_samples``: the DIAGNOSTIC upper bound (not GAN2Shape): the projected samples are exact renderings
    of each face's ground-truth canonical depth and albedo in the pseudo samples' random views and lights
    (what a perfect GAN would give), so the pipeline's renderer, networks, losses and schedule are measured
    without the GAN; ``metrics.json`` says so (``"oracle_samples": true``). ``init``: pretrained networks
    (:func:`load_pretrained`) every face starts from (step 0 skipped); ``metrics.json`` records them."""
    from voxrender.data.faces import SyntheticFaces

    from .metrics import (SIDE_SCALE, evaluate_baselines, evaluate_depth, format_metrics, format_paired, mean_depth,
                          paired, relief)

    if n < 1:
        raise ValueError(f"--n: expected at least 1 image, got {n}")
    if mean_depth_items < 1:
        raise ValueError(f"--mean-depth-n: expected at least 1 training face, got {mean_depth_items}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    S = config.image_size
    t_start = time.perf_counter()
    if split not in ("test", "val"):
        raise ValueError(f"split: expected 'test' or 'val' (held-out faces), got {split!r}")
    ds = SyntheticFaces(n, size=S, seed=data_seed, split=split)
    batch = ds.get_batch(range(n))
    images, gt_depth, gt_mask = batch["image"], batch["depth"], batch["mask"]
    dev = next(G.parameters()).device
    records = ImageRecords(out, run_key(G, D, config, perceptual, stats, init), resume)
    names = [f"{split}_{k:04d}" for k in range(n)]
    keys = [{"seed": seed + k, "image": digest(images[k]), "invert": [invert_steps, invert_lr]} for k in range(n)]
    oracles = None
    if oracle_samples:
        for key in keys:
            key["oracle_samples"] = True
        oracles = [_face_oracle(batch, k) for k in range(n)]
    t = time.perf_counter()
    ws, gan_ims, inv_losses, done = [], [], [], []
    for k in range(n):
        rec = records.load(names[k], keys[k])
        done.append(None if rec is None else rec[0])
        if rec is not None:  # its inversion is in the record too
            ws.append(rec[0].w.to(dev))
            gan_ims.append(rec[0].gan_image.to(dev))
            inv_losses.append(tuple(rec[1]["invert_loss"]))
            continue
        inv = invert(G, images[k].to(dev), invert_steps, D=D, lr=invert_lr, progress=progress,
                     desc=f"[{k + 1}/{n}] invert")
        ws.append(inv.w[0])
        gan_ims.append(inv.image[0])
        inv_losses.append((inv.losses[0], inv.losses[-1]) if inv.losses else (None, None))
    t_invert = time.perf_counter() - t
    results = run_images(G, D, config, images, torch.stack(ws), out / "images", gan_images=torch.stack(gan_ims),
                         device=device, perceptual=perceptual, stats=stats, seed=seed, progress=progress,
                         names=names, save=save_images, log=log, records=records, keys=keys,
                         record_extra=[{"invert_loss": list(v)} for v in inv_losses], done=done, oracles=oracles,
                         init=init)
    pred = torch.stack([r.view_depth for r in results])
    ev = evaluate_depth(pred, gt_depth)
    # the training faces of the mean-depth baseline and of the fitted ellipsoid, rendered once for both
    train = SyntheticFaces(mean_depth_items, size=S, seed=data_seed, split="train").get_batch(range(mean_depth_items))
    mean_gt = mean_depth(train["depth"], train["mask"])
    fitted = fitted_prior_on(train, config.category, log)
    base = evaluate_baselines(gt_depth, images=images, mean_gt_depth=mean_gt, fitted_prior=fitted,
                              prior_kwargs={"category": config.category, "near": config.prior_near,
                                            "far": config.prior_far})
    np.save(out / "depth_pred.npy", pred.numpy().astype(np.float32))
    np.save(out / "depth_gt.npy", gt_depth.numpy().astype(np.float32))
    np.save(out / "mask_gt.npy", gt_mask.numpy().astype(np.float32))

    def summary(r):  # (JSON has no NaN: an empty evaluation mask gives null)
        return {"side_x1e-2_mean": _finite_or_none(r["side_mean"] * SIDE_SCALE),
                "side_x1e-2_std": _finite_or_none(r["side_std"] * SIDE_SCALE),
                "mad_deg_mean": _finite_or_none(r["mad_mean"]), "mad_deg_std": _finite_or_none(r["mad_std"]),
                "count": r["count"]}

    # face by face against each baseline (SIDE differences x 10^-2 as in the table, MAD in degrees)
    vs = {k: {"side": paired(ev["side"] * SIDE_SCALE, v["side"] * SIDE_SCALE), "mad": paired(ev["mad"], v["mad"])}
          for k, v in base.items()}
    reliefs = [canonical_relief(r) for r in results]
    gt_relief = relief(batch["canon_depth"], batch["canon_mask"])
    per_image = [{"index": k, "side_x1e-2": _finite_or_none(ev["side"][k] * SIDE_SCALE),
                  "mad_deg": _finite_or_none(ev["mad"][k]),
                  "eval_pixels": int(ev["mask"][k].sum()), "invert_loss": inv_losses[k],
                  "relief": reliefs[k], "relief_gt": _finite_or_none(gt_relief[k]),
                  "seconds": results[k].times["steps"]["total"]} for k in range(n)]
    parts: dict = {}
    for r in results:
        for name, v in r.times["parts"].items():
            parts[name] = parts.get(name, 0.0) + v["seconds"]
    metrics = {
        "gan2shape": summary(ev),
        "concave": sum(r is not None and r < 0 for r in reliefs),
        "baselines": {k: summary(v) for k, v in base.items()},
        "paired": vs,
        "fitted_prior": fitted,
        "per_image": per_image,
        "oracle_samples": bool(oracle_samples),
        "pretrained": None if init is None else {"digest": pretrained_digest(init), "images": init.get("images"),
                                                 "config": init.get("config"), "key": init.get("key")},
        "n": n, "image_size": S, "data": {"dataset": "SyntheticFaces", "split": split, "seed": data_seed},
        "protocol": "Unsup3d: depth in the predicted input view vs ground-truth view depth; eroded intersection "
                    "of gt (depth < max) and predicted (recon depth < 1.2) masks; SIDE x 1e-2, MAD degrees; "
                    "mean +- population std over images",
        "invert": {"steps": invert_steps, "lr": invert_lr, "seconds": round(t_invert, 3)},
        "times": {"total_seconds": round(time.perf_counter() - t_start, 3),
                  "per_image_seconds_mean": float(np.mean([r.times["steps"]["total"] for r in results])),
                  "parts_seconds_total": {k: round(v, 4) for k, v in sorted(parts.items())}},
        "config": config.to_dict(),
        "published_bfm_unsup3d": {"side_x1e-2": "0.793 +- 0.140", "mad_deg": "16.51 +- 1.56"},
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    log(format_metrics(ev, f"{'oracle' if oracle_samples else 'gan2shape':16s}"))
    for k, v in base.items():
        log(format_metrics(v, f"{k:16s}"))
    for k, v in vs.items():
        log(format_paired(v, k))
    log(relief_line(reliefs, gt_relief.tolist()))
    return metrics
