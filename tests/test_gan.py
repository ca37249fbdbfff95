"""The voxel GAN (models/gan, installed as voxrender.models.gan): architecture, losses, the D-accuracy gate,
training steps, resume, NaN stop, the train gan / sample commands."""

import copy
import json
import math
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from voxrender.model_cli import train_run
from voxrender.models.gan import (Discriminator, GANConfig, Generator, VoxelGAN, d_loss_and_accuracy,
                                  feature_matching_loss, g_adversarial_loss)
from voxrender.models.gan import train as gan_train
from voxrender.training import NonFiniteLoss, Trainer, load_checkpoint, seed_everything

TINY = {"model": "gan", "lr_g": 2.5e-3, "lr_d": 1e-4, "beta1": 0.5, "batch_size": 8,
        "gan": GANConfig(grid=16, image_size=16, g_channels=(256, 128), width=1 / 32).to_dict(),
        "data": {"name": "synthetic", "length": 40, "seed": 0, "kinds": None}}


pytestmark = pytest.mark.usefixtures("one_thread")  # small ops: one thread is faster and steadier


def test_published_defaults_and_shapes():
    c = GANConfig()
    assert (c.grid, c.image_size, c.z_dim, c.view, c.n_views) == (32, 32, 200, "discrete", 8)
    assert c.g_widths == (256, 128, 64) and c.d_widths == (256, 512, 1024) and c.d_acc_max == 0.8
    g, d = Generator(c), Discriminator(c)
    assert g.fc.in_features == 200 and g.fc.out_features == 256 * 4 ** 3
    deconvs = [m for m in g.net if isinstance(m, torch.nn.ConvTranspose3d)]
    assert [m.out_channels for m in deconvs] == [128, 64, 1]
    assert all(m.kernel_size == (4, 4, 4) and m.stride == (2, 2, 2) for m in deconvs)
    convs = [m for m in d.features if isinstance(m, torch.nn.Conv2d)]
    assert [m.out_channels for m in convs] == [256, 512, 1024]
    assert all(m.kernel_size == (5, 5) and m.stride == (2, 2) for m in convs)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in d.features) == 2  # not after the first conv
    assert d.out.in_features == 1024 * 4 * 4 and d.out.out_features == 1
    with torch.no_grad():
        occ = g.eval()(torch.rand(2, 200) * 2 - 1)
        logits, feats = d.eval()(torch.rand(2, 1, 32, 32))
    assert occ.shape == (2, 32, 32, 32) and 0 <= float(occ.min()) and float(occ.max()) <= 1
    assert logits.shape == (2,) and feats.shape == (2, 1024 * 16)


@pytest.mark.parametrize("grid,width,view", [(64, 1 / 16, "continuous"), (32, 1 / 8, "discrete"),
                                             (16, 1 / 16, "discrete")])
