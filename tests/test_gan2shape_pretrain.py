"""GAN2Shape's joint pretraining (GAN2Shape.pretrain, pipeline.pretrain_images, `voxrender pretrain-gan2shape`)
and per-image runs that start from its networks (--pretrained), on tiny StyleGAN2s."""

import dataclasses
import json
import math

import pytest
import torch
from test_gan2shape import tiny_gan
from voxrender.models.gan2shape import model as M
from voxrender.models.gan2shape.pipeline import load_pretrained, pretrain_images
from voxrender.models.stylegan2 import save_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def gan():
    return tiny_gan()


@pytest.fixture(scope="module")
def faces():
    from voxrender.data.faces import SyntheticFaces

    return SyntheticFaces(3, size=32, seed=0, split="train").get_batch(range(3))


def latents(G, n, seed=1):
    return G.mapping(torch.randn(n, G.style_dim, generator=torch.Generator().manual_seed(seed))).detach()


def nets_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_pretraining_schedules_are_the_published_ones():
    c = M.GAN2ShapeConfig.from_preset("synface").for_pretraining()
    assert (c.num_stages, c.steps(0), c.steps(1), c.batch_size, c.collect_iters) == (8, (1500,) * 3,
                                                                                    (700, 1000, 1000), 12, 1000)
    assert [c.flip("flip1", s) for s in range(8)] == [False] + [True] * 7
    assert all(c.flip("flip3", s) for s in range(8))
    assert c.prior_near == M.SYNFACE_PRIOR_NEAR and c.image_size == 64  # the rest of the preset is kept
    c = M.GAN2ShapeConfig.from_preset("celeba").for_pretraining()
    assert (c.num_stages, c.batch_size, c.collect_iters, c.image_size) == (4, 8, 800, 128)
    with pytest.raises(ValueError, match="car"):
        M.GAN2ShapeConfig.from_preset("car").for_pretraining()


def test_pretrain_visits_every_image(gan, faces):
    """Every image gets its own canonical record and its own projected samples; the iterations go round the
    images; step 0 fits the FIRST image's prior."""
    G, D = gan
    cfg = M.GAN2ShapeConfig.from_preset("tiny").for_pretraining()
    m = M.GAN2Shape(G, D, cfg)
    seen, sizes = [], []
    step3_loss = m.step3_loss

    def spy(flip):  # which image each step-3 iteration trains on, and how many projected samples it has
        seen.append(m._cur)
        sizes.append(m.proj.shape[0])
        return step3_loss(flip)

    m.step3_loss = spy
    res = m.pretrain(faces["image"], latents(G, 3))
    assert len(res["losses"]["step0"]) == cfg.prior_steps
    for stage, (s1, s2, s3) in enumerate((cfg.steps(0), cfg.steps(1))):
        assert [len(res["losses"][f"stage{stage + 1}/step{i}"]) for i in (1, 2, 3)] == [s1, s2, s3]
    # 3 + 2 step-3 iterations over 3 images: the first pass visits all three (a permutation)
    assert sorted(seen[:3]) == [0, 1, 2] and len(seen) == 5
    # collect_iters 4 batches of 2 over 3 images: 2, 1, 1 batches
    assert sorted(set(sizes)) == [2, 4]
    st = m.__dict__  # after the run the first image is current again and no joint state is left
    assert st["_states"] is None and torch.equal(m.image, M._as_image(faces["image"][0], 32, "cpu"))
    assert set(res) >= {"nets", "config", "style_dim", "losses", "times"} and res["images"] == 3


def test_pretrain_errors(gan, faces):
    G, D = gan
    cfg = M.GAN2ShapeConfig.from_preset("tiny").for_pretraining()
    m = M.GAN2Shape(G, D, cfg)
    with pytest.raises(ValueError, match="latents"):
        m.pretrain(faces["image"], latents(G, 2))
    few = dataclasses.replace(cfg, collect_iters=2)
    with pytest.raises(ValueError, match="collect_iters"):
        M.GAN2Shape(G, D, few).pretrain(faces["image"], latents(G, 3))


