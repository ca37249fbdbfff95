"""pytest-benchmark suites of ``voxrender.rasterize`` (alone, and with interpolate + antialias), beside the
torch brute force and the peer libraries (PyTorch3D, nvdiffrast) where they are installed.

    pytest benchmarks --benchmark-enable -k rasterize                   # everything this machine can run
    pytest benchmarks --benchmark-enable -k "rasterize and grid-10k"    # a selection
    pytest benchmarks -k rasterize                                      # smoke: each case once, tiny

Cases (``raster_cases.py``): device and case (scene x image size x batch; CPU_CASES, GPU_CASES and the
~1M-face 2048^2 BIG_CASES) x variant (every voxrender backend, skipped with voxrender's own reason where
``available_backends(device, op="rasterize")`` says it cannot run, so new backends are picked up as
they land; ``torch``, the brute force, only under ``TORCH_BUDGET`` face-pixels; ``pytorch3d`` and
``nvdiffrast``, skipped when not installed) x pipeline (``rasterize``; ``raster+interp+aa``) x pass
(``fwd``; ``fwd+bwd``). Each benchmark group holds the variants of one (device, case, pipeline, pass), so
pytest-benchmark's table compares them directly. GPU callables synchronise before returning and are
warmed up first.
"""

from __future__ import annotations

import pytest
import torch

import raster_cases as rc
from raster_cases import BIG_CASES, CPU_CASES, GPU_CASES, PASSES, PEERS, PIPELINES, SMOKE, Case

WARMUP_CALLS = 3  # before timing, with benchmarks enabled: Triton JIT and autotuning, allocator caches

# The voxrender backends that could run on each device (each skips with voxrender's own reason until
# available_backends(device, op="rasterize") lists it), then the peers. The Triton interpreter
# (TRITON_INTERPRET=1) is a correctness tool and is not benchmarked on the CPU.
VARIANTS = {"cpu": ("cpu", "torch", "pytorch3d"), "cuda": ("cuda", "triton", "torch") + PEERS}


def _cases():
    cases = []
    for device, case_list in (("cpu", CPU_CASES + BIG_CASES[:1]), ("cuda", GPU_CASES + BIG_CASES)):
        marks = [pytest.mark.gpu] if device == "cuda" else []
        for case in case_list:
            for variant in VARIANTS[device]:
                vmarks = marks + ([pytest.mark.triton] if variant == "triton" else [])
                cases.append(pytest.param(device, case, variant, marks=vmarks, id=f"{device}-{case.id}-{variant}"))
    return cases


@pytest.mark.parametrize("pass_", PASSES)
@pytest.mark.parametrize("pipeline", PIPELINES)
@pytest.mark.parametrize("device,case,variant", _cases())
def test_rasterize(benchmark, benchmark_enabled, device, case, variant, pipeline, pass_):
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("GPU benchmark: torch.cuda.is_available() is False")
    case = case if benchmark_enabled else SMOKE  # smoke (CI): each case once, at the tiny SMOKE size
    reason = rc.skip_reason(variant, case, pipeline, device)
    if reason:
        pytest.skip(reason)
    inputs = rc.make_inputs(case, device)
    step = rc.make_step(variant, inputs, pipeline, pass_)
    benchmark.group = f"{device} {case.label} {pipeline} {pass_}"
    benchmark.extra_info.update(device=device, case=case.id, faces=case.n_faces, image=case.image,
                                batch=case.batch, variant=variant, pipeline=pipeline, pass_=pass_,
                                floor_bytes=rc.floor_bytes(case, pipeline, pass_))
    if benchmark_enabled:
        for _ in range(WARMUP_CALLS if variant != "torch" else 1):
            step()
    result = benchmark(step)
    outs = result[0] if pass_ == "fwd+bwd" else result
    for out in outs:
        assert out.shape[:3] == (case.batch, case.image, case.image)
        assert torch.isfinite(out).all()
    if pass_ == "fwd+bwd":
        assert all(torch.isfinite(g).all() for g in result[1])


