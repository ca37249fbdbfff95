"""voxrender.training: atomic checkpoints, bit-for-bit resume, Ctrl-C, NaN stop; the train/eval/demo CLI."""

import copy
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from voxrender.model_cli import train_run
from voxrender.training import (BatchStream, NonFiniteLoss, Trainer, atomic_save, load_checkpoint,
                                seed_everything)

TINY = {"model": "vae", "lr": 2e-3, "grad_clip": 1.0, "batch_size": 8,
        "vae": {"image_size": 16, "channels": 1, "grid": 16, "z_dim": 19, "pose": "encoder", "enc_channels": 8,
                "dec_channels": [8], "pose_hidden": 8},
        "data": {"name": "synthetic", "length": 40, "seed": 0, "kinds": None}}


pytestmark = pytest.mark.usefixtures("one_thread")  # small ops: one thread is faster and steadier


def losses(trainer):
    return [h["loss"] for h in trainer.history]


def test_atomic_save_keeps_the_old_file_on_failure(tmp_path):
    p = tmp_path / "last.ckpt"
    atomic_save({"a": 1}, p)
    with pytest.raises(Exception):
        atomic_save({"f": lambda: 0}, p)  # cannot be pickled
    assert torch.load(p) == {"a": 1}
    assert sorted(os.listdir(tmp_path)) == ["last.ckpt"]  # no temp file left behind
    with pytest.raises(ValueError, match="not a voxrender training checkpoint"):
        load_checkpoint(p)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.ckpt")


