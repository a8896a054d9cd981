"""Reward-model checkpoints: weights, architecture config, input spec and normalisation in plain types (weights_only)."""

import os

import torch

import dnnlib
from eg3d_rlhf.rewards import build_reward

#----------------------------------------------------------------------------
# A checkpoint is a dict of tensors, strings, numbers, lists and dicts only, so torch.load(weights_only=True) reads
# it without running any code:
#   format      FORMAT
#   kind        'sigma' | 'depth' | 'pointcloud'
#   config      the model's constructor kwargs (model.config)
#   state_dict  its weights
#   input       what the model reads: normalisation ('self_minmax_0_100', eg3d_rlhf.sigma.normalise_sigma_self)
#               and the slab grid it was trained on (resolution, cube_length, crop, shape), as in a bank's meta.json
#   training    how it was trained (bank, labels, settings, held-out results); informational

FORMAT = 'eg3d_rlhf.reward/1'
NORMALISATION = 'self_minmax_0_100'


class RewardCheckpointError(ValueError):
    """A file that is not a reward checkpoint this version can read."""


def save_reward(path, model, kind, slab, training=None):
    """Write a checkpoint atomically; `slab` is the bank's slab description (meta.json "slab")."""
    data = dict(format=FORMAT, kind=kind, config=dict(model.config),
        state_dict={k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        input=dict(normalisation=NORMALISATION, slab=dict(slab)), training=dict(training or {}))
    with dnnlib.util.atomic_write(path, 'wb') as f:
        torch.save(data, f)


def load_reward(path, device='cpu'):
    """(model in eval mode on `device`, checkpoint dict without the weights), read with weights_only=True."""
    if not os.path.isfile(path):
        raise RewardCheckpointError(f'{path}: no such reward checkpoint')
    try:
        data = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as err:                                    # Unpickling errors come in many types.
        first = str(err).strip().splitlines()[0] if str(err).strip() else ''
        raise RewardCheckpointError(f'{path}: not a reward checkpoint ({type(err).__name__}: {first})') from None
    if not isinstance(data, dict) or data.get('format') != FORMAT:
        raise RewardCheckpointError(f'{path}: not a reward checkpoint of format {FORMAT}')
    if data['input'].get('normalisation') != NORMALISATION:
        raise RewardCheckpointError(f'{path}: unknown input normalisation {data["input"].get("normalisation")!r}')
    model = build_reward(data['kind'], **data['config'])
    model.load_state_dict(data['state_dict'])
    info = {k: v for k, v in data.items() if k != 'state_dict'}
    return model.to(device).eval(), info

#----------------------------------------------------------------------------
