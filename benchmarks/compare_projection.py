"""Side-by-side timing of voxrender.project_volume and the plain-PyTorch grid_sample pipeline.

    python benchmarks/compare_projection.py [--device cpu|cuda] [--sizes 16x32 64x64 ...] [--repeat N]
                                            [--json out.json] [--markdown out.md]

In one process, on the same inputs (random azimuths; ``--elevation`` adds random elevations), it times every
voxrender backend that can run on the device beside ``grid_sample`` (``baselines.py``: affine_grid +
grid_sample + reduction, what users write today), forward and forward+backward, and prints median
milliseconds, the speed-up over grid_sample, the peak memory of each variant and how far each variant's
images and gradients are from grid_sample's (a check that the comparison is like for like).

Peak memory. CUDA: ``torch.cuda.max_memory_allocated`` during one call, minus what was allocated before
it (inputs excluded). CPU (torch's CPU allocations are invisible to tracemalloc), two measures: the peak of
torch's CPU allocator during one call from the torch profiler's memory timeline (exact bytes), and the
OS's view: each variant runs once more in a fresh subprocess that loads everything, warms up on a tiny input, allocates the inputs, resets
the kernel's peak-RSS mark (``/proc/self/clear_refs``), runs one call and reads ``VmHWM - VmRSS`` (with
glibc's mmap threshold, trim threshold and top pad pinned so that freed or pre-reserved heap cannot hide
later allocations). Without clear_refs it falls back to ``ru_maxrss`` growth over the pre-call RSS.

CUDA only: device-to-device bandwidth from a large ``copy_`` ((read + written bytes) / time) and each
variant's fraction of the memory-bandwidth floor (``bench_cases.floor_bytes`` / bandwidth; see README.md).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import gc
import glob
import importlib
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import torch  # noqa: E402

import voxrender as vr  # noqa: E402
from bench_cases import (BASELINE, CPU_SIZES, GPU_SIZES, PASSES, Size, floor_bytes, make_inputs,  # noqa: E402
                         make_step, synchronize)

PEERS = ("pytorch3d", "nvdiffrast")
VARIANT_LABELS = {BASELINE: "grid_sample (PyTorch)", "cpu": "voxrender cpu", "cuda": "voxrender cuda",
                  "triton": "voxrender triton", "torch": "voxrender torch (reference)"}
MIB = 1024.0 ** 2

CPU_MEMORY_METHOD = (
    "CPU peak memory, two measures. 'peak MiB': the peak of torch's CPU allocator during one call beyond "
    "what was live before it (the inputs), from the torch profiler's memory timeline (profile_memory=True, "
    "export_memory_timeline): exact bytes, counted by the allocator. 'RSS MiB': each variant runs once "
    "in a fresh subprocess (same seed, same inputs) after a "
    "warm-up on a tiny input; peak = VmHWM after the call - VmRSS before it, with the peak-RSS mark reset "
    "(/proc/self/clear_refs) once the inputs exist, and MALLOC_MMAP_THRESHOLD_=65536 MALLOC_TRIM_THRESHOLD_=0 "
    "MALLOC_TOP_PAD_=0 so that freed or pre-reserved heap cannot hide later allocations. It counts every byte the call touched beyond the inputs (outputs, tensors "
    "saved for backward, gradients, temporaries), at page granularity; small allocations (< ~0.5 MiB) can land in free heap fragments and not show.")
CUDA_MEMORY_METHOD = (
    "CUDA peak memory: torch.cuda.max_memory_allocated() during one call minus memory_allocated() before "
    "it (the inputs are excluded; outputs, saved tensors, gradients and temporaries are counted).")


# --------------------------------------------------------------------------------------------------
# Metadata

def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _mem_total_gib() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 1024 ** 2
    except OSError:
        pass
    return None


class OtherLoad:
    """CPU time that other processes used while this script ran, as a fraction of the machine: (busy time
    in /proc/stat - this process's and its children's CPU time) / (wall time x logical CPUs)."""

    def __init__(self):
        self.start = self._sample()

    @staticmethod
    def _sample():
        try:
            with open("/proc/stat") as f:
                fields = [int(x) for x in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        busy = (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # all but idle, iowait
        t = os.times()
        return time.time(), busy, t.user + t.system + t.children_user + t.children_system

    def fraction(self) -> float | None:
        end = self._sample()
        if self.start is None or end is None:
            return None
        wall, busy, own = (e - s for e, s in zip(end, self.start))
        return max(0.0, (busy - own) / (wall * (os.cpu_count() or 1)))


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _version(module: str) -> str:
    try:
        return getattr(importlib.import_module(module), "__version__", "installed (no __version__)")
    except ImportError:
        return "not installed"
    except Exception as e:  # a broken install reads as such, not as a crash
        return f"failed to import ({type(e).__name__}: {e})"


def _git_state() -> dict:
    """The commit measured, and whether the code that runs (csrc, voxrender, setup.py) differs from it."""
    root = os.path.dirname(HERE)

    def git(*cmd):
        try:
            return subprocess.run(["git", "-C", root, *cmd], capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            return ""

    commit = git("rev-parse", "--short", "HEAD").strip()
    if not commit:
        return {"commit": None}
    dirty = git("status", "--porcelain", "--", "csrc", "voxrender", "setup.py", "benchmarks")
    ext = sorted(glob.glob(os.path.join(root, "voxrender", "_C*.so")) + glob.glob(os.path.join(root, "voxrender", "_C*.pyd")))
    built = (_dt.datetime.fromtimestamp(os.path.getmtime(ext[0]), _dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
             if ext else None)
    return {"commit": commit, "extension_built": built, "uncommitted_changes": [line for line in dirty.splitlines() if line.strip()]}


def machine_metadata(args, device: torch.device, backends: dict, peers: dict) -> dict:
    """What every result file records: date, command, machine, versions, code state, load; ``backends``
    (availability per backend) and ``peers`` (peer library versions) come from the calling script."""
    mem = _mem_total_gib()
    meta = {
        "date": args.date or _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0])] + sys.argv[1:]),
        "device": str(device),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "memory_gib": round(mem, 1) if mem else None,
        "torch_threads": torch.get_num_threads(),
        "machine_note": args.machine,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "triton": _version("triton"),
        "voxrender": vr.__version__,
        "git": _git_state(),
        "backends": backends,
        "peers": peers,
        "load_average_at_start": _loadavg(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        meta["gpu"] = props.name
        meta["gpu_memory_gib"] = round(props.total_memory / 1024 ** 3, 1)
        meta["cuda"] = torch.version.cuda
        meta["cudnn"] = torch.backends.cudnn.version()
    return meta


def collect_metadata(args, device: torch.device) -> dict:
    return machine_metadata(args, device, {b: (r or "available") for b, r in vr.available_backends(device).items()},
                            {p: _version(p) for p in PEERS})


# --------------------------------------------------------------------------------------------------
# Measurements

def measure_bandwidth(device: torch.device, nbytes: int = 1 << 30, iters: int = 20) -> dict:
    """Device-to-device copy bandwidth: (bytes read + bytes written) / time of ``dst.copy_(src)``."""
    n = nbytes // 4
    src = torch.empty(n, device=device, dtype=torch.float32).uniform_()
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    torch.cuda.synchronize(device)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        dst.copy_(src)
    end.record()
    torch.cuda.synchronize(device)
    seconds = start.elapsed_time(end) / 1e3 / iters
    del src, dst
    torch.cuda.empty_cache()
    return {"bytes_per_copy": 2 * n * 4, "copy_ms": seconds * 1e3, "gb_per_s": 2 * n * 4 / seconds / 1e9}


def time_round_robin(steps: dict, repeat: int, warmup: int, device: torch.device) -> dict:
    """Warm each variant up, then time one call of each variant in turn, ``repeat`` rounds (so slow drifts of
    the machine hit every variant alike). Each callable synchronises the GPU itself before returning."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    synchronize(device)
    times = {v: [] for v in steps}
    for _ in range(repeat):
        for v, step in steps.items():
            t0 = time.perf_counter()
            step()
            times[v].append((time.perf_counter() - t0) * 1e3)
    return times


