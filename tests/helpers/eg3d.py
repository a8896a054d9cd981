"""A tiny EG3D TriPlaneGenerator (64x64 images, 32^2 planes) for tests that need a real generator quickly."""

import torch

from training.triplane import TriPlaneGenerator

#----------------------------------------------------------------------------

RENDERING_KWARGS = dict(image_resolution=64, disparity_space_sampling=False, clamp_mode='softplus',
    superresolution_module='training.superresolution_small.SuperresolutionSmall2X', c_gen_conditioning_zero=True,
    gpc_reg_prob=None, c_scale=1.0, superresolution_noise_mode='none', density_reg=0.25, density_reg_p_dist=0.004,
    reg_type='l1', decoder_lr_mul=1.0, sr_antialias=True, depth_resolution=8, depth_resolution_importance=8,
    ray_start=2.25, ray_end=3.3, box_warp=1, avg_camera_radius=2.7, avg_camera_pivot=[0, 0, 0.2])


def tiny_generator(seed=0):
    """A seeded tiny TriPlaneGenerator (z_dim 16, FFHQ-like 25-float camera labels), frozen, rendering 32 -> 64."""
    torch.manual_seed(seed)
    G = TriPlaneGenerator(z_dim=16, c_dim=25, w_dim=512, img_resolution=64, img_channels=3, plane_resolution=32,
        mapping_kwargs=dict(num_layers=2), rendering_kwargs=dict(RENDERING_KWARGS), sr_kwargs=dict(channel_base=512, channel_max=16),
        channel_base=512, channel_max=32, num_fp16_res=0, conv_clamp=None).requires_grad_(False)
    G.neural_rendering_resolution = 32                      # SuperresolutionSmall2X: 32 -> 64.
    return G

#----------------------------------------------------------------------------
