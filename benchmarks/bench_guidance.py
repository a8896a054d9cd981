"""CPU benchmark of reward guidance: seconds per guided flow sample and per EG3D inversion, against unguided sampling."""

import os
import statistics
import time

import click
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from eg3d_rlhf import cli
from eg3d_rlhf.guidance.flow_guidance import RewardGuidance, guided_generator, slab_scorer
from eg3d_rlhf.guidance.inverted import InvertedEG3D
from eg3d_rlhf.rewards.checkpoint import load_reward

#----------------------------------------------------------------------------

def seconds_per_sample(draw, fresh, repeats):
    """Median over `repeats` of the seconds draw(fresh()) takes, per seed, after one untimed warm-up draw."""
    draw(fresh()[:1])
    times = []
    for _ in range(repeats):
        seeds = fresh()
        start = time.perf_counter()
        draw(seeds)
        times.append((time.perf_counter() - start) / len(seeds))
    return statistics.median(times)


@click.command()
@click.option('--seeds', type=click.IntRange(min=1), default=4, show_default=True, help='Samples per timing')
@click.option('--repeats', type=click.IntRange(min=1), default=3, show_default=True, help='Timings (median)')
@click.option('--steps', type=click.IntRange(min=1), default=10, show_default=True, help='Inversion steps per seed')
@click.option('--lr', type=click.FloatRange(min=0, min_open=True), default=0.005, show_default=True, help='Their learning rate')
@click.option('--threads', type=click.IntRange(min=1), default=2, show_default=True, help='torch CPU threads')
def main(seeds, repeats, steps, lr, threads):
    """Baselines: an unguided sample of the bundled flow model (both stages, its 16 Heun steps) and a render of a seed
    of the bundled EG3D generator (G.synthesis at its own resolution). Measured: the same flow sample with cfg and with
    gradient guidance on the detail stage (the tools/guide.py defaults otherwise: t < 0.5, smoothing 2 voxels), and a
    reward-guided inversion of the seed's latents (`--steps` Adam steps at `--lr`, reward weight 1: tools/guide.py
    eg3d's defaults) followed by its render.
    Each timing draws fresh seeds, so no cached sample is reused."""
    torch.set_num_threads(threads)
    device = torch.device('cpu')
    ids = iter(range(10**6))
    fresh = lambda: [next(ids) for _ in range(seeds)]

    flow = cli.load_generator(cli.network_path('bundled-flow', False), device)
    flow_reward = load_reward(os.path.join(REPO, 'checkpoints', 'reward-sigma-flow-nose.safetensors'))
    score = slab_scorer(flow_reward, flow.cube_length, flow.empty_sigma)
    base = seconds_per_sample(lambda s: flow.volumes(s, 0), fresh, repeats)
    print(f'{threads} threads, {seeds} samples per timing, median of {repeats}')
    print(f'flow, unguided: {base:.2f} s/sample (baseline)')
    for mode in ('cfg', 'gradient'):
        guided = guided_generator(flow, RewardGuidance(score, scale=0.05, mode=mode, t_end=0.5, smooth=2.0))
        t = seconds_per_sample(lambda s: guided.volumes(s, 0), fresh, repeats)
        print(f'flow, {mode} guidance: {t:.2f} s/sample ({t / base:.1f}x)')

    eg3d = cli.load_generator(cli.network_path('bundled', True), device)
    reward = load_reward(os.path.join(REPO, 'checkpoints', 'reward-sigma-nose.safetensors'))
    base = seconds_per_sample(lambda s: eg3d.images(s), fresh, repeats)
    print(f'eg3d, render of a seed: {base:.2f} s/sample (baseline)')
    edited = InvertedEG3D(eg3d, reward, reward_weight=1.0, steps=steps, lr=lr)
    t = seconds_per_sample(lambda s: edited.images(s), fresh, repeats)
    print(f'eg3d, {steps}-step reward-guided inversion and render: {t:.2f} s/sample ({t / base:.1f}x), '
        f'batch {edited.batch}')

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main() # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
