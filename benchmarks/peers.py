"""Adapters for the peer rasterizers: PyTorch3D (``rasterize_meshes``, faces_per_pixel=1) and nvdiffrast
(``RasterizeCudaContext``, ``rasterize`` / ``interpolate`` / ``antialias``). Neither is required: each is
imported if present, otherwise it reads "not installed" with the reason, and the benchmarks skip it.
Install them outside this repository (for example ``pip install --no-build-isolation
git+<their repository>`` on a GPU machine, or a wheel built there).

Both render the SAME picture as voxrender from the same clip-space vertices (``raster_cases.make_inputs``).
voxrender's convention: NDC = (x, y, z) / w, pixel (i, j) centred at NDC (-1 + (2j + 1) / W,
-1 + (2i + 1) / H), row 0 at NDC y = -1 (y down), visible for w > 0 and -1 <= z/w <= 1, nearest z/w wins.

- PyTorch3D takes screen-space NDC with +X left and +Y up: pixel (i, j) is centred at PyTorch3D NDC
  (1 - (2j + 1) / W, 1 - (2i + 1) / H), i.e. at minus voxrender's NDC. So the vertices become
  (-x / w, -y / w, w): both axes negated (a 180-degree turn, so the winding is unchanged) and z the
  camera depth w, with ``perspective_correct=True`` (PyTorch3D divides by that z for perspective-correct
  barycentrics, as voxrender and nvdiffrast interpolate). Nearest w and nearest z/w pick the same face
  (z/w = a - b / w is increasing in w). Its ``pix_to_face`` indexes the packed faces of the batch: the
  adapter subtracts each mesh's first packed index. PyTorch3D has no analytic antialiasing (its soft
  rasterizer, blur_radius > 0 with K > 1 faces per pixel, is another operation), so the
  ``raster+interp+aa`` pipeline skips it. Its bin size and max faces per bin are PyTorch3D's own
  heuristics (``bin_size=None``); a coarse-pass overflow, which PyTorch3D reports with a warning and an
  incomplete image, shows in the coverage check.
- nvdiffrast takes the clip coordinates as they are: its pixel (row i, column j) is centred at
  NDC (-1 + (2j + 1) / W, -1 + (2i + 1) / H) with row 0 at y = -1 (OpenGL's bottom row, stored first),
  which is voxrender's row 0, and it clips to -w <= z <= w. So no conversion: the same (B, V, 4) tensor
  and the faces as int32. Its ``rast`` output is (u, v, z/w, triangle_id + 1) with u, v the
  barycentrics of the face's vertices 0 and 1 (its backward takes gradients of u and v only: z/w is
  not differentiable there, whereas voxrender's and PyTorch3D's depth are). The CUDA context and the antialias topology hash are made
  once per scene, outside the timed call (voxrender's face adjacency is, too). nvdiffrast runs on CUDA
  tensors only.

``check_like_for_like`` compares a peer's face coverage with voxrender's (the fraction of pixels with the
same face id, or background in both: must exceed 0.99; fill rules and depth ties differ on a few
pixels); it also reports the agreement of the peer image flipped vertically / horizontally, so a
convention slip reads as such.
"""

from __future__ import annotations

import importlib
import warnings

import torch

PEERS = ("pytorch3d", "nvdiffrast")
AGREEMENT_THRESHOLD = 0.99
# PyTorch3D's CPU rasterizer is naive (bin_size=0: every face against every pixel, in C++).
PYTORCH3D_CPU_BUDGET = 2e9  # face-pixels

_import_errors: dict[str, str | None] = {}