@contextlib.contextmanager
def _quiet_stderr():
    """Silences the C++ profiler's start/stop lines on file descriptor 2."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def profiler_peak_bytes(step) -> int | None:
    """Peak bytes held by torch's CPU allocator during one call beyond what was live before it, from the
    torch profiler's memory timeline (exact, allocator-level). None if this torch cannot produce it."""
    import tempfile
    import warnings

    from torch.profiler import ProfilerActivity, profile

    try:
        with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True,
                                      with_stack=True) as prof:
            result = step()
            del result
        with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # export_memory_timeline is deprecated in favour of CUDA-only tools
            path = os.path.join(tmp, "timeline.json")
            prof.export_memory_timeline(path, device="cpu")
            with open(path) as f:
                _, sizes = json.load(f)
    except Exception as e:  # noqa: BLE001 (an optional measurement: report it missing, do not fail the run)
        print(f"warning: torch profiler memory timeline unavailable ({type(e).__name__}: {e})", file=sys.stderr)
        return None
    totals = [sum(s) for s in sizes]
    return max(totals) - totals[0] if totals else None


def cuda_peak_bytes(step, device: torch.device) -> int:
    gc.collect()
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    result = step()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - before
    del result
    return peak


def cpu_peak_bytes(size: Size, mode: str, pass_: str, variant: str, elevation: bool, threads: int) -> dict:
    """Runs one call of the variant in a fresh subprocess (see CPU_MEMORY_METHOD)."""
    spec = json.dumps({"size": [size.batch, size.grid, size.image, size.samples], "mode": mode, "pass": pass_,
                       "variant": variant, "elevation": elevation, "threads": threads})
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0",
               MALLOC_TOP_PAD_="0")
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--memory-child", spec], env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def memory_child(spec_json: str) -> None:
    import resource

    spec = json.loads(spec_json)
    torch.set_num_threads(spec["threads"])
    size, mode, pass_, variant = Size(*spec["size"]), spec["mode"], spec["pass"], spec["variant"]
    # Warm-up on a tiny input: loads the extension and starts the thread pool outside the measurement.
    tiny = Size(2, 6, 6, 6)
    for _ in range(2):
        make_step(variant, make_inputs(tiny, mode, "random", "cpu", elevation=spec["elevation"]), mode, tiny,
                  pass_)()
    step = make_step(variant, make_inputs(size, mode, "random", "cpu", elevation=spec["elevation"]), mode, size,
                     pass_)
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM (peak RSS) to the current RSS
        method = "clear_refs"
        before = _status_kib("VmRSS")
        result = step()
        peak = _status_kib("VmHWM") - before
    except OSError:
        method = "ru_maxrss"
        before = _status_kib("VmRSS")
        result = step()
        peak = max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
    del result
    print(json.dumps({"peak_bytes": peak * 1024, "rss_before_bytes": before * 1024, "method": method}))


