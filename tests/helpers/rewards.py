"""Tiny reward models (seeded sigma CNNs, one per reward kind) and the reward-phase inputs fine-tuning tests build."""

import torch

from eg3d_rlhf.geometry import sigma as geometry
from eg3d_rlhf.rewards import SigmaReward
from eg3d_rlhf.rewards.contract import InputSpec, Reward
from training.camera_utils import orbit_camera_label

#----------------------------------------------------------------------------
# Tiny reward models.

TINY = dict(
    sigma=dict(trunk='cnn', members=1, channels=(4, 8, 8, 8, 16), hidden=16),   # At least 2 values per norm group at 1 x 1 x 1.
    depth=dict(views=('front', 'profile'), render_res=16, channels=(4, 8, 8, 8, 16), hidden=16),
    pointcloud=dict(num_points=128, widths=(8, 16, 32), hidden=16),
)


def tiny_sigma(seed=0):
    """A seeded SigmaReward of TINY['sigma']'s size (the reward-training tests' model)."""
    torch.manual_seed(seed)
    return SigmaReward(**TINY['sigma'])


def tiny_reward(seed=0):
    """A seeded one-member sigma CNN with single-voxel pooling (the fine-tuning tests' reward)."""
    torch.manual_seed(seed)
    return SigmaReward(trunk='cnn', members=1, channels=(4, 8, 8, 8, 16), pool=(1, 1, 1), hidden=16)


def tiny_ensemble(seed=0, members=3):
    """A seeded sigma CNN as tiny_reward's with `members` heads (the conservative aggregates' tests)."""
    torch.manual_seed(seed)
    return SigmaReward(trunk='cnn', members=members, channels=(4, 8, 8, 8, 16), pool=(1, 1, 1), hidden=16)


def slab_description(resolution=24, cube_length=1.0):
    """The slab description of a `resolution`^3 cube of side `cube_length` (24^3 of side 1 by default)."""
    return geometry.slab_description(resolution, cube_length=cube_length)


def contract(seed=0, cube_length=1.0):
    """tiny_reward(seed) behind the default contract (self min-max to [0, 100]) of a 24^3 cube's slab."""
    return Reward(tiny_reward(seed), InputSpec(slab=slab_description(cube_length=cube_length)), 'sigma')

#----------------------------------------------------------------------------
# Reward-phase inputs.

def latents(G, n=2, seed=0):
    """(z, c): `n` seeded latents of G and the frontal orbit camera label for each."""
    z = torch.randn([n, G.z_dim], generator=torch.Generator().manual_seed(seed))
    c = orbit_camera_label(G.rendering_kwargs).expand(n, -1)
    return z, c


def phase_options(reward_checkpoint, **options):
    """RewardPhase's options for the tiny sigma checkpoint (reward='sigma'), with overrides."""
    return dict(reward='sigma', reward_model=reward_checkpoint, **options)

#----------------------------------------------------------------------------
