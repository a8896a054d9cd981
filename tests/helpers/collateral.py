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

#----------------------------------------------------------------------------
# A reward hacked by construction, for fine-tuning runs: it likes density on one side of the slab (world -x) and
# dislikes it on the other, so climbing it breaks the heads' symmetry whatever else it does.

def one_sided_reward(path, slab, strength=200.0):
    """Save at `path` a levels-trunk sigma reward whose one linear head reads the soft occupancy at level 10 (of the
    raw slab: the mesh people see) in the front half (+z, the face) of the slab's -x half minus that of its +x half, times
    `strength`; `slab`: its slab description."""
    from eg3d_rlhf.rewards import SigmaReward
    from eg3d_rlhf.rewards.checkpoint import save_reward
    from eg3d_rlhf.rewards.contract import InputSpec
    model = SigmaReward(trunk='levels', members=1, hidden=0, levels=(10.0,), cells=(2, 1, 2), mesh_levels=())
    with torch.no_grad():
        head = model.heads[0]
        head.weight.zero_()
        head.bias.zero_()
        head.weight[0, 1], head.weight[0, 3] = strength, -strength      # Occupancy, cells (x, z) = (0, 1) - (1, 1).
    save_reward(path, model, 'sigma', InputSpec(slab=dict(slab), normalisation='affine', scale=1.0, offset=0.0))
    return path
