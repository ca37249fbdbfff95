"""The ``voxrender`` command line (also ``python -m voxrender``)."""

from __future__ import annotations

import argparse
import math
import platform
import sys
from importlib import metadata


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def cmd_info(args) -> int:
    import torch

    import voxrender
    from voxrender import backends

    print(f"voxrender {voxrender.__version__}  ({voxrender.__file__})")
    print(f"python    {platform.python_version()}  {platform.machine()} {platform.system()}")
    print(f"torch     {torch.__version__}  (CUDA {torch.version.cuda or 'none'})")
    print(f"triton    {_version('triton')}")
    print(f"numpy     {_version('numpy')}")
    ext, why = backends.extension_status()
    if ext is None:
        print(f"extension not available: {why}")
    else:
        kind = "CPU + CUDA" if ext.with_cuda() else "CPU only"
        print(f"extension voxrender._C built ({kind}, against torch {ext.torch_version()}; "
              f"CPU kernels: {ext.cpu_isa()})")
    cuda = torch.cuda.is_available()
    print(f"CUDA device: {torch.cuda.get_device_name(0) if cuda else 'none'}")
    print(f"TRITON_INTERPRET={'1' if backends.triton_interpret() else '0'}  "
          f"{backends.ENV_VAR}={__import__('os').environ.get(backends.ENV_VAR, '') or '(unset)'}")
    print()
    devices = ["cpu"] + (["cuda"] if cuda else [])
    for op in backends.IMPLEMENTED:
        for dev in devices:
            d = torch.device(dev)
            try:
                chosen = backends.select_backend(op, d, torch.float32)
            except (RuntimeError, ValueError) as e:
                chosen = f"error: {e}"
            print(f"{op} on {dev}: uses {chosen}")
            for name, reasons in backends.available_backends(d, op=op).items():
                state = "available" if not reasons else "unavailable: " + "; ".join(reasons)
                print(f"    {name:7s} {state}")
    if not cuda:
        print("(no CUDA device here: the cuda and triton backends are listed for CPU tensors only)")
    return 0


def cmd_render_modes(args) -> int:
    """Renders the built-in scene in the four modes (a PNG) and a turntable (a GIF)."""
    import torch

    import voxrender as vr
    from voxrender.data import demo_scene
    from voxrender.io import image_grid, save_gif, save_png

    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is optional: plain iteration without a bar
        def tqdm(x, **_):
            return x

    dens, colour = demo_scene(args.size)
    dens, colour = dens[None], colour[None]
    kw = dict(backend=args.backend)
    az = torch.tensor([math.radians(35.0)])
    el = torch.tensor([math.radians(-20.0)])
    tiles = [
        vr.project_volume(dens, azimuth=az, elevation=el, mode="absorption", tau=0.06, **kw)[0],
        vr.project_volume(dens, azimuth=az, elevation=el, mode="sum", tau=1.5 / args.size, **kw)[0],
        vr.project_volume(dens, azimuth=az, elevation=el, mode="max", **kw)[0],
        vr.project_volume(dens * 0.5, azimuth=az, elevation=el, mode="emission_absorption", features=colour,
                          background=1.0, **kw)[0, :3],
    ]
    grid = save_png(image_grid(tiles, ncol=4, scale=args.scale), f"{args.out}/modes.png")
    print(f"wrote {grid}  (absorption | sum | max | emission_absorption)")
    frames = []
    for k in tqdm(range(args.frames), desc="turntable", unit="frame"):
        a = torch.tensor([2 * math.pi * k / args.frames])
        img = vr.project_volume(dens * 0.5, azimuth=a, elevation=el, mode="emission_absorption", features=colour,
                                background=1.0, projection="perspective", **kw)[0, :3]
        frames.append(image_grid([img], 1, pad=0, scale=args.scale))
    gif = save_gif(frames, f"{args.out}/turntable.gif")
    print(f"wrote {gif}  ({args.frames} frames, perspective emission_absorption)")
    return 0


def demo_mesh(level: int = 5):
    """The built-in mesh of ``render-mesh``: an icosphere whose radius follows twisted ridges,
    r = 1 + 0.18 cos(6 azimuth + 3 latitude) cos(latitude)^2, in the library's frame (y down, so the
    latitude is measured towards -y). (verts (V, 3) float32, faces (F, 3) int64), outward-wound."""
    import torch

    from voxrender.data.meshes import icosphere

    v, f = icosphere(level, dtype=torch.float64)
    x, y, z = v.unbind(-1)
    azimuth, latitude = torch.atan2(z, x), torch.asin((-y).clamp(-1, 1))
    r = 1 + 0.18 * torch.cos(6 * azimuth + 3 * latitude) * torch.cos(latitude) ** 2
    return (v * r[:, None]).float(), f


# File meshes' up axis -> the library's frame (up = -y), as proper rotations (x is kept).
_UP_AXIS = {"+y": ((1, 0, 0), (0, -1, 0), (0, 0, -1)), "-y": ((1, 0, 0), (0, 1, 0), (0, 0, 1)),
            "+z": ((1, 0, 0), (0, 0, -1), (0, 1, 0)), "-z": ((1, 0, 0), (0, 0, 1), (0, -1, 0))}


