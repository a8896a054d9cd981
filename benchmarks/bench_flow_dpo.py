"""CPU benchmark of Flow-DPO steps on a stage of tens of millions of parameters: full vs LoRA vs a precomputed reference."""

import json
import os
import resource
import statistics
import subprocess
import sys
import time

import click
import psutil
import torch
from torch import nn

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from eg3d_rlhf.finetune import flow_dpo, lora
from eg3d_rlhf.generators.flow import FlowPipeline
from eg3d_rlhf.generators.flow_heads import ConvVelocity, Structure

#----------------------------------------------------------------------------
# A synthetic stage: the bundled structure stage's ConvVelocity (3D convs over a G^3 grid) with many more channels and
# layers, so its parameters (about 27 * channels^2 * layers) reach real generators' tens of millions; the data are
# random occupancy grids. Each configuration runs in a fresh process, so its peak RSS (ru_maxrss) is its own: torch's
# CPU tensors come from malloc, which tracemalloc does not see, and an allocator's own counters miss the libraries.
# Memory is reported above the process's RSS once torch, peft, the modules and the data are loaded (and every kernel
# has run once, on a small stage), and in copies of the stage's float32 weights (4 bytes a parameter): full Flow-DPO
# keeps five (the policy, its gradient, Adam's two moments, the frozen reference), LoRA two (policy and reference;
# the adapters' states are small), a precomputed reference four: the policy, before its first step, is the
# reference, so reference_cache(policy, policy, ...) runs it over every step's draws (no gradients) and no copy is
# ever made.

CONFIGS = {                                 # name: (train_stage options, precompute the reference, needs peft)
    'full':             (dict(), False, False),                 # The baseline: every weight trains, reference kept.
    'lora':             (dict(lora_rank=8), False, True),       # Adapters of rank 8 train; the reference kept.
    'precomputed':      (dict(), True, False),                  # Every weight trains; the reference run first, dropped.
    'lora+precomputed': (dict(lora_rank=8), True, True),        # Both.
    'bf16':             (dict(bf16=True), False, False),        # Full, velocity passes under bf16 autocast.
}


def build(channels, layers, grid, seed=0):
    """A one-stage FlowPipeline (unconditional) of a ConvVelocity at `grid`^3, every layer random (none starts at zero,
    so every weight gets a gradient)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        velocity = ConvVelocity(grid, channels, layers, None)
        for layer in (velocity.out, velocity.skip):
            nn.init.normal_(layer.weight, std=1e-3)
    return FlowPipeline([Structure(velocity, grid, 1)], name='bench-flow-dpo')


def pairs(grid, count=8, seed=0):
    """PairData of `count` random occupancy assets (raw sigma [count, G, G, G]) in count / 2 pairs."""
    sigma = 10 + 20 * torch.randn([count, grid, grid, grid], generator=torch.Generator().manual_seed(seed))
    return flow_dpo.PairData(assets=sigma, conditions=None, chosen=torch.arange(0, count, 2),
        rejected=torch.arange(1, count, 2), weight=torch.ones(count // 2), ids=[f'a{i}' for i in range(count)])


def rss_mib():
    return psutil.Process().memory_info().rss / 2**20


def run(config, policy, data, batch, steps):
    """(seconds of the precomputation, seconds of each step) of one configuration's train_stage on the policy."""
    options, precompute, _ = CONFIGS[config]
    t0 = time.perf_counter()
    if precompute:                          # The policy starts as the reference: it is its own, no copy is made.
        reference = flow_dpo.reference_cache(policy, policy, 0, data, steps, batch, bf16=options.get('bf16', False))
    else:
        reference = policy.frozen_copy()
    seconds = time.perf_counter() - t0 if precompute else 0.0
    stamps = [time.perf_counter()]
    flow_dpo.train_stage(policy, reference, 0, data, steps, batch, 1e-4, 1000.0, log=lambda r: stamps.append(
        time.perf_counter()), **options)
    return seconds, [b - a for a, b in zip(stamps, stamps[1:])]


def measure(config, channels, layers, grid, batch, steps, threads):
    """In a fresh process: parameters, seconds per step (median of all but the first; the precomputation spread over
    the steps), RSS at the start and peak RSS (ru_maxrss) in MiB."""
    torch.set_num_threads(threads)
    data = pairs(grid)
    if CONFIGS[config][2]:
        lora._peft()                        # Its import (and transformers') is not the configuration's state.
    run(config, build(4, 1, grid), data, batch, 2)     # Nor is every kernel's first call (its set-up), on a small stage.
    start_mib = rss_mib()
    policy = build(channels, layers, grid)
    params = sum(p.numel() for p in policy.stages[0].velocity.parameters())
    precompute_seconds, step_seconds = run(config, policy, data, batch, steps)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024              # Linux reports KiB.
    return dict(params=params, seconds=statistics.median(step_seconds[1:]) + precompute_seconds / steps,
        precompute_seconds=precompute_seconds, start_mib=start_mib, peak_mib=peak)


