"""StyleGAN2 (models/stylegan2, installed as voxrender.models.stylegan2): the port's state-dict layout,
strict checkpoint loading, the generator / discriminator API, training (resume, export) and the CLI.

With VOXRENDER_SG2_PORT=/path/to/stylegan2-pytorch (a clone of rosinality/stylegan2-pytorch), the outputs
are also compared with the port's own model.py (its CUDA ops replaced by their CPU fallbacks)."""

import importlib
import json
import math
import os
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch

from voxrender.models.stylegan2 import (Discriminator, Generator, discriminator_config, generator_config,
                                        load_checkpoint, save_checkpoint, upfirdn2d)
from voxrender.models.stylegan2 import train as sg2_train

pytestmark = pytest.mark.usefixtures("one_thread")  # small ops: one thread is faster and steadier

TINY = dict(size=32, style_dim=32, n_mlp=4, channels=16)  # about 0.1 M parameters


def tiny(seed=0, **kw):
    torch.manual_seed(seed)
    a = {**TINY, **kw}
    G = Generator(a["size"], a["style_dim"], a["n_mlp"], channels=a["channels"])
    D = Discriminator(a["size"], channels=a["channels"])
    with torch.no_grad():  # non-zero noise strengths and biases, so that every path matters
        for n, p in list(G.named_parameters()) + list(D.named_parameters()):
            if n.endswith("noise.weight") or n.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return G.eval(), D.eval()


# ---------------------------------------------------------------------------------------------------------
# the port's layout, written as its construction rules (model.py: Generator, Discriminator, ConvLayer ...)


def port_channels(cm):
    return {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * cm, 128: 128 * cm, 256: 64 * cm, 512: 32 * cm,
            1024: 16 * cm}


