"""Click helpers shared by the command-line tools: seed lists, devices, trusted generator loading."""

import os

import click
import torch

from eg3d_rlhf.data.bank import Bank, BankError
from eg3d_rlhf.generators.base import seed_ranges
from eg3d_rlhf.generators.eg3d import EG3DGenerator
from eg3d_rlhf.synthetic import demo

#----------------------------------------------------------------------------

def parse_range(s):
    """'0,2,5-7' -> [0, 2, 5, 6, 7]; click.BadParameter when it cannot be read."""
    if isinstance(s, list):
        return s
    try:
        return seed_ranges(s)
    except ValueError as err:
        raise click.BadParameter(str(err))

device_option = click.option('--device', 'device_name', type=click.Choice(['auto', 'cpu', 'cuda']), default='auto',
    show_default=True, help='Where the networks run')

def pick_device(name):
    if name == 'auto':
        name = 'cuda' if torch.cuda.is_available() else 'cpu'
    if name == 'cuda' and not torch.cuda.is_available():
        raise click.BadParameter('CUDA is not available on this machine', param_hint='--device')
    return torch.device(name)

def require_trust(network_pkl, trust_pickle):
    if not trust_pickle:
        raise click.ClickException(f'refusing to load {network_pkl}: loading a pickle runs code stored in it; '
            'pass --trust-pickle if you trust this file')

# The demo generator trained on synthetic heads (checkpoints/README.md says how it was made). It ships with this
# repository, so it is loaded with the same trust as the code next to it.
BUNDLED = demo.GENERATOR

def network_path(network_pkl, trust_pickle):
    """The pickle a --network value names: 'bundled' is the shipped demo generator; any other file needs trust."""
    if network_pkl == 'bundled':
        if not os.path.isfile(BUNDLED):
            raise click.ClickException(f'the bundled generator {BUNDLED} is missing; restore it from git or pass --network')
        return BUNDLED
    require_trust(network_pkl, trust_pickle)
    return network_pkl

def open_bank(path):
    """The bank at `path`, or a one-line click error saying why it cannot be read."""
    try:
        return Bank(path)
    except BankError as err:
        raise click.ClickException(str(err))

def side_path(path, suffix):
    """'out/reward.pt', '.report.json' -> 'out/reward.report.json'."""
    return os.path.splitext(path)[0] + suffix

def load_generator(network_pkl, device, **kwargs):
    """The generator (EG3DGenerator around G_ema) of a network pickle the user trusts, on `device`; kwargs go to the
    adapter (truncation_psi, truncation_cutoff, fov_degrees, batch). A clear error if it cannot be read."""
    try:
        return EG3DGenerator.load(network_pkl, device, trust=True, **kwargs)
    except (OSError, ValueError, KeyError) as err:
        raise click.ClickException(f'{network_pkl}: {err}')

#----------------------------------------------------------------------------
