"""Turns a `voxrender train stylegan2` run into a generator that ships with voxrender:
models/stylegan2/weights/NAME.pt (g_ema, d, latent_avg: what GAN2Shape needs; the non-EMA g is dropped)
and NAME.json (how it was trained, from the run's config and checkpoint, plus the notes given).

    python tools/ship_stylegan2.py RUN_DIR NAME --command "voxrender train stylegan2 ..." --note "..."
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
from pathlib import Path

import torch

from voxrender.models.stylegan2 import load_checkpoint, save_checkpoint
from voxrender.models.stylegan2.pretrained import WEIGHTS


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="the run folder (stylegan2.pt, last.ckpt, config.json)")
    p.add_argument("name", help="the shipped name (weights/NAME.pt)")
    p.add_argument("--command", required=True, help="the training command, recorded")
    p.add_argument("--note", action="append", default=[], help="a line for the record (machine, time, ...)")
    args = p.parse_args(argv)
    G, D = load_checkpoint(args.run / "stylegan2.pt")
    ck = torch.load(args.run / "last.ckpt", map_location="cpu", weights_only=False)
    dst = save_checkpoint(WEIGHTS / f"{args.name}.pt", G, D, latent_avg=G.latent_avg)
    info = {"name": args.name, "file": dst.name, "command": args.command, "steps": int(ck["step"]),
            "images_seen": int(ck["step"]) * int(ck["config"]["batch_size"]), "config": ck["config"],
            "last_logs": ck.get("logs", {}), "generator": G.config(), "discriminator": D.config(),
            "parameters": {"g_ema": sum(p.numel() for p in G.parameters()),
                           "d": sum(p.numel() for p in D.parameters())},
            "bytes": dst.stat().st_size, "exported": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "notes": args.note}
    (WEIGHTS / f"{args.name}.json").write_text(json.dumps(info, indent=2) + "\n")
    print(f"wrote {dst} ({dst.stat().st_size / 1e6:.2f} MB) and {args.name}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
