"""Bilinear, zero-padded, align_corners=False `grid_sample` with gradients of any order (EG3D's tri-plane sampler)."""

import torch

# pylint: disable=redefined-builtin

#----------------------------------------------------------------------------

# EG3D's training loop sets this to True. StyleGAN3 needed a custom autograd op because older torch had no
# double backward for grid_sampler_2d; torch 2.x differentiates grid_sampler_2d_backward natively w.r.t.
# grad_output, input AND grid (tests/test_ops.py checks it with gradgradcheck), so both settings run the
# same native op and give identical values and derivatives.
enabled = False

#----------------------------------------------------------------------------

def grid_sample(input, grid):
    """torch.nn.functional.grid_sample with mode='bilinear', padding_mode='zeros', align_corners=False.

    Args:
        input:  [N, C, H, W].
        grid:   [N, H_out, W_out, 2], (x, y) in [-1, 1].

    Returns:
        [N, C, H_out, W_out].
    """
    assert input.ndim == 4 and grid.ndim == 4
    return torch.nn.functional.grid_sample(input=input, grid=grid, mode='bilinear', padding_mode='zeros', align_corners=False)

#----------------------------------------------------------------------------
