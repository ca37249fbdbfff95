"""Mesh files: OBJ and OFF parsing (every index form, headers, malformed files), saving, round trips."""

import numpy as np
import pytest
import torch

import voxrender as vr
from voxrender.data.meshes import icosphere
from voxrender.mesh_io import MeshFormatError, load_mesh, load_obj, load_off, save_mesh, save_obj, save_off


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


SQUARE = [[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]]


def test_obj_all_face_forms_relative_indices_and_polygons(tmp_path):
    p = write(tmp_path, "m.obj", """# exported by hand
mtllib m.mtl
o thing

v 0 0 0
v 1.0 0.0 0.0   # trailing comment
v 1 1 0 1.0
v 0 1 0 0.5 0.5 0.5
vt 0 0
vt 1 0
vn 0 0 1
g group
usemtl red
s off
f 1 2 3
f 1/1 3/2 4/1
f 1/1/1 2/2/1 3/1/1
f 1//1 3//1 4//1
f -4 -3 -2 -1
l 1 2
v 2 0 0
f -1 2 \\
  3
""")
    v, f = load_obj(p)
    assert v.dtype == torch.float32 and f.dtype == torch.int64
    assert v.tolist() == SQUARE + [[2, 0, 0]]
    # The quad "f -4 -3 -2 -1" (vertices 0..3) is fanned into (0, 1, 2), (0, 2, 3); the last face (after a
    # 5th vertex) uses -1 = vertex 4 and a line continuation.
    assert f.tolist() == [[0, 1, 2], [0, 2, 3], [0, 1, 2], [0, 2, 3], [0, 1, 2], [0, 2, 3], [4, 1, 2]]


def test_obj_pentagon_fan_keeps_winding(tmp_path):
    p = write(tmp_path, "p.obj", "v 0 0 0\nv 1 0 0\nv 2 1 0\nv 1 2 0\nv 0 1 0\nf 1 2 3 4 5\n")
    v, f = load_obj(p)
    assert f.tolist() == [[0, 1, 2], [0, 2, 3], [0, 3, 4]]
    n = torch.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]], dim=-1)
    assert (n[:, 2] > 0).all()


@pytest.mark.parametrize("text, match", [
    ("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 4\n", r"bad\.obj:4: face index 4 out of range"),
    ("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 0 1 2\n", r"bad\.obj:4: face index 0 out of range"),
    ("v 0 0 0\nv 1 0 0\nv 0 1 0\nf -4 1 2\n", r"bad\.obj:4: face index -4 out of range"),
    ("v 0 0 0\nv 1 0 0\n\nf 1 2\n", r"bad\.obj:4: a face needs at least 3 vertices"),
    ("v 0 0\n", r"bad\.obj:1: a vertex needs 3 coordinates"),
    ("# x\nv 0 zero 0\n", r"bad\.obj:2: bad vertex coordinates"),
    ("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 a 2\n", r"bad\.obj:4: bad face index 'a'"),
    ("v nan 0 0\n", r"bad\.obj: vertex coordinates contain NaN"),
])
def test_obj_malformed_files_name_file_and_line(tmp_path, text, match):
    p = write(tmp_path, "bad.obj", text)
    with pytest.raises(MeshFormatError, match=match):
        load_obj(p)
    with pytest.raises(ValueError):  # MeshFormatError is a ValueError
        load_mesh(p)


def test_obj_empty_and_no_faces(tmp_path):
    v, f = load_obj(write(tmp_path, "e.obj", "# nothing\n\n"))
    assert v.shape == (0, 3) and f.shape == (0, 3)
    v, f = load_obj(write(tmp_path, "pts.obj", "v 1 2 3\n"))
    assert v.tolist() == [[1, 2, 3]] and f.shape == (0, 3)


OFF_BODY = """0 0 0
1 0 0
1 1 0
0 1 0
2 0 0
4 0 1 2 3
3 1 4 2
"""


