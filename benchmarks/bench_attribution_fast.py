"""CPU benchmark of attribution with the default `sigma` reward: the fast path against the reference (captum) path."""

import time

import click
import numpy as np
import torch

from eg3d_rlhf.analysis import attribution, regions as regions_lib
from eg3d_rlhf.cli import BUNDLED, draw_slabs, load_regions
from eg3d_rlhf.data.bank import Bank
from eg3d_rlhf.geometry import sigma as geometry
from eg3d_rlhf.rewards.checkpoint import load_reward
from eg3d_rlhf.rewards.contract import Reward
from eg3d_rlhf.rewards.sigma_cnn import SigmaReward

#----------------------------------------------------------------------------

def default_reward(slabs, slab):
    """The default `sigma` reward (levels trunk, mesh statistics at 10, 8 linear heads) on the grid `slab` describes,
    its features standardised over `slabs`; seeded heads (the time does not depend on what they learned)."""
    torch.manual_seed(0)
    model = SigmaReward()
    spec = SigmaReward.default_input(slab, model.config)
    with torch.no_grad():
        f = model.trunk_features(spec.prepare(slabs))
    model.set_feature_scale(f.mean(0), f.std(0))
    return Reward(model, spec, 'sigma')


def two_regions(grid):
    """The published nose box and everything else: the two regions the issue's measurement used."""
    return regions_lib.Regions(np.where(regions_lib.published(grid.shape).mask('nose'), 0, 1), ['nose', 'other'],
        'published nose box')


@click.command()
@click.option('--bank', 'bank_path', metavar='DIR', help="A bank's slabs (default: draw the bundled generator's)")
@click.option('--res', type=click.IntRange(min=16), default=128, show_default=True,
    help='Cube resolution of the drawn slabs (the demo bank: 128, slabs of 64x71x65)')
@click.option('--samples', type=click.IntRange(min=1), default=2, show_default=True, help='Samples explained')
@click.option('--reward-model', 'reward_path', metavar='PT', help='Reward checkpoint (default: the default sigma reward)')
@click.option('--regions', 'region_source', default='nose', show_default=True, metavar='nose|template|published',
    help='nose: the published nose box and the rest (2 regions)')
@click.option('--permutations', type=click.IntRange(min=1), default=8, show_default=True, help='Shapley permutations')
@click.option('--ig-steps', type=click.IntRange(min=2), default=32, show_default=True, help='IG path points')
@click.option('--batch', type=click.IntRange(min=1), default=4, show_default=True, help='Samples explained per pass')
@click.option('--threads', type=click.IntRange(min=1), default=2, show_default=True, help='torch threads')
def main(bank_path, res, samples, reward_path, region_source, permutations, ig_steps, batch, threads):
    """Explain the same samples (against the mean slab, as attribute --bank does) with attribute(fast=False), the
    reference path (captum's Shapley value sampling and IG with its convergence delta, 64 slabs a pass), and with
    attribute(), the fast path, in this process one after the other; print seconds per sample of each (wall, and CPU
    time of this process: on a shared machine the wall time counts other jobs' turns too), their ratio and how far the
    two paths' attributions lie apart."""
    torch.set_num_threads(threads)
    if bank_path:
        bank = Bank(bank_path)
        ids = bank.ids[:samples]
        inputs = torch.from_numpy(np.stack([bank.slab(i) for i in ids])).float()
        slab = bank.meta(ids[0])['slab']
    else:
        slab = geometry.slab_description(res)
        inputs = draw_slabs(BUNDLED, [(s, None) for s in range(samples)], geometry.grid_from_meta(slab),
            torch.device('cpu'))
    reward = load_reward(reward_path) if reward_path else default_reward(inputs, slab)
    regions = two_regions(reward.grid) if region_source == 'nose' else load_regions(region_source, reward.grid)
    baselines, _ = attribution.reference_baselines(inputs, 'mean')
    kind = reward.model.config.get('trunk', reward.kind)
    print(f'{len(inputs)} samples of {list(reward.grid.shape)}, {reward.kind} reward ({kind}), '
        f'{sum(c > 0 for c in regions.counts().values())} regions, {permutations} permutations, '
        f'{ig_steps} IG steps, {threads} threads')
    results, seconds, cpu = {}, {}, {}
    for name, fast in (('reference', False), ('fast', True)):
        start, start_cpu = time.perf_counter(), time.process_time()
        results[name] = attribution.attribute(reward, inputs, baselines, regions, permutations=permutations,
            ig_steps=ig_steps, batch=batch, fast=fast)
        seconds[name] = (time.perf_counter() - start) / len(inputs)
        cpu[name] = (time.process_time() - start_cpu) / len(inputs)
        split = results[name]['seconds']
        print(f'{name:9s} path: {seconds[name]:7.2f} s/sample (Shapley {split["shapley"] / len(inputs):.2f}, '
            f'IG {split["ig"] / len(inputs):.2f}); CPU {cpu[name]:.2f} s/sample')
    print(f'speed-up: {seconds["reference"] / seconds["fast"]:.1f}x wall, {cpu["reference"] / cpu["fast"]:.1f}x CPU')
    ref, new = results['reference'], results['fast']
    scale = np.maximum(np.abs(ref['change']), 1e-6)[:, None]
    for key in ('shapley', 'ig'):
        print(f'{key}: largest difference {np.abs(new[key] - ref[key]).max():.2e} '
            f'({(np.abs(new[key] - ref[key]) / scale).max():.2e} of |change|)')

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main() # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
