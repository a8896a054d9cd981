"""Renderer, ray sampler, ray marcher and camera utilities: EG3D goldens, closed-form geometry, pickled-state restore."""

import math
import pickle

import numpy as np
import pytest
import torch

from tests.helpers.pickles import eg3d_module_state, unpickle_like
from training import camera_utils
from training.volumetric_rendering import math_utils
from training.volumetric_rendering.ray_marcher import MipRayMarcher2
from training.volumetric_rendering.ray_sampler import RaySampler
from training.volumetric_rendering.renderer import ImportanceRenderer, generate_planes, project_onto_planes, sample_from_planes

#----------------------------------------------------------------------------
# Helpers.

def max_rel_err(a, b):
    return ((a - b).abs() / b.abs().clamp_min(1e-6)).max().item()


class MeanDecoder(torch.nn.Module):
    """Toy decoder: averages the three planes; channels [0:3] are colour, channel 3 is raw density."""
    def forward(self, sampled_features, ray_directions):
        x = sampled_features.mean(1)
        return {'rgb': x[..., :3], 'sigma': x[..., 3:4]}


def frontal_rays(resolution=8, radius=2.7):
    """Rays of a camera at (0, 0, radius) looking at the origin, FFHQ focal length."""
    c2w = camera_utils.LookAtPoseSampler.sample(math.pi / 2, math.pi / 2, torch.zeros(3), radius=radius)
    K = camera_utils.FOV_to_intrinsics(18.837).unsqueeze(0)
    return RaySampler()(c2w, K, resolution)


def render_options(**kwargs):
    opts = dict(ray_start=2.2, ray_end=3.2, box_warp=2, depth_resolution=16, depth_resolution_importance=16,
                disparity_space_sampling=False, clamp_mode='softplus')
    opts.update(kwargs)
    return opts

#----------------------------------------------------------------------------
# Ray sampler.

