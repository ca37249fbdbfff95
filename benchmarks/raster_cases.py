"""Rasterization benchmark cases shared by ``test_bench_rasterize.py`` and ``compare_rasterize.py``.

A case is (scene, image size, batch) x pipeline x pass x variant:

- scenes (``SCENES``; exact face counts in the table of README.md): icospheres (closed, so about half
  the faces are hidden behind the front ones) of 1,280 / 20,480 / 81,920 / 1,310,720 faces, and dense
  depth-map grid meshes (a bumpy height field over an n x n vertex grid, 2 (n-1)^2 faces) of 968 /
  4,050 / 10,082 / 32,258 (the 128^2 depth map) / 100,352 / 999,698 faces. Every scene sits 3 units in
  front of a pinhole camera with focal length 1.2 x the image size (``vr.perspective``; near 1, far 10),
  so it covers about 55-65% of the image whatever its size; each batch item gets its own random small
  rotation about the mesh centre (Euler angles uniform in [-0.3, 0.3] rad, seeded). The clip coordinates
  do not depend on the image size (the focal length scales with it), so one scene renders the same
  picture at every resolution.
- pipelines: ``rasterize`` (``vr.rasterize`` alone: face ids, perspective-correct barycentrics, depth) and
  ``raster+interp+aa`` (``vr.rasterize``, ``vr.interpolate`` of per-vertex colours, ``vr.antialias``;
  the face adjacency that antialias needs is computed once per mesh outside the timed call, as
  nvdiffrast's topology hash is).
- passes: ``fwd`` (no input requires grad), ``fwd+bwd`` (gradients of the clip-space vertices and, in the
  pipeline, of the colours, from a fixed random upstream gradient of the outputs: the image, or the
  barycentrics and depth for ``rasterize`` alone).
- variants: the voxrender backends (``cpu``, ``cuda``, ``triton``, and ``torch``, the brute-force
  O(faces x pixels) reference, only while faces x pixels x batch <= ``TORCH_BUDGET``), and the peers
  ``pytorch3d`` and ``nvdiffrast`` (``peers.py``, same scene converted to their conventions).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch

import voxrender as vr
from voxrender.data.meshes import depth_grid_mesh, icosphere

PIPELINES = ("rasterize", "raster+interp+aa")
PASSES = ("fwd", "fwd+bwd")
PEERS = ("pytorch3d", "nvdiffrast")
VOXRENDER_VARIANTS = tuple(vr.BACKENDS)  # enumerated at run time through available_backends(op="rasterize")

# Scene geometry: the mesh spans about [-1, 1]^3 and sits DISTANCE in front of the camera.
DISTANCE = 3.0
FOCAL = 1.2  # focal length in units of the image size
NEAR, FAR = 1.0, 10.0
MAX_ANGLE = 0.3  # random per-item Euler angles in [-MAX_ANGLE, MAX_ANGLE] rad

# The torch backend is brute force, O(F H W B): it runs only while F x H x W x B stays under this
# (10,082 faces at 128^2, B=1, is 1.65e8 face-pixels: about 10 s a call on 2 quiet CPU cores, at roughly
# 2e7 face-pixels per second).
TORCH_BUDGET = 1.7e8


@dataclass(frozen=True)
class Scene:
    name: str
    kind: str  # "sphere" (icosphere of this subdivision level) or "grid" (n x n depth-map grid)
    param: int

    @property
    def n_faces(self) -> int:
        return 20 * 4 ** self.param if self.kind == "sphere" else 2 * (self.param - 1) ** 2

    @property
    def description(self) -> str:
        if self.kind == "sphere":
            return f"icosphere level {self.param}, {self.n_faces:,} faces"
        return f"{self.param}x{self.param} depth-map grid mesh, {self.n_faces:,} faces"


SCENES = {s.name: s for s in (
    Scene("sphere-1k", "sphere", 3),      # 1,280 faces
    Scene("sphere-20k", "sphere", 5),     # 20,480
    Scene("sphere-82k", "sphere", 6),     # 81,920
    Scene("sphere-1.3M", "sphere", 8),    # 1,310,720
    Scene("grid-1k", "grid", 23),         # 968
    Scene("grid-4k", "grid", 46),         # 4,050
    Scene("grid-10k", "grid", 72),        # 10,082
    Scene("grid-32k", "grid", 128),       # 32,258: the mesh of a 128^2 depth map
    Scene("grid-100k", "grid", 225),      # 100,352
    Scene("grid-1M", "grid", 708),        # 999,698
    Scene("tiny-sphere", "sphere", 1),    # 80: the smoke-test scene
)}


@dataclass(frozen=True)
class Case:
    scene: str
    image: int  # square images: H = W = image
    batch: int

    @property
    def n_faces(self) -> int:
        return SCENES[self.scene].n_faces

    @property
    def label(self) -> str:
        return f"{self.scene} ({self.n_faces:,} F) {self.image}^2 B{self.batch}"

    @property
    def id(self) -> str:
        return f"{self.scene}@{self.image}x{self.batch}"

    @property
    def brute_force_cost(self) -> float:
        """Face-pixel pairs the torch reference visits: F x H x W x B."""
        return float(self.n_faces) * self.image * self.image * self.batch

    @classmethod
    def parse(cls, text: str) -> "Case":
        """'SCENE@SIZE' (batch 1) or 'SCENE@SIZExBATCH', e.g. 'grid-10k@128' or 'sphere-1k@256x32'."""
        try:
            scene, rest = text.split("@")
            parts = [int(p) for p in rest.lower().split("x")]
        except ValueError:
            parts, scene = [], ""
        if scene not in SCENES or not 1 <= len(parts) <= 2 or min(parts) < 1:
            raise ValueError(f"case {text!r}: expected SCENE@SIZE[xBATCH] with SCENE one of {', '.join(SCENES)}")
        return cls(scene, parts[0], parts[1] if len(parts) > 1 else 1)


# Real cases (the default of compare_rasterize.py, and of the suites with --benchmark-enable). The CPU set
# keeps the script's default run within a few minutes on 2 cores; the GPU set spans the grid
# (1k..1M faces, 64^2..2048^2, batch 1 / 8 / 32).
CPU_CASES = (
    Case("sphere-1k", 64, 8),
    Case("sphere-1k", 128, 1),
    Case("grid-10k", 128, 1),       # the CPU target: >= 20x the torch brute force
    Case("sphere-20k", 128, 1),
    Case("grid-32k", 128, 8),       # dense depth-map meshes, a batch of 8
    Case("sphere-1k", 128, 32),
    Case("sphere-82k", 512, 1),
    Case("grid-100k", 512, 1),
)
GPU_CASES = (
    Case("sphere-1k", 64, 32),
    Case("grid-10k", 128, 1),
    Case("grid-10k", 128, 32),
    Case("grid-32k", 128, 32),
    Case("sphere-20k", 256, 8),
    Case("sphere-82k", 512, 8),
    Case("sphere-82k", 512, 32),
    Case("grid-100k", 1024, 8),
    Case("sphere-1.3M", 1024, 1),
    Case("grid-1M", 2048, 1),
    Case("grid-1M", 2048, 8),
)
# The "no size cap, no silent overflow" cases: ~1M faces at 2048^2, checked against the analytic sphere.
BIG_CASES = (Case("sphere-1.3M", 2048, 1), Case("grid-1M", 2048, 1))
# Scaling (O(faces + pixels)): time against faces at a fixed image, and against pixels at fixed faces.
SCALING_FACES_IMAGE = 256
SCALING_FACES = ("grid-1k", "grid-4k", "grid-10k", "grid-32k", "grid-100k", "grid-1M",
                 "sphere-1k", "sphere-20k", "sphere-82k", "sphere-1.3M")
SCALING_PIXELS_SCENE = "grid-10k"
SCALING_PIXELS = (64, 128, 256, 512, 1024, 2048)
# The depth-map target: at 128^2, the 128^2 depth-map mesh (32k faces) against a few thousand faces.
DEPTH_MAP_IMAGE = 128
DEPTH_MAP_SCENE = "grid-32k"
DEPTH_MAP_REFERENCES = ("grid-1k", "sphere-1k", "grid-4k")
# The smoke case: every suite case runs once at this size when benchmarks are disabled (CI).
SMOKE = Case("tiny-sphere", 16, 2)


def synchronize(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


@lru_cache(maxsize=16)
def _mesh_cpu(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    scene = SCENES[name]
    if scene.kind == "sphere":
        verts, faces = icosphere(scene.param)
    else:
        verts, faces = depth_grid_mesh(scene.param, scene.param, amplitude=0.1, seed=0)
    assert faces.shape[0] == scene.n_faces, (name, faces.shape)
    return verts, faces


def mesh(name: str, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Object-space verts (V, 3) float32 in about [-1, 1]^3 and faces (F, 3) int64 of a scene."""
    verts, faces = _mesh_cpu(name)
    return verts.to(device), faces.to(device)