def cmd_render_mesh(args) -> int:
    """Renders a mesh shaded and as a colour-mapped depth map, side by side (a PNG)."""
    import torch

    import voxrender as vr
    from voxrender.io import colorize, image_grid, save_png
    from voxrender.mesh_io import load_mesh, normalize_verts

    if args.size < 1:
        raise SystemExit(f"voxrender render-mesh: error: --size must be positive, got {args.size}")
    if args.mesh is None:
        verts, faces = demo_mesh()
        name = "built-in twisted ball"
    else:
        try:
            verts, faces = load_mesh(args.mesh)
        except (OSError, ValueError) as e:
            raise SystemExit(f"voxrender render-mesh: error: {e}") from None
        verts = verts @ torch.tensor(_UP_AXIS[args.up], dtype=verts.dtype).T
        name = args.mesh
    verts = normalize_verts(verts)  # centred, farthest vertex at distance 1
    size = (args.size, args.size)
    R = vr.rotation_from_angles(torch.tensor([math.radians(args.azimuth)]),
                                torch.tensor([math.radians(args.elevation)]))
    t = torch.tensor([0.0, 0.0, args.distance])
    K = vr.intrinsics_from_fov(args.fov, size)
    img = vr.render_mesh(verts, faces, R=R, t=t, K=K, image_size=size, backend=args.backend)[0]
    depth = vr.render_depth(vr.transform_points(verts[None], R, t), faces, K, size, background=float("nan"),
                            backend=args.backend)[0]
    covered = torch.isfinite(depth)
    tiles = [img.permute(2, 0, 1), colorize(depth, covered)]
    path = save_png(image_grid(tiles, ncol=2, scale=args.scale), f"{args.out}/mesh.png")
    lo, hi = (float(depth[covered].min()), float(depth[covered].max())) if covered.any() else (math.nan, math.nan)
    print(f"wrote {path}  ({name}: {len(verts)} vertices, {len(faces)} triangles; shaded | depth "
          f"{lo:.3f} (light) .. {hi:.3f} (dark), camera distance {args.distance:g})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="voxrender",
        description="Fast differentiable voxel projection for PyTorch. Run a subcommand with --help for its options.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    info = sub.add_parser("info", help="versions, what was built, and which backend each op uses per device")
    info.set_defaults(fn=cmd_info)
    rm = sub.add_parser(
        "render-modes",
        help="render the built-in scene in the four projection modes (PNG) and as a turntable (GIF)",
        description="Renders the built-in procedural scene (a torus, a box on a post and a ball) with "
                    "project_volume in the modes absorption, sum, max and emission_absorption side by side "
                    "(modes.png) and a perspective emission-absorption turntable (turntable.gif).",
    )
    rm.add_argument("--out", default="voxrender-demo", help="output folder (default: voxrender-demo)")
    rm.add_argument("--size", type=int, default=64, help="grid size N of the N^3 scene and the image (default 64)")
    rm.add_argument("--frames", type=int, default=36, help="turntable frames (default 36)")
    rm.add_argument("--scale", type=int, default=2, help="pixel upscaling of the pictures (default 2)")
    rm.add_argument("--backend", default=None, choices=["torch", "cpu", "cuda", "triton"],
                    help="force a backend (default: automatic, see `voxrender info`)")
    rm.set_defaults(fn=cmd_render_modes)
    mesh = sub.add_parser(
        "render-mesh",
        help="render a triangle mesh (OBJ/OFF, or a built-in one) shaded and as a depth map (PNG)",
        description="Rasterizes a mesh with voxrender.render_mesh (Lambertian shading, smooth normals) and "
                    "voxrender.render_depth (the z-buffer, colour-mapped: light = near, dark = far) and "
                    "writes them side by side to OUT/mesh.png. The mesh is centred and scaled to fit the unit "
                    "sphere; the camera looks at its centre from --distance along +z (y down, image row 0 "
                    "is the top).",
    )
    mesh.add_argument("--mesh", default=None, metavar="PATH",
                      help="a .obj or .off file (default: a built-in procedural mesh, an icosphere with "
                           "twisted ridges)")
    mesh.add_argument("--up", default="+y", choices=sorted(_UP_AXIS),
                      help="the file's up axis (default +y, the OBJ convention; ModelNet40's .off files are +z)")
    mesh.add_argument("--size", type=int, default=256, help="image height and width in pixels (default 256)")
    mesh.add_argument("--out", default="voxrender-demo", help="output folder (default: voxrender-demo)")
    mesh.add_argument("--azimuth", type=float, default=30.0, help="rotation about the vertical axis, degrees "
                                                                  "(default 30)")
    mesh.add_argument("--elevation", type=float, default=20.0,
                      help="rotation about the horizontal axis, degrees; positive looks down on the mesh from "
                           "above, negative from below (default 20)")
    mesh.add_argument("--distance", type=float, default=4.0, help="camera distance from the centre (default 4)")
    mesh.add_argument("--fov", type=float, default=40.0, help="vertical field of view, degrees (default 40)")
    mesh.add_argument("--scale", type=int, default=1, help="pixel upscaling of the picture (default 1)")
    mesh.add_argument("--backend", default=None, choices=["torch", "cpu", "cuda", "triton"],
                      help="force a rasterization backend (default: automatic, see `voxrender info`)")
    mesh.set_defaults(fn=cmd_render_mesh)
    from .model_cli import add_model_commands  # demo, train, eval, sample (the bundled models)

    add_model_commands(sub)
    from .models.gan2shape.cli import add_gan2shape_commands  # gan2shape, eval-gan2shape

    add_gan2shape_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