def max_diffs(got, want) -> tuple[float, float | None]:
    """(max |out - out_baseline|, max over gradients of max |g - g_baseline| / max |g_baseline|)."""
    out, grads = (got, ()) if isinstance(got, torch.Tensor) else got
    out_b, grads_b = (want, ()) if isinstance(want, torch.Tensor) else want
    d_out = (out.detach() - out_b.detach()).abs().max().item()
    d_grad = None
    for g, gb in zip(grads, grads_b):
        rel = ((g - gb).abs().max() / gb.abs().max().clamp_min(1e-30)).item()
        d_grad = rel if d_grad is None else max(d_grad, rel)
    return d_out, d_grad


# --------------------------------------------------------------------------------------------------
# The comparison

def variants_for(device: torch.device) -> tuple[list[str], dict]:
    """The baseline, then the voxrender backends that run here (fused first, the torch reference last)."""
    avail = vr.available_backends(device)
    order = ("cpu", "torch") if device.type == "cpu" else ("cuda", "triton", "torch")
    skipped = {b: r for b, r in avail.items() if r}
    if device.type == "cpu" and not avail["triton"]:
        # TRITON_INTERPRET=1 makes triton runnable on the CPU, but the interpreter is a correctness tool.
        skipped["triton"] = ["the Triton interpreter (TRITON_INTERPRET=1) is not benchmarked"]
    return [BASELINE] + [b for b in order if not avail[b]], skipped


