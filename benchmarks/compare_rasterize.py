"""Side-by-side timing of voxrender.rasterize (alone, and with interpolate + antialias) beside the torch brute
force and the peer rasterizers (PyTorch3D, nvdiffrast) where they are installed.

    python benchmarks/compare_rasterize.py [--device cpu|cuda] [--cases grid-10k@128 sphere-1k@256x32 ...]
                                           [--quick] [--repeat N] [--json out.json] [--markdown out.md]

In one process, on the same inputs (``raster_cases.make_inputs``: seeded scenes, a random small rotation per
batch item), it

1. checks that every variant renders the same picture: the fraction of pixels whose face id equals
   voxrender's (> 0.99 for the comparison to count; ``peers.check_like_for_like`` also reports flipped
   agreements, so a convention slip reads as such);
2. times every variant (the voxrender backends that run on the device, the torch brute force while
   faces x pixels x batch <= --torch-budget, the peers when installed) on each case x pipeline
   (``rasterize``; ``raster+interp+aa``) x pass (``fwd``; ``fwd+bwd``), round-robin over the variants, and
   prints median / IQR / min milliseconds and every ratio (another variant's median / the voxrender
   variant's median: > 1 means voxrender is faster);
3. measures the scaling (the O(faces + pixels) target): time against faces at a fixed image, time against
   pixels at fixed faces, a least-squares fit of t = a + b F + c P against t = a + d F P, and the 128^2
   depth-map mesh (32k faces) against meshes of a few thousand faces at 128^2;
4. runs ~1M faces at 2048^2 (no size cap, no silent overflow): times it and checks it, against the
   analytic sphere (holes, spill, depth) and, on windows of the image, against the torch brute force.

CUDA only: device-to-device bandwidth, each variant's memory-bandwidth floor (``raster_cases.floor_bytes``)
and peak memory (``torch.cuda.max_memory_allocated`` during one call beyond the inputs).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import torch  # noqa: E402

import voxrender as vr  # noqa: E402
import peers  # noqa: E402
import raster_cases as rc  # noqa: E402
from compare_projection import (OtherLoad, _fmt_mib, _fmt_ms, _loadavg, cuda_peak_bytes,  # noqa: E402
                                machine_metadata, measure_bandwidth, metadata_lines)
from raster_cases import Case  # noqa: E402

VARIANT_LABELS = {"cpu": "voxrender cpu", "cuda": "voxrender cuda", "triton": "voxrender triton",
                  "torch": "torch brute force", "pytorch3d": "PyTorch3D (K=1)", "nvdiffrast": "nvdiffrast"}
FAST = ("cuda", "triton", "cpu")  # the voxrender backends whose speed is measured (torch is the reference)

QUICK_CASES = (Case("sphere-1k", 64, 1), Case("grid-10k", 128, 1))
QUICK_TORCH_BUDGET = 2.2e7
TARGET_CPU_VS_TORCH = 20.0
TARGET_GPU_VS_PYTORCH3D = 5.0
TARGET_GPU_VS_NVDIFFRAST = 1.0
TARGET_SCALING_SLACK = 2.0  # a sweep's time ratio may exceed the O(F + P) prediction by this (caches, constants)
TARGET_DEPTH_MAP_RATIO = 2.0  # 32k-face depth-map mesh at 128^2 vs the 4,050-face mesh: "about the same"


# --------------------------------------------------------------------------------------------------
# Metadata

def collect_metadata(args, device: torch.device) -> dict:
    backends = {op: {b: (r or "available") for b, r in vr.available_backends(device, op=op).items()}
                for op in ("rasterize", "interpolate", "antialias") if _has_op(op)}
    return machine_metadata(args, device, backends, {p: peers.version(p) for p in rc.PEERS})


def _has_op(op: str) -> bool:
    try:
        vr.available_backends("cpu", op=op)
        return True
    except (KeyError, TypeError):
        return False


# --------------------------------------------------------------------------------------------------
# Timing

def time_variants(steps: dict, repeats: dict, warmups: dict, device: torch.device) -> dict:
    """Warm each variant up, then round-robin: one call of each variant in turn (so a slow drift of the
    machine hits every variant alike); a variant with fewer repeats (the brute force) drops out early."""
    for v, step in steps.items():
        for _ in range(warmups[v]):
            step()
    rc.synchronize(device)
    times = {v: [] for v in steps}
    for r in range(max(repeats.values(), default=0)):
        for v, step in steps.items():
            if r < repeats[v]:
                t0 = time.perf_counter()
                step()
                times[v].append((time.perf_counter() - t0) * 1e3)
    return times


def summarize(t: list[float]) -> dict:
    t = sorted(t)
    q = statistics.quantiles(t, n=4) if len(t) > 1 else [t[0]] * 3
    return {"median_ms": statistics.median(t), "iqr_ms": q[2] - q[0], "min_ms": t[0], "times_ms": t}


def candidates(device: torch.device) -> list[str]:
    order = ("cuda", "triton", "cpu", "torch") if device.type == "cuda" else ("cpu", "torch", "triton", "cuda")
    return list(order) + list(rc.PEERS)


def primary_variant(device: torch.device) -> str:
    """The first fast voxrender backend that rasterizes here (the reference of the coverage check)."""
    avail = vr.available_backends(device, op="rasterize")
    for v in FAST:
        if not avail[v]:
            return v
    return "torch"


# --------------------------------------------------------------------------------------------------
# 1 + 2: like-for-like check and timings of each case

def run_case(case: Case, args, device, bandwidth, skipped: dict) -> tuple[list[dict], dict]:
    inputs = rc.make_inputs(case, device, seed=args.seed)
    primary = primary_variant(device)
    ours = rc.face_ids(primary, inputs)
    coverage = {primary: {"agreement": 1.0, "ok": True, "coverage": (ours >= 0).double().mean().item()}}
    rows = []
    for pipeline in args.pipelines:
        for pass_ in args.passes:
            steps, repeats, warmups = {}, {}, {}
            for v in candidates(device):
                reason = rc.skip_reason(v, case, pipeline, device, torch_budget=args.torch_budget)
                if not reason and v == "torch" and pipeline not in args.torch_pipelines:
                    reason = (f"the brute force is timed on {', '.join(args.torch_pipelines)} only (--torch-pipelines; "
                              "interpolate and antialias add the same work to every variant)")
                if reason:
                    skipped.setdefault(v, {}).setdefault(reason, []).append(f"{case.id} {pipeline} {pass_}")
                    continue
                if v not in coverage:  # like for like: same faces on the same pixels, once per case
                    if rc.is_peer(v):
                        coverage[v] = peers.check_like_for_like(v, inputs, ours)
                    else:
                        agree = rc.coverage_agreement(rc.face_ids(v, inputs), ours)
                        coverage[v] = {"agreement": agree, "ok": agree > peers.AGREEMENT_THRESHOLD}
                    if not coverage[v]["ok"]:
                        print(f"warning: {v} covers {100 * coverage[v]['agreement']:.2f}% of the pixels of {case.id} "
                              f"like {primary}: not like for like ({coverage[v]})", file=sys.stderr)
                try:
                    steps[v] = rc.make_step(v, inputs, pipeline, pass_)
                except Exception as e:  # noqa: BLE001  (a peer that fails here is reported, not fatal)
                    skipped.setdefault(v, {}).setdefault(f"failed: {type(e).__name__}: {e}", []).append(
                        f"{case.id} {pipeline} {pass_}")
                    continue
                slow = v == "torch"
                repeats[v] = min(args.repeat, args.torch_repeat) if slow else args.repeat
                warmups[v] = 0 if slow else args.warmup
            failed = {}
            for v in list(steps):  # one untimed call each (not the brute force): a variant that runs out of
                if v == "torch":  # memory or raises is dropped and reported, not fatal
                    continue
                try:
                    steps[v]()
                except Exception as e:  # noqa: BLE001
                    failed[v] = f"failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
            for v, why in failed.items():
                del steps[v]
                skipped.setdefault(v, {}).setdefault(why, []).append(f"{case.id} {pipeline} {pass_}")
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            times = time_variants(steps, repeats, warmups, device)
            group = []
            for v in steps:
                row = {"case": case.id, "scene": case.scene, "faces": case.n_faces, "image": case.image,
                       "batch": case.batch, "pipeline": pipeline, "pass": pass_, "variant": v,
                       **summarize(times[v]), "coverage_agreement": coverage[v]["agreement"]}
                if device.type == "cuda" and args.memory:
                    row["peak_bytes"] = cuda_peak_bytes(steps[v], device)
                if bandwidth:
                    fb = rc.floor_bytes(case, pipeline, pass_)
                    row["floor_ms"] = fb / (bandwidth["gb_per_s"] * 1e9) * 1e3
                    row["fraction_of_floor"] = row["floor_ms"] / row["median_ms"]
                group.append(row)
            for row in group:
                if row["variant"] in FAST:
                    row["ratios"] = {o["variant"]: o["median_ms"] / row["median_ms"] for o in group if o is not row}
                    row["ratios_min"] = {o["variant"]: o["min_ms"] / row["min_ms"] for o in group if o is not row}
            rows.extend(group)
            print(f"  measured {case.label} {pipeline} {pass_}: " + ", ".join(
                f"{r['variant']} {_fmt_ms(r['median_ms'])} ms" for r in group), file=sys.stderr, flush=True)
            del steps
    return rows, coverage


# --------------------------------------------------------------------------------------------------
# 3: scaling

def time_forward(case: Case, variant: str, args, device) -> dict:
    inputs = rc.make_inputs(case, device, seed=args.seed)
    step = rc.make_step(variant, inputs, "rasterize", "fwd")
    times = time_variants({variant: step}, {variant: args.scaling_repeat}, {variant: args.warmup}, device)
    return summarize(times[variant])


def fit(points: list[dict]) -> dict:
    """Least squares, relative (each point weighted by 1 / t): t = a + b F + c P and t = a + d F P.
    Returns the coefficients and the largest relative residual of each model."""
    t = torch.tensor([p["median_ms"] for p in points], dtype=torch.float64)
    F = torch.tensor([p["faces"] for p in points], dtype=torch.float64)
    P = torch.tensor([p["pixels"] for p in points], dtype=torch.float64)
    out = {}
    for name, cols in (("linear", [torch.ones_like(t), F, P]), ("product", [torch.ones_like(t), F * P])):
        A = torch.stack(cols, 1) / t[:, None]
        coef = torch.linalg.lstsq(A, torch.ones_like(t)[:, None]).solution[:, 0]
        pred = torch.stack(cols, 1) @ coef
        out[name] = {"coef": coef.tolist(), "max_rel_residual": ((pred - t).abs() / t).max().item()}
    a, b, c = out["linear"]["coef"]
    out["linear"].update(ms_fixed=a, ns_per_face=b * 1e6, ns_per_pixel=c * 1e6)
    return out


def run_scaling(args, device, variants: list[str]) -> dict:
    faces_cases = [Case(s, args.scaling_image, 1) for s in args.scaling_faces]
    pixel_cases = [Case(args.scaling_scene, s, 1) for s in args.scaling_pixels]
    depth_cases = [Case(s, rc.DEPTH_MAP_IMAGE, 1) for s in (rc.DEPTH_MAP_SCENE,) + rc.DEPTH_MAP_REFERENCES]
    out = {"faces_image": args.scaling_image, "pixels_scene": args.scaling_scene, "variants": variants,
           "vs_faces": [], "vs_pixels": [], "depth_map": [], "fit": {}}
    for key, cases in (("vs_faces", faces_cases), ("vs_pixels", pixel_cases), ("depth_map", depth_cases)):
        for case in cases:
            row = {"case": case.id, "scene": case.scene, "faces": case.n_faces, "image": case.image,
                   "pixels": case.image ** 2, "times": {}}
            for v in variants:
                if rc.skip_reason(v, case, "rasterize", device, torch_budget=0):
                    continue
                try:
                    row["times"][v] = time_forward(case, v, args, device)
                except Exception as e:  # noqa: BLE001
                    row["times"][v] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
            out[key].append(row)
            print(f"  scaling {key} {case.label}: " + ", ".join(
                f"{v} {_fmt_ms(t['median_ms'])} ms" for v, t in row["times"].items() if "median_ms" in t),
                file=sys.stderr, flush=True)
    for v in variants:
        pts = [{"faces": r["faces"], "pixels": r["pixels"], "median_ms": r["times"][v]["median_ms"]}
               for r in out["vs_faces"] + out["vs_pixels"] if "median_ms" in r["times"].get(v, {})]
        if len(pts) >= 4:
            out["fit"][v] = fit(pts)
        dm = {r["scene"]: r["times"].get(v, {}).get("median_ms") for r in out["depth_map"]}
        if dm.get(rc.DEPTH_MAP_SCENE):
            out.setdefault("depth_map_ratios", {})[v] = {
                ref: dm[rc.DEPTH_MAP_SCENE] / dm[ref] for ref in rc.DEPTH_MAP_REFERENCES if dm.get(ref)}
    return out


# --------------------------------------------------------------------------------------------------
# 4: the big case

def window_inputs(inputs: dict, r0: int, c0: int, n: int) -> dict:
    """The scene as seen by an n x n window of the image whose top-left pixel is (r0, c0): clip x, y mapped
    so that the window's pixel centres are those of an n^2 image, and only the faces whose NDC bounding
    box meets the window (in their original order, so depth ties resolve alike)."""
    case = inputs["case"]
    S = case.image
    v = inputs["verts"].double()
    s = S / n
    tx = -1 + (1 + S - (2 * c0 + 1)) / n
    ty = -1 + (1 + S - (2 * r0 + 1)) / n
    x, y, z, w = v.unbind(-1)
    clip = torch.stack([s * x + tx * w, s * y + ty * w, z, w], -1)
    ndc = clip[..., :2] / clip[..., 3:]
    faces = inputs["faces"].long()
    tri = ndc[:, faces]  # (B, F, 3, 2)
    lo, hi = tri.amin(2), tri.amax(2)
    pad = 2.0 / n
    meets = ((lo <= 1 + pad) & (hi >= -1 - pad)).all(-1).any(0)  # any batch item
    keep = torch.nonzero(meets)[:, 0]
    sub = Case(case.scene, n, case.batch)
    return {"verts": clip.to(inputs["verts"].dtype), "faces": inputs["faces"][keep], "keep": keep, "case": sub}


def window_check(inputs: dict, face_id: torch.Tensor, n: int = 64, seed: int = 0) -> list[dict]:
    """Compares windows of a large image with the torch brute force on the same windows: the image centre,
    a window across the left silhouette and one around a random covered pixel."""
    S = inputs["case"].image
    gen = torch.Generator().manual_seed(seed)
    row_mid = S // 2 - n // 2
    mid_row = torch.nonzero(face_id[0, S // 2] >= 0)  # the left silhouette: first covered pixel of the middle row
    col_edge = (int(mid_row[0]) if len(mid_row) else S // 2) - n // 2
    covered = torch.nonzero(face_id[0] >= 0)  # a random covered pixel is the random window's centre
    if len(covered):
        pick = covered[torch.randint(0, len(covered), (1,), generator=gen).item()]
        rand = [min(max(0, int(x) - n // 2), S - n) for x in pick]
    else:
        rand = torch.randint(0, S - n + 1, (2,), generator=gen).tolist()
    out = []
    for name, (r0, c0) in (("centre", (row_mid, row_mid)), ("left silhouette", (row_mid, min(max(0, col_edge), S - n))),
                           ("random", tuple(rand))):
        win = window_inputs(inputs, r0, c0, n)
        with torch.no_grad():
            ref = vr.rasterize(win["verts"], win["faces"], n, backend="torch").face_id.long()
        if win["keep"].numel():  # back to the full mesh's face indices (an empty window stays background)
            ref = torch.where(ref >= 0, win["keep"].to(ref.device)[ref.clamp(min=0)], ref)
        crop = face_id[:, r0:r0 + n, c0:c0 + n].long().to(ref.device)
        out.append({"window": name, "top_left": [r0, c0], "size": n, "faces_in_window": int(win["keep"].numel()),
                    "agreement": (crop == ref).double().mean().item(),
                    "coverage": (crop >= 0).double().mean().item()})
    return out


def run_big(args, device, variants: list[str]) -> list[dict]:
    out = []
    for case in args.big:
        inputs = rc.make_inputs(case, device, seed=args.seed)
        for v in variants:
            if rc.skip_reason(v, case, "rasterize", device, torch_budget=0):
                continue
            row = {"case": case.id, "scene": case.scene, "faces": case.n_faces, "image": case.image,
                   "batch": case.batch, "variant": v}
            try:
                for k, pass_ in enumerate(args.passes):
                    step = rc.make_step(v, inputs, "rasterize", pass_)
                    warm = 1 if k == 0 or device.type == "cuda" else 0  # CPU: the first pass warmed up
                    times = time_variants({v: step}, {v: args.big_repeat}, {v: warm}, device)
                    row[pass_] = summarize(times[v])
                    del step
                if rc.is_peer(v):
                    fid = rc.face_ids(v, inputs)
                    row["coverage_agreement"] = rc.coverage_agreement(fid, rc.face_ids(primary_variant(device), inputs))
                else:
                    with torch.no_grad():
                        frags = vr.rasterize(inputs["verts"], inputs["faces"], case.image, backend=v)
                    fid = frags.face_id
                    row["coverage"] = (fid >= 0).double().mean().item()
                    if rc.SCENES[case.scene].kind == "sphere":
                        row["sphere_check"] = rc.sphere_check(case, fid, frags.depth)
                    row["window_check"] = window_check(inputs, fid, seed=args.seed)
                    del frags
                row["ok"] = (row.get("sphere_check", {}).get("ok", True)
                             and all(w["agreement"] > 0.999 for w in row.get("window_check", []))
                             and row.get("coverage_agreement", 1.0) > peers.AGREEMENT_THRESHOLD)
            except Exception as e:  # noqa: BLE001  (a size cap or an out-of-memory is the finding here)
                row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
                row["ok"] = False
            out.append(row)
            print(f"  big {case.label} {v}: " + ", ".join(
                f"{p} {_fmt_ms(row[p]['median_ms'])} ms" for p in args.passes if p in row)
                + (f" error {row['error']}" if "error" in row else f" ok={row['ok']}"), file=sys.stderr, flush=True)
        del inputs
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return out


# --------------------------------------------------------------------------------------------------
# Targets

def evaluate_targets(report: dict) -> list[dict]:
    """The issue's targets, each with the measured values and whether it holds (None: not measured)."""
    res = report["results"]
    targets = []

    def rows(pred):
        return [r for r in res if pred(r)]

    # CPU: >= 20x the torch brute force on a ~10k-face mesh at 128^2 (judged on rasterize, fwd and fwd+bwd;
    # the pipeline rows are listed too: interpolate and antialias add the same work to both).
    vals = [(r["case"], r["pipeline"], r["pass"], r["ratios"]["torch"]) for r in rows(
        lambda r: r["variant"] == "cpu" and r["image"] == 128 and 5_000 <= r["faces"] <= 25_000
        and "torch" in r.get("ratios", {}))]
    judged = [x for c, p, s, x in vals if p == "rasterize"]
    targets.append({"target": f"CPU: cpu >= {TARGET_CPU_VS_TORCH:g}x the torch brute force, ~10k faces at 128^2 "
                              "(judged on rasterize)",
                    "values": [f"{c} {p} {s}: {x:.1f}x" for c, p, s, x in vals],
                    "holds": (all(x >= TARGET_CPU_VS_TORCH for x in judged) if judged else None)})
    for peer, goal in (("pytorch3d", TARGET_GPU_VS_PYTORCH3D), ("nvdiffrast", TARGET_GPU_VS_NVDIFFRAST)):
        vals = [(r["variant"], r["case"], r["pipeline"], r["pass"], r["ratios"][peer]) for r in rows(
            lambda r: r["variant"] in ("cuda", "triton") and peer in r.get("ratios", {}))]
        targets.append({"target": f"GPU: >= {goal:g}x {peer} on the same scenes",
                        "values": [f"{v} {c} {p} {s}: {x:.2f}x" for v, c, p, s, x in vals],
                        "holds": ({v: all(x >= goal for vv, *_, x in vals if vv == v) for v in {x[0] for x in vals}}
                                  if vals else None)})
    sc = report.get("scaling") or {}
    for v in sc.get("variants", []):
        # Between the smallest and the largest point of each sweep: the measured time ratio against what
        # O(F + P) work predicts, (F2 + P2) / (F1 + P1), and what brute force predicts, F2 P2 / (F1 P1).
        values, ok = [], []
        sweeps = [(f"{fam} meshes at {sc['faces_image']}^2", [r for r in sc["vs_faces"] if r["scene"].startswith(fam)])
                  for fam in ("grid", "sphere")] + [(f"{sc['pixels_scene']}, images", sc["vs_pixels"])]
        for title, pts in sweeps:
            pts = sorted((r for r in pts if "median_ms" in r["times"].get(v, {})), key=lambda r: r["faces"] * r["pixels"])
            if len(pts) < 2:
                continue
            a, b = pts[0], pts[-1]
            got = b["times"][v]["median_ms"] / a["times"][v]["median_ms"]
            lin = (b["faces"] + b["pixels"]) / (a["faces"] + a["pixels"])
            prod = b["faces"] * b["pixels"] / (a["faces"] * a["pixels"])
            ok.append(got <= TARGET_SCALING_SLACK * lin)
            values.append(f"{title}, {a['case']} -> {b['case']}: {got:.3g}x (O(F+P) predicts {lin:.3g}x, "
                          f"O(F P) {prod:.3g}x)")
        if values:
            targets.append({"target": f"O(faces + pixels) ({v}): time ratios across the sweeps within "
                                      f"{TARGET_SCALING_SLACK:g}x of the O(F+P) prediction",
                            "values": values, "holds": all(ok)})
    for v, ratios in (sc.get("depth_map_ratios") or {}).items():
        targets.append({"target": f"depth map ({v}): the 128^2 grid mesh (32,258 faces) at 128^2 costs <= "
                                  f"{TARGET_DEPTH_MAP_RATIO:g}x the 4,050-face mesh",
                        "values": [f"vs {ref} ({rc.SCENES[ref].n_faces:,} faces): {x:.2f}x" for ref, x in ratios.items()],
                        "holds": (ratios["grid-4k"] <= TARGET_DEPTH_MAP_RATIO) if "grid-4k" in ratios else None})
    for b in report.get("big") or []:
        if b["variant"] in rc.PEERS:
            continue
        ms = ", ".join(f"{p} {_fmt_ms(b[p]['median_ms'])} ms" for p in ("fwd", "fwd+bwd") if p in b)
        targets.append({"target": f"{b['case']} ({b['faces']:,} faces) runs, no cap or silent overflow ({b['variant']})",
                        "values": [b.get("error") or ms], "holds": b["ok"]})
    return targets


