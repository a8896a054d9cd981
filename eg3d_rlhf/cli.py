"""Click helpers shared by the command-line tools: seed lists, devices, trusted generator loading, score files."""

import csv
import os

import click
import torch

import dnnlib
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

def side_path(path, suffix):
    """'out/reward.pt', '.report.json' -> 'out/reward.report.json'."""
    return os.path.splitext(path)[0] + suffix

def read_scores(path, known_ids=None):
    """{id: float} from an id,reward CSV (tools/score_bank.py, tools/annotate.py --scores-out); line-numbered errors."""
    scores = {}
    with open(path, newline='', encoding='utf-8') as f:
        rows = csv.reader(f)
        if [h.strip() for h in next(rows, [])][:2] != ['id', 'reward']:
            raise click.ClickException(f'{path}:1: expected the header "id,reward"')
        for lineno, row in enumerate(rows, start=2):
            try:
                scores[row[0]] = float(row[1])
            except (IndexError, ValueError):
                raise click.ClickException(f'{path}:{lineno}: expected "id,number", got {",".join(row)!r}') from None
            if known_ids is not None and row[0] not in known_ids:
                raise click.ClickException(f'{path}:{lineno}: unknown sample id {row[0]}')
    return scores

def write_scores(path, scores):
    """id,reward CSV (the format tools/score_bank.py writes), atomically."""
    with dnnlib.util.atomic_write(path, 'w', encoding='utf-8') as f:
        writer = csv.writer(f, lineterminator='\n')
        writer.writerow(['id', 'reward'])
        for sample_id, value in scores.items():
            writer.writerow([sample_id, repr(float(value))])

def load_generator(network_pkl, device, **kwargs):
    """The generator (EG3DGenerator around G_ema) of a network pickle the user trusts, on `device`; kwargs go to the
    adapter (truncation_psi, truncation_cutoff, fov_degrees, batch). A clear error if it cannot be read."""
    try:
        return EG3DGenerator.load(network_pkl, device, trust=True, **kwargs)
    except (OSError, ValueError, KeyError) as err:
        raise click.ClickException(f'{network_pkl}: {err}')

#----------------------------------------------------------------------------