def import_error(name: str) -> str | None:
    """None if the peer imports, else why not ("not installed", or the import failure)."""
    if name not in _import_errors:
        module = {"pytorch3d": "pytorch3d.renderer.mesh.rasterize_meshes", "nvdiffrast": "nvdiffrast.torch"}[name]
        try:
            importlib.import_module(module)
            if name == "pytorch3d":
                importlib.import_module("pytorch3d.structures")
            _import_errors[name] = None
        except ModuleNotFoundError as e:
            root = name if e.name in (None, name) or e.name.startswith(name + ".") else e.name
            _import_errors[name] = (f"{name} is not installed" if root == name
                                    else f"{name} failed to import (missing module {e.name!r})")
        except Exception as e:  # noqa: BLE001  (a broken install reads as a reason, not a crash)
            _import_errors[name] = f"{name} failed to import ({type(e).__name__}: {e})"
    return _import_errors[name]


def version(name: str) -> str:
    err = import_error(name)
    if err:
        return err
    return getattr(importlib.import_module(name), "__version__", "installed (no __version__)")


def skip_reason(name: str, device, pipeline: str, case=None) -> str | None:
    """Why the peer does not run this case here (None: it runs)."""
    if name not in PEERS:
        raise ValueError(f"peer: expected one of {PEERS}, got {name!r}")
    err = import_error(name)
    if err:
        return err
    device = torch.device(device)
    if name == "pytorch3d":
        if pipeline != "rasterize":
            return "PyTorch3D has no analytic antialiasing (its soft rasterizer is another operation)"
        if device.type == "cpu" and case is not None and case.brute_force_cost > PYTORCH3D_CPU_BUDGET:
            return (f"PyTorch3D's CPU rasterizer is naive O(F x H x W): {case.brute_force_cost:.2g} face-pixels "
                    f"> budget {PYTORCH3D_CPU_BUDGET:.2g}")
    if name == "nvdiffrast" and device.type != "cuda":
        return "nvdiffrast runs on CUDA tensors only"
    return None


# --------------------------------------------------------------------------------------------------
# PyTorch3D

def to_pytorch3d(verts: torch.Tensor) -> torch.Tensor:
    """Clip (B, V, 4) -> PyTorch3D screen NDC (B, V, 3): (-x / w, -y / w, w)."""
    w = verts[..., 3:4]
    return torch.cat([-verts[..., :2] / w, w], -1)


def pytorch3d_rasterize(verts: torch.Tensor, faces_long: torch.Tensor, image: int):
    """(face_id (B, H, W) int64 per mesh, bary (B, H, W, 3), zbuf (B, H, W) camera depth)."""
    from pytorch3d.renderer.mesh.rasterize_meshes import rasterize_meshes
    from pytorch3d.structures import Meshes

    B = verts.shape[0]
    meshes = Meshes(verts=to_pytorch3d(verts), faces=faces_long.expand(B, -1, -1))
    p2f, zbuf, bary, _ = rasterize_meshes(meshes, image_size=image, blur_radius=0.0, faces_per_pixel=1,
                                          perspective_correct=True)
    return p2f[..., 0], bary[..., 0, :], zbuf[..., 0], meshes.mesh_to_faces_packed_first_idx()


# --------------------------------------------------------------------------------------------------
# nvdiffrast

_nvdiffrast_contexts: dict = {}


def nvdiffrast_context(device):
    import nvdiffrast.torch as dr

    device = torch.device(device)
    key = device.index if device.index is not None else torch.cuda.current_device()
    if key not in _nvdiffrast_contexts:
        _nvdiffrast_contexts[key] = dr.RasterizeCudaContext(device=device)
    return _nvdiffrast_contexts[key]


# --------------------------------------------------------------------------------------------------
# The common interface used by raster_cases.make_step

def _prepared(name: str, inputs: dict) -> dict:
    """Per-scene constants of a peer, made once outside the timed calls (cached in ``inputs``)."""
    key = f"_peer_{name}"
    if key not in inputs:
        faces = inputs["faces"]
        if name == "pytorch3d":
            inputs[key] = {"faces": faces.long()[None]}
        else:
            import nvdiffrast.torch as dr

            tri = faces.int().contiguous()
            inputs[key] = {"ctx": nvdiffrast_context(faces.device), "tri": tri,
                           "topology_hash": dr.antialias_construct_topology_hash(tri)}
    return inputs[key]