@pytest.mark.parametrize("header", [
    "OFF\n5 2 0\n",
    "OFF\n# a comment line\n\n5 2 7   # ne is ignored\n",
    "OFF 5 2 0\n",
    "OFF5 2 0\n",  # ModelNet40's malformed header: counts glued to the keyword
    "OFF\n5 2\n",
    "# leading comment\nOFF\n5 2 0\n",
])
def test_off_header_variants(tmp_path, header):
    v, f = load_off(write(tmp_path, "m.off", header + OFF_BODY))
    assert v.tolist() == SQUARE + [[2, 0, 0]]
    assert f.tolist() == [[0, 1, 2], [0, 2, 3], [1, 4, 2]]


def test_off_modelnet_style_file(tmp_path):
    # The first lines of a ModelNet40 file as distributed: "OFF<nv> <nf> 0", then float vertices.
    text = "OFF4 4 0\n-1.5 -2.25 0.125\n1.5 -2.25 0.125\n0.0 2.5 0.125\n0.0 0.0 3.75\n" \
           "3 0 1 2\n3 0 3 1\n3 1 3 2\n3 2 3 0\n"
    v, f = load_mesh(write(tmp_path, "chair_0001.off", text))
    assert v.shape == (4, 3) and f.shape == (4, 3) and v[3, 2] == 3.75


def test_off_colours_and_comments_ignored(tmp_path):
    text = ("COFF\n4 2 0\n0 0 0 255 0 0 255\n1 0 0 0 255 0 255\n1 1 0 0 0 255 255\n0 1 0 9 9 9 255\n"
            "3 0 1 2 255 0 0\n3 0 2 3 0.5 0.5 0.5 1.0  # face colour\n")
    v, f = load_off(write(tmp_path, "c.off", text))
    assert v.tolist() == SQUARE and f.tolist() == [[0, 1, 2], [0, 2, 3]]


@pytest.mark.parametrize("text, match", [
    ("", r"bad\.off: empty file"),
    ("PLY\n3 1 0\n", r"bad\.off:1: expected an 'OFF' header"),
    ("OFF\n", r"bad\.off: the file ends before the vertex and face counts"),
    ("OFF\nthree 1 0\n", r"bad\.off:2: expected the counts"),
    ("OFF\n3\n", r"bad\.off:2: expected the counts"),
    ("OFF\n3 1 0\n0 0 0\n1 0 0\n", r"bad\.off: the file ends after 2 of 3 vertices"),
    ("OFF\n3 2 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n", r"bad\.off: the file ends after 1 of 2 faces"),
    ("OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 3\n", r"bad\.off:6: face 0: vertex index 3 out of range"),
    ("OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n4 0 1 2\n", r"bad\.off:6: face 0: expected 'n i_1 ... i_n'"),
    ("OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n2 0 1\n", r"bad\.off:6: face 0: expected 'n i_1 ... i_n' with n >= 3"),
    ("OFF\n3 1 0\n0 0\n1 0 0\n0 1 0\n3 0 1 2\n", r"bad\.off:3: vertex 0 needs 3 coordinates"),
    ("OFF\n3 1 0\n0 0 0\n1 x 0\n0 1 0\n3 0 1 2\n", r"bad\.off:4: bad coordinates of vertex 1"),
    ("4OFF\n3 1 0\n", r"bad\.off:1: '4OFF': only 3D OFF files"),
])
def test_off_malformed_files_name_file_and_line(tmp_path, text, match):
    p = write(tmp_path, "bad.off", text)
    with pytest.raises(MeshFormatError, match=match):
        load_mesh(p)