def intrinsics(image: int, dtype=torch.float32) -> torch.Tensor:
    """OpenCV K of the benchmark camera: focal FOCAL x image, principal point at the image centre."""
    f, c = FOCAL * image, (image - 1) / 2
    return torch.tensor([[f, 0.0, c], [0.0, f, c], [0.0, 0.0, 1.0]], dtype=dtype)


def rotations(batch: int, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    """(B, 3, 3): a random small rotation per batch item (seeded)."""
    gen = torch.Generator().manual_seed(seed)
    angles = (torch.rand(3, batch, generator=gen, dtype=torch.float64) * 2 - 1) * MAX_ANGLE
    return vr.euler_to_rotation(*angles).to(dtype)


def camera_points(case: Case, seed: int = 0) -> torch.Tensor:
    """(B, V, 3) camera-space vertices (float64, CPU): rotated about the mesh centre, DISTANCE ahead."""
    verts, _ = _mesh_cpu(case.scene)
    R = rotations(case.batch, seed, torch.float64)
    pts = verts.double()[None] @ R.transpose(-1, -2)
    return pts + torch.tensor([0.0, 0.0, DISTANCE], dtype=torch.float64)


def make_inputs(case: Case, device, dtype=torch.float32, seed: int = 0) -> dict:
    """The tensors of a case, identical for every variant:

    verts (B, V, 4) clip coordinates, faces (F, 3) int32 (shared by the batch), colors (V, 3) in [0, 1)
    (shared) and the camera (K, P). ``make_step`` adds the per-mesh constants a pipeline needs (the face
    adjacency for antialias) once, outside the timed call.
    """
    _, faces = _mesh_cpu(case.scene)
    K = intrinsics(case.image, torch.float64)
    P = vr.perspective(K, case.image, NEAR, FAR)
    pts = camera_points(case, seed)
    clip = torch.cat([pts, torch.ones_like(pts[..., :1])], -1) @ P.transpose(-1, -2)
    gen = torch.Generator().manual_seed(seed + 1)
    colors = torch.rand(pts.shape[1], 3, generator=gen, dtype=torch.float64)
    inputs = {"verts": clip.to(device=device, dtype=dtype).contiguous(),
              "faces": faces.to(device=device, dtype=torch.int32).contiguous(),
              "colors": colors.to(device=device, dtype=dtype), "K": K, "P": P, "case": case}
    return inputs


def _prepare_pipeline(inputs: dict) -> None:
    """The face adjacency of the mesh for vr.antialias, made once per scene (as nvdiffrast's topology hash)."""
    if "adjacency" not in inputs and hasattr(vr, "face_adjacency"):
        inputs["adjacency"] = vr.face_adjacency(inputs["faces"])


def upstream_grads(case: Case, pipeline: str, device, dtype=torch.float32, seed: int = 1234) -> list[torch.Tensor]:
    """Fixed random upstream gradients: of the image (B, H, W, 3), or of bary (B, H, W, 3) and depth (B, H, W)."""
    gen = torch.Generator().manual_seed(seed)
    shape = (case.batch, case.image, case.image)
    grads = [torch.rand(*shape, 3, generator=gen, dtype=dtype)]
    if pipeline == "rasterize":
        grads.append(torch.rand(*shape, generator=gen, dtype=dtype))
    return [g.to(device) for g in grads]


# --------------------------------------------------------------------------------------------------
# Variants

def is_peer(variant: str) -> bool:
    return variant in PEERS


def op_backend(op: str, variant: str, device) -> str | None:
    """The backend to request for ``op`` in ``variant``'s pipeline: the variant itself where it implements
    that op here, otherwise None (voxrender's automatic choice: interpolate has a torch implementation only)."""
    try:
        reasons = vr.available_backends(device, op=op)[variant]
    except (KeyError, TypeError):
        return None
    return None if reasons else variant


def skip_reason(variant: str, case: Case, pipeline: str, device, dtype=torch.float32,
                torch_budget: float = TORCH_BUDGET) -> str | None:
    """Why ``variant`` does not run this case here (None: it runs). Reasons are voxrender's own (backend
    availability), the peers' (not installed, no such op), or the brute-force budget."""
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        return "GPU benchmark: torch.cuda.is_available() is False"
    if pipeline != "rasterize" and not hasattr(vr, "antialias"):
        return "voxrender.antialias is not available in this build yet"
    if is_peer(variant):
        import peers
        return peers.skip_reason(variant, device, pipeline, case)
    reasons = vr.available_backends(device, dtype, op="rasterize")[variant]
    if reasons:
        return f"backend {variant!r} unavailable on {device}: " + "; ".join(reasons)
    if variant == "torch" and case.brute_force_cost > torch_budget:
        return (f"torch is the O(F x H x W) brute force: {case.brute_force_cost:.2g} face-pixels > budget "
                f"{torch_budget:.2g}")
    return None


def render(variant: str, inputs: dict, pipeline: str, verts=None, colors=None):
    """One forward pass of a voxrender variant: Fragments (``rasterize``) or the image (B, H, W, 3)."""
    verts = inputs["verts"] if verts is None else verts
    colors = inputs["colors"] if colors is None else colors
    case, faces, device = inputs["case"], inputs["faces"], inputs["verts"].device
    frags = vr.rasterize(verts, faces, case.image, backend=variant)
    if pipeline == "rasterize":
        return frags
    image = vr.interpolate(colors, frags, faces, backend=op_backend("interpolate", variant, device))
    kwargs = {"adjacency": inputs["adjacency"]} if "adjacency" in inputs else {}
    return vr.antialias(image, frags, verts, faces, backend=op_backend("antialias", variant, device), **kwargs)


def face_ids(variant: str, inputs: dict) -> torch.Tensor:
    """(B, H, W) int64 visible face per pixel (-1: background), for the like-for-like coverage check."""
    if is_peer(variant):
        import peers
        return peers.face_ids(variant, inputs)
    with torch.no_grad():
        return vr.rasterize(inputs["verts"], inputs["faces"], inputs["case"].image, backend=variant).face_id.long()


def make_step(variant: str, inputs: dict, pipeline: str, pass_: str, sync: bool = True):
    """The timed callable: one forward (and backward) pass, synchronised on CUDA when ``sync``.

    fwd+bwd: the inputs that need gradients (the clip-space vertices, and the colours in the pipeline)
    are detached copies made once, outside the callable; ``torch.autograd.grad`` with fixed random
    upstream gradients (nothing accumulates in .grad). Returns the outputs (and the gradients).
    """
    if pipeline not in PIPELINES:
        raise ValueError(f"pipeline: expected one of {PIPELINES}, got {pipeline!r}")
    if pass_ not in PASSES:
        raise ValueError(f"pass: expected one of {PASSES}, got {pass_!r}")
    device = inputs["verts"].device
    do_sync = sync and device.type == "cuda"
    if is_peer(variant):
        import peers
        forward = peers.make_forward(variant, inputs, pipeline)
    else:
        if pipeline != "rasterize":
            _prepare_pipeline(inputs)

        def forward(verts, colors):
            out = render(variant, inputs, pipeline, verts, colors)
            return [out.bary, out.depth] if pipeline == "rasterize" else [out]

    if pass_ == "fwd":
        verts, colors = inputs["verts"], inputs["colors"]

        def step():
            with torch.no_grad():
                out = forward(verts, colors)
            if do_sync:
                torch.cuda.synchronize()
            return out
        return step

    verts = inputs["verts"].detach().clone().requires_grad_(True)
    colors = inputs["colors"].detach().clone().requires_grad_(pipeline != "rasterize")
    wrt = [verts] + ([colors] if pipeline != "rasterize" else [])
    grads_out = upstream_grads(inputs["case"], pipeline, device, inputs["verts"].dtype)
    if is_peer(variant):
        grads_out = peers.native_grads(variant, pipeline, grads_out)

    def step():
        out = forward(verts, colors)
        grads = torch.autograd.grad(out, wrt, grads_out)
        if do_sync:
            torch.cuda.synchronize()
        return out, grads

    return step


# --------------------------------------------------------------------------------------------------
# Checks

def coverage_agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fraction of pixels where two (B, H, W) face-id images agree exactly (same face, or both background)."""
    return (a.long() == b.long()).double().mean().item()


def sphere_check(case: Case, face_id: torch.Tensor, depth: torch.Tensor, margin_px: float = 1.5,
                 depth_tol: float = 2e-3) -> dict:
    """Checks a sphere scene against the analytic sphere: a dropped face (an overflowing bin, a size cap)
    shows as a background pixel inside the silhouette, or as the far side showing through (wrong depth).

    Pixels whose ray is more than ``margin_px`` pixels (in angle) inside the silhouette cone must be
    covered, those more than ``margin_px`` outside must be background, and within 90% of the silhouette's
    angle the depth must be the front surface's NDC depth (to ``depth_tol``; the polygonal sphere lies
    inside the true one by about (edge angle)^2 / 8, which a level-8 sphere keeps under 1e-5). Returns
    the counts of violations and of the pixels checked.
    """
    if SCENES[case.scene].kind != "sphere":
        raise ValueError(f"sphere_check: {case.scene} is not a sphere scene")
    B, H, W = face_id.shape
    K = intrinsics(case.image, torch.float64)
    v, u = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij")
    ray = torch.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], torch.ones_like(u)], -1)
    ray = ray / ray.norm(dim=-1, keepdim=True)
    cos_t = ray[..., 2]
    theta = torch.arccos(cos_t.clamp(max=1.0))
    alpha = math.asin(1.0 / DISTANCE)  # unit sphere centred DISTANCE ahead (rotations keep the centre)
    margin = margin_px / K[0, 0].item()  # about one pixel's angle near the axis
    inside, outside = theta < alpha - margin, theta > alpha + margin
    # Front intersection along the unit ray: t = d cos(theta) - sqrt(1 - d^2 sin^2(theta)); camera z = t cos(theta).
    disc = (1.0 - DISTANCE ** 2 * torch.sin(theta) ** 2).clamp(min=0)
    z_cam = (DISTANCE * cos_t - disc.sqrt()) * cos_t
    a, b = (FAR + NEAR) / (FAR - NEAR), 2 * FAR * NEAR / (FAR - NEAR)
    ndc = a - b / z_cam.clamp(min=1e-9)
    fid, dep = face_id.cpu().long(), depth.detach().cpu().double()
    holes = int(((fid < 0) & inside).sum())
    spill = int(((fid >= 0) & outside).sum())
    bad_depth = int((((dep - ndc).abs() > depth_tol) & (theta < 0.9 * alpha) & (fid >= 0)).sum())
    checked = int(inside.sum()) * B
    return {"holes_inside": holes, "covered_outside": spill, "wrong_depth": bad_depth,
            "pixels_inside": checked, "pixels_outside": int(outside.sum()) * B,
            "ok": holes == 0 and spill == 0 and bad_depth == 0}


def floor_bytes(case: Case, pipeline: str, pass_: str, itemsize: int = 4) -> int:
    """Memory-bandwidth floor of a pass, in bytes moved (see README.md, "Rasterization"): read the vertices
    and faces once, write face_id + bary + depth (and the colour, interpolated and antialiased image); the
    backward reads the upstream gradients and face ids and writes the vertex (and colour) gradients."""
    B, P, F = case.batch, case.image ** 2, case.n_faces
    V = F // 2 + 2  # closed sphere (F/2 + 2 verts) or grid (about F/2): the same to a few percent
    geometry = B * V * 4 * itemsize + F * 3 * 4
    frags = B * P * (4 + 3 * itemsize + itemsize)
    fwd = geometry + frags
    if pipeline != "rasterize":
        fwd += V * 3 * itemsize + 2 * B * P * 3 * itemsize  # colours; image written by interp, re-read + written by AA
    if pass_ == "fwd":
        return fwd
    if pipeline == "rasterize":
        bwd = B * P * (4 * itemsize + 4) + B * V * 4 * itemsize
    else:
        bwd = B * P * (3 * itemsize + 4) + B * V * 4 * itemsize + V * 3 * itemsize
    return fwd + bwd
