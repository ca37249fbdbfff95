"""Can a StyleGAN2 show the same face from several sides? (What GAN2Shape's projected samples need.)

Renders held-out synthetic faces at several yaws, inverts every picture into W, and prints the L1 error
of G(w) per yaw (over the face and over the whole picture), with a PNG of targets and G(w) per face
(``models.gan2shape.pipeline.multiview_inversion``). Use it to compare generators before spending a
GAN2Shape run on them: a generator that can turn a face keeps the face error low and flat across yaws, and
well below the "unturned" reference (the picture nearest 0 deg shown for every yaw) away from 0 deg.

    python tools/probe_generator.py --gan synface64 --out probe.png
    python tools/probe_generator.py --gan runs/sg2/stylegan2.pt --n 8 --yaws -30 0 30 --json probe.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from voxrender.io import image_grid, save_png
from voxrender.models.gan2shape.pipeline import load_gan, multiview_inversion


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gan", required=True, help="a StyleGAN2 checkpoint (port format) or a shipped name (synface64)")
    p.add_argument("--n", type=int, default=4, help="held-out faces (default 4)")
    p.add_argument("--yaws", type=float, nargs="+", default=[-30.0, -15.0, 0.0, 15.0, 30.0],
                   help="yaws in degrees (default -30 -15 0 15 30; the synthetic faces span +-30)")
    p.add_argument("--steps", type=int, default=200, help="inversion steps per picture (default 200, as eval-gan2shape)")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the held-out faces (default 0)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=None, help="PNG: per face a row of targets and a row of G(w)")
    p.add_argument("--json", default=None, help="write the errors here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        G, D = load_gan(args.gan, args.device)
        t = time.perf_counter()
        r = multiview_inversion(G, D, args.n, args.yaws, steps=args.steps, data_seed=args.data_seed, progress=True)
    except (FileNotFoundError, ValueError) as e:
        print(f"probe_generator: {e}", file=sys.stderr)
        return 2
    secs = time.perf_counter() - t
    face, whole, still = r["l1_face"], r["l1"], r["l1_face_still"]
    print(f"{args.gan}: {args.n} faces x {len(args.yaws)} yaws, {args.steps} inversion steps, {secs:.0f} s")
    print("yaw (deg)   L1 face (mean +- std)   L1 picture   unturned face (the reference: the picture nearest 0 deg)")
    for j, y in enumerate(r["yaws"]):
        print(f"{y:9.1f}   {face[:, j].mean():.4f} +- {face[:, j].std(unbiased=False):.4f}      "
              f"{whole[:, j].mean():.4f}       {still[:, j].mean():.4f}")
    print(f"{'all':>9}   {face.mean():.4f} +- {face.std(unbiased=False):.4f}      {whole.mean():.4f}       "
          f"{still.mean():.4f}")
    if args.out:
        rows = [im for k in range(args.n) for im in (*r["target"][k], *r["image"][k])]
        print("wrote", save_png(image_grid(rows, ncol=len(args.yaws), scale=2), args.out))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"gan": args.gan, "n": args.n, "yaws": r["yaws"], "steps": args.steps,
                       "data_seed": args.data_seed, "seconds": round(secs, 1),
                       "l1_face": face.tolist(), "l1": whole.tolist(), "l1_face_still": still.tolist()}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