def port_generator_shapes(size, cm, style_dim=512, n_mlp=8):
    ch, S = port_channels(cm), {}
    for i in range(1, n_mlp + 1):  # style.0 is PixelNorm
        S[f"style.{i}.weight"], S[f"style.{i}.bias"] = (style_dim, style_dim), (style_dim,)

    def modconv(p, cin, cout, k):
        S[f"{p}.weight"] = (1, cout, cin, k, k)
        S[f"{p}.modulation.weight"], S[f"{p}.modulation.bias"] = (cin, style_dim), (cin,)

    def styled(p, cin, cout, up):
        modconv(f"{p}.conv", cin, cout, 3)
        if up:
            S[f"{p}.conv.blur.kernel"] = (4, 4)
        S[f"{p}.noise.weight"], S[f"{p}.activate.bias"] = (1,), (cout,)

    def to_rgb(p, cin, up):
        modconv(f"{p}.conv", cin, 3, 1)
        S[f"{p}.bias"] = (1, 3, 1, 1)
        if up:
            S[f"{p}.upsample.kernel"] = (4, 4)

    S["input.input"] = (1, ch[4], 4, 4)
    styled("conv1", ch[4], ch[4], False)
    to_rgb("to_rgb1", ch[4], False)
    log, cin = int(math.log2(size)), ch[4]
    for k, i in enumerate(range(3, log + 1)):
        c = ch[2 ** i]
        styled(f"convs.{2 * k}", cin, c, True)
        styled(f"convs.{2 * k + 1}", c, c, False)
        to_rgb(f"to_rgbs.{k}", c, True)
        cin = c
    for j in range((log - 2) * 2 + 1):
        r = 2 ** ((j + 5) // 2)
        S[f"noises.noise_{j}"] = (1, 1, r, r)
    return S


def port_discriminator_shapes(size, cm):
    ch, log = port_channels(cm), int(math.log2(size))
    S = {"convs.0.0.weight": (ch[size], 3, 1, 1), "convs.0.1.bias": (ch[size],)}
    cin = ch[size]
    for k, i in enumerate(range(log, 2, -1), start=1):
        c = ch[2 ** (i - 1)]
        S[f"convs.{k}.conv1.0.weight"], S[f"convs.{k}.conv1.1.bias"] = (cin, cin, 3, 3), (cin,)
        S[f"convs.{k}.conv2.0.kernel"] = (4, 4)  # Blur, then the stride-2 conv, then the activation's bias
        S[f"convs.{k}.conv2.1.weight"], S[f"convs.{k}.conv2.2.bias"] = (c, cin, 3, 3), (c,)
        S[f"convs.{k}.skip.0.kernel"], S[f"convs.{k}.skip.1.weight"] = (4, 4), (c, cin, 1, 1)
        cin = c
    S["final_conv.0.weight"], S["final_conv.1.bias"] = (ch[4], cin + 1, 3, 3), (ch[4],)
    S["final_linear.0.weight"], S["final_linear.0.bias"] = (ch[4], ch[4] * 16), (ch[4],)
    S["final_linear.1.weight"], S["final_linear.1.bias"] = (1, ch[4]), (1,)
    return S


@pytest.mark.parametrize("size,cm", [(64, 1), (64, 2), (256, 2)])
def test_state_dict_names_and_shapes_are_the_ports(size, cm):
    with torch.device("meta"):  # shapes only: no memory, no random init
        G, D = Generator(size, channel_multiplier=cm), Discriminator(size, channel_multiplier=cm)
    got_g = {k: tuple(v.shape) for k, v in G.state_dict().items()}
    got_d = {k: tuple(v.shape) for k, v in D.state_dict().items()}
    assert got_g == port_generator_shapes(size, cm)
    assert got_d == port_discriminator_shapes(size, cm)
    buffers = {k for k, _ in G.named_buffers()}
    assert {f"noises.noise_{j}" for j in range(G.num_layers)} <= buffers and "latent_avg" not in G.state_dict()
    assert (G.size, G.style_dim, G.n_latent, G.channel_multiplier) == (size, 512, 2 * int(math.log2(size)) - 2, cm)
    # the architecture is read back from the names and shapes alone
    assert generator_config(G.state_dict()) == {"size": size, "style_dim": 512, "n_mlp": 8,
                                                "channel_multiplier": cm, "channels": None}
    assert discriminator_config(D.state_dict()) == {"size": size, "channel_multiplier": cm, "channels": None}


def test_small_config_shapes_and_size():
    G, D = tiny()
    assert G.channels == {4: 16, 8: 16, 16: 16, 32: 16}
    n = sum(p.numel() for p in G.parameters()) + sum(p.numel() for p in D.parameters())
    assert n * 4 < 2e6  # a few hundred kB
    z = torch.randn(3, 32)
    img = G(z)
    assert img.shape == (3, 3, 32, 32) and img.dtype == torch.float32 and torch.isfinite(img).all()
    assert D(img).shape == (3, 1)
    # a cap under a full-size table, a dict override
    assert Generator(64, channel_multiplier=1, channels=64).channels == {4: 64, 8: 64, 16: 64, 32: 64, 64: 64}
    with torch.device("meta"):
        assert Generator(64, channels={64: 8}).channels[64] == 8
    with pytest.raises(ValueError, match="power of two"):
        Generator(48)


# ---------------------------------------------------------------------------------------------------------
# the generator and discriminator API


def test_z_and_w_paths_agree_and_truncation():
    G, _ = tiny()
    z = torch.randn(4, 32)
    with torch.no_grad():
        w = G.mapping(z)
        a = G(z, input_is_latent=False, randomize_noise=False, truncation=1.0)
        b = G(w, input_is_latent=True, randomize_noise=False)
        wplus = G(w[:, None].repeat(1, G.n_latent, 1), input_is_latent=True, randomize_noise=False)
        assert isinstance(a, torch.Tensor) and torch.equal(a, b) and torch.equal(a, wplus)
        assert torch.equal(G(z, randomize_noise=False), a)  # truncation=1 is a no-op
        img, lat = G(z, randomize_noise=False, return_latents=True)
        assert torch.equal(img, a) and lat.shape == (4, G.n_latent, 32)
        # truncation around the mapping mean (no latent_avg), then around latent_avg
        center = G.mean_latent(4096, torch.Generator().manual_seed(0))
        t = G(z, randomize_noise=False, truncation=0.7)
        ref = G(center + 0.7 * (w - center), input_is_latent=True, randomize_noise=False)
        assert torch.allclose(t, ref, atol=1e-6)
        G.latent_avg = w[0].clone()
        t0 = G(z, randomize_noise=False, truncation=0.0)
        assert torch.allclose(t0, t0[:1].expand_as(t0), atol=1e-6)
        assert torch.allclose(t0[0], a[0], atol=1e-6)
        # fixed vs random noise; an explicit noise list
        assert not torch.equal(G(z, randomize_noise=True), a)
        assert torch.equal(G(z, noise=G.fixed_noise()), a)
        # style mixing: two w's, the second from inject_index on
        m = G([w, w.flip(0)], input_is_latent=True, inject_index=3, randomize_noise=False)
        lat2 = torch.cat([w[:, None].repeat(1, 3, 1), w.flip(0)[:, None].repeat(1, G.n_latent - 3, 1)], 1)
        assert torch.equal(m, G(lat2, input_is_latent=True, randomize_noise=False))


def test_mapping_layers_compose():
    G, _ = tiny()
    z = torch.randn(5, 32)
    with torch.no_grad():
        w = G.mapping(z)
        assert torch.equal(G.mapping_layers(z, 0, G.n_mlp), w)
        assert torch.equal(G.mapping_layers(z), w)
        h = G.mapping_layers(z, 0, 1)
        assert torch.equal(G.mapping_layers(h, 1, G.n_mlp), w)
        dw = 0.1 * torch.randn_like(h)
        shifted = G.mapping_layers(h + dw, 1, G.n_mlp)
        assert shifted.shape == w.shape and not torch.equal(shifted, w)
    with torch.device("meta"):
        big = Generator(64)
    h = big.mapping_layers(torch.empty(2, 512, device="meta"), 0, 5)
    assert big.mapping_layers(h, 5, 8).shape == (2, 512)
    with pytest.raises(ValueError, match="start <= stop"):
        G.mapping_layers(z, 3, 2)


def test_discriminator_features():
    G, D = tiny()
    img = G(torch.randn(4, 32), randomize_noise=False).detach()
    logits, feats = D(img, return_features=True)
    assert torch.equal(logits, D(img)) and logits.shape == (4, 1)
    assert len(feats) == len(D.convs) == 4
    assert [tuple(f.shape) for f in feats] == [(4, 16, 32, 32), (4, 16, 16, 16), (4, 16, 8, 8), (4, 16, 4, 4)]
    assert torch.equal(feats[0], D.convs[0](img))
    # minibatch stddev with a batch that 4 does not divide (the port fails there)
    assert D(torch.randn(6, 3, 32, 32)).shape == (6, 1)


def test_gradients_flow_including_r1():
    G, D = tiny()
    G.train(), D.train()
    img = G(torch.randn(4, 32))
    torch.nn.functional.softplus(-D(img)).mean().backward()
    for n, p in G.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), n
        if n.endswith(("conv.weight", "input.input")):
            assert p.grad.abs().sum() > 0, n
    D.zero_grad()
    real = torch.rand(4, 3, 32, 32, requires_grad=True)
    r1 = sg2_train.d_r1_loss(D(real), real)
    r1.backward()
    assert torch.isfinite(r1) and D.convs[1].conv1[0].weight.grad.abs().sum() > 0


