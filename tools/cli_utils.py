"""Helpers shared by the command-line tools: seed lists, device choice, seed latents and trusted pickle loading."""

import re

import click
import numpy as np
import torch

from training import legacy

#----------------------------------------------------------------------------

def parse_range(s):
    """'0,2,5-7' -> [0, 2, 5, 6, 7]."""
    if isinstance(s, list):
        return s
    seeds = []
    for part in s.split(','):
        m = re.fullmatch(r'\s*(\d+)\s*(?:-\s*(\d+)\s*)?', part)
        if m is None:
            raise click.BadParameter(f'cannot parse "{part}" (use numbers and ranges, e.g. 0,2,5-7)')
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo:
            raise click.BadParameter(f'empty range "{part}"')
        seeds.extend(range(lo, hi + 1))
    return seeds

def pick_device(name):
    if name == 'auto':
        name = 'cuda' if torch.cuda.is_available() else 'cpu'
    if name == 'cuda' and not torch.cuda.is_available():
        raise click.BadParameter('CUDA is not available on this machine', param_hint='--device')
    return torch.device(name)

def seed_latent(G, seed):
    """gen_samples' z for a seed (float64 normal draws, used as float32)."""
    return torch.from_numpy(np.random.RandomState(seed).randn(1, G.z_dim)).to(torch.float32)

def require_trust(network_pkl, trust_pickle):
    if not trust_pickle:
        raise click.ClickException(f'refusing to load {network_pkl}: loading a pickle runs code stored in it; '
            'pass --trust-pickle if you trust this file')

def load_generator(network_pkl, device):
    """G_ema of a network pickle the user trusts, in eval mode on `device`; a clear error if it cannot be read."""
    try:
        G = legacy.load_network_pkl(network_pkl, trust=True)['G_ema']
    except (OSError, ValueError, KeyError) as err:
        raise click.ClickException(f'{network_pkl}: {err}')
    return G.to(device).eval().requires_grad_(False)

#----------------------------------------------------------------------------
