"""Toy runs for the collateral checks: synthetic heads' true density slabs, and a reward climbed on them directly."""

import numpy as np
import torch

from eg3d_rlhf.synthetic import heads, world

#----------------------------------------------------------------------------

def true_slabs(count, grid, seed=7):
    """(raw sigma [count, *grid.shape] of clean synthetic heads - their true density, nose tips [count, 3] world)."""
    samples = [world.sample(seed, i) for i in range(count)]
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in grid.shape], indexing='ij'), -1).reshape(-1, 3)
    points = torch.as_tensor(grid.index_to_world(ijk), dtype=torch.float32)
    with torch.no_grad():
        sigma = world.density(samples, points[None].expand(count, -1, -1))
    return sigma.reshape(count, *grid.shape), np.stack([heads.nose_tip(s.head) for s in samples])


def bump(grid, centres, radius):
    """Gaussian weights [len(centres), *grid.shape] around world points centres [N, 3]."""
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in grid.shape], indexing='ij'), -1)
    world_points = torch.as_tensor(grid.index_to_world(ijk.reshape(-1, 3)), dtype=torch.float32).reshape(*grid.shape, 3)
    d2 = ((world_points[None] - torch.as_tensor(centres, dtype=torch.float32)[:, None, None, None]) ** 2).sum(-1)
    return torch.exp(-d2 / (2 * radius ** 2))


def toy_run(slabs, weights, steps=5, lr=3.0):
    """Climb the toy reward r = sum(weights * sigma) per sample by gradient steps on the slabs themselves (plain SGD,
    so the change follows the weights smoothly); (tuned slabs, reward before [N], reward after [N])."""
    reward = lambda x: (weights * x).flatten(1).sum(1) / weights.flatten(1).abs().sum(1)
    x = slabs.clone().requires_grad_(True)
    before = reward(slabs).detach()
    for _ in range(steps):
        r = reward(x).sum()
        grad, = torch.autograd.grad(r, x)
        with torch.no_grad():
            x += lr * grad / grad.flatten(1).abs().amax(1)[:, None, None, None]
    return x.detach(), before.numpy(), reward(x).detach().numpy()

#----------------------------------------------------------------------------
