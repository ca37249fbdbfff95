"""Do GAN2Shape's projected samples turn the way their pseudo samples were turned? A developer diagnostic.

GAN2Shape learns the viewpoint from projected samples G(w + dw): re-renderings of the current shape in
random views (pseudo samples), pulled onto the GAN's image manifold by the offset encoder E (step 2). If the
projected samples do not turn with the views they were rendered in, step 3 gets no usable viewpoint signal.

For held-out synthetic face FACE (inverted into W), this runs step 1 and step 2 (STEPS iterations each) of a
per-image run from pretrained networks (--pretrained, OUT/pretrained.pt or a checkpoint.pt of
`pretrain-gan2shape`) or from the ellipsoid prior (no --pretrained: step 0 first), then renders SAMPLES pseudo
samples in random views, projects them, and measures the yaw of both with a YARDSTICK viewpoint net (the V of
other pretrained networks that is known to read the built-in faces' yaw, e.g. an oracle pretraining:
`pretrain-gan2shape --data synthetic-faces --oracle-samples`). It prints the slopes and correlations of the
yardstick's yaw against the sampled yaw, and writes pseudo samples (top) over projected samples (bottom),
sorted by sampled yaw, to --out (and the inverted samples of --invert-samples below them).

--fresh-encoder re-initialises E before step 2 (is it E's pretrained weights?); --true-renders replaces the
pseudo samples by exact renderings of the face's ground truth in the same views and lights (is it E and the
generator, or the pseudo samples?); --true-outline cuts the pseudo samples out with the face's true head
outline, turned as the dataset turns it (is it their outline?).

    python tools/diag_projection_turn.py --pretrained pre/pretrained.pt --yardstick opre/pretrained.pt --out turn.png
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys

import torch

from voxrender.models.gan2shape.prior import PRIOR_BOX_NAMES, box_category


def _as_if_made_for(init: dict, cfg) -> dict:
    """``init`` with its recorded depth frame (anchor, prior) replaced by ``cfg``'s: this tool applies the anchor
    to networks pretrained without it on purpose, which ``check_pretrained`` refuses for a real run."""
    if init.get("config") is not None:
        init["config"] = dict(init["config"], depth_anchor=cfg.depth_anchor, tilt_anchor=cfg.tilt_anchor,
                              anchor_frame=cfg.anchor_frame,
                              prior_near=cfg.prior_near, prior_far=cfg.prior_far, category=cfg.category)
    return init


def _nets_of(path) -> dict:
    """{'nets', 'config', 'style_dim'} of a pretrained.pt or a pretraining checkpoint.pt."""
    ck = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(ck, dict) or "nets" not in ck:
        raise ValueError(f"{path}: not pretrained GAN2Shape networks (pretrained.pt or checkpoint.pt of pretrain-gan2shape)")
    out = {"nets": ck["nets"], "config": ck.get("config") or ck.get("key", {}).get("config")}
    if ck.get("style_dim") is not None:
        out["style_dim"] = ck["style_dim"]
    return out


def _slope(x: torch.Tensor, y: torch.Tensor) -> float:
    x, y = x.double() - x.double().mean(), y.double() - y.double().mean()
    return float((x * y).sum() / (x * x).sum().clamp(min=1e-12))


def _corr(x: torch.Tensor, y: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([x.double(), y.double()]))[0, 1])


@torch.no_grad()
def _fit_yaw(m, images: torch.Tensor, views: torch.Tensor, lights: torch.Tensor, step_deg: float = 2.0,
             max_deg: float = 60.0) -> torch.Tensor:
    """Per image (n, 3, S, S), the yaw in [-max_deg, max_deg] (a grid) whose rendering of ``m``'s canonical
    depth and albedo, in ``views`` with that yaw and under ``lights``, has the lowest step-3 photometric loss."""
    from voxrender.models.gan2shape.renderer import reconstruct

    grid = torch.arange(-max_deg, max_deg + step_deg / 2, step_deg, dtype=views.dtype)
    n = images.shape[0]
    losses = torch.empty(n, len(grid))
    depth, albedo = m.canon["depth"].expand(n, -1, -1), m.canon["albedo"].expand(n, -1, -1, -1)
    for j, yaw in enumerate(grid):
        v = views.clone()
        v[:, 1] = math.radians(float(yaw))
        rec = reconstruct(depth, albedo, v, lights, clamp=True)
        mask = rec.mask[:, None]
        for i in range(n):
            losses[i, j] = m._photo_loss(rec.image[i:i + 1], images[i:i + 1], mask[i:i + 1])
    return torch.deg2rad(grid[losses.argmin(1)])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gan", default="synface64", help="StyleGAN2 checkpoint or shipped name (default synface64)")
    p.add_argument("--pretrained", default=None, help="networks to start from (default: the ellipsoid prior)")
    p.add_argument("--yardstick", required=True, help="pretrained networks whose V reads the faces' yaw")
    p.add_argument("--face", type=int, default=0, help="held-out face index (default 0)")
    p.add_argument("--steps", type=int, default=300, help="iterations of step 1 and of step 2 (default 300)")
    p.add_argument("--samples", type=int, default=48, help="pseudo samples measured (default 48)")
    p.add_argument("--prior-steps", type=int, default=1000, help="step 0 iterations without --pretrained (default 1000)")
    p.add_argument("--fresh-encoder", action="store_true", help="re-initialise E before step 2")
    p.add_argument("--true-renders", action="store_true", help="exact renderings of the face as pseudo samples")
    p.add_argument("--depth-shift", type=float, default=0.0,
                   help="move the canonical depth of the pseudo samples away from the camera by this much (is it "
                        "where the face sits against the rotation centre at depth 1?)")
    p.add_argument("--depth-anchor", action="store_true",
                   help="the run keeps its canonical depth's mean over the object mask at the prior's "
                        "(GAN2ShapeConfig.depth_anchor)")
    p.add_argument("--prior-near", type=float, default=None, help="the prior's centre depth (default: the preset's)")
    p.add_argument("--prior-far", type=float, default=None, help="the prior's rim depth (default: the preset's)")
    p.add_argument("--true-outline", action="store_true",
                   help="pseudo samples of the predicted face cut out by the face's true head outline, turned as "
                        "the dataset turns it (is it the outline?)")
    p.add_argument("--fit-yaw", action="store_true",
                   help="also the yaw that best explains each sample: the photometric loss of step 3 (L1 + "
                        "perceptual) of the current canonical depth / albedo rendered in the sample's sampled view "
                        "and light, its yaw replaced by each of -60 ... 60 deg in 2 deg steps; the argmin against "
                        "the sampled yaw (what a perfect V could learn from these samples with this shape)")
    p.add_argument("--invert-samples", type=int, default=0, metavar="STEPS",
                   help="also invert every pseudo sample into W on its own (STEPS steps of the W inversion from the "
                        "face's w): is it E (the offset encoder) or the generator that cannot turn the face?")
    p.add_argument("--from-encoder", action="store_true",
                   help="--invert-samples starts from E's projection w + dw (a refinement) instead of w")
    p.add_argument("--tilt-anchor", action="store_true",
                   help="with --depth-anchor: hold the canonical depth's vertical tilt at the prior's too (as the "
                        "pretraining did)")
    p.add_argument("--anchor-frame", default="input", choices=("input", "canonical"),
                   help="with --depth-anchor: the frame the anchors hold the depth in (as the pretraining did)")
    p.add_argument("--prior-box", default=None, choices=PRIOR_BOX_NAMES,
                   help="the ellipsoid prior's box rule (default: the synface preset's; pass the pretraining's)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=None, help="PNG of pseudo (top) and projected (bottom) samples")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from voxrender.data.faces import SyntheticFaces
    from voxrender.io import image_grid, save_png
    from voxrender.models.gan2shape import model as M
    from voxrender.models.gan2shape.invert import invert
    from voxrender.models.gan2shape.networks import build_networks
    from voxrender.models.gan2shape.pipeline import _face_oracle, load_gan

    G, D = load_gan(args.gan)
    cfg = M.GAN2ShapeConfig.from_preset("synface", collect_iters=1, image_size=G.size, prior_steps=args.prior_steps,
                                        prior_near=args.prior_near, prior_far=args.prior_far)
    if args.prior_box is not None:
        cfg = dataclasses.replace(cfg, category=box_category(args.prior_box))
    run_cfg = dataclasses.replace(cfg, depth_anchor=args.depth_anchor, tilt_anchor=args.tilt_anchor,
                                  anchor_frame=args.anchor_frame).validate()
    init = _as_if_made_for(_nets_of(args.pretrained), run_cfg) if args.pretrained else None
    yard = M.GAN2Shape(G, D, cfg)
    yard._build_nets(0, _as_if_made_for(_nets_of(args.yardstick), cfg))
    yard._reset_run_state(0)
    yard.nets.eval()
    b = SyntheticFaces(args.face + 1, size=G.size, split="test").get_batch([args.face])
    inv = invert(G, b["image"], 200, D=D)
    m = M.GAN2Shape(G, D, run_cfg)
    m.oracle, m.timer = None, M.Timer(m.device)
    with m._frozen():
        m.setup(b["image"][0], inv.w[0], None, None, 0, init)
        if init is None:
            m.fit_prior()
        if args.true_renders:
            truth = _face_oracle(b, 0)

            def render(views, lights):
                im, mk = truth(views, lights)
                return im, mk[:, None]

            m._render_pseudo = render
        if args.true_outline:
            from voxrender.data.faces import head_mask
            from voxrender.models.gan2shape.renderer import reconstruct

            def render(views, lights):
                rec = reconstruct(m.canon["depth"], m.canon["albedo"], views, lights, clamp=True)
                soft = head_mask(rec.grid, b["head"].expand(len(views), -1)) * rec.mask
                return rec.image * soft[:, None], (soft[:, None] > 0.5).float()

            m._render_pseudo = render
        if args.depth_shift:
            prepare = m._prepare_canonical

            def shifted():
                prepare()
                m.canon["depth"] = m.canon["depth"] + args.depth_shift

            m._prepare_canonical = shifted
        if args.fresh_encoder:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(1)
                fresh = build_networks(m.S, G.style_dim, cfg.nf, cfg.zdim, cfg.enc_nf)
            m.nets["offset"].load_state_dict(fresh["offset"].state_dict())
        m.step1(args.steps, True)
        m.step2(args.steps)
        views, lights = m._random_views_lights(args.samples)
        with torch.no_grad():
            pseudo, _ = m._render_pseudo(views, lights)
            proj, _ = m.project(pseudo)
            yp = yard.predict(pseudo * 2 - 1)["view"][:, 1]
            yq = yard.predict(proj * 2 - 1)["view"][:, 1]
        inverted = None
        if args.invert_samples:
            start = m.project(pseudo, parts=True)[2] if args.from_encoder else m.w.expand(len(pseudo), -1)
            inverted = invert(G, pseudo, args.invert_samples, D=D, w_init=start.detach()).image
            inverted = inverted.to(pseudo)
        fits = None
        if args.fit_yaw:
            fits = {"pseudo": pseudo, "projected": proj, **({} if inverted is None else {"inverted": inverted})}
            fits = {k: _fit_yaw(m, x, views, lights) for k, x in fits.items()}
    t = views[:, 1]
    deg = math.degrees
    print(f"face {args.face} (true yaw {deg(b['view'][0, 1]):.1f} deg), start: {args.pretrained or 'ellipsoid prior'}"
          f"{', fresh E' if args.fresh_encoder else ''}{', TRUE RENDERS as pseudo samples' if args.true_renders else ''}"
          f"{', the TRUE OUTLINE' if args.true_outline else ''}"
          f"{f', canonical depth shifted by {args.depth_shift:+g}' if args.depth_shift else ''}"
          f"{', depth anchored to the prior' if args.depth_anchor else ''}")
    print(f"sampled yaw: std {deg(t.std()):.1f} deg over {args.samples} samples")
    print(f"yardstick yaw of the pseudo samples:    slope {_slope(t, yp):+.2f}, corr {_corr(t, yp):+.2f} against the sampled yaw")
    print(f"yardstick yaw of the projected samples: slope {_slope(t, yq):+.2f}, corr {_corr(t, yq):+.2f} against the "
          f"sampled yaw; slope {_slope(yp, yq):+.2f} against the pseudo samples'")
    if fits is not None:
        for name, f in fits.items():
            print(f"best-fitting yaw of the {name} samples:{' ' * (10 - len(name))}slope {_slope(t, f):+.2f}, "
                  f"corr {_corr(t, f):+.2f} against the sampled yaw")
    if args.out:
        idx = torch.argsort(t)[:: max(1, args.samples // 8)][:8]
        rows = list(pseudo[idx].cpu()) + list(proj[idx].cpu()) + ([] if inverted is None else list(inverted[idx].cpu()))
        print("wrote", save_png(image_grid(rows, len(idx), scale=2), args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