def test_pretrain_resumes_to_the_same_weights(gan, faces):
    """A pretraining resumed from its checkpoint after stage 1 ends with exactly the weights of an
    uninterrupted one (the checkpoint holds everything the later stages depend on)."""
    G, D = gan
    cfg = M.GAN2ShapeConfig.from_preset("tiny").for_pretraining()
    w = latents(G, 3)
    cks = []
    full = M.GAN2Shape(G, D, cfg).pretrain(faces["image"], w, seed=4, on_stage=cks.append)
    assert [c["stages_done"] for c in cks] == [0, 1, 2]
    resumed = M.GAN2Shape(G, D, cfg).pretrain(faces["image"], w, seed=4, resume=cks[1])
    assert nets_equal(full["nets"], resumed["nets"])
    assert resumed["losses"].keys() == full["losses"].keys()
    other = M.GAN2Shape(G, D, cfg).pretrain(faces["image"], w, seed=5)
    assert not nets_equal(full["nets"], other["nets"])


def test_weight_average_is_the_exponential_moving_average():
    """WeightAverage against the closed form: starting at w0, after updates with w1, w2 the average is
    d^2 w0 + d (1 - d) w1 + (1 - d) w2; integer buffers are copied, not averaged."""
    net = torch.nn.Module()
    net.lin = torch.nn.Linear(2, 1)
    net.register_buffer("count", torch.tensor(0))
    ws = [torch.randn(1, 2, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    with torch.no_grad():
        net.lin.weight.copy_(ws[0])
    d = 0.9
    avg = M.WeightAverage(net, d)
    for i in (1, 2):
        with torch.no_grad():
            net.lin.weight.copy_(ws[i])
            net.count.fill_(7 * i)
        avg.update(net)
    want = d * d * ws[0] + d * (1 - d) * ws[1] + (1 - d) * ws[2]
    got = avg.copy()
    torch.testing.assert_close(got["lin.weight"], want)
    assert got["count"].item() == 14 and got["count"].dtype == torch.int64
    assert not torch.equal(got["lin.weight"], net.lin.weight.detach())  # a copy, not the live weights
    again = M.WeightAverage(net, d, state=got)  # continued from a saved average
    assert torch.equal(again.copy()["lin.weight"], got["lin.weight"])
    for bad in (0.0, 1.0, -0.5):
        with pytest.raises(ValueError, match="decay"):
            M.WeightAverage(net, bad)
    with pytest.raises(ValueError, match="state"):
        M.WeightAverage(net, d, state={"lin.weight": ws[0]})


def test_pretrain_weight_average(gan, faces):
    """``average`` leaves the training exactly as it was (the same ``nets``) and returns the averaged
    weights, which a resumed run continues to the same values; a checkpoint with / without an average
    cannot be resumed by a call without / with one."""
    G, D = gan
    cfg = M.GAN2ShapeConfig.from_preset("tiny").for_pretraining()
    w = latents(G, 3)
    plain = M.GAN2Shape(G, D, cfg).pretrain(faces["image"], w, seed=4)
    cks = []
    m = M.GAN2Shape(G, D, cfg)
    avg = m.pretrain(faces["image"], w, seed=4, on_stage=cks.append, average=0.9)
    assert nets_equal(plain["nets"], avg["nets"]) and "nets_avg" not in plain and m.average is None
    assert avg["nets_avg"].keys() == avg["nets"].keys()
    assert all(torch.isfinite(v).all() for v in avg["nets_avg"].values())
    moved = [k for k, v in avg["nets"].items() if v.is_floating_point() and not torch.equal(v, avg["nets_avg"][k])]
    assert len(moved) > len(avg["nets"]) // 2
    assert all("nets_avg" in c for c in cks)
    resumed = M.GAN2Shape(G, D, cfg).pretrain(faces["image"], w, seed=4, resume=cks[1], average=0.9)
    assert nets_equal(avg["nets_avg"], resumed["nets_avg"]) and nets_equal(avg["nets"], resumed["nets"])
    with pytest.raises(ValueError, match="keeps a weight average"):
        M.GAN2Shape(G, D, cfg).pretrain(faces["image"], w, seed=4, resume=cks[1])
    cks_plain = []
    M.GAN2Shape(G, D, dataclasses.replace(cfg, num_stages=1)).pretrain(faces["image"], w, seed=4,
                                                                       on_stage=cks_plain.append)
    with pytest.raises(ValueError, match="keeps no weight average"):
        M.GAN2Shape(G, D, cfg).pretrain(faces["image"], w, seed=4, resume=cks_plain[0], average=0.9)


def test_run_from_pretrained_weights(gan, faces):
    """A per-image run with ``init`` starts from exactly those weights and skips step 0; networks of another
    size are refused with the reason."""
    G, D = gan
    init = M.GAN2Shape(G, D, M.GAN2ShapeConfig.from_preset("tiny").for_pretraining()).pretrain(
        faces["image"], latents(G, 3))
    cfg = M.GAN2ShapeConfig.from_preset("tiny", steps_first=(0, 0, 0), num_stages=1)
    res = M.GAN2Shape(G, D, cfg).run(faces["image"][0], latents(G, 1)[0], init=init)
    assert "step0" not in res.losses
    assert nets_equal(init["nets"], res.nets.state_dict())
    res = M.GAN2Shape(G, D, M.GAN2ShapeConfig.from_preset("tiny")).run(faces["image"][0], latents(G, 1)[0],
                                                                         init=init)
    assert not nets_equal(init["nets"], res.nets.state_dict()) and "step0" not in res.losses
    # no stages (--nets-only): the pretrained networks alone, the same prediction as a stage of 0 steps
    alone = M.GAN2Shape(G, D, dataclasses.replace(cfg, num_stages=0)).run(faces["image"][0], latents(G, 1)[0],
                                                                          init=init)
    zero = M.GAN2Shape(G, D, cfg).run(faces["image"][0], latents(G, 1)[0], init=init)
    assert not alone.losses and nets_equal(init["nets"], alone.nets.state_dict())
    for name in ("canon_depth", "canon_albedo", "view", "light", "view_depth", "recon"):
        assert torch.equal(getattr(alone, name), getattr(zero, name)), name
    with pytest.raises(ValueError, match="image_size 32 .run: 64"):
        M.check_pretrained(init, M.GAN2ShapeConfig.from_preset("tiny", image_size=64), G.style_dim)
    with pytest.raises(ValueError, match="style_dim"):
        M.check_pretrained(init, M.GAN2ShapeConfig.from_preset("tiny"), G.style_dim * 2)
    # the depth anchor must match the pretraining's (and, when on, the prior it holds the depth at)
    with pytest.raises(ValueError, match="depth_anchor False .run: True"):
        M.check_pretrained(init, M.GAN2ShapeConfig.from_preset("tiny", depth_anchor=True), G.style_dim)
    anchored = dict(init, config=dict(init["config"], depth_anchor=True))
    M.check_pretrained(anchored, M.GAN2ShapeConfig.from_preset("tiny", depth_anchor=True), G.style_dim)
    with pytest.raises(ValueError, match="depth_anchor True .run: False"):
        M.check_pretrained(anchored, M.GAN2ShapeConfig.from_preset("tiny"), G.style_dim)
    with pytest.raises(ValueError, match="prior_far"):
        M.check_pretrained(anchored, M.GAN2ShapeConfig.from_preset("tiny", depth_anchor=True, prior_far=1.03),
                           G.style_dim)
    with pytest.raises(ValueError, match="category synface .run: None"):  # the anchor holds the prior's mean
        M.check_pretrained(anchored, dataclasses.replace(M.GAN2ShapeConfig.from_preset("tiny", depth_anchor=True),
                                                         category=None), G.style_dim)
    with pytest.raises(ValueError, match="category: expected one of"):
        M.GAN2ShapeConfig.from_preset("tiny", category="dog")
    with pytest.raises(ValueError, match="tilt_anchor False .run: True"):
        M.check_pretrained(anchored, M.GAN2ShapeConfig.from_preset("tiny", depth_anchor=True, tilt_anchor=True),
                           G.style_dim)
    tilted = dict(init, config=dict(anchored["config"], tilt_anchor=True))
    M.check_pretrained(tilted, M.GAN2ShapeConfig.from_preset("tiny", depth_anchor=True, tilt_anchor=True), G.style_dim)
    with pytest.raises(ValueError, match="tilt_anchor True .run: False"):
        M.check_pretrained(tilted, M.GAN2ShapeConfig.from_preset("tiny", depth_anchor=True), G.style_dim)
    # the frame the anchors held it in (networks made before the option: "input")
    canonical = M.GAN2ShapeConfig.from_preset("tiny", depth_anchor=True, tilt_anchor=True, anchor_frame="canonical")
    with pytest.raises(ValueError, match="anchor_frame input .run: canonical.*--anchor-frame"):
        M.check_pretrained(tilted, canonical, G.style_dim)
    framed = dict(init, config=dict(tilted["config"], anchor_frame="canonical"))
    M.check_pretrained(framed, canonical, G.style_dim)
    with pytest.raises(ValueError, match="anchor_frame canonical .run: input"):
        M.check_pretrained(framed, M.GAN2ShapeConfig.from_preset("tiny", depth_anchor=True, tilt_anchor=True),
                           G.style_dim)


def test_pretrain_images_writes_and_resumes(tmp_path, gan, faces):
    G, D = gan
    cfg = M.GAN2ShapeConfig.from_preset("tiny").for_pretraining()
    w = latents(G, 3)
    res = pretrain_images(G, D, cfg, faces["image"], w, tmp_path, progress=False, log=lambda *a: None)
    for name in ("pretrained.pt", "pretrain.json", "pretrained.png", "checkpoint.pt"):
        assert (tmp_path / name).is_file(), name
    info = json.loads((tmp_path / "pretrain.json").read_text())
    assert info["images"] == 3 and "stage2/step3" in info["losses"] and "nets" not in info
    assert len(info["relief"]) == 3 and all(r is None or abs(r) < 0.3 for r in info["relief"])
    init = load_pretrained(tmp_path / "pretrained.pt")
    assert nets_equal(init["nets"], res["nets"])
    # --resume: the checkpoint after the last stage leaves nothing to do and gives the same weights
    again = pretrain_images(G, D, cfg, faces["image"], w, tmp_path, progress=False, resume=True, log=lambda *a: None)
    assert nets_equal(again["nets"], res["nets"])
    from voxrender.models.gan2shape.records import RecordMismatch

    with pytest.raises(RecordMismatch, match="seed"):
        pretrain_images(G, D, cfg, faces["image"], w, tmp_path, progress=False, resume=True, seed=9)
    with pytest.raises(ValueError, match="not pretrained GAN2Shape"):
        load_pretrained(tmp_path / "checkpoint.pt")
    # the moving average: pretrained_avg.pt beside the same pretrained.pt; resuming needs the same decay
    avg_out = tmp_path / "avg"
    res_avg = pretrain_images(G, D, cfg, faces["image"], w, avg_out, progress=False, average=0.9,
                              log=lambda *a: None)
    assert nets_equal(load_pretrained(avg_out / "pretrained.pt")["nets"], res["nets"])
    init_avg = load_pretrained(avg_out / "pretrained_avg.pt")
    assert nets_equal(init_avg["nets"], res_avg["nets_avg"]) and init_avg["average"] == 0.9
    assert not nets_equal(init_avg["nets"], res["nets"])
    with pytest.raises(RecordMismatch, match="average"):
        pretrain_images(G, D, cfg, faces["image"], w, avg_out, progress=False, resume=True, average=0.99)
    with pytest.raises(FileNotFoundError, match="pretrain-gan2shape"):
        load_pretrained(tmp_path / "nope.pt")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, gan):
    path = tmp_path_factory.mktemp("g2sp") / "tiny.pt"
    save_checkpoint(path, *gan)
    return path


def test_cli_pretrain_then_eval(tmp_path, run_cli, ckpt, capsys, load_tool):
    pre = tmp_path / "pre"
    r = run_cli("pretrain-gan2shape", "--gan", str(ckpt), "--preset", "tiny", "--n", "3", "--out", str(pre),
                "--no-progress", "--average-weights", "0.9")
    assert r.returncode == 0, r.stderr
    assert (pre / "pretrained.pt").is_file() and "--pretrained" in r.stdout
    assert load_pretrained(pre / "pretrained_avg.pt")["average"] == 0.9 and "moving average" in r.stdout
    ev = tmp_path / "ev"
    r = run_cli("eval-gan2shape", "--gan", str(ckpt), "--preset", "tiny", "--n", "1", "--out", str(ev),
                "--invert-steps", "2", "--mean-depth-n", "4", "--no-progress", "--pretrained", str(pre / "pretrained.pt"))
    assert r.returncode == 0, r.stderr
    m = json.loads((ev / "metrics.json").read_text())
    assert m["pretrained"]["images"] == 3 and m["pretrained"]["key"]["data"][0] == "samples"
    # --nets-only: the pretrained networks alone, scored the same way
    r = run_cli("eval-gan2shape", "--gan", str(ckpt), "--preset", "tiny", "--n", "1", "--out", str(tmp_path / "alone"),
                "--invert-steps", "2", "--mean-depth-n", "4", "--no-progress", "--pretrained", str(pre / "pretrained.pt"),
                "--nets-only")
    assert r.returncode == 0, r.stderr
    alone = json.loads((tmp_path / "alone" / "metrics.json").read_text())
    assert alone["config"]["num_stages"] == 0 and m["config"]["num_stages"] == 2
    assert alone["gan2shape"]["count"] == 1 and "alone (no per-image steps)" in r.stdout
    # tools/diag_oracle_view.py: the same networks with V's view of each face replaced by its true view
    from voxrender.data.faces import SyntheticFaces

    tool = load_tool("diag_oracle_view")
    truth = SyntheticFaces(2, size=32, split="test").get_batch(range(2))["view"]
    before = (M.GAN2Shape.run, M.GAN2Shape.predict)
    assert tool.main(["--replace", "all", "--out", str(tmp_path / "ov"), "--", "--gan", str(ckpt), "--preset", "tiny",
                      "--n", "2", "--invert-steps", "2", "--mean-depth-n", "4", "--no-progress", "--save-images",
                      "--pretrained", str(pre / "pretrained.pt")]) == 0
    assert (M.GAN2Shape.run, M.GAN2Shape.predict) == before  # the class is left as it was
    capsys.readouterr()
    for k in range(2):
        v = json.loads((tmp_path / "ov" / "images" / f"test_{k:04d}" / "result.json").read_text())["view"]
        got = [math.radians(x) for x in v["rotation_deg"]] + v["translation"]
        assert got == pytest.approx(truth[k].tolist(), abs=1e-5)
    r = run_cli("eval-gan2shape", "--gan", str(ckpt), "--preset", "tiny", "--n", "1", "--out", str(tmp_path / "x"),
                "--nets-only")
    assert r.returncode != 0 and "--nets-only" in r.stderr and "--pretrained" in r.stderr
    # its resume records are keyed by the pretrained networks: without them the records do not match
    r = run_cli("eval-gan2shape", "--gan", str(ckpt), "--preset", "tiny", "--n", "1", "--out", str(ev),
                "--invert-steps", "2", "--mean-depth-n", "4", "--no-progress", "--resume")
    assert r.returncode != 0 and "pretrained" in r.stderr
    # the oracle diagnostic and the synthetic training faces
    r = run_cli("pretrain-gan2shape", "--gan", str(ckpt), "--preset", "tiny", "--n", "2", "--out",
                str(tmp_path / "or"), "--no-progress", "--data", "synthetic-faces", "--oracle-samples")
    assert r.returncode == 0, r.stderr
    assert "ORACLE" in r.stdout
    r = run_cli("gan2shape", "--gan", str(ckpt), "--preset", "tiny", "--samples", "1", "--out", str(tmp_path / "g"),
                "--no-progress", "--pretrained", str(tmp_path / "or" / "pretrained.pt"))
    assert r.returncode == 0, r.stderr
    assert "step0" not in json.loads((tmp_path / "g" / "sample_000" / "result.json").read_text())["losses"]


def test_cli_pretrain_errors(tmp_path, run_cli, ckpt):
    r = run_cli("pretrain-gan2shape", "--gan", str(ckpt), "--preset", "tiny", "--oracle-samples", "--out",
                str(tmp_path))
    assert r.returncode != 0 and "--data synthetic-faces" in r.stderr
    r = run_cli("pretrain-gan2shape", "--gan", str(ckpt), "--preset", "tiny", "--n", "5", "--out", str(tmp_path))
    assert r.returncode != 0 and "--n 5" in r.stderr
    r = run_cli("pretrain-gan2shape", "--gan", str(ckpt), "--preset", "car", "--out", str(tmp_path))
    assert r.returncode != 0 and "no joint pretraining" in r.stderr
    r = run_cli("pretrain-gan2shape", "--gan", str(ckpt), "--preset", "tiny", "--average-weights", "1", "--out",
                str(tmp_path))
    assert r.returncode != 0 and "--average-weights" in r.stderr
    r = run_cli("gan2shape", "--gan", str(ckpt), "--preset", "tiny", "--pretrained", str(tmp_path / "x.pt"),
                "--out", str(tmp_path))
    assert r.returncode != 0 and "x.pt" in r.stderr
    pre = tmp_path / "pre"
    assert run_cli("pretrain-gan2shape", "--gan", str(ckpt), "--preset", "tiny", "--n", "2", "--out", str(pre),
                   "--no-progress").returncode == 0
    r = run_cli("gan2shape", "--gan", str(ckpt), "--preset", "tiny", "--image-size", "64", "--pretrained",
                str(pre / "pretrained.pt"), "--out", str(tmp_path / "o"))
    assert r.returncode != 0 and "image_size 32" in r.stderr


def test_cli_pretrain_on_inverted_training_faces(tmp_path, run_cli, ckpt):
    """--data synthetic-faces: each training face is inverted into W once; --resume reuses the inversions."""
    out = tmp_path / "faces"
    args = ("pretrain-gan2shape", "--gan", str(ckpt), "--preset", "tiny", "--n", "2", "--out", str(out),
            "--no-progress", "--data", "synthetic-faces", "--invert-steps", "3")
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr
    inv = torch.load(out / "inversions.pt", weights_only=False)
    assert sorted(inv["done"]) == [0, 1] and inv["done"][0].shape == (32,)
    first = load_pretrained(out / "pretrained.pt")
    assert first["key"]["data"] == ["synthetic-faces", "train", 0]
    r = run_cli(*args, "--resume")
    assert r.returncode == 0, r.stderr
    assert nets_equal(first["nets"], load_pretrained(out / "pretrained.pt")["nets"])
