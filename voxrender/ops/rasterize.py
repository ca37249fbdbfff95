"""``voxrender.rasterize`` and ``voxrender.interpolate``: argument checks, shapes, backend choice.

Conventions and the exact coverage rules: :mod:`voxrender.reference.rasterize` (and
``../shared/specs/rasterization.md``). Backends so far: ``torch`` (the brute-force reference,
O(faces x pixels)); ``cpu`` and ``cuda`` (a binned C++ visibility pass, O(faces + pixels), then the fused
C++ ``fragments_forward`` op: barycentrics and depth of the visible faces in one pass over the pixels, with
an analytic backward); ``triton`` (its own visibility pass, then the reference's differentiable
``fragments_from_face_ids``, which stays the oracle of the fused op).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .. import backends
from ..reference.rasterize import Fragments, fragments_from_face_ids, interpolate_reference, rasterize_reference
from .volume_projection import image_size_arg

# Elements of the (faces x pixels) intermediate the reference may hold at once (chunking over faces),
# so that large images run in bounded memory instead of hitting a hidden cap.
_REFERENCE_BUDGET = 1 << 23


def _check_verts(verts) -> Tensor:
    if not isinstance(verts, Tensor):
        raise TypeError(f"verts: expected a torch.Tensor, got {type(verts).__name__}")
    if not verts.is_floating_point():
        raise TypeError(f"verts: expected floating-point clip coordinates, got dtype {verts.dtype}")
    if verts.dim() == 2:
        verts = verts[None]
    if verts.dim() != 3 or verts.shape[-1] not in (3, 4):
        raise ValueError(f"verts: expected (B, V, 4), (V, 4) or (B, V, 3) (w = 1), got {tuple(verts.shape)}")
    if verts.shape[-1] == 3:
        verts = torch.cat([verts, torch.ones_like(verts[..., :1])], -1)
    return verts


def _check_faces(faces, batch: int, n_verts: int, device) -> Tensor:
    if not isinstance(faces, Tensor):
        raise TypeError(f"faces: expected a torch.Tensor, got {type(faces).__name__}")
    if faces.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"faces: expected int32 or int64 vertex indices, got dtype {faces.dtype}")
    if faces.device != device:
        raise ValueError(f"faces: expected a tensor on {device} (verts' device), got {faces.device}")
    if faces.dim() == 2:
        faces = faces[None].expand(batch, -1, -1)
    if faces.dim() != 3 or faces.shape[-1] != 3:
        raise ValueError(f"faces: expected (F, 3) or (B, F, 3), got {tuple(faces.shape)}")
    if faces.shape[0] != batch:
        raise ValueError(f"faces: batch of {faces.shape[0]} does not match verts' batch of {batch}")
    if faces.numel() and not torch.compiler.is_compiling():
        # One min/max per call: cheap, and out-of-range indices never reach a kernel. (Under
        # torch.compile the values are not known while tracing; the C++ op checks them itself.)
        lo, hi = int(faces.min()), int(faces.max())
        if lo < -1 or hi >= n_verts:
            raise ValueError(f"faces: indices must lie in [0, {n_verts - 1}] (or -1 for a padding row), "
                             f"got min {lo}, max {hi}")
        if lo == -1:
            pad = faces == -1
            if bool((pad.any(-1) & ~pad.all(-1)).any()):
                raise ValueError("faces: a row mixes -1 with vertex indices; padding rows must be all -1")
    return faces


def rasterize(verts: Tensor, faces: Tensor, image_size, *, cull_backfaces: bool = False,
              backend: str | None = None) -> Fragments:
    """Hard z-buffer rasterization with exact gradients of barycentrics and depth.

    Args:
        verts: (B, V, 4) clip coordinates (x, y, z, w), (V, 4) shared by a batch of one, or (B, V, 3)
            taken as w = 1. NDC = (x, y, z) / w; x = -1 is the left edge, y = -1 the TOP edge (y down).
        faces: (F, 3) int32/int64 shared by the batch, or (B, F, 3) with rows of -1 as padding.
        image_size: int or (H, W). Pixel (i, j) is centred at NDC (-1 + (2j + 1) / W, -1 + (2i + 1) / H).
        cull_backfaces: drop faces whose NDC winding (x1 - x0)(y2 - y0) - (x2 - x0)(y1 - y0) is >= 0.
        backend: None (automatic) or a name; see :mod:`voxrender.backends`.

    Returns:
        :class:`Fragments` (face_id (B, H, W) int32, -1 background; bary (B, H, W, 3) perspective-
        correct, 0 in background; depth (B, H, W) z/w, 1.0 in background). A fragment is visible when
        w > 0 and -1 <= z/w <= 1 at the pixel centre; the smaller z/w wins and equal depths go to the
        lower face index; triangles crossing w = 0 are rasterized on their visible part; a pixel centre
        on an edge shared by two faces belongs to exactly one (a top-left fill rule); zero-area
        triangles cover nothing. ``bary`` and ``depth`` are differentiable with respect to ``verts``
        (visibility held fixed).
    """
    verts = _check_verts(verts)
    batch = verts.shape[0]
    faces = _check_faces(faces, batch, verts.shape[1], verts.device)
    h, w = image_size_arg(image_size)
    if backend is not None:
        backends.check_backend_name(backend)
    name = backends.select_backend("rasterize", verts.device, verts.dtype, backend)
    if name == "torch":
        chunk = max(1, _REFERENCE_BUDGET // (h * w))
        return rasterize_reference(verts, faces, h, w, cull_backfaces=bool(cull_backfaces), face_chunk=chunk)
    # A fast visibility pass (O(faces + pixels)); bary and depth then come from the same differentiable
    # formula as the reference's, on the visible faces only.
    if name == "triton":
        from ..triton.rasterize import rasterize_face_ids_triton

        face_id = rasterize_face_ids_triton(verts.detach(), faces, h, w, bool(cull_backfaces))
    else:  # cpu and cuda: one C++ op, dispatched on the tensors' device
        face_id, _ = torch.ops.voxrender.rasterize_face_ids(verts.detach(), faces, h, w, bool(cull_backfaces))
        # The fused C++ op (one pass over the pixels, analytic backward; fragments_autograd.py) computes what
        # fragments_from_face_ids does, to float rounding. Its CUDA backward adds with atomics, so under
        # torch.use_deterministic_algorithms(True) the cuda backend keeps the deterministic torch formula.
        if hasattr(torch.ops.voxrender, "fragments_forward") and not (
                name == "cuda" and torch.are_deterministic_algorithms_enabled()):
            bary, depth = torch.ops.voxrender.fragments_forward(verts, faces, face_id)
            return Fragments(face_id, bary, depth)
    return fragments_from_face_ids(verts, faces, face_id)


def interpolate(attr: Tensor, frags: Fragments, faces: Tensor, *, backend: str | None = None) -> Tensor:
    """Per-pixel attributes: attr (B, V, C) or (V, C) -> (B, H, W, C), sum_k bary_k attr[vertex k], 0 in
    background. Differentiable with respect to ``attr`` and, through ``frags.bary``, the vertices."""
    if not isinstance(attr, Tensor) or not attr.is_floating_point():
        raise TypeError(f"attr: expected a floating-point tensor, got {getattr(attr, 'dtype', type(attr).__name__)}")
    if not isinstance(frags, Fragments):
        raise TypeError(f"frags: expected the Fragments returned by voxrender.rasterize, got {type(frags).__name__}")
    batch = frags.face_id.shape[0]
    if attr.dim() == 2:
        attr = attr[None].expand(batch, -1, -1)
    if attr.dim() != 3 or attr.shape[0] != batch:
        raise ValueError(f"attr: expected ({batch}, V, C) or (V, C), got {tuple(attr.shape)}")
    if attr.device != frags.face_id.device:
        raise ValueError(f"attr: expected a tensor on {frags.face_id.device}, got {attr.device}")
    faces = _check_faces(faces, batch, attr.shape[1], attr.device)
    if backend is not None:
        backends.check_backend_name(backend)
    name = backends.select_backend("interpolate", attr.device, attr.dtype, backend)
    bary = frags.bary.to(attr.dtype)
    if name == "torch":
        return interpolate_reference(attr, Fragments(frags.face_id, bary, frags.depth), faces)
    if name == "triton":
        from ..triton.interpolate import interpolate_triton

        return interpolate_triton(attr, frags.face_id, bary, faces)
    return torch.ops.voxrender.interpolate(attr, frags.face_id, bary, faces)  # cpu and cuda (C++)
