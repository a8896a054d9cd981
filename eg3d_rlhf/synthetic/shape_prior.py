"""Shape prior: fit a new generator's density to synthetic heads before GAN training (a geometry warm start)."""

import numpy as np
import torch
from tqdm import tqdm

from eg3d_rlhf.synthetic import world
from torch_utils import misc

#----------------------------------------------------------------------------
# StyleSDF starts its generator from a sphere so that early training sees a surface instead of fog. This goes one
# step further for the synthetic world: every step regresses the raw sigma of fresh latents onto the true density
# of prior heads (clean, from a dedicated seed), so G converges to the heads' median shape: level 10 sits where
# half the heads are inside. The GAN then has to learn appearance and shape variation from images, as usual.

PRIOR_SEED = 999_983        # Dataset seed of the prior's heads (not a training-data seed).
SIGMA_IN = 30.0             # Target raw sigma deep inside a head.
SIGMA_OUT = -10.0           # Target raw sigma in empty space (softplus(-11) ~ 0: no fog).
EDGE_EPS = 0.01             # Width of the target's inside/outside transition, in world units.
COLOUR_WEIGHT = 100.0       # Weight of the colour term (feature MSE near the surface) beside the sigma term.


def target_sigma(heads, points):
    """Raw-sigma target [B, N] at world points [B, N, 3]: SIGMA_OUT outside, SIGMA_IN inside, level 10 on the surface."""
    occupancy = torch.sigmoid(-world.sdf(heads, points) / EDGE_EPS)
    return SIGMA_OUT + (SIGMA_IN - SIGMA_OUT) * occupancy


def point_bank(num_heads, num_points, half, seed=0, band=0.04):
    """(points [H, 2P, 3], target sigma [H, 2P], albedo [H, P, 3] of the near points) of num_heads prior heads:
    P uniform points in the box of half-width `half`, then P points within `band` of the surface (where the facial
    features are)."""
    gen = torch.Generator().manual_seed(seed)
    points, sigma, colour = [], [], []
    for index in range(num_heads):
        head = world.sample(PRIOR_SEED, index)
        uniform = (torch.rand([num_points, 3], generator=gen) * 2 - 1) * half
        candidates = (torch.rand([8 * num_points, 3], generator=gen) * 2 - 1) * half
        near = candidates[world.sdf([head], candidates[None])[0].abs() < band]
        near = near[torch.randint(len(near), [num_points], generator=gen)]
        points.append(torch.cat([uniform, near]))
        sigma.append(target_sigma([head], points[-1][None])[0])
        colour.append(world.albedo([head], near[None])[0])
    return torch.stack(points), torch.stack(sigma), torch.stack(colour)


def fit_shape_prior(
    G,                          # TriPlaneGenerator to fit in place (its synthesis and decoder; the SR head is untouched).
    labels,                     # Camera labels [L, 25] (numpy) to condition G on, e.g. the training set's.
    steps       = 400,          # Adam steps.
    batch       = 4,            # Heads (and latents) per step.
    num_heads   = 64,           # Distinct prior heads (their points are drawn once, then reused).
    num_points  = 4096,         # Uniform points per head, and as many near its surface.
    lr          = 0.003,        # Adam learning rate.
    seed        = 0,            # Seed of latents, cameras and points.
    progress    = True,         # Show a progress bar.
):
    """Regress G's raw sigma onto synthetic heads' density, and its decoded features near the surface onto their
    albedo (RGB channels; the other channels onto 0.5, so no sigmoid starts the GAN saturated). Returns the loss
    of every step."""
    device = next(G.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    rnd = np.random.RandomState(seed)
    points, targets, colours = point_bank(num_heads, num_points, G.rendering_kwargs['box_warp'] / 2, seed=seed)
    params = [p for name, p in G.named_parameters() if not name.startswith('superresolution.')]
    opt = torch.optim.Adam(params, lr=lr, betas=(0.9, 0.99))
    G.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    losses = []
    for _step in tqdm(range(steps), desc='shape prior', unit='step', disable=not progress):
        pick = torch.from_numpy(rnd.randint(num_heads, size=batch))
        z = torch.randn([batch, G.z_dim], generator=gen).to(device)
        c = torch.from_numpy(labels[rnd.randint(len(labels), size=batch)]).to(device)
        p = points[pick].to(device)
        out = G.sample(p, torch.zeros_like(p), z, c)
        misc.assert_shape(out['sigma'], [batch, 2 * num_points, 1])
        features = out['rgb'][:, num_points:]
        feature_target = torch.full_like(features, 0.5)
        feature_target[..., :3] = colours[pick].to(device)
        loss = (out['sigma'][..., 0] - targets[pick].to(device)).square().mean()
        loss = loss + COLOUR_WEIGHT * (features - feature_target).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    G.requires_grad_(False)
    return losses

#----------------------------------------------------------------------------
