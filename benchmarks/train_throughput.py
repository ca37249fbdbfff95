"""Training throughput of the voxel VAE in its published configuration, and the share of each step spent in
``project_volume`` (forward + backward): issue 4's GPU target, also runnable on the CPU.

    python benchmarks/train_throughput.py --device cuda --markdown OUT.md --json OUT.json
    python benchmarks/train_throughput.py --device cpu --threads 1 --grids 28 --steps 5

For every grid (default 28 and 64; the image size follows the grid), batch 64, Adam 1e-3, gradient clip 1.0,
19 + 1 latents, the encoder pose (``VAEConfig.for_grid``), one training step is the trainer's step
(:meth:`VAETask.training_step`: forward, loss, backward, clip, Adam) on a batch already on the device:

- **images/s** = batch / median step time over ``--steps`` timed steps (after ``--warmup``), with the device
  synchronised after every step. Making the batch (the built-in shapes are rendered on the fly) is timed
  apart (``data_ms``: one ``VoxelShapes.get_batch`` of the same size, on the CPU, as the trainer does).
- **project_volume share**: the same steps again with the renderer instrumented: the forward call is timed
  between two synchronisations, and the backward from the moment the gradient of its output is ready (a
  tensor hook) to the moment the gradient of its voxel input is ready (a hook on the voxels, which feed only
  the renderer). share = (forward + backward) / the uninstrumented median step time.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import torch  # noqa: E402

from compare_projection import collect_metadata  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class TimedRenderer(torch.nn.Module):
    """Wraps the VAE's ``VolumeProjector``: records the forward and backward time of every call."""

    def __init__(self, inner: torch.nn.Module, device: torch.device):
        super().__init__()
        self.inner, self.device = inner, device
        self.fwd: list[float] = []
        self.bwd: list[float] = []

    def forward(self, voxels, **kw):
        sync(self.device)
        t0 = time.perf_counter()
        out = self.inner(voxels, **kw)
        sync(self.device)
        self.fwd.append(time.perf_counter() - t0)
        if out.requires_grad and voxels.requires_grad:
            start = {}

            def out_ready(grad):  # the gradient of the image is complete: the renderer's backward starts
                sync(self.device)
                start["t"] = time.perf_counter()

            def voxels_ready(grad):  # the renderer's backward has produced d(loss)/d(voxels)
                sync(self.device)
                self.bwd.append(time.perf_counter() - start["t"])

            out.register_hook(out_ready)
            voxels.register_hook(voxels_ready)
        return out


def measure_grid(grid: int, args, device: torch.device) -> dict:
    from voxrender.data.voxel_shapes import VoxelShapes
    from voxrender.models.vae.model import VAEConfig
    from voxrender.models.vae.train import VAETask

    torch.manual_seed(0)
    cfg = VAEConfig.for_grid(grid, backend=args.backend)
    task = VAETask(cfg, lr=1e-3, grad_clip=1.0, device=str(device))
    ds = VoxelShapes("train", grid, length=max(args.batch, 256), seed=0)
    t0 = time.perf_counter()
    batch = ds.get_batch(list(range(args.batch)))
    data_ms = (time.perf_counter() - t0) * 1e3
    batch = {"image": batch["image"].to(device)}

    class _Trainer:  # what training_step needs from the trainer
        def check_finite(self, loss, logs=None):
            if not torch.isfinite(loss.detach()).all():
                raise RuntimeError(f"non-finite loss at grid {grid}")

    tr = _Trainer()

    def step():
        task.training_step(batch, tr)
        sync(device)

    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    step_s = statistics.median(times)

    timed = TimedRenderer(task.model.render, device)
    task.model.render = timed
    for _ in range(args.steps):
        step()
    task.model.render = timed.inner
    fwd, bwd = statistics.median(timed.fwd), statistics.median(timed.bwd)
    from voxrender.backends import select_backend
    from voxrender.ops.volume_projection import OP

    backend = select_backend(OP, device, torch.float32, args.backend)
    return {
        "grid": grid, "image_size": cfg.image_size, "batch": args.batch, "steps_timed": args.steps,
        "step_ms_median": step_s * 1e3, "step_ms_min": min(times) * 1e3, "step_ms_max": max(times) * 1e3,
        "images_per_s": args.batch / step_s,
        "project_volume_forward_ms": fwd * 1e3, "project_volume_backward_ms": bwd * 1e3,
        "project_volume_share": (fwd + bwd) / step_s,
        "data_ms": data_ms, "backend": backend,
        "parameters": sum(p.numel() for p in task.model.parameters()),
    }


def to_markdown(report: dict) -> str:
    m = report["metadata"]
    lines = [f"# Voxel VAE training throughput ({m['device']}, {m['date']})", "",
             f"Command: `{m['command']}`", "",
             f"Machine: {m.get('gpu') or m['cpu_model']}; {m['cpu_count']} CPUs; torch {m['torch']} "
             f"({m['torch_threads']} threads), triton {m['triton']}, voxrender {m['voxrender']}, commit "
             f"{m['git'].get('commit')}. Load average at start: {m['load_average_at_start']}."
             + (f" Note: {m['machine_note']}." if m.get("machine_note") else ""), "",
             "Published configuration (batch 64, Adam 1e-3, clip 1.0, 19 + 1 latents, encoder pose); one step = "
             "forward, loss, backward, clip, Adam on a batch already on the device; medians over the timed "
             "steps. project_volume = its forward + backward inside the same steps (method: "
             "`benchmarks/train_throughput.py`).", "",
             "| grid / image (project_volume backend) | images/s | step ms (min-max) | project_volume fwd + bwd ms | share of the step | "
             "making the batch (CPU) ms |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in report["results"]:
        lines.append(f"| {r['grid']}^3 / {r['image_size']} px ({r['backend']}) | {r['images_per_s']:.0f} | "
                     f"{r['step_ms_median']:.1f} ({r['step_ms_min']:.1f}-{r['step_ms_max']:.1f}) | "
                     f"{r['project_volume_forward_ms']:.2f} + {r['project_volume_backward_ms']:.2f} | "
                     f"{100 * r['project_volume_share']:.1f}% | {r['data_ms']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--grids", type=int, nargs="+", default=[28, 64], help="voxel grids (image size = grid)")
    p.add_argument("--batch", type=int, default=64, help="batch size (published: 64)")
    p.add_argument("--steps", type=int, default=20, help="timed steps (each pass)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--backend", default=None, help="project_volume backend (default: the automatic choice)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--date", default=None, help="date to record (default: now, UTC)")
    p.add_argument("--machine", default=None, help="a note on the machine, recorded in the results")
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--markdown", default=None, help="write a Markdown table here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    results = []
    for grid in args.grids:
        r = measure_grid(grid, args, device)
        results.append(r)
        print(f"grid {grid}: {r['images_per_s']:.0f} images/s, step {r['step_ms_median']:.1f} ms, project_volume "
              f"{r['project_volume_forward_ms']:.2f} + {r['project_volume_backward_ms']:.2f} ms "
              f"({100 * r['project_volume_share']:.1f}%)", flush=True)
    args.date = args.date or _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    report = {"metadata": collect_metadata(args, device), "results": results}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    md = to_markdown(report)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