def run(args) -> dict:
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch.cuda.is_available() is False on this machine")
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = [Size.parse(s) for s in args.sizes] if args.sizes else list(CPU_SIZES if device.type == "cpu"
                                                                        else GPU_SIZES)
    repeat = args.repeat or (20 if device.type == "cpu" else 50)
    variants, skipped = variants_for(device)
    other = OtherLoad()
    meta = collect_metadata(args, device)
    load = meta["load_average_at_start"]
    if device.type == "cpu" and load and load[0] > 0.5:
        print(f"warning: 1-minute load average {load[0]} before starting: other processes compete for the CPU "
              "and the timings will be noisy", file=sys.stderr)
    bandwidth = measure_bandwidth(device) if device.type == "cuda" else None
    results = []
    for size in sizes:
        for mode in args.modes:
            inputs = make_inputs(size, mode, "random", device, seed=args.seed, elevation=args.elevation)
            for pass_ in args.passes:
                steps = {v: make_step(v, inputs, mode, size, pass_) for v in variants}
                reference = steps[BASELINE]()
                diffs = {v: max_diffs(steps[v](), reference) for v in variants}
                del reference
                times = time_round_robin(steps, repeat, args.warmup, device)
                base_median = statistics.median(times[BASELINE])
                rows = []
                for v in variants:
                    t = sorted(times[v])
                    q = statistics.quantiles(t, n=4) if len(t) > 1 else [t[0]] * 3
                    row = {"size": size.label, "batch": size.batch, "grid": size.grid, "image": size.image,
                           "samples": size.samples, "mode": mode, "pass": pass_, "variant": v,
                           "median_ms": statistics.median(t), "iqr_ms": q[2] - q[0], "min_ms": t[0],
                           "times_ms": times[v], "speedup_vs_baseline": base_median / statistics.median(t),
                           "paired_speedup_vs_baseline": statistics.median(
                               b / x for b, x in zip(times[BASELINE], times[v])),
                           "max_abs_diff_out": diffs[v][0], "max_rel_diff_grad": diffs[v][1]}
                    if args.memory:
                        if device.type == "cuda":
                            row["peak_bytes"] = cuda_peak_bytes(steps[v], device)
                        else:
                            row["peak_bytes"] = profiler_peak_bytes(steps[v])
                            mem = cpu_peak_bytes(size, mode, pass_, v, args.elevation, torch.get_num_threads())
                            row["rss_peak_bytes"] = mem.get("peak_bytes")
                            row["rss_detail"] = mem
                    if bandwidth:
                        fb = floor_bytes(size, mode, pass_, inputs["density"].element_size())
                        row["floor_bytes"] = fb
                        row["floor_ms"] = fb / (bandwidth["gb_per_s"] * 1e9) * 1e3
                        row["fraction_of_floor"] = row["floor_ms"] / row["median_ms"]
                    rows.append(row)
                base_peak = rows[0].get("peak_bytes")
                for row in rows:
                    if base_peak and row.get("peak_bytes"):
                        row["memory_vs_baseline"] = base_peak / row["peak_bytes"]
                results.extend(rows)
                print(f"  measured {size.label} {mode} {pass_}", file=sys.stderr, flush=True)
                del steps
    meta["load_average_at_end"] = _loadavg()
    meta["other_processes_cpu_fraction"] = other.fraction()
    if device.type == "cpu" and (meta["other_processes_cpu_fraction"] or 0) > 0.05:
        print(f"warning: other processes used {100 * meta['other_processes_cpu_fraction']:.0f}% of the CPUs "
              "during the run; the timings are disturbed", file=sys.stderr)
    return {"metadata": meta, "repeat": repeat, "warmup": args.warmup, "seed": args.seed,
            "inputs": ("density ~ U[0, 2/N) (optical depth ~1 per ray), colour features ~ U[0, 1), azimuth ~ "
                       "U[0, 2 pi)" + (", elevation ~ U[-pi/6, pi/6]" if args.elevation else ", elevation 0")),
            "skipped_backends": skipped, "bandwidth": bandwidth,
            "memory_method": (CUDA_MEMORY_METHOD if device.type == "cuda" else CPU_MEMORY_METHOD)
            if args.memory else "not measured (--no-memory)",
            "results": results}