def test_upfirdn2d_basics():
    x = torch.randn(2, 3, 5, 7)
    assert torch.equal(upfirdn2d(x, torch.ones(1, 1)), x)
    k = torch.tensor([[1.0, 3, 3, 1]]).T @ torch.tensor([[1.0, 3, 3, 1]]) / 64
    up = upfirdn2d(torch.ones(1, 1, 6, 6), k * 4, up=2, pad=(2, 1))  # the Upsample layer's arithmetic
    assert up.shape == (1, 1, 12, 12) and torch.allclose(up[..., 2:-2, 2:-2], torch.ones(1, 1, 8, 8))
    down = upfirdn2d(torch.arange(64.0).view(1, 1, 8, 8), torch.ones(1, 1), down=2)
    assert torch.equal(down, torch.arange(64.0).view(1, 1, 8, 8)[..., ::2, ::2])
    crop = upfirdn2d(x, torch.ones(1, 1), pad=(-1, -2, -1, 0))
    assert torch.equal(crop, x[..., 1:, 1:-2])


# ---------------------------------------------------------------------------------------------------------
# checkpoints


def test_save_load_round_trip_is_exact(tmp_path):
    G, D = tiny()
    g = tiny(seed=1)[0]
    G.latent_avg = torch.randn(32)
    path = save_checkpoint(tmp_path / "x.pt", G, D, g=g, extra={"step": 7})
    assert not list(tmp_path.glob(".*tmp*"))
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"g_ema", "d", "g", "latent_avg", "arch", "step"}
    G2, D2 = load_checkpoint(path)
    G3, D3, g3 = load_checkpoint(raw, with_g=True)
    assert G2.config() == G.config() and D2.config() == D.config() and G2.channel_multiplier == 2
    z = torch.randn(3, 32)
    with torch.no_grad():
        for GG, DD in ((G2, D2), (G3, D3)):
            assert torch.equal(GG(z, randomize_noise=False, truncation=0.5), G(z, randomize_noise=False, truncation=0.5))
            img = G(z, randomize_noise=False)
            assert torch.equal(DD(img), D(img))
        assert torch.equal(g3(z, randomize_noise=False), g(z, randomize_noise=False))
    assert torch.equal(G2.latent_avg, G.latent_avg)
    # no 'd' (the port's converted official weights): D is None
    G4, D4 = load_checkpoint({"g_ema": G.state_dict()})
    assert D4 is None and G4.latent_avg is None