def test_grids_width_and_views(grid, width, view):
    m = VoxelGAN(GANConfig.for_grid(grid, width=width, view=view, image_size=24 if grid == 16 else grid))
    assert len(m.cfg.g_channels) == int(math.log2(grid // 4))
    torch.manual_seed(0)
    f = m.fake(3)
    assert f["voxels"].shape == (3, grid, grid, grid) and f["image"].shape == (3, 1, m.cfg.image_size,
                                                                                m.cfg.image_size)
    assert f["z"].shape == (3, 200) and float(f["z"].abs().max()) <= 1
    th = m.sample_views(2000)
    if view == "discrete":
        k = th / (math.pi / 4)
        assert torch.allclose(k, k.round(), atol=1e-5) and set(k.round().long().tolist()) == set(range(8))
    else:
        assert 0 <= float(th.min()) and float(th.max()) < 2 * math.pi and len(set(th.tolist())) > 1900
    # the rendering is differentiable in the voxels and in a continuous view
    theta = torch.full((3,), 0.3, requires_grad=True)
    m.project(f["voxels"], theta).sum().backward()
    assert theta.grad is not None and torch.isfinite(theta.grad).all()


def test_bad_config():
    with pytest.raises(ValueError, match="4 \\* 2"):
        GANConfig(grid=48)
    with pytest.raises(ValueError, match="view"):
        GANConfig(view="random")
    with pytest.raises(ValueError, match="grey"):
        GANConfig(channels=3)


def test_feature_matching_hand_computed():
    real = torch.tensor([[0.0, 2.0], [2.0, 4.0]])  # means (1, 3), biased variances (1, 1)
    fake = torch.tensor([[1.0, 1.0], [1.0, 1.0]], requires_grad=True)  # means (1, 1), variances (0, 0)
    # mean_j (dm_j^2) + mean_j (dv_j^2) = (0 + 4) / 2 + (1 + 1) / 2 = 3
    fm = feature_matching_loss(real, fake)
    assert float(fm.detach()) == pytest.approx(3.0)
    fm.backward()
    # d/df_bj of mean_j (m_r - m_f)^2 / ... : only the mean term moves a constant fake batch
    # (its variance gradient is 0 at zero spread): -2 (m_r - m_f) / (2 features * 2 samples)
    torch.testing.assert_close(fake.grad, torch.tensor([[0.0, -1.0], [0.0, -1.0]]))
    assert float(feature_matching_loss(real, real.clone())) == 0.0


def test_d_loss_accuracy_and_g_loss_hand_computed():
    real = torch.tensor([2.0, -1.0, 0.5, 3.0])  # 3 of 4 correct (> 0)
    fake = torch.tensor([-2.0, 1.0, -0.1, -4.0])  # 3 of 4 correct (< 0)
    loss, acc = d_loss_and_accuracy(real, fake)
    sp = torch.nn.functional.softplus
    assert float(acc) == pytest.approx(0.75)
    assert float(loss) == pytest.approx(float(sp(-real).mean() + sp(fake).mean()))
    assert float(g_adversarial_loss(fake)) == pytest.approx(float(sp(-fake).mean()))


def _trainer(tmp_path, config=TINY, steps=10, seed=0):
    from voxrender.data.voxel_shapes import VoxelShapes

    seed_everything(seed)
    task = gan_train.build_task(config)
    ds = VoxelShapes("train", 16, length=40)
    return task, Trainer(task, ds, tmp_path, steps=steps, batch_size=8, seed=seed, config=config, progress=False)


def _params(module):
    return [p.detach().clone() for p in module.parameters()]


def _changed(before, module):
    return [not torch.equal(a, b) for a, b in zip(before, module.parameters())]


def test_one_step_updates_generator_and_discriminator(tmp_path):
    task, tr = _trainer(tmp_path, steps=1)
    g0, d0 = _params(task.G), _params(task.D)
    tr.fit()
    logs = tr.history[0]
    assert logs["d_acc"] <= 0.8 and logs["d_step"] == 1.0  # a fresh D is at chance level
    assert all(_changed(g0, task.G)) and all(_changed(d0, task.D))
    assert set(logs) >= {"d_loss", "g_loss", "g_adv", "fm", "d_acc", "occupancy", "loss"}
    assert logs["g_loss"] == pytest.approx(logs["g_adv"] + logs["fm"], rel=1e-5)


@pytest.mark.parametrize("acc,stepped", [(0.9, False), (0.8, True)])
def test_discriminator_is_stepped_only_while_its_accuracy_is_at_most_0_8(tmp_path, monkeypatch, acc, stepped):
    real_fn = gan_train.d_loss_and_accuracy

    def fixed_accuracy(real_logits, fake_logits):
        loss, _ = real_fn(real_logits, fake_logits)
        return loss, torch.tensor(acc)

    monkeypatch.setattr(gan_train, "d_loss_and_accuracy", fixed_accuracy)
    task, tr = _trainer(tmp_path, steps=2)
    g0, d0 = _params(task.G), _params(task.D)
    tr.fit()
    assert [h["d_step"] for h in tr.history] == [float(stepped)] * 2
    assert [h["d_acc"] for h in tr.history] == pytest.approx([acc, acc])
    assert all(_changed(g0, task.G))  # the generator always steps
    assert any(_changed(d0, task.D)) == stepped
    assert bool(task.optimizers["d"].state) == stepped


def test_a_natural_gate(tmp_path):
    """A discriminator that already separates real from fake (accuracy 1 > 0.8) is left alone: real images
    of the built-in shapes are mostly black (mean <= 0.31 here), the first fakes faint grey squares (>= 0.49)."""
    task, tr = _trainer(tmp_path, steps=1)
    d0 = _params(task.D)

    class ByBrightness(torch.nn.Module):  # D plus a large vote on the mean brightness
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            logits, feats = self.inner(x)
            return logits + 200 * (0.4 - x.mean((1, 2, 3))), feats

    task.D = ByBrightness(task.D)
    tr.fit()
    assert tr.history[0]["d_acc"] == 1.0 and tr.history[0]["d_step"] == 0.0
    assert not any(_changed(d0, task.D.inner))


def test_noise_is_a_function_of_seed_step_and_rank():
    task = gan_train.build_task(TINY)
    z1, t1 = task.noise(4, 3, seed=1)
    z2, t2 = task.noise(4, 3, seed=1)
    z3, _ = task.noise(4, 4, seed=1)
    assert torch.equal(z1, z2) and torch.equal(t1, t2) and not torch.equal(z1, z3)
    assert gan_train.noise_seed(1, 3, 0) != gan_train.noise_seed(1, 3, 1)


def _losses(trainer):
    return [(h["d_loss"], h["g_loss"]) for h in trainer.history]


def test_resume_is_bit_for_bit(tmp_path):
    full, _ = train_run(copy.deepcopy(TINY), tmp_path / "a", steps=6, ckpt_every=0, progress=False, seed=3)

    def interrupt(trainer, logs):
        if trainer.step == 3:
            os.kill(os.getpid(), signal.SIGINT)

    part, status = train_run(copy.deepcopy(TINY), tmp_path / "b", steps=6, ckpt_every=0, progress=False, seed=3,
                             on_step=interrupt)
    assert status == "interrupted" and part.step == 3
    rest, status = train_run(None, tmp_path / "b", steps=6, resume=True, progress=False)
    assert status == "done" and rest.step == 6
    assert _losses(part) + _losses(rest) == _losses(full)  # the same floats
    a = load_checkpoint(tmp_path / "a" / "last.ckpt")["task"]
    b = load_checkpoint(tmp_path / "b" / "last.ckpt")["task"]
    for name in ("generator", "discriminator"):
        assert all(torch.equal(a["modules"][name][k], b["modules"][name][k]) for k in a["modules"][name])


def test_nan_generator_loss_stops_with_the_state_before_the_step(tmp_path):
    config = copy.deepcopy(TINY)
    config["gan"]["d_acc_max"] = 1.0  # D steps every time, also in the failing step (before G's loss is known)
    task, tr = _trainer(tmp_path, config=config, steps=10)
    good = {}
    orig = gan_train.feature_matching_loss

    def on_step(trainer, logs):
        good[trainer.step] = (copy.deepcopy(task.G.state_dict()), copy.deepcopy(task.D.state_dict()))

    def poisoned(real, fake):
        fm = orig(real, fake)
        return fm * float("nan") if len(good) == 2 else fm

    gan_train.feature_matching_loss = poisoned
    try:
        tr.on_step = on_step
        with pytest.raises(NonFiniteLoss, match=r"loss is nan at step 3.*last good state \(step 2\)"):
            tr.fit()
    finally:
        gan_train.feature_matching_loss = orig
    ck = load_checkpoint(tmp_path / "last.ckpt")
    assert ck["step"] == 2
    for name, ref in zip(("generator", "discriminator"), good[2]):
        saved = ck["task"]["modules"][name]
        assert all(torch.equal(saved[k], ref[k]) for k in saved), name  # D's step 3 update was undone
    assert [h["d_step"] for h in tr.history] == [1.0, 1.0]
    d_state = ck["task"]["optimizers"]["d"]["state"]
    assert all(int(st["step"]) == 2 for st in d_state.values())  # Adam's state is the one after step 2


def test_inversion_finds_a_pool_shape_and_its_view():
    from voxrender.models.gan.eval import generate_pool, invert, retrieve

    from voxrender.data.voxel_shapes import VoxelShapes

    torch.manual_seed(0)
    m = VoxelGAN(GANConfig(**TINY["gan"])).eval()
    # a pool of distinct asymmetric shapes (extruded glyphs) standing in for generated ones
    pocc = VoxelShapes("train", 16, length=16, kinds=("glyph",)).get_batch(range(16))["voxels"]
    pz = torch.rand(16, 200) * 2 - 1
    th = torch.tensor([2 * math.pi * 1 / 8, 2 * math.pi * 6 / 8])
    with torch.no_grad():
        images = m.project(pocc[[0, 4]], th)
    z, theta, err = retrieve(m, images, pz, pocc)
    assert torch.equal(z, pz[[0, 4]]) and float(err.abs().max()) < 1e-3
    # the view found renders the image (an extruded glyph looks the same from azimuths a and -a)
    torch.testing.assert_close(m.project(pocc[[0, 4]], theta), images)
    assert all(min(abs(t - a), abs(t + a - 2 * math.pi)) < 1e-5 for t, a in zip(theta.tolist(), th.tolist()))
    pz, pocc = generate_pool(m, 16, seed=1)
    inv = invert(m, images, refine_steps=2, pool_data=(pz, pocc))
    assert inv["pred"].shape == (2, 16, 16, 16) and inv["recon"].shape == images.shape
    assert float(inv["z"].abs().max()) <= 1


def _has_skimage():
    try:
        import skimage.measure  # noqa: F401
    except ImportError:
        return False
    return True


def test_cli_train_gan_resume_sample(tmp_path, run_cli):
    run = tmp_path / "gan"
    common = ["--grid", "16", "--width", "0.03125", "--batch-size", "8", "--dataset-size", "32", "--out", str(run),
              "--threads", "1", "--sample-every", "2"]
    r = run_cli("train", "gan", "--steps", "2", *common)
    assert r.returncode == 0, r.stderr
    assert "finished at step 2/2" in r.stdout and "d_acc" in r.stdout
    assert "acc=" in r.stderr and "G=" in r.stderr  # the progress bar shows D accuracy and losses
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["model"] == "gan" and cfg["gan"]["z_dim"] == 200 and cfg["lr_g"] == 2.5e-3 and cfg["lr_d"] == 1e-4
    assert (run / "samples" / "step_000002.png").exists() and (run / "samples.png").exists()
    r = run_cli("train", "gan", "--steps", "3", "--resume", *common, "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "resumed from" in r.stderr and "finished at step 3/3" in r.stdout
    r = run_cli("train", "vae", "--steps", "4", "--resume", *common)
    assert r.returncode != 0 and "a 'gan' checkpoint" in r.stderr
    smp = tmp_path / "samples"
    mesh = ["--export-mesh", "--threshold", "0.02"] if _has_skimage() else []
    r = run_cli("sample", str(run / "last.ckpt"), "--out", str(smp), "--n", "3", "--turntable", *mesh,
                "--threads", "1")
    assert r.returncode == 0, r.stderr
    occ = np.load(smp / "voxels.npy")
    assert occ.shape == (3, 16, 16, 16) and 0 <= occ.min() and occ.max() <= 1
    for f in ("samples.png", "views.png", "turntable.gif"):
        assert (smp / f).exists(), f
    assert (smp / "sample_02.obj").exists() == bool(mesh)
    ev = tmp_path / "eval"
    r = run_cli("eval", str(run / "last.ckpt"), "--out", str(ev), "--n", "4", "--pool", "8", "--refine-steps", "1",
                "--threads", "1")
    assert r.returncode == 0, r.stderr
    assert "fixed shape" in r.stdout and "Free samples: mean occupancy" in r.stdout
    m = json.loads((ev / "metrics.json").read_text())
    assert m["n"] == 4 and {"model", "baselines", "samples", "inversion"} <= set(m)
    assert np.load(ev / "voxels_pred.npy").shape == np.load(ev / "voxels_gt.npy").shape == (4, 16, 16, 16)
    assert np.load(ev / "azimuth_pred.npy").shape == (4,) and (ev / "reconstructions.png").exists()
    r = run_cli("train", "gan", "--rgb", "--steps", "1", "--out", str(tmp_path / "x"))
    assert r.returncode != 0 and "VAE option" in r.stderr


DDP_SCRIPT = """
import json, sys, torch
from voxrender.model_cli import train_run
from voxrender.training import dist_info
config, out = json.loads(sys.argv[1]), sys.argv[2]
trainer, status = train_run(config, out, steps=3, ckpt_every=0, progress=False, seed=1)
rank, world = dist_info()
torch.save({"world": world, "g": trainer.task.G.state_dict(), "d": trainer.task.D.state_dict(),
            "acc": [h["d_acc"] for h in trainer.history], "z": trainer.task.noise(2, 0, 1)[0]},
           f"{out}/rank{rank}.pt")
torch.distributed.destroy_process_group()
"""


@pytest.mark.slow  # two interpreters start (about 20 s on the 2-core machine)
def test_ddp_two_cpu_processes_with_gloo(tmp_path):
    import socket

    script = tmp_path / "ddp_gan.py"
    script.write_text(DDP_SCRIPT)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(port), str(script), json.dumps(TINY), str(tmp_path)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert a["world"] == b["world"] == 2
    assert not torch.equal(a["z"], b["z"])  # each rank draws its own fakes
    assert a["acc"] == b["acc"]  # one gate decision for all ranks
    for k in ("g", "d"):  # gradients averaged, buffers broadcast: the ranks stay identical
        assert all(torch.equal(a[k][n], b[k][n]) for n in a[k]), k
    assert load_checkpoint(tmp_path / "last.ckpt")["step"] == 3