# --------------------------------------------------------------------------------------------------
# Like for like: the variants render the same picture (cheap, so they run in the normal test run too)

def test_backends_cover_the_same_pixels():
    """cpu and the torch brute force give the same face ids on a benchmark scene (float32)."""
    case = Case("sphere-1k", 48, 2)
    for variant in ("cpu", "torch"):
        if rc.skip_reason(variant, case, "rasterize", "cpu"):
            pytest.skip(rc.skip_reason(variant, case, "rasterize", "cpu"))
    inputs = rc.make_inputs(case, "cpu")
    assert rc.coverage_agreement(rc.face_ids("cpu", inputs), rc.face_ids("torch", inputs)) == 1.0


def test_scenes_fill_the_image():
    """Every scene covers a good part of the image, and face counts are what the tables say."""
    for name, scene in rc.SCENES.items():
        if scene.n_faces > 40_000:
            continue  # the large scenes are built by the benchmarks themselves
        case = Case(name, 32, 2)
        inputs = rc.make_inputs(case, "cpu")
        assert inputs["faces"].shape == (scene.n_faces, 3)
        fid = rc.face_ids("cpu" if not rc.skip_reason("cpu", case, "rasterize", "cpu") else "torch", inputs)
        coverage = (fid >= 0).double().mean().item()
        assert 0.4 < coverage < 0.8, (name, coverage)
        assert not torch.equal(fid[0], fid[1])  # the batch items have their own rotations


def test_sphere_check_catches_dropped_faces():
    """The analytic check used on the 2048^2 x 1M-face case accepts a correct image and flags holes."""
    case = Case("sphere-1k", 64, 1)
    inputs = rc.make_inputs(case, "cpu")
    import voxrender as vr
    frags = vr.rasterize(inputs["verts"], inputs["faces"], case.image)
    assert rc.sphere_check(case, frags.face_id, frags.depth, depth_tol=5e-3)["ok"]
    holed = frags.face_id.clone()
    holed[:, 30:34, 30:34] = -1
    report = rc.sphere_check(case, holed, frags.depth, depth_tol=5e-3)
    assert not report["ok"] and report["holes_inside"] == 16


@pytest.mark.gpu
@pytest.mark.parametrize("peer", PEERS)
@pytest.mark.parametrize("case", [Case("sphere-20k", 256, 2), Case("grid-32k", 128, 2)], ids=lambda c: c.id)
def test_peer_renders_what_voxrender_renders(peer, case):
    """The comparison is like for like: the peer, given the converted scene, covers the same pixels with the
    same faces as voxrender (> 99% of the pixels; fill rules and depth ties differ on a few)."""
    if not torch.cuda.is_available():
        pytest.skip("GPU test: torch.cuda.is_available() is False")
    reason = rc.skip_reason(peer, case, "rasterize", "cuda")
    if reason:
        pytest.skip(reason)
    import peers
    from compare_rasterize import primary_variant
    inputs = rc.make_inputs(case, "cuda")
    report = peers.check_like_for_like(peer, inputs, rc.face_ids(primary_variant(torch.device("cuda")), inputs))
    assert report["ok"], report


def test_window_check_matches_the_brute_force():
    """The window check of the big cases (compare_rasterize.window_check): windows of an image mapped to a
    small image of their own agree with the full image exactly, and a dropped face shows."""
    import voxrender as vr
    from compare_rasterize import window_check
    case = Case("grid-1k", 96, 1)
    inputs = rc.make_inputs(case, "cpu")
    face_id = vr.rasterize(inputs["verts"], inputs["faces"], case.image).face_id
    report = window_check(inputs, face_id, n=16)
    assert [w["agreement"] for w in report] == [1.0, 1.0, 1.0], report
    assert 0.2 < report[1]["coverage"] < 0.8  # the silhouette window straddles the edge
    holed = face_id.clone()
    holed[:, 48, 48] = -1  # inside the centre window (40..55)
    assert window_check(inputs, holed, n=16)[0]["agreement"] < 1.0