# --------------------------------------------------------------------------------------------------
# Report

def _fmt_ms(x: float) -> str:
    return f"{x:.3g}" if x < 1 else f"{x:.2f}" if x < 100 else f"{x:.1f}"


def _fmt_mib(b) -> str:
    if b is None:
        return "n/a"
    if b < 0.01 * MIB:
        return "<0.01"
    return f"{b / MIB:.2f}" if b < 10 * MIB else f"{b / MIB:.1f}"


def _fmt_pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _fmt_sci(x) -> str:
    return "-" if x is None else f"{x:.1e}"


def metadata_lines(m: dict, noisy: bool = False) -> list[str]:
    """The Markdown header lines of a result file from ``machine_metadata``: device, CPU, versions, code
    state, date and load, command."""
    dev = f"{m['gpu']} ({m['gpu_memory_gib']} GiB)" if m.get("gpu") else "the CPU"
    return [
        f"- device: {m['device']}, {dev}" + (f"; machine: {m['machine_note']}" if m.get("machine_note") else ""),
        f"- CPU: {m['cpu_model']} (lscpu model name), {m['cpu_count']} logical CPUs, {m['memory_gib']} GiB RAM, "
        f"torch threads {m['torch_threads']}",
        f"- torch {m['torch']}, triton {m['triton']}, voxrender {m['voxrender']}, Python {m['python']}"
        + (f", CUDA {m['cuda']}" if m.get("cuda") else ""),
        f"- platform: {m['platform']}",
        f"- code: commit {m['git'].get('commit')}" + (
            f", with uncommitted changes in {', '.join(sorted({l[3:] for l in m['git']['uncommitted_changes']}))}"
            if m["git"].get("uncommitted_changes") else "")
        + (f"; C++ extension built {m['git']['extension_built']}" if m["git"].get("extension_built") else ""),
        f"- date: {m['date']}; load average (1, 5, 15 min) at start {m['load_average_at_start']}, at end "
        f"{m.get('load_average_at_end')}; other processes used {_fmt_pct(m.get('other_processes_cpu_fraction'))} "
        "of the CPUs during the run" + (" (a shared, noisy machine: compare ratios measured in the same run, "
                                        "and prefer min ms)" if noisy else ""),
        f"- command: `{m['command']}`",
    ]