# --------------------------------------------------------------------------------------------------
# Report

def _fmt_ratio(x) -> str:
    return "-" if x is None else f"{x:.2f}x" if x < 10 else f"{x:.1f}x"


def _holds(h) -> str:
    if h is None:
        return "not measured"
    if isinstance(h, dict):
        return ", ".join(f"{k}: {'yes' if x else 'NO'}" for k, x in sorted(h.items()))
    return "yes" if h else "NO"


def render_markdown(report: dict) -> str:
    m = report["metadata"]
    lines = ["# voxrender.rasterize vs the torch brute force and the peer rasterizers", ""]
    lines += metadata_lines(m, noisy=bool(report.get("noisy")))
    lines += [
        f"- warm-up calls: {report['warmup']}, then {report['repeat']} timed calls per variant, round-robin "
        f"(the torch brute force: no warm-up, {report['torch_repeat']} calls, on {', '.join(report['torch_pipelines'])} "
        f"only, while F x H x W x B <= {report['torch_budget']:.3g})",
        "- peer libraries: " + ", ".join(f"{p}: {v}" for p, v in m["peers"].items()),
        "- rasterize backends: " + "; ".join(f"{b}: {r if isinstance(r, str) else '; '.join(r)}"
                                            for b, r in m["backends"].get("rasterize", {}).items()),
    ]
    bw = report.get("bandwidth")
    if bw:
        lines.append(f"- device-to-device bandwidth (copy_, read + write): {bw['gb_per_s']:.0f} GB/s")
    lines += ["", f"Scenes: each mesh spans about [-1, 1]^3, {rc.DISTANCE:g} units in front of a pinhole camera with "
              f"focal length {rc.FOCAL:g} x the image size (near {rc.NEAR:g}, far {rc.FAR:g}), so it covers 55-65% of "
              f"the image at every size; each batch item has its own random rotation (Euler angles uniform in "
              f"+-{rc.MAX_ANGLE:g} rad, seed {report['seed']}). Faces int32 shared by the batch; per-vertex colours.", ""]
    lines += ["| scene | faces | mesh |", "|---|---:|---|"]
    used = sorted({r["scene"] for r in report["results"]} | {r["scene"] for k in ("vs_faces", "vs_pixels", "depth_map")
                                                             for r in (report.get("scaling") or {}).get(k, [])}
                  | {b["scene"] for b in report.get("big") or []}, key=lambda s: (rc.SCENES[s].kind, rc.SCENES[s].n_faces))
    lines += [f"| {s} | {rc.SCENES[s].n_faces:,} | {rc.SCENES[s].description} |" for s in used]

    lines += ["", "## Targets", "", "| target | measured | holds |", "|---|---|---|"]
    for t in report["targets"]:
        lines.append(f"| {t['target']} | {'<br>'.join(t['values']) or '-'} | {_holds(t['holds'])} |")

    lines += ["", "## Timings", "",
              "`rasterize` = vr.rasterize alone (face ids, perspective-correct barycentrics, depth); "
              "`raster+interp+aa` = rasterize, interpolate per-vertex colours, antialias. `fwd` = forward only; "
              "`fwd+bwd` = forward + backward to the clip-space vertices (and colours) from a fixed random "
              "upstream gradient. Ratios (on voxrender's fast rows) = the other variant's median / this row's "
              "median (> 1: voxrender faster); `(min)` uses the fastest calls instead, the least disturbed by "
              "other processes. `same px` = fraction of pixels whose face id equals voxrender's (like for like "
              "above 0.99).", ""]
    others = [v for v in ("torch", "cpu", "pytorch3d", "nvdiffrast") if any(
        v in r.get("ratios", {}) for r in report["results"])]
    cuda = any("peak_bytes" in r for r in report["results"])
    header = ["case", "pipeline", "pass", "variant", "median ms", "IQR ms", "min ms", "same px"]
    header += [f"vs {o}" for o in others] + [f"vs {o} (min)" for o in others]
    header += (["peak MiB"] if cuda else []) + (["floor ms", "% of floor"] if bw else [])
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join("---" if i < 4 else "---:" for i in range(len(header))) + "|")
    for r in report["results"]:
        ratios, rmin = r.get("ratios", {}), r.get("ratios_min", {})
        cells = [f"{r['scene']} {r['image']}^2 B{r['batch']}", r["pipeline"], r["pass"],
                 VARIANT_LABELS.get(r["variant"], r["variant"]), _fmt_ms(r["median_ms"]), _fmt_ms(r["iqr_ms"]),
                 _fmt_ms(r["min_ms"]), f"{r['coverage_agreement']:.4f}"]
        cells += [_fmt_ratio(ratios.get(o)) for o in others] + [_fmt_ratio(rmin.get(o)) for o in others]
        if cuda:
            cells.append(_fmt_mib(r.get("peak_bytes")))
        if bw:
            cells += [_fmt_ms(r["floor_ms"]), f"{100 * r['fraction_of_floor']:.3g}%"]
        lines.append("| " + " | ".join(cells) + " |")

    peer_checks = {(c, v): x for c, cov in report["coverage"].items() for v, x in cov.items() if v in rc.PEERS}
    if peer_checks:
        lines += ["", "Peer coverage checks (same face id as voxrender; flipped: agreement of the peer image "
                  "flipped vertically / horizontally, high only if a convention slipped):", "",
                  "| case | peer | same px | flipped rows | flipped cols | peer warnings |", "|---|---|---:|---:|---:|---|"]
        for (c, v), x in peer_checks.items():
            lines.append(f"| {c} | {v} | {x['agreement']:.4f} | {x.get('flipped_rows', 0):.3f} | "
                         f"{x.get('flipped_cols', 0):.3f} | {'; '.join(x.get('warnings', [])) or '-'} |")

    sc = report.get("scaling")
    if sc:
        vs = sc["variants"]
        lines += ["", "## Scaling (rasterize, forward, B=1)", "",
                  f"Time against faces at {sc['faces_image']}^2, and against pixels with {sc['pixels_scene']} "
                  f"({rc.SCENES[sc['pixels_scene']].n_faces:,} faces); `ns/(F+P)` = median / (faces + pixels), "
                  "roughly constant for O(faces + pixels) work; a brute force would keep `ns/(F P)` constant instead.", ""]
        for key, title in (("vs_faces", "faces"), ("vs_pixels", "pixels"), ("depth_map", f"depth map at {rc.DEPTH_MAP_IMAGE}^2")):
            lines += [f"### vs {title}", "", "| scene | faces | image | " + " | ".join(
                f"{v} median ms | {v} min ms | {v} ns/(F+P)" for v in vs) + " |",
                "|---|---:|---:|" + "---:|" * (3 * len(vs))]
            for r in sc[key]:
                cells = [r["scene"], f"{r['faces']:,}", f"{r['image']}^2"]
                for v in vs:
                    t = r["times"].get(v, {})
                    if "median_ms" in t:
                        cells += [_fmt_ms(t["median_ms"]), _fmt_ms(t["min_ms"]),
                                  f"{t['median_ms'] * 1e6 / (r['faces'] + r['pixels']):.3g}"]
                    else:
                        cells += [t.get("error", "-"), "-", "-"]
                lines.append("| " + " | ".join(cells) + " |")
            lines.append("")
        for v, f in sc.get("fit", {}).items():
            lin, prod = f["linear"], f["product"]
            lines.append(f"- fit ({v}, relative least squares over both sweeps): t = {lin['ms_fixed']:.3g} ms + "
                         f"{lin['ns_per_face']:.3g} ns x faces + {lin['ns_per_pixel']:.3g} ns x pixels, largest "
                         f"relative residual {100 * lin['max_rel_residual']:.0f}%; the brute-force shape t = a + d F P "
                         f"misses by up to {100 * prod['max_rel_residual']:.0f}%")
        for v, ratios in (sc.get("depth_map_ratios") or {}).items():
            lines.append(f"- depth map ({v}): grid-32k at {rc.DEPTH_MAP_IMAGE}^2 costs " + ", ".join(
                f"{x:.2f}x {ref} ({rc.SCENES[ref].n_faces:,} faces)" for ref, x in ratios.items()))

    big = report.get("big")
    if big:
        lines += ["", "## ~1M faces at 2048^2", "",
                  "Checks: `sphere` = pixels inside the analytic silhouette (1.5 px margin) without a face / outside "
                  "with one / with a depth off the front surface by > 2e-3 in NDC; `windows` = agreement of 64^2 "
                  "windows (centre, left silhouette, random) with the torch brute force on the same windows.", "",
                  "| case | variant | " + " | ".join(f"{p} median ms | {p} min ms" for p in report["passes"])
                  + " | covered | sphere (holes / spill / depth) | windows | ok |",
                  "|---|---|" + "---:|---:|" * len(report["passes"]) + "---:|---|---|---|"]
        for b in big:
            cells = [f"{b['scene']} ({b['faces']:,} F) {b['image']}^2 B{b['batch']}", VARIANT_LABELS.get(b["variant"], b["variant"])]
            for p in report["passes"]:
                cells += [_fmt_ms(b[p]["median_ms"]), _fmt_ms(b[p]["min_ms"])] if p in b else ["-", "-"]
            s = b.get("sphere_check")
            cells += [f"{b['coverage']:.3f}" if "coverage" in b else "-",
                      f"{s['holes_inside']} / {s['covered_outside']} / {s['wrong_depth']} of {s['pixels_inside']:,}" if s else "-",
                      ", ".join(f"{w['window']} {w['agreement']:.4f} ({w['faces_in_window']} F)" for w in b.get("window_check", []))
                      or (f"same px {b['coverage_agreement']:.4f}" if "coverage_agreement" in b else "-"),
                      ("yes" if b["ok"] else "NO") + (f" ({b['error']})" if "error" in b else "")]
            lines.append("| " + " | ".join(cells) + " |")

    if report["skipped"]:
        lines += ["", "## Not run", ""]
        for v, reasons in report["skipped"].items():
            for why, where in reasons.items():
                lines.append(f"- {VARIANT_LABELS.get(v, v)}: {why} ({len(where)} group{'s' if len(where) > 1 else ''})")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------