def test_shipped_generators_load_by_name(tmp_path, monkeypatch):
    """load_checkpoint("NAME") loads weights/NAME.pt of the package; an unknown name lists the shipped ones;
    an existing file of that name wins over the shipped one."""
    import voxrender.models.stylegan2.pretrained as pretrained

    G, D = tiny()
    monkeypatch.setattr(pretrained, "WEIGHTS", tmp_path)
    save_checkpoint(tmp_path / "mini.pt", G, D)
    (tmp_path / "mini.json").write_text('{"command": "voxrender train stylegan2 ..."}')
    assert pretrained.pretrained_names() == ["mini"]
    assert pretrained.pretrained_info("mini")["command"].startswith("voxrender train")
    G2, D2 = load_checkpoint("mini")
    z = torch.randn(2, 32)
    with torch.no_grad():
        assert torch.equal(G2(z, randomize_noise=False), G(z, randomize_noise=False))
    with pytest.raises(FileNotFoundError, match="shipped: mini"):
        load_checkpoint("nope")
    from voxrender.models.gan2shape.pipeline import load_gan  # `voxrender gan2shape --gan mini`

    G3, D3 = load_gan("mini")
    assert G3.config() == G.config() and D3 is not None
    with pytest.raises(FileNotFoundError, match="shipped with voxrender: mini"):
        load_gan("nope")
    monkeypatch.chdir(tmp_path / "..")
    (tmp_path / ".." / "mini").write_text("not a checkpoint")  # a file named like the shipped generator
    with pytest.raises(Exception):
        load_checkpoint("mini")


def test_the_shipped_generator_loads_and_draws_faces():
    """synface64 (package data) loads strictly, is small, and draws finite, varied images; D judges them."""
    from voxrender.models.stylegan2 import pretrained_info, pretrained_names, pretrained_path

    assert "synface64" in pretrained_names()
    assert pretrained_path("synface64").stat().st_size < 5e6  # "a small config, at most a few MB"
    info = pretrained_info("synface64")
    assert info["command"].startswith("voxrender train stylegan2") and info["steps"] > 0
    G, D = load_checkpoint("synface64")
    assert (G.size, G.style_dim) == (64, 256) and G.latent_avg is not None
    with torch.no_grad():
        img = G(torch.randn(8, G.style_dim, generator=torch.Generator().manual_seed(0)), randomize_noise=False)
        assert img.shape == (8, 3, 64, 64) and torch.isfinite(img).all()
        assert float(img.std(0).mean()) > 0.02  # not one image for every z
        assert torch.isfinite(D(img)).all()