def make_forward(name: str, inputs: dict, pipeline: str):
    """forward(verts, colors) -> list of outputs: ``rasterize``: the barycentrics and the depth in the peer's
    native layout (PyTorch3D: bary (B, H, W, 3), zbuf (B, H, W); nvdiffrast: (u, v) (B, H, W, 2), z/w
    (B, H, W)); the pipeline: [image (B, H, W, 3)]. Use ``native_grads`` for matching upstream gradients."""
    reason = skip_reason(name, inputs["verts"].device, pipeline)
    if reason:
        raise RuntimeError(reason)
    prep = _prepared(name, inputs)
    image = inputs["case"].image
    if name == "pytorch3d":
        faces = prep["faces"]

        def forward(verts, colors):
            _, bary, zbuf, _ = pytorch3d_rasterize(verts, faces, image)
            return [bary, zbuf]
        return forward

    import nvdiffrast.torch as dr

    ctx, tri, topo = prep["ctx"], prep["tri"], prep["topology_hash"]

    def forward(verts, colors):
        verts = verts.contiguous()
        rast, _ = dr.rasterize(ctx, verts, tri, (image, image), grad_db=False)
        if pipeline == "rasterize":
            return [rast[..., :2], rast[..., 2]]
        col, _ = dr.interpolate(colors[None].contiguous(), rast, tri)
        return [dr.antialias(col, rast, verts, tri, topology_hash=topo)]
    return forward


def native_grads(name: str, pipeline: str, grads: list[torch.Tensor]) -> list[torch.Tensor]:
    """voxrender-shaped upstream gradients -> the shapes of ``make_forward``'s outputs."""
    if name == "nvdiffrast" and pipeline == "rasterize":
        return [grads[0][..., :2].contiguous(), grads[1]]
    return grads


def face_ids(name: str, inputs: dict) -> torch.Tensor:
    """(B, H, W) int64 visible face per pixel, -1 for background, in voxrender's pixel layout."""
    prep = _prepared(name, inputs)
    verts, image = inputs["verts"], inputs["case"].image
    with torch.no_grad():
        if name == "pytorch3d":
            p2f, _, _, first = pytorch3d_rasterize(verts, prep["faces"], image)
            return torch.where(p2f >= 0, p2f - first[:, None, None], torch.full_like(p2f, -1))
        import nvdiffrast.torch as dr

        rast, _ = dr.rasterize(prep["ctx"], verts.contiguous(), prep["tri"], (image, image), grad_db=False)
        return rast[..., 3].round().long() - 1  # triangle_id + 1 as float32: exact below 2^24 faces


def check_like_for_like(name: str, inputs: dict, ours: torch.Tensor,
                        threshold: float = AGREEMENT_THRESHOLD) -> dict:
    """Compares the peer's face ids with voxrender's (``ours``, (B, H, W)) on the same inputs.

    Returns {"agreement": fraction of pixels with the same face (or both background), "ok": agreement >
    threshold, "flipped_rows" / "flipped_cols": the agreement with the peer image flipped (a convention
    slip shows as a high value there), "coverage_peer" / "coverage_ours": covered fractions, "warnings":
    what the peer warned about (e.g. a coarse-pass overflow)}.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        theirs = face_ids(name, inputs)
    ours = ours.to(theirs.device).long()
    agree = (theirs == ours).double().mean().item()
    return {"agreement": agree, "ok": agree > threshold,
            "flipped_rows": (theirs.flip(1) == ours).double().mean().item(),
            "flipped_cols": (theirs.flip(2) == ours).double().mean().item(),
            "coverage_peer": (theirs >= 0).double().mean().item(),
            "coverage_ours": (ours >= 0).double().mean().item(),
            "warnings": sorted({str(w.message) for w in caught})}