def in_child(config, channels, layers, grid, batch, steps, threads):
    cmd = [sys.executable, os.path.abspath(__file__), '--channels', str(channels), '--layers', str(layers), '--grid',
        str(grid), '--batch', str(batch), '--steps', str(steps), '--threads', str(threads), '--child', config]
    path = os.pathsep.join(filter(None, [REPO, os.environ.get('PYTHONPATH')]))     # This checkout's package.
    out = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=path))
    if out.returncode != 0:
        raise click.ClickException(f'{config}: {out.stderr.strip().splitlines()[-1]}')
    return json.loads(out.stdout.strip().splitlines()[-1])

#----------------------------------------------------------------------------

@click.command()
@click.option('--channels', type=click.IntRange(min=1), default=320, show_default=True, help='Hidden channels of the stage')
@click.option('--layers', type=click.IntRange(min=1), default=10, show_default=True, help='Hidden 3x3x3 conv layers')
@click.option('--grid', type=click.IntRange(min=2), default=4, show_default=True, help='Side G of the stage\'s G^3 grid')
@click.option('--batch', type=click.IntRange(min=1), default=4, show_default=True, help='Pairs per step')
@click.option('--steps', type=click.IntRange(min=2), default=4, show_default=True, help='Steps per configuration (the first is not timed)')
@click.option('--threads', type=click.IntRange(min=1), default=2, show_default=True, help='torch CPU threads')
@click.option('--repeats', type=click.IntRange(min=1), default=1, show_default=True, help='Rounds of every configuration, interleaved (medians)')
@click.option('--only', 'configs', default=','.join(CONFIGS), show_default=True, help='Configurations to run, comma-separated (full is always run: the baseline)')
@click.option('--child', hidden=True)
def main(channels, layers, grid, batch, steps, threads, repeats, configs, child):
    """Each configuration runs in a fresh process so its peak RSS is its own; --repeats rounds of all of them take
    turns (a shared machine's load falls on each alike) and the medians are shown. Baseline: full, in the same run.
    Quick run: --channels 16 --layers 2 --steps 2 --threads 1"""
    if child is not None:
        print(json.dumps(measure(child, channels, layers, grid, batch, steps, threads)))
        return
    names = ['full'] + [c for c in configs.split(',') if c != 'full']
    unknown = [c for c in names if c not in CONFIGS]
    if unknown:
        raise click.BadParameter(f'{unknown[0]}: choose from {", ".join(CONFIGS)}', param_hint='--only')
    for name in [n for n in names if CONFIGS[n][2] and not lora.available()]:
        print(f'{name}: skipped, peft is not installed (pip install -e .[lora])')
        names.remove(name)
    rounds = [{name: in_child(name, channels, layers, grid, batch, steps, threads) for name in names}
        for _ in range(repeats)]
    results = {name: {k: statistics.median(r[name][k] for r in rounds) for k in rounds[0][name]} for name in names}
    base = results['full']
    copy_mib = base['params'] * 4 / 2**20
    print(f'Flow-DPO on a ConvVelocity stage: {channels} channels, {layers} layers, grid {grid}^3, {base["params"]:,} '
        f'parameters ({copy_mib:,.0f} MiB a float32 copy); batch {batch} pairs, {steps} steps, {threads} threads, CPU; '
        f'each configuration in a fresh process, median of {repeats}')
    print(f'{"configuration":<17} {"s/step":>8} {"x full":>7} {"peak RSS":>10} {"above start":>12} {"copies":>7} {"x full":>7}')
    for name, r in results.items():
        above = r['peak_mib'] - r['start_mib']
        print(f'{name:<17} {r["seconds"]:8.2f} {r["seconds"] / base["seconds"]:7.2f} {r["peak_mib"]:7,.0f} MiB '
            f'{above:8,.0f} MiB {above / copy_mib:7.2f} {above / (base["peak_mib"] - base["start_mib"]):7.2f}'
            + (f'   (reference precomputed in {r["precompute_seconds"]:.2f} s, counted over the steps)'
               if CONFIGS[name][1] else ''))

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main() # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
