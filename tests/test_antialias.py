"""voxrender.antialias and voxrender.face_adjacency: topology, exact hand-computed blends, the walk across
interior edges (hand-made fans, its step limit, outline coverage of finely tessellated spheres), gradients
(sign, finite differences, gradcheck), the C++ cpu (and cuda) backends against the torch reference, opcheck,
torch.compile, bad input, determinism, and silhouette-fitting runs that only converge through antialias."""

import itertools
import time

import pytest
import torch

import voxrender as vr
from voxrender.data.meshes import icosphere
from voxrender.reference.antialias import silhouette_edges
from voxrender.reference.rasterize import Fragments, edge_coefficients
from vr_testing import backend_or_skip, needs_cuda

F64 = torch.float64
TOL = {torch.float32: dict(rtol=2e-5, atol=2e-6), torch.float64: dict(rtol=1e-10, atol=1e-12)}


def cpu_or_skip(dtype=torch.float32):
    backend_or_skip("cpu", "cpu", dtype)
    if not hasattr(torch.ops.voxrender, "antialias_forward"):
        pytest.fail("the built extension predates torch.ops.voxrender.antialias_forward (rebuild it)")
    if len(torch.ops.voxrender.antialias_forward.default._schema.arguments) != 7:
        pytest.fail("the built extension predates the adjacency argument of antialias_forward (rebuild it)")


# ---------------------------------------------------------------------------------------------- topology


def brute_adjacency(faces):
    """Dictionary-based face adjacency of one (F, 3) mesh (the definition, spelled out)."""
    edges = {}
    for f, row in enumerate(faces.tolist()):
        if min(row) < 0:
            continue
        for k in range(3):
            key = frozenset((row[(k + 1) % 3], row[(k + 2) % 3]))
            edges.setdefault(key, []).append((f, k))
    adj = torch.full(faces.shape, -1, dtype=torch.int64)
    for users in edges.values():
        if len(users) == 2:
            (f0, k0), (f1, k1) = users
            adj[f0, k0], adj[f1, k1] = f1, f0
    return adj


def test_face_adjacency_icosphere_is_closed_and_symmetric():
    _, faces = icosphere(2)
    adj = vr.face_adjacency(faces)
    assert adj.dtype == torch.int64 and adj.shape == faces.shape
    assert torch.all(adj >= 0)
    F = faces.shape[0]
    for f, k in itertools.product(range(F), range(3)):
        n = int(adj[f, k])
        assert n != f
        mine = {int(faces[f, (k + 1) % 3]), int(faces[f, (k + 2) % 3])}
        back = [kk for kk in range(3) if int(adj[n, kk]) == f]
        assert len(back) == 1
        kk = back[0]
        assert mine == {int(faces[n, (kk + 1) % 3]), int(faces[n, (kk + 2) % 3])}
    assert torch.equal(adj, brute_adjacency(faces))


def test_face_adjacency_boundary_padding_nonmanifold_and_batches():
    assert torch.equal(vr.face_adjacency(torch.tensor([[0, 1, 2]])), torch.full((1, 3), -1))
    # Edge (0, 1) is used by three faces: non-manifold, boundary for all three; (1, 2) is shared by two.
    faces = torch.tensor([[0, 1, 2], [1, 0, 3], [0, 1, 4], [2, 1, 5], [-1, -1, -1]])
    adj = vr.face_adjacency(faces)
    assert torch.equal(adj, brute_adjacency(faces))
    assert adj[0, 2] == -1 and adj[1, 2] == -1 and adj[2, 2] == -1  # edge opposite vertex 2: (0, 1)
    assert adj[0, 0] == 3 and adj[3, 2] == 0
    assert torch.all(adj[4] == -1)
    # Per-item faces with padding rows: each item on its own (shuffled rows, some dropped), int32 input.
    _, ico = icosphere(1)
    g = torch.Generator().manual_seed(0)
    items = []
    for b in range(3):
        f = ico[torch.randperm(len(ico), generator=g)].clone()
        f[torch.randperm(len(ico), generator=g)[: 7 * b]] = -1
        items.append(f)
    batch = torch.stack(items).int()
    adj = vr.face_adjacency(batch)
    assert adj.shape == batch.shape and adj.dtype == torch.int64
    for b in range(3):
        assert torch.equal(adj[b], brute_adjacency(items[b]))
    assert torch.equal(adj[0], vr.face_adjacency(items[0]))
    assert (adj[2] == -1).any() and torch.all(adj[0] >= 0)
    # Empty meshes.
    assert vr.face_adjacency(torch.zeros(0, 3, dtype=torch.int64)).shape == (0, 3)
    assert vr.face_adjacency(torch.zeros(2, 0, 3, dtype=torch.int64)).shape == (2, 0, 3)


def test_face_adjacency_random_meshes_match_brute_force():
    g = torch.Generator().manual_seed(3)
    for n_verts, n_faces in [(6, 10), (12, 40), (30, 25)]:
        faces = torch.randint(0, n_verts, (n_faces, 3), generator=g)
        faces[torch.rand(n_faces, generator=g) < 0.1] = -1
        assert torch.equal(vr.face_adjacency(faces), brute_adjacency(faces))


def test_silhouette_edges_folds_and_boundaries():
    # Two triangles sharing edge (1, 2), wound consistently: unfolded both face the same way (the shared
    # edge is interior); folded over (the fourth vertex on the same side) the second one flips.
    flat = torch.tensor([[0.0, 0.0, 0.0, 1.0], [1.0, 0.0, 0.0, 1.0], [0.0, 1.0, 0.0, 1.0], [1.0, 1.0, 0.0, 1.0]])
    folded = flat.clone()
    folded[3, :2] = torch.tensor([0.2, 0.2])
    faces = torch.tensor([[[0, 1, 2], [3, 2, 1], [-1, -1, -1]]])
    adj = vr.face_adjacency(faces)
    sil = silhouette_edges(flat[None], faces, adj)
    assert sil[0, 0, 0] == False and sil[0, 1, 0] == False  # noqa: E712  (the shared edge: opposite vertex 0)
    assert torch.all(sil[0, :2, 1:]) and not sil[0, 2].any()
    sil = silhouette_edges(folded[None], faces, adj)
    assert sil[0, 0, 0] and sil[0, 1, 0]


# ------------------------------------------------------------------------------------- exact hand cases


def edge_triangle(x_edge, dtype=F64, w=1.0, left=False, z=0.0):
    """One big triangle whose only edge inside the image is the vertical line x = x_edge; it covers the image
    left of it (or right of it with left=True). Clip coordinates scaled by w (same NDC)."""
    s = -1.0 if left else 1.0
    v = torch.tensor([[x_edge, -3.0, z, 1.0], [x_edge, 3.0, z, 1.0], [x_edge - s * 6.0, 0.0, z, 1.0]], dtype=dtype)
    faces = torch.tensor([[0, 1, 2]] if not left else [[0, 2, 1]])
    return v * w, faces


def render(verts, faces, size, color=None, backend=None, seed=0):
    frags = vr.rasterize(verts, faces, size)
    if color is None:
        g = torch.Generator().manual_seed(seed)
        color = torch.rand(*frags.face_id.shape, 3, generator=g, dtype=verts.dtype)
    return frags, color, vr.antialias(color, frags, verts, faces, backend=backend)


BACKENDS = ["torch", "cpu"]