def test_ray_sampler_matches_golden(golden):
    c = golden['inputs']['c']
    origins, dirs = RaySampler()(c[:, :16].view(-1, 4, 4), c[:, 16:25].view(-1, 3, 3), 16)
    ref_o, ref_d = golden['outputs']['ray_origins16'], golden['outputs']['ray_dirs16']
    torch.testing.assert_close(origins, ref_o, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(dirs, ref_d, rtol=1e-5, atol=1e-6)


def test_ray_sampler_pinhole_geometry():
    # Identity pose: the ray through pixel (row i, column j) is parallel to ((u - cx) / fx, (v - cy) / fy, 1).
    res, fx, fy, cx, cy = 6, 1.3, 1.7, 0.45, 0.55
    K = torch.tensor([[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]])
    origins, dirs = RaySampler()(torch.eye(4)[None], K, res)
    i, j = np.meshgrid(np.arange(res), np.arange(res), indexing='ij')
    d = np.stack([((j + 0.5) / res - cx) / fx, ((i + 0.5) / res - cy) / fy, np.ones_like(i, dtype=float)], -1).reshape(-1, 3)
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    np.testing.assert_allclose(dirs[0].numpy(), d, atol=1e-6)
    assert torch.all(origins == 0)

#----------------------------------------------------------------------------
# Tri-plane sampling.

def test_planes_are_xy_xz_zx():
    pts = torch.randn(2, 5, 3)
    proj = project_onto_planes(generate_planes(), pts).reshape(2, 3, 5, 2)
    torch.testing.assert_close(proj[:, 0], pts[..., [0, 1]])
    torch.testing.assert_close(proj[:, 1], pts[..., [0, 2]])
    torch.testing.assert_close(proj[:, 2], pts[..., [2, 0]])


def test_sample_from_planes_reproduces_linear_ramps():
    # Each plane stores its own texel-centre coordinates (width axis in channel 0, height axis in channel 1);
    # bilinear sampling must give back the point's in-plane coordinates scaled by 2 / box_warp.
    res, box = 8, 1.6
    centers = (torch.arange(res) + 0.5) / res * 2 - 1
    ramp = torch.stack([centers[None, :].expand(res, res), centers[:, None].expand(res, res)])
    planes = ramp[None, None].repeat(1, 3, 1, 1, 1)
    pts = (torch.rand(1, 50, 3) * 2 - 1) * (box / 2) * (1 - 1 / res)
    out = sample_from_planes(generate_planes(), planes, pts, box_warp=box)
    q = pts[0] * (2 / box)
    for plane, axes in enumerate([[0, 1], [0, 2], [2, 0]]):
        torch.testing.assert_close(out[0, plane], q[:, axes], atol=1e-6, rtol=0)

#----------------------------------------------------------------------------
# Ray/box intersection.

def test_ray_limits_box_hits_surface_and_misses_cleanly():
    gen = torch.Generator().manual_seed(0)
    o = torch.randn(400, 3, generator=gen) * 1.5
    d = torch.nn.functional.normalize(torch.randn(400, 3, generator=gen), dim=-1)
    half = 0.8
    t0, t1 = math_utils.get_ray_limits_box(o, d, box_side_length=2 * half)
    t0, t1 = t0[:, 0], t1[:, 0]
    hit = t1 > t0
    assert hit.any() and (~hit).any()
    # Hits: both ends lie on the box surface, the midpoint inside.
    for t in (t0[hit], t1[hit]):
        p = o[hit] + t[:, None] * d[hit]
        torch.testing.assert_close(p.abs().amax(-1), torch.full_like(t, half), atol=1e-5, rtol=0)
    mid = o[hit] + ((t0[hit] + t1[hit]) / 2)[:, None] * d[hit]
    assert torch.all(mid.abs().amax(-1) < half)
    # Misses: marked -1 / -2, and no point of the line comes inside the box.
    assert torch.all(t0[~hit] == -1) and torch.all(t1[~hit] == -2)
    ts = torch.linspace(-10, 10, 4001)
    line = o[~hit, None] + ts[None, :, None] * d[~hit, None]
    assert torch.all(line.abs().amax(-1) > half - 1e-6)


def test_linspace_per_element():
    start, stop = torch.tensor([[0.0], [2.0]]), torch.tensor([[1.0], [5.0]])
    out = math_utils.linspace(start, stop, 4)
    assert out.shape == (4, 2, 1)
    torch.testing.assert_close(out[:, 1, 0], torch.tensor([2.0, 3.0, 4.0, 5.0]))

#----------------------------------------------------------------------------
# Ray marcher.

def test_ray_marcher_matches_hand_computed_three_samples():
    depths = torch.tensor([1.0, 1.5, 2.5]).reshape(1, 1, 3, 1)
    sigma = torch.tensor([0.3, 2.0, -1.0]).reshape(1, 1, 3, 1)
    colors = torch.tensor([[0.1, 0.2], [0.5, 0.9], [0.7, 0.3]]).reshape(1, 1, 3, 2)
    rgb, depth, weights = MipRayMarcher2()(colors, sigma, depths, {'clamp_mode': 'softplus'})
    softplus = lambda x: math.log1p(math.exp(x))
    a0 = 1 - math.exp(-softplus((0.3 + 2.0) / 2 - 1) * 0.5)
    a1 = 1 - math.exp(-softplus((2.0 - 1.0) / 2 - 1) * 1.0)
    w = [a0, a1 * (1 - a0 + 1e-10)]
    torch.testing.assert_close(weights.flatten(), torch.tensor(w))
    expect_rgb = [2 * (w[0] * 0.3 + w[1] * 0.6) - 1, 2 * (w[0] * 0.55 + w[1] * 0.6) - 1]
    torch.testing.assert_close(rgb.flatten(), torch.tensor(expect_rgb))
    torch.testing.assert_close(depth.flatten(), torch.tensor([(w[0] * 1.25 + w[1] * 2.0) / (w[0] + w[1])]))


def test_ray_marcher_opaque_wall_and_empty_space():
    depths = torch.linspace(1, 2, 11).reshape(1, 1, 11, 1).repeat(1, 2, 1, 1)
    colors = torch.full((1, 2, 11, 3), 0.25)
    sigma = torch.full((1, 2, 11, 1), -60.0)
    sigma[0, 0, 6:] = 60.0 # Wall from depth 1.6 on the first ray; the second ray is empty.
    rgb, depth, weights = MipRayMarcher2()(colors, sigma, depths, {'clamp_mode': 'softplus', 'white_back': True})
    assert 1.6 < depth[0, 0].item() < 1.66 # Mostly the interval [1.6, 1.7]; the mixed one before it takes ~3%.
    torch.testing.assert_close(rgb[0, 0], torch.full((3,), -0.5), atol=1e-5, rtol=0)
    assert weights[0, 1].sum() < 1e-20
    torch.testing.assert_close(rgb[0, 1], torch.ones(3)) # White background.
    assert 1.0 <= depth[0, 1].item() <= 2.0 # Clamped into the sampled range.

#----------------------------------------------------------------------------
# Sample placement.

def test_sample_pdf_single_bin_and_uniform():
    r = ImportanceRenderer()
    torch.manual_seed(0)
    bins = torch.linspace(0, 4, 5)[None].repeat(3, 1)
    peaked = torch.tensor([[0, 0, 1.0, 0]]).repeat(3, 1)
    s = r.sample_pdf(bins, peaked, 64)
    assert torch.all((s >= 2 - 1e-3) & (s <= 3 + 1e-3))
    s = r.sample_pdf(bins, torch.ones(3, 4), 9, det=True)
    torch.testing.assert_close(s, torch.linspace(0, 4, 9)[None].repeat(3, 1), atol=1e-5, rtol=0)


def test_stratified_with_pinned_rand_is_bin_centres(pinned_rand):
    r = ImportanceRenderer()
    d = r.sample_stratified(torch.zeros(1, 2, 3), 2.0, 3.0, 5)
    torch.testing.assert_close(d[0, 0, :, 0], torch.tensor([2.125, 2.375, 2.625, 2.875, 3.125]))
    start, end = torch.tensor([[[1.0], [0.0]]]), torch.tensor([[[2.0], [4.0]]])
    d = r.sample_stratified(torch.zeros(1, 2, 3), start, end, 5)
    torch.testing.assert_close(d[0, 1, :, 0], torch.tensor([0.5, 1.5, 2.5, 3.5, 4.5]))


def test_auto_limits_handle_rays_that_miss_the_box(monkeypatch, pinned_rand):
    r = ImportanceRenderer()
    seen = {}
    original = r.sample_stratified
    def spy(ray_origins, ray_start, ray_end, *args):
        seen['start'], seen['end'] = ray_start.clone(), ray_end.clone()
        return original(ray_origins, ray_start, ray_end, *args)
    monkeypatch.setattr(r, 'sample_stratified', spy)
    o, d = frontal_rays(8)
    d = d.clone()
    d[0, :5] = torch.tensor([1.0, 0.0, 0.0]) # Five rays parallel to the box, outside it.
    planes = torch.zeros(1, 3, 4, 8, 8)
    r(planes, MeanDecoder(), o, d, render_options(ray_start='auto', ray_end='auto', box_warp=1.6))
    start, end = seen['start'][0, :, 0], seen['end'][0, :, 0]
    valid_start = start[5:]
    assert torch.all(end[5:] > valid_start)
    torch.testing.assert_close(valid_start, torch.full_like(valid_start, 2.7 - 0.8), atol=0.03, rtol=0)
    # EG3D's rule: missed rays start at the smallest valid start and end at the largest valid *start*.
    assert torch.all(start[:5] == valid_start.min()) and torch.all(end[:5] == valid_start.max())

#----------------------------------------------------------------------------
# Whole renderer.

@pytest.mark.parametrize('n_importance', [0, 16])
def test_renderer_constant_medium_matches_closed_form(n_importance, pinned_rand):
    # Constant features inside the box: colour c, raw density s. Opacity over the sampled span L is
    # 1 - exp(-softplus(s - 1) * L), and the composited colour is c * opacity (scaled to [-1, 1]).
    o, d = frontal_rays(8)
    planes = torch.tensor([0.2, 0.4, 0.6, 1.5]).reshape(1, 1, 4, 1, 1).repeat(1, 3, 1, 16, 16)
    opts = render_options(depth_resolution_importance=n_importance)
    rgb, depth, opacity = ImportanceRenderer()(planes, MeanDecoder(), o, d, opts)
    delta = (3.2 - 2.2) / 15
    span = 15 * delta # Jittered samples run from 2.2 + delta/2 to 3.2 + delta/2.
    expect = 1 - math.exp(-math.log1p(math.exp(0.5)) * span)
    torch.testing.assert_close(opacity, torch.full_like(opacity, expect), atol=1e-5, rtol=0)
    torch.testing.assert_close(rgb, (torch.tensor([0.2, 0.4, 0.6]) * expect * 2 - 1).expand_as(rgb), atol=1e-5, rtol=0)
    assert torch.all((depth > 2.2) & (depth < 3.3))


def test_renderer_restored_from_eg3d_state(pinned_rand):
    marcher = unpickle_like(MipRayMarcher2, eg3d_module_state({}))
    restored = unpickle_like(ImportanceRenderer, eg3d_module_state({'ray_marcher': marcher}, plane_axes=generate_planes()))
    sampler_attrs = dict.fromkeys(['ray_origins_h', 'ray_directions', 'depths', 'image_coords', 'rendering_options'])
    sampler = unpickle_like(RaySampler, eg3d_module_state({}, **sampler_attrs))
    c2w = camera_utils.LookAtPoseSampler.sample(1.4, 1.7, torch.zeros(3), radius=2.7)
    K = camera_utils.FOV_to_intrinsics(18.837)[None]
    o, d = sampler(c2w, K, 8)
    torch.testing.assert_close(torch.cat([o, d]), torch.cat(RaySampler()(c2w, K, 8)), rtol=0, atol=0)

    planes = torch.randn(1, 3, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    for opts in [render_options(), render_options(ray_start='auto', ray_end='auto', box_warp=1.6, white_back=True)]:
        ref = ImportanceRenderer()(planes, MeanDecoder(), o, d, opts)
        out = restored(planes, MeanDecoder(), o, d, opts)
        for a, b in zip(out, ref):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    # A plain pickle round trip of our own instance works the same way.
    again = pickle.loads(pickle.dumps(restored))
    torch.testing.assert_close(again(planes, MeanDecoder(), o, d, opts)[0], ref[0], rtol=0, atol=0)
    assert 'plane_axes' not in dict(restored.named_buffers())

#----------------------------------------------------------------------------
# Cameras.

def test_lookat_frontal_pose():
    pivot = torch.tensor([0, 0, 0.2])
    c2w = camera_utils.LookAtPoseSampler.sample(math.pi / 2, math.pi / 2, pivot, radius=2.7)[0]
    # The orbit is centred on the world origin; only the viewing direction uses the pivot.
    torch.testing.assert_close(c2w[:3, 3], torch.tensor([0, 0, 2.7]), atol=1e-6, rtol=0)
    torch.testing.assert_close(c2w[:3, :3], torch.diag(torch.tensor([1.0, -1.0, -1.0])), atol=1e-6, rtol=0)
    torch.testing.assert_close(c2w[3], torch.tensor([0, 0, 0, 1.0]))


def test_lookat_pose_points_at_pivot_and_projects():
    pivot = torch.tensor([0.05, -0.1, 0.2])
    c2w = camera_utils.LookAtPoseSampler.sample(1.3, 1.8, pivot, radius=2.7)
    K = camera_utils.FOV_to_intrinsics(18.837)
    c = camera_utils.camera_label(c2w, K)
    assert c.shape == (1, 25)
    M = c[0, :16].reshape(4, 4).double()
    Kc = c[0, 16:].reshape(3, 3).double()
    torch.testing.assert_close(M[:3, :3] @ M[:3, :3].T, torch.eye(3, dtype=torch.float64), atol=1e-6, rtol=0)
    assert abs(M[:3, 3].norm().item() - 2.7) < 1e-5
    # Pinhole projection with c: the pivot lands on the principal point, an offset point where expected.
    def project(p):
        q = torch.linalg.inv(M) @ torch.cat([p.double(), torch.ones(1, dtype=torch.float64)])
        uvw = Kc @ q[:3]
        return uvw[:2] / uvw[2], q[2]
    uv, depth = project(pivot)
    torch.testing.assert_close(uv, torch.tensor([0.5, 0.5], dtype=torch.float64), atol=1e-6, rtol=0)
    right, down = M[:3, 0], M[:3, 1]
    uv, _ = project(pivot + (0.1 * right + 0.05 * down).float())
    f = Kc[0, 0]
    torch.testing.assert_close(uv, torch.stack([0.5 + f * 0.1 / depth, 0.5 + f * 0.05 / depth]), atol=1e-6, rtol=0)
    # Same point through the ray sampler: the ray of the pixel it falls in passes within half a pixel.
    res = 64
    col, row = int(uv[0] * res), int(uv[1] * res)
    o, d = RaySampler()(c[:, :16].view(-1, 4, 4), c[:, 16:].view(-1, 3, 3), res)
    p = (pivot + 0.1 * right.float() + 0.05 * down.float())
    ray_o, ray_d = o[0, row * res + col], d[0, row * res + col]
    miss = torch.linalg.cross(p - ray_o, ray_d).norm()
    assert miss < depth * 0.5 / res / f * 1.5


def test_world_up_is_image_up():
    # World +y projects towards the top of the image (smaller v) for the frontal camera.
    o, d = frontal_rays(16)
    top_row, bottom_row = d[0, :16], d[0, -16:]
    assert torch.all(top_row[:, 1] > 0) and torch.all(bottom_row[:, 1] < 0)
    assert torch.all(d[0, ::16, 0] < 0) # Left column looks towards -x.


def test_fov_to_intrinsics():
    K = camera_utils.FOV_to_intrinsics(18.837)
    f = 1 / (math.tan(math.radians(18.837) / 2) * math.sqrt(2))
    assert abs(K[0, 0].item() - f) < 1e-3 and abs(K[0, 0].item() - 4.2647) < 2e-3
    torch.testing.assert_close(K, torch.tensor([[K[0, 0], 0, 0.5], [0, K[0, 0], 0.5], [0, 0, 1]]))


def test_orbit_samplers_look_at_origin():
    torch.manual_seed(0)
    for c2w in [camera_utils.GaussianCameraPoseSampler.sample(math.pi / 2, math.pi / 2, 0.3, 0.2, radius=1.7, batch_size=8),
                camera_utils.UniformCameraPoseSampler.sample(math.pi / 2, math.pi / 2, 0.5, 0.4, radius=1.7, batch_size=8)]:
        pos, fwd = c2w[:, :3, 3], c2w[:, :3, 2]
        torch.testing.assert_close(pos.norm(dim=-1), torch.full((8,), 1.7))
        torch.testing.assert_close(fwd, -pos / 1.7, atol=1e-6, rtol=0)
    # Uniform: yaw within mean +- stddev, i.e. azimuth atan2(z, -x) in [pi/2 - 0.5, pi/2 + 0.5].
    yaw = torch.atan2(pos[:, 2], -pos[:, 0])
    assert torch.all((yaw > math.pi / 2 - 0.5 - 1e-5) & (yaw < math.pi / 2 + 0.5 + 1e-5))

#----------------------------------------------------------------------------


def test_orbit_camera_label_sits_on_the_average_orbit():
    rk = dict(avg_camera_pivot=[0, 0, 0.2], avg_camera_radius=2.7)
    c = camera_utils.orbit_camera_label(rk)
    cam2world, intrinsics = c[0, :16].view(4, 4), c[0, 16:].view(3, 3)
    torch.testing.assert_close(cam2world[:3, 3], torch.tensor([0, 0, 2.7]), atol=1e-5, rtol=0)
    forward = cam2world[:3, 2]                       # OpenCV: camera z looks forward.
    to_pivot = torch.tensor([0, 0, 0.2]) - cam2world[:3, 3]
    torch.testing.assert_close(forward, to_pivot / to_pivot.norm(), atol=1e-5, rtol=0)
    assert intrinsics[0, 0] == pytest.approx(4.2647, abs=2e-3) and intrinsics[0, 2] == 0.5
    side = camera_utils.orbit_camera_label(rk, yaw=math.pi / 2 + 0.3)[0, :16].view(4, 4)[:3, 3]
    assert side.norm() == pytest.approx(2.7, abs=1e-5) and side[0] > 0.5
