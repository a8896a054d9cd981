"""Camera poses and intrinsics in EG3D's conventions (OpenCV cam2world, world y up, normalised intrinsics)."""

import math

import torch

from training.volumetric_rendering import math_utils

#----------------------------------------------------------------------------
# Orbit poses. Yaw (horizontal) is the azimuth about the world y axis, pitch (vertical) the polar angle
# from +y; yaw = pitch = pi/2 puts the camera on +z. Angles are in radians.

def _orbit_origins(h, v, radius):
    """Camera positions [B, 3] on a sphere of `radius` for yaw `h` and pitch `v`, both [B, 1]."""
    v = torch.clamp(v, 1e-5, math.pi - 1e-5)
    theta = h
    phi = torch.arccos(1 - 2 * (v / math.pi))
    origins = torch.zeros((h.shape[0], 3), device=h.device)
    origins[:, 0:1] = radius * torch.sin(phi) * torch.cos(math.pi - theta)
    origins[:, 2:3] = radius * torch.sin(phi) * torch.sin(math.pi - theta)
    origins[:, 1:2] = radius * torch.cos(phi)
    return origins


class GaussianCameraPoseSampler:
    """Cameras looking at the world origin, yaw and pitch drawn from normal distributions (torch.randn)."""

    @staticmethod
    def sample(horizontal_mean, vertical_mean, horizontal_stddev=0, vertical_stddev=0, radius=1, batch_size=1, device='cpu'):
        h = torch.randn((batch_size, 1), device=device) * horizontal_stddev + horizontal_mean
        v = torch.randn((batch_size, 1), device=device) * vertical_stddev + vertical_mean
        origins = _orbit_origins(h, v, radius)
        return create_cam2world_matrix(math_utils.normalize_vecs(-origins), origins)


class LookAtPoseSampler:
    """Like GaussianCameraPoseSampler, but the camera looks at `lookat_position` (a 3-vector) instead of the origin.

    The orbit is still centred on the world origin: e.g. LookAtPoseSampler.sample(pi/2, pi/2, pivot, radius=r)
    puts the camera at (0, 0, r) looking at `pivot`.
    """

    @staticmethod
    def sample(horizontal_mean, vertical_mean, lookat_position, horizontal_stddev=0, vertical_stddev=0, radius=1, batch_size=1, device='cpu'):
        h = torch.randn((batch_size, 1), device=device) * horizontal_stddev + horizontal_mean
        v = torch.randn((batch_size, 1), device=device) * vertical_stddev + vertical_mean
        origins = _orbit_origins(h, v, radius)
        return create_cam2world_matrix(math_utils.normalize_vecs(lookat_position - origins), origins)


class UniformCameraPoseSampler:
    """Cameras looking at the world origin, yaw and pitch uniform in mean +- stddev (torch.rand)."""

    @staticmethod
    def sample(horizontal_mean, vertical_mean, horizontal_stddev=0, vertical_stddev=0, radius=1, batch_size=1, device='cpu'):
        h = (torch.rand((batch_size, 1), device=device) * 2 - 1) * horizontal_stddev + horizontal_mean
        v = (torch.rand((batch_size, 1), device=device) * 2 - 1) * vertical_stddev + vertical_mean
        origins = _orbit_origins(h, v, radius)
        return create_cam2world_matrix(math_utils.normalize_vecs(-origins), origins)

#----------------------------------------------------------------------------

def create_cam2world_matrix(forward_vector, origin):
    """OpenCV cam2world [B, 4, 4] (camera x right, y down, z forward) without roll, world y up.

    forward_vector [B, 3] is the viewing direction (need not be unit length), origin [B, 3] the camera position.
    """
    forward_vector = math_utils.normalize_vecs(forward_vector)
    up_vector = torch.tensor([0, 1, 0], dtype=torch.float, device=origin.device).expand_as(forward_vector)
    right_vector = -math_utils.normalize_vecs(torch.cross(up_vector, forward_vector, dim=-1))
    down_vector = math_utils.normalize_vecs(torch.cross(forward_vector, right_vector, dim=-1))

    cam2world = torch.eye(4, device=origin.device).unsqueeze(0).repeat(forward_vector.shape[0], 1, 1)
    cam2world[:, :3, :3] = torch.stack((right_vector, down_vector, forward_vector), dim=-1)
    cam2world[:, :3, 3] = origin
    return cam2world


def FOV_to_intrinsics(fov_degrees, device='cpu'):
    """Intrinsics [3, 3] normalised by image size, principal point at the centre, for a field of view in degrees.

    Keeps EG3D's approximations (pi ~ 3.14159, and a 1.414 factor: the fov is taken across the diagonal),
    so FOV 18.837 gives focal 4.2647, the FFHQ value.
    """
    focal_length = float(1 / (math.tan(fov_degrees * 3.14159 / 360) * 1.414))
    return torch.tensor([[focal_length, 0, 0.5], [0, focal_length, 0.5], [0, 0, 1]], device=device)


def camera_label(cam2world, intrinsics):
    """EG3D's 25-float camera label c [B, 25]: flattened cam2world [B, 4, 4], then intrinsics [B, 3, 3] or [3, 3]."""
    intrinsics = intrinsics.reshape(-1, 9).expand(cam2world.shape[0], -1)
    return torch.cat([cam2world.reshape(-1, 16), intrinsics.to(cam2world.device)], dim=1)


def orbit_camera_label(rendering_kwargs, yaw=math.pi/2, pitch=math.pi/2, fov_degrees=18.837, device='cpu'):
    """Label c [1, 25] of a camera on the generator's average orbit (radius avg_camera_radius about the origin)
    looking at avg_camera_pivot; the defaults give gen_samples' frontal conditioning camera."""
    pivot = torch.tensor(rendering_kwargs.get('avg_camera_pivot', [0, 0, 0]), dtype=torch.float32, device=device)
    pose = LookAtPoseSampler.sample(yaw, pitch, pivot, radius=rendering_kwargs.get('avg_camera_radius', 2.7), device=device)
    return camera_label(pose, FOV_to_intrinsics(fov_degrees, device=device))

#----------------------------------------------------------------------------