def maybe_skip(backend, dtype=torch.float32):
    if backend == "cpu":
        cpu_or_skip(dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("w", [1.0, 2.5])
def test_vertical_edge_exact_blend(backend, w):
    """W = 8: pixel centres at x = -0.875 + 0.25 j. An edge at x = 0.3 lies between columns 4 (0.125) and 5
    (0.375) at t = 0.7: column 5 takes 0.2 of column 4's colour. At x = 0.2, t = 0.3: column 4 keeps 0.8
    of its own colour and takes 0.2 of column 5's. Mirrored (the face on the right of an edge at x = -0.3,
    between columns 2 and 3): t = 0.7 from column 3, so column 2 changes."""
    maybe_skip(backend, F64)
    H, W = 6, 8
    for x_edge, left, changed, src, frac in [(0.3, False, 5, 4, 0.2), (0.2, False, 4, 5, 0.2), (-0.3, True, 2, 3, 0.2)]:
        verts, faces = edge_triangle(x_edge, w=w, left=left)
        frags, color, out = render(verts, faces, (H, W), backend=backend)
        cols = torch.arange(W)
        inside = cols >= 3 if left else cols <= (4 if x_edge > 0.125 else 3)
        assert torch.equal(frags.face_id[0] >= 0, inside[None].expand(H, W))
        expected = color.clone()
        expected[:, :, changed] = color[:, :, changed] + frac * (color[:, :, src] - color[:, :, changed])
        torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_horizontal_edge_exact_blend(backend):
    """The vertical pairs: the edge triangle with x and y swapped (an edge at y = 0.3 across H = 8 rows)."""
    maybe_skip(backend, F64)
    verts, faces = edge_triangle(0.3)
    verts = verts[:, [1, 0, 2, 3]]
    faces = faces.flip(1)  # keep it front-facing (irrelevant for a lone face, but realistic)
    frags, color, out = render(verts, faces, (8, 5), backend=backend)
    assert torch.all(frags.face_id[0, :5] == 0) and torch.all(frags.face_id[0, 5:] == -1)
    expected = color.clone()
    expected[:, 5] = color[:, 5] + 0.2 * (color[:, 4] - color[:, 5])
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_front_face_over_other_surface_blends_by_depth(backend):
    """A triangle in front of a full-screen plane: the pairs between them blend like against background
    (silhouette against another surface); the depth decides the front side, not the face index."""
    maybe_skip(backend, F64)
    plane = torch.tensor([[-3.0, -3.0, 0.5, 1.0], [3.0, -3.0, 0.5, 1.0], [0.0, 6.0, 0.5, 1.0]], dtype=F64)
    front, _ = edge_triangle(0.3, z=-0.5)
    verts = torch.cat([plane, front])
    faces = torch.tensor([[0, 1, 2], [3, 4, 5]])  # the front face has the higher index
    frags, color, out = render(verts, faces, (6, 8), backend=backend)
    assert torch.all(frags.face_id[0, :, :5] == 1) and torch.all(frags.face_id[0, :, 5:] == 0)
    expected = color.clone()
    expected[:, :, 5] = color[:, :, 5] + 0.2 * (color[:, :, 4] - color[:, :, 5])
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_equal_face_ids_and_interior_edges_are_not_blended(backend):
    maybe_skip(backend, F64)
    # A full-screen triangle: every pair has equal face ids, the output is the input.
    verts = torch.tensor([[-3.0, -3.0, 0.0, 1.0], [3.0, -3.0, 0.0, 1.0], [0.0, 6.0, 0.0, 1.0]], dtype=F64)
    frags, color, out = render(verts, torch.tensor([[0, 2, 1]]), (7, 9), backend=backend)
    assert torch.all(frags.face_id == 0) and torch.equal(out, color)
    # A split quad (two coplanar front faces): pairs across the diagonal do not blend (interior edge),
    # pairs across the outline do.
    q = torch.tensor([[-0.55, -0.55], [0.45, -0.55], [0.45, 0.45], [-0.55, 0.45]], dtype=F64)
    verts = torch.cat([q, torch.zeros(4, 1, dtype=F64), torch.ones(4, 1, dtype=F64)], 1)
    faces = torch.tensor([[0, 3, 1], [1, 3, 2]])  # det < 0: front-facing (y down)
    frags, color, out = render(verts, faces, (8, 8), backend=backend)
    fid = frags.face_id[0]
    assert set(fid.unique().tolist()) == {-1, 0, 1}
    bg = fid < 0
    near_bg = torch.zeros_like(bg)
    near_bg[:, 1:] |= bg[:, :-1]
    near_bg[:, :-1] |= bg[:, 1:]
    near_bg[1:] |= bg[:-1]
    near_bg[:-1] |= bg[1:]
    changed = (out[0] != color[0]).any(-1)
    assert not changed[~bg & ~near_bg].any()  # interior pixels (incl. both sides of the diagonal)
    assert not changed[bg & ~near_bg].any()
    assert changed.sum() >= 8  # the outline blends
    # Outline pixels in the rows/columns away from the diagonal's ends blend exactly as the edge cases:
    # edge x = 0.45 between columns 5 (0.375) and 6 (0.625): t = 0.3, column 5 keeps 0.8 of itself.
    for i in (3, 4):  # rows whose column-5 pixel lies in face 1 (holding the right edge), away from corners
        assert fid[i, 5] == 1 and fid[i, 6] == -1
        torch.testing.assert_close(out[0, i, 5], color[0, i, 5] + 0.2 * (color[0, i, 6] - color[0, i, 5]))


# ------------------------------------------------------------------------- the walk across interior edges


def fan(crossings, x_sil=0.3, transpose=False, dtype=F64):
    """A fan of thin triangles around the apex P = (0.25, -3) (above the image): rays from P to points R on
    the line y = 3 cross the middle row y = 0 at x = (0.25 + R.x) / 2. Face 0 (P, (-6, 3), R_1) covers the
    image left of the first ray; face i (P, R_i, R_i+1) lies between rays i and i + 1, each ray shared by
    two faces (an interior edge) except the last, a boundary (silhouette) edge crossing y = 0 at x_sil.
    ``crossings``: where the interior rays cross y = 0. Front-facing, w = 1. transpose: x and y swapped
    (the walk then runs along a column)."""
    xs = list(crossings) + [x_sil]
    pts = [[0.25, -3.0], [-6.0, 3.0]] + [[2 * x - 0.25, 3.0] for x in xs]
    v = torch.tensor(pts, dtype=dtype)
    faces = torch.tensor([[0, i + 1, i + 2] for i in range(len(xs))])
    if transpose:
        v = v.flip(1)
    v = torch.cat([v, torch.zeros_like(v[:, :1]), torch.ones_like(v[:, :1])], 1)
    _, det = edge_coefficients(v[faces][None])
    if det[0, 0] > 0:  # make it front-facing (det < 0), all faces alike
        faces = faces[:, [0, 2, 1]]
    return v, faces


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("transpose", [False, True])
def test_walk_crosses_two_interior_edges_exact(backend, transpose):
    """One row of W = 8 (centre y = 0, columns at x = -0.875 + 0.25 j). Column 4 (x = 0.125) lies in the big
    face 0; the segment to column 5 (x = 0.375, background) leaves face 0 through the interior ray at
    x = 0.2 (t = 0.3), face 1 through the interior ray at x = 0.25 (t = 0.5) and face 2 through the
    silhouette ray at x = 0.3 (t = 0.7): column 5 takes 0.2 of column 4's colour. The gradient reaches the
    two vertices of that silhouette edge only, the apex P and R_3: x* = (P.x + R_3.x) / 2, so d out / d x of
    each is (1 / 2) (1 / 0.25) (c4 - c5) = 2 for a white face on black. Without the walk (the oracle with a
    one-face limit, the behaviour before it) the pair does not blend."""
    maybe_skip(backend, F64)
    verts, faces = fan([0.2, 0.25], transpose=transpose)
    size = (8, 1) if transpose else (1, 8)
    frags = vr.rasterize(verts, faces, size)
    fid = frags.face_id[0].flatten()
    assert fid.tolist() == [0, 0, 0, 0, 0, -1, -1, -1]
    color = torch.rand(1, *size, 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    out = vr.antialias(color, frags, verts, faces, backend=backend)
    flat_c, flat_o = color.reshape(8, 3), out.reshape(8, 3)
    expected = flat_c.clone()
    expected[5] = flat_c[5] + 0.2 * (flat_c[4] - flat_c[5])
    torch.testing.assert_close(flat_o, expected, rtol=1e-12, atol=1e-12)
    # Gradient: white face on black.
    v = verts.clone().requires_grad_()
    white = (frags.face_id >= 0).to(F64)[..., None]
    (g,) = torch.autograd.grad(vr.antialias(white, frags, v, faces, backend=backend).sum(), v)
    u = 1 if transpose else 0  # the coordinate along the row
    torch.testing.assert_close(g[0, u], torch.tensor(2.0, dtype=F64))
    torch.testing.assert_close(g[4, u], torch.tensor(2.0, dtype=F64))
    assert g[1:4].abs().sum() == 0  # the other fan vertices hold no silhouette edge the walk ends on
    if backend == "torch":
        import voxrender.reference.antialias as ref
        saved = ref.WALK_FACES
        try:
            ref.WALK_FACES = 1
            assert torch.equal(vr.antialias(color, frags, verts, faces, backend=backend), color)
        finally:
            ref.WALK_FACES = saved


@pytest.mark.parametrize("backend", BACKENDS)
def test_walk_step_limit(backend):
    """The walk looks at 16 faces at most (voxrender.reference.antialias.WALK_FACES, kAntialiasWalkFaces in
    csrc/include/voxrender/antialias.h): the front face and 15 more. With 15 thin interior slivers between
    column 4 and the silhouette at x = 0.3 the pair blends (t = 0.7); with 16 it does not."""
    maybe_skip(backend, F64)
    import voxrender.reference.antialias as ref
    assert ref.WALK_FACES == 16
    for n, blends in [(15, True), (16, False)]:
        verts, faces = fan(torch.linspace(0.13, 0.29, n).tolist())
        frags = vr.rasterize(verts, faces, (1, 8))
        assert frags.face_id[0, 0].tolist() == [0, 0, 0, 0, 0, -1, -1, -1]
        color = torch.rand(1, 1, 8, 3, generator=torch.Generator().manual_seed(n), dtype=F64)
        out = vr.antialias(color, frags, verts, faces, backend=backend)
        expected = color.clone()
        if blends:
            expected[0, 0, 5] = color[0, 0, 5] + 0.2 * (color[0, 0, 4] - color[0, 0, 5])
        torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


def test_walk_stops_at_a_vertex_behind_the_camera():
    """The fan of the two-crossing case with R_2 (shared by faces 1 and 2) moved behind the camera to
    (0, 30, 0, -1), where every face stays front-facing (so the ray P R_1 stays interior): the walk enters
    face 1 through P R_1 and finds no exit edge there (the other two have a vertex at w <= 0), so it stops
    and the pair of columns 4 and 5 does not blend; nothing else differs. The same on both backends."""
    verts, faces = fan([0.2, 0.25])
    verts[3] = torch.tensor([0.0, 30.0, 0.0, -1.0], dtype=F64)
    adj = vr.face_adjacency(faces)
    sil = silhouette_edges(verts[None], faces[None], adj[None])[0]
    k = [kk for kk in range(3) if {int(faces[0, (kk + 1) % 3]), int(faces[0, (kk + 2) % 3])} == {0, 2}][0]
    assert adj[0, k] == 1 and not sil[0, k]  # the ray P R_1: interior
    frags = vr.rasterize(verts, faces, (1, 8))
    assert frags.face_id[0, 0].tolist() == [0, 0, 0, 0, 0, -1, -1, -1]
    color = torch.rand(1, 1, 8, 3, generator=torch.Generator().manual_seed(1), dtype=F64)
    for backend in BACKENDS:
        maybe_skip(backend, F64)
        assert torch.equal(vr.antialias(color, frags, verts, faces, backend=backend), color)


def ortho_icosphere(level, size, dtype=torch.float32):
    """A unit icosphere seen orthographically, filling about 70 % of the image width: clip (0.7 x, 0.7 y,
    0.5 z, 1). Its rim faces are seen edge-on: thinner than a pixel from level 3 on at these sizes."""
    v, f = icosphere(level, dtype=F64)
    clip = torch.cat([v[:, :2] * 0.7, v[:, 2:] * 0.5, torch.ones_like(v[:, :1])], 1).to(dtype)
    return clip, f


def outline_pairs(verts, faces, frags):
    """(blending, total): the pixel pairs across the outline (a face and the background) and how many of
    them blend, from the oracle's own pair selection and walk."""
    import voxrender.reference.antialias as ref
    fid, depth = frags.face_id.int(), frags.depth.detach()
    B, H, W = fid.shape
    faces = faces.expand(B, -1, -1) if faces.dim() == 3 else faces[None].expand(B, -1, -1)
    verts = verts if verts.dim() == 3 else verts[None]
    adj = vr.face_adjacency(faces)
    sil = silhouette_edges(verts, faces, adj)
    blending = total = 0
    for axis in (0, 1):
        b, s, o, f, across, us_idx, uo_idx = ref._pairs(fid, depth, axis)
        c_across = ref._centres(H if axis == 0 else W, verts)
        c_along = ref._centres(W if axis == 0 else H, verts)
        blend, _, _ = ref._walk(verts, faces, sil, adj, b, f, axis, c_across[across], c_along[us_idx],
                                c_along[uo_idx])
        outline = fid.reshape(-1)[o] < 0
        total += int(outline.sum())
        blending += int((blend & outline).sum())
    return blending, total


@pytest.mark.parametrize("level, size, before, after",
                         [(2, 48, 0.5, 0.97), (3, 32, 0.15, 0.95), (4, 64, 0.05, 0.9), (4, 256, 0.2, 0.95)])
def test_outline_coverage_of_finely_tessellated_spheres(level, size, before, after):
    """The walk's purpose: on a finely tessellated sphere the rim faces are thinner than a pixel, the faces
    covering the pixel centres inside the outline have interior exit edges, and without the walk (the oracle
    limited to one face: the behaviour before it) few outline pairs blend. Measured (blending outline pairs /
    outline pairs), one face -> the walk: level 2 at 48 px 60 / 136 -> 136 / 136; level 3 at 32 px
    8 / 88 -> 88 / 88; level 4 at 64 px 0 / 176 -> 168 / 176; level 4 at 256 px 126 / 720 -> 708 / 720
    (pixels changed on a white sphere, the walk: 92, 64, 124, 504). The few that still do not blend have a
    pixel centre within 1e-3 pixel of a face edge, where the rasterizer's snapped coverage and the float
    edge disagree about which side it lies on (the walk then starts on a face the segment does not cross).
    The thresholds leave a margin below the measured fractions. The cpu backend changes exactly the same
    pixels (the filter that skips walks from faces far from any silhouette is on for level 4 at 256 px
    and off at 64 px, where the mesh is large for the image)."""
    import voxrender.reference.antialias as ref
    verts, faces = ortho_icosphere(level, size)
    frags = vr.rasterize(verts, faces, (size, size))
    blending, total = outline_pairs(verts, faces, frags)
    assert total >= 80
    assert blending >= after * total, (blending, total)
    saved = ref.WALK_FACES
    try:
        ref.WALK_FACES = 1
        old, _ = outline_pairs(verts, faces, frags)
    finally:
        ref.WALK_FACES = saved
    assert old <= before * total, (old, total)
    # Pixels changed (white sphere on black), the same on both backends.
    white = (frags.face_id >= 0).float()[..., None]
    out = vr.antialias(white, frags, verts, faces, backend="torch")
    changed = (out != white).any(-1)
    assert changed.sum() >= 0.6 * total
    cpu_or_skip()
    got = vr.antialias(white, frags, verts, faces, backend="cpu")
    assert torch.equal((got != white).any(-1), changed)
    assert_close_scaled(got, out, torch.float32)


# --------------------------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradient_sign_moves_the_outline(backend):
    maybe_skip(backend, F64)
    for x_edge in (0.3, 0.2):
        verts, faces = edge_triangle(x_edge)
        verts = verts.requires_grad_()
        frags = vr.rasterize(verts, faces, (6, 8))
        white = (frags.face_id >= 0).to(F64)[..., None]
        out = vr.antialias(white, frags, verts, faces, backend=backend)
        (g,) = torch.autograd.grad(out.sum(), verts)
        # Moving the right edge (vertices 0 and 1) right covers more of the pixels along it; the total of
        # both edge vertices is d coverage / d x_edge = 6 rows * 1 / (pixel width 0.25) = 24.
        assert g[0, 0] > 0 and g[1, 0] > 0
        torch.testing.assert_close(g[0, 0] + g[1, 0], torch.tensor(24.0, dtype=F64))
        assert g[2].abs().sum() == 0  # vertex 2 is not on the exit edge
        # A target rendered with the edge 0.1 pixel further right: the loss gradient points right.
        tv, tf = edge_triangle(x_edge + 0.025)
        tfr = vr.rasterize(tv, tf, (6, 8))
        target = vr.antialias((tfr.face_id >= 0).to(F64)[..., None], tfr, tv, tf, backend=backend)
        out = vr.antialias(white, frags, verts, faces, backend=backend)
        (g,) = torch.autograd.grad((out - target).square().sum(), verts)
        assert g[0, 0] < 0 and g[1, 0] < 0  # gradient descent moves x right


def sphere_scene(seed, dtype, B=2, H=37, W=53, level=1, n_spheres=3, n_tris=4, per_item=False, pad=0,
                 min_depth=0.5):
    """Random perspective scene: icospheres of random radius and position plus a few random triangles
    (some crossing w = 0), in clip coordinates, B items with different positions.

    The random triangles' vertices keep |camera depth| >= min_depth: a vertex just in front of the camera
    plane (w -> 0+) projects to |x/w| of hundreds, where the vertex gradient (through 1/w and x/w^2) is so
    ill-conditioned that float32 results computed in a different order legitimately differ beyond any
    dtype tolerance (see test_vertices_near_the_camera_plane)."""
    g = torch.Generator().manual_seed(seed)
    v0, f0 = icosphere(level, dtype=F64)
    pts, faces, off = [], [], 0
    for _ in range(n_spheres):
        r = 0.5 + torch.rand(B, 1, 1, generator=g, dtype=F64)
        c = torch.randn(B, 1, 3, generator=g, dtype=F64) * torch.tensor([1.0, 0.8, 0.7], dtype=F64)
        c[..., 2] += 5.0
        pts.append(v0[None] * r + c)
        faces.append(f0 + off)
        off += v0.shape[0]
    tri = torch.randn(B, 3 * n_tris, 3, generator=g, dtype=F64) * torch.tensor([2.0, 2.0, 3.0], dtype=F64)
    tri[..., 2] += 3.0
    z = tri[..., 2]
    tri[..., 2] = torch.where(z.abs() < min_depth, torch.where(z < 0, -min_depth, min_depth), z)
    pts.append(tri)
    faces.append(torch.arange(3 * n_tris).reshape(n_tris, 3) + off)
    pts, faces = torch.cat(pts, 1), torch.cat(faces)
    K = torch.tensor([[0.9 * W, 0, (W - 1) / 2], [0, 0.9 * W, (H - 1) / 2], [0, 0, 1]], dtype=F64)
    P = vr.perspective(K, (H, W), near=0.5, far=30.0)
    verts = torch.cat([pts, torch.ones_like(pts[..., :1])], -1) @ P.T
    if per_item:
        items = []
        for b in range(B):
            f = faces[torch.randperm(len(faces), generator=g)].clone()
            f[torch.randperm(len(faces), generator=g)[:pad]] = -1
            items.append(f)
        faces = torch.stack(items)
    return verts.to(dtype), faces


def run_backend(backend, color, frags, verts, faces, grad_seed=7):
    c = color.detach().clone().requires_grad_()
    v = verts.detach().clone().requires_grad_()
    out = vr.antialias(c, frags, v, faces, backend=backend)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(grad_seed), dtype=out.dtype).to(out.device)
    gc, gv = torch.autograd.grad(out, [c, v], g)
    return out, gc, gv


def assert_close_scaled(a, b, dtype):
    """Tolerance from the dtype, with atol relative to the magnitude of the reference."""
    t = TOL[dtype]
    scale = max(1.0, b.abs().max().item())
    torch.testing.assert_close(a, b, rtol=t["rtol"], atol=t["atol"] * scale)


def assert_verts_grad_close(a, b, verts, dtype):
    """As assert_close_scaled, for (B, V, 4) clip-vertex gradients. The w component is
    d/dw = -((x/w) d/dx + (y/w) d/dy), a difference of terms of size |x/w d/dx| + |y/w d/dy|: for vertices
    close to the camera plane (|x/w| of tens) those terms are much larger than the result and set its
    rounding, so its relative tolerance applies to them (the same dtype tolerance, on the right magnitude)."""
    t = TOL[dtype]
    scale = max(1.0, b.abs().max().item())
    b, a, verts = b.double().cpu(), a.double().cpu(), verts.double().cpu()
    w = verts[..., 3:]
    ndc = verts[..., :2] / torch.where(w > 0, w, torch.ones_like(w))
    ndc = torch.where(w > 0, ndc, torch.zeros_like(ndc))
    bound = t["atol"] * scale + t["rtol"] * b.abs()
    bound[..., 3] += t["rtol"] * (b[..., 0].abs() * ndc[..., 0].abs() + b[..., 1].abs() * ndc[..., 1].abs())
    err = (a - b).abs()
    assert torch.all(err <= bound), (
        f"vertex gradients differ: worst error / bound {(err / bound).max().item():.3g} at "
        f"{[int(i) for i in torch.unravel_index((err / bound).argmax(), err.shape)]}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("per_item", [False, True])
def test_cpu_matches_torch_random_scenes(dtype, per_item):
    cpu_or_skip(dtype)
    blended = 0
    for seed in range(3):
        verts, faces = sphere_scene(seed, dtype, per_item=per_item, pad=15 if per_item else 0)
        frags = vr.rasterize(verts, faces, (37, 53))
        g = torch.Generator().manual_seed(seed)
        color = torch.rand(2, 37, 53, 4, generator=g, dtype=dtype)
        ref = run_backend("torch", color, frags, verts, faces)
        got = run_backend("cpu", color, frags, verts, faces)
        blended += int((ref[0] != color).any(-1).sum())
        for a in got:
            assert torch.isfinite(a).all()
        assert_close_scaled(got[0], ref[0], dtype)
        assert_close_scaled(got[1], ref[1], dtype)
        assert_verts_grad_close(got[2], ref[2], verts, dtype)
        assert ref[2].abs().sum() > 0
    assert blended > 50


def walked_blends(verts, faces, frags):
    """How many pairs blend only thanks to the walk: the oracle's blending pairs minus those of the oracle
    limited to one face (the behaviour before the walk)."""
    import voxrender.reference.antialias as ref
    color = torch.rand(*frags.face_id.shape, 3, generator=torch.Generator().manual_seed(0), dtype=verts.dtype)
    walk = int((vr.antialias(color, frags, verts, faces, backend="torch") != color).any(-1).sum())
    saved = ref.WALK_FACES
    try:
        ref.WALK_FACES = 1
        one = int((vr.antialias(color, frags, verts, faces, backend="torch") != color).any(-1).sum())
    finally:
        ref.WALK_FACES = saved
    return walk - one


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cpu_matches_torch_fine_spheres(dtype):
    """Finely tessellated spheres, where most silhouette pairs walk: random perspective scenes of level 3
    spheres (per-item faces with padding) and a batch of level 4 spheres seen orthographically at different
    offsets. The discrete decisions are the same (the same pixels change), values and gradients agree to
    the dtype's tolerance."""
    cpu_or_skip(dtype)
    scenes = []
    for seed in range(2):
        verts, faces = sphere_scene(30 + seed, dtype, H=48, W=64, level=3, n_spheres=2, n_tris=1,
                                    per_item=bool(seed), pad=20)
        scenes.append((verts, faces, (48, 64)))
    v, f = ortho_icosphere(4, 64, dtype=F64)
    offsets = torch.tensor([[0.0, 0.0], [0.13, -0.07], [-0.21, 0.05]], dtype=F64)
    v = v[None].repeat(3, 1, 1)
    v[..., :2] += offsets[:, None]
    scenes.append((v.to(dtype), f, (80, 72)))
    for verts, faces, size in scenes:
        frags = vr.rasterize(verts, faces, size)
        assert walked_blends(verts, faces, frags) > 20
        color = torch.rand(verts.shape[0], *size, 3, generator=torch.Generator().manual_seed(5), dtype=dtype)
        ref = run_backend("torch", color, frags, verts, faces)
        got = run_backend("cpu", color, frags, verts, faces)
        for a in got:
            assert torch.isfinite(a).all()
        assert torch.equal((got[0] != color).any(-1), (ref[0] != color).any(-1))
        assert_close_scaled(got[0], ref[0], dtype)
        assert_close_scaled(got[1], ref[1], dtype)
        assert_verts_grad_close(got[2], ref[2], verts, dtype)
        # int32 adjacency given by the caller: the same result.
        adj = vr.face_adjacency(faces).int()
        torch.testing.assert_close(vr.antialias(color, frags, verts, faces, adjacency=adj, backend="cpu"), got[0],
                                   rtol=0, atol=0)


def test_vertices_near_the_camera_plane():
    """Triangles with vertices at w -> 0+ (|x/w| up to hundreds): no NaN or inf, the same blend, the same
    colour gradient; the vertex gradients agree where the vertices are well conditioned (w >= 0.5 for
    every vertex of the faces using them), and are finite everywhere."""
    cpu_or_skip()
    for seed in range(4):
        verts, faces = sphere_scene(40 + seed, torch.float32, n_tris=12, min_depth=0.0)
        frags = vr.rasterize(verts, faces, (37, 53))
        color = torch.rand(2, 37, 53, 3, generator=torch.Generator().manual_seed(seed))
        ref = run_backend("torch", color, frags, verts, faces)
        got = run_backend("cpu", color, frags, verts, faces)
        for a in got + ref:
            assert torch.isfinite(a).all()
        assert_close_scaled(got[0], ref[0], torch.float32)
        assert_close_scaled(got[1], ref[1], torch.float32)
        fv = verts[torch.arange(2)[:, None, None], faces[None].expand(2, -1, -1)]  # (B, F, 3, 4)
        bad_face = (fv[..., 3] < 0.5).any(-1)  # (B, F)
        bad = torch.zeros(2, verts.shape[1], dtype=torch.bool)
        for b in range(2):
            bad[b, faces[bad_face[b]].flatten()] = True
        assert bad.any()
        assert_verts_grad_close(got[2][~bad], ref[2][~bad], verts[~bad], torch.float32)


def test_cpu_matches_torch_noncontiguous_and_shapes():
    cpu_or_skip()
    verts, faces = sphere_scene(5, torch.float32, B=2, H=20, W=31)
    frags = vr.rasterize(verts, faces, (20, 31))
    color = torch.rand(2, 3, 20, 31).permute(0, 2, 3, 1)  # non-contiguous (B, H, W, C)
    ref = run_backend("torch", color, frags, verts.transpose(0, 1).contiguous().transpose(0, 1), faces.int())
    got = run_backend("cpu", color, frags, verts.transpose(0, 1).contiguous().transpose(0, 1), faces.int())
    assert_close_scaled(got[0], ref[0], torch.float32)
    assert_close_scaled(got[1], ref[1], torch.float32)
    assert_verts_grad_close(got[2], ref[2], verts, torch.float32)
    # (V, 3) shared verts with w = 1 broadcast over a batch of one; a single channel.
    v3 = verts[:1, :, :3] / verts[:1, :, 3:]
    fr = vr.rasterize(v3, faces, (20, 31))
    for be in ("torch", "cpu"):
        out = vr.antialias(color[:1, ..., :1], fr, v3[0], faces, backend=be)
        assert out.shape == (1, 20, 31, 1)
    torch.testing.assert_close(vr.antialias(color[:1, ..., :1], fr, v3[0], faces, backend="cpu"),
                               vr.antialias(color[:1, ..., :1], fr, v3[0], faces, backend="torch"))
    # A precomputed adjacency gives the same result.
    adj = vr.face_adjacency(faces)
    torch.testing.assert_close(vr.antialias(color, frags, verts, faces, adjacency=adj),
                               vr.antialias(color, frags, verts, faces))


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_meshes_and_background(backend):
    maybe_skip(backend)
    color = torch.rand(2, 5, 6, 3)
    for faces in (torch.zeros(0, 3, dtype=torch.int64), torch.full((2, 4, 3), -1)):
        verts = torch.rand(2, 0 if faces.shape[-2] == 0 else 3, 4, requires_grad=True)
        frags = vr.rasterize(verts, faces, (5, 6))
        c = color.clone().requires_grad_()
        out = vr.antialias(c, frags, verts, faces, backend=backend)
        assert torch.equal(out, color)
        out.sum().backward()
        assert torch.equal(c.grad, torch.ones_like(color))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("level", [1, 3])
def test_finite_differences_of_the_smooth_part(backend, level):
    """float64: for vertex perturbations too small to change any face id (asserted), the antialiased
    image's directional derivative matches autograd's. Level 3 spheres: most silhouette pairs walk."""
    maybe_skip(backend, F64)
    H, W = 29, 34
    verts, faces = sphere_scene(11, F64, B=2, H=H, W=W, n_tris=2, level=level)
    frags = vr.rasterize(verts, faces, (H, W))
    if level == 3:
        assert walked_blends(verts, faces, frags) > 50
    color = torch.rand(2, H, W, 3, generator=torch.Generator().manual_seed(1), dtype=F64)
    g = torch.Generator().manual_seed(2)
    for _ in range(3):
        d = torch.randn(verts.shape, generator=g, dtype=F64)
        d[..., 2] = 0  # z moves depth, which only decides ties between surfaces
        v = verts.clone().requires_grad_()
        out = vr.antialias(color, frags, v, faces, backend=backend)
        (grad,) = torch.autograd.grad(out, v, torch.ones_like(out))
        eps = 1e-7
        vals = []
        for s in (1, -1):
            vp = verts + s * eps * d
            fp = vr.rasterize(vp, faces, (H, W))
            assert torch.equal(fp.face_id, frags.face_id)
            vals.append(vr.antialias(color, fp, vp, faces, backend=backend).sum())
        fd = (vals[0] - vals[1]) / (2 * eps)
        ad = (grad * d).sum()
        assert ad.abs() > 1e-3
        torch.testing.assert_close(fd, ad, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("level", [0, 3])
def test_gradcheck_with_fixed_fragments(backend, level):
    """Level 3: spheres about 3 pixels in radius, whose silhouette pairs walk across the thin rim faces."""
    maybe_skip(backend, F64)
    H, W = 14, 17
    seed = 4 if level == 0 else 5  # seed 5: the random triangle leaves the spheres visible
    verts, faces = sphere_scene(seed, F64, B=1, H=H, W=W, level=level, n_spheres=2, n_tris=1)
    frags = vr.rasterize(verts, faces, (H, W))
    if level == 3:
        assert walked_blends(verts, faces, frags) > 20
    color = torch.rand(1, H, W, 2, generator=torch.Generator().manual_seed(0), dtype=F64, requires_grad=True)
    v = verts.clone().requires_grad_()
    f = lambda c, vv: vr.antialias(c, frags, vv, faces, backend=backend)
    assert torch.autograd.gradcheck(f, (color, v), eps=1e-7, atol=1e-6, rtol=1e-5, fast_mode=True)


# -------------------------------------------------------------------------------- ops, compile, errors


def test_opcheck_cpp_ops():
    cpu_or_skip(F64)
    verts, faces = sphere_scene(2, F64, B=2, H=9, W=11, level=0, n_spheres=2, n_tris=1)
    frags = vr.rasterize(verts, faces, (9, 11))
    adj = vr.face_adjacency(faces).expand(2, -1, -1).contiguous()
    sil = silhouette_edges(verts, faces.expand(2, -1, -1), adj)
    color = torch.rand(2, 9, 11, 3, dtype=F64, requires_grad=True)
    v = verts.clone().requires_grad_()
    args = (color, frags.face_id, frags.depth.detach(), v, faces.expand(2, -1, -1).contiguous(), sil, adj)
    torch.library.opcheck(torch.ops.voxrender.antialias_forward.default, args)
    grad = torch.rand(2, 9, 11, 3, dtype=F64)
    torch.library.opcheck(torch.ops.voxrender.antialias_backward.default,
                          (grad,) + tuple(a.detach() for a in args))


def test_torch_compile_fullgraph_cpu():
    cpu_or_skip()
    verts, faces = sphere_scene(6, torch.float32, B=2, H=12, W=15, level=1, n_spheres=2, n_tris=1)
    frags = vr.rasterize(verts, faces, (12, 15))
    color = torch.rand(2, 12, 15, 3)

    def fn(c, v):
        return vr.antialias(c, frags, v, faces, backend="cpu")

    c, v = color.clone().requires_grad_(), verts.clone().requires_grad_()
    out = torch.compile(fn, fullgraph=True, backend="aot_eager")(c, v)
    torch.testing.assert_close(out, fn(color, verts))
    (out * torch.linspace(0, 1, 3)).sum().backward()
    ref = run_backend("cpu", color, frags, verts, faces)
    c2, v2 = color.clone().requires_grad_(), verts.clone().requires_grad_()
    (fn(c2, v2) * torch.linspace(0, 1, 3)).sum().backward()
    torch.testing.assert_close(c.grad, c2.grad)
    torch.testing.assert_close(v.grad, v2.grad)
    assert ref[2].abs().sum() > 0


def _bad_inputs():
    verts, faces = edge_triangle(0.3, dtype=torch.float32)
    frags = vr.rasterize(verts, faces, (6, 8))
    color = torch.rand(1, 6, 8, 3)
    return verts, faces, frags, color


@pytest.mark.parametrize(
    "mutate, exc, words",
    [
        (lambda v, f, fr, c: (v, f, fr, c.long()), TypeError, "color"),
        (lambda v, f, fr, c: (v, f, fr, c[0]), ValueError, "color"),
        (lambda v, f, fr, c: (v, f, fr, c[:, :5]), ValueError, "color"),
        (lambda v, f, fr, c: (v, f, fr, c.expand(2, -1, -1, -1)), ValueError, "color"),
        (lambda v, f, fr, c: (v, f, fr, c.to("meta")), ValueError, "color"),
        (lambda v, f, fr, c: (v, f, tuple(fr), c), TypeError, "frags"),
        (lambda v, f, fr, c: (v, f, Fragments(fr.face_id.float(), fr.bary, fr.depth), c), ValueError, "frags"),
        (lambda v, f, fr, c: (v, f, Fragments(fr.face_id, fr.bary, fr.depth[:, :3]), c), ValueError, "frags"),
        (lambda v, f, fr, c: (v, f, Fragments(fr.face_id + 1, fr.bary, fr.depth), c), ValueError, "face_id"),
        (lambda v, f, fr, c: (v.long(), f, fr, c), TypeError, "verts"),
        (lambda v, f, fr, c: (v[:, :2], f, fr, c), ValueError, "verts"),
        (lambda v, f, fr, c: (v.expand(3, -1, -1), f, fr, c), ValueError, "verts"),
        (lambda v, f, fr, c: (v.to("meta"), f, fr, c), ValueError, "verts"),
        (lambda v, f, fr, c: (v, f.float(), fr, c), TypeError, "faces"),
        (lambda v, f, fr, c: (v, f[0], fr, c), ValueError, "faces"),
        (lambda v, f, fr, c: (v, f + 1, fr, c), ValueError, "faces"),
        (lambda v, f, fr, c: ("verts", f, fr, c), TypeError, "verts"),
    ],
)
@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_inputs(mutate, exc, words, backend):
    maybe_skip(backend)
    v, f, fr, c = mutate(*_bad_inputs())
    with pytest.raises(exc, match=words):
        vr.antialias(c, fr, v, f, backend=backend)


def test_bad_adjacency_backend_and_face_adjacency_args():
    verts, faces, frags, color = _bad_inputs()
    with pytest.raises(ValueError, match="adjacency"):
        vr.antialias(color, frags, verts, faces, adjacency=torch.zeros(2, 3, dtype=torch.int64))
    with pytest.raises(TypeError, match="adjacency"):
        vr.antialias(color, frags, verts, faces, adjacency=torch.zeros(1, 3))
    with pytest.raises(ValueError, match="backend"):
        vr.antialias(color, frags, verts, faces, backend="nope")
    with pytest.raises(RuntimeError, match="antialias"):
        vr.antialias(color, frags, verts, faces, backend="triton")
    with pytest.raises(TypeError, match="faces"):
        vr.face_adjacency(torch.zeros(3, 3))
    with pytest.raises(ValueError, match="faces"):
        vr.face_adjacency(torch.zeros(3, 2, dtype=torch.int64))
    with pytest.raises(TypeError, match="faces"):
        vr.face_adjacency([[0, 1, 2]])


def test_cpp_op_validates_its_inputs():
    cpu_or_skip()
    verts, faces, frags, color = _bad_inputs()
    sil = torch.ones(1, 1, 3, dtype=torch.bool)
    adj = torch.full((1, 1, 3), -1)
    op = torch.ops.voxrender.antialias_forward
    good = dict(color=color, face_id=frags.face_id, depth=frags.depth.detach(), verts=verts[None], faces=faces[None],
                silhouette=sil, adjacency=adj)
    cases = [
        ("color", color[0], ValueError), ("color", color.long(), TypeError),
        ("face_id", frags.face_id.long(), TypeError), ("face_id", frags.face_id[:, :2], ValueError),
        ("face_id", frags.face_id + 1, ValueError),
        ("depth", frags.depth.detach().double(), TypeError), ("verts", verts[None, :, :3], ValueError),
        ("verts", verts[None].double(), TypeError),
        ("faces", faces, ValueError), ("faces", faces[None].float(), TypeError), ("faces", faces[None] + 5, ValueError),
        ("silhouette", sil.int(), TypeError), ("silhouette", sil[:, :, :2], ValueError),
        ("adjacency", adj.float(), TypeError), ("adjacency", adj[:, :, :2], ValueError),
    ]
    for name, value, exc in cases:
        args = dict(good, **{name: value})
        with pytest.raises(exc, match=name):
            op(*args.values())
    with pytest.raises(ValueError, match="grad_out"):
        torch.ops.voxrender.antialias_backward(color[..., :2], *good.values())


def test_cpp_op_ends_the_walk_at_adjacency_entries_out_of_range():
    """The op reads adjacency values without checking them (vr.antialias passes face_adjacency's): entries
    outside [0, F) end the walk instead of being read. The pair across the only interior-marked edge of the
    edge triangle then does not blend."""
    cpu_or_skip()
    verts, faces, frags, color = _bad_inputs()
    op = torch.ops.voxrender.antialias_forward
    args = (color, frags.face_id, frags.depth.detach(), verts[None], faces[None])
    no_sil = torch.zeros(1, 1, 3, dtype=torch.bool)
    for bad in (10**12, -7, 1):
        out = op(*args, no_sil, torch.full((1, 1, 3), bad))
        assert torch.equal(out, color)
    # The same edges marked as silhouette edges: the pairs blend (the edge at x = 0.3, t = 0.7).
    out = op(*args, torch.ones(1, 1, 3, dtype=torch.bool), torch.full((1, 1, 3), 10**12))
    assert (out != color).any()


# ----------------------------------------------------------------------------------------- determinism


def test_cpu_backward_is_bitwise_repeatable_across_thread_counts():
    cpu_or_skip()
    verts, faces = sphere_scene(8, torch.float32, B=3, H=64, W=80, level=2)
    frags = vr.rasterize(verts, faces, (64, 80))
    color = torch.rand(3, 64, 80, 3, generator=torch.Generator().manual_seed(0))
    threads = torch.get_num_threads()
    runs = []
    try:
        torch.use_deterministic_algorithms(True)  # the cpu backend has no atomics: allowed
        for n in (threads, 1, threads):
            torch.set_num_threads(n)
            runs.append(run_backend("cpu", color, frags, verts, faces))
    finally:
        torch.use_deterministic_algorithms(False)
        torch.set_num_threads(threads)
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            assert torch.equal(a, b)
    assert runs[0][2].abs().sum() > 0


# ----------------------------------------------------------------------------------- silhouette fitting


def views(n, dtype=torch.float32):
    """n cameras on a ring around the origin at distance 3.5, at different heights: world-to-camera
    matrices (n, 4, 4)."""
    mats = []
    for k in range(n):
        a = torch.tensor(2 * torch.pi * k / n)
        eye = torch.tensor([3.5 * torch.sin(a), -1.0 + 0.8 * k, 3.5 * torch.cos(a)], dtype=dtype)
        R, t = vr.look_at(eye, torch.zeros(3, dtype=dtype), torch.tensor([0.0, 1.0, 0.0], dtype=dtype))
        M = torch.eye(4, dtype=dtype)
        M[:3, :3], M[:3, 3] = R, t
        mats.append(M)
    return torch.stack(mats)


def silhouettes(pts, faces, cams, size, aa=True, backend=None):
    """Antialiased silhouette images (n_views, H, W, 1) of points (V, 3): white mesh on black."""
    hom = torch.cat([pts, torch.ones_like(pts[:, :1])], -1)
    clip = hom[None] @ cams.transpose(-1, -2)
    frags = vr.rasterize(clip, faces, size)
    white = vr.interpolate(torch.ones(pts.shape[0], 1, dtype=pts.dtype), frags, faces)
    return vr.antialias(white, frags, clip, faces, backend=backend) if aa else white


def iou(a, b):
    a, b = a > 0.5, b > 0.5
    return ((a & b).sum() / (a | b).sum()).item()


@pytest.mark.parametrize("level, px", [(2, 48), (3, 32), (4, 48)])
def test_silhouette_fitting_converges(level, px):
    """Three views of a white sphere, Adam on the vertex positions of a smaller, shifted sphere. Level 3 at
    32 px and level 4 at 48 px have rim faces thinner than a pixel: only the walk finds their silhouette
    (measured with the oracle limited to one face, the behaviour before the walk: IoU 0.57 -> 0.58 and
    0.57 -> 0.77; with the walk 0.57 -> 0.99 and 0.56 -> 0.98)."""
    size = (px, px)
    fpx = 55.0 * px / 48  # the same field of view at every size
    K = torch.tensor([[fpx, 0, (px - 1) / 2], [0, fpx, (px - 1) / 2], [0, 0, 1]])
    cams = vr.perspective(K, size, 0.5, 20.0) @ views(3)
    v, faces = icosphere(level)
    target_pts = v * torch.tensor([1.1, 0.75, 0.9]) + torch.tensor([0.1, 0.0, -0.1])
    with torch.no_grad():
        target = silhouettes(target_pts, faces, cams, size)
    start = v * 0.7 + torch.tensor([-0.15, 0.1, 0.1])
    # Without antialias the silhouette loss has no vertex gradient: antialias is what supplies it.
    p = start.clone().requires_grad_()
    (silhouettes(p, faces, cams, size, aa=False) - target).abs().sum().backward()
    assert p.grad.abs().max() < 1e-4
    p = start.clone().requires_grad_()
    (silhouettes(p, faces, cams, size) - target).abs().sum().backward()
    assert p.grad.abs().max() > 1e-2

    p = start.clone().requires_grad_()
    opt = torch.optim.Adam([p], lr=0.02)
    with torch.no_grad():
        iou0 = iou(silhouettes(p, faces, cams, size), target)
    t0 = time.perf_counter()
    losses = []
    for _ in range(60):
        img = silhouettes(p, faces, cams, size)
        loss = (img - target).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    with torch.no_grad():
        iou1 = iou(silhouettes(p, faces, cams, size), target)
    elapsed = time.perf_counter() - t0
    assert iou0 < 0.6, iou0
    assert iou1 > 0.9, (iou0, iou1)
    assert losses[-1] < 0.2 * losses[0], (losses[0], losses[-1])
    print(f"silhouette fit (level {level}, {px} px): IoU {iou0:.3f} -> {iou1:.3f}, "
          f"loss {losses[0]:.4f} -> {losses[-1]:.4f}, {elapsed:.1f} s")


# --------------------------------------------------------------------- CUDA kernels under CPU emulation


def emu_library():
    """csrc/kernels/antialias.cu compiled for the CPU under the emulation of tests/cuda_emu.py (its launch
    rewrite and runtime shim), with tests/antialias_emu_harness.cpp as the entry point. Built once per
    source version in the temp folder."""
    import ctypes
    import os

    cuda_emu = pytest.importorskip("cuda_emu", reason="tests/cuda_emu.py (the CUDA-kernel emulation) is not present")
    why = cuda_emu.unavailable_reason()
    if why:
        pytest.skip(why)
    harness = os.path.join(os.path.dirname(os.path.abspath(__file__)), "antialias_emu_harness.cpp")
    lib = cuda_emu.build(["antialias"], [harness], "antialias")
    i64, i32, ptr = ctypes.c_int64, ctypes.c_int, ctypes.c_void_p
    lib.emu_antialias.argtypes = [i32, i64, i32, i32, i32, i64, i64] + [ptr] * 11
    lib.emu_antialias.restype = i32
    return lib


def emu_antialias(color, frags, verts, faces, grad=None):
    """The CUDA kernels (emulated) on the inputs vr.antialias would pass: (out) or (grad_color, grad_verts)."""
    lib = emu_library()
    B, H, W, C = color.shape
    faces = faces.expand(B, -1, -1) if faces.dim() == 3 else faces[None].expand(B, -1, -1)
    adj = vr.face_adjacency(faces).contiguous()
    sil = silhouette_edges(verts, faces, adj).contiguous()
    color, verts = color.contiguous(), verts.contiguous()
    fid, depth, faces = frags.face_id.contiguous(), frags.depth.detach().contiguous(), faces.long().contiguous()
    head = (int(color.dtype == F64), B, H, W, C, verts.shape[1], faces.shape[1], color.data_ptr(), fid.data_ptr(),
            depth.data_ptr(), verts.data_ptr(), faces.data_ptr(), sil.data_ptr(), adj.data_ptr())
    if grad is None:
        out = torch.empty_like(color)
        assert lib.emu_antialias(*head, None, out.data_ptr(), None, None) == 0
        return out
    grad = grad.contiguous()
    gc, gv = torch.empty_like(color), torch.zeros_like(verts)
    assert lib.emu_antialias(*head, grad.data_ptr(), None, gc.data_ptr(), gv.data_ptr()) == 0
    return gc, gv


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_kernels_emulated_match_cpu(dtype):
    """The CUDA kernels' source, run on the CPU under emulation: the forward and the colour gradient are the
    CPU op's bit for bit (the same per-pixel gather in the same order; the CPU op's walk filter only skips
    walks that cannot blend), the vertex gradient (atomics) equal up to summation order. Checks the launch
    shape, the grid-stride loop and the pixel index math; the second scene (level 3 spheres) walks."""
    cpu_or_skip(dtype)
    scenes = [sphere_scene(21, dtype, B=2, H=19, W=27, level=1, per_item=True, pad=9) + ((19, 27),),
              sphere_scene(5, dtype, B=2, H=23, W=29, level=3, n_spheres=2, n_tris=1) + ((23, 29),)]
    for n, (verts, faces, size) in enumerate(scenes):
        frags = vr.rasterize(verts, faces, size)
        if n == 1:
            assert walked_blends(verts, faces, frags) > 20
        color = torch.rand(2, *size, 3, generator=torch.Generator().manual_seed(3), dtype=dtype)
        out = emu_antialias(color, frags, verts, faces)
        ref = vr.antialias(color, frags, verts, faces, backend="cpu")
        assert (ref != color).any()
        assert torch.equal(out, ref)
        grad = torch.randn(color.shape, generator=torch.Generator().manual_seed(4), dtype=dtype)
        gc, gv = emu_antialias(color, frags, verts, faces, grad)
        _, gc_ref, gv_ref = run_backend("cpu", color, frags, verts, faces, grad_seed=4)
        assert torch.equal(gc, gc_ref)
        assert gv_ref.abs().sum() > 0
        assert_verts_grad_close(gv, gv_ref, verts, dtype)


# ------------------------------------------------------------------------------------------------- GPU


@needs_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("per_item", [False, True])
@pytest.mark.parametrize("level", [1, 3])
def test_cuda_matches_torch(dtype, per_item, level):
    """Level 3 spheres: most silhouette pairs walk across thin rim faces."""
    backend_or_skip("cuda", "cuda", dtype)
    for seed in range(3):
        verts, faces = sphere_scene(seed, dtype, per_item=per_item, pad=15 if per_item else 0, level=level,
                                    n_tris=4 if level == 1 else 1)
        verts, faces = verts.cuda(), faces.cuda()
        frags = vr.rasterize(verts.cpu(), faces.cpu(), (37, 53))
        frags = Fragments(*(x.cuda() for x in frags))
        color = torch.rand(2, 37, 53, 4, generator=torch.Generator().manual_seed(seed), dtype=dtype).cuda()
        ref = run_backend("torch", color, frags, verts, faces)
        got = run_backend("cuda", color, frags, verts, faces)
        for a in got:
            assert torch.isfinite(a).all()
        assert_close_scaled(got[0], ref[0], dtype)
        assert_close_scaled(got[1], ref[1], dtype)
        assert_verts_grad_close(got[2], ref[2], verts, dtype)
        # The cpu backend on the same inputs (shared math): same forward.
        if hasattr(torch.ops.voxrender, "antialias_forward"):
            cpu = run_backend("cpu", color.cpu(), Fragments(*(x.cpu() for x in frags)), verts.cpu(), faces.cpu())
            assert_close_scaled(got[0].cpu(), cpu[0], dtype)
            assert torch.equal((got[0].cpu() != color.cpu()).any(-1), (cpu[0] != color.cpu()).any(-1))


@needs_cuda
@pytest.mark.gpu
def test_cuda_opcheck_and_gradcheck():
    backend_or_skip("cuda", "cuda", F64)
    verts, faces = sphere_scene(2, F64, B=2, H=9, W=11, level=0, n_spheres=2, n_tris=1)
    frags = Fragments(*(x.cuda() for x in vr.rasterize(verts, faces, (9, 11))))
    verts, faces = verts.cuda(), faces.cuda()
    adj = vr.face_adjacency(faces).expand(2, -1, -1).contiguous()
    sil = silhouette_edges(verts, faces.expand(2, -1, -1), adj)
    color = torch.rand(2, 9, 11, 3, dtype=F64, device="cuda", requires_grad=True)
    v = verts.clone().requires_grad_()
    args = (color, frags.face_id, frags.depth.detach(), v, faces.expand(2, -1, -1).contiguous(), sil, adj)
    torch.library.opcheck(torch.ops.voxrender.antialias_forward.default, args)
    f = lambda c, vv: vr.antialias(c, frags, vv, faces, backend="cuda")
    assert torch.autograd.gradcheck(f, (color, v), eps=1e-7, atol=1e-6, rtol=1e-5, fast_mode=True,
                                    nondet_tol=1e-10)


@needs_cuda
@pytest.mark.gpu
def test_cuda_backward_alerts_in_deterministic_mode():
    backend_or_skip("cuda", "cuda")
    verts, faces = edge_triangle(0.3, dtype=torch.float32)
    frags = Fragments(*(x.cuda() for x in vr.rasterize(verts, faces, (6, 8))))
    verts = verts.cuda().requires_grad_()
    color = torch.rand(1, 6, 8, 3, device="cuda", requires_grad=True)
    out = vr.antialias(color, frags, verts, faces.cuda(), backend="cuda")  # the forward is deterministic
    try:
        torch.use_deterministic_algorithms(True)
        out2 = vr.antialias(color, frags, verts, faces.cuda(), backend="cuda")
        assert torch.equal(out, out2)
        with pytest.raises(RuntimeError, match="deterministic"):
            out2.sum().backward()
    finally:
        torch.use_deterministic_algorithms(False)