# Main

def run(args) -> dict:
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch.cuda.is_available() is False on this machine")
    if args.threads:
        torch.set_num_threads(args.threads)
    other = OtherLoad()
    meta = collect_metadata(args, device)
    load = meta["load_average_at_start"]
    if device.type == "cpu" and load and load[0] > 0.5:
        print(f"warning: 1-minute load average {load[0]} before starting: other processes compete for the CPU "
              "and the timings will be noisy", file=sys.stderr)
    bandwidth = measure_bandwidth(device) if device.type == "cuda" else None
    skipped: dict = {}
    results, coverage = [], {}
    for case in args.cases:
        rows, cov = run_case(case, args, device, bandwidth, skipped)
        results.extend(rows)
        coverage[case.id] = cov
    timed = [v for v in candidates(device) if v != "torch" and any(r["variant"] == v for r in results)]
    timed = timed or [primary_variant(device)]
    scaling = run_scaling(args, device, timed) if args.scaling else None
    big = run_big(args, device, timed) if args.big else None
    meta["load_average_at_end"] = _loadavg()
    meta["other_processes_cpu_fraction"] = other.fraction()
    noisy = device.type == "cpu" and (meta["other_processes_cpu_fraction"] or 0) > 0.05
    if noisy:
        print(f"warning: other processes used {100 * meta['other_processes_cpu_fraction']:.0f}% of the CPUs "
              "during the run; the timings are disturbed", file=sys.stderr)
    report = {"metadata": meta, "repeat": args.repeat, "warmup": args.warmup, "torch_repeat": args.torch_repeat,
              "torch_budget": args.torch_budget, "torch_pipelines": args.torch_pipelines, "seed": args.seed, "passes": args.passes, "noisy": noisy,
              "cases": [c.id for c in args.cases], "bandwidth": bandwidth, "coverage": coverage,
              "skipped": skipped, "results": results, "scaling": scaling, "big": big}
    report["targets"] = evaluate_targets(report)
    return report


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--cases", nargs="+", metavar="SCENE@SIZE[xB]",
                   help=f"cases to time (scenes: {', '.join(s for s in rc.SCENES if s != 'tiny-sphere')}); default: "
                        "raster_cases.CPU_CASES or GPU_CASES")
    p.add_argument("--quick", action="store_true",
                   help="a short run: 2 small cases, 3 calls each, a reduced scaling sweep, the big case at 1024^2 "
                        f"with 82k faces, the brute force only under {QUICK_TORCH_BUDGET:.2g} face-pixels")
    p.add_argument("--pipelines", nargs="+", default=list(rc.PIPELINES), choices=rc.PIPELINES)
    p.add_argument("--passes", nargs="+", default=list(rc.PASSES), choices=rc.PASSES)
    p.add_argument("--repeat", type=int, default=None, help="timed calls per variant (default CPU 10, CUDA 50)")
    p.add_argument("--warmup", type=int, default=None, help="untimed calls per variant first (default CPU 1, CUDA 3)")
    p.add_argument("--torch-budget", type=float, default=None,
                   help=f"face-pixels (F x H x W x B) up to which the torch brute force runs (default {rc.TORCH_BUDGET:.3g})")
    p.add_argument("--torch-repeat", type=int, default=None, help="timed calls of the brute force (default CPU 2, CUDA 3)")
    p.add_argument("--torch-pipelines", nargs="+", default=["rasterize"], choices=rc.PIPELINES,
                   help="pipelines on which the brute force is timed (default: rasterize)")
    p.add_argument("--no-scaling", dest="scaling", action="store_false", help="skip the scaling sweeps")
    p.add_argument("--no-big", dest="big", action="store_false", help="skip the ~1M faces at 2048^2 case")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-memory", dest="memory", action="store_false", help="CUDA: skip the peak-memory measurement")
    p.add_argument("--json", metavar="PATH", help="write every number and the metadata as JSON")
    p.add_argument("--markdown", metavar="PATH", help="write the printed report as Markdown")
    p.add_argument("--machine", metavar="TEXT", help="free-text machine description recorded in the metadata")
    p.add_argument("--date", metavar="TEXT", help="date to record (default: now, UTC)")
    args = p.parse_args(argv)
    cuda = args.device == "cuda"
    if args.cases:
        try:
            args.cases = [Case.parse(c) for c in args.cases]
        except ValueError as e:
            p.error(str(e))
    else:
        args.cases = list(QUICK_CASES if args.quick else rc.GPU_CASES if cuda else rc.CPU_CASES)
    args.repeat = args.repeat or (3 if args.quick else 50 if cuda else 10)
    args.warmup = args.warmup if args.warmup is not None else (3 if cuda else 1)
    args.torch_budget = args.torch_budget if args.torch_budget is not None else (
        QUICK_TORCH_BUDGET if args.quick else rc.TORCH_BUDGET)
    args.torch_repeat = args.torch_repeat or (3 if cuda else 2)
    args.scaling_repeat = 3 if args.quick else max(5, args.repeat // 2)
    args.big_repeat = 2 if args.quick or not cuda else 10
    if args.quick:
        args.scaling_image, args.scaling_scene = 128, rc.SCALING_PIXELS_SCENE
        args.scaling_faces = ("grid-1k", "grid-10k", "grid-100k", "sphere-1k", "sphere-82k")
        args.scaling_pixels = (64, 256, 1024)
        args.big = [Case("sphere-82k", 1024, 1)] if args.big else None
    else:
        args.scaling_image, args.scaling_scene = rc.SCALING_FACES_IMAGE, rc.SCALING_PIXELS_SCENE
        args.scaling_faces, args.scaling_pixels = rc.SCALING_FACES, rc.SCALING_PIXELS
        args.big = list(rc.BIG_CASES) if args.big else None
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    report = run(args)
    text = render_markdown(report)
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text)
    if args.json:
        report["cases"] = [c if isinstance(c, str) else c.id for c in report["cases"]]
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1, default=str)
            f.write("\n")


if __name__ == "__main__":
    main()