def test_batch_stream_position_and_ranks():
    s = BatchStream(10, 4, seed=1)
    first = [s.next() for _ in range(3)]  # 2 batches per epoch: the third starts epoch 1
    assert s.epoch == 1 and sorted(first[0] + first[1]) == sorted(set(first[0] + first[1]))
    st = s.state_dict()
    a = [s.next() for _ in range(3)]
    t = BatchStream(10, 4, seed=1)
    t.load_state_dict(st)
    assert [t.next() for _ in range(3)] == a
    r0, r1 = BatchStream(10, 4, seed=1, rank=0, world_size=2), BatchStream(10, 4, seed=1, rank=1, world_size=2)
    assert r0.next() + r1.next() == first[0]
    with pytest.raises(ValueError):
        BatchStream(10, 3, world_size=2)


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_resume_after_ctrl_c_is_bit_for_bit(tmp_path, sig):
    full, _ = train_run(copy.deepcopy(TINY), tmp_path / "a", steps=6, ckpt_every=0, progress=False, seed=5)
    before = signal.getsignal(signal.SIGTERM)

    def interrupt(trainer, logs):
        if trainer.step == 3:  # the first Ctrl-C / SIGTERM (a batch system's notice): finish the step, checkpoint, stop
            os.kill(os.getpid(), getattr(signal, sig))

    part, status = train_run(copy.deepcopy(TINY), tmp_path / "b", steps=6, ckpt_every=0, progress=False, seed=5,
                             on_step=interrupt)
    assert status == "interrupted" and part.step == 3
    assert signal.getsignal(signal.SIGTERM) is before  # the handlers are put back
    assert load_checkpoint(tmp_path / "b" / "last.ckpt")["step"] == 3
    rest, status = train_run(None, tmp_path / "b", steps=6, resume=True, progress=False)
    assert status == "done" and rest.step == 6
    assert losses(part) == losses(full)[:3]
    assert losses(rest) == losses(full)[3:]  # the same floats, not just close
    a = load_checkpoint(tmp_path / "a" / "last.ckpt")["task"]["modules"]["model"]
    b = load_checkpoint(tmp_path / "b" / "last.ckpt")["task"]["modules"]["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_time_limit_stops_with_a_checkpoint_and_resumes_exactly(tmp_path, monkeypatch):
    full, _ = train_run(copy.deepcopy(TINY), tmp_path / "a", steps=5, ckpt_every=0, progress=False, seed=5)
    # A clock that advances 10 s per reading: the 30 s budget is spent during the third step.
    import voxrender.training as training

    clock = iter(range(0, 10 ** 6, 10))
    monkeypatch.setattr(training.time, "perf_counter", lambda: float(next(clock)))
    part, status = train_run(copy.deepcopy(TINY), tmp_path / "b", steps=5, ckpt_every=0, progress=False, seed=5,
                             max_seconds=30)
    monkeypatch.undo()
    assert status == "time_limit" and 1 <= part.step < 5
    assert load_checkpoint(tmp_path / "b" / "last.ckpt")["step"] == part.step
    rest, status = train_run(None, tmp_path / "b", steps=5, resume=True, progress=False)
    assert status == "done" and rest.step == 5
    assert losses(part) + losses(rest) == losses(full)
    with pytest.raises(ValueError, match="max_seconds"):
        Trainer(None, [0] * 8, tmp_path, steps=1, batch_size=8, max_seconds=0)


def test_periodic_checkpoints_and_rng_state(tmp_path):
    seen = []

    def on_step(trainer, logs):
        if trainer.step in (2, 4):
            seen.append(load_checkpoint(trainer.ckpt_path)["step"] if trainer.ckpt_path.exists() else None)

    t, _ = train_run(copy.deepcopy(TINY), tmp_path, steps=5, ckpt_every=2, progress=False, on_step=on_step)
    assert seen == [2, 4]  # written right after steps 2 and 4
    ck = load_checkpoint(tmp_path / "last.ckpt")
    assert ck["step"] == 5 and set(ck["rng"]) >= {"torch", "numpy", "python"}
    assert (ck["data"]["epoch"], ck["data"]["offset"]) == (0, 40)  # 5 batches of 8 out of 40 items
    assert json.loads((tmp_path / "config.json").read_text())["vae"]["grid"] == 16


def test_nan_loss_stops_with_the_last_good_state(tmp_path):
    from voxrender.data.voxel_shapes import VoxelShapes
    from voxrender.models.vae.train import build_task

    seed_everything(0)
    task = build_task(TINY)
    good = {}
    orig = task.compute_loss

    def compute_loss(batch):
        loss, logs = orig(batch)
        return (loss * float("nan"), logs) if len(good) == 2 else (loss, logs)

    def on_step(trainer, logs):
        good[trainer.step] = copy.deepcopy(task.model.state_dict())

    task.compute_loss = compute_loss
    ds = VoxelShapes("train", 16, length=40)
    tr = Trainer(task, ds, tmp_path, steps=10, batch_size=8, config=TINY, progress=False, on_step=on_step)
    with pytest.raises(NonFiniteLoss, match=r"loss is nan at step 3.*last good state \(step 2\)"):
        tr.fit()
    ck = load_checkpoint(tmp_path / "last.ckpt")
    assert ck["step"] == 2
    saved = ck["task"]["modules"]["model"]
    assert all(torch.equal(saved[k], good[2][k]) for k in saved)
    assert all(torch.isfinite(v).all() for v in saved.values() if v.is_floating_point())


def _has_skimage():
    try:
        import skimage.measure  # noqa: F401
    except ImportError:
        return False
    return True


def test_cli_help_explains_every_option(run_cli):
    for cmd, opts in [("train", ["--data", "--out", "--steps", "--epochs", "--batch-size", "--lr", "--seed",
                                 "--resume", "--device", "--backend", "--ckpt-every", "--max-minutes", "--pose", "--rgb",
                                 "--grid"]),
                      ("eval", ["--out", "--n", "--device", "--backend"]),
                      ("demo", ["--out", "--steps", "--device", "--seed"])]:
        r = run_cli(cmd, "--help")
        assert r.returncode == 0
        for o in opts:
            assert o in r.stdout, (cmd, o)
    # and through the installed entry point
    r = subprocess.run([sys.executable, "-m", "voxrender", "--help"], capture_output=True, text=True, check=True)
    assert all(c in r.stdout for c in ("demo", "train", "eval"))


def test_cli_train_resume_eval(tmp_path, run_cli):
    run = str(tmp_path / "run")
    common = ["--grid", "16", "--batch-size", "8", "--dataset-size", "32", "--out", run, "--no-progress",
              "--threads", "1"]
    r = run_cli("train", "vae", "--steps", "2", *common)
    assert r.returncode == 0, r.stderr
    assert "finished at step 2/2" in r.stdout
    r = run_cli("train", "vae", "--steps", "3", "--resume", *common)
    assert r.returncode == 0, r.stderr
    assert "resumed from" in r.stderr and "finished at step 3/3" in r.stdout
    r = run_cli("train", "vae", "--steps", "10", "--resume", "--max-minutes", "1e-9", *common)
    assert r.returncode == 0, r.stderr  # a spent budget is a planned stop, with a checkpoint
    assert "stopped at the --max-minutes limit at step 4/10" in r.stdout and "--resume" in r.stdout
    assert load_checkpoint(f"{run}/last.ckpt")["step"] == 4
    r = run_cli("train", "vae", "--steps", "10", "--resume", "--max-minutes", "0", *common)
    assert r.returncode != 0 and "--max-minutes" in r.stderr
    ev = tmp_path / "eval"
    r = run_cli("eval", f"{run}/last.ckpt", "--out", str(ev), "--n", "6", "--threads", "1")
    assert r.returncode == 0, r.stderr
    assert "fixed shape" in r.stdout and "visual hull" in r.stdout
    m = json.loads((ev / "metrics.json").read_text())
    assert {"model", "baselines", "n"} <= set(m) and m["n"] == 6
    pred, gt = np.load(ev / "voxels_pred.npy"), np.load(ev / "voxels_gt.npy")
    assert pred.shape == gt.shape == (6, 16, 16, 16) and pred.dtype == np.float32
    assert 0 <= pred.min() and pred.max() <= 1
    assert np.load(ev / "azimuth_pred.npy").shape == np.load(ev / "azimuth_gt.npy").shape == (6,)
    assert (ev / "reconstructions.png").exists() and (ev / "turntable.gif").exists()
    smp = tmp_path / "samples"
    mesh = ["--export-mesh", "--threshold", "0.05"] if _has_skimage() else []
    r = run_cli("sample", f"{run}/last.ckpt", "--out", str(smp), "--n", "2", "--turntable", *mesh, "--threads", "1")
    assert r.returncode == 0, r.stderr
    assert np.load(smp / "voxels.npy").shape == (2, 16, 16, 16)
    assert (smp / "samples.png").exists() and (smp / "turntable.gif").exists()
    assert (smp / "sample_01.obj").exists() == bool(mesh)
    r = run_cli("eval", str(tmp_path / "nothing.ckpt"), "--out", str(ev))
    assert r.returncode != 0 and "no checkpoint" in r.stderr


def test_cli_demo_smoke(tmp_path, run_cli):
    out = tmp_path / "demo"
    r = run_cli("demo", "--out", str(out), "--steps", "2", "--eval-n", "4", "--no-progress", "--threads", "1")
    assert r.returncode == 0, r.stderr
    for f in ("reconstructions.png", "turntable.gif", "metrics.json", "voxels.npy", "last.ckpt",
              "eval/metrics.json", "eval/voxels_pred.npy"):
        assert (out / f).exists(), f
    assert "fixed shape" in r.stdout and "pictures:" in r.stdout


DDP_SCRIPT = """
import copy, json, sys, torch
from voxrender.model_cli import train_run
from voxrender.training import dist_info
config, out = json.loads(sys.argv[1]), sys.argv[2]
# 4 steps straight; then 2 steps, a checkpoint, and a resumed run up to 4 (same process group)
full, _ = train_run(config, f"{out}/full", steps=4, ckpt_every=0, progress=False, seed=1)
part, _ = train_run(config, f"{out}/split", steps=2, ckpt_every=0, progress=False, seed=1)
resumed, _ = train_run(config, f"{out}/split", steps=4, ckpt_every=0, progress=False, resume=True)
rank, world = dist_info()  # (train_run started the process group)
# a NaN loss on rank 1 alone at step 2: both ranks stop (none waits forever), step 1 is saved
from voxrender.models.vae.train import VAETask
from voxrender.training import NonFiniteLoss
calls, compute = [], VAETask.compute_loss
def nan_on_rank1(self, batch):
    loss, logs = compute(self, batch)
    calls.append(1)
    return (loss * float("nan") if rank == 1 and len(calls) == 2 else loss), logs
VAETask.compute_loss = nan_on_rank1
try:
    train_run(config, f"{out}/nan", steps=4, ckpt_every=0, progress=False, seed=1)
    stopped = None
except NonFiniteLoss as e:
    stopped = str(e)
state = full.task.model.state_dict()
torch.save({"world": world, "params": {k: v for k, v in state.items() if "running" not in k},
            "resumed_params": resumed.task.model.state_dict(),
            "full_losses": [h["loss"] for h in full.history],
            "resumed_losses": [h["loss"] for h in part.history + resumed.history],
            "batches": full.stream.state_dict(), "stopped": stopped}, f"{out}/rank{rank}.pt")
torch.distributed.destroy_process_group()
"""


@pytest.mark.slow  # about 20 s on an idle 2-core machine (two interpreters start)
def test_ddp_two_cpu_processes_with_gloo(tmp_path):
    """torchrun --nproc_per_node 2 (gloo): the ranks split each global batch and stay in sync; a resumed run
    continues bit for bit on every rank (each rank's RNG state is in the checkpoint); a NaN loss on one rank
    stops both."""
    script = tmp_path / "ddp_train.py"
    script.write_text(DDP_SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    import socket

    with socket.socket() as sock:  # a free port on the loopback interface for the rendezvous
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(port),
           str(script), json.dumps(TINY), str(tmp_path)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert a["world"] == b["world"] == 2
    assert all(torch.equal(a["params"][k], b["params"][k]) for k in a["params"])  # gradients were averaged
    assert a["full_losses"] != b["full_losses"]  # each rank trains on its own slice with its own noise
    ck = load_checkpoint(tmp_path / "full" / "last.ckpt")
    assert ck["step"] == 4 and len(ck["rng_ranks"]) == 2  # written once, by rank 0, with both ranks' RNGs
    assert not torch.equal(ck["rng_ranks"][0]["torch"], ck["rng_ranks"][1]["torch"])
    assert "at step 2" in a["stopped"] and "at step 2" in b["stopped"]  # rank 1's NaN stopped both
    assert load_checkpoint(tmp_path / "nan" / "last.ckpt")["step"] == 1
    for rank in (a, b):  # the resumed steps 3 and 4 are those of the uninterrupted run, on both ranks
        assert rank["resumed_losses"] == rank["full_losses"]
        assert all(torch.equal(rank["resumed_params"][k], v) for k, v in rank["params"].items())


def test_tensorboard_logging(tmp_path):
    pytest.importorskip("tensorboard", reason="the optional tensorboard package is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    trainer, status = train_run(copy.deepcopy(TINY), tmp_path / "run", steps=3, ckpt_every=0, progress=False,
                                tensorboard=tmp_path / "tb")
    assert status == "done"
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert "train/loss" in tags and "train/images_per_s" in tags
    loss = acc.Scalars("train/loss")
    assert [e.step for e in loss] == [1, 2, 3]
    assert [e.value for e in loss] == pytest.approx([h["loss"] for h in trainer.history])


def test_tensorboard_missing_package_is_a_clear_error(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kw):
        if name.startswith("torch.utils.tensorboard"):
            raise ImportError("No module named 'tensorboard'")
        return real_import(name, *args, **kw)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    with pytest.raises(ImportError, match="pip install tensorboard"):
        train_run(copy.deepcopy(TINY), tmp_path / "run", steps=1, ckpt_every=0, progress=False,
                  tensorboard=tmp_path / "tb")