def test_strict_load_names_missing_and_unexpected_keys():
    G, D = tiny()
    sd = dict(G.state_dict())
    del sd["convs.1.noise.weight"]
    with pytest.raises(ValueError, match=r"missing keys \['convs.1.noise.weight'\]"):
        load_checkpoint({"g_ema": sd, "d": D.state_dict()})
    dsd = dict(D.state_dict(), **{"final_linear.2.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"unexpected keys \['final_linear.2.weight'\]"):
        load_checkpoint({"g_ema": G.state_dict(), "d": dsd})
    sd = dict(G.state_dict())
    sd["to_rgb1.bias"] = torch.zeros(1, 4, 1, 1)
    with pytest.raises(ValueError, match="to_rgb1.bias"):
        load_checkpoint({"g_ema": sd})
    with pytest.raises(ValueError, match="missing key 'g_ema'"):
        load_checkpoint({"d": D.state_dict()})
    with pytest.raises(ValueError, match="input.input"):
        load_checkpoint({"g_ema": {k: v for k, v in G.state_dict().items() if k != "input.input"}})


# ---------------------------------------------------------------------------------------------------------
# against the port itself (optional)


def _import_port(port: Path):
    """The port's model.py with its op package's CUDA extension builds stubbed out (on the CPU it then
    uses upfirdn2d_native and the plain leaky ReLU)."""
    saved = {k: sys.modules.pop(k) for k in list(sys.modules) if k in ("model", "op") or k.startswith("op.")}
    sys.path.insert(0, str(port))
    try:
        with mock.patch("torch.utils.cpp_extension.load", lambda *a, **k: None):
            return importlib.import_module("model")
    finally:
        sys.path.remove(str(port))
        for k in [k for k in sys.modules if k in ("model", "op") or k.startswith("op.")]:
            del sys.modules[k]
        sys.modules.update(saved)


@pytest.fixture(scope="module")
def port_model():
    port = os.environ.get("VOXRENDER_SG2_PORT")
    if not port:
        pytest.skip("set VOXRENDER_SG2_PORT to a clone of rosinality/stylegan2-pytorch to compare with the port")
    if not (Path(port) / "model.py").is_file():
        pytest.skip(f"VOXRENDER_SG2_PORT={port}: no model.py there")
    try:
        return _import_port(Path(port))
    except Exception as e:  # noqa: BLE001 - any import problem is a skip reason
        pytest.skip(f"the port at {port} does not import: {type(e).__name__}: {e}")


@pytest.mark.parametrize("size,cm", [(64, 1), (64, 2), (256, 2)])
def test_outputs_equal_the_ports(port_model, size, cm):
    torch.manual_seed(size + cm)
    pg = port_model.Generator(size, 512, 8, channel_multiplier=cm).eval()
    pd = port_model.Discriminator(size, channel_multiplier=cm).eval()
    with torch.no_grad():
        for n, p in list(pg.named_parameters()) + list(pd.named_parameters()):
            if n.endswith("noise.weight") or n.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    G, D = load_checkpoint({"g_ema": pg.state_dict(), "d": pd.state_dict()})
    assert (G.size, G.channel_multiplier, D.size, D.channel_multiplier) == (size, cm, size, cm)
    z = torch.randn(2, 512)
    center = torch.randn(1, 512) * 0.1
    with torch.no_grad():
        w = G.mapping(z)
        # z path; w path with truncation 0.7 (one pass covers both: each G pass at 256 px is seconds)
        pairs = [(w, pg.get_latent(z)),
                 (G(z, randomize_noise=False), pg([z], randomize_noise=False)[0]),
                 (G(w, input_is_latent=True, randomize_noise=False, truncation=0.7, truncation_latent=center),
                  pg([w], input_is_latent=True, randomize_noise=False, truncation=0.7,
                     truncation_latent=center)[0])]
        img = pairs[1][1]
        pairs.append((D(img), pd(img)))
    for ours, ref in pairs:
        assert ours.shape == ref.shape
        assert (ours - ref).abs().max() <= 1e-5 * ref.abs().max().clamp_min(1)


# ---------------------------------------------------------------------------------------------------------
# training


def _write_pngs(folder: Path, n: int = 8, size: int = 36):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        a = np.zeros((size, size, 3), np.uint8)
        a[..., i % 3] = 200
        a[size // 4: 3 * size // 4, size // 4: 3 * size // 4] = rng.integers(0, 255, 3)
        Image.fromarray(a).save(folder / f"img_{i}.png")
    return folder


def _config(data_path, **kw):
    sg = sg2_train.StyleGAN2Config(size=32, style_dim=32, n_mlp=2, channels_max=8, r1=1.0, d_reg_every=2,
                                   path_reg=2.0, g_reg_every=2, **kw)
    return {"model": "stylegan2", "stylegan2": sg.to_dict(), "batch_size": 4,
            "data": {"name": "folder", "path": str(data_path), "length": None, "seed": 0}}


def test_train_resume_is_bit_exact_and_exports(tmp_path):
    data = _write_pngs(tmp_path / "imgs")
    cfg = _config(data)
    full, _ = sg2_train.train_run(cfg, tmp_path / "full", steps=6, ckpt_every=0, sample_every=0, progress=False,
                                  seed=3)
    part, _ = sg2_train.train_run(cfg, tmp_path / "part", steps=3, ckpt_every=0, sample_every=0, progress=False,
                                  seed=3)
    resumed, status = sg2_train.train_run(None, tmp_path / "part", steps=6, resume=True, ckpt_every=0,
                                          sample_every=0, progress=False)
    assert status == "done" and resumed.step == 6
    assert part.history == full.history[:3]
    assert resumed.history == full.history[3:]  # same losses (d, g, r1, path ...) after the resume
    assert {"d_loss", "g_loss", "r1", "path", "loss", "real_score", "fake_score"} <= set(full.history[-1])
    assert any(h["r1"] > 0 for h in full.history) and any(h["path"] > 0 for h in full.history)
    for k in ("g", "d", "g_ema"):
        for a, b in zip(full.task.modules[k].state_dict().values(), resumed.task.modules[k].state_dict().values()):
            assert torch.equal(a, b)
    # the exported port-format file holds the run's g_ema, d and g
    G, D, g = load_checkpoint(tmp_path / "full" / "stylegan2.pt", with_g=True)
    raw = torch.load(tmp_path / "full" / "stylegan2.pt", weights_only=True)
    assert {"g_ema", "d", "g", "latent_avg"} <= set(raw)
    for a, b in zip(G.state_dict().values(), full.task.g_ema.state_dict().values()):
        assert torch.equal(a, b)
    assert G.latent_avg.shape == (32,) and (tmp_path / "full" / "samples.png").is_file()


def test_nan_batch_stops_before_any_update(tmp_path):
    from voxrender.training import NonFiniteLoss, Trainer

    class Bad(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return {"image": torch.full((3, 32, 32), float("nan"))}

    task = sg2_train.build_task(_config(tmp_path), "cpu")
    before = [p.detach().clone() for p in task.D.parameters()]
    tr = Trainer(task, Bad(), tmp_path / "run", steps=2, batch_size=4, progress=False)
    with pytest.raises(NonFiniteLoss, match="last good state"):
        tr.fit()
    assert all(torch.equal(a, b) for a, b in zip(before, task.D.parameters()))


def test_synthetic_faces_source(monkeypatch):
    monkeypatch.setitem(sys.modules, "voxrender.data.faces", None)  # as if the module were missing
    with pytest.raises(ImportError, match="synthetic-faces"):
        sg2_train.make_dataset({"name": "synthetic-faces", "length": 4, "seed": 0}, 32)
    monkeypatch.undo()
    pytest.importorskip("voxrender.data.faces")
    ds = sg2_train.make_dataset({"name": "synthetic-faces", "length": 4, "seed": 0}, 32)
    from voxrender.training import fetch_batch

    b = fetch_batch(ds, [0, 1])
    assert set(b) == {"image"} and b["image"].shape == (2, 3, 32, 32)
    assert 0 <= float(b["image"].min()) and float(b["image"].max()) <= 1


def test_image_cache_holds_the_dataset_images_to_1_255():
    pytest.importorskip("voxrender.data.faces")
    from voxrender.training import fetch_batch

    data = {"name": "synthetic-faces", "length": 5, "seed": 0}
    direct = sg2_train.make_dataset({**data, "cache": "off"}, 32)
    cached = sg2_train.make_dataset({**data, "cache": "on"}, 32, progress=False)
    assert isinstance(cached, sg2_train.CachedImages) and not isinstance(direct, sg2_train.CachedImages)
    assert cached.images.dtype == torch.uint8 and len(cached) == 5
    a, b = fetch_batch(direct, [4, 0, 2])["image"], cached.get_batch([4, 0, 2])["image"]
    assert b.dtype == torch.float32 and a.shape == b.shape == (3, 3, 32, 32)
    assert float((a - b).abs().max()) <= 0.5 / 255 + 1e-6  # uint8 rounding, nothing else
    assert torch.equal(cached[2]["image"], b[2])
    small = sg2_train.CachedImages(direct, chunk=2, progress=False)  # chunking does not change anything
    assert torch.equal(small.images, cached.images)
    # auto: in memory up to 2 GiB; None (runs made before the option): off, so they resume exactly
    assert sg2_train.use_cache("auto", 10000, 64) and not sg2_train.use_cache("auto", 200000, 256)
    assert not sg2_train.use_cache(None, 5, 32) and not sg2_train.use_cache("off", 5, 32)
    with pytest.raises(ValueError, match="--image-cache"):
        sg2_train.use_cache("yes", 5, 32)


def test_cli_train_resume_and_load(tmp_path, run_cli):
    data = _write_pngs(tmp_path / "imgs")
    out = tmp_path / "run"
    args = ["train", "stylegan2", "--data", f"folder:{data}", "--size", "32", "--channels-max", "8",
            "--style-dim", "32", "--n-mlp", "2", "--batch-size", "4", "--ckpt-every", "2", "--sample-every", "2",
            "--out", str(out), "--no-progress", "--device", "cpu", "--seed", "1", "--image-cache", "on"]
    r = run_cli(*args, "--steps", "2")
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "config.json").read_text())["data"]["cache"] == "on"
    assert "stylegan2.pt" in r.stdout
    for name in ("last.ckpt", "stylegan2.pt", "samples.png", "config.json", "samples/step_000002.png"):
        assert (out / name).is_file(), name
    r = run_cli(*args, "--steps", "3", "--resume")
    assert r.returncode == 0, r.stderr
    assert "resumed from" in r.stderr and "step 3/3" in r.stdout
    G, D = load_checkpoint(out / "stylegan2.pt")
    assert (G.size, G.style_dim, G.n_mlp, G.channels[32]) == (32, 32, 2, 8)
    with torch.no_grad():
        img = G(torch.randn(2, 32), randomize_noise=False, truncation=0.7)
    assert img.shape == (2, 3, 32, 32) and D(img).shape == (2, 1)
    # errors: a vae checkpoint / a bad --data / --help
    r = run_cli("train", "stylegan2", "--data", "nope:x", "--out", str(tmp_path / "e"), "--steps", "1")
    assert r.returncode != 0 and "unknown source" in r.stderr
    r = run_cli("train", "stylegan2", "--data", f"folder:{tmp_path / 'missing'}", "--out", str(tmp_path / "e"),
                "--steps", "1", "--size", "32", "--channels-max", "8", "--style-dim", "32", "--n-mlp", "2")
    assert r.returncode != 0 and "not a folder" in r.stderr


def test_cli_help_lists_stylegan2_options(run_cli):
    r = run_cli("train", "--help")
    assert r.returncode == 0
    for opt in ("stylegan2", "--image-cache", "--max-minutes", "--size", "--channel-multiplier", "--channels-max", "--r1", "--path-reg", "--ema-kimg",
                "--ema-beta", "--sample-every", "--amp"):
        assert opt in r.stdout, opt


@pytest.mark.parametrize("model,batch", [("stylegan2", 16), ("vae", 64), ("gan", 64)])
def test_train_default_batch_size_is_each_models_published_one(model, batch, monkeypatch):
    """`voxrender train` without --batch-size: 16 for stylegan2 (the port's), 64 for the voxel models."""
    import voxrender.model_cli as model_cli
    import voxrender.models.stylegan2.train as sg2_train
    from voxrender.cli import build_parser

    seen = {}

    def stop(args):
        seen["batch"] = args.batch_size
        raise SystemExit(0)

    monkeypatch.setattr(sg2_train, "cmd_train", stop)
    monkeypatch.setattr(model_cli, "parse_data", lambda *a: stop(args))
    args = build_parser().parse_args(["train", model, "--out", "x"])
    with pytest.raises(SystemExit):
        model_cli.cmd_train(args)
    assert seen["batch"] == batch
    args = build_parser().parse_args(["train", model, "--out", "x", "--batch-size", "8"])
    with pytest.raises(SystemExit):
        model_cli.cmd_train(args)
    assert seen["batch"] == 8


def test_ema_generator_follows_the_trained_one(tmp_path):
    # g_ema <- beta g_ema + (1 - beta) G after every step; g_ema starts as a copy of G
    data = _write_pngs(tmp_path / "imgs")
    cfg = _config(data, ema_beta=0.75)
    start, _ = sg2_train.train_run(cfg, tmp_path / "start", steps=0, ckpt_every=0, sample_every=0, progress=False,
                                   seed=5)
    one, _ = sg2_train.train_run(cfg, tmp_path / "one", steps=1, ckpt_every=0, sample_every=0, progress=False,
                                 seed=5)
    g0 = dict(start.task.G.named_parameters())
    g1, e1 = dict(one.task.G.named_parameters()), dict(one.task.g_ema.named_parameters())
    moved = 0
    for k in g0:
        torch.testing.assert_close(e1[k], 0.75 * g0[k] + 0.25 * g1[k], rtol=1e-6, atol=1e-7)
        moved += not torch.equal(g0[k], g1[k])
    assert moved > 0