def render_markdown(report: dict) -> str:
    m = report["metadata"]
    lines = ["# voxrender.project_volume vs the grid_sample pipeline", ""]
    lines += metadata_lines(m)
    lines += [
        f"- inputs: {report['inputs']}; {report['warmup']} warm-up calls, then {report['repeat']} timed calls "
        "per variant, round-robin over the variants",
        "- backends not run: " + ("; ".join(f"{b} ({'; '.join(r)})" for b, r in report["skipped_backends"].items())
                                  or "none"),
        "- peer libraries: " + ", ".join(f"{p}: {v}" for p, v in m["peers"].items()),
    ]
    bw = report.get("bandwidth")
    if bw:
        lines.append(f"- device-to-device bandwidth (copy_ of {bw['bytes_per_copy'] / 2 / 2**30:.0f} GiB, read + "
                     f"write): {bw['gb_per_s']:.0f} GB/s")
    lines += ["", "Passes: `fwd` = forward only; `fwd+bwd` = forward + backward with gradients of density, "
              "features and the angles (pose learned through the renderer); `fwd+bwd-density` = gradients of "
              "density and features only (fixed poses).", "",
              "Speed-up = grid_sample median / variant median (> 1: faster than grid_sample); paired = median "
              "over the rounds of (grid_sample time / variant time) in the same round, robust to slow drifts of "
              "the machine; min ms is the fastest call, the least disturbed by other processes. Memory = peak "
              "beyond the inputs; 'less mem' = grid_sample peak / variant peak. Δ out = max |image - grid_sample "
              "image|; Δ grad = max over gradients of max |g - g_grid_sample| / max |g_grid_sample|.", ""]
    rss = any("rss_peak_bytes" in r for r in report["results"])
    header = ["size", "mode", "pass", "variant", "median ms", "IQR ms", "min ms", "speed-up", "paired", "peak MiB"]
    header += (["RSS MiB"] if rss else []) + ["less mem", "Δ out", "Δ grad"]
    if bw:
        header += ["floor ms", "% of floor"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join("---" if i < 4 else "---:" for i in range(len(header))) + "|")
    for r in report["results"]:
        cells = [r["size"], r["mode"], r["pass"], VARIANT_LABELS.get(r["variant"], r["variant"]),
                 _fmt_ms(r["median_ms"]), _fmt_ms(r["iqr_ms"]), _fmt_ms(r["min_ms"]), f"{r['speedup_vs_baseline']:.2f}x",
                 f"{r['paired_speedup_vs_baseline']:.2f}x",
                 _fmt_mib(r.get("peak_bytes"))] + ([_fmt_mib(r.get("rss_peak_bytes"))] if rss else []) + [
                 f"{r['memory_vs_baseline']:.1f}x" if r.get("memory_vs_baseline") else "n/a",
                 _fmt_sci(r["max_abs_diff_out"]), _fmt_sci(r["max_rel_diff_grad"])]
        if bw:
            cells += [_fmt_ms(r["floor_ms"]), f"{100 * r['fraction_of_floor']:.3g}%"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Memory method: {report['memory_method']}"]
    if bw:
        lines += ["", "Floor: the time to move the bytes a pass cannot avoid at the measured copy bandwidth. fwd: "
                  "read the volumes (density + colour) once and write the image once; fwd+bwd adds reading the "
                  "upstream gradient, reading the volumes again and writing their gradients once. '% of floor' "
                  "= floor / median (100% = bandwidth-bound with no wasted traffic)."]
    return "\n".join(lines) + "\n"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--sizes", nargs="+", metavar="BxN[xS[xK]]",
                   help="batch x grid N (N^3 volume) [x image S (S^2)] [x samples K]; default CPU: 16x32; "
                        "CUDA: 64x64 32x128")
    p.add_argument("--modes", nargs="+", default=["absorption", "emission_absorption"],
                   choices=("absorption", "sum", "max", "emission_absorption"))
    p.add_argument("--passes", nargs="+", default=list(PASSES), choices=PASSES)
    p.add_argument("--repeat", type=int, default=None, help="timed calls per variant (default CPU 20, CUDA 50)")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls per variant first (Triton JIT)")
    p.add_argument("--elevation", action="store_true", help="random elevations too (default: azimuth only)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-memory", dest="memory", action="store_false", help="skip the peak-memory measurement")
    p.add_argument("--json", metavar="PATH", help="write every number and the metadata as JSON")
    p.add_argument("--markdown", metavar="PATH", help="write the printed report as Markdown")
    p.add_argument("--machine", metavar="TEXT", help="free-text machine description recorded in the metadata")
    p.add_argument("--date", metavar="TEXT", help="date to record (default: now, UTC)")
    p.add_argument("--memory-child", metavar="JSON", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.memory_child:
        memory_child(args.memory_child)
        return
    report = run(args)
    text = render_markdown(report)
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
