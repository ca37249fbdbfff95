"""Real-data loaders (voxrender.data.images / modelnet / sources) on small files written in the real formats:
MNIST / Fashion-MNIST IDX (gzipped and raw), image folders, CelebA, ModelNet40 .off trees, mixtures;
missing-dataset messages; `voxrender train vae|gan --data ...`."""

import gzip
import math
import struct

import numpy as np
import pytest
import torch

from voxrender.data.images import (CelebA, DatasetFormatError, DatasetNotFoundError, IDXImages, ImageFolder,
                                   read_idx, write_idx)
from voxrender.data.modelnet import PAPER_CATEGORIES, ModelNetRenders, prepare_mesh
from voxrender.data.sources import Mixture, build_dataset, paper_weights, parse_source


pytestmark = pytest.mark.usefixtures("one_thread")  # small ops: one thread is faster and steadier


def _digits(n, seed=0, size=28):
    """n (size x size) uint8 images: a bright square at a position that encodes the index."""
    rng = np.random.default_rng(seed)
    img = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        r, c = 4 + (i % 5) * 3, 4 + (i // 5 % 5) * 3
        img[i, r:r + 8, c:c + 8] = 255
        img[i, 0, 0] = rng.integers(0, 256)
    return img


def _write_mnist(root, n=12, gz=True, labels=True, split="train", seed=0):
    """Hand-written IDX files with the documented headers (magic 0x00000803 images, 0x00000801 labels)."""
    root.mkdir(parents=True, exist_ok=True)
    imgs = _digits(n, seed)
    lbl = (np.arange(n) % 10).astype(np.uint8)
    prefix = "train" if split == "train" else "t10k"
    raw_i = struct.pack(">IIII", 0x00000803, n, 28, 28) + imgs.tobytes()
    raw_l = struct.pack(">II", 0x00000801, n) + lbl.tobytes()
    files = [(f"{prefix}-images-idx3-ubyte", raw_i)] + ([(f"{prefix}-labels-idx1-ubyte", raw_l)] if labels else [])
    for name, raw in files:
        if gz:
            (root / (name + ".gz")).write_bytes(gzip.compress(raw))
        else:
            (root / name).write_bytes(raw)
    return imgs, lbl


@pytest.mark.parametrize("gz", [True, False])
def test_idx_mnist_gz_and_raw(tmp_path, gz):
    imgs, lbl = _write_mnist(tmp_path / "mnist", gz=gz)
    ds = IDXImages(tmp_path / "mnist", "mnist", image_size=28)
    assert len(ds) == 12
    b = ds.get_batch([0, 5, 11])
    assert b["image"].shape == (3, 1, 28, 28) and b["image"].dtype == torch.float32
    torch.testing.assert_close(b["image"][:, 0], torch.from_numpy(imgs[[0, 5, 11]]).float() / 255)
    assert b["label"].tolist() == [0, 5, 1]
    item = ds[3]
    assert item["image"].shape == (1, 28, 28) and int(item["label"]) == 3
    # resized and RGB for other models
    ds32 = IDXImages(tmp_path / "mnist", "fashion", image_size=32, channels=3)
    x = ds32.get_batch([1])["image"]
    assert x.shape == (1, 3, 32, 32) and 0 <= float(x.min()) and float(x.max()) <= 1
    assert torch.equal(x[:, 0], x[:, 2])


def test_read_idx_types_and_errors(tmp_path):
    for dtype in (np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64):
        a = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
        for suffix in ("", ".gz"):
            p = write_idx(tmp_path / f"a_{np.dtype(dtype).name}{suffix}", a)
            out = read_idx(p)
            assert out.dtype == np.dtype(dtype) and np.array_equal(out, a)
    with open(tmp_path / "a_uint8", "rb") as f:
        head = f.read(4)
    assert head == bytes([0, 0, 0x08, 3])  # the magic number
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(DatasetFormatError, match="not an IDX file"):
        read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(struct.pack(">IIII", 0x803, 10, 28, 28) + b"\0" * 100)
    with pytest.raises(DatasetFormatError, match="truncated"):
        read_idx(tmp_path / "short")


def test_idx_layouts_splits_and_missing_messages(tmp_path):
    # torchvision's download layout, unpacked, no labels; the t10k split
    _write_mnist(tmp_path / "tv" / "FashionMNIST" / "raw", n=7, gz=False, labels=False, split="test")
    ds = IDXImages(tmp_path / "tv", "fashion", split="test")
    assert len(ds) == 7 and ds.get_batch([2])["label"].tolist() == [-1]
    with pytest.raises(DatasetNotFoundError) as e:
        IDXImages(tmp_path / "tv", "fashion", split="train")
    msg = str(e.value)
    assert "Fashion-MNIST" in msg and "train-images-idx3-ubyte.gz" in msg and "t10k-labels-idx1-ubyte.gz" in msg
    assert "zalandoresearch/fashion-mnist" in msg and str(tmp_path / "tv") in msg
    with pytest.raises(FileNotFoundError, match="yann.lecun.com"):
        IDXImages(tmp_path / "nothing", "mnist")
    # a labels file given as the images is refused clearly
    _write_mnist(tmp_path / "x", n=3)
    (tmp_path / "x" / "train-images-idx3-ubyte.gz").unlink()
    (tmp_path / "x" / "train-labels-idx1-ubyte.gz").rename(tmp_path / "x" / "train-images-idx3-ubyte.gz")
    with pytest.raises(DatasetFormatError, match="labels file"):
        IDXImages(tmp_path / "x")


def _write_images(folder, n=5, size=(20, 12), mode="L"):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        a = np.zeros((size[1], size[0], 3), np.uint8)
        a[..., 0] = 40 * i
        a[size[1] // 2 - 2:size[1] // 2 + 2, size[0] // 2 - 2:size[0] // 2 + 2] = 255  # a bright centre
        im = Image.fromarray(a).convert(mode)
        p = folder / (f"img_{i:02d}.png" if i % 2 == 0 else f"sub/img_{i:02d}.jpg")
        p.parent.mkdir(exist_ok=True)
        im.save(p, quality=95) if p.suffix == ".jpg" else im.save(p)
        paths.append(p)
    (folder / "notes.txt").write_text("not an image")
    return paths


def test_image_folder_grey_and_rgb(tmp_path):
    _write_images(tmp_path / "imgs", n=5, mode="RGB")
    ds = ImageFolder(tmp_path / "imgs", image_size=8, channels=1)
    assert len(ds) == 5 and [p.name for p in ds.files][:2] == ["img_00.png", "img_02.png"]
    b = ds.get_batch(range(5))
    assert b["image"].shape == (5, 1, 8, 8) and 0 <= float(b["image"].min()) and float(b["image"].max()) <= 1
    assert float(b["image"][0, 0, 4, 4]) > 0.8 and float(b["image"][0, 0, 0, 0]) < 0.05  # centre crop kept the middle
    rgb = ImageFolder(tmp_path / "imgs", image_size=6, channels=3).get_batch([1])["image"]
    assert rgb.shape == (1, 3, 6, 6) and float(rgb[0, 0, 0, 0]) > float(rgb[0, 1, 0, 0])  # red in the corner
    inv = ImageFolder(tmp_path / "imgs", image_size=8, invert=True).get_batch([0])["image"]
    torch.testing.assert_close(inv, 1 - b["image"][:1])
    _write_images(tmp_path / "grey", n=2, mode="L")
    assert ImageFolder(tmp_path / "grey", image_size=4, channels=3).get_batch([0])["image"].shape == (1, 3, 4, 4)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetNotFoundError, match="no images"):
        ImageFolder(tmp_path / "empty")
    with pytest.raises(DatasetNotFoundError, match="not a folder"):
        ImageFolder(tmp_path / "missing")


def test_celeba_layout_crop_and_partition(tmp_path):
    from PIL import Image

    folder = tmp_path / "celeba" / "img_align_celeba"
    folder.mkdir(parents=True)
    for i in range(1, 5):
        a = np.zeros((218, 178, 3), np.uint8)  # CelebA's aligned size; a bright 120 x 120 centre
        a[49:169, 29:149] = (200, 100, 50)
        Image.fromarray(a).save(folder / f"{i:06d}.jpg", quality=95)
    (tmp_path / "celeba" / "list_eval_partition.txt").write_text("000001.jpg 0\n000002.jpg 0\n000003.jpg 1\n"
                                                                   "000004.jpg 2\n")
    ds = CelebA(tmp_path / "celeba", image_size=16)
    assert [p.name for p in ds.files] == ["000001.jpg", "000002.jpg"]
    x = ds.get_batch([0])["image"]
    assert x.shape == (1, 3, 16, 16)
    assert float(x[0, 0].min()) > 0.7  # the 108 px centre crop sees only the bright face region
    wide = CelebA(tmp_path / "celeba", image_size=16, crop=None).get_batch([0])["image"]
    assert float(wide[0, 0].min()) < 0.3  # the largest centre square (178 px) reaches the dark border
    assert len(CelebA(folder, image_size=16, split="test")) == 1  # pointing at img_align_celeba works too
    with pytest.raises(DatasetNotFoundError, match="img_align_celeba.zip"):
        CelebA(tmp_path / "nothing")


# -- ModelNet40 ----------------------------------------------------------------------------------------------

def _box_off(lo, hi):
    """A closed box as OFF lines (quads: fan-triangulated by the loader)."""
    (x0, y0, z0), (x1, y1, z1) = lo, hi
    v = [(x0, y0, z0), (x1, y0, z0), (x1, y1, z0), (x0, y1, z0), (x0, y0, z1), (x1, y0, z1), (x1, y1, z1), (x0, y1, z1)]
    f = [(0, 3, 2, 1), (4, 5, 6, 7), (0, 1, 5, 4), (2, 3, 7, 6), (1, 2, 6, 5), (0, 4, 7, 3)]
    return v, f


def _write_off(path, v, f, malformed=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    head = f"OFF{len(v)} {len(f)} 0\n" if malformed else f"OFF\n{len(v)} {len(f)} 0\n"
    body = "".join(f"{a} {b} {c}\n" for a, b, c in v) + "".join(f"{len(p)} " + " ".join(map(str, p)) + "\n"
                                                                  for p in f)
    path.write_text(head + body)


def _modelnet_tree(root, categories=("chair", "cup"), per=2):
    """<root>/<category>/{train,test}/<category>_NNNN.off; the second mesh of each has the malformed header.
    A tall thin box (z up in ModelNet: 4 x 1 x 1 along z) and a flat wide one."""
    for cat in categories:
        for split in ("train", "test"):
            for k in range(per):
                tall = k % 2 == 0
                v, f = _box_off((0, 0, 0), (10, 10, 40) if tall else (40, 10, 10))
                _write_off(root / cat / split / f"{cat}_{k + 1:04d}.off", v, f, malformed=k % 2 == 1)


def test_modelnet_renders_tree_frame_and_cache(tmp_path):
    _modelnet_tree(tmp_path / "ModelNet40")
    ds = ModelNetRenders(tmp_path, categories=("chair", "cup"), image_size=16, views=4, cache_dir=tmp_path / "cache")
    assert len(ds.files) == 4 and len(ds) == 16 and ds.labels == [0, 0, 1, 1]
    assert ds.files[1].name == "chair_0002.off"  # the malformed "OFF8 6 0" header was read
    b = ds.get_batch(range(8))
    assert b["image"].shape == (8, 1, 16, 16) and 0 <= float(b["image"].min()) and float(b["image"].max()) <= 1
    assert b["label"].tolist() == [0] * 8
    az = b["azimuth"][:4]
    steps = torch.diff(az)
    torch.testing.assert_close(steps, torch.full((3,), math.pi / 2))  # views every 90 degrees
    # ModelNet's z is up: the tall box stands upright in the image (rows = y), at every azimuth
    sil = b["image"][:4, 0] > 0.5
    rows = sil.any(2).sum(1)
    cols = sil.any(1).sum(1)
    assert (rows > cols).all() and (rows >= 13).all()
    # the flat box (second mesh) is wide at azimuths that see its long side
    sil2 = b["image"][4:8, 0] > 0.5
    assert (sil2.any(1).sum(1) > sil2.any(2).sum(1)).any()
    # renders cached on disk and reused (same pixels) by a new dataset
    cached = sorted((tmp_path / "cache").rglob("*.npy"))
    assert len(cached) == 2
    ds2 = ModelNetRenders(tmp_path, categories=("chair", "cup"), image_size=16, views=4, cache_dir=tmp_path / "cache")
    ds2.mesh = None  # would fail if anything were loaded or rendered again
    assert torch.equal(ds2.get_batch(range(8))["image"], b["image"])
    # on the fly: one item per mesh, a random azimuth each
    fly = ModelNetRenders(tmp_path / "ModelNet40", categories=("cup",), split="test", image_size=12, views=0,
                          mode="shaded", channels=3)
    x = fly.get_batch([0, 1])
    assert len(fly) == 2 and x["image"].shape == (2, 3, 12, 12) and x["azimuth"][0] != x["azimuth"][1]


def test_modelnet_silhouette_matches_the_voxel_renderer_frame():
    """A mesh and its voxelisation render in the same place (the voxel models compare these images)."""
    import voxrender as vr
    from voxrender.data.modelnet import render_views

    v, f = _box_off((-0.6, -0.3, -0.2), (0.6, 0.3, 0.2))  # already in the library's frame
    from voxrender.mesh_io import _fan

    faces = torch.tensor([t for p in f for t in _fan(list(p))])
    verts = torch.tensor(v, dtype=torch.float32)
    az = torch.tensor([0.0, 0.7, 1.5707963])
    sil = render_views(verts, faces, az, 32)[:, 0] > 0.5
    c = -1 + (2 * torch.arange(64) + 1) / 64
    z, y, x = torch.meshgrid(c, c, c, indexing="ij")
    vol = ((x.abs() <= 0.6) & (y.abs() <= 0.3) & (z.abs() <= 0.2)).float()
    img = vr.project_volume(vol[None].expand(3, -1, -1, -1), azimuth=az, tau=50.0, image_size=32)[:, 0] > 0.5
    disagree = (sil != img).float().sum((1, 2))
    assert (disagree <= 0.12 * img.float().sum((1, 2))).all(), disagree


def test_modelnet_default_categories_and_missing_message(tmp_path):
    assert PAPER_CATEGORIES == ("chair", "car", "cup", "bowl", "person", "airplane")
    _modelnet_tree(tmp_path, categories=("chair", "cup"), per=1)
    with pytest.raises(DatasetNotFoundError) as e:
        ModelNetRenders(tmp_path)
    msg = str(e.value)
    assert "ModelNet40.zip" in msg and str(tmp_path / "car" / "train") in msg and "chair/train" not in msg
    assert "<category>_0001.off" in msg
    v = prepare_mesh(torch.tensor([[0.0, 0.0, 0.0], [1.0, 2.0, 4.0]]))
    assert float(v.norm(dim=1).max()) == pytest.approx(0.9)
    assert float(v[1, 1]) < 0  # +z up becomes -y (the library's y points down)


# -- sources and mixtures --------------------------------------------------------------------------------------

def test_parse_source_and_paper_weights():
    assert parse_source("mnist:~/d") == {"name": "mnist", "path": "~/d"}
    assert parse_source("synthetic") == {"name": "synthetic", "path": None}
    with pytest.raises(ValueError, match="unknown source"):
        parse_source("cifar:/x")
    with pytest.raises(ValueError, match="needs the folder"):
        parse_source("folder")
    assert paper_weights(["mnist", "fashion", "folder"]) == [0.25, 0.25, 0.5]
    assert paper_weights(["mnist", "fashion", "folder", "celeba"]) == [0.25] * 4
    assert paper_weights(["mnist", "folder"]) == pytest.approx([1 / 3, 2 / 3])


def test_mixture_weights_determinism_and_shapes(tmp_path):
    _write_mnist(tmp_path / "m", n=10)
    _write_mnist(tmp_path / "f", n=10, seed=1)
    _write_images(tmp_path / "imgs", n=4)
    srcs = [f"mnist:{tmp_path / 'm'}", f"fashion:{tmp_path / 'f'}", f"folder:{tmp_path / 'imgs'}"]
    mix = build_dataset(srcs, image_size=16, channels=1, length=4000, seed=3)
    assert isinstance(mix, Mixture) and len(mix) == 4000
    counts = np.bincount([mix.locate(i)[0] for i in range(4000)], minlength=3) / 4000
    assert np.allclose(counts, [0.25, 0.25, 0.5], atol=0.03)
    b = mix.get_batch(range(32))
    assert b["image"].shape == (32, 1, 16, 16)
    assert torch.equal(b["image"], mix.get_batch(range(32))["image"])  # a function of (seed, index)
    k, j = mix.locate(5)
    torch.testing.assert_close(b["image"][5], mix.datasets[k].get_batch([j])["image"][0])
    other = build_dataset(srcs, weights=[0, 1, 0], image_size=16, seed=3)
    assert len(other) == 24 and {other.locate(i)[0] for i in range(100)} == {1}
    with pytest.raises(ValueError, match="2 weights for 3"):
        build_dataset(srcs, weights=[1, 1], image_size=16)


# -- the command line --------------------------------------------------------------------------------------------


def test_cli_train_on_real_data(tmp_path, run_cli):
    import json

    _write_mnist(tmp_path / "mnist", n=16)
    _write_mnist(tmp_path / "fashion", n=16, gz=False, seed=2)
    _write_images(tmp_path / "imgs", n=4)
    _modelnet_tree(tmp_path / "mn", categories=PAPER_CATEGORIES, per=1)
    tiny_vae = ["--grid", "16", "--batch-size", "8", "--threads", "1", "--no-progress"]
    r = run_cli("train", "vae", "--data", f"mnist:{tmp_path / 'mnist'}", "--data", f"fashion:{tmp_path / 'fashion'}",
                "--data", f"folder:{tmp_path / 'imgs'}", "--steps", "2", "--out", str(tmp_path / "mix"), *tiny_vae)
    assert r.returncode == 0, r.stderr
    data = json.loads((tmp_path / "mix" / "config.json").read_text())["data"]
    assert data["name"] == "mixture" and [s["name"] for s in data["sources"]] == ["mnist", "fashion", "folder"]
    # epochs of a real dataset count its items: 16 images / batch 8 = 2 steps per epoch
    r = run_cli("train", "vae", "--data", f"mnist:{tmp_path / 'mnist'}", "--epochs", "1", "--out",
                str(tmp_path / "m"), *tiny_vae)
    assert r.returncode == 0 and "finished at step 2/2" in r.stdout, r.stderr
    r = run_cli("train", "gan", "--data", f"modelnet:{tmp_path / 'mn'}", "--modelnet-views", "2", "--steps", "1",
                "--grid", "16", "--width", "0.03125", "--batch-size", "4", "--threads", "1", "--no-progress",
                "--out", str(tmp_path / "g"))
    assert r.returncode == 0, r.stderr
    r = run_cli("train", "gan", "--data", f"mnist:{tmp_path / 'nothing'}", "--steps", "1", "--out", str(tmp_path / "x"))
    assert r.returncode != 0 and "train-images-idx3-ubyte.gz" in r.stderr and "Download" in r.stderr
    r = run_cli("train", "gan", "--data", "mnist", "--out", str(tmp_path / "x"))
    assert r.returncode != 0 and "needs the folder" in r.stderr
