"""The torch reference against the spec's exact identities (it is the oracle for every other backend)."""

import math

import pytest
import torch

import voxrender as vr

F64 = torch.float64


def rand(*shape, seed=0):
    return torch.rand(*shape, dtype=F64, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("backend", ["torch", "cpu"])
@pytest.mark.parametrize("shape", [(2, 8, 8, 8), (3, 5, 7, 9)])
def test_identity_view_sum_and_absorption(backend, shape):
    from vr_testing import backend_or_skip

    backend_or_skip(backend, dtype=F64)
    d = rand(*shape)
    tau = 0.37
    s = vr.project_volume(d, mode="sum", tau=tau, backend=backend)
    a = vr.project_volume(d, mode="absorption", tau=tau, backend=backend)
    m = vr.project_volume(d, mode="max", backend=backend)
    assert s.shape == (shape[0], 1, shape[2], shape[3])
    torch.testing.assert_close(s[:, 0], tau * d.sum(1), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(a[:, 0], 1 - torch.exp(-tau * d.sum(1)), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(m[:, 0], d.amax(1), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", ["torch", "cpu"])
def test_azimuth_90_degrees_sums_along_w(backend):
    from vr_testing import backend_or_skip

    backend_or_skip(backend, dtype=F64)
    d = rand(2, 6, 6, 6, seed=1)
    img = vr.project_volume(d, azimuth=math.pi / 2, mode="sum", tau=1.5, backend=backend)[:, 0]
    # image[i, j] = tau * sum over w of density[d = j, h = i, w]
    expected = 1.5 * d.sum(3).transpose(1, 2)
    torch.testing.assert_close(img, expected, rtol=1e-12, atol=1e-12)


def test_rotation_argument_equals_angles():
    d = rand(2, 5, 6, 7, seed=2)
    az, el = rand(2, seed=3) * 6, rand(2, seed=4) - 0.5
    r = vr.rotation_from_angles(az, el)
    expected = vr.rotation_x(el) @ vr.rotation_y(az)
    torch.testing.assert_close(r, expected)
    a = vr.project_volume(d, azimuth=az, elevation=el, backend="torch")
    b = vr.project_volume(d, r, backend="torch")
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_rotation_matrices_follow_the_spec():
    t = torch.tensor([0.3], dtype=F64)
    c, s = math.cos(0.3), math.sin(0.3)
    torch.testing.assert_close(vr.rotation_y(t)[0], torch.tensor([[c, 0, s], [0, 1, 0], [-s, 0, c]], dtype=F64))
    torch.testing.assert_close(vr.rotation_x(t)[0], torch.tensor([[1, 0, 0], [0, c, -s], [0, s, c]], dtype=F64))


def test_emission_absorption_identities():
    d = rand(2, 8, 5, 6, seed=5)
    colour = torch.full((2, 3, 8, 5, 6), 0.25, dtype=F64)
    colour[:, 1] = 0.5
    out = vr.project_volume(d, features=colour, mode="emission_absorption", tau=0.8, backend="torch")
    alpha = out[:, 3]
    # Opacity is the absorption image.
    torch.testing.assert_close(alpha, vr.project_volume(d, mode="absorption", tau=0.8, backend="torch")[:, 0])
    # A constant colour c composites to c * opacity; a background b adds (1 - opacity) * b.
    torch.testing.assert_close(out[:, 0], 0.25 * alpha)
    torch.testing.assert_close(out[:, 1], 0.5 * alpha)
    bg = torch.tensor([1.0, 0.0, 2.0], dtype=F64)
    with_bg = vr.project_volume(d, features=colour, mode="emission_absorption", tau=0.8, background=bg, backend="torch")
    torch.testing.assert_close(with_bg[:, 2], 0.25 * alpha + 2.0 * (1 - alpha))
    torch.testing.assert_close(with_bg[:, 3], alpha)


def test_emission_absorption_opaque_front_voxel_wins():
    # A very dense first slice hides everything behind it: the image is its colour.
    d = torch.zeros(1, 4, 3, 3, dtype=F64)
    d[:, 0] = 1e3
    d[:, 2] = 1.0
    feat = rand(1, 2, 4, 3, 3, seed=6)
    out = vr.project_volume(d, features=feat, mode="emission_absorption", backend="torch")
    torch.testing.assert_close(out[0, :2], feat[0, :, 0], rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(out[0, 2], torch.ones(3, 3, dtype=F64))


def test_exclusive_transmittance_two_samples():
    # Two samples along each ray (K = D = 2): colour = a0 c0 + (1 - a0) a1 c1.
    d = rand(1, 2, 1, 1, seed=7)
    feat = rand(1, 1, 2, 1, 1, seed=8)
    tau = 0.9
    out = vr.project_volume(d, features=feat, mode="emission_absorption", tau=tau, backend="torch")
    a0, a1 = 1 - torch.exp(-tau * d[0, 0, 0, 0]), 1 - torch.exp(-tau * d[0, 1, 0, 0])
    expected = a0 * feat[0, 0, 0, 0, 0] + (1 - a0) * a1 * feat[0, 0, 1, 0, 0]
    torch.testing.assert_close(out[0, 0, 0, 0], expected)


def test_step_length_scales_with_samples_and_extent():
    d = rand(1, 8, 8, 8, seed=9)
    # Twice the samples over the same range halve delta: the sum is unchanged up to the sampling.
    dense = vr.project_volume(d, mode="sum", n_samples=16, backend="torch")
    coarse = vr.project_volume(d, mode="sum", n_samples=8, backend="torch")
    # Samples of the dense ray between the voxel centres average neighbouring voxels: sums agree
    # except for the half-voxel at each end, so compare on a volume padded by zero slices.
    dp = torch.zeros(1, 10, 8, 8, dtype=F64)
    dp[:, 1:9] = d
    a = vr.project_volume(dp, mode="sum", n_samples=20, backend="torch")
    b = vr.project_volume(dp, mode="sum", n_samples=10, backend="torch")
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert dense.shape == coarse.shape


def test_perspective_is_symmetric_for_a_symmetric_volume():
    d = rand(1, 6, 6, 6, seed=10)
    d = d + d.flip(3)  # mirror-symmetric in x
    img = vr.project_volume(d, projection="perspective", image_size=(7, 9), n_samples=13, backend="torch")
    torch.testing.assert_close(img, img.flip(3), rtol=1e-12, atol=1e-12)
    # A point-like blob in the centre shows up in the centre pixel.
    blob = torch.zeros(1, 5, 5, 5, dtype=F64)
    blob[0, 2, 2, 2] = 1.0
    img = vr.project_volume(blob, projection="perspective", image_size=5, n_samples=50, backend="torch")[0, 0]
    assert img.argmax().item() == 12


def test_perspective_magnifies_the_near_side():
    # Two equal slabs, one at the front (small z) and one at the back; the near one covers more pixels.
    front = torch.zeros(1, 8, 8, 8, dtype=F64)
    front[0, 1, 2:6, 2:6] = 1.0
    back = front.flip(1)
    kw = dict(projection="perspective", distance=2.5, image_size=32, n_samples=64, mode="max", backend="torch")
    near = (vr.project_volume(front, **kw) > 0.5).sum()
    far = (vr.project_volume(back, **kw) > 0.5).sum()
    assert near > far
