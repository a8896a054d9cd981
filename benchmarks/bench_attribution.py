"""CPU benchmark of reward attribution: wall time of Shapley value sampling and IG over many seeds, against plain scoring."""

import os
import time

import click
import torch

from eg3d_rlhf.analysis import attribution
from eg3d_rlhf.cli import BUNDLED, draw_slabs, load_regions
from eg3d_rlhf.rewards.checkpoint import load_reward
from eg3d_rlhf.synthetic import demo

#----------------------------------------------------------------------------

@click.command()
@click.option('--reward-model', 'reward_path', default=os.path.join(demo.CHECKPOINTS, 'reward-sigma-nose.safetensors'),
    show_default=True, metavar='PT', help='Reward checkpoint')
@click.option('--seeds', type=click.IntRange(min=1), default=100, show_default=True, help='Samples explained')
@click.option('--permutations', type=click.IntRange(min=1), default=8, show_default=True, help='Shapley permutations')
@click.option('--ig-steps', type=click.IntRange(min=2), default=32, show_default=True, help='IG path points')
@click.option('--batch', type=click.IntRange(min=1), default=4, show_default=True, help='Samples per pass')
@click.option('--threads', type=click.IntRange(min=1), default=2, show_default=True, help='torch threads')
def main(reward_path, seeds, permutations, ig_steps, batch, threads):
    """Explain the bundled generator's samples (seed s + 1 against seed s, so every change is non-zero) with a reward
    over the synthetic template's regions; print the wall time of plain scoring of the same samples (the baseline),
    of Shapley value sampling and of IG, and their ratios to the baseline."""
    torch.set_num_threads(threads)
    reward = load_reward(reward_path, torch.device('cpu'))
    regions = load_regions('template', reward.grid)
    slabs = draw_slabs(BUNDLED, [(s, None) for s in range(seeds + 1)], reward.grid, torch.device('cpu'))
    inputs, baselines = slabs[1:], slabs[:-1]
    print(f'{seeds} samples of {list(reward.grid.shape)}, {len(regions.names)} regions, {threads} threads')
    with torch.no_grad():
        reward.score(inputs[:batch])                                         # Warm-up.
    t0 = time.perf_counter()
    with torch.no_grad():
        for begin in range(0, seeds, batch):
            reward.score(inputs[begin:begin + batch])
    plain = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = attribution.attribute(reward, inputs, baselines, regions, permutations=permutations, ig_steps=ig_steps,
        batch=batch)
    total = time.perf_counter() - t0
    shapley, ig = result['seconds']['shapley'], result['seconds']['ig']
    print(f'plain scoring (baseline): {plain:.2f} s ({1000 * plain / seeds:.1f} ms a sample)')
    print(f'Shapley value sampling, {permutations} permutations: {shapley:.1f} s, {shapley / plain:.0f}x the baseline')
    print(f'Integrated Gradients, {ig_steps} steps: {ig:.1f} s, {ig / plain:.0f}x the baseline')
    print(f'attribute() in all: {total:.1f} s for {seeds} samples; completeness error max: Shapley '
        f'{result["shapley_completeness"].max():.1e}, IG {result["ig_completeness"].max():.1e}')

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main() # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
