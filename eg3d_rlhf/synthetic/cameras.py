"""FFHQ-like camera poses for the synthetic heads, as EG3D 25-float labels."""

import math

import numpy as np
import torch

from training import camera_utils

#----------------------------------------------------------------------------
# EG3D's FFHQ conventions: cameras on a sphere of radius 2.7 about the origin, looking at the pivot
# (0, 0, 0.2), normalised focal 4.2647 (the value in FFHQ's dataset.json; FOV_to_intrinsics(18.837) gives
# 4.2634). Yaw and pitch are Gaussian about the frontal view (pi/2, pi/2), truncated at 3 standard deviations.

RADIUS = 2.7
PIVOT = (0.0, 0.0, 0.2)
FOCAL = 4.2647
YAW_STD = 0.3
PITCH_STD = 0.15


def sample_pose(rng):
    """(yaw, pitch) in radians from a numpy Generator."""
    yaw = math.pi / 2 + YAW_STD * float(np.clip(rng.standard_normal(), -3, 3))
    pitch = math.pi / 2 + PITCH_STD * float(np.clip(rng.standard_normal(), -3, 3))
    return yaw, pitch


def camera_labels(yaw, pitch, device='cpu'):
    """Labels c [B, 25] (OpenCV cam2world, then normalised intrinsics) for sequences of yaw and pitch.

    LookAtPoseSampler draws from torch.randn even with zero spread; fork_rng keeps the caller's RNG untouched.
    """
    h = torch.tensor(yaw, dtype=torch.float32, device=device).reshape(-1, 1)
    v = torch.tensor(pitch, dtype=torch.float32, device=device).reshape(-1, 1)
    pivot = torch.tensor(PIVOT, dtype=torch.float32, device=device)
    with torch.random.fork_rng(devices=[]):
        cam2world = camera_utils.LookAtPoseSampler.sample(h, v, pivot, radius=RADIUS, batch_size=len(h), device=device)
    intrinsics = torch.tensor([[FOCAL, 0, 0.5], [0, FOCAL, 0.5], [0, 0, 1]], dtype=torch.float32, device=device)
    return camera_utils.camera_label(cam2world, intrinsics)

#----------------------------------------------------------------------------