def test_load_mesh_dispatch_and_errors(tmp_path):
    p = write(tmp_path, "UPPER.OBJ", "v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    assert load_mesh(p)[1].tolist() == [[0, 1, 2]]
    with pytest.raises(ValueError, match=r"m\.ply: unknown mesh format '\.ply'; expected one of \.obj, \.off"):
        load_mesh(tmp_path / "m.ply")
    with pytest.raises(ValueError, match="no suffix"):
        load_mesh(tmp_path / "mesh")
    with pytest.raises(FileNotFoundError, match="missing.obj"):
        load_mesh(tmp_path / "missing.obj")


@pytest.mark.parametrize("suffix", [".obj", ".off"])
def test_save_load_round_trip_is_exact(tmp_path, suffix):
    g = torch.Generator().manual_seed(0)
    verts = torch.randn(50, 3, generator=g) * torch.tensor([1e-3, 1.0, 1e4])
    faces = torch.randint(0, 50, (80, 3), generator=g)
    path = save_mesh(tmp_path / "sub" / f"m{suffix}", verts, faces)
    assert path.exists() and sorted(p.name for p in path.parent.iterdir()) == [f"m{suffix}"]  # no temp file left
    v, f = load_mesh(path)
    assert torch.equal(v, verts) and torch.equal(f, faces)
    # numpy inputs and float64 vertices work too.
    ico_v, ico_f = icosphere(2, dtype=torch.float64)
    (save_obj if suffix == ".obj" else save_off)(tmp_path / f"ico{suffix}", ico_v.numpy(), ico_f.numpy())
    v, f = load_mesh(tmp_path / f"ico{suffix}")
    assert torch.equal(f, ico_f)
    torch.testing.assert_close(v, ico_v.float(), rtol=0, atol=0)


def test_save_overwrites_atomically_and_checks_inputs(tmp_path):
    p = tmp_path / "m.obj"
    save_obj(p, torch.zeros(3, 3), torch.tensor([[0, 1, 2]]))
    save_obj(p, torch.ones(4, 3), torch.tensor([[0, 1, 2], [1, 2, 3]]))
    assert load_obj(p)[1].shape == (2, 3)
    assert sorted(x.name for x in tmp_path.iterdir()) == ["m.obj"]
    save_obj(tmp_path / "empty.obj", torch.zeros(0, 3), torch.zeros(0, 3, dtype=torch.long))
    v, f = load_obj(tmp_path / "empty.obj")
    assert v.shape == (0, 3) and f.shape == (0, 3)
    with pytest.raises(ValueError, match="faces: indices must lie in"):
        save_obj(p, torch.zeros(3, 3), torch.tensor([[0, 1, 3]]))
    with pytest.raises(ValueError, match="faces: expected"):
        save_obj(p, torch.zeros(3, 3), torch.tensor([[0.0, 1.0, 2.0]]))
    with pytest.raises(ValueError, match="verts: expected"):
        save_obj(p, torch.zeros(3, 2), torch.tensor([[0, 1, 2]]))
    with pytest.raises(ValueError, match="unknown mesh format"):
        save_mesh(tmp_path / "m.stl", torch.zeros(3, 3), torch.tensor([[0, 1, 2]]))
    assert load_obj(p)[0].tolist() == [[1, 1, 1]] * 4  # failed saves left the file alone


def test_normalize_verts():
    v = torch.tensor([[1.0, 2.0, 3.0], [3.0, 2.0, 3.0], [2.0, 6.0, 3.0]])
    n = vr.normalize_verts(v)
    torch.testing.assert_close(n.norm(dim=-1).max(), torch.tensor(1.0))
    # Bounding-box centre (2, 4, 3); the farthest vertices are sqrt(5) from it.
    torch.testing.assert_close(n, torch.tensor([[-1.0, -2.0, 0.0], [1.0, -2.0, 0.0], [0.0, 2.0, 0.0]]) / 5 ** 0.5)
    assert torch.equal(vr.normalize_verts(torch.ones(1, 3)), torch.zeros(1, 3))
    b = vr.normalize_verts(torch.stack([v, 3 * v]), radius=2.0)
    torch.testing.assert_close(b[0], b[1])


def test_loaded_mesh_renders(tmp_path):
    v, f = icosphere(2)
    save_obj(tmp_path / "ball.obj", v, f)
    img, mask = vr.render_mesh(*vr.load_mesh(tmp_path / "ball.obj"), image_size=16, return_mask=True)
    assert img.shape == (1, 16, 16, 3) and 0.2 < float(mask.mean()) < 0.6
    assert np.isfinite(img.numpy()).all()
