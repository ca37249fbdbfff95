"""``voxrender.antialias`` and ``voxrender.face_adjacency``: argument checks, topology, backend choice.

The algorithm (topology, silhouette edges, pixel pairs, the walk to the silhouette, blend, gradients) is
described in :mod:`voxrender.reference.antialias`, whose pure-torch implementation is the ``torch`` backend
and the oracle. The topology and silhouette flags are computed here in torch for every backend
(O(F log F) and O(F)) and passed to it with the adjacency (the walk's next face); the per-pixel work runs
in the chosen backend:

* ``torch``: :func:`voxrender.reference.antialias.antialias_reference`, autograd-derived; it selects the
  pairs with ``nonzero`` (data-dependent shapes: a host synchronisation on CUDA, and a graph break under
  ``torch.compile``);
* ``cpu``: ``torch.ops.voxrender.antialias_forward`` / ``antialias_backward`` (csrc/ops/antialias_cpu.cpp),
  deterministic forward and backward (bitwise repeatable, whatever the thread count), traceable by
  ``torch.compile(fullgraph=True)``;
* ``cuda``: the same ops on CUDA tensors (csrc/kernels/antialias.cu); the vertex gradient is summed with
  atomicAdd, so its backward is not deterministic and says so under
  ``torch.use_deterministic_algorithms(True)``.

The C++ ops share their per-pair math through ``csrc/include/voxrender/antialias.h``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .. import backends
from ..reference.antialias import antialias_reference, face_adjacency, silhouette_edges
from ..reference.rasterize import Fragments
from .rasterize import _check_faces, _check_verts

OP = "antialias"

__all__ = ["antialias", "face_adjacency"]


def _check_adjacency(adjacency, faces: Tensor) -> Tensor:
    if not isinstance(adjacency, Tensor):
        raise TypeError("adjacency: expected a torch.Tensor from voxrender.face_adjacency, got "
                        f"{type(adjacency).__name__}")
    if adjacency.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"adjacency: expected an integer tensor, got dtype {adjacency.dtype}")
    if adjacency.device != faces.device:
        raise ValueError(f"adjacency: expected a tensor on {faces.device} (faces' device), got {adjacency.device}")
    B, F, _ = faces.shape
    if adjacency.dim() == 2:
        adjacency = adjacency[None].expand(B, -1, -1)
    if adjacency.dim() != 3 or tuple(adjacency.shape[1:]) != (F, 3) or adjacency.shape[0] != B:
        raise ValueError(f"adjacency: expected ({F}, 3) or ({B}, {F}, 3) to match faces, got {tuple(adjacency.shape)}")
    return adjacency


def antialias(color: Tensor, frags: Fragments, verts: Tensor, faces: Tensor, *, adjacency: Tensor | None = None,
              backend: str | None = None) -> Tensor:
    """Analytic edge antialiasing: blends colours across silhouette edges by the edge's position between
    pixel centres, which gives gradients with respect to the vertex positions at silhouettes.

    For every horizontally or vertically adjacent pixel pair with different face ids, the front pixel s
    (the face over background; of two faces the smaller ``frags.depth``, ties to the lower face id) walks
    along the segment to the other pixel's centre (t from 0 to 1, computed from the projected endpoints of
    edges whose vertices have w > 0): from its face f, through each interior edge the segment leaves a
    face by into the face across it, until it leaves a face through a silhouette edge (a boundary edge,
    or the face across it faces the other way) at t <= 1, or passes t = 1, or has looked at 16 faces. On a
    silhouette edge the pair blends: t > 0.5 gives out[o] += (t - 0.5) (color[s] - color[o]), otherwise
    out[s] += (0.5 - t) (color[o] - color[s]); all pairs read the input colours and their deltas add up.
    The walk finds the outline of finely tessellated surfaces too, whose rim faces are thinner than a
    pixel. Full description: :mod:`voxrender.reference.antialias`.

    Args:
        color: (B, H, W, C) float, the shaded image (e.g. from :func:`voxrender.interpolate`), on the
            fragments' device and with their B, H, W.
        frags: the :class:`~voxrender.Fragments` that ``voxrender.rasterize(verts, faces, (H, W))`` returned.
            Only ``face_id`` and ``depth`` are read; both are treated as constants (no gradient reaches
            ``frags.depth`` through this op).
        verts: the clip-space vertices given to the rasterizer: (B, V, 4), (V, 4) or (B, V, 3) (w = 1);
            a batch of one is broadcast over the fragments' batch. Cast to ``color``'s dtype.
        faces: (F, 3) shared or (B, F, 3) with rows of -1 as padding, as given to the rasterizer.
        adjacency: optional :func:`face_adjacency` of ``faces`` ((F, 3) or (B, F, 3)), to compute the
            topology once per mesh instead of once per call. It decides the silhouette edges and where the
            walk goes across interior edges.
        backend: None (automatic) or ``"torch"``, ``"cpu"``, ``"cuda"``; see :mod:`voxrender.backends`.

    Returns:
        (B, H, W, C) of ``color``'s dtype, differentiable with respect to ``color`` and ``verts``.
    """
    if not isinstance(frags, Fragments):
        raise TypeError(f"frags: expected the Fragments returned by voxrender.rasterize, got {type(frags).__name__}")
    face_id, depth = frags.face_id, frags.depth
    if not isinstance(face_id, Tensor) or face_id.dim() != 3 or face_id.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"frags: face_id must be a (B, H, W) integer tensor, got "
                         f"{getattr(face_id, 'dtype', type(face_id).__name__)} {tuple(getattr(face_id, 'shape', ()))}")
    if not isinstance(depth, Tensor) or depth.shape != face_id.shape or not depth.is_floating_point():
        raise ValueError(f"frags: depth must be a float tensor of face_id's shape {tuple(face_id.shape)}, got "
                         f"{getattr(depth, 'dtype', type(depth).__name__)} {tuple(getattr(depth, 'shape', ()))}")
    if depth.device != face_id.device:
        raise ValueError(f"frags: depth is on {depth.device}, face_id on {face_id.device}")
    B, H, W = face_id.shape
    if not isinstance(color, Tensor):
        raise TypeError(f"color: expected a torch.Tensor, got {type(color).__name__}")
    if not color.is_floating_point():
        raise TypeError(f"color: expected a floating-point tensor, got dtype {color.dtype}")
    if color.dim() != 4 or tuple(color.shape[:3]) != (B, H, W):
        raise ValueError(f"color: expected ({B}, {H}, {W}, C) to match frags.face_id, got {tuple(color.shape)}")
    if color.device != face_id.device:
        raise ValueError(f"color: expected a tensor on {face_id.device} (the fragments' device), got {color.device}")
    verts = _check_verts(verts)
    if verts.device != color.device:
        raise ValueError(f"verts: expected a tensor on {color.device} (color's device), got {verts.device}")
    if verts.shape[0] != B:
        if verts.shape[0] != 1:
            raise ValueError(f"verts: batch of {verts.shape[0]} does not match the fragments' batch of {B}")
        verts = verts.expand(B, -1, -1)
    verts = verts.to(color.dtype)
    shared_faces = isinstance(faces, Tensor) and faces.dim() == 2
    faces = _check_faces(faces, B, verts.shape[1], verts.device)
    if backend is not None:
        backends.check_backend_name(backend)
    name = backends.select_backend(OP, color.device, color.dtype, backend)
    n_faces = faces.shape[1]
    if name == "torch" and face_id.numel() and not torch.compiler.is_compiling():
        # The C++ cpu op checks this itself; the CUDA kernels read ids outside [0, F) as background rather
        # than synchronising with the device to check.
        lo, hi = int(face_id.min()), int(face_id.max())
        if lo < -1 or hi >= n_faces:
            raise ValueError(f"frags: face_id must lie in [-1, {n_faces - 1}] for these faces, got min {lo}, max {hi}")

    if adjacency is None:  # one sort per distinct mesh: once for shared faces
        adjacency = face_adjacency(faces[0])[None].expand(B, -1, -1) if shared_faces else face_adjacency(faces)
    else:
        adjacency = _check_adjacency(adjacency, faces)
    silhouette = silhouette_edges(verts, faces, adjacency)
    depth = depth.detach().to(color.dtype)
    face_id = face_id.to(torch.int32)
    if name == "torch":
        return antialias_reference(color, face_id, depth, verts, faces, silhouette, adjacency)
    return torch.ops.voxrender.antialias_forward(color, face_id, depth, verts, faces, silhouette, adjacency)
